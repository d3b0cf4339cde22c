"""Tests of pn2v_tf.model.PN2V: model folder, training in the three modes, prediction and sampling.

One tiny PN2V model and one tiny N2V model are trained once per module (fixtures ``trained`` and
``trained_n2v``) and reused; the other tests use untrained networks, which is enough for the
geometric properties of prediction (axes, tiling, padding).
"""

import json
import os
import warnings

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from scipy.special import logsumexp, softmax  # noqa: E402

from pn2v_tf import HistogramNoiseModel, MaskedPatches, PN2V, PN2VConfig  # noqa: E402
from pn2v_tf.datasets import make_synthetic_data  # noqa: E402
from pn2v_tf.metrics import psnr  # noqa: E402
from pn2v_tf.nets import receptive_radius  # noqa: E402
from conftest import tiny  # noqa: E402

TINY = tiny(train_batch_size=16, train_n_val_patches=16, train_learning_rate=3e-3)
K = 16
EPOCHS, STEPS = 8, 10


def _quiet(function, *args, **kwargs):
    """Call ``function`` with the range warnings of the small test noise model silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*exceed the noise model's range.*")
        return function(*args, **kwargs)


# -- shared data and models ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def data():
    return make_synthetic_data(seed=3, shape=(96, 96), n_train=3, calibration_shape=(64, 64),
                               calibration_frames=20)


@pytest.fixture(scope="module")
def noise_model(data):
    everything = np.concatenate([data.calibration.ravel(), data.train.ravel(), data.test.ravel()])
    value_range = (float(everything.min()) - 1.0, float(everything.max()) + 1.0)
    return HistogramNoiseModel.from_calibration_stack(data.calibration, bins=64, value_range=value_range)


@pytest.fixture(scope="module")
def split(data):
    return data.train[:2], data.train[2:]


@pytest.fixture(scope="module")
def trained(data, noise_model, split, tmp_path_factory):
    """A PN2V model trained briefly into a model folder: (model, history, basedir, name)."""
    basedir = tmp_path_factory.mktemp("models")
    X, X_val = split
    keras.utils.set_random_seed(0)  # weight initialisation; patches and masks use config.seed
    config = PN2VConfig(X, mode="pn2v", n_samples=K, seed=0, train_mean_weight=0.5, **TINY)
    model = PN2V(config, "pn2v", basedir=str(basedir), noise_model=noise_model)
    history = model.train(X, X_val, epochs=EPOCHS, steps_per_epoch=STEPS)
    return model, history, basedir, "pn2v"


@pytest.fixture(scope="module")
def trained_n2v(split):
    X, X_val = split
    keras.utils.set_random_seed(1)
    config = PN2VConfig(X, mode="n2v", n_samples=K, seed=0, **TINY)
    model = PN2V(config, "n2v", basedir=None)
    history = model.train(X, X_val, epochs=4, steps_per_epoch=STEPS)
    return model, history


@pytest.fixture(scope="module")
def untrained_deep(split, noise_model):
    """Untrained PN2V network of depth 3 (block size 4), in memory only."""
    X, _ = split
    config = PN2VConfig(X, mode="pn2v", n_samples=8, seed=0, **{**TINY, "unet_n_depth": 3})
    return PN2V(config, "deep", basedir=None, noise_model=noise_model)


@pytest.fixture
def tiny_config(split):
    return PN2VConfig(split[0], mode="pn2v", n_samples=K, seed=0, **TINY)


def _network_samples(model, image):
    """Prior samples (Y, X, K) of the prediction network for an image whose sides fit the U-Net."""
    return keras.ops.convert_to_numpy(model.keras_model(image[np.newaxis, ..., np.newaxis].astype(np.float32)))[0]


def _log_likelihoods(noise_model, observation, samples):
    return keras.ops.convert_to_numpy(noise_model.log_likelihood(
        keras.ops.convert_to_tensor(observation.astype(np.float32)),
        keras.ops.convert_to_tensor(samples.astype(np.float32))))


# -- the model folder ------------------------------------------------------------------------------

def test_new_model_writes_config_and_noise_model(tmp_path, tiny_config, noise_model):
    PN2V(tiny_config, "fresh", basedir=str(tmp_path), noise_model=noise_model)
    folder = tmp_path / "fresh"
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "noise_model.npz"]
    with open(folder / "config.json") as f:
        assert PN2VConfig(**json.load(f)).__dict__ == tiny_config.__dict__
    with np.load(folder / "noise_model.npz") as stored:
        np.testing.assert_array_equal(stored["histogram"], keras.ops.convert_to_numpy(noise_model.histogram))


def test_training_lowers_training_and_validation_loss(trained):
    _, history, _, _ = trained
    loss, val_loss = history.history["loss"], history.history["val_loss"]
    assert len(loss) == len(val_loss) == EPOCHS
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(val_loss))
    assert loss[-1] < loss[0]
    assert val_loss[-1] < val_loss[0]


def test_training_leaves_best_and_last_weights_only(trained):
    _, _, basedir, name = trained
    names = sorted(p.name for p in (basedir / name).iterdir())
    assert names == ["config.json", "example_input.tif", "noise_model.npz", "weights_best.h5", "weights_last.h5"]


def test_after_training_the_best_not_the_last_weights_are_kept_and_reloaded(tmp_path, split):
    """A second training run that only makes things worse leaves the model at the first run's best."""
    X, X_val = split
    keras.utils.set_random_seed(3)
    model = PN2V(PN2VConfig(X, mode="n2v", seed=4, **{**TINY, "train_reduce_lr": None}), "best",
                 basedir=str(tmp_path))
    first = model.train(X, X_val, epochs=2, steps_per_epoch=5)
    good = model.keras_model.get_weights()
    model.keras_model_masked.optimizer.learning_rate.assign(1.0)  # wreck the network
    second = model.train(X, X_val, epochs=1, steps_per_epoch=3)
    assert second.history["val_loss"][0] > min(first.history["val_loss"])  # precondition: it got worse
    for a, b in zip(model.keras_model.get_weights(), good):
        np.testing.assert_array_equal(a, b)
    reloaded = PN2V(None, "best", basedir=str(tmp_path))
    for a, b in zip(reloaded.keras_model.get_weights(), good):
        np.testing.assert_array_equal(a, b)
    probe = PN2V(None, "best", basedir=str(tmp_path))
    probe.load_weights("weights_last.h5")  # the wrecked weights are kept as the last ones
    assert any(not np.array_equal(a, b) for a, b in zip(probe.keras_model.get_weights(), good))


