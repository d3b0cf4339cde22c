"""Calibration of the prior's spread after training, on the validation images as ``predict`` sees them.

At prediction the network sees every pixel, its own value included, so the K samples it returns for
a pixel already lean towards the pixel's noisy value x; the MMSE then weighs them by p(x|s_k) once
more. A prior that is also wider than its errors (short training leaves the samples' spread slow to
shrink) pulls the MMSE further towards x. One factor per channel moves every sample towards the
samples' mean, ``s_k -> m + f (s_k - m)`` with ``f <= 1``; as ``f`` falls the MMSE moves towards the
prior mean, which it equals in the limit. Factors above 1 are not offered: they would only add weight
to x, which the samples already hold.

The factor comes from the evidence of the validation pixels, predicted exactly so, ``log (1/K) sum_k
p(x|s_k)`` (:class:`SpreadEvidence`), an empirical-Bayes choice of the prior's scale: of the factors
whose summed evidence is within one standard error of the likeliest factor's (the standard error of
the paired per-pixel differences), the smallest (:func:`best_spread_factors`). This is the
one-standard-error rule of model selection, with the narrower prior as the simpler model: when the
prior is much narrower than the noise the evidence barely changes with ``f`` and its maximum is left
to chance, while a prior that is too wide costs the MMSE far more than one that is too narrow (the
MMSE then tends to the prior mean, not to the noisy pixel); where the evidence does tell the factors
apart, the likeliest one is kept. The evidence is computed under the noise model as the calibration
sees it (:func:`evidence_noise_model`): a histogram is smoothed by one bin along lines of constant
``x - s``, because each of its rows carries the estimation noise of its few calibration pairs, and the
log of a noisy p(x|s) averaged over more distinct rows (a wider prior) is larger on average, which
would bias the evidence towards wide priors wherever the prior spans only a few signal bins. Smoothing
along the signal axis alone would not do: it widens p(x|s) as a wider prior would, by a bin, and so
favours priors narrower by as much (BENCHMARKS.md).

:class:`SpreadRisk`, Stein's unbiased estimate of the MMSE's squared error, is a second view for
diagnosis (``PN2V.spread_risk``, ``benchmarks/spread_calibration.py``): it measures what the factor is
for, but takes the noise as locally Gaussian with the noise model's variance, and when the noise is
much wider than the prior's errors its sampling error can swamp the differences between factors, so
the calibration does not use it (BENCHMARKS.md has the runs).

The factor is folded into the head's weights (:func:`scale_head_spread`), so prediction and exported
models cost nothing more.
"""

import numpy as np
import tensorflow as tf

from .inference import mmse
from .noise_models import ChannelNoiseModels, HistogramNoiseModel

#: Candidate factors: 2^(-k/3) from 1 down to 1/16.
SPREAD_FACTORS = tuple(float(2.0 ** (-k / 3)) for k in range(13))
#: Pixels whose evidence or risk is evaluated at once (times K samples times all factors).
CHUNK_PIXELS = 1024
#: Standard errors of the evidence within which :func:`best_spread_factors` takes a smaller factor.
EVIDENCE_TOLERANCE = 1.0
#: Bins by which :func:`evidence_noise_model` smooths a histogram noise model.
EVIDENCE_SMOOTHING_BINS = 1.0


