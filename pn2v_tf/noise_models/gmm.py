"""Gaussian-mixture noise model (Prakash et al. 2020, "Fully Unsupervised Probabilistic Noise2Void").

p(x|s) is a mixture of ``n_gaussians`` normal densities whose parameters are polynomials of degree
``n_coeff - 1`` in the normalised signal ``t = (clip(s, lo, hi) - lo) / (hi - lo)``, with
``(lo, hi) = signal_range``. Coefficients ``c`` have shape ``(3, n_gaussians, n_coeff)``, rows
``r = 0, 1, 2`` for mean offset, variance and weight, and ``poly_r(t) = sum_k c[r, :, k] t**k``:

* weights ``alpha = softmax(poly_2(t))``;
* offsets ``d = scale * poly_0(t)`` and means ``mu_j = s + d_j - sum_i alpha_i d_i``, so the mixture
  mean is exactly ``s`` (zero-mean noise) for any coefficients, also outside ``signal_range``;
* variances ``max(scale**2 * poly_1(t), min_std**2)`` (the variance floor).

``scale`` (raw units, the residual standard deviation of the fitted data) keeps coefficients of
order one. Outside ``signal_range`` the variances and weights keep their edge values while the
means follow s, so a signal that strays out of range still has a useful gradient.

A camera that saturates records every value at or beyond its limits as the limit. With
``saturation=(low, high)`` an observation ``x <= low`` (``x >= high``) gets the probability mass of
the mixture below ``low`` (above ``high``) instead of a density, so saturated pixels are explained
by bright (dark) signals rather than treated as extreme noise.
"""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from .._checks import is_int
from .base import NoiseModel, register_kind
from .pairs import flatten_pairs

_LOG_2PI = float(np.log(2 * np.pi))
#: Below this z the normal tail is computed by its asymptotic series (erfc underflows in float32).
_TAIL_Z = -10.0


def _log_normal_cdf(z):
    """``log Phi(z)``, accurate in float32 far into the lower tail."""
    safe_central = ops.maximum(z, _TAIL_Z)
    central = ops.log(ops.maximum(0.5 * ops.erfc(-safe_central / np.sqrt(2.0)), 1e-37))
    safe_tail = ops.minimum(z, _TAIL_Z)
    inv_z2 = 1.0 / ops.square(safe_tail)
    tail = (-0.5 * ops.square(safe_tail) - ops.log(-safe_tail) - 0.5 * _LOG_2PI
            + ops.log(1.0 - inv_z2 + 3.0 * ops.square(inv_z2)))
    return ops.where(z < _TAIL_Z, tail, central)


# Components are handled as Python lists of tensors shaped like the signal, not as one tensor with
# a trailing component axis: every step is then elementwise, with no reductions over a tiny axis,
# which makes the training loss about twice as fast on CPU.

def _polynomials(coefficients, row, t):
    """``[sum_k coefficients[row, j, k] * t**k for each component j]`` by Horner's rule.

    Products, not ``power()``: the gradient of ``t**0`` is NaN at t = 0.
    """
    n_gaussians, n_coeff = coefficients.shape[1], coefficients.shape[2]
    values = []
    for j in range(n_gaussians):
        value = coefficients[row, j, n_coeff - 1] * ops.ones_like(t)
        for k in range(n_coeff - 2, -1, -1):
            value = value * t + coefficients[row, j, k]
        values.append(value)
    return values


def _maximum(values):
    top = values[0]
    for value in values[1:]:
        top = ops.maximum(top, value)
    return top


def _log_sum_exp(values):
    top = _maximum(values)
    return top + ops.log(sum(ops.exp(value - top) for value in values))