def test_pn2v_mmse_beats_the_noisy_input(trained, data):
    model, *_ = trained
    denoised = _quiet(model.predict, data.test, axes="YX")
    assert denoised.shape == data.test.shape and denoised.dtype == np.float32
    assert psnr(data.test_clean, denoised) > psnr(data.test_clean, data.test) + 0.5


def test_reloaded_model_restores_config_noise_model_normalisation_and_predictions(trained, data):
    model, _, basedir, name = trained
    loaded = PN2V(None, name, basedir=str(basedir))
    assert vars(loaded.config) == vars(model.config)
    assert loaded.config.means == model.config.means and loaded.config.stds == model.config.stds
    standardize = loaded.keras_model.get_layer("standardize")
    assert (standardize.mean, standardize.std) == (model.config.means, model.config.stds)
    # identical noise model: same kind, ranges and likelihoods
    assert type(loaded.noise_model) is type(model.noise_model)
    assert loaded.noise_model.value_range == model.noise_model.value_range
    assert loaded.noise_model.signal_range == model.noise_model.signal_range
    low, high = model.noise_model.value_range
    x, s = np.meshgrid(np.linspace(low, high, 37), np.linspace(low, high, 41))
    np.testing.assert_array_equal(_log_likelihoods(loaded.noise_model, x, s), _log_likelihoods(model.noise_model, x, s))
    # identical weights and predictions
    for a, b in zip(loaded.keras_model.get_weights(), model.keras_model.get_weights()):
        np.testing.assert_array_equal(a, b)
    for estimator in ("mmse", "prior_mean"):
        np.testing.assert_allclose(_quiet(loaded.predict, data.test, "YX", estimator=estimator),
                                   _quiet(model.predict, data.test, "YX", estimator=estimator), rtol=1e-6, atol=1e-4)


