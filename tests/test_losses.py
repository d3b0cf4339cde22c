"""Tests of pn2v_tf.losses: the PN2V negative log-likelihood (paper Eq. 7) and the scaled MSE."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy.special import logsumexp

from pn2v_tf import PN2VConfig
from pn2v_tf.losses import PN2VLoss, ScaledMSE, pn2v_negative_log_likelihood
from pn2v_tf.nets import build_networks
from pn2v_tf.noise_models import HistogramNoiseModel
from pn2v_tf.noise_models.histogram import MIN_PROBABILITY

# Hand-made histogram: 4 bins over (0, 8), width 2; rows 0 and 2 have data, row 1 is interpolated,
# row 3 copies row 2; signal_range (1, 5). Row 0 has an empty cell at x bin 3.
COUNTS = np.array([[2, 1, 1, 0], [0, 0, 0, 0], [0, 1, 2, 1], [0, 0, 0, 0]])
HISTOGRAM = np.array([
    [0.50, 0.25, 0.25, 0.00],
    [0.25, 0.25, 0.375, 0.125],
    [0.00, 0.25, 0.50, 0.25],
    [0.00, 0.25, 0.50, 0.25],
])
WIDTH = 2.0


@pytest.fixture
def tiny_model():
    return HistogramNoiseModel.from_counts(COUNTS, (0.0, 8.0))


@pytest.fixture
def gaussian_model():
    """Histogram model of Gaussian noise (sigma 3) over (0, 64) with 32 bins."""
    rng = np.random.default_rng(3)
    signal = rng.uniform(4, 60, 200_000)
    observation = signal + rng.normal(0, 3, signal.size)
    return HistogramNoiseModel.from_pairs(signal, observation, bins=32, value_range=(0, 64))


def _reference_loss(likelihoods):
    """``-log(mean_k p)`` along the last axis, in float64."""
    return -np.log(np.mean(np.asarray(likelihoods, dtype=np.float64), axis=-1))


# -- pn2v_negative_log_likelihood ----------------------------------------------------------------

def test_negative_log_likelihood_equals_minus_log_mean_of_likelihoods():
    rng = np.random.default_rng(0)
    log_p = rng.normal(-3, 2, size=(2, 5, 7)).astype(np.float32)

    actual = pn2v_negative_log_likelihood(tf.constant(log_p))

    assert tuple(actual.shape) == (2, 5)
    np.testing.assert_allclose(actual.numpy(), _reference_loss(np.exp(log_p)), rtol=1e-5)


def test_negative_log_likelihood_by_hand():
    """p = (0.1, 0.3): -log(0.2)."""
    actual = pn2v_negative_log_likelihood(tf.constant(np.log([[0.1, 0.3]]), dtype=tf.float32))

    np.testing.assert_allclose(actual.numpy(), [-np.log(0.2)], rtol=1e-6)


def test_negative_log_likelihood_is_stable_where_exp_underflows():
    log_p = np.array([[-1000.0, -1010.0, -1003.0, -1000.5]], dtype=np.float32)
    with np.errstate(divide="ignore"):
        naive = -np.log(np.mean(np.exp(log_p), axis=-1))
    expected = np.log(4) - logsumexp(log_p.astype(np.float64), axis=-1)

    actual = pn2v_negative_log_likelihood(tf.constant(log_p)).numpy()

    assert np.all(np.isinf(naive))              # the naive formula fails here ...
    np.testing.assert_allclose(actual, expected, rtol=1e-6)   # ... the log-space one does not


def test_negative_log_likelihood_of_equal_values_is_minus_that_value():
    """``-log(mean_k exp(c)) = -c`` for any K."""
    log_p = np.full((3, 800), -1000.0, dtype=np.float32)

    actual = pn2v_negative_log_likelihood(tf.constant(log_p)).numpy()

    np.testing.assert_allclose(actual, 1000.0, rtol=1e-6)


def test_negative_log_likelihood_works_with_unknown_number_of_samples():
    graph_fn = tf.function(pn2v_negative_log_likelihood, input_signature=[tf.TensorSpec([None, None])])
    log_p = np.log(np.array([[0.1, 0.3], [0.2, 0.2]], dtype=np.float32))

    actual = graph_fn(tf.constant(log_p)).numpy()

    np.testing.assert_allclose(actual, -np.log([0.2, 0.2]), rtol=1e-6)


# -- PN2VLoss ------------------------------------------------------------------------------------

def test_pn2v_loss_by_hand(tiny_model):
    """One pixel x = 5 (bin 2) with samples s = 1, 3, 5 (rows 0, 1, 2): p = (0.25, 0.375, 0.5) / 2."""
    y_true = np.array([[[5.0]]], dtype=np.float32)
    y_pred = np.array([[[1.0, 3.0, 5.0]]], dtype=np.float32)
    expected = -np.log(np.mean([0.25, 0.375, 0.5]) / WIDTH)

    actual = PN2VLoss(tiny_model)(y_true, y_pred)

    np.testing.assert_allclose(float(actual), expected, rtol=1e-6)


def test_pn2v_loss_equals_numpy_reference_per_pixel_and_mean_over_pixels(gaussian_model):
    rng = np.random.default_rng(1)
    batch, n_masked, n_samples = 3, 5, 16
    y_true = rng.uniform(10, 50, (batch, n_masked, 1)).astype(np.float32)
    y_pred = np.clip(y_true + rng.normal(0, 4, (batch, n_masked, n_samples)), 6, 58).astype(np.float32)
    per_pixel = _reference_loss(gaussian_model.likelihood(y_true, y_pred))
    loss = PN2VLoss(gaussian_model)

    per_pixel_actual = keras.ops.convert_to_numpy(loss.call(tf.constant(y_true), tf.constant(y_pred)))
    reduced = float(loss(y_true, y_pred))

    assert per_pixel_actual.shape == (batch, n_masked)
    np.testing.assert_allclose(per_pixel_actual, per_pixel, rtol=1e-5)
    np.testing.assert_allclose(reduced, per_pixel.mean(), rtol=1e-5)   # mean over B * M


def test_pn2v_loss_pixels_do_not_mix(gaussian_model):
    """Changing the observation of one masked pixel changes the loss term of that pixel only."""
    rng = np.random.default_rng(2)
    y_true = rng.uniform(10, 50, (2, 4, 1)).astype(np.float32)
    y_pred = (y_true + rng.normal(0, 3, (2, 4, 8))).astype(np.float32)
    changed = y_true.copy()
    changed[1, 2, 0] += 9.0
    loss = PN2VLoss(gaussian_model)

    before = loss.call(tf.constant(y_true), tf.constant(y_pred)).numpy()
    after = loss.call(tf.constant(changed), tf.constant(y_pred)).numpy()

    differs = before != after
    assert differs[1, 2]
    assert differs.sum() == 1


def test_pn2v_loss_is_finite_where_every_likelihood_is_zero(tiny_model):
    """x = 7 (bin 3) and all samples s = 1 (row 0, empty at bin 3): every p is the floor."""
    y_true = np.full((2, 3, 1), 7.0, dtype=np.float32)
    y_pred = tf.Variable(np.full((2, 3, 5), 1.0, dtype=np.float32))
    loss = PN2VLoss(tiny_model)

    with tf.GradientTape() as tape:
        value = loss(y_true, y_pred)
    gradient = tape.gradient(value, y_pred)

    np.testing.assert_allclose(float(value), -np.log(MIN_PROBABILITY / WIDTH), rtol=1e-6)
    assert np.all(np.isfinite(gradient.numpy()))


def test_pn2v_loss_gradient_pulls_samples_towards_likely_signals(tiny_model):
    """At x = 5 (bin 2), p rises from row 1 (0.375) to row 2 (0.5): d loss / d s < 0 for s in (3, 5)."""
    y_true = np.array([[[5.0]]], dtype=np.float32)
    y_pred = tf.Variable(np.array([[[3.5, 4.5]]], dtype=np.float32))
    loss = PN2VLoss(tiny_model)

    with tf.GradientTape() as tape:
        value = loss(y_true, y_pred)
    gradient = tape.gradient(value, y_pred).numpy()[0, 0]

    # d/ds_k [-log(mean p)] = -(dp_k/ds_k) / sum_j p_j, with dp/ds = (0.5 - 0.375) / w^2.
    p = (np.array([0.375, 0.375]) + (np.array([3.5, 4.5]) - 3.0) / WIDTH * 0.125) / WIDTH
    expected = -(0.125 / WIDTH ** 2) / p.sum()
    np.testing.assert_allclose(gradient, [expected, expected], rtol=1e-5)


@pytest.mark.parametrize("noise_model", ["histogram", "gmm"])
def test_pn2v_loss_fused_gradient_equals_autodiff_of_the_formula(gaussian_model, noise_model):
    """PN2VLoss computes loss and gradient in one XLA program with a custom gradient; for any
    per-pixel weighting (Keras' sample weights, its mean over pixels) it must equal TensorFlow's
    gradient of the plain formula, also inside a tf.function as in training."""
    from pn2v_tf.noise_models import GMMNoiseModel

    if noise_model == "gmm":
        model = GMMNoiseModel(n_gaussians=2, n_coeff=2, signal_range=(0, 64), scale=10.0)
        model.set_weights([w + 0.1 * np.arange(w.size).reshape(w.shape) for w in model.get_weights()])
    else:
        model = gaussian_model
    rng = np.random.default_rng(7)
    y_true = tf.constant(rng.uniform(10, 50, (3, 5, 1)).astype(np.float32))
    y_pred = tf.Variable(y_true + rng.normal(0, 4, (3, 5, 9)).astype(np.float32))
    weights = tf.constant(rng.uniform(0.5, 2.0, (3, 5)).astype(np.float32))
    loss = PN2VLoss(model)

    @tf.function
    def fused():
        with tf.GradientTape() as tape:
            value = tf.reduce_sum(weights * loss.call(y_true, y_pred))
        return value, tape.gradient(value, y_pred)

    with tf.GradientTape() as tape:
        reference = tf.reduce_sum(weights * pn2v_negative_log_likelihood(model.log_likelihood(y_true, y_pred)))
    expected = tape.gradient(reference, y_pred).numpy()

    value, gradient = fused()
    assert np.abs(expected).max() > 0
    np.testing.assert_allclose(float(value), float(reference), rtol=1e-5)
    np.testing.assert_allclose(gradient.numpy(), expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())


def test_pn2v_loss_mean_weight_adds_the_scaled_squared_error_of_the_samples_mean(gaussian_model):
    """loss = NLL + w ((mean_k s_k - x) / std)^2 per pixel and channel (std per channel), and its fused
    gradient gives each sample the NLL's gradient plus 2 w (mean - x) / (K std^2)."""
    rng = np.random.default_rng(11)
    y_true = rng.uniform(10, 50, (2, 4, 2)).astype(np.float32)                 # two channels
    samples = y_true[..., None] + rng.normal(0, 4, (2, 4, 2, 5)).astype(np.float32)
    y_pred = tf.Variable(samples.reshape(2, 4, 10))
    weight, scale = 0.7, [2.0, 5.0]
    plain, weighted = PN2VLoss(gaussian_model), PN2VLoss(gaussian_model, mean_weight=weight, scale=scale)

    def value_and_gradient(loss):
        with tf.GradientTape() as tape:
            value = tf.reduce_sum(loss.call(tf.constant(y_true), y_pred))
        return loss.call(tf.constant(y_true), y_pred).numpy(), tape.gradient(value, y_pred).numpy()

    (nll, nll_gradient), (total, gradient) = value_and_gradient(plain), value_and_gradient(weighted)
    error = (samples.mean(axis=-1) - y_true) / np.float32(scale)
    np.testing.assert_allclose(total, nll + weight * error ** 2, rtol=1e-5, atol=1e-6)
    extra = np.repeat(2 * weight * error / np.float32(scale) / 5, 5, axis=-1).reshape(2, 4, 10)
    assert np.abs(extra).max() > 1e-3
    np.testing.assert_allclose(gradient, nll_gradient + extra, rtol=1e-4, atol=1e-6)
    rebuilt = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(weighted))
    assert (rebuilt.mean_weight, rebuilt.scale) == (weight, scale)


