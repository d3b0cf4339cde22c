"""Tests of pn2v_tf.bootstrap on multichannel images: one N2V model for all channels, one noise model
fitted to each channel's (prediction, noisy image) pairs."""

import keras
import numpy as np
import pytest

from pn2v_tf import PN2V, PN2VConfig, bootstrap_noise_model
from pn2v_tf.noise_models import ChannelNoiseModels, HistogramNoiseModel
from conftest import SMALL_NET, tiny

#: A U-Net of one level on 16x16 patches: the cheapest network to build and train.
TINY = tiny(SMALL_NET, unet_n_depth=1, train_learning_rate=1e-3)
GMM = dict(n_gaussians=1, n_coeff=2, steps=5, batch_size=2000)


@pytest.fixture(scope="module")
def images():
    """Four noisy two-channel images (S, Y, X, C): a dim channel with read noise, a bright one of gain 4."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32]
    clean = np.stack([80 + 30 * np.sin(xx / 3.0), 450 + 100 * (((yy // 8) + (xx // 8)) % 2)], axis=-1)
    clean = np.repeat(clean[np.newaxis], 4, axis=0)
    noisy = [rng.poisson(clean[..., 0]) + rng.normal(0, 3, clean.shape[:-1]), 4 * rng.poisson(clean[..., 1] / 4)]
    return np.stack(noisy, axis=-1).astype(np.float32)


@pytest.fixture(scope="module")
def bootstrapped(images):
    keras.utils.set_random_seed(0)
    return bootstrap_noise_model(images, kind="histogram", config_kwargs=dict(TINY, axes="YXC"), epochs=1,
                                 steps_per_epoch=2, return_n2v=True, bins=32)


def _histograms(noise_model):
    return [keras.ops.convert_to_numpy(model.histogram) for model in noise_model.models]


def test_one_n2v_model_and_one_histogram_per_channel_from_its_predictions(images, bootstrapped):
    noise_model, n2v = bootstrapped
    assert isinstance(noise_model, ChannelNoiseModels) and noise_model.n_channels == 2
    assert n2v.config.mode == "n2v" and n2v.config.axes == "YXC" and n2v.config.n_channels == 2
    signal = n2v.predict(images, axes="SYXC")
    for channel, histogram in enumerate(_histograms(noise_model)):
        alone = HistogramNoiseModel.from_pairs(signal[..., channel], images[..., channel], bins=32)
        np.testing.assert_array_equal(histogram, keras.ops.convert_to_numpy(alone.histogram))
    assert noise_model.models[0].value_range[1] < noise_model.models[1].value_range[0]   # each its own range


def test_axes_take_any_layout_and_single_images(images, bootstrapped):
    expected, n2v = bootstrapped
    channels_first = np.moveaxis(images, -1, 1)
    for data, kwargs in ((channels_first, dict(axes="SCYX")), (images, {})):
        noise_model = bootstrap_noise_model(data, kind="histogram", n2v_model=n2v, bins=32, **kwargs)
        for mine, theirs in zip(_histograms(noise_model), _histograms(expected)):
            np.testing.assert_array_equal(mine, theirs)
    one = bootstrap_noise_model(channels_first[0], kind="histogram", n2v_model=n2v, bins=32, axes="CYX")
    same = bootstrap_noise_model(images[0], kind="histogram", n2v_model=n2v, bins=32)  # YXC without S
    for mine, theirs in zip(_histograms(one), _histograms(same)):
        np.testing.assert_array_equal(mine, theirs)


def test_gmm_kind_fits_a_mixture_per_channel_with_the_given_options(images, bootstrapped):
    _, n2v = bootstrapped
    noise_model = bootstrap_noise_model(images, kind="gmm", n2v_model=n2v, **GMM)
    assert [m.kind for m in noise_model.models] == ["gmm", "gmm"]
    assert [m.n_gaussians for m in noise_model.models] == [1, 1]
    low, high = noise_model.models[1].signal_range
    assert noise_model.models[0].signal_range[1] < low < high   # the bright channel's own signals


def test_a_single_channel_model_on_axes_with_a_channel_of_one(images):
    n2v = PN2V(PN2VConfig(images[..., 0], mode="n2v", **TINY), basedir=None)
    noise_model = bootstrap_noise_model(images[..., :1], kind="histogram", n2v_model=n2v, bins=16, axes="SYXC")
    assert isinstance(noise_model, HistogramNoiseModel) and noise_model.bins == 16


@pytest.mark.parametrize("data, kwargs, message", [
    (lambda x: np.concatenate([x, x[..., :1]], axis=-1), dict(axes="SYXC"),
     r"images have 3 channels \(axes 'SYXC'\), n2v_model takes 2"),
    (lambda x: np.concatenate([x, x[..., :1]], axis=-1), {}, "has 3 channels .* the model takes 2"),
    (lambda x: x, dict(axes="SYX"), "length 4"),
])
def test_channels_that_do_not_fit_the_n2v_model_are_named(images, bootstrapped, data, kwargs, message):
    _, n2v = bootstrapped
    with pytest.raises(ValueError, match=message):
        bootstrap_noise_model(data(images), kind="histogram", n2v_model=n2v, **kwargs)