class SpreadEvidence:
    """Summed log evidence ``sum_i log (1/K) sum_k p(x_i | m_i + f (s_ik - m_i))`` of pixels added
    batch by batch, per factor and channel (``totals``, (len(factors), C), float64), over ``pixels`` pixels;
    ``moments`` (C, len(factors), len(factors)) sums the products ``d_if d_ig`` of each pixel's
    evidence differences from the first factor, ``d_if = e_if - e_i0``, for the standard errors of
    differences between factors (:func:`evidence_standard_errors`).

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
            self.moments = np.zeros((samples.shape[1], len(self.factors), len(self.factors)))
        self.pixels += len(samples)
        for chunk, count in _padded_chunks(samples, observations):
            totals, moments = self._evidence(*chunk, count)
            self.totals += totals.numpy()
            self.moments += moments.numpy()
        return self

    def subset(self, factors):
        """The evidence of some of this one's ``factors``, in the given order, as if only they had been
        evaluated (their totals, and the moments of their differences from the first of them)."""
        rows = []
        for factor in factors:
            matches = [row for row, own in enumerate(self.factors) if abs(own - float(factor)) <= 1e-9 * abs(own)]
            if not matches:
                raise ValueError(f"factor {factor!r} is not one of this evidence's factors {self.factors}")
            rows.append(matches[0])
        picked = SpreadEvidence(self.noise_model, [self.factors[row] for row in rows])
        picked.pixels = self.pixels
        if self.totals is not None:
            first, moments = rows[0], self.moments
            picked.totals = self.totals[rows]
            # d'_if = d_if - d_i,first, so sum d'_if d'_ig = M_fg - M_f,first - M_first,g + M_first,first
            picked.moments = (moments[:, rows][:, :, rows] - moments[:, rows, first][:, :, None]
                              - moments[:, first, rows][:, None, :] + moments[:, first, first][:, None, None])
        return picked

    def _chunk_evidence(self, samples, observations, count):
        mean = tf.reduce_mean(samples, axis=-1, keepdims=True)
        counted = tf.cast(tf.range(tf.shape(samples)[0]) < count, tf.float64)[:, None]
        log_k = np.float32(np.log(samples.shape[-1]))
        factors = tf.constant(self.factors, tf.float32)[:, None, None, None]
        moved = mean[None] + factors * (samples - mean)[None]         # (factors, pixels, C, K)
        log_mean = tf.reduce_logsumexp(self.noise_model.log_likelihood(observations[None, ..., None], moved), axis=-1)
        evidence = tf.cast(log_mean - log_k, tf.float64) * counted[None]   # (factors, pixels, C)
        differences = tf.transpose(evidence - evidence[:1], (2, 1, 0))     # (C, pixels, factors)
        return tf.reduce_sum(evidence, axis=1), tf.matmul(differences, differences, transpose_a=True)


class SpreadRisk:
    """Stein's unbiased estimate of the MMSE's squared error (SURE) of pixels added batch by batch,
    per factor and channel (``totals``, (len(factors), C), float64, summed over ``pixels`` pixels),
    up to a constant per channel.

    For an estimate u(x) of s from x = s + n, with noise n of variance v(s) and mean 0 that is
    locally Gaussian, ``E (u - s)^2 = E [(u - x)^2 + 2 v du/dx] - E v``. The MMSE at each factor is
    computed as ``predict`` computes it, from the samples of the noisy patch, and once more from
    those of the patch with every pixel moved by ``step`` times a random sign b; ``b (u' - u) /
    step`` estimates du/dx (the signs of other pixels average out: Monte-Carlo SURE). ``v`` is the
    noise model's variance at the samples' mean (:meth:`~pn2v_tf.noise_models.NoiseModel.noise_variance`).

    Parameters
    ----------
    noise_model : NoiseModel
        One for all channels, or a :class:`~pn2v_tf.noise_models.ChannelNoiseModels`.
    factors : sequence of float
    """

    def __init__(self, noise_model, factors=SPREAD_FACTORS):
        self.models = list(getattr(noise_model, "models", None) or [noise_model])
        self.factors = tuple(float(factor) for factor in factors)
        self.curves = [_variance_curve(model) for model in self.models]
        #: per channel: the size of the move, a tenth of the noise's standard deviation
        self.steps = np.array([0.1 * np.sqrt(np.mean(variances)) for _, variances in self.curves], np.float32)
        self.totals = None
        self.pixels = 0
        self._risk = tf.function(self._chunk_risk, jit_compile=True, autograph=False)

    def add(self, samples, moved_samples, observations, signs):
        """Add pixels: ``samples`` (N, C, K) of the noisy patch, ``moved_samples`` (N, C, K) of the patch
        moved by ``steps * signs``, raw units; ``observations`` (N, C) noisy values; ``signs`` (N, C) of +-1."""
        samples, moved_samples, observations, signs = (np.asarray(a, dtype=np.float32) for a in
                                                       (samples, moved_samples, observations, signs))
        if samples.ndim != 3 or moved_samples.shape != samples.shape or observations.shape != samples.shape[:2] \
                or signs.shape != observations.shape:
            raise ValueError(f"samples and moved_samples must be (N, C, K), observations and signs (N, C), got "
                             f"{samples.shape}, {moved_samples.shape}, {observations.shape} and {signs.shape}")
        if samples.shape[1] != len(self.models) and len(self.models) > 1:
            raise ValueError(f"{samples.shape[1]} channels, but {len(self.models)} noise models")
        if self.totals is None:
            self.totals = np.zeros((len(self.factors), samples.shape[1]))
        variances = np.stack([np.interp(samples[:, c].mean(axis=-1), *self.curves[min(c, len(self.curves) - 1)])
                              for c in range(samples.shape[1])], axis=1).astype(np.float32)
        self.pixels += len(samples)
        for chunk, count in _padded_chunks(samples, moved_samples, observations, signs, variances):
            self.totals += self._risk(*chunk, count).numpy()
        return self

    def _chunk_risk(self, samples, moved_samples, observations, signs, variances, count):
        counted = tf.cast(tf.range(tf.shape(samples)[0]) < count, tf.float64)
        factors = tf.constant(self.factors, tf.float32)[:, None, None]
        columns = []
        for c in range(samples.shape[1]):
            model = self.models[min(c, len(self.models) - 1)]
            step = self.steps[min(c, len(self.steps) - 1)]
            x, moved_x = observations[:, c:c + 1], observations[:, c:c + 1] + step * signs[:, c:c + 1]
            s, moved_s = samples[:, c], moved_samples[:, c]
            # all factors at once, (factors, pixels, K): one likelihood in the compiled graph
            u, moved_u = (mmse(value[None], mean[None] + factors * (v - mean)[None], model)
                          for value, v, mean in ((x, s, tf.reduce_mean(s, axis=-1, keepdims=True)),
                                                 (moved_x, moved_s, tf.reduce_mean(moved_s, axis=-1, keepdims=True))))
            slope = signs[None, :, c:c + 1] * (moved_u - u) / step
            risk = tf.square(u - x[None]) + 2 * variances[None, :, c:c + 1] * slope
            rows = tf.reduce_sum(tf.cast(risk[..., 0], tf.float64) * counted[None], axis=1)
            columns.append(rows)
        return tf.stack(columns, axis=1)


def _padded_chunks(*arrays):
    """(chunk of each array, pixels counted) for :data:`CHUNK_PIXELS` rows at a time; the last chunk is
    padded with its edge rows to one compiled shape, and the padding is not counted."""
    for start in range(0, len(arrays[0]), CHUNK_PIXELS):
        chunk = [a[start:start + CHUNK_PIXELS] for a in arrays]
        count = len(chunk[0])
        if count < CHUNK_PIXELS:
            chunk = [np.pad(a, ((0, CHUNK_PIXELS - count),) + ((0, 0),) * (a.ndim - 1), mode="edge") for a in chunk]
        yield chunk, np.int32(count)   # a tensor-like count: one trace for every chunk


def _variance_curve(noise_model, n_signals=64):
    """(signals, variances of x given them) over the model's signal range, for interpolation."""
    signals = np.linspace(*noise_model.signal_range, n_signals)
    return signals, noise_model.noise_variance(signals)


def evidence_noise_model(noise_model, smoothing_bins=EVIDENCE_SMOOTHING_BINS):
    """The noise model under which the calibration's evidence is computed: a histogram (also each
    channel's of a :class:`~pn2v_tf.noise_models.ChannelNoiseModels`) smoothed by a Gaussian of
    ``smoothing_bins`` bins along lines of constant ``x - s``
    (:meth:`~pn2v_tf.noise_models.HistogramNoiseModel.smoothed`); other kinds, which are smooth
    already, as they are."""
    if isinstance(noise_model, ChannelNoiseModels):
        return ChannelNoiseModels([evidence_noise_model(model, smoothing_bins) for model in noise_model.models])
    if isinstance(noise_model, HistogramNoiseModel) and smoothing_bins > 0:
        return noise_model.smoothed(smoothing_bins)
    return noise_model


def evidence_standard_errors(evidence):
    """Standard errors of ``totals[f] - totals[best]`` of a :class:`SpreadEvidence`, per factor and
    channel ((len(factors), C) floats; 0 at each channel's likeliest factor ``best``): ``sqrt(N)``
    times the standard deviation of the N pixels' paired differences of evidence."""
    n = max(evidence.pixels, 1)
    best = np.argmax(evidence.totals, axis=0)
    errors = np.zeros_like(evidence.totals)
    for channel, b in enumerate(best):
        moments = evidence.moments[channel]
        squares = np.diag(moments) - 2 * moments[:, b] + moments[b, b]        # sum_i (d_if - d_ib)^2
        sums = evidence.totals[:, channel] - evidence.totals[b, channel]      # sum_i (d_if - d_ib)
        errors[:, channel] = np.sqrt(np.maximum(squares - sums ** 2 / n, 0.0))
    return errors


def evidence_shortfalls(evidence):
    """How far each factor's summed log evidence falls short of the likeliest factor's, in standard
    errors (:func:`evidence_standard_errors`), per factor and channel ((len(factors), C) floats; 0 at
    the likeliest, infinite where the evidence of a factor differs from it at every pixel by the same
    amount)."""
    shortfall = evidence.totals.max(axis=0) - evidence.totals                  # (factors, C), >= 0
    errors = evidence_standard_errors(evidence)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(shortfall > 0, shortfall / errors, 0.0)


def best_spread_factors(evidence, tolerance=EVIDENCE_TOLERANCE):
    """Per channel ((C,) floats), the smallest factor of a :class:`SpreadEvidence` whose summed log
    evidence is at most ``tolerance`` standard errors (:func:`evidence_standard_errors`) below the
    likeliest factor's; ``tolerance=0``: the likeliest factor."""
    factors = np.asarray(evidence.factors, dtype=np.float64)
    within = evidence_shortfalls(evidence) <= tolerance
    return np.array([factors[within[:, channel]].min() for channel in range(within.shape[1])])


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