def test_pn2v_loss_decoupled_mean_learns_from_the_squared_error_alone(gaussian_model):
    """With ``decouple_mean`` the squared error is in units of the noise's variance v (the noise
    model's mean_noise_variance): loss = NLL + w (mean - x)^2 / v. Per pixel and channel the
    gradients of the K samples sum to the squared error's alone, 2 w (mean - x) / v, and about
    their mean they are the likelihood's (its gradient less its mean over the samples)."""
    rng = np.random.default_rng(12)
    y_true = rng.uniform(10, 50, (2, 4, 2)).astype(np.float32)
    samples = y_true[..., None] + rng.normal(3, 4, (2, 4, 2, 5)).astype(np.float32)
    y_pred = tf.Variable(samples.reshape(2, 4, 10))
    weight, scale = 0.7, [2.0, 5.0]
    losses = {"nll": PN2VLoss(gaussian_model), "added": PN2VLoss(gaussian_model, weight, scale),
              "decoupled": PN2VLoss(gaussian_model, weight, scale, decouple_mean=True)}

    def value_and_gradient(loss):
        with tf.GradientTape() as tape:
            value = loss.call(tf.constant(y_true), y_pred)
            total = tf.reduce_sum(value)
        return value.numpy(), tape.gradient(total, y_pred).numpy().reshape(2, 4, 2, 5)

    (nll, nll_gradient), (added, _), (decoupled, gradient) = map(value_and_gradient, losses.values())
    residual = samples.mean(axis=-1) - y_true
    reference = gaussian_model.mean_noise_variance()
    assert losses["decoupled"].noise_variance.tolist() == [np.float32(reference)]
    np.testing.assert_allclose(decoupled, nll + weight * residual ** 2 / reference, rtol=1e-5, atol=1e-6)
    assert np.abs(decoupled - added).max() > 1e-2
    np.testing.assert_allclose(gradient.sum(axis=-1), 2 * weight * residual / reference, rtol=1e-4, atol=1e-6)
    about_mean = nll_gradient - nll_gradient.mean(axis=-1, keepdims=True)
    assert np.abs(nll_gradient.sum(axis=-1)).max() > 1e-2        # the likelihood alone would move the mean
    np.testing.assert_allclose(gradient - gradient.mean(axis=-1, keepdims=True), about_mean, rtol=1e-4, atol=1e-6)
    rebuilt = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(losses["decoupled"]))
    assert rebuilt.decouple_mean and not PN2VLoss.from_config(
        {k: v for k, v in losses["added"].get_config().items() if k != "decouple_mean"}).decouple_mean