def _components(coefficients, signal, signal_range, scale, min_std):
    """Per component: log-weights, mean offsets ``mu_j - s`` and variances (lists of tensors)."""
    low, high = signal_range
    t = (ops.clip(signal, low, high) - low) / (high - low)
    logits = _polynomials(coefficients, 2, t)
    log_total = _log_sum_exp(logits)
    log_weights = [logit - log_total for logit in logits]
    offsets = [scale * value for value in _polynomials(coefficients, 0, t)]
    mixture_offset = sum(ops.exp(log_w) * offset for log_w, offset in zip(log_weights, offsets))
    mean_offsets = [offset - mixture_offset for offset in offsets]
    variances = [ops.maximum(scale ** 2 * value, min_std ** 2) for value in _polynomials(coefficients, 1, t)]
    return log_weights, mean_offsets, variances


def mixture_parameters(coefficients, signal, signal_range, scale, min_std):
    """Log-weights, means and variances of the mixture at ``signal``, each of shape ``signal.shape + (n,)``."""
    log_weights, mean_offsets, variances = _components(coefficients, signal, signal_range, scale, min_std)
    means = [signal + offset for offset in mean_offsets]
    return tuple(ops.stack(values, axis=-1) for values in (log_weights, means, variances))


def mixture_log_likelihood(observation, signal, coefficients, signal_range, scale, min_std, saturation=None):
    """``log p(x|s)`` of the mixture for broadcastable ``observation`` and ``signal``."""
    observation, signal = ops.cast(observation, "float32"), ops.cast(signal, "float32")
    shape = ops.shape(observation + signal)
    observation, signal = ops.broadcast_to(observation, shape), ops.broadcast_to(signal, shape)
    log_weights, mean_offsets, variances = _components(coefficients, signal, signal_range, scale, min_std)
    residual = observation - signal
    if saturation is not None:
        # x <= low has mass Phi((low - mu) / sigma), x >= high has Phi((mu - high) / sigma): one
        # log-CDF per component of side * (limit - mu) / sigma, limit - mu = (limit - x) + (x - mu).
        low, high = saturation
        saturated = (observation <= low) | (observation >= high)
        side = ops.where(observation <= low, 1.0, -1.0)
        to_limit = ops.where(observation <= low, low, high) - observation
    terms = []
    for log_w, offset, variance in zip(log_weights, mean_offsets, variances):
        deviation = residual - offset  # x - mu_j
        log_density = -0.5 * (_LOG_2PI + ops.log(variance) + ops.square(deviation) / variance)
        if saturation is not None:
            mass = _log_normal_cdf(side * (to_limit + deviation) / ops.sqrt(variance))
            log_density = ops.where(saturated, mass, log_density)
        terms.append(log_w + log_density)
    return _log_sum_exp(terms)


