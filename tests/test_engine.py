"""Tests of pn2v_tf.engine: the U-Net body per tile, the head and the estimator per chunk of pixels."""

import logging

import keras
import numpy as np
import pytest
import tensorflow as tf

from pn2v_tf import PN2V, PN2VConfig
from pn2v_tf.engine import PredictionEngine
from pn2v_tf.nets import build_networks
from pn2v_tf.noise_models import GMMNoiseModel, HistogramNoiseModel

K = 8


def _network(axes="YX", mode="pn2v", seed=0, **kwargs):
    """A tiny prediction network with random weights whose samples spread over 60..140."""
    rng = np.random.default_rng(seed)
    shape = (2, 8, 16, 16) if axes == "ZYX" else (2, 16, 16)
    config = PN2VConfig(rng.normal(100, 10, shape).astype(np.float32), axes=axes, mode=mode, n_samples=K,
                        unet_n_depth=2, unet_n_first=4, **kwargs)
    prediction, _ = build_networks(config)
    prediction.set_weights([rng.normal(0, 0.5 / np.sqrt(np.prod(w.shape[:-1])), w.shape).astype(np.float32)
                            if w.ndim > 1 else rng.normal(0, 0.3, w.shape).astype(np.float32)
                            for w in prediction.get_weights()])
    return prediction


@pytest.fixture(scope="module")
def network():
    return _network()


@pytest.fixture(scope="module")
def noise_model():
    rng = np.random.default_rng(7)
    signal = rng.uniform(0, 200, 400_000)
    return HistogramNoiseModel.from_pairs(signal, signal + rng.normal(0, 10, signal.size), bins=50,
                                          value_range=(0, 200))


def _reference(network, tile, noise_model, estimator):
    """The whole network on the tile, then the estimator in float64 NumPy from the log-likelihood."""
    samples = keras.ops.convert_to_numpy(network(tile[np.newaxis, ..., np.newaxis]))[0].astype(np.float64)
    samples = np.clip(samples, *noise_model.signal_range)
    if estimator == "prior_mean":
        return samples.mean(-1, keepdims=True)
    log_p = noise_model.log_likelihood(tile[..., np.newaxis], samples.astype(np.float32)).astype(np.float64)
    p = np.exp(log_p - log_p.max(-1, keepdims=True))
    return (p * samples).sum(-1, keepdims=True) / p.sum(-1, keepdims=True)


def _tile(shape, seed=3):
    return np.random.default_rng(seed).normal(100, 12, shape).astype(np.float32)


# -- likelihood weights ----------------------------------------------------------------------------

def _normalised(weights):
    weights = np.asarray(weights, dtype=np.float64)
    return weights / weights.sum(-1, keepdims=True)


def test_histogram_weights_have_the_ratios_of_the_likelihoods(noise_model):
    observation = np.array([[3.0], [50.0], [120.5], [199.0]], dtype=np.float32)
    signal = np.random.default_rng(1).uniform(-20, 220, (4, 30)).astype(np.float32)   # also beyond the range
    expected = _normalised(np.exp(noise_model.log_likelihood(observation, signal)))

    weights = noise_model.likelihood_weights(tf.constant(observation), tf.constant(signal)).numpy()

    assert np.all(weights > 0)
    np.testing.assert_allclose(_normalised(weights), expected, rtol=1e-5)


@pytest.mark.parametrize("packed", [False, True])
def test_histogram_weights_read_the_tables_they_are_given(noise_model, packed):
    rng = np.random.default_rng(4)
    other = HistogramNoiseModel.from_counts(rng.random((noise_model.bins,) * 2) + 0.01, noise_model.value_range)
    observation = tf.constant(rng.uniform(0, 200, (5, 1)).astype(np.float32))
    signal = tf.constant(rng.uniform(0, 200, (5, 30)).astype(np.float32))

    own = noise_model.likelihood_weights(observation, signal, noise_model.weight_tables(packed)).numpy()
    borrowed = noise_model.likelihood_weights(observation, signal, other.weight_tables(packed)).numpy()

    np.testing.assert_array_equal(own, noise_model.likelihood_weights(observation, signal).numpy())
    assert np.abs(borrowed - own).max() > 1e-3       # the tables, not the layer's own histogram, were read
    expected = _normalised(np.exp(other.log_likelihood(observation.numpy(), signal.numpy())))
    np.testing.assert_allclose(_normalised(borrowed), expected, rtol=1e-5)