def test_output_scale_is_kept_in_the_folder_and_absent_keys_load_as_before_they_existed(tmp_path, tiny_config, data,
                                                                                        noise_model):
    """A folder saved with ``samples_output_scale=10`` reloads with it; the same folder whose
    config.json lacks ``samples_output_scale`` and ``train_mean_weight`` (written before they existed)
    loads with the values its training had, 1 and 0: its samples lie a tenth as far from the mean."""
    import shutil

    keras.utils.set_random_seed(5)
    config = PN2VConfig(**{**vars(tiny_config), "samples_output_scale": 10.0})
    model = PN2V(config, "scaled", basedir=str(tmp_path), noise_model=noise_model)
    model.keras_model.save_weights(str(tmp_path / "scaled" / "weights_last.h5"))
    shutil.copytree(tmp_path / "scaled", tmp_path / "old")
    with open(tmp_path / "old" / "config.json") as f:
        stored = json.load(f)
    del stored["samples_output_scale"], stored["train_mean_weight"]
    with open(tmp_path / "old" / "config.json", "w") as f:
        json.dump(stored, f)

    reloaded, old = PN2V(None, "scaled", basedir=str(tmp_path)), PN2V(None, "old", basedir=str(tmp_path))

    assert reloaded.config.samples_output_scale == 10.0
    assert (old.config.samples_output_scale, old.config.train_mean_weight) == (1.0, 0.0) and old.config.is_valid()
    image, mean = data.test[:32, :32], config.means[0]
    np.testing.assert_allclose(_network_samples(reloaded, image), _network_samples(model, image), rtol=1e-6)
    np.testing.assert_allclose(_network_samples(old, image) - mean, (_network_samples(model, image) - mean) / 10,
                               rtol=1e-4, atol=1e-3)
    low, high = noise_model.signal_range
    for loaded in (reloaded, old):   # the prediction engine applies the same scale (samples clamped to the range)
        np.testing.assert_allclose(_quiet(loaded.predict, image, "YX", estimator="prior_mean"),
                                   np.clip(_network_samples(loaded, image), low, high).mean(axis=-1), rtol=1e-4,
                                   atol=1e-2)


def test_loading_an_untrained_model_warns(tmp_path, tiny_config, noise_model):
    PN2V(tiny_config, "untrained", basedir=str(tmp_path), noise_model=noise_model)
    with pytest.warns(UserWarning, match="no trained weights"):
        loaded = PN2V(None, "untrained", basedir=str(tmp_path))
    assert vars(loaded.config) == vars(tiny_config)


def test_loading_a_missing_model_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        PN2V(None, "nothing_here", basedir=str(tmp_path))


def test_existing_model_is_not_replaced_without_overwrite(tmp_path, tiny_config, noise_model):
    PN2V(tiny_config, "m", basedir=str(tmp_path), noise_model=noise_model)
    config_file = tmp_path / "m" / "config.json"
    before = config_file.read_bytes()
    other = PN2VConfig(None, **{**vars(tiny_config), "seed": 99})
    with pytest.raises(FileExistsError, match="overwrite"):
        PN2V(other, "m", basedir=str(tmp_path), noise_model=noise_model)
    assert config_file.read_bytes() == before
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="output path for model already exists")
        PN2V(other, "m", basedir=str(tmp_path), noise_model=noise_model, overwrite=True)
    with open(config_file) as f:
        assert json.load(f)["seed"] == 99


