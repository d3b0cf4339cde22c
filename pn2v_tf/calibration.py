"""Calibration of the prior's spread after training.

A prior whose K samples are spread too widely pulls the MMSE towards the noisy observation, one spread
too narrowly makes it the prior mean; at short budgets training leaves either. After training, one
factor per channel scales every sample's distance from the samples' mean, ``s_k -> m + f (s_k - m)``,
and is chosen by the PN2V likelihood (paper Eq. 7) of the validation's masked pixels, the training
objective on data the network did not train on, as temperature scaling calibrates a classifier.
The factor leaves the samples' mean unchanged (the prior mean changes only where samples reach the
edge of the noise model's range, to which the estimators clamp them) and is folded into the head's
weights, so prediction and exported models cost nothing more.
"""

import keras
import numpy as np

from .losses import pn2v_negative_log_likelihood

#: Candidate factors: 2^(k/4) from 1/16 to 64 (1 included).
SPREAD_FACTORS = tuple(float(2.0 ** (k / 4)) for k in range(-16, 25))


def spread_losses(samples, observations, noise_model, factors=SPREAD_FACTORS):
    """Mean negative log-likelihood of masked pixels whose samples are moved to ``m + f (s - m)``.

    Parameters
    ----------
    samples : numpy.ndarray (N, C, K)
        Prior samples of N masked pixels per channel, raw units.
    observations : numpy.ndarray (N, C)
        Their noisy values.
    noise_model : NoiseModel
        One for all channels, or a :class:`~pn2v_tf.noise_models.ChannelNoiseModels`.
    factors : sequence of float

    Returns
    -------
    numpy.ndarray (len(factors), C)
    """
    samples = np.asarray(samples, dtype=np.float32)
    observations = np.asarray(observations, dtype=np.float32)[..., np.newaxis]
    if samples.ndim != 3 or observations.shape != samples.shape[:2] + (1,):
        raise ValueError(f"samples must be (N, C, K) and observations (N, C), got {samples.shape} and "
                         f"{observations.shape[:-1]}")
    mean = samples.mean(axis=-1, keepdims=True)
    observations = keras.ops.convert_to_tensor(observations)
    losses = []
    for factor in factors:
        moved = keras.ops.convert_to_tensor(mean + np.float32(factor) * (samples - mean))
        # tensors: signals beyond the model's range are clamped as in training, without a warning
        log_p = noise_model.log_likelihood(observations, moved)
        losses.append(np.mean(keras.ops.convert_to_numpy(pn2v_negative_log_likelihood(log_p)), axis=0))
    return np.array(losses)


def best_spread_factors(samples, observations, noise_model, factors=SPREAD_FACTORS):
    """The factor of ``factors`` with the lowest :func:`spread_losses`, per channel: (C,) floats."""
    losses = spread_losses(samples, observations, noise_model, factors)
    return np.asarray(factors, dtype=np.float64)[np.argmin(losses, axis=0)]


def scale_head_spread(head, factors):
    """Scale the spread of a K-sample head's outputs by one factor per channel, in place.

    ``head`` is the network's ``head`` layer: a ``Dense`` with kernel (F, C * K) (channel-major
    columns) or a :class:`~pn2v_tf.nets.GroupedDense` with kernel (C, F, K); both have a bias (C * K).
    Each channel's K columns and biases are moved to their mean plus ``factor`` times their distance
    from it, which scales the distance of every output from the outputs' mean by ``factor`` (the
    network's output normalisation is one affine map per channel).
    """
    factors = np.asarray(factors, dtype=np.float32).reshape(-1)
    n_channels = factors.size
    kernel = np.asarray(head.kernel.numpy())
    bias = np.asarray(head.bias.numpy()).reshape(n_channels, -1)
    grouped = kernel.ndim == 3
    per_channel = kernel if grouped else kernel.reshape(kernel.shape[0], n_channels, -1)
    scale = factors[:, None, None] if grouped else factors[None, :, None]
    kernel_mean = per_channel.mean(axis=-1, keepdims=True)
    bias_mean = bias.mean(axis=-1, keepdims=True)
    head.kernel.assign((kernel_mean + scale * (per_channel - kernel_mean)).reshape(kernel.shape))
    head.bias.assign((bias_mean + factors[:, None] * (bias - bias_mean)).reshape(-1))
