"""Mixed precision: the U-Net body in bfloat16 (``unet_dtype_policy``, ``predict(..., dtype_policy=...)``,
the export's ``dtype_policy``), with the head, the noise model, the loss and the estimators in float32."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from pn2v_tf import PN2V, PN2VConfig  # noqa: E402
from pn2v_tf.engine import PredictionEngine  # noqa: E402
from conftest import TINY_3D, noisy, small_histogram, tiny  # noqa: E402

K = 16
TINY = tiny(seed=0, train_batch_size=4, train_n_val_patches=4)
BODY = ("down0_conv1", "down1_conv2", "up0_transpose", "up0_merge", "up0_conv2")
NOT_BODY = ("standardize", "head")


def _model(images, policy, base=TINY, name="mixed"):
    keras.utils.set_random_seed(0)
    # samples spread wide (untrained), so that the MMSE weighs them differently from their mean
    config = PN2VConfig(images, mode="pn2v", n_samples=K, samples_init_spread=1.0, unet_dtype_policy=policy,
                        **base)
    return PN2V(config, name, basedir=None, noise_model=small_histogram())


@pytest.fixture(scope="module")
def images():
    return noisy(np.random.default_rng(0), (3, 64, 64))


@pytest.fixture(scope="module")
def mixed(images):
    return _model(images, "mixed_bfloat16")


@pytest.fixture(scope="module")
def plain(images, mixed):
    """A float32 model with the mixed model's weights: the second path to the float32 result."""
    model = _model(images, "float32", name="plain")
    model.keras_model.set_weights(mixed.keras_model.get_weights())
    return model


def test_the_config_names_a_policy_it_does_not_know():
    config = PN2VConfig(noisy(np.random.default_rng(2), (1, 32, 32)), unet_dtype_policy="float16", **TINY)
    assert config.is_valid(return_invalid=True) == (False, ("unet_dtype_policy",))
    assert PN2VConfig(np.zeros((1, 32, 32), np.float32), **TINY).unet_dtype_policy == "float32"


def test_only_the_body_computes_in_bfloat16_and_every_weight_stays_float32(mixed):
    for name in BODY:
        assert mixed.keras_model.get_layer(name).compute_dtype == "bfloat16", name
    for name in NOT_BODY:
        assert mixed.keras_model.get_layer(name).compute_dtype == "float32", name
    assert {w.dtype for w in mixed.keras_model.weights} == {"float32"}


@pytest.mark.parametrize("estimator, largest", [("prior_mean", 0.01), ("mmse", 0.2)])
def test_bfloat16_prediction_is_near_the_float32_one_and_not_equal_to_it(mixed, plain, images, estimator, largest):
    """bfloat16 keeps 8 bits of each feature: the prior mean moves by about 1e-3 of the image's
    maximum; the MMSE, whose weights are steep in the samples, by as much on average and more at a few
    pixels where a sample's weight changes a lot."""
    exact = plain.predict(images[0], estimator=estimator)
    assert np.array_equal(mixed.predict(images[0], estimator=estimator, dtype_policy="float32"), exact)
    rounded = mixed.predict(images[0], estimator=estimator)
    assert rounded.dtype == np.float32
    difference = np.abs(rounded - exact) / np.abs(exact).max()
    assert 0 < difference.max() < largest
    assert np.sqrt(np.mean(difference ** 2)) < 0.005
    np.testing.assert_array_equal(plain.predict(images[0], estimator=estimator, dtype_policy="mixed_bfloat16"),
                                  rounded)


def test_a_body_of_another_policy_follows_the_weights_after_they_change(images):
    model = _model(images, "float32", name="changing")
    before = model.predict(images[0], dtype_policy="mixed_bfloat16")
    model.keras_model.set_weights([w * 1.5 for w in model.keras_model.get_weights()])
    after = model.predict(images[0], dtype_policy="mixed_bfloat16")
    fresh = PredictionEngine(model.keras_model, model.noise_model, dtype_policy="mixed_bfloat16")
    assert not np.allclose(before, after)
    np.testing.assert_allclose(after, fresh(images[0, ..., None])[..., 0], rtol=1e-5, atol=1e-5 * np.abs(after).max())