def test_pn2v_mode_without_noise_model_raises(tmp_path, tiny_config):
    with pytest.raises(ValueError, match="noise model"):
        PN2V(tiny_config, "no_nm", basedir=None)
    with pytest.raises(ValueError, match="noise model"):
        PN2V(tiny_config, "no_nm", basedir=str(tmp_path))


def test_failed_creation_without_noise_model_leaves_no_model_behind(tmp_path, tiny_config, noise_model):
    with pytest.raises(ValueError, match="noise model"):
        PN2V(tiny_config, "retry", basedir=str(tmp_path))
    model = PN2V(tiny_config, "retry", basedir=str(tmp_path), noise_model=noise_model)  # the corrected call
    assert model.noise_model is noise_model


def test_new_model_never_inherits_a_stale_noise_model(tmp_path, tiny_config, noise_model):
    PN2V(tiny_config, "old", basedir=str(tmp_path), noise_model=noise_model)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="output path for model already exists")
        with pytest.raises(ValueError, match="noise model"):
            PN2V(tiny_config, "old", basedir=str(tmp_path), overwrite=True)


@pytest.mark.parametrize("as_string", [True, False])
def test_noise_model_given_as_a_path(tmp_path, tiny_config, noise_model, as_string):
    path = noise_model.save(tmp_path / "nm.npz")
    model = PN2V(tiny_config, "from_path", basedir=str(tmp_path / "models"),
                 noise_model=str(path) if as_string else tmp_path / "nm.npz")
    assert isinstance(model.noise_model, HistogramNoiseModel)
    low, high = noise_model.value_range
    x, s = np.meshgrid(np.linspace(low, high, 23), np.linspace(low, high, 29))
    np.testing.assert_array_equal(_log_likelihoods(model.noise_model, x, s), _log_likelihoods(noise_model, x, s))
    assert (tmp_path / "models" / "from_path" / "noise_model.npz").exists()


def test_noise_model_of_the_wrong_type_raises(tiny_config):
    with pytest.raises(ValueError, match="noise_model"):
        PN2V(tiny_config, "bad", basedir=None, noise_model=np.zeros((4, 4)))


# -- N2V and CARE ----------------------------------------------------------------------------------

def test_n2v_mode_has_one_output_and_both_estimators_return_it(trained_n2v, data):
    model, history = trained_n2v
    assert model.keras_model.output_shape[-1] == 1
    assert model.noise_model is None
    image = data.test[:64, :64]
    expected = _network_samples(model, image)[..., 0]
    for estimator in ("mmse", "prior_mean"):
        np.testing.assert_allclose(model.predict(image, "YX", estimator=estimator), expected, rtol=1e-5, atol=1e-3)
    with pytest.raises(ValueError, match="pn2v"):
        model.sample_posterior(image, 3)


def test_n2v_training_lowers_the_loss(trained_n2v):
    _, history = trained_n2v
    loss, val_loss = history.history["loss"], history.history["val_loss"]
    assert loss[-1] < loss[0]
    assert val_loss[-1] < val_loss[0]


def test_n2v_mode_refuses_clean_targets(split):
    X, X_val = split
    model = PN2V(PN2VConfig(X, mode="n2v", **TINY), "n2v_y", basedir=None)
    with pytest.raises(ValueError, match="care"):
        model.train(X, X_val, Y=X, epochs=1, steps_per_epoch=1)
    with pytest.raises(ValueError, match="care"):
        model.train(X, X_val, validation_Y=X_val, epochs=1, steps_per_epoch=1)


@pytest.fixture(scope="module")
def care_data(data):
    """Noisy calibration frames and their clean signal: aligned pairs for supervised training."""
    clean = np.broadcast_to(data.calibration_clean, data.calibration.shape)
    return data.calibration[:6], clean[:6], data.calibration[6:8], clean[6:8]


