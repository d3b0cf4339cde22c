"""Tests of pn2v_tf.calibration and PN2V.calibrate_spread: after training, the prior's samples are moved
towards their mean by the smallest factor under which the validation images, as predict sees them, are
as likely as under the likeliest factor, within one standard error."""

import warnings

import keras
import numpy as np
import pytest
from conftest import SMALL_NET, noisy, small_histogram, tiny

from pn2v_tf import PN2V, PN2VConfig
from pn2v_tf.calibration import (CHUNK_PIXELS, SPREAD_FACTORS, SpreadEvidence, SpreadRisk, best_spread_factors,
                                 evidence_noise_model, evidence_shortfalls, evidence_standard_errors,
                                 scale_head_spread)
from pn2v_tf.inference import mmse
from pn2v_tf.data import random_patches
from pn2v_tf.model import CALIBRATION_PIXELS, calibration_patches
from pn2v_tf.nets import build_networks
from pn2v_tf.noise_models import ChannelNoiseModels, GMMNoiseModel, HistogramNoiseModel

K = 8
STEP = 2 ** (1 / 3)    # the grid's ratio


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


def _log_evidence_by_hand(noise_model, samples, observations, factor):
    mean = samples.mean(-1, keepdims=True)
    moved = mean + np.float32(factor) * (samples - mean)
    p = np.exp(np.asarray(noise_model.log_likelihood(observations[..., None], moved), dtype=np.float64))
    return np.log(p.mean(-1)).sum(axis=0)


@pytest.mark.parametrize("spread", [1.5, 2.0, 4.0])
def test_the_likeliest_factor_undoes_a_too_wide_prior(spread):
    noise_model = _gaussian_noise_model(sigma=8.0)
    samples, observations = _pixels_of_a_gaussian_prior(6000, spread, sigma=8.0)

    factor = best_spread_factors(SpreadEvidence(noise_model).add(samples, observations))

    assert factor.shape == (1,)
    assert 1 / spread / STEP ** 1.01 <= factor[0] <= 1 / spread * STEP ** 1.01


def test_a_too_narrow_prior_is_left_as_it_is():
    noise_model = _gaussian_noise_model(sigma=8.0)
    samples, observations = _pixels_of_a_gaussian_prior(6000, 0.5, sigma=8.0)

    evidence = SpreadEvidence(noise_model).add(samples, observations)

    assert best_spread_factors(evidence) == pytest.approx([1.0])
    assert np.all(np.diff(evidence.totals[:, 0]) < 0)           # every shrinking makes it less likely


def test_each_channel_is_calibrated_with_its_own_noise_model():
    models = ChannelNoiseModels([_gaussian_noise_model(sigma=8.0), _gaussian_noise_model(sigma=3.0, seed=2)])
    wide, observations_0 = _pixels_of_a_gaussian_prior(3000, 2.0, sigma=8.0, seed=3)
    wider, observations_1 = _pixels_of_a_gaussian_prior(3000, 4.0, sigma=3.0, seed=4)
    samples = np.concatenate([wide, wider], axis=1)
    observations = np.concatenate([observations_0, observations_1], axis=1)

    evidence = SpreadEvidence(models).add(samples, observations)

    assert evidence.totals.shape == (len(SPREAD_FACTORS), 2)
    for channel, expected in enumerate((0.5, 0.25)):
        assert expected / STEP ** 1.01 <= best_spread_factors(evidence)[channel] <= expected * STEP ** 1.01
    single = SpreadEvidence(models.models[1]).add(wider, observations_1)
    np.testing.assert_allclose(evidence.totals[:, 1], single.totals[:, 0], rtol=1e-6)


def test_the_evidence_is_the_log_mean_likelihood_of_the_moved_samples_summed_over_batches():
    noise_model = small_histogram()
    rng = np.random.default_rng(5)
    n = CHUNK_PIXELS + 37                                       # a full and a padded chunk
    samples = rng.uniform(20, 90, (n, 1, 5)).astype(np.float32)
    observations = rng.uniform(20, 90, (n, 1)).astype(np.float32)
    factors = (1.0, 0.5)

    evidence = SpreadEvidence(noise_model, factors).add(samples[:100], observations[:100])
    evidence.add(samples[100:], observations[100:])

    expected = [_log_evidence_by_hand(noise_model, samples, observations, f) for f in factors]
    np.testing.assert_allclose(evidence.totals, expected, rtol=1e-5)
    assert evidence.pixels == n


