"""Tests of pn2v_tf.inference (MMSE, prior mean, posterior samples, tiling) and of the network
facts it relies on (receptive radius, FLOP count) from pn2v_tf.nets."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from pn2v_tf import PN2VConfig
from pn2v_tf.engine import PredictionEngine
from pn2v_tf.inference import (DEFAULT_MAX_TILE_ELEMENTS, auto_n_tiles, count_tiles, mmse, posterior_samples,
                               predict_tiled, prior_mean)
from pn2v_tf.nets import block_size, build_networks, count_forward_flops_per_pixel, receptive_radius
from pn2v_tf.noise_models import HistogramNoiseModel, NoiseModel

# Conjugate Gaussian example: prior N(MU0, TAU^2), noise N(0, SIGMA^2).
MU0, TAU, SIGMA = 10.0, 2.0, 1.5
POSTERIOR_VAR = TAU ** 2 * SIGMA ** 2 / (TAU ** 2 + SIGMA ** 2)   # 1.44
# Observations within 1.5 marginal standard deviations sqrt(TAU^2 + SIGMA^2) = 2.5 of MU0, where
# the posterior mean differs clearly (>= 0.5) from both x and MU0.
OBSERVATIONS = np.array([6.5, 8.0, 11.5, 13.5])
N_PRIOR = 20_000


def _posterior_mean(x):
    return (TAU ** 2 * x + SIGMA ** 2 * MU0) / (TAU ** 2 + SIGMA ** 2)


class GaussianNoiseModel(NoiseModel):
    """Analytic p(x|s) = N(x; s, sigma^2), written with keras.ops like the package's models."""

    def __init__(self, sigma, **kwargs):
        super().__init__(**kwargs)
        self.sigma = float(sigma)

    @property
    def value_range(self):
        return (-1e6, 1e6)

    def _log_likelihood(self, observation, signal):
        observation = ops.cast(observation, "float32")
        signal = ops.cast(signal, "float32")
        norm = np.float32(np.log(self.sigma * np.sqrt(2 * np.pi)))
        return -0.5 * ops.square((observation - signal) / self.sigma) - norm


@pytest.fixture(scope="module")
def prior_samples():
    """(P, K) prior samples, independent per observation, fixed seed."""
    rng = np.random.default_rng(0)
    return rng.normal(MU0, TAU, (OBSERVATIONS.size, N_PRIOR)).astype(np.float32)


def _randomize_weights(model, rng):
    """Random normal kernels (scaled by fan-in) and positive-leaning biases: a non-trivial network."""
    weights = []
    for w in model.get_weights():
        if w.ndim > 1:
            weights.append(rng.normal(0, 1 / np.sqrt(np.prod(w.shape[:-1])), w.shape))
        else:
            weights.append(rng.normal(0.1, 0.1, w.shape))
    model.set_weights([w.astype(np.float32) for w in weights])