@keras.saving.register_keras_serializable(package="pn2v_tf")
@register_kind("gmm")
class GMMNoiseModel(NoiseModel):
    """Gaussian-mixture noise model p(x|s) as a Keras layer (see the module docstring).

    Build it with :meth:`fit` (or :meth:`from_calibration_stack`); the constructor makes a layer
    with zero coefficients (one Gaussian of standard deviation ``scale``), used by Keras when
    loading.

    Parameters
    ----------
    n_gaussians : int
        Number of mixture components. Default: 3.
    n_coeff : int
        Coefficients per polynomial (2: linear in the signal). Default: 2.
    signal_range : tuple of float
        (low, high) of the signals the model was fitted on, raw units.
    scale : float
        Unit of the offset and variance polynomials, raw units.
    min_std : float
        Floor of every component's standard deviation, raw units.
    saturation : tuple of float or None
        (low, high) values at which the camera saturates; see the module docstring.
    value_range : tuple of float or None
        (low, high) of the observations the model was fitted to, including those left out by the
        signal percentiles (for plots and range warnings; the mixture itself covers all values).
        Default: ``signal_range`` widened by 5 ``scale``.
    """

    _out_of_range_note = "the mixture extrapolates (variances and weights keep their values at the edge)"

    def __init__(self, n_gaussians=3, n_coeff=2, signal_range=(0.0, 1.0), scale=1.0, min_std=1e-3,
                 saturation=None, value_range=None, **kwargs):
        super().__init__(**kwargs)
        if not is_int(n_gaussians, 1) or not is_int(n_coeff, 1):
            raise ValueError(f"n_gaussians and n_coeff must be integers >= 1, got {n_gaussians!r}, {n_coeff!r}")
        low, high = (float(v) for v in signal_range)
        if not (np.isfinite(low) and np.isfinite(high) and high > low):
            raise ValueError(f"signal_range must be finite with low < high, got {tuple(signal_range)}")
        if not (np.isfinite(scale) and scale > 0 and np.isfinite(min_std) and min_std > 0):
            raise ValueError(f"scale and min_std must be finite and > 0, got {scale!r}, {min_std!r}")
        if saturation is not None:
            saturation = tuple(float(v) for v in saturation)
            if len(saturation) != 2 or not saturation[0] < saturation[1]:
                raise ValueError(f"saturation must be (low, high) with low < high, got {saturation!r}")
        if value_range is None:
            value_range = (low - 5 * scale, high + 5 * scale)
        value_range = tuple(float(v) for v in value_range)
        if not (len(value_range) == 2 and np.all(np.isfinite(value_range)) and value_range[0] < value_range[1]):
            raise ValueError(f"value_range must be finite (low, high) with low < high, got {value_range!r}")
        self._value_range = value_range
        self.n_gaussians, self.n_coeff = int(n_gaussians), int(n_coeff)
        self._signal_range = (low, high)
        self.scale, self.min_std, self.saturation = float(scale), float(min_std), saturation
        self.coefficients = self.add_weight(shape=(3, self.n_gaussians, self.n_coeff), initializer="zeros",
                                            trainable=False, name="coefficients")

    # -- fitting -----------------------------------------------------------------------------
    @classmethod
    def fit(cls, signal, observation, n_gaussians=3, n_coeff=2, percentiles=(0.1, 99.9), min_std=None,
            saturation=None, learning_rate=0.1, steps=1000, batch_size=100_000, validation_fraction=0.1,
            eval_every=50, seed=0, verbose=False):
        """Fit the mixture to (signal, observation) pairs by maximum likelihood with Adam.

        Parameters
        ----------
        signal, observation : numpy.ndarray
            Clean (or pseudo-clean) signals and noisy observations of equal shape; as in
            :meth:`HistogramNoiseModel.from_pairs`, ``observation`` may also hold n images per
            signal image (observation ``j`` pairs with signal ``j // n``).
        n_gaussians, n_coeff : int
            Mixture components and coefficients per polynomial.
        percentiles : tuple of float
            The signal range is the (low, high) percentiles of the signals; pairs outside it are
            left out of the fit. ``(0, 100)`` keeps all. Default: (0.1, 99.9).
        min_std : float or None
            Floor of the component standard deviations; default: 1% of the residual standard
            deviation ``std(observation - signal)``.
        saturation : tuple of float or None
            Camera saturation limits (e.g. ``(0, 65535)``); see the module docstring.
        learning_rate, steps, batch_size : float, int, int
            Adam step size, number of steps and pairs per step.
        validation_fraction : float
            Fraction of pairs held out; every ``eval_every`` steps their negative log-likelihood
            is computed and the best coefficients are kept (on the training pairs if 0).
        seed : int
            Seed of the split and the mini-batches.
        verbose : bool
            Print the held-out loss at each evaluation.

        Returns
        -------
        GMMNoiseModel
            With the best coefficients seen; ``fit_history`` holds the losses
            (``loss`` per step, ``val_loss`` at ``val_step``).
        """
        signal, observation = flatten_pairs(signal, observation)
        _check_fit_arguments(percentiles, steps, batch_size, validation_fraction, eval_every, learning_rate)
        low, high = (float(v) for v in np.percentile(signal, percentiles))
        if not high > low:
            raise ValueError(f"the signals between percentiles {percentiles} span no range ({low:g}); "
                             "a noise model needs pairs at different signal levels")
        value_range = (observation.min(), observation.max())  # all data, so using it raises no warning
        keep = (signal >= low) & (signal <= high)
        signal, observation = signal[keep], observation[keep]
        unsaturated = _inside(observation, saturation)
        residual = (observation - signal)[unsaturated]
        scale = float(np.std(residual)) if residual.size > 1 else 0.0
        if not scale > 0:
            raise ValueError("the observations equal their signals: there is no noise to model")
        min_std = 0.01 * scale if min_std is None else float(min_std)
        model = cls(n_gaussians, n_coeff, (low, high), scale, min_std, saturation, value_range=value_range)
        model.coefficients.assign(_initial_coefficients(
            n_gaussians, n_coeff, (signal[unsaturated] - low) / (high - low), residual / scale))
        rng = np.random.default_rng(seed)
        order = rng.permutation(signal.size)
        n_val = int(round(validation_fraction * signal.size))
        val, train = order[:n_val], order[n_val:]
        if train.size == 0:
            raise ValueError("no pairs left to fit after holding out the validation fraction")
        model._run_adam((signal[train], observation[train]),
                        (signal[val], observation[val]) if n_val else (signal[train], observation[train]),
                        learning_rate, steps, batch_size, eval_every, rng, verbose)
        return model

    @classmethod
    def from_calibration_stack(cls, stack, **fit_kwargs):
        """Fit to many noisy frames (N, Y, X), or volumes (N, Z, Y, X), of a static sample; the signal is their mean."""
        stack = np.asarray(stack, dtype=np.float64)
        if stack.ndim < 3 or stack.shape[0] < 2:
            raise ValueError(f"calibration stack must have shape (N, Y, X) or (N, Z, Y, X) with N >= 2 frames, got "
                             f"{stack.shape}")
        return cls.fit(stack.mean(axis=0, keepdims=True), stack, **fit_kwargs)

    def _run_adam(self, train, val, learning_rate, steps, batch_size, eval_every, rng, verbose):
        coefficients = tf.Variable(self.coefficients.numpy())
        optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
        nll = tf.function(self._negative_log_likelihood, jit_compile=True)

        @tf.function(jit_compile=True, reduce_retracing=True)
        def step(signal, observation):
            with tf.GradientTape() as tape:
                loss = nll(coefficients, signal, observation)
            optimizer.apply_gradients([(tape.gradient(loss, coefficients), coefficients)])
            return loss

        val_signal, val_observation = (tf.constant(a, tf.float32) for a in val)
        best_loss, best = float(nll(coefficients, val_signal, val_observation)), coefficients.numpy()
        history = {"loss": [], "val_loss": [best_loss], "val_step": [0]}
        n_train = train[0].size
        for i in range(1, steps + 1):
            batch = rng.integers(0, n_train, size=min(batch_size, n_train))
            loss = float(step(tf.constant(train[0][batch], tf.float32), tf.constant(train[1][batch], tf.float32)))
            history["loss"].append(loss)
            if i % eval_every == 0 or i == steps:
                val_loss = float(nll(coefficients, val_signal, val_observation))
                history["val_loss"].append(val_loss)
                history["val_step"].append(i)
                if verbose:
                    print(f"GMM fit step {i}/{steps}: held-out negative log-likelihood {val_loss:.5f}")
                if np.isfinite(val_loss) and val_loss < best_loss:
                    best_loss, best = val_loss, coefficients.numpy()
        self.coefficients.assign(best)
        self.fit_history = history

    def _negative_log_likelihood(self, coefficients, signal, observation):
        return -ops.mean(mixture_log_likelihood(observation, signal, coefficients, self._signal_range,
                                                self.scale, self.min_std, self.saturation))

    # -- likelihood and moments --------------------------------------------------------------
    def _log_likelihood(self, observation, signal):
        return mixture_log_likelihood(observation, signal, self.coefficients, self._signal_range,
                                      self.scale, self.min_std, self.saturation)

    def parameters(self, signal):
        """Mixture weights, means and variances at ``signal`` (NumPy), each ``signal.shape + (n,)``."""
        signal = np.asarray(signal, dtype=np.float32)
        log_weights, means, variances = (keras.ops.convert_to_numpy(a) for a in mixture_parameters(
            self.coefficients, signal, self._signal_range, self.scale, self.min_std))
        return np.exp(log_weights), means, variances

    def mean(self, signal):
        """Mean of p(x|s) without saturation (equals ``signal``)."""
        weights, means, _ = self.parameters(signal)
        return np.sum(weights * means, axis=-1)

    def variance(self, signal):
        """Variance of p(x|s) without saturation."""
        weights, means, variances = self.parameters(signal)
        mean = np.sum(weights * means, axis=-1, keepdims=True)
        return np.sum(weights * (variances + np.square(means - mean)), axis=-1)

    # -- config and files --------------------------------------------------------------------
    def get_config(self):
        config = super().get_config()
        config.update(n_gaussians=self.n_gaussians, n_coeff=self.n_coeff, signal_range=list(self._signal_range),
                      scale=self.scale, min_std=self.min_std,
                      saturation=None if self.saturation is None else list(self.saturation),
                      value_range=list(self._value_range))
        return config

    def _arrays(self):
        return dict(coefficients=keras.ops.convert_to_numpy(self.coefficients),
                    signal_range=np.array(self._signal_range), scale=np.array(self.scale),
                    min_std=np.array(self.min_std), value_range=np.array(self._value_range),
                    saturation=np.array(self.saturation if self.saturation is not None else [], dtype=np.float64))

    @classmethod
    def _from_arrays(cls, arrays):
        coefficients = np.asarray(arrays["coefficients"], dtype=np.float32)
        if coefficients.ndim != 3 or coefficients.shape[0] != 3:
            raise ValueError(f"GMM coefficients must have shape (3, n_gaussians, n_coeff), got {coefficients.shape}")
        saturation = np.asarray(arrays["saturation"]).ravel()
        model = cls(coefficients.shape[1], coefficients.shape[2], tuple(arrays["signal_range"]),
                    float(arrays["scale"]), float(arrays["min_std"]),
                    tuple(saturation) if saturation.size else None, tuple(arrays["value_range"]))
        model.coefficients.assign(coefficients)
        return model


