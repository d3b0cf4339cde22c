"""Noise models p(x|s): one interface (:class:`NoiseModel`), several kinds."""

from .base import NoiseModel, load_noise_model
from .histogram import HistogramNoiseModel

__all__ = ["NoiseModel", "HistogramNoiseModel", "load_noise_model"]