def test_pn2v_loss_on_masked_network_counts_only_the_masked_pixels(gaussian_model):
    """The masked training graph gives the same loss as the full prediction network read at the
    masked coordinates: only those pixels enter the loss."""
    rng = np.random.default_rng(4)
    images = rng.uniform(10, 50, (2, 16, 16, 1)).astype(np.float32)
    config = PN2VConfig(images[..., 0], n_samples=6, unet_n_depth=2, unet_n_first=4)
    prediction, masked = build_networks(config)
    coords = np.array([[[0, 0], [3, 7], [15, 15]], [[8, 1], [2, 14], [9, 9]]], dtype=np.int32)
    y_true = images[np.arange(2)[:, None], coords[..., 0], coords[..., 1]]   # (2, 3, 1)
    loss = PN2VLoss(gaussian_model)

    masked_value = float(loss(y_true, masked({"image": images, "coords": coords[:, :, None]})))

    full = keras.ops.convert_to_numpy(prediction(images))
    at_coords = full[np.arange(2)[:, None], coords[..., 0], coords[..., 1]]   # (2, 3, K)
    np.testing.assert_allclose(masked_value, float(loss(y_true, at_coords)), rtol=1e-5)


def test_pn2v_loss_config_round_trip(gaussian_model):
    loss = PN2VLoss(gaussian_model)
    y_true = np.array([[[20.0], [30.0]]], dtype=np.float32)
    y_pred = np.array([[[19.0, 22.0, 25.0], [31.0, 30.5, 28.0]]], dtype=np.float32)

    rebuilt = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))

    assert isinstance(rebuilt, PN2VLoss)
    assert isinstance(rebuilt.noise_model, HistogramNoiseModel)   # arrays travel in the config
    np.testing.assert_array_equal(rebuilt.noise_model.histogram.numpy(), gaussian_model.histogram.numpy())
    assert rebuilt.noise_model.value_range == gaussian_model.value_range
    assert rebuilt.noise_model.signal_range == gaussian_model.signal_range
    np.testing.assert_allclose(float(rebuilt(y_true, y_pred)), float(loss(y_true, y_pred)), rtol=1e-6)


