"""Calibration of the prior's spread after training, on the validation images as ``predict`` sees them.

At prediction the network sees every pixel, its own value included, so the K samples it returns for
a pixel already lean towards the pixel's noisy value x; the MMSE then weighs them by p(x|s_k) once
more. A prior that is also wider than its errors (short training leaves the samples' spread slow to
shrink) pulls the MMSE further towards x. One factor per channel moves every sample towards the
samples' mean, ``s_k -> m + f (s_k - m)`` with ``f <= 1``, and is chosen by the evidence
``log (1/K) sum_k p(x|s_k)`` of the validation pixels under exactly these predictions (an empirical-Bayes
choice of the prior's scale). ``f = 1`` keeps the spread as trained; as ``f`` falls the MMSE moves
towards the prior mean, which it equals in the limit. Factors above 1 are not offered: they would only
add weight to x, which the samples already hold.

The factor is folded into the head's weights (:func:`scale_head_spread`), so prediction and exported
models cost nothing more.
"""

import numpy as np
import tensorflow as tf

#: Candidate factors: 2^(-k/3) from 1 down to 1/16.
SPREAD_FACTORS = tuple(float(2.0 ** (-k / 3)) for k in range(13))
#: Pixels whose likelihood is evaluated at once (times K samples times the factors).
CHUNK_PIXELS = 4096


class SpreadEvidence:
    """Summed log evidence ``sum_i log (1/K) sum_k p(x_i | m_i + f (s_ik - m_i))`` of pixels added
    batch by batch, per factor and channel (``totals``, (len(factors), C), float64), over ``pixels`` pixels.

    Parameters
    ----------
    noise_model : NoiseModel
        One for all channels, or a :class:`~pn2v_tf.noise_models.ChannelNoiseModels`.
    factors : sequence of float
    """

    def __init__(self, noise_model, factors=SPREAD_FACTORS):
        self.noise_model = noise_model
        self.factors = tuple(float(factor) for factor in factors)
        self.totals = None
        self.pixels = 0
        self._evidence = tf.function(self._chunk_evidence, jit_compile=True, autograph=False)

    def add(self, samples, observations):
        """Add pixels: ``samples`` (N, C, K) prior samples, raw units; ``observations`` (N, C) noisy values."""
        samples = np.asarray(samples, dtype=np.float32)
        observations = np.asarray(observations, dtype=np.float32)
        if samples.ndim != 3 or observations.shape != samples.shape[:2]:
            raise ValueError(f"samples must be (N, C, K) and observations (N, C), got {samples.shape} and "
                             f"{observations.shape}")
        if self.totals is None:
            self.totals = np.zeros((len(self.factors), samples.shape[1]))
        self.pixels += len(samples)
        for start in range(0, len(samples), CHUNK_PIXELS):
            chunk, observed = samples[start:start + CHUNK_PIXELS], observations[start:start + CHUNK_PIXELS]
            count = len(chunk)
            if count < CHUNK_PIXELS:  # padded to one compiled shape; the padding is not counted
                chunk = np.pad(chunk, ((0, CHUNK_PIXELS - count), (0, 0), (0, 0)), mode="edge")
                observed = np.pad(observed, ((0, CHUNK_PIXELS - count), (0, 0)), mode="edge")
            self.totals += self._evidence(chunk, observed, count).numpy()
        return self

    def _chunk_evidence(self, samples, observations, count):
        mean = tf.reduce_mean(samples, axis=-1, keepdims=True)
        counted = tf.cast(tf.range(tf.shape(samples)[0]) < count, tf.float64)[:, None]
        log_k = np.float32(np.log(samples.shape[-1]))
        rows = []
        for factor in self.factors:
            moved = mean + np.float32(factor) * (samples - mean)
            log_mean = tf.reduce_logsumexp(self.noise_model.log_likelihood(observations[..., None], moved), axis=-1)
            rows.append(tf.reduce_sum(tf.cast(log_mean - log_k, tf.float64) * counted, axis=0))
        return tf.stack(rows)


def best_spread_factors(evidence):
    """The factor with the highest summed log evidence of a :class:`SpreadEvidence`, per channel: (C,) floats."""
    return np.asarray(evidence.factors, dtype=np.float64)[np.argmax(evidence.totals, axis=0)]


def calibration_message(factors):
    """The line that ``train`` (verbose) and ``pn2v train`` print after a calibration."""
    return "prior spread calibrated on the validation images: factor " + ", ".join(f"{f:.3g}" for f in factors)


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