def test_care_mode_needs_targets(care_data):
    X, Y, X_val, Y_val = care_data
    model = PN2V(PN2VConfig(X, mode="care", **TINY), "care", basedir=None)
    assert model.keras_model_masked is None
    with pytest.raises(ValueError, match="Y"):
        model.train(X, X_val, epochs=1, steps_per_epoch=1)
    with pytest.raises(ValueError, match="Y"):
        model.train(X, X_val, Y=Y, epochs=1, steps_per_epoch=1)
    with pytest.raises(ValueError, match="shape"):
        model.train(X, X_val, Y=Y[:, :32], validation_Y=Y_val, epochs=1, steps_per_epoch=1)


def test_care_mode_trains_against_clean_targets(care_data):
    X, Y, X_val, Y_val = care_data
    keras.utils.set_random_seed(2)
    model = PN2V(PN2VConfig(X, mode="care", seed=1, **TINY), "care", basedir=None)
    history = model.train(X, X_val, Y=Y, validation_Y=Y_val, epochs=3, steps_per_epoch=5)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert history.history["val_loss"][-1] < history.history["val_loss"][0]
    prediction = model.predict(X_val[0], "YX")
    np.testing.assert_array_equal(prediction, model.predict(X_val[0], "YX", estimator="prior_mean"))
    assert prediction.shape == X_val[0].shape and np.all(np.isfinite(prediction))


# -- the masked training graph ----------------------------------------------------------------------

@pytest.mark.parametrize("which", ["pn2v", "n2v"])
def test_masked_graph_equals_prediction_graph_at_the_coordinates(which, trained, trained_n2v, split):
    model = trained[0] if which == "pn2v" else trained_n2v[0]
    batches = MaskedPatches(split[0], patch_shape=(32, 32), batch_size=4, steps_per_epoch=1, seed=7)
    inputs, targets = batches[0]
    coords = inputs["coords"][:, :, 0]   # the one channel's blind spots
    assert len({tuple(c) for c in coords[:, 0]}) > 1  # patches have different coordinates
    masked = keras.ops.convert_to_numpy(model.keras_model_masked(inputs))
    full = keras.ops.convert_to_numpy(model.keras_model(inputs["image"]))
    batch = np.arange(coords.shape[0])[:, np.newaxis]
    expected = full[batch, coords[..., 0], coords[..., 1]]
    assert masked.shape == expected.shape == coords.shape[:2] + (model.config.n_outputs,)
    np.testing.assert_allclose(masked, expected, rtol=1e-5, atol=1e-3)


def test_training_loss_is_eq7_plus_the_mean_term_over_the_masked_pixels(trained, split):
    model, *_ = trained
    batches = MaskedPatches(split[0], patch_shape=(32, 32), batch_size=4, steps_per_epoch=1, seed=8)
    inputs, targets = batches[0]
    samples = keras.ops.convert_to_numpy(model.keras_model_masked(inputs))  # (B, M, K)
    log_p = _log_likelihoods(model.noise_model, targets, samples).astype(np.float64)
    # decoupled (the default): the squared error in units of the noise model's mean variance
    assert model.config.train_mean_weight == 0.5 and model.config.train_decouple_mean
    squared = (samples.mean(axis=-1, dtype=np.float64) - targets[..., 0]) ** 2 / model.noise_model.mean_noise_variance()
    expected = np.mean(np.log(K) - logsumexp(log_p, axis=-1) + 0.5 * squared)
    loss = model.keras_model_masked.evaluate(inputs, targets, verbose=0, return_dict=True)["loss"]
    assert loss == pytest.approx(expected, rel=1e-4)


# -- training input checks ------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("name", ["X", "validation_X"])
def test_non_finite_training_images_raise_naming_them(tiny_config, noise_model, split, bad, name):
    model = PN2V(tiny_config, "nan", basedir=None, noise_model=noise_model)
    X, X_val = split[0].copy(), split[1].copy()
    (X if name == "X" else X_val)[0, 5, 7] = bad
    with pytest.raises(ValueError, match=f"^{name} contains NaN"):
        model.train(X, X_val, epochs=1, steps_per_epoch=1)