def test_a_policy_it_does_not_know_is_refused_by_name(plain, images):
    with pytest.raises(ValueError, match="dtype_policy must be one of"):
        plain.predict(images[0], dtype_policy="float16")


def test_training_in_mixed_precision_lowers_the_loss_and_keeps_float32_weights(images):
    model = _model(images, "mixed_bfloat16", base=tiny(TINY, train_learning_rate=4e-3), name="training")
    history = model.train(images, images[:1], epochs=4, steps_per_epoch=10, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert {w.dtype for w in model.keras_model.weights} == {"float32"}


def test_a_3d_body_runs_in_bfloat16(images):
    volumes = noisy(np.random.default_rng(1), (2, 8, 32, 32))
    mixed = _model(volumes, "mixed_bfloat16", base=TINY_3D, name="mixed_3d")
    exact = mixed.predict(volumes[0], axes="ZYX", dtype_policy="float32")
    rounded = mixed.predict(volumes[0], axes="ZYX")
    assert mixed.keras_model.get_layer("down0_conv1").compute_dtype == "bfloat16"
    assert 0 < np.abs(rounded - exact).max() / np.abs(exact).max() < 0.05


def test_the_export_is_float32_unless_asked_and_then_equals_predict(mixed, images, tmp_path):
    image = images[:1, ..., None]
    for policy in ("float32", "mixed_bfloat16"):
        path = mixed.export_SavedModel(tmp_path / policy, dtype_policy=policy)
        exported = tf.saved_model.load(str(path)).signatures["serving_default"]
        out = list(exported(tf.constant(image)).values())[0].numpy()[0, ..., 0]
        expected = mixed.predict(images[0], dtype_policy=policy)
        np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    with pytest.raises(ValueError, match="dtype_policy must be one of"):
        mixed.export_SavedModel(tmp_path / "bad", dtype_policy="float16")


def test_the_command_line_trains_and_predicts_in_the_policy_it_is_given(tmp_path, capsys):
    import json

    import tifffile

    from pn2v_tf.datasets import make_synthetic_data
    from conftest import error_line, run, train_options

    data = make_synthetic_data(seed=4, shape=(64, 64), n_train=2, calibration_shape=(48, 48), calibration_frames=20)
    tifffile.imwrite(tmp_path / "calibration.tif", data.calibration, photometric="minisblack")
    (tmp_path / "noisy").mkdir()
    for i, image in enumerate(data.train):
        tifffile.imwrite(tmp_path / "noisy" / f"train_{i}.tif", image)
    tifffile.imwrite(tmp_path / "test.tif", data.test)
    histogram = tmp_path / "histogram.npz"
    options = train_options(tiny(train_batch_size=4, seed=0)) + ["--n-samples", "16", "--epochs", "1",
                                                                 "--steps-per-epoch", "2", "--quiet"]
    assert run(["noise-model", "--calibration", tmp_path / "calibration.tif", "-o", histogram, "--bins", "64",
                "--value-range", "40", "600", "--quiet"], capsys)[0] == 0
    folder = tmp_path / "mixed"
    code, _, err = run(["train", tmp_path / "noisy", "--noise-model", histogram, "--model", folder,
                        "--dtype-policy", "mixed_bfloat16", *options], capsys)
    assert code == 0, err
    assert json.loads((folder / "config.json").read_text())["unet_dtype_policy"] == "mixed_bfloat16"
    model = PN2V(None, folder.name, basedir=folder.parent)
    for policy in ("float32", "mixed_bfloat16"):
        code, _, err = run(["predict", tmp_path / "test.tif", "--model", folder, "-o", tmp_path / policy,
                            "--dtype-policy", policy, "--quiet"], capsys)
        assert code == 0, err
        np.testing.assert_array_equal(tifffile.imread(tmp_path / policy / "test.tif"),
                                      model.predict(data.test, dtype_policy=policy))
    code, _, err = run(["train", "--model", folder, "--resume", "--dtype-policy", "float32"], capsys)
    assert code == 2 and "leave out --dtype-policy" in error_line(err, "train")
