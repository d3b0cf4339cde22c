"""Training objectives: the PN2V likelihood (paper Eq. 7) and the mean squared (or absolute) error of
N2V / CARE.

Targets and predictions are in raw intensity units. For the masked objectives both hold only the
masked pixels of each channel, (B, M, C) and (B, M, C * K) (channel-major), so every pixel a loss
sees is a masked one.
"""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from .noise_models import NoiseModel


def pn2v_negative_log_likelihood(log_likelihoods):
    """``-log( mean_k p(x|s_k) )`` from ``log p(x|s_k)`` along the last axis, computed in log space."""
    n_samples = ops.cast(ops.shape(log_likelihoods)[-1], log_likelihoods.dtype)
    return ops.log(n_samples) - ops.logsumexp(log_likelihoods, axis=-1)


@keras.saving.register_keras_serializable(package="pn2v_tf")
class PN2VLoss(keras.losses.Loss):
    """PN2V loss: mean over masked pixels (of all channels) of ``-log( (1/K) sum_k p(x_i | s_i^k) )``,
    plus ``mean_weight`` times N2V's squared error of the samples' mean, ``((mean_k s_i^k - x_i) / std)^2``
    (with ``decouple_mean``: in units of the noise's variance instead of ``std^2``).

    ``y_true`` (..., C) holds the observations, ``y_pred`` (..., C * K) each channel's K samples;
    the loss per pixel is (..., C), or (...) for one channel.

    The likelihood moves a sample only where p(x_i | s_i^k) is not negligible, so samples far from
    the data learn slowly; the squared error moves every sample (by 1/K of the mean's error) towards
    the prior mean that N2V would learn. When the noise is unbiased (E[x | s] = s, as for a noise
    model calibrated on frame averages) the true prior minimises both terms, so the term speeds up
    the calibration of the prior without changing its optimum.

    Parameters
    ----------
    noise_model : pn2v_tf.noise_models.NoiseModel or dict
        p(x|s) in raw units (one for all channels, or a
        :class:`~pn2v_tf.noise_models.ChannelNoiseModels`), or its
        :meth:`~pn2v_tf.noise_models.NoiseModel.to_dict` form (the config of this loss carries the
        whole noise model, arrays included).
    mean_weight : float
        Weight (>= 0) of the squared error of the samples' mean. Default: 0.
    decouple_mean : bool
        With ``mean_weight > 0``: the samples' mean learns from the squared error alone, and the
        likelihood only moves the samples about their mean (its gradient less its mean over the K
        samples). Without it the likelihood also pulls the mean, weighting each pixel by about the
        inverse of its noise variance plus the prior's, so that bright or uncertain pixels teach the
        mean less than N2V's uniform weighting, which is what PSNR measures. Decoupled, the squared
        error is in units of the noise's variance, ``(mean - x)^2 / v`` with ``v`` the noise
        model's :meth:`~pn2v_tf.noise_models.NoiseModel.mean_noise_variance` (per channel): its
        gradient on the mean, ``2 w (mean - x) / v``, then has the likelihood's scale (about
        ``(mean - x) / (noise variance + prior variance)``) with N2V's uniform weighting, whatever
        the data's normalisation. In normalised units it would be about (std / noise std)^2 times
        weaker than the likelihood's pull on the spread, and the mean would learn too slowly; relative
        to the batch's own squared residual it would not grow with the residual, and the
        likelihood's spreading of the samples could run away from a mean left behind. Default: False.
    scale : float or list of float
        Standard deviation of the data's normalisation, one or one per channel (the squared error is
        in normalised units, as N2V's). Default: 1.
    """

    def __init__(self, noise_model, mean_weight=0.0, scale=1.0, decouple_mean=False, name="pn2v_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        if isinstance(noise_model, dict):
            noise_model = NoiseModel.from_dict(noise_model)
        self.noise_model = noise_model
        self.mean_weight = float(mean_weight)
        self.decouple_mean = bool(decouple_mean)
        self.scale = float(scale) if np.ndim(scale) == 0 else [float(v) for v in scale]
        self.noise_variance = _noise_variances(noise_model) if self.mean_weight and self.decouple_mean else None
        self._loss_and_gradient = tf.function(self._per_pixel_loss_and_gradient, jit_compile=True)

    def call(self, y_true, y_pred):
        return self._fused(y_true, y_pred)

    def _per_pixel_loss_and_gradient(self, y_true, y_pred):
        n_channels = y_true.shape[-1]
        samples = tf.reshape(y_pred, tf.concat([tf.shape(y_true), [y_pred.shape[-1] // n_channels]], axis=0))
        with tf.GradientTape() as tape:
            tape.watch(samples)
            mean = ops.mean(samples, axis=-1, keepdims=True)
            seen = tf.stop_gradient(mean) + (samples - mean) if self.mean_weight and self.decouple_mean else samples
            loss = pn2v_negative_log_likelihood(self.noise_model.log_likelihood(y_true[..., None], seen))
            if self.mean_weight:
                loss = loss + np.float32(self.mean_weight) * self._squared_error(mean[..., 0] - y_true)
        return loss, tf.reshape(tape.gradient(loss, samples), tf.shape(y_pred))

    def _squared_error(self, residual):
        """The mean term's squared error per pixel: in normalised units, or, decoupled, in units of
        each channel's noise variance."""
        if self.noise_variance is None:
            return ops.square(residual / np.float32(self.scale))
        return ops.square(residual) / self.noise_variance

    @tf.custom_gradient
    def _fused(self, y_true, y_pred):
        """Loss and its gradient in one XLA program (the likelihood's gathers, logs and
        logsumexp fused; 3x faster than TensorFlow's op-by-op graph on CPU, see
        ``benchmarks/likelihood.py``). Each pixel's loss depends on its own K samples only, so the
        gradient of any weighting of the per-pixel losses is that weight times their gradient."""
        dtype = y_pred.dtype
        n_channels = y_true.shape[-1]
        loss, gradient = self._loss_and_gradient(tf.cast(y_true, tf.float32), tf.cast(y_pred, tf.float32))

        def backward(upstream):
            upstream = tf.cast(upstream, tf.float32)
            upstream = upstream[..., None] if n_channels == 1 else upstream
            per_value = tf.repeat(upstream, y_pred.shape[-1] // n_channels, axis=-1)
            return None, tf.cast(per_value * gradient, dtype)

        return (loss[..., 0] if n_channels == 1 else loss), backward

    def get_config(self):
        config = super().get_config()
        config.update(noise_model=self.noise_model.to_dict(), mean_weight=self.mean_weight, scale=self.scale,
                      decouple_mean=self.decouple_mean)
        return config


def _noise_variances(noise_model):
    """Each channel's :meth:`~pn2v_tf.noise_models.NoiseModel.mean_noise_variance` (C,) as float32, or one
    for a single model."""
    models = getattr(noise_model, "models", None) or [noise_model]
    return np.array([model.mean_noise_variance() for model in models], dtype=np.float32)


@keras.saving.register_keras_serializable(package="pn2v_tf")
class ScaledMSE(keras.losses.Loss):
    """Mean squared error divided by ``scale**2``: the MSE in the network's normalised units.

    Parameters
    ----------
    scale : float or list of float
        Standard deviation used to normalise the data, or one per channel (the last axis).
    """

    def __init__(self, scale=1.0, name="scaled_mse", **kwargs):
        super().__init__(name=name, **kwargs)
        self.scale = float(scale) if np.ndim(scale) == 0 else [float(s) for s in scale]

    def call(self, y_true, y_pred):
        return ops.mean(ops.square((y_true - y_pred) / np.float32(self.scale)), axis=-1)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


@keras.saving.register_keras_serializable(package="pn2v_tf")
class ScaledMAE(ScaledMSE):
    """Mean absolute error divided by ``scale``: the MAE in the network's normalised units (``scale`` as
    in :class:`ScaledMSE`)."""

    def __init__(self, scale=1.0, name="scaled_mae", **kwargs):
        super().__init__(scale, name=name, **kwargs)

    def call(self, y_true, y_pred):
        return ops.mean(ops.abs((y_true - y_pred) / np.float32(self.scale)), axis=-1)