def _log_evidence_per_pixel(noise_model, samples, observations, factor):
    mean = samples.mean(-1, keepdims=True)
    moved = mean + np.float32(factor) * (samples - mean)
    p = np.exp(np.asarray(noise_model.log_likelihood(observations[..., None], moved), dtype=np.float64))
    return np.log(p.mean(-1))[:, 0]


def test_standard_errors_are_those_of_the_paired_differences_from_the_likeliest_factor():
    noise_model = small_histogram()
    rng = np.random.default_rng(9)
    n = CHUNK_PIXELS + 21                                       # a full and a padded chunk
    signal = rng.uniform(30, 80, (n, 1))
    samples = (signal[..., None] + rng.normal(0, 6, (n, 1, K))).astype(np.float32)
    observations = (signal + rng.normal(0, 4, (n, 1))).astype(np.float32)
    factors = (1.0, 0.7, 0.5, 0.25)

    evidence = SpreadEvidence(noise_model, factors).add(samples[:300], observations[:300])
    evidence.add(samples[300:], observations[300:])

    per_pixel = np.stack([_log_evidence_per_pixel(noise_model, samples, observations, f) for f in factors], axis=1)
    best = int(np.argmax(per_pixel.sum(axis=0)))
    differences = per_pixel - per_pixel[:, best:best + 1]
    expected = np.sqrt(n) * differences.std(axis=0)
    np.testing.assert_allclose(evidence_standard_errors(evidence)[:, 0], expected, rtol=1e-3, atol=1e-6)
    assert evidence_standard_errors(evidence)[best, 0] == 0


def test_a_subset_of_the_factors_is_the_evidence_of_those_factors_alone():
    noise_model = small_histogram()
    rng = np.random.default_rng(11)
    n = 700
    signal = rng.uniform(30, 80, (n, 1))
    samples = (signal[..., None] + rng.normal(0, 6, (n, 1, K))).astype(np.float32)
    observations = (signal + rng.normal(0, 4, (n, 1))).astype(np.float32)
    everything = SpreadEvidence(noise_model, (2.0, 1.0, 0.7, 0.5, 0.25)).add(samples, observations)
    alone = SpreadEvidence(noise_model, (0.25, 0.7, 1.0)).add(samples, observations)

    picked = everything.subset((0.25, 0.7, 1.0))

    assert picked.factors == (0.25, 0.7, 1.0) and picked.pixels == n
    np.testing.assert_allclose(picked.totals, alone.totals, rtol=1e-6)           # float32 evidence per pixel
    np.testing.assert_allclose(picked.moments, alone.moments, rtol=1e-4, atol=1e-6 * np.abs(alone.moments).max())
    np.testing.assert_allclose(evidence_standard_errors(picked), evidence_standard_errors(alone), rtol=1e-4)
    with pytest.raises(ValueError, match=r"factor 0\.3 is not one of this evidence's factors"):
        everything.subset((1.0, 0.3))


def test_shortfalls_are_the_evidence_differences_in_standard_errors():
    per_pixel = np.random.default_rng(12).normal(0, 0.1, (500, 3)) + np.array([0.0, -0.02, 0.03])
    evidence = _evidence_of_pixels(per_pixel, (1.0, 0.5, 0.25))
    sums = per_pixel.sum(axis=0)
    assert np.argmax(sums) == 2
    errors = np.sqrt(500) * (per_pixel - per_pixel[:, 2:]).std(axis=0)

    shortfalls = evidence_shortfalls(evidence)[:, 0]

    np.testing.assert_allclose(shortfalls[:2], (sums[2] - sums[:2]) / errors[:2], rtol=1e-6)
    assert shortfalls[2] == 0 and np.all(shortfalls[:2] > 0)
    constant = _evidence_of_pixels(np.zeros((10, 2)) + np.array([0.0, -1.0]), (1.0, 0.5))
    assert evidence_shortfalls(constant)[:, 0].tolist() == [0.0, np.inf]
    assert best_spread_factors(constant) == pytest.approx([1.0])


