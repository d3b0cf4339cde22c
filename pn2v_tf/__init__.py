"""Probabilistic Noise2Void (Krull, Vicar, Jug 2019) for TensorFlow / Keras 3, in CSBDeep style.

The names below are imported on first use, so that ``import pn2v_tf`` (and the ``pn2v``
command's ``--help``) does not wait for TensorFlow.
"""

import importlib
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
#: Whether the user set TF_CPP_MIN_LOG_LEVEL; if not, this package sets it to 2 (no C++ info lines and
#: warnings), and the ``pn2v`` command to 3 (no C++ errors either: its own messages say what failed).
TF_LOG_LEVEL_GIVEN = "TF_CPP_MIN_LOG_LEVEL" in os.environ
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from .version import __version__  # noqa: E402

_EXPORTS = {
    "PN2VConfig": ".config",
    "PN2V": ".model",
    "HistogramNoiseModel": ".noise_models",
    "GMMNoiseModel": ".noise_models",
    "NoiseModel": ".noise_models",
    "ChannelNoiseModels": ".noise_models",
    "load_noise_model": ".noise_models",
    "bootstrap_noise_model": ".bootstrap",
    "load_bioimageio": ".packaged",
    "MaskedPatches": ".data",
    "SupervisedPatches": ".data",
}

__all__ = list(_EXPORTS) + ["__version__"]


def require_tensorflow():
    """Import TensorFlow, or say how to install it."""
    try:
        import tensorflow  # noqa: F401
    except ImportError as error:  # pragma: no cover - depends on the installation
        raise ImportError(
            "pn2v_tf needs TensorFlow >= 2.16: pip install 'pn2v_tf[cpu]' (or '[gpu]', or install "
            "tensorflow yourself)") from error


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pn2v_tf' has no attribute {name!r}")
    require_tensorflow()
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