def test_patch_larger_than_the_images_raises(tiny_config, noise_model, split):
    model = PN2V(tiny_config, "small", basedir=None, noise_model=noise_model)
    X, X_val = split
    with pytest.raises(ValueError, match="patch"):
        _quiet(model.train, X[:, :24, :], X_val, epochs=1, steps_per_epoch=1)
    with pytest.raises(ValueError, match="patch"):
        _quiet(model.train, X, X_val[:, :, :16], epochs=1, steps_per_epoch=1)


@pytest.mark.parametrize("shape", [(96, 96), (2, 96, 96, 2)])
def test_training_images_of_wrong_shape_raise(tiny_config, noise_model, split, shape):
    model = PN2V(tiny_config, "shape", basedir=None, noise_model=noise_model)
    with pytest.raises(ValueError, match="SYX"):
        model.train(np.ones(shape, np.float32) * 200, split[1], epochs=1, steps_per_epoch=1)


def test_training_without_basedir_writes_nothing(tmp_path, monkeypatch, noise_model, split):
    monkeypatch.chdir(tmp_path)
    X, X_val = split
    config = PN2VConfig(X[..., np.newaxis], mode="pn2v", n_samples=K, seed=2,
                        **{**TINY, "train_tensorboard": True})
    model = PN2V(config, "in_memory", basedir=None, noise_model=noise_model)
    history = _quiet(model.train, X[..., np.newaxis], X_val[..., np.newaxis], epochs=1, steps_per_epoch=2)
    assert np.isfinite(history.history["loss"][0])
    assert list(tmp_path.iterdir()) == []
    assert np.all(np.isfinite(_quiet(model.predict, X_val[0], "YX")))
    with pytest.raises(ValueError):
        PN2V(None, "in_memory", basedir=None)


# -- prediction ------------------------------------------------------------------------------------