def test_default_weights_have_the_ratios_of_the_likelihoods():
    rng = np.random.default_rng(2)
    signal = rng.uniform(10, 100, 20_000)
    gmm = GMMNoiseModel.fit(signal, signal + rng.normal(0, 3, signal.size), steps=50, verbose=False, seed=0)
    observation = np.array([[20.0], [80.0]], dtype=np.float32)
    samples = rng.uniform(10, 100, (2, 40)).astype(np.float32)
    expected = _normalised(np.exp(gmm.log_likelihood(observation, samples).astype(np.float64)))

    weights = gmm.likelihood_weights(tf.constant(observation), tf.constant(samples)).numpy()

    assert weights.max(-1) == pytest.approx([1.0, 1.0])     # exp(log p - max log p)
    np.testing.assert_allclose(_normalised(weights), expected, rtol=1e-5, atol=1e-30)   # float32 underflows


# -- the engine ------------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:.*exceed the noise model's range:UserWarning")
@pytest.mark.parametrize("estimator", ["mmse", "prior_mean"])
@pytest.mark.parametrize("jit_compile", [True, False])
@pytest.mark.parametrize("chunk_pixels", [7, 10_000])
def test_estimate_in_chunks_equals_the_whole_network_and_float64_estimator(network, noise_model, estimator,
                                                                           jit_compile, chunk_pixels):
    """7 pixels a chunk: 110 chunks for 24 x 32 pixels, the last one ragged; 10000: one padded chunk."""
    tile = _tile((24, 32))
    engine = PredictionEngine(network, noise_model, chunk_elements=chunk_pixels * K, jit_compile=jit_compile)

    actual = engine(tile, estimator=estimator)

    assert engine.chunk_pixels == chunk_pixels
    assert actual.shape == (24, 32, 1)
    np.testing.assert_allclose(actual, _reference(network, tile, noise_model, estimator), rtol=1e-5)


@pytest.mark.filterwarnings("ignore:.*exceed the noise model's range:UserWarning")
def test_3d_estimate_with_a_crop_equals_the_crop_of_the_whole(noise_model):
    network = _network(axes="ZYX", unet_pool=(1, 2, 2), seed=4)
    tile = _tile((6, 12, 16))
    engine = PredictionEngine(network, noise_model, chunk_elements=50 * K)
    crop = (slice(1, 5), slice(2, 10), slice(4, 16))

    actual = engine(tile, crop=crop)

    assert actual.shape == (4, 8, 12, 1)
    np.testing.assert_allclose(actual, _reference(network, tile, noise_model, "mmse")[crop], rtol=1e-5)


class _ShapeSpy(HistogramNoiseModel):
    """Records the shapes of the signals the estimator weights (at tracing)."""

    shapes = []

    def likelihood_weights(self, observation, signal, tables=None):
        _ShapeSpy.shapes.append(tuple(signal.shape))
        return super().likelihood_weights(observation, signal, tables)


@pytest.mark.filterwarnings("ignore:.*exceed the noise model's range:UserWarning")
def test_the_estimator_only_ever_sees_one_chunk_of_samples(network, noise_model):
    spy = _ShapeSpy(bins=noise_model.bins, value_range=noise_model.value_range, signal_range=noise_model.signal_range)
    spy.histogram.assign(noise_model.histogram)
    _ShapeSpy.shapes = []
    engine = PredictionEngine(network, spy, chunk_elements=100 * K + 5)

    engine(_tile((40, 48)))
    engine(_tile((16, 20)))

    assert _ShapeSpy.shapes == [(100, K)]    # traced once, for the chunk shape: 1920 pixels never at once


