"""Noise models p(x|s): one interface (:class:`NoiseModel`), several kinds."""

from .base import NoiseModel, load_noise_model
from .gmm import GMMNoiseModel
from .histogram import HistogramNoiseModel
from .plots import plot_fit_summary, plot_noise_model

__all__ = ["NoiseModel", "HistogramNoiseModel", "GMMNoiseModel", "load_noise_model", "plot_noise_model", "plot_fit_summary"]
