"""Tests of pn2v_tf.calibration and PN2V.calibrate_spread: the prior's spread scaled after training by the
factor that maximises the validation likelihood."""

import warnings

import keras
import numpy as np
import pytest
from conftest import SMALL_NET, noisy, small_histogram, tiny

from pn2v_tf import PN2V, PN2VConfig
from pn2v_tf.calibration import SPREAD_FACTORS, best_spread_factors, scale_head_spread, spread_losses
from pn2v_tf.nets import build_networks
from pn2v_tf.noise_models import ChannelNoiseModels, HistogramNoiseModel

K = 8
STEP = 2 ** 0.25    # the grid's ratio


def _gaussian_noise_model(sigma, value_range=(-60.0, 260.0), bins=320, seed=0):
    rng = np.random.default_rng(seed)
    signal = rng.uniform(*value_range, 3_000_000)
    return HistogramNoiseModel.from_pairs(signal, signal + rng.normal(0, sigma, signal.size), bins=bins,
                                          value_range=value_range)


def _pixels_of_a_gaussian_prior(n, spread, sigma, prior_sd=12.0, k=400, seed=1):
    """Observations x = s + noise with s ~ N(mu, prior_sd^2), and K samples of N(mu, (spread * prior_sd)^2)."""
    rng = np.random.default_rng(seed)
    mu = rng.uniform(60, 140, (n, 1))
    observations = mu + rng.normal(0, prior_sd, (n, 1)) + rng.normal(0, sigma, (n, 1))
    samples = mu[..., None] + spread * prior_sd * rng.standard_normal((n, 1, k))
    return samples.astype(np.float32), observations.astype(np.float32)


@pytest.mark.filterwarnings("ignore:.*exceed the noise model's range:UserWarning")
@pytest.mark.parametrize("spread", [0.5, 1.0, 2.0])
def test_the_likeliest_factor_undoes_a_too_narrow_or_too_wide_prior(spread):
    noise_model = _gaussian_noise_model(sigma=8.0)
    samples, observations = _pixels_of_a_gaussian_prior(4000, spread, sigma=8.0)

    factor = best_spread_factors(samples, observations, noise_model)

    assert factor.shape == (1,)
    assert 1 / spread / STEP ** 1.01 <= factor[0] <= 1 / spread * STEP ** 1.01


@pytest.mark.filterwarnings("ignore:.*exceed the noise model's range:UserWarning")
def test_each_channel_is_calibrated_with_its_own_noise_model():
    models = ChannelNoiseModels([_gaussian_noise_model(sigma=8.0), _gaussian_noise_model(sigma=3.0, seed=2)])
    narrow, observations_0 = _pixels_of_a_gaussian_prior(3000, 0.5, sigma=8.0, seed=3)
    wide, observations_1 = _pixels_of_a_gaussian_prior(3000, 2.0, sigma=3.0, seed=4)
    samples = np.concatenate([narrow, wide], axis=1)
    observations = np.concatenate([observations_0, observations_1], axis=1)

    losses = spread_losses(samples, observations, models)
    factors = best_spread_factors(samples, observations, models)

    assert losses.shape == (len(SPREAD_FACTORS), 2)
    for channel, expected in enumerate((2.0, 0.5)):
        assert expected / STEP ** 1.01 <= factors[channel] <= expected * STEP ** 1.01
    single = spread_losses(narrow, observations_0, models.models[0])
    np.testing.assert_allclose(losses[:, 0], single[:, 0], rtol=1e-5)


def test_losses_are_the_pn2v_loss_of_the_moved_samples():
    noise_model = small_histogram()
    rng = np.random.default_rng(5)
    samples = rng.uniform(20, 90, (6, 1, 5)).astype(np.float32)
    observations = rng.uniform(20, 90, (6, 1)).astype(np.float32)
    factor = 1.5

    loss = spread_losses(samples, observations, noise_model, factors=[factor])[0, 0]

    mean = samples.mean(-1, keepdims=True)
    moved = mean + factor * (samples - mean)
    p = np.exp(noise_model.log_likelihood(observations[..., None], moved).astype(np.float64))
    assert loss == pytest.approx(np.mean(-np.log(p.mean(-1))), rel=1e-5)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match=r"samples must be \(N, C, K\) and observations \(N, C\)"):
        spread_losses(np.zeros((4, 8), np.float32), np.zeros((4, 1), np.float32), small_histogram())


