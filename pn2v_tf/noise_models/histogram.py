"""Histogram noise model of the PN2V paper.

Array layout: ``histogram[i, j]`` is the probability that an observation falls into x bin ``j``
given a signal in s bin ``i``; each row sums to 1. Both axes share one set of ``bins`` equal bins
over ``value_range = (low, high)``, bin width ``w = (high - low) / bins``, bin centres
``low + (i + 0.5) w``. The likelihood is read at the x bin of the observation and interpolated
linearly between the two s rows whose centres enclose the signal (so it is differentiable in s),
then divided by ``w`` to become a density.

Signal rows without calibration data are filled by linear interpolation between the nearest rows
that have data; signals below the first or above the last such row are clamped to it
(``signal_range``; such signals get no gradient), and the estimators clamp prior samples the same
way (``clip_signal``), so a sample that strayed outside counts as the edge value it was trained as.
Observations outside ``value_range`` fall into the first or last bin.
"""

import warnings

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from .._checks import is_int
from .base import NoiseModel, register_kind
from .pairs import flatten_pairs

#: Floor of a bin probability, so that empty histogram cells give a finite log-likelihood.
MIN_PROBABILITY = 1e-10


@keras.saving.register_keras_serializable(package="pn2v_tf")
@register_kind("histogram")
class HistogramNoiseModel(NoiseModel):
    """Histogram noise model p(x|s) as a Keras layer.

    Build it with :meth:`from_calibration_stack` or :meth:`from_pairs`; the constructor makes an
    empty layer of the right shape (used by Keras when loading).

    Parameters
    ----------
    bins : int
        Number of bins along signal and observation. Default: 256.
    value_range : tuple of float
        (low, high) of both axes, raw intensity units.
    signal_range : tuple of float or None
        Signals are clamped to this range (centres of the first and last calibrated rows).
        Default: the centres of the first and last bin.
    """

    def __init__(self, bins=256, value_range=(0.0, 1.0), signal_range=None, **kwargs):
        super().__init__(**kwargs)
        bins, value_range = _check_bins_and_range(bins, value_range)
        self.bins = bins
        self._value_range = value_range
        width = (value_range[1] - value_range[0]) / bins
        if signal_range is None:
            signal_range = (value_range[0] + 0.5 * width, value_range[1] - 0.5 * width)
        self._signal_range = (float(signal_range[0]), float(signal_range[1]))
        self.histogram = self.add_weight(
            shape=(bins, bins), initializer="zeros", trainable=False, name="histogram")

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_pairs(cls, signal, observation, bins=256, value_range=None):
        """Histogram of (signal, observation) pairs.

        Parameters
        ----------
        signal : numpy.ndarray
            Clean signal images, shape (M, ...) (or one image without the leading axis).
        observation : numpy.ndarray
            Noisy images, shape (M * n, ...): observation ``j`` is paired with signal ``j // n``,
            so one signal image (e.g. a calibration average) can stand for n observations.
        bins : int
            Number of bins. Default: 256.
        value_range : tuple of float or None
            (low, high) of the histogram; default: min and max over signal and observation.
        """
        signal, observation = flatten_pairs(signal, observation)
        if value_range is None:
            value_range = (min(signal.min(), observation.min()), max(signal.max(), observation.max()))
        bins, value_range = _check_bins_and_range(bins, value_range)
        counts, _, _ = np.histogram2d(signal, observation, bins=bins, range=(value_range, value_range))
        return cls.from_counts(counts, value_range)

    @classmethod
    def from_calibration_stack(cls, stack, bins=256, value_range=None):
        """Histogram from many noisy frames (N, Y, X), or volumes (N, Z, Y, X), of a static sample; the
        signal is their mean."""
        stack = np.asarray(stack, dtype=np.float64)
        if stack.ndim < 3 or stack.shape[0] < 2:
            raise ValueError(f"calibration stack must have shape (N, Y, X) or (N, Z, Y, X) with N >= 2 frames, got "
                             f"{stack.shape}")
        return cls.from_pairs(stack.mean(axis=0, keepdims=True), stack, bins=bins, value_range=value_range)

    @classmethod
    def from_noise_model(cls, noise_model, bins=256, value_range=None):
        """Tabulate another noise model (e.g. a fitted GMM) as a histogram: a fast lookup table.

        Row ``i`` holds ``p(x_j | s_i) * w`` at the bin centres ``x_j``, ``s_i``, renormalised to
        sum to 1. For integer-valued data (8- or 16-bit) with bins of width 1 centred on the
        integers, e.g. ``value_range=(-0.5, 255.5)`` and 256 bins, the table is exact at every
        integer observation and differs from the source only by the linear interpolation between
        integer signals; the likelihood then costs one lookup instead of a mixture per sample.

        Parameters
        ----------
        noise_model : NoiseModel
            Any noise model of this package.
        bins : int
            Number of bins. Default: 256.
        value_range : tuple of float or None
            (low, high) of the table; default: the source's ``value_range``.
        """
        if not isinstance(noise_model, NoiseModel):
            raise TypeError(f"noise_model must be a pn2v_tf NoiseModel, got {type(noise_model).__name__}")
        value_range = noise_model.value_range if value_range is None else value_range
        bins, (low, high) = _check_bins_and_range(bins, value_range)
        centres = low + (np.arange(bins) + 0.5) * (high - low) / bins
        signal, observation = np.meshgrid(centres, centres, indexing="ij")
        with warnings.catch_warnings():  # the whole table, beyond the source's range, is wanted
            warnings.simplefilter("ignore")
            log_p = np.asarray(noise_model.log_likelihood(observation.astype(np.float32),
                                                          signal.astype(np.float32)), dtype=np.float64)
        counts = np.exp(log_p - log_p.max(axis=1, keepdims=True))  # rows are renormalised below
        return cls.from_counts(counts, (low, high))

    @classmethod
    def from_counts(cls, counts, value_range):
        """Noise model from a 2-D count histogram ``counts[signal bin, observation bin]``."""
        counts = np.asarray(counts, dtype=np.float64)
        if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
            raise ValueError(f"counts must be a square 2-D histogram, got shape {counts.shape}")
        filled = np.flatnonzero(counts.sum(axis=1) > 0)
        if filled.size == 0:
            raise ValueError("the histogram is empty: no (signal, observation) pair inside value_range")
        probabilities = _fill_empty_rows(counts / np.maximum(counts.sum(axis=1, keepdims=True), 1e-300), filled)
        bins = counts.shape[0]
        low, high = float(value_range[0]), float(value_range[1])
        width = (high - low) / bins
        signal_range = (low + (filled[0] + 0.5) * width, low + (filled[-1] + 0.5) * width)
        model = cls(bins=bins, value_range=(low, high), signal_range=signal_range)
        model.histogram.assign(probabilities.astype(np.float32))
        return model

    def smoothed(self, sigma_bins):
        """A copy in which each p(x|s) is averaged with its neighbours shifted along both axes by the
        same number of bins, ``p(x + m w | s + m w)``, with Gaussian weights of ``sigma_bins`` bins
        (rows renormalised; same bins, value and signal range).

        Each row of a histogram carries the estimation noise of its own few calibration pairs. Where
        the noise's distribution changes slowly with the signal, a neighbouring row shifted by its
        signal's offset estimates nearly the same distribution, so the average has less of that
        noise without widening p(x|s): for noise that depends on ``x - s`` alone it is exact (away
        from the histogram's edges), as smoothing along the signal axis alone is not (that widens
        p(x|s) by a signal jitter of ``sigma_bins`` bins). ``sigma_bins=0`` returns an equal copy.
        """
        if not (np.isfinite(sigma_bins) and sigma_bins >= 0):
            raise ValueError(f"sigma_bins must be a finite number >= 0, got {sigma_bins!r}")
        table = np.asarray(self.histogram.numpy(), dtype=np.float64)
        if sigma_bins > 0:
            index = np.arange(self.bins)
            reach = int(np.ceil(4 * sigma_bins))
            smoothed_table = np.zeros_like(table)
            for shift in range(-reach, reach + 1):
                moved = np.clip(index + shift, 0, self.bins - 1)
                smoothed_table += np.exp(-0.5 * (shift / sigma_bins) ** 2) * table[np.ix_(moved, moved)]
            table = smoothed_table
        smoothed = type(self)(bins=self.bins, value_range=self._value_range, signal_range=self._signal_range)
        smoothed.histogram.assign((table / np.maximum(table.sum(axis=1, keepdims=True), 1e-300)).astype(np.float32))
        return smoothed

    # -- likelihood --------------------------------------------------------------------------
    @property
    def bin_width(self):
        return (self._value_range[1] - self._value_range[0]) / self.bins

    def clip_signal(self, signal):
        """Signals as the likelihood sees them: clamped to ``signal_range``."""
        return ops.clip(signal, *self._signal_range)

    def _log_likelihood(self, observation, signal):
        low, width, bins = self._value_range[0], self.bin_width, self.bins
        observation = ops.cast(observation, "float32")
        signal = ops.cast(signal, "float32")
        x_bin = ops.cast(ops.clip(ops.floor((observation - low) / width), 0, bins - 1), "int32")
        row_first = (self._signal_range[0] - low) / width - 0.5
        row_last = (self._signal_range[1] - low) / width - 0.5
        row = ops.clip((signal - low) / width - 0.5, row_first, row_last)
        row_below = ops.clip(ops.floor(row), 0, max(bins - 2, 0))
        frac = row - row_below
        index = ops.cast(row_below, "int32") * bins + x_bin
        table = ops.reshape(self.histogram, (-1,))
        below = ops.take(table, index)
        above = ops.take(table, index + bins)
        probability = below + frac * (above - below)
        return ops.log(ops.maximum(probability, MIN_PROBABILITY)) - np.log(width).astype("float32")

    def weight_tables(self, packed=False):
        """The histogram by observation bin (its transpose, flattened) and the step from each entry
        to the next signal row's: each observation's lookups stay in one column of the histogram.
        ``packed``: both in one complex64 table, ``entry + i step``, read with one lookup per weight
        instead of two (faster op by op; under XLA two real lookups are faster)."""
        by_observation = tf.transpose(tf.convert_to_tensor(self.histogram.value))
        steps = tf.concat([by_observation[:, 1:] - by_observation[:, :-1], tf.zeros((self.bins, 1))], axis=1)
        if packed:
            return (tf.reshape(tf.complex(by_observation, steps), [-1]),)
        return tf.reshape(by_observation, [-1]), tf.reshape(steps, [-1])

    def likelihood_weights(self, observation, signal, tables=None):
        """The interpolated probabilities themselves (``p(x|s) w``, floored at ``MIN_PROBABILITY``):
        no logarithm and no exponential, which makes the MMSE several times cheaper. TensorFlow
        operations (``tf.gather``, not ``keras.ops.take``, which adds index wrapping)."""
        low, width, bins = self._value_range[0], self.bin_width, self.bins
        tables = self.weight_tables() if tables is None else tables
        observation = tf.cast(observation, tf.float32)
        signal = tf.cast(signal, tf.float32)
        x_bin = tf.cast(tf.clip_by_value(tf.floor((observation - low) / width), 0, bins - 1), tf.int32)
        row_first = (self._signal_range[0] - low) / width - 0.5
        row_last = (self._signal_range[1] - low) / width - 0.5
        row = tf.clip_by_value(signal * np.float32(1 / width) - np.float32(low / width + 0.5), row_first, row_last)
        row_below = tf.clip_by_value(tf.floor(row), 0, max(bins - 2, 0))
        index = x_bin * bins + tf.cast(row_below, tf.int32)
        if len(tables) == 1:
            entry = tf.gather(tables[0], index)
            below, step = tf.math.real(entry), tf.math.imag(entry)
        else:
            below, step = tf.gather(tables[0], index), tf.gather(tables[1], index)
        return tf.maximum(below + (row - row_below) * step, MIN_PROBABILITY)

    # -- config and files --------------------------------------------------------------------
    def get_config(self):
        config = super().get_config()
        config.update(bins=self.bins, value_range=list(self._value_range), signal_range=list(self._signal_range))
        return config

    def _arrays(self):
        return dict(histogram=keras.ops.convert_to_numpy(self.histogram),
                    value_range=np.array(self._value_range), signal_range=np.array(self._signal_range))

    @classmethod
    def _from_arrays(cls, arrays):
        histogram = arrays["histogram"]
        model = cls(bins=histogram.shape[0], value_range=tuple(arrays["value_range"]),
                    signal_range=tuple(arrays["signal_range"]))
        model.histogram.assign(histogram.astype(np.float32))
        return model