def _evidence_of_pixels(per_pixel, factors):
    """A SpreadEvidence's sums of given per-pixel evidence (pixels, factors), one channel."""
    evidence = SpreadEvidence(small_histogram(), factors)
    differences = per_pixel - per_pixel[:, :1]
    evidence.totals, evidence.moments = per_pixel.sum(axis=0)[:, None], (differences.T @ differences)[None]
    evidence.pixels = len(per_pixel)
    return evidence


@pytest.mark.parametrize("offsets, expected", [
    ((0.0, -0.001, -0.05), 0.5),        # 0.5 within a third of a standard error of 1, 0.25 16 errors below
    ((0.0, -0.05, -0.001), 0.25),       # the smallest within one error, past one that is not
    ((-0.05, -0.05, 0.0), 0.25),        # the likeliest is the smallest
])
def test_the_smallest_factor_within_one_standard_error_of_the_likeliest_is_taken(offsets, expected):
    rng = np.random.default_rng(10)
    factors = (1.0, 0.5, 0.25)
    noise = rng.normal(0, 0.1, (2000, 3))
    per_pixel = -3.5 + rng.normal(0, 0.05, (2000, 1)) + noise - noise.mean(axis=0) + np.array(offsets)
    evidence = _evidence_of_pixels(per_pixel, factors)

    sums = per_pixel.sum(axis=0)
    best = int(np.argmax(sums))
    errors = np.sqrt(len(per_pixel)) * (per_pixel - per_pixel[:, best:best + 1]).std(axis=0)
    np.testing.assert_allclose(evidence_standard_errors(evidence)[:, 0], errors, rtol=1e-6)
    within = [f for f, shortfall, error in zip(factors, sums.max() - sums, errors) if shortfall <= error]
    assert min(within) == expected
    assert best_spread_factors(evidence) == pytest.approx([expected])
    assert best_spread_factors(evidence, tolerance=0) == pytest.approx([factors[best]])


def _pixels_whose_samples_see_x(n, lean, spread, step, sigma=8.0, prior_sd=12.0, k=200, seed=6):
    """Signals s ~ N(mu, prior_sd^2), x = s + N(0, sigma^2), and samples ``mu + lean (x - mu) + spread z``
    of x and of x moved by ``step`` times random signs (the same z), as a network that sees x gives them."""
    rng = np.random.default_rng(seed)
    mu = rng.uniform(60, 140, (n, 1))
    signal = mu + rng.normal(0, prior_sd, (n, 1))
    x = signal + rng.normal(0, sigma, (n, 1))
    signs = rng.choice([-1.0, 1.0], (n, 1))
    z = spread * rng.standard_normal((n, 1, k))
    samples, moved = (mu[..., None] + lean * (v[..., None] - mu[..., None]) + z for v in (x, x + step * signs))
    return [a.astype(np.float32) for a in (samples, moved, x, signs, signal)]


def _mmse_error(noise_model, samples, x, signal, factor):
    mean = samples.mean(-1, keepdims=True)
    estimate = mmse(x[..., None], mean + np.float32(factor) * (samples - mean), noise_model).numpy()[..., 0]
    return float(np.mean((estimate - signal) ** 2))


@pytest.mark.parametrize("lean, spread", [(0.0, 30.0), (0.3, 12.0)])
def test_the_risk_is_the_mmse_error_up_to_the_mean_noise_variance(lean, spread):
    noise_model = _gaussian_noise_model(sigma=8.0)
    risk = SpreadRisk(noise_model)
    samples, moved, x, signs, signal = _pixels_whose_samples_see_x(20000, lean, spread, risk.steps[0])

    risk.add(samples, moved, x, signs)

    errors = np.array([_mmse_error(noise_model, samples, x, signal, f) for f in risk.factors])
    estimated = risk.totals[:, 0] / risk.pixels - noise_model.noise_variance([100.0])[0]
    np.testing.assert_allclose(estimated, errors, rtol=0.08)
    best = int(np.argmin(errors))
    assert abs(int(np.argmin(risk.totals[:, 0])) - best) <= 1