def test_mmse_and_prior_mean_follow_their_closed_forms(trained, data):
    model, *_ = trained
    image = data.test[:64, :64]
    samples = _network_samples(model, image)  # (Y, X, K)
    # samples beyond the histogram's signal range count as its edge value, as in the loss
    samples = np.clip(samples, *model.noise_model.signal_range)
    log_p = _log_likelihoods(model.noise_model, image[..., np.newaxis], samples).astype(np.float64)
    mmse = np.sum(softmax(log_p, axis=-1) * samples, axis=-1)  # Eq. 10
    np.testing.assert_allclose(_quiet(model.predict, image, "YX", n_tiles=(1, 1)), mmse, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(model.predict(image, "YX", n_tiles=(1, 1), estimator="prior_mean"),
                               samples.mean(axis=-1), rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("estimator", ["mmse", "prior_mean"])
def test_stack_is_processed_image_by_image(trained, data, estimator):
    model, *_ = trained
    stack = np.stack([data.test[:64, :64], data.test[32:, 32:], data.train[0, 8:72, 16:80]])
    result = _quiet(model.predict, stack, "SYX", estimator=estimator)
    assert result.shape == stack.shape
    for image, predicted in zip(stack, result):
        np.testing.assert_allclose(predicted, _quiet(model.predict, image, "YX", estimator=estimator),
                                   rtol=1e-6, atol=1e-4)
    # the batch axis may sit anywhere
    moved = _quiet(model.predict, np.moveaxis(stack, 0, -1), "YXS", estimator=estimator)
    np.testing.assert_allclose(moved, np.moveaxis(result, 0, -1), rtol=1e-6, atol=1e-4)


def test_channel_axis_of_size_one_is_kept_as_csbdeep_does(trained, data):
    model, *_ = trained
    image = data.test[:64, :48]
    result = _quiet(model.predict, image[..., np.newaxis], "YXC")
    assert result.shape == image.shape + (1,)
    np.testing.assert_allclose(result[..., 0], _quiet(model.predict, image, "YX"), rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(_quiet(model.predict, image[np.newaxis], "CYX")[0], result[..., 0], rtol=1e-6, atol=1e-4)
    with pytest.raises(ValueError, match="channel"):
        model.predict(np.stack([image, image], axis=-1), "YXC")


def test_transposed_axes(trained, data):
    model, *_ = trained
    image = data.test[:64, :40]
    expected = _quiet(model.predict, image, "YX")
    np.testing.assert_allclose(_quiet(model.predict, image.T, "XY"), expected.T, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("shape", [(63, 77), (41, 50), (97, 45)])
def test_sizes_not_divisible_by_the_block_size(untrained_deep, data, shape):
    """Depth 3 (block 4): far from the cut border the prediction equals that of the larger image."""
    model = untrained_deep
    big = np.concatenate([data.test, data.train[0]], axis=0)[:100, :80]  # (100, 80), sides multiples of 4
    reference = _quiet(model.predict, big, "YX", n_tiles=(1, 1))
    cropped = _quiet(model.predict, big[: shape[0], : shape[1]], "YX", n_tiles=(1, 1))
    assert cropped.shape == shape and cropped.dtype == np.float32 and np.all(np.isfinite(cropped))
    keep = receptive_radius(3, 3)
    inner = (slice(0, shape[0] - keep), slice(0, shape[1] - keep))
    np.testing.assert_allclose(cropped[inner], reference[inner], rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("estimator", ["mmse", "prior_mean"])
def test_tiled_prediction_equals_one_piece(trained, data, estimator):
    model, *_ = trained
    whole = _quiet(model.predict, data.test, "YX", n_tiles=(1, 1), estimator=estimator)
    tiled = _quiet(model.predict, data.test, "YX", n_tiles=(2, 3), estimator=estimator)
    np.testing.assert_allclose(tiled, whole, rtol=1e-5, atol=1e-3)


def test_tiled_prediction_of_an_odd_sized_image_with_a_deeper_net(untrained_deep, data):
    image = data.test[:90, :71]
    whole = _quiet(untrained_deep.predict, image, "YX", n_tiles=(1, 1))
    tiled = _quiet(untrained_deep.predict, image, "YX", n_tiles=(3, 2))
    np.testing.assert_allclose(tiled, whole, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_pixel_raises(trained, data, bad):
    model, *_ = trained
    image = data.test.copy()
    image[10, 20] = bad
    with pytest.raises(ValueError, match="NaN"):
        model.predict(image, "YX")
    with pytest.raises(ValueError, match="NaN"):
        model.sample_posterior(image, 2)


@pytest.mark.parametrize("shape, axes", [
    ((64, 64), "ZYX"),      # axes longer than the image
    ((2, 64, 64), "YX"),    # axes shorter than the image
    ((64, 64), "YY"),
    ((64, 64), "YQ"),
    ((2, 64), "SX"),        # no Y
])
def test_wrong_axes_raise(trained, shape, axes):
    model, *_ = trained
    with pytest.raises(ValueError):
        model.predict(np.full(shape, 200, np.float32), axes)


@pytest.mark.parametrize("estimator", ["median", "posterior", "MMSE", None])
def test_unknown_estimator_raises(trained, data, estimator):
    model, *_ = trained
    with pytest.raises(ValueError, match="estimator"):
        model.predict(data.test, "YX", estimator=estimator)


@pytest.mark.parametrize("n_tiles", [(0, 1), (2,), (1, 1, 1), (1.5, 2)])
def test_invalid_n_tiles_raise(trained, data, n_tiles):
    model, *_ = trained
    with pytest.raises(ValueError, match="n_tiles"):
        _quiet(model.predict, data.test, "YX", n_tiles=n_tiles)


# -- posterior samples -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def posterior(trained, data):
    """Image, its prior samples (Y, X, K), exact posterior weights and 200 posterior draws."""
    model, *_ = trained
    image = data.test[16:80, 16:80]
    samples = np.clip(_network_samples(model, image).astype(np.float64), *model.noise_model.signal_range)
    weights = softmax(_log_likelihoods(model.noise_model, image[..., np.newaxis], samples), axis=-1)
    draws = _quiet(model.sample_posterior, image, n_samples=200, axes="YX", n_tiles=(1, 1), seed=11)
    return image, samples, weights, draws


def test_posterior_samples_shape_and_reproducibility(trained, posterior):
    model, *_ = trained
    image, _, _, draws = posterior
    assert draws.shape == (200,) + image.shape and draws.dtype == np.float32
    again = _quiet(model.sample_posterior, image, n_samples=200, axes="YX", n_tiles=(1, 1), seed=11)
    np.testing.assert_array_equal(again, draws)
    other = _quiet(model.sample_posterior, image, n_samples=200, axes="YX", n_tiles=(1, 1), seed=12)
    assert not np.array_equal(other, draws)
    small = _quiet(model.sample_posterior, image[:32], n_samples=3, axes="YX", seed=0)
    assert small.shape == (3, 32, 64)
    stack = _quiet(model.sample_posterior, np.stack([image, image]), n_samples=2, axes="SYX")
    assert stack.shape == (2, 2) + image.shape


def test_posterior_samples_are_prior_samples_of_their_pixel(posterior):
    _, samples, weights, draws = posterior
    # every draw is one of the K prior samples of its own pixel (resampling), up to float32 rounding
    distance = np.abs(draws[..., np.newaxis] - samples[np.newaxis]).min(axis=-1)
    assert distance.max() <= 1e-3 * np.abs(samples).max()
    assert np.all(draws >= samples.min(axis=-1) - 1e-3) and np.all(draws <= samples.max(axis=-1) + 1e-3)
    # and a sample with (numerically) zero posterior weight is never drawn
    picked = np.abs(draws[..., np.newaxis] - samples[np.newaxis]) <= 1e-3 * np.abs(samples).max()
    assert not np.any(picked & (weights[np.newaxis] < 1e-12) & (picked.sum(axis=-1, keepdims=True) == 1))


def test_mean_of_posterior_samples_approaches_the_mmse(trained, posterior):
    """Monte-Carlo check: the mean of n i.i.d. draws has variance var_post / n at every pixel."""
    model, *_ = trained
    image, samples, weights, draws = posterior
    n = draws.shape[0]
    mmse = np.sum(weights * samples, axis=-1)
    sd = np.sqrt(np.sum(weights * (samples - mmse[..., np.newaxis]) ** 2, axis=-1))
    np.testing.assert_allclose(_quiet(model.predict, image, "YX", n_tiles=(1, 1)), mmse, rtol=1e-5, atol=1e-3)
    error = draws.astype(np.float64).mean(axis=0) - mmse
    uncertain = sd > 0.1
    assert uncertain.mean() > 0.5  # the test below is about most pixels
    z = error[uncertain] / (sd[uncertain] / np.sqrt(n))
    # E[z^2] = 1 for independent draws from the right weights; 4096 pixels make its mean tight
    assert 0.75 < np.mean(z ** 2) < 1.25
    assert np.mean(np.abs(z) > 4) < 0.01
    assert np.all(np.abs(error[~uncertain]) <= 5 * 0.1 / np.sqrt(n) + 1e-2)
    # far from the MMSE of a single draw: averaging helps by about sqrt(n)
    single = np.sqrt(np.mean((draws[0] - mmse)[uncertain] ** 2))
    averaged = np.sqrt(np.mean(error[uncertain] ** 2))
    assert averaged < single / 5


def test_posterior_draws_of_stacked_images_are_independent(trained, posterior):
    model, *_ = trained
    image = posterior[0]
    draws = _quiet(model.sample_posterior, np.stack([image, image]), n_samples=4, axes="SYX", n_tiles=(1, 1))
    # same noisy image twice: the draws are independent given x, so they (almost surely) differ
    assert not np.array_equal(draws[:, 0], draws[:, 1])


@pytest.mark.parametrize("n_samples", [0, -1, 2.5])
def test_invalid_number_of_posterior_samples_raises(trained, data, n_samples):
    model, *_ = trained
    with pytest.raises(ValueError, match="n_samples"):
        _quiet(model.sample_posterior, data.test[:32, :32], n_samples=n_samples)
