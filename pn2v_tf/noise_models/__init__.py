"""Noise models p(x|s): one interface (:class:`NoiseModel`), several kinds."""

from .base import NoiseModel, load_noise_model
from .channels import ChannelNoiseModels, per_channel_noise_model
from .gmm import GMMNoiseModel
from .histogram import HistogramNoiseModel
from .plots import plot_fit_summary, plot_noise_model

__all__ = ["NoiseModel", "ChannelNoiseModels", "per_channel_noise_model", "HistogramNoiseModel", "GMMNoiseModel",
           "load_noise_model", "plot_noise_model", "plot_fit_summary"]
