"""Probabilistic Noise2Void (Krull, Vicar, Jug 2019) for TensorFlow / Keras 3, in CSBDeep style."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

try:
    import tensorflow  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the installation
    raise ImportError(
        "pn2v_tf needs TensorFlow >= 2.16: pip install 'pn2v_tf[cpu]' (or '[gpu]', or install "
        "tensorflow yourself)") from error

from .config import PN2VConfig
from .data import MaskedPatches, SupervisedPatches
from .model import PN2V
from .bootstrap import bootstrap_noise_model
from .noise_models import GMMNoiseModel, HistogramNoiseModel, NoiseModel, load_noise_model
from .version import __version__

__all__ = ["PN2VConfig", "PN2V", "HistogramNoiseModel", "GMMNoiseModel", "NoiseModel", "load_noise_model",
           "bootstrap_noise_model",
           "MaskedPatches", "SupervisedPatches", "__version__"]