def _tiny_network(n_depth=2, n_first=4, kern_size=3, n_samples=8, mode="pn2v", seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(100, 10, (2, 16, 16)).astype(np.float32)
    config = PN2VConfig(X, mode=mode, n_samples=n_samples, unet_n_depth=n_depth, unet_n_first=n_first,
                        unet_kern_size=kern_size)
    prediction, _ = build_networks(config)
    _randomize_weights(prediction, rng)
    return prediction


@pytest.fixture(scope="module")
def network():
    return _tiny_network()


@pytest.fixture(scope="module")
def camera_noise_model():
    """Histogram of Gaussian noise (sigma 10) over (0, 200): covers the tiny network's outputs."""
    rng = np.random.default_rng(7)
    signal = rng.uniform(0, 200, 400_000)
    observation = signal + rng.normal(0, 10, signal.size)
    return HistogramNoiseModel.from_pairs(signal, observation, bins=50, value_range=(0, 200))


@pytest.fixture(scope="module")
def image():
    """70 x 93: not a multiple of the block size 2 along X."""
    return np.random.default_rng(1).normal(100, 10, (70, 93)).astype(np.float32)


# -- estimators in closed form -------------------------------------------------------------------

def test_mmse_equals_analytic_posterior_mean(prior_samples):
    """Self-normalised importance sampling with K = 20,000 prior samples: for these x the effective
    sample size is >= ~4,000, so the Monte Carlo standard deviation is <= sqrt(1.44 / 4000) = 0.019.
    The tolerance 0.08 (~4 sd) is far below the >= 0.5 by which x or MU0 would miss."""
    x = OBSERVATIONS[:, np.newaxis].astype(np.float32)

    actual = np.asarray(mmse(x, prior_samples, GaussianNoiseModel(SIGMA)))

    assert actual.shape == (OBSERVATIONS.size, 1)
    np.testing.assert_allclose(actual[:, 0], _posterior_mean(OBSERVATIONS), atol=0.08)


def test_mmse_equals_weighted_mean_of_samples_with_tensors(prior_samples):
    """Tensors in: the result equals sum_k p_k s_k / sum_k p_k computed in float64 NumPy."""
    x = OBSERVATIONS[:, np.newaxis].astype(np.float32)
    samples = prior_samples[:, :50]
    log_p = -0.5 * ((x.astype(np.float64) - samples) / SIGMA) ** 2
    p = np.exp(log_p - log_p.max(axis=-1, keepdims=True))
    expected = (p * samples).sum(-1) / p.sum(-1)

    actual = mmse(tf.constant(x), tf.constant(samples), GaussianNoiseModel(SIGMA)).numpy()

    np.testing.assert_allclose(actual[:, 0], expected, rtol=1e-5)


def test_mmse_with_histogram_of_gaussian_noise_equals_analytic_posterior_mean(prior_samples):
    """Histogram of Gaussian noise, bin width 0.25 = sigma / 6, x at bin centres (so the x lookup
    adds no first-order shift). Binning smooths the noise variance by w^2 / 6 ~ 0.01 (shift of the
    posterior mean < 0.01); sampling error of the histogram (~1,500 counts per cell near the peak)
    and of the prior samples (as above, <= 0.02 sd) stay well inside 0.1."""
    rng = np.random.default_rng(2)
    signal = rng.uniform(0, 20, 2_000_000)
    noise_model = HistogramNoiseModel.from_pairs(
        signal, signal + rng.normal(0, SIGMA, signal.size), bins=120, value_range=(-5, 25))
    x = (np.floor((OBSERVATIONS + 5) / 0.25) + 0.5) * 0.25 - 5

    actual = np.asarray(mmse(x[:, np.newaxis].astype(np.float32), prior_samples, noise_model))

    np.testing.assert_allclose(actual[:, 0], _posterior_mean(x), atol=0.1)


def test_mmse_and_prior_mean_weight_samples_as_the_histogram_sees_them():
    """Samples beyond the histogram's signal range count as its edge value (as in the loss), also
    with empty cells (floored probabilities) and XLA."""
    rng = np.random.default_rng(5)
    counts = rng.poisson(3.0, (32, 32)).astype(float) * (rng.uniform(size=(32, 32)) < 0.7)
    counts[:2] = 0  # the calibrated signal range starts at row 2
    noise_model = HistogramNoiseModel.from_counts(counts, (0.0, 64.0))
    x = tf.constant(rng.uniform(0, 64, (50, 1)), tf.float32)
    samples = tf.constant(rng.uniform(-40, 100, (50, 300)), tf.float32)
    clipped = np.clip(samples.numpy(), *noise_model.signal_range)
    assert np.any(clipped != samples.numpy())
    weights = tf.nn.softmax(noise_model.log_likelihood(x, tf.constant(clipped)), axis=-1).numpy()
    expected = np.sum(weights * clipped, axis=-1, keepdims=True)
    np.testing.assert_allclose(mmse(x, samples, noise_model).numpy(), expected, rtol=1e-5)
    compiled = tf.function(lambda a, b: mmse(a, b, noise_model), jit_compile=True)
    np.testing.assert_allclose(compiled(x, samples).numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(prior_mean(samples, noise_model).numpy(), clipped.mean(-1, keepdims=True), rtol=1e-5)
    np.testing.assert_allclose(prior_mean(samples).numpy(), samples.numpy().mean(-1, keepdims=True), rtol=1e-5)


def test_mmse_does_not_underflow_far_from_every_sample():
    """x = 1000 sigma away from all samples: every p(x|s_k) underflows float32, but the weights are
    taken relative to the largest (a softmax), so the MMSE is finite and equals the float64 value,
    within 0.001 of the nearest sample (weights fall by about exp(-1) per sample spacing)."""
    samples = np.linspace(0.0, 1.0, 1001)[np.newaxis]
    x = np.array([[1000.0]])
    log_p = -0.5 * (x - samples) ** 2
    assert np.all(np.exp(log_p.astype(np.float32)) == 0.0)
    weights = np.exp(log_p - log_p.max())
    expected = (weights * samples).sum() / weights.sum()

    actual = mmse(tf.constant(x, tf.float32), tf.constant(samples, tf.float32), GaussianNoiseModel(1.0)).numpy()

    assert expected == pytest.approx(1.0, abs=1e-3)
    np.testing.assert_allclose(actual, [[expected]], rtol=1e-5)


def test_prior_mean_is_the_sample_mean(prior_samples):
    actual = prior_mean(tf.constant(prior_samples)).numpy()

    assert actual.shape == (OBSERVATIONS.size, 1)
    np.testing.assert_allclose(actual[:, 0], prior_samples.astype(np.float64).mean(-1), rtol=1e-5)
    # and estimates MU0: standard error TAU / sqrt(K) = 0.014
    np.testing.assert_allclose(actual[:, 0], MU0, atol=0.06)


def test_posterior_samples_match_analytic_posterior_mean_and_variance(prior_samples):
    """20,000 draws per pixel: the mean's error adds resampling noise sqrt(1.44 / 20000) = 0.008 to
    the importance-sampling error above (<= 0.02 sd), tolerance 0.08; the sample variance of the
    draws has a relative error of a few percent for ESS >= 4,000, tolerance 15 %."""
    x = OBSERVATIONS[:, np.newaxis].astype(np.float32)

    draws = posterior_samples(x, prior_samples, GaussianNoiseModel(SIGMA), n=20_000, seed=(3, 4)).numpy()

    assert draws.shape == (OBSERVATIONS.size, 20_000)
    np.testing.assert_allclose(draws.mean(-1), _posterior_mean(OBSERVATIONS), atol=0.08)
    np.testing.assert_allclose(draws.var(-1), POSTERIOR_VAR, rtol=0.15)


def test_posterior_samples_are_drawn_from_the_given_prior_samples(prior_samples):
    x = OBSERVATIONS[:, np.newaxis].astype(np.float32)
    samples = prior_samples[:, :30]

    draws = posterior_samples(x, samples, GaussianNoiseModel(SIGMA), n=200, seed=(0, 1)).numpy()

    for pixel in range(OBSERVATIONS.size):
        assert np.isin(draws[pixel], samples[pixel]).all()


def test_posterior_samples_keep_leading_shape():
    samples = np.random.default_rng(5).normal(MU0, TAU, (2, 3, 4, 16)).astype(np.float32)
    x = np.full((2, 3, 4, 1), MU0, dtype=np.float32)

    draws = posterior_samples(x, samples, GaussianNoiseModel(SIGMA), n=5, seed=(0, 0)).numpy()

    assert draws.shape == (2, 3, 4, 5)
    assert np.all(np.isin(draws[1, 2, 3], samples[1, 2, 3]))


def test_posterior_samples_are_reproducible_for_a_fixed_seed(prior_samples):
    x = OBSERVATIONS[:, np.newaxis].astype(np.float32)
    noise_model = GaussianNoiseModel(SIGMA)

    first = posterior_samples(x, prior_samples, noise_model, n=100, seed=(7, 8)).numpy()
    second = posterior_samples(x, prior_samples, noise_model, n=100, seed=(7, 8)).numpy()
    other = posterior_samples(x, prior_samples, noise_model, n=100, seed=(7, 9)).numpy()

    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other)


# -- the engine on one tile ----------------------------------------------------------------------

def TilePredictor(network, noise_model, estimator, n_posterior=1, seed=0, jit_compile=True):
    """``(tile, tile_index, crop) -> estimate`` of a :class:`PredictionEngine`, as ``predict`` calls it."""
    engine = PredictionEngine(network, noise_model, jit_compile=jit_compile)
    engine.check_estimator(estimator)

    def predict_tile(tile, tile_index=0, crop=None):
        return engine(tile, crop, estimator, n_posterior, seed=(seed, tile_index))

    return predict_tile


def _reference_estimate(network, image, noise_model, estimator):
    """Network on the whole image, then the estimator in float64 NumPy."""
    samples = keras.ops.convert_to_numpy(network(image[np.newaxis, ..., np.newaxis]))[0].astype(np.float64)
    if estimator == "prior_mean":
        return samples.mean(-1, keepdims=True)
    log_p = noise_model.log_likelihood(image[..., np.newaxis], samples).astype(np.float64)
    p = np.exp(log_p - log_p.max(-1, keepdims=True))
    return (p * samples).sum(-1, keepdims=True) / p.sum(-1, keepdims=True)


@pytest.mark.filterwarnings("ignore:.*exceed the noise model's range:UserWarning")
@pytest.mark.parametrize("estimator", ["mmse", "prior_mean"])
def test_tile_predictor_applies_estimator_to_network_output(network, camera_noise_model, estimator):
    tile = np.random.default_rng(3).normal(100, 10, (24, 32)).astype(np.float32)
    expected = _reference_estimate(network, tile, camera_noise_model, estimator)

    actual = TilePredictor(network, camera_noise_model, estimator)(tile)

    assert actual.shape == (24, 32, 1)
    np.testing.assert_allclose(actual, expected, rtol=1e-4)


@pytest.mark.filterwarnings("ignore:.*exceed the noise model's range:UserWarning")
@pytest.mark.parametrize("estimator", ["mmse", "prior_mean"])
@pytest.mark.parametrize("crop", [(slice(4, 20), slice(0, 28)), (slice(0, 24), slice(8, 32)),
                                  (slice(3, -5), slice(None))])
def test_tile_predictor_estimates_only_the_cropped_part(network, camera_noise_model, estimator, crop):
    """The network sees the whole tile (the context), the estimate covers the crop and equals the
    crop of the whole tile's estimate."""
    tile = np.random.default_rng(3).normal(100, 10, (24, 32)).astype(np.float32)
    predictor = TilePredictor(network, camera_noise_model, estimator)

    actual = predictor(tile, crop=crop)

    np.testing.assert_allclose(actual, predictor(tile)[crop], rtol=1e-5)
    assert actual.shape == tile[crop].shape + (1,)


def test_tile_predictor_accepts_batches(network, camera_noise_model):
    tiles = np.random.default_rng(4).normal(100, 10, (2, 8, 12, 1)).astype(np.float32)
    predictor = TilePredictor(network, camera_noise_model, "mmse", jit_compile=False)

    batched = predictor(tiles)

    assert batched.shape == (2, 8, 12, 1)
    np.testing.assert_allclose(batched[1], predictor(tiles[1, ..., 0]), rtol=1e-5)


def test_tile_predictor_posterior_draws_come_from_the_pixel_samples(network, camera_noise_model):
    tile = np.random.default_rng(5).normal(100, 10, (8, 8)).astype(np.float32)
    samples = keras.ops.convert_to_numpy(network(tile[np.newaxis, ..., np.newaxis]))[0]
    predictor = TilePredictor(network, camera_noise_model, "posterior", n_posterior=3, seed=11, jit_compile=False)

    draws = predictor(tile, tile_index=2)

    assert draws.shape == (8, 8, 3)
    for y, x in [(0, 0), (3, 5), (7, 7)]:
        distance = np.abs(draws[y, x][:, None] - samples[y, x][None, :]).min(axis=1)
        assert np.all(distance <= 1e-5 * np.abs(samples[y, x]).max())   # each draw is one of the samples
    np.testing.assert_array_equal(draws, predictor(tile, tile_index=2))   # reproducible
    assert not np.array_equal(draws, predictor(tile, tile_index=3))      # tiles draw independently


def test_tile_predictor_with_single_output_network_returns_that_output():
    network = _tiny_network(mode="n2v")
    tile = np.random.default_rng(6).normal(100, 10, (8, 12)).astype(np.float32)
    expected = keras.ops.convert_to_numpy(network(tile[np.newaxis, ..., np.newaxis]))[0]

    actual = TilePredictor(network, None, "mmse", jit_compile=False)(tile)

    np.testing.assert_allclose(actual, expected, rtol=1e-5)


def test_tile_predictor_rejects_unknown_estimator_and_missing_noise_model(network):
    with pytest.raises(ValueError, match="estimator"):
        TilePredictor(network, None, "median")
    with pytest.raises(ValueError, match="noise model"):
        TilePredictor(network, None, "mmse")
    TilePredictor(network, None, "prior_mean")   # needs no noise model


# -- predict_tiled -------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:.*exceed the noise model's range:UserWarning")
def test_predict_tiled_without_tiling_equals_network_on_padded_image(network, camera_noise_model, image):
    """One tile: the image is reflect-padded to a multiple of the block size and cropped back."""
    padded = np.pad(image, ((0, 0), (0, 1)), mode="reflect")   # 93 -> 94
    expected = _reference_estimate(network, padded, camera_noise_model, "mmse")[:, :93]
    predictor = TilePredictor(network, camera_noise_model, "mmse", jit_compile=False)

    actual = predict_tiled(predictor, image, (1, 1), block=block_size(2), overlap=receptive_radius(2, 3))

    assert actual.shape == (70, 93, 1)
    np.testing.assert_allclose(actual, expected, rtol=1e-4)


@pytest.mark.parametrize("estimator, jit_compile", [("mmse", True), ("prior_mean", False)])
@pytest.mark.parametrize("n_tiles", [(2, 2), (3, 2), (4, 5)])
def test_predict_tiled_equals_untiled(network, camera_noise_model, image, n_tiles, estimator, jit_compile):
    predictor = TilePredictor(network, camera_noise_model, estimator, jit_compile=jit_compile)
    kwargs = dict(block=block_size(2), overlap=receptive_radius(2, 3))
    whole = predict_tiled(predictor, image, (1, 1), **kwargs)

    tiled = predict_tiled(predictor, image, n_tiles, **kwargs)

    assert tiled.shape == whole.shape == (70, 93, 1)
    np.testing.assert_allclose(tiled, whole, rtol=1e-5, atol=1e-4)


def test_predict_tiled_with_too_little_overlap_differs(network, image):
    """Control for the test above: without enough context, tile borders show."""
    predictor = TilePredictor(network, None, "prior_mean", jit_compile=False)
    whole = predict_tiled(predictor, image, (1, 1), block=2, overlap=0)

    tiled = predict_tiled(predictor, image, (2, 2), block=2, overlap=2)

    assert np.abs(tiled - whole).max() > 1e-2


def test_predict_tiled_stitches_an_identity_exactly():
    """A pixel-wise predictor: every tile contributes exactly its own kept region."""
    image = np.arange(37 * 50, dtype=np.float32).reshape(37, 50)

    def predict_tile(tile, tile_index, crop):
        return np.stack([tile, 2 * tile], axis=-1)[crop]

    result = predict_tiled(predict_tile, image, (3, 4), block=4, overlap=5, n_channels_out=2)

    np.testing.assert_array_equal(result, np.stack([image, 2 * image], axis=-1))


@pytest.mark.parametrize("shape, n_tiles", [((40, 16), (3, 1)), ((37, 50), (3, 4)), ((70, 93), (1, 1)),
                                             ((12, 40, 36), (1, 2, 3))])
def test_count_tiles_is_the_number_of_tiles_predict_tiled_cuts(shape, n_tiles):
    """The total of predict's progress bar; 40 x 16 in 3 x 1 tiles with 28 pixels of context is one tile."""
    indices = []

    def predict_tile(tile, tile_index, crop):
        indices.append(tile_index)
        return tile[crop][..., np.newaxis]

    predict_tiled(predict_tile, np.zeros(shape, np.float32), n_tiles, block=4, overlap=28)

    assert count_tiles(shape, n_tiles, block=4, overlap=28) == len(indices)
    assert count_tiles((40, 16), (3, 1), block=4, overlap=28) == 1


# -- receptive field -----------------------------------------------------------------------------

@pytest.mark.parametrize("n_depth, kern_size", [(1, 3), (2, 3), (3, 3), (2, 5)])
def test_receptive_radius_bounds_the_measured_receptive_field(n_depth, kern_size):
    """Add a large impulse to a random image (at positions of both parities w.r.t. pooling) and
    find how far from it the output changes."""
    network = _tiny_network(n_depth=n_depth, n_first=2, kern_size=kern_size, n_samples=2, seed=n_depth)
    size = 96
    base = np.random.default_rng(8).normal(100, 10, (1, size, size, 1)).astype(np.float32)
    reference = keras.ops.convert_to_numpy(network(base))
    measured = 0
    for cy, cx in [(48, 48), (47, 49), (49, 47), (47, 47)]:
        impulse = base.copy()
        impulse[0, cy, cx, 0] += 500.0
        change = np.abs(keras.ops.convert_to_numpy(network(impulse)) - reference).max(-1)[0]
        ys, xs = np.nonzero(change > 1e-4 * change.max())
        measured = max(measured, int(np.max(np.maximum(np.abs(ys - cy), np.abs(xs - cx)))))

    assert measured >= kern_size // 2          # the impulse is seen at all
    assert receptive_radius(n_depth, kern_size) >= measured


@pytest.mark.parametrize("n_depth, kern_size, expected", [(1, 3, 2), (2, 3, 10), (3, 3, 26), (2, 5, 18)])
def test_receptive_radius_by_hand(n_depth, kern_size, expected):
    """E.g. depth 2, kernel 3: two convs (2) + pool (1) + two convs at scale 2 (4) + up path
    mirrors the down path (3) -> 2 * 3 + 4 = 10."""
    assert receptive_radius(n_depth, kern_size) == expected


# -- auto_n_tiles --------------------------------------------------------------------------------

def test_auto_n_tiles_is_one_tile_when_it_fits():
    assert auto_n_tiles((512, 512), 800, max_elements=512 * 512 * 800) == (1, 1)
    assert auto_n_tiles((64, 64), 800) == (1, 1)


@pytest.mark.parametrize("shape, n_outputs, max_elements", [
    ((1000, 600), 800, DEFAULT_MAX_TILE_ELEMENTS),
    ((2048, 2048), 800, DEFAULT_MAX_TILE_ELEMENTS),
    ((300, 5000), 100, 1_000_000),
    ((512, 512), 800, 512 * 512 * 800 - 1),
])
def test_auto_n_tiles_keeps_tile_elements_below_bound_with_fewest_tiles(shape, n_outputs, max_elements):
    n_tiles = auto_n_tiles(shape, n_outputs, max_elements)

    n = int(np.prod(n_tiles))
    assert np.prod(shape) / n * n_outputs <= max_elements
    # Tile counts are powers of two; half as many tiles would not fit.
    assert n > 1 and (n & (n - 1)) == 0
    assert np.prod(shape) / (n // 2) * n_outputs > max_elements


def test_auto_n_tiles_splits_the_longer_side():
    assert auto_n_tiles((4000, 250), 1, max_elements=250_000) == (4, 1)
    assert auto_n_tiles((250, 4000), 1, max_elements=250_000) == (1, 4)


# -- FLOP count ----------------------------------------------------------------------------------

def test_flops_of_paper_configuration():
    """Depth 3, 64 features, K 800, kernel 3: about 0.73 MFLOP per pixel, ~14 % in the head."""
    config = PN2VConfig(np.zeros((1, 8, 8)), n_samples=800, unet_n_depth=3, unet_n_first=64, unet_kern_size=3)

    flops = count_forward_flops_per_pixel(config)

    assert flops == pytest.approx(0.73e6, rel=0.01)
    assert 2 * 64 * 800 / flops == pytest.approx(0.14, abs=0.005)


def test_flops_of_tiny_configuration_by_hand():
    """Depth 2, 4 features, K 8, kernel 3, multiply-adds per input pixel:
    down0 9*(1*4 + 4*4) = 180; bottom 9*(4*8 + 8*8) / 4 = 216; up0 transpose 8*4 = 32 and
    convs 9*(4*4 + 4*4) = 288; head 4*8 = 32. Total 748, i.e. 1496 FLOPs."""
    config = PN2VConfig(np.zeros((1, 8, 8)), n_samples=8, unet_n_depth=2, unet_n_first=4, unet_kern_size=3)

    assert count_forward_flops_per_pixel(config) == 1496.0


@pytest.mark.parametrize("n_depth, n_first, kern_size, n_samples", [(1, 4, 3, 8), (2, 4, 3, 8), (3, 2, 5, 3)])
def test_flops_match_the_built_network(n_depth, n_first, kern_size, n_samples):
    """Count multiply-adds from the kernels of the Keras network: a layer at level l runs on
    1 / 4**l of the pixels; a 2x2 stride-2 transposed convolution uses one tap per output pixel."""
    config = PN2VConfig(np.zeros((1, 8, 8)), n_samples=n_samples, unet_n_depth=n_depth,
                        unet_n_first=n_first, unet_kern_size=kern_size)
    prediction, _ = build_networks(config)
    macs, n_counted = 0.0, 0
    for layer in prediction.layers:
        if getattr(layer, "kernel", None) is None:
            continue
        n_counted += 1
        kernel_size = int(np.prod(layer.kernel.shape))
        if layer.name == "head":
            macs += kernel_size
            continue
        level = int(layer.name[len("up") if layer.name.startswith("up") else len("down"):].split("_")[0])
        if isinstance(layer, keras.layers.Conv2DTranspose):
            kernel_size //= 4
        macs += kernel_size / 4 ** level

    assert n_counted == 2 * n_depth + 3 * (n_depth - 1) + 1   # convs, up path, head
    assert count_forward_flops_per_pixel(config) == pytest.approx(2 * macs)
