"""PN2V keeps what a user has: stored noise models, finite weights, caches that follow changes."""

import os
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from pn2v_tf import PN2V, HistogramNoiseModel, PN2VConfig  # noqa: E402
from conftest import SMALL_NET, tiny  # noqa: E402

TINY = tiny(SMALL_NET, n_samples=8)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    clean = np.repeat(np.linspace(10, 90, 32)[None, :], 32, axis=0)
    return (clean[None] + rng.normal(0, 5, (3, 32, 32))).astype(np.float32)


def gaussian_noise_model(sigma, seed=0):
    rng = np.random.default_rng(seed)
    signal = rng.uniform(0, 100, (1, 64, 64))
    return HistogramNoiseModel.from_pairs(signal, signal + rng.normal(0, sigma, (20, 64, 64)),
                                          bins=64, value_range=(-40, 140))


def test_loading_with_another_noise_model_uses_it_but_keeps_the_stored_file(tmp_path, images):
    PN2V(PN2VConfig(images, **TINY), "m", basedir=str(tmp_path), noise_model=gaussian_noise_model(5))
    stored = (tmp_path / "m" / "noise_model.npz").read_bytes()
    other = gaussian_noise_model(15, seed=1)
    with pytest.warns(UserWarning):
        loaded = PN2V(None, "m", basedir=str(tmp_path), noise_model=other)
    assert loaded.noise_model is other
    assert (tmp_path / "m" / "noise_model.npz").read_bytes() == stored


def test_changing_the_noise_model_changes_the_mmse(images):
    model = PN2V(PN2VConfig(images, **TINY), "m", basedir=None, noise_model=gaussian_noise_model(2))
    for w in model.keras_model.weights:
        w.assign(np.random.default_rng(1).normal(0, 0.5, w.shape).astype("float32"))
    before = model.predict(images[0])
    model.noise_model = gaussian_noise_model(30, seed=2)
    after = model.predict(images[0])
    fresh = PN2V(PN2VConfig(images, **TINY), "m2", basedir=None, noise_model=model.noise_model)
    fresh.keras_model.set_weights(model.keras_model.get_weights())
    assert not np.allclose(before, after)
    np.testing.assert_array_equal(after, fresh.predict(images[0]))


def test_diverging_training_raises_and_saves_no_broken_weights(tmp_path, images):
    keras.utils.set_random_seed(0)
    config = PN2VConfig(images[:2], mode="n2v", **{**TINY, "train_learning_rate": 1e25, "train_reduce_lr": None})
    model = PN2V(config, "m", basedir=str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(FloatingPointError, match="diverged"):
            model.train(images[:2], images[2:], epochs=3, steps_per_epoch=3)
    assert not (tmp_path / "m" / "weights_last.h5").exists()
    assert not (tmp_path / "m" / "weights_now.h5").exists()
    if (tmp_path / "m" / "weights_best.h5").exists():  # a finite first epoch was kept and reloaded
        assert all(np.all(np.isfinite(w)) for w in model.keras_model.get_weights())


def test_overwriting_a_model_removes_its_old_weights_and_noise_model(tmp_path, images):
    folder = tmp_path / "m"
    folder.mkdir()
    for name in ("config.json", "weights_best.h5", "weights_last.h5", "noise_model.npz"):
        (folder / name).write_text("old")
    PN2V(PN2VConfig(images, mode="n2v", **TINY), "m", basedir=str(tmp_path), overwrite=True)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json"]


@pytest.mark.parametrize("n_tiles", [2, "2", (2,), (0, 2)])
def test_n_tiles_of_the_wrong_kind_raise_value_error(images, n_tiles):
    model = PN2V(PN2VConfig(images, mode="n2v", **TINY), "m", basedir=None)
    with pytest.raises(ValueError, match="n_tiles"):
        model.predict(images[0], n_tiles=n_tiles)


def test_posterior_seed_none_draws_and_bad_seeds_raise(images):
    model = PN2V(PN2VConfig(images, **TINY), "m", basedir=None, noise_model=gaussian_noise_model(5))
    assert model.sample_posterior(images[0], n_samples=2, seed=None).shape == (2, 32, 32)
    for seed in (-1, 2 ** 31, 1.5):
        with pytest.raises(ValueError, match="seed"):
            model.sample_posterior(images[0], n_samples=2, seed=seed)
