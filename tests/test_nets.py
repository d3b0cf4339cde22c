"""Tests of pn2v_tf.nets: the K-sample head's initialisation."""

import keras
import numpy as np
import pytest

from pn2v_tf import PN2VConfig
from pn2v_tf.nets import SampleHeadInitializer, build_networks


def test_head_kernel_is_one_shared_column_plus_a_small_independent_part():
    features, k, spread = 16, 800, 0.01
    keras.utils.set_random_seed(0)

    kernel = keras.ops.convert_to_numpy(SampleHeadInitializer(spread)((features, k)))

    shared_limit = np.sqrt(6 / (features + 1))          # Glorot-uniform limit of an (F, 1) kernel
    independent_limit = np.sqrt(6 / (features + k))     # ... and of an (F, K) kernel
    deviation = kernel - kernel.mean(axis=1, keepdims=True)
    assert kernel.shape == (features, k)
    assert np.abs(deviation).max() <= 2 * spread * independent_limit
    assert np.abs(deviation).max() > 0.5 * spread * independent_limit   # the samples are not identical
    assert np.abs(kernel).max() <= shared_limit + spread * independent_limit
    assert np.abs(kernel.mean(axis=1)).max() > 0.3 * shared_limit       # a real shared column


def test_head_initializer_is_seeded_and_serialisable():
    initializer = SampleHeadInitializer(0.05, seed=3)

    rebuilt = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(initializer))

    assert isinstance(rebuilt, SampleHeadInitializer)
    assert (rebuilt.spread, rebuilt.seed) == (0.05, 3)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(rebuilt((4, 6))),
                                  keras.ops.convert_to_numpy(initializer((4, 6))))


def _untrained_samples(spread, output_scale=1.0):
    """Untrained network's samples (Y, X, K) of a random image, and the config."""
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 100, (1, 32, 32)).astype(np.float32)
    keras.utils.set_random_seed(1)
    config = PN2VConfig(images, n_samples=64, unet_n_depth=2, unet_n_first=8, samples_init_spread=spread,
                        samples_output_scale=output_scale)
    prediction, _ = build_networks(config)
    return keras.ops.convert_to_numpy(prediction(images[..., None]))[0], config


def _sample_spread_over_pixel_spread(spread):
    """Untrained network: spread of the K samples at a pixel relative to the spread over pixels."""
    samples, _ = _untrained_samples(spread)
    return samples.std(axis=-1).mean() / samples.mean(axis=-1).std()


def test_independent_columns_start_the_samples_as_unrelated_functions():
    """``samples_init_spread=None`` (the default): the K samples at a pixel differ by as much as one
    sample differs between pixels, unlike a shared column, which starts them together."""
    independent, shared = _sample_spread_over_pixel_spread(None), _sample_spread_over_pixel_spread(0.01)
    samples, _ = _untrained_samples(None)
    per_sample_over_pixels = samples.std(axis=(0, 1)).mean()
    assert samples.std(axis=-1).mean() > 0.5 * per_sample_over_pixels
    assert independent > 20 * shared


def test_the_output_scale_multiplies_the_samples_distance_from_the_mean():
    one, config = _untrained_samples(None)
    ten, _ = _untrained_samples(None, output_scale=10.0)
    mean = config.means[0]
    np.testing.assert_allclose(ten - mean, 10 * (one - mean), rtol=1e-4, atol=1e-3)


def test_samples_start_close_together_by_the_configured_spread():
    narrow, wide = _sample_spread_over_pixel_spread(0.01), _sample_spread_over_pixel_spread(1.0)

    assert narrow < 0.05
    assert narrow == pytest.approx(wide / 100, rel=0.5)   # the per-sample part scales with the spread


@pytest.mark.parametrize("mode", ["n2v", "care"])
def test_one_output_heads_keep_the_plain_glorot_initialisation(mode):
    config = PN2VConfig(np.zeros((1, 8, 8)) + np.arange(8), mode=mode, unet_n_depth=2, unet_n_first=4)

    prediction, _ = build_networks(config)

    head = prediction.get_layer("head")
    assert isinstance(head.kernel_initializer, keras.initializers.GlorotUniform)
    assert head.kernel.shape == (4, 1)
