"""Tests of pn2v_tf.bootstrap: noise models from the noisy images alone."""

import keras
import numpy as np
import pytest

from pn2v_tf import PN2V, PN2VConfig, bootstrap_noise_model
from pn2v_tf.datasets import make_synthetic_data
from pn2v_tf.noise_models import GMMNoiseModel, HistogramNoiseModel
from conftest import tiny

TINY = tiny(train_batch_size=8, train_learning_rate=4e-3, train_reduce_lr=None, seed=0)
FIT = dict(steps=150, batch_size=20_000)


@pytest.fixture(scope="module")
def data():
    return make_synthetic_data(seed=3, shape=(96, 96), n_train=3, max_photons=300)


@pytest.fixture(scope="module")
def bootstrapped(data):
    """The whole bootstrap in one call: trains N2V, then fits a GMM; (noise model, N2V model)."""
    keras.utils.set_random_seed(0)
    return bootstrap_noise_model(data.train, kind="gmm", config_kwargs=TINY, epochs=8, steps_per_epoch=20,
                                 return_n2v=True, **FIT)


def test_one_call_trains_n2v_and_fits_a_gmm_to_its_predictions(data, bootstrapped):
    noise_model, n2v = bootstrapped

    assert isinstance(noise_model, GMMNoiseModel)
    assert n2v.config.mode == "n2v" and n2v.basedir is None
    expected = GMMNoiseModel.fit(n2v.predict(data.train, axes="SYX"), data.train, **FIT)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(noise_model.coefficients),
                                  keras.ops.convert_to_numpy(expected.coefficients))


def test_bootstrapped_gmm_sees_the_camera_noise_plus_the_n2v_error(data, bootstrapped):
    """Variance grows with the signal as the camera's does (gain 3); the errors of this briefly
    trained N2V add to it, more on bright structures (a slope of 5.9 at the time of writing)."""
    noise_model, _ = bootstrapped
    camera = data.camera
    low, high = noise_model.signal_range
    probe = np.array([low + 0.2 * (high - low), low + 0.8 * (high - low)])

    variance = noise_model.variance(probe)
    slope = (variance[1] - variance[0]) / (probe[1] - probe[0])
    true_variance = camera.gain * (probe - camera.offset) + camera.read_noise ** 2

    assert camera.gain < slope < 2.5 * camera.gain
    assert np.all(variance > true_variance) and np.all(variance < 3 * true_variance)


def test_histogram_kind_uses_the_given_n2v_model_without_training_it(data, bootstrapped):
    _, n2v = bootstrapped
    weights = [w.copy() for w in n2v.keras_model.get_weights()]

    noise_model = bootstrap_noise_model(data.train, kind="histogram", n2v_model=n2v, bins=64)

    assert isinstance(noise_model, HistogramNoiseModel) and noise_model.bins == 64
    expected = HistogramNoiseModel.from_pairs(n2v.predict(data.train, axes="SYX"), data.train, bins=64)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(noise_model.histogram),
                                  keras.ops.convert_to_numpy(expected.histogram))
    for before, after in zip(weights, n2v.keras_model.get_weights()):
        np.testing.assert_array_equal(before, after)


def test_one_image_without_leading_axis_is_accepted(data, bootstrapped):
    _, n2v = bootstrapped
    noise_model = bootstrap_noise_model(data.train[0], kind="histogram", n2v_model=n2v, bins=32)
    assert noise_model.bins == 32


@pytest.mark.parametrize("kwargs, message", [
    (dict(kind="poisson"), "kind must be one of"),
    (dict(config_kwargs={"mode": "pn2v"}), "leave 'mode' out"),
    (dict(config_kwargs={"unet_n_depth": 0}), "invalid N2V configuration"),
    (dict(epochs=0), "epochs must be"),
])
def test_bad_arguments_are_named(data, kwargs, message):
    with pytest.raises(ValueError, match=message):
        bootstrap_noise_model(data.train, **kwargs)


def test_a_pn2v_model_cannot_serve_as_the_signal(data):
    noise_model = HistogramNoiseModel.from_calibration_stack(data.calibration, bins=32)
    pn2v = PN2V(PN2VConfig(data.train, mode="pn2v", n_samples=4, **TINY), basedir=None, noise_model=noise_model)
    with pytest.raises(ValueError, match="mode 'n2v' or 'care'"):
        bootstrap_noise_model(data.train, n2v_model=pn2v)


@pytest.mark.parametrize("images, message", [
    (np.zeros((2, 3, 32, 32)), "axes SYX"),
    (np.full((2, 32, 32), np.nan), "NaN or inf"),
])
def test_bad_images_are_rejected(images, message):
    with pytest.raises(ValueError, match=message):
        bootstrap_noise_model(images)