# -- ScaledMSE -----------------------------------------------------------------------------------

@pytest.mark.parametrize("scale", [1.0, 0.5, 37.0])
def test_scaled_mse_equals_mse_over_scale_squared(scale):
    rng = np.random.default_rng(5)
    y_true = rng.normal(100, 20, (3, 6, 1)).astype(np.float32)
    y_pred = rng.normal(100, 20, (3, 6, 1)).astype(np.float32)
    expected = np.mean((y_true.astype(np.float64) - y_pred) ** 2) / scale ** 2

    actual = float(ScaledMSE(scale)(y_true, y_pred))

    np.testing.assert_allclose(actual, expected, rtol=1e-5)


def test_scaled_mse_by_hand():
    """Errors 1, -3 with scale 2: (0.25 + 2.25) / 2."""
    actual = float(ScaledMSE(2.0)(np.array([[[1.0], [2.0]]]), np.array([[[0.0], [5.0]]])))

    assert actual == pytest.approx(1.25)


def test_scaled_mse_config_round_trip():
    loss = ScaledMSE(3.5)

    rebuilt = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))

    assert isinstance(rebuilt, ScaledMSE)
    assert rebuilt.scale == 3.5
    assert float(rebuilt(np.array([[[7.0]]]), np.array([[[0.0]]]))) == pytest.approx(4.0)
