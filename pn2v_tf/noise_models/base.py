"""The interface every noise model p(x|s) implements.

A noise model works in raw intensity units (camera counts), never in the network's normalised
units. It is a Keras layer, so it can sit inside training and prediction graphs; its arrays are
non-trainable weights and its constructor arguments are its config.
"""

import os
import warnings
import zipfile

import keras
import numpy as np
from keras import ops

_KINDS = {}


def register_kind(kind):
    """Class decorator: make ``NoiseModel.load`` find files written by this class."""
    def decorate(cls):
        cls.kind = kind
        _KINDS[kind] = cls
        return cls
    return decorate


class NoiseModel(keras.layers.Layer):
    """Base class of noise models p(x|s) as Keras layers.

    Subclasses implement :meth:`_log_likelihood` with ``keras.ops``, set ``_value_range`` and
    ``_signal_range``, and implement :meth:`_arrays` (what ``save`` writes) and :meth:`_from_arrays`.
    """

    kind = None
    #: What happens to values outside the range; the out-of-range warning says it.
    _out_of_range_note = "they are clamped to it"

    def __init__(self, **kwargs):
        kwargs.setdefault("trainable", False)
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self._warned = set()

    # -- the likelihood ----------------------------------------------------------------------
    def call(self, observation, signal):
        return self._log_likelihood(observation, signal)

    def log_likelihood(self, observation, signal):
        """Log-likelihood ``log p(x|s)`` for broadcastable observations x and signals s.

        NumPy in gives NumPy out (and warns once about values outside the model's range);
        tensors in give tensors out, usable in graphs and differentiable in ``signal``.
        """
        if isinstance(observation, np.ndarray) or isinstance(signal, np.ndarray) or np.isscalar(signal):
            observation = np.asarray(observation, dtype=np.float32)
            signal = np.asarray(signal, dtype=np.float32)
            self.check_range(observation, "observation")
            self.check_range(signal, "signal")
            return keras.ops.convert_to_numpy(self._log_likelihood(observation, signal))
        return self._log_likelihood(observation, signal)

    def likelihood(self, observation, signal):
        """``p(x|s)``; see :meth:`log_likelihood`."""
        log_p = self.log_likelihood(observation, signal)
        return np.exp(log_p) if isinstance(log_p, np.ndarray) else keras.ops.exp(log_p)

    def _log_likelihood(self, observation, signal):
        raise NotImplementedError

    def weight_tables(self, packed=False):
        """Tensors that :meth:`likelihood_weights` reads and that do not depend on its inputs (a
        tuple, empty by default). Computed once and passed back as ``tables=``, they are shared
        by a loop of calls, such as the prediction engine's chunks, instead of being derived in
        each (XLA would derive them again for every weight). ``packed``: the layout for graphs
        that run op by op (without XLA), where fewer, wider lookups are faster; the weights are
        the same either way."""
        return ()

    def likelihood_weights(self, observation, signal, tables=None):
        """Non-negative weights proportional to ``p(x|s)`` along the last axis of ``signal``
        (tensors): within one observation's row of signals they have the ratios of the likelihoods,
        their scale may differ from row to row. The MMSE divides by their sum. ``tables``: the
        result of :meth:`weight_tables`, or None to derive them here.

        Default: ``exp(log p - max log p)`` over the last axis, which never overflows.
        """
        log_p = self._log_likelihood(observation, signal)
        return ops.exp(log_p - ops.max(log_p, axis=-1, keepdims=True))

    def clip_signal(self, signal):
        """Signals as the likelihood sees them (tensor in, tensor out). Estimators weight these, so
        a prior sample beyond a clamping model's range counts as the edge value it was trained as.
        Default: unchanged."""
        return signal

    def noise_variance(self, signals, n_observations=2048):
        """The variance of x given s for each of ``signals`` (1-D array): from ``log p(x|s)`` on
        ``n_observations`` values evenly spread over ``value_range``, normalised to sum to 1 there.
        Any kind of model; a float64 array like ``signals``."""
        signals = np.asarray(signals, dtype=np.float32).reshape(-1)
        observations = np.linspace(*self.value_range, n_observations, dtype=np.float32)
        log_p = keras.ops.convert_to_numpy(self._log_likelihood(observations[:, None], signals[None, :]))
        p = np.exp(log_p.astype(np.float64) - log_p.max(axis=0))
        p /= p.sum(axis=0)
        mean = (p * observations[:, None]).sum(axis=0)
        return (p * (observations[:, None] - mean) ** 2).sum(axis=0)

    def mean_noise_variance(self, n_signals=32, n_observations=2048):
        """The variance of x given s (:meth:`noise_variance`), averaged over ``n_signals`` signals
        evenly spread over ``signal_range``. Any kind of model; a float."""
        signals = np.linspace(*self.signal_range, n_signals, dtype=np.float32)
        return float(np.mean(self.noise_variance(signals, n_observations)))

    @property
    def value_range(self):
        """(low, high) of observations the model describes (subclasses set ``_value_range``)."""
        return self._value_range

    @property
    def signal_range(self):
        """(low, high) of signals the model was calibrated for (``_signal_range``; default: value_range)."""
        return getattr(self, "_signal_range", None) or self.value_range

    def check_range(self, values, name="data", error_margin=None):
        """Warn once per ``name`` if ``values`` leave the range the model describes; reject NaN.

        With ``error_margin`` (a fraction of the range's width), values further than that beyond
        the range raise ``ValueError`` instead; values closer to it still only warn (noise tails
        a little past the calibration's extremes are normal).
        """
        if np.isnan(values).any():
            raise ValueError(f"{name} contains NaN values")
        low, high = self.signal_range if name == "signal" else self.value_range
        vmin, vmax = float(np.min(values)), float(np.max(values))
        slack = 1e-6 * (high - low) if np.isfinite(high - low) else 0.0  # float32 rounding of the edges
        if vmin >= low - slack and vmax <= high + slack:
            return
        message = f"{name} values [{vmin:g}, {vmax:g}] exceed the noise model's range [{low:g}, {high:g}]"
        if error_margin is not None:
            margin = error_margin * (high - low)
            if vmin < low - margin or vmax > high + margin:
                raise ValueError(f"{message} by more than {error_margin:.0%} of its width")
        if name not in self._warned:
            self._warned.add(name)
            warnings.warn(f"{message}; {self._out_of_range_note}", stacklevel=3)

    # -- files -------------------------------------------------------------------------------
    def save(self, path, overwrite=False):
        """Write the noise model to one ``.npz`` file; refuses to replace a file unless ``overwrite``."""
        path = os.fspath(path)
        if not path.endswith(".npz"):
            path += ".npz"
        if os.path.exists(path) and not overwrite:
            raise FileExistsError(f"noise model file exists: {path} (pass overwrite=True to replace it)")
        tmp = path[:-4] + ".tmp.npz"
        np.savez(tmp, kind=self.kind, **self._arrays())
        os.replace(tmp, path)
        return path

    def to_dict(self):
        """The whole model as JSON-compatible data (kind and arrays as nested lists)."""
        return {"kind": self.kind, **{key: np.asarray(value).tolist() for key, value in self._arrays().items()}}

    @staticmethod
    def from_dict(data):
        """Inverse of :meth:`to_dict`."""
        data = dict(data)
        kind = data.pop("kind", None)
        if kind not in _KINDS:
            raise ValueError(f"unknown noise model kind {kind!r} (known: {sorted(_KINDS)})")
        return _KINDS[kind]._from_arrays({key: np.asarray(value) for key, value in data.items()})

    @staticmethod
    def load(path):
        """Read a noise model written by :meth:`save`, whatever its kind."""
        try:
            with np.load(os.fspath(path), allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
            raise ValueError(f"cannot read noise model file {path}: {error}") from None
        kind = str(arrays.pop("kind", ""))
        if kind not in _KINDS:
            raise ValueError(f"{path} is not a noise model file (kind {kind!r}; known: {sorted(_KINDS)})")
        try:
            return _KINDS[kind]._from_arrays(arrays)
        except KeyError as missing:
            raise ValueError(f"noise model file {path} lacks the array {missing}") from None

    def _arrays(self):
        raise NotImplementedError

    @classmethod
    def _from_arrays(cls, arrays):
        raise NotImplementedError

    # -- inspection --------------------------------------------------------------------------
    def plot(self, path, signal=None, observation=None, **kwargs):
        """Write a PNG of p(x|s), against the (signal, observation) pairs if given; see
        :func:`pn2v_tf.noise_models.plots.plot_noise_model` for the options and the return value."""
        from .plots import plot_noise_model

        return plot_noise_model(self, path, signal=signal, observation=observation, **kwargs)


def load_noise_model(path):
    """Read a noise model file of any kind (see :meth:`NoiseModel.save`)."""
    return NoiseModel.load(path)