def test_each_channel_risk_uses_its_own_noise_model():
    models = ChannelNoiseModels([_gaussian_noise_model(sigma=8.0), _gaussian_noise_model(sigma=3.0, seed=2)])
    risk = SpreadRisk(models, factors=(1.0, 0.5))
    first = _pixels_whose_samples_see_x(CHUNK_PIXELS + 11, 0.2, 20.0, risk.steps[0], seed=7)[:4]
    second = _pixels_whose_samples_see_x(CHUNK_PIXELS + 11, 0.2, 20.0, risk.steps[1], sigma=3.0, seed=8)[:4]

    risk.add(*[np.concatenate(pair, axis=1) for pair in zip(first, second)])

    assert risk.steps == pytest.approx([0.8, 0.3], rel=0.05)
    for channel, (model, pixels) in enumerate(zip(models.models, (first, second))):
        single = SpreadRisk(model, factors=(1.0, 0.5)).add(*pixels)
        np.testing.assert_allclose(risk.totals[:, channel], single.totals[:, 0], rtol=1e-5)
    assert risk.pixels == CHUNK_PIXELS + 11


def test_bad_risk_shapes_raise():
    risk = SpreadRisk(small_histogram())
    with pytest.raises(ValueError, match=r"samples and moved_samples must be \(N, C, K\)"):
        risk.add(np.zeros((4, 1, 8)), np.zeros((4, 1, 7)), np.zeros((4, 1)), np.ones((4, 1)))


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match=r"samples must be \(N, C, K\) and observations \(N, C\)"):
        SpreadEvidence(small_histogram()).add(np.zeros((4, 8), np.float32), np.zeros((4, 1), np.float32))


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
    factors = (0.5, 0.25)

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
    # independent head columns, outputs x30: a prior still too wide after a few steps (a factor below 1)
    return PN2VConfig(X, mode="pn2v", n_samples=K, samples_init_spread=None, samples_output_scale=30.0,
                      **tiny(SMALL_NET, **overrides))


def _train(model, X, X_val):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(X, X_val, epochs=2, steps_per_epoch=3, verbose=0)
    return model


def _uncalibrated(X, X_val):
    keras.utils.set_random_seed(0)
    return _train(PN2V(_config(X, train_calibrate_spread=False), "m", basedir=None, noise_model=small_histogram()),
                  X, X_val)


def _mmse_by_hand(noise_model, x, samples):
    samples = np.clip(samples, *noise_model.signal_range)
    log_p = np.asarray(noise_model.log_likelihood(x[..., None], samples), dtype=np.float64)
    weights = np.exp(log_p - log_p.max(-1, keepdims=True))
    return (weights * samples).sum(-1) / weights.sum(-1)