@pytest.mark.parametrize("single_net_per_channel", [False, True])
def test_scaling_the_head_scales_each_channels_samples_about_their_mean(single_net_per_channel):
    rng = np.random.default_rng(6)
    X = rng.normal(100, 10, (2, 16, 16, 2)).astype(np.float32)
    X[..., 1] = X[..., 1] * 3 + 500                     # another normalisation in the second channel
    config = PN2VConfig(X, axes="YXC", mode="pn2v", n_samples=K, unet_n_depth=2, unet_n_first=4,
                        single_net_per_channel=single_net_per_channel, samples_init_spread=0.5)
    network, _ = build_networks(config)
    head = network.get_layer("head")
    head.bias.assign(rng.normal(0, 0.3, head.bias.shape).astype(np.float32))
    before = keras.ops.convert_to_numpy(network(X[:1])).reshape(16, 16, 2, K)
    factors = (2.0, 0.25)

    scale_head_spread(head, factors)

    after = keras.ops.convert_to_numpy(network(X[:1])).reshape(16, 16, 2, K)
    mean = before.mean(-1, keepdims=True)
    expected = mean + np.array(factors)[:, None] * (before - mean)
    np.testing.assert_allclose(after, expected, rtol=1e-4, atol=1e-3 * np.abs(before).max())
    assert np.abs(before - mean).max() > 1e-2          # the samples did differ


# -- the model -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(7)
    return noisy(rng, (3, 32, 32)), noisy(rng, (1, 32, 32))


def _config(X, **overrides):
    return PN2VConfig(X, mode="pn2v", n_samples=K, samples_init_spread=None, samples_output_scale=10.0,
                      **tiny(SMALL_NET, **overrides))


def _train(model, X, X_val):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(X, X_val, epochs=2, steps_per_epoch=3, verbose=0)
    return model


def _validation_samples(model, X_val):
    """The prior samples (N, 1, K) and observations (N, 1) of the masked validation pixels."""
    patches = model._validation_patches(X_val[..., None])
    pairs = [patches[n] for n in range(len(patches))]
    samples = np.concatenate([np.asarray(model.keras_model_masked(i, training=False)).reshape(-1, 1, K)
                              for i, _ in pairs])
    return samples, np.concatenate([np.asarray(t).reshape(-1, 1) for _, t in pairs])


@pytest.mark.filterwarnings("ignore:.*exceed the noise model's range:UserWarning")
def test_training_calibrates_and_a_reload_reads_the_calibrated_weights(tmp_path, images):
    X, X_val = images
    keras.utils.set_random_seed(0)
    model = _train(PN2V(_config(X, train_calibrate_spread=True), "m", basedir=str(tmp_path),
                        noise_model=small_histogram()), X, X_val)
    reloaded = PN2V(None, "m", basedir=str(tmp_path))
    np.testing.assert_array_equal(reloaded.predict(X_val[0]), model.predict(X_val[0]))
    samples, observations = _validation_samples(model, X_val)
    factor = best_spread_factors(samples, observations, model.noise_model)
    assert factor == pytest.approx([1.0])            # the calibrated spread is the likeliest one


@pytest.mark.filterwarnings("ignore:.*exceed the noise model's range:UserWarning")
def test_calibrate_spread_applies_the_likeliest_factor_and_keeps_the_samples_mean(images):
    X, X_val = images
    keras.utils.set_random_seed(0)
    model = _train(PN2V(_config(X), "m", basedir=None, noise_model=small_histogram()), X, X_val)
    samples, observations = _validation_samples(model, X_val)
    expected = best_spread_factors(samples, observations, model.noise_model)
    image = X_val[0][None, ..., None]
    before = keras.ops.convert_to_numpy(model.keras_model(image))

    factors = model.calibrate_spread(X_val)

    assert factors == pytest.approx(expected) and SPREAD_FACTORS[0] < factors[0] < SPREAD_FACTORS[-1]
    after = keras.ops.convert_to_numpy(model.keras_model(image))
    mean = before.mean(-1, keepdims=True)
    np.testing.assert_allclose(after, mean + factors[0] * (before - mean), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(after.mean(-1), before.mean(-1), rtol=1e-5)     # the samples' mean stays
    assert model.calibrate_spread(X_val) == pytest.approx([1.0])


def test_calibrate_spread_needs_mode_pn2v(images):
    X, X_val = images
    model = PN2V(PN2VConfig(X, mode="n2v", **tiny(SMALL_NET)), "n", basedir=None)
    with pytest.raises(ValueError, match="calibrate_spread needs a model of mode 'pn2v'"):
        model.calibrate_spread(X_val)