def test_single_output_networks_return_the_network_output():
    network = _network(mode="n2v", seed=5)
    tile = _tile((12, 20))
    expected = keras.ops.convert_to_numpy(network(tile[np.newaxis, ..., np.newaxis]))[0]

    actual = PredictionEngine(network, None)(tile, estimator="mmse")

    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


def test_engine_refuses_networks_not_built_by_the_package_and_estimators_it_lacks(network):
    image = keras.Input((None, None, 1))
    plain = keras.Model(image, keras.layers.Conv2D(4, 3, padding="same")(image))
    with pytest.raises(ValueError, match="must come from pn2v_tf.nets.build_networks"):
        PredictionEngine(plain)
    with pytest.raises(ValueError, match="needs a noise model"):
        PredictionEngine(network, None).check_estimator("mmse")
    with pytest.raises(ValueError, match="estimator must be one of"):
        PredictionEngine(network, None).check_estimator("median")


@pytest.mark.filterwarnings("ignore:.*exceed the noise model's range:UserWarning")
def test_tiled_prediction_traces_once_and_warns_of_no_retracing(noise_model, caplog):
    """Tiles of several shapes (a 3 x 3 tiling of 70 x 93) and two image sizes: one trace of the tile
    function and of the chunk estimator per chunk size, and no 'retracing' warning from TensorFlow."""
    rng = np.random.default_rng(0)
    config = PN2VConfig(rng.normal(100, 10, (2, 16, 16)).astype(np.float32), n_samples=K, unet_n_depth=2,
                        unet_n_first=4)
    model = PN2V(config, None, basedir=None, noise_model=noise_model)
    with caplog.at_level(logging.WARNING, logger="tensorflow"):
        first = model.predict(_tile((70, 93)), n_tiles=(3, 3))
        model.predict(_tile((70, 93), seed=4), n_tiles=(3, 3))
        model.predict(_tile((41, 57)), n_tiles=(2, 3))

    engine = model.engine
    # tiles smaller than a chunk get the power of two that holds them: one trace per such chunk size
    chunk_sizes = [chunk for (_, _, chunk) in engine._tile_functions]
    assert all(chunk & (chunk - 1) == 0 and chunk <= engine.chunk_pixels for chunk in chunk_sizes)
    assert len(chunk_sizes) <= 3   # 3 x 3 tiles of 70 x 93 and 2 x 3 of 41 x 57: kept parts of 4 to 12 blocks
    assert all(f.experimental_get_tracing_count() == 1 for f in engine._tile_functions.values())
    assert engine._chunk_functions[("mmse", 1)].experimental_get_tracing_count() == len(chunk_sizes)
    assert not [r for r in caplog.records if "retracing" in r.getMessage()]
    np.testing.assert_allclose(first, model.predict(_tile((70, 93)), n_tiles=(1, 1)), rtol=1e-5, atol=1e-4)


def test_models_made_one_after_another_raise_no_retracing_warning(caplog):
    """TensorFlow counts the traces of the engine's tile function over all models of a process."""
    import logging

    from pn2v_tf import PN2V, PN2VConfig

    rng = np.random.default_rng(0)
    X = rng.normal(size=(2, 32, 32)).astype(np.float32)
    with caplog.at_level(logging.WARNING, logger="tensorflow"):
        for _ in range(7):
            model = PN2V(PN2VConfig(X, mode="n2v", unet_n_depth=2, unet_n_first=2, n2v_patch_shape=(16, 16),
                                    train_tensorboard=False), None, basedir=None)
            model.predict(X[0])
    assert not [r for r in caplog.records if "retracing" in r.getMessage()]