def _inside(observation, saturation):
    if saturation is None:
        return np.ones(observation.shape, dtype=bool)
    return (observation > saturation[0]) & (observation < saturation[1])


def _check_fit_arguments(percentiles, steps, batch_size, validation_fraction, eval_every, learning_rate):
    low, high = (float(p) for p in percentiles)
    if not 0 <= low < high <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {tuple(percentiles)}")
    for name, value in (("steps", steps), ("batch_size", batch_size), ("eval_every", eval_every)):
        if not is_int(value, 1):
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if not 0 <= validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction!r}")
    if not (np.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning_rate must be > 0, got {learning_rate!r}")


def _initial_coefficients(n_gaussians, n_coeff, t, residual):
    """Start near the answer: variance polynomial from a least-squares fit of residual**2 on t.

    Components start with equal weights and slightly different offsets (otherwise they would
    stay identical), in units of ``scale``.
    """
    coefficients = np.zeros((3, n_gaussians, n_coeff), dtype=np.float64)
    powers = np.stack([t ** k for k in range(n_coeff)], axis=-1)
    variance_fit, *_ = np.linalg.lstsq(powers, residual ** 2, rcond=None)
    if np.all(powers @ variance_fit > 0):
        coefficients[1] = variance_fit
    else:
        coefficients[1, :, 0] = np.mean(residual ** 2)
    coefficients[0, :, 0] = np.linspace(-0.5, 0.5, n_gaussians) if n_gaussians > 1 else 0.0
    coefficients[1, :, 0] *= np.linspace(0.8, 1.2, n_gaussians) if n_gaussians > 1 else 1.0
    return coefficients.astype(np.float32)