def _statistics_by_hand(model, X_val):
    """Evidence (under the histogram smoothed by one bin along x - s) and risk per factor by a second path: the
    same patches, pixels and signs, in NumPy."""
    cfg, noise_model = model.config, model.noise_model
    smoothed = noise_model.smoothed(1.0)
    rng, sign_rng = np.random.default_rng(cfg.seed + 2), np.random.default_rng(cfg.seed + 3)
    patches = random_patches(rng, X_val, cfg.n2v_patch_shape, calibration_patches(cfg))
    per_patch = -(-CALIBRATION_PIXELS // len(patches))
    all_signs = sign_rng.choice(np.array([-1.0, 1.0], np.float32), size=patches.shape + (1,))
    signals = np.linspace(*noise_model.signal_range, 64)
    variances = noise_model.noise_variance(signals)
    step = np.float32(0.1 * np.sqrt(variances.mean()))
    centre = (0, slice(4, 12), slice(4, 12))
    samples, moved, observations, signs = [], [], [], []
    for patch, sign in zip(patches, all_signs):
        patch, sign = patch[None, ..., None], sign[None]
        out, out_moved = (np.asarray(model.keras_model(p))[centre].reshape(-1, K) for p in (patch, patch + step * sign))
        keep = rng.permutation(len(out))[:per_patch]
        samples.append(out[keep])
        moved.append(out_moved[keep])
        observations.append(patch[centre].reshape(-1)[keep])
        signs.append(sign[centre].reshape(-1)[keep])
    samples, moved, x, signs = (np.concatenate(a) for a in (samples, moved, observations, signs))
    variance = np.interp(samples.mean(-1), signals, variances)
    evidence, risk = [], []
    for f in SPREAD_FACTORS:
        shrunk, shrunk_moved = (s.mean(-1, keepdims=True) + np.float32(f) * (s - s.mean(-1, keepdims=True))
                                for s in (samples, moved))
        evidence.append(_log_evidence_by_hand(smoothed, shrunk[:, None], x[:, None], 1.0)[0])
        u, u_moved = _mmse_by_hand(noise_model, x, shrunk), _mmse_by_hand(noise_model, x + step * signs, shrunk_moved)
        risk.append(np.sum((u - x) ** 2 + 2 * variance * signs * (u_moved - u) / step))
    return np.array(evidence), np.array(risk)


def _factor_by_hand(model, X_val):
    """The likeliest factor by the second path."""
    return SPREAD_FACTORS[int(np.argmax(_statistics_by_hand(model, X_val)[0]))]


@pytest.mark.filterwarnings("ignore:.*exceed the noise model's range:UserWarning")
def test_calibrate_spread_applies_the_likeliest_factor_and_keeps_the_samples_mean(images):
    X, X_val = images
    model = _uncalibrated(X, X_val)
    expected = _factor_by_hand(model, X_val)
    image = X_val[0][None, ..., None]
    before = keras.ops.convert_to_numpy(model.keras_model(image))

    factors = model.calibrate_spread(X_val)

    assert factors == pytest.approx([expected]) and factors[0] < 1
    after = keras.ops.convert_to_numpy(model.keras_model(image))
    mean = before.mean(-1, keepdims=True)
    np.testing.assert_allclose(after, mean + factors[0] * (before - mean), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(after.mean(-1), before.mean(-1), rtol=1e-5)     # the samples' mean stays
    assert model.calibrate_spread(X_val) == pytest.approx([1.0])               # already the likeliest


@pytest.mark.filterwarnings("ignore:.*exceed the noise model's range:UserWarning")
def test_training_calibrates_by_default_and_a_reload_reads_the_calibrated_weights(tmp_path, images):
    X, X_val = images
    keras.utils.set_random_seed(0)
    plain = _train(PN2V(_config(X, train_calibrate_spread=False), "plain", basedir=str(tmp_path),
                        noise_model=small_histogram()), X, X_val)
    keras.utils.set_random_seed(0)
    model = _train(PN2V(_config(X), "m", basedir=str(tmp_path), noise_model=small_histogram()), X, X_val)
    reloaded = PN2V(None, "m", basedir=str(tmp_path))
    expected = _factor_by_hand(plain, X_val)
    image = X_val[0][None, ..., None]
    trained = keras.ops.convert_to_numpy(plain.keras_model(image))
    mean = trained.mean(-1, keepdims=True)

    assert model.config.train_calibrate_spread and expected < 1
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model.keras_model(image)),
                               mean + np.float32(expected) * (trained - mean), rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(reloaded.predict(X_val[0]), model.predict(X_val[0]))
    assert not np.allclose(model.predict(X_val[0]), plain.predict(X_val[0]), rtol=1e-4)


@pytest.mark.parametrize("method", ["calibrate_spread", "spread_evidence", "spread_risk"])
def test_calibration_needs_mode_pn2v(images, method):
    X, X_val = images
    model = PN2V(PN2VConfig(X, mode="n2v", **tiny(SMALL_NET)), "n", basedir=None)
    with pytest.raises(ValueError, match=f"{method} needs a model of mode 'pn2v', this one has mode 'n2v'"):
        getattr(model, method)(X_val)


@pytest.mark.filterwarnings("ignore:.*exceed the noise model's range:UserWarning")
def test_the_calibration_reads_more_patches_than_validation_until_it_has_enough_pixels():
    X = np.zeros((2, 64, 64), np.float32)
    central = 32 * 32                                    # the central half of a 64 x 64 patch per axis

    assert calibration_patches(PN2VConfig(X, n2v_patch_shape=(64, 64), train_n_val_patches=64)) == \
        CALIBRATION_PIXELS // central
    assert calibration_patches(PN2VConfig(X, n2v_patch_shape=(64, 64), train_n_val_patches=200)) == 200
    assert calibration_patches(PN2VConfig(X, n2v_patch_shape=(64, 64), train_n_val_patches=8)) == 32   # 4x at most
    volumes = np.zeros((2, 16, 64, 64), np.float32)
    assert calibration_patches(PN2VConfig(volumes, axes="ZYX", n2v_patch_shape=(16, 64, 64),
                                          train_n_val_patches=4)) == CALIBRATION_PIXELS // (8 * central)


def test_spread_evidence_reads_the_pixels_of_the_calibration_and_changes_nothing(images):
    X, X_val = images
    model = _uncalibrated(X, X_val)
    before = model.predict(X_val[0])

    evidence = model.spread_evidence(X_val, factors=(2.0, 1.0, 0.5))

    np.testing.assert_array_equal(model.predict(X_val[0]), before)
    assert evidence.factors == (2.0, 1.0, 0.5) and evidence.totals.shape == (3, 1)
    assert SPREAD_FACTORS[int(np.argmax(model.spread_evidence(X_val).totals[:, 0]))] == model.calibrate_spread(X_val)[0]


def test_the_evidence_reads_histograms_smoothed_by_one_bin_and_other_kinds_as_they_are():
    histogram = small_histogram()
    gmm = GMMNoiseModel(n_gaussians=2, value_range=histogram.value_range)
    per_channel = evidence_noise_model(ChannelNoiseModels([histogram, gmm]))

    np.testing.assert_allclose(evidence_noise_model(histogram).histogram.numpy(),
                               histogram.smoothed(1.0).histogram.numpy())
    assert not np.allclose(evidence_noise_model(histogram).histogram.numpy(), histogram.histogram.numpy(), atol=1e-4)
    assert evidence_noise_model(histogram, smoothing_bins=0) is histogram
    assert evidence_noise_model(gmm) is gmm
    np.testing.assert_allclose(per_channel.models[0].histogram.numpy(),
                               evidence_noise_model(histogram).histogram.numpy())
    assert per_channel.models[1] is gmm


@pytest.mark.filterwarnings("ignore:.*exceed the noise model's range:UserWarning")
def test_spread_evidence_without_smoothing_is_the_evidence_under_the_noise_model_itself(images):
    X, X_val = images
    model = _uncalibrated(X, X_val)

    smoothed, raw = (model.spread_evidence(X_val, smoothing_bins=bins).totals[:, 0] for bins in (1.0, 0))

    np.testing.assert_allclose(smoothed, _statistics_by_hand(model, X_val)[0], rtol=2e-4)
    kept = model.noise_model
    model.noise_model = kept.smoothed(1.0)
    np.testing.assert_allclose(model.spread_evidence(X_val, smoothing_bins=0).totals[:, 0], smoothed, rtol=1e-6)
    model.noise_model = kept
    assert not np.allclose(raw, smoothed, rtol=1e-4)


@pytest.mark.filterwarnings("ignore:.*exceed the noise model's range:UserWarning")
def test_spread_risk_of_a_model_equals_the_risk_by_hand_and_changes_nothing(images):
    X, X_val = images
    model = _uncalibrated(X, X_val)
    before = model.predict(X_val[0])

    risk = model.spread_risk(X_val)

    np.testing.assert_array_equal(model.predict(X_val[0]), before)
    assert risk.pixels == min(CALIBRATION_PIXELS, calibration_patches(model.config) * 64)
    np.testing.assert_allclose(risk.totals[:, 0], _statistics_by_hand(model, X_val)[1], rtol=2e-4)