def integer_bins(low, high, bins=256, step=1, origin=0):
    """Bins for integer-valued data (8- or 16-bit cameras): each bin is centred on a whole number of
    the values the data can take, so that no bin is empty for want of a possible value (an empty bin
    shows as a dark line in the histogram).

    The possible values are the integers, or with ``step`` every step-th one from ``origin`` (e.g.
    12-bit data stored as multiples of 16). Each bin holds ``k`` of them,
    ``k = ceil(n_values / bins)`` for the ``n_values`` possible values from ``low`` to ``high`` (one
    when they are at most ``bins``); the bins edges lie halfway between possible values, and there
    are as many bins as it takes to reach ``high``: ``ceil(n_values / k)``, at most ``bins``. So
    8-bit data 0..255 get 256 bins of one value over (-0.5, 255.5), and the range ends within
    ``k - 1`` values of ``high``, where more bins over a wider range would stay empty.

    Parameters
    ----------
    low, high : float
        The lowest and highest value to cover (e.g. of signal and observation together); values
        between possible ones are rounded outwards.
    bins : int
        The most bins to use. Default: 256.
    step : int
        Distance between possible values. Default: 1.
    origin : int
        One possible value. Default: 0.

    Returns
    -------
    (int, (float, float))
        The number of bins (at least 2) and the value range.

    Examples
    --------
    >>> integer_bins(0, 255, 256)
    (256, (-0.5, 255.5))
    >>> integer_bins(100, 1099, 256)  # 1000 values, 4 per bin
    (250, (99.5, 1099.5))
    >>> integer_bins(0, 4080, 256, step=16)  # 12-bit data in 16-bit pixels
    (256, (-8.0, 4088.0))
    """
    bins, _ = _check_bins_and_range(bins, (0, 1))
    low, high = (float(v) for v in (low, high))
    if not (np.isfinite(low) and np.isfinite(high) and high >= low):
        raise ValueError(f"integer bins need finite low <= high, got ({low:g}, {high:g})")
    if not (is_int(step, 1) and is_int(origin)):
        raise ValueError(f"step must be an integer >= 1 and origin an integer, got step {step!r}, origin {origin!r}")
    first = int(np.floor((low - origin) / step))  # possible values origin + j * step, j = first..last
    last = int(np.ceil((high - origin) / step))
    n_values = last - first + 1
    per_bin = -(-n_values // bins)
    n_bins = max(-(-n_values // per_bin), 2)
    start = origin + (first - 0.5) * step
    return n_bins, (float(start), float(start + n_bins * per_bin * step))


def _check_bins_and_range(bins, value_range):
    if not is_int(bins, 2):
        raise ValueError(f"bins must be an integer >= 2, got {bins!r}")
    low, high = (float(v) for v in value_range)
    if not (np.isfinite(low) and np.isfinite(high) and high > low):
        raise ValueError(f"value_range must be finite with low < high, got {tuple(value_range)}")
    return int(bins), (low, high)


def _fill_empty_rows(probabilities, filled):
    """Rows without data become the linear interpolation of the nearest filled rows."""
    rows = np.arange(probabilities.shape[0])
    below = filled[np.clip(np.searchsorted(filled, rows, side="right") - 1, 0, filled.size - 1)]
    above = filled[np.clip(np.searchsorted(filled, rows, side="left"), 0, filled.size - 1)]
    span = np.maximum(above - below, 1)
    weight = np.clip((rows - below) / span, 0, 1)[:, np.newaxis]
    return (1 - weight) * probabilities[below] + weight * probabilities[above]
