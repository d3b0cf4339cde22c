"""Test-time augmentation: the average of the predictions under the 8 rotations and flips in YX."""

import numpy as np
import pytest

from conftest import noisy as _noisy, small_histogram, TINY_3D, run, tiny

from pn2v_tf import PN2V, PN2VConfig
from pn2v_tf.data import _DIHEDRAL, _dihedral, undo_dihedral

K = 8


@pytest.fixture(scope="module")
def noise_model():
    return small_histogram()


@pytest.fixture(scope="module")
def model_2d(noise_model, tmp_path_factory):
    X = _noisy(np.random.default_rng(0), (2, 32, 32))
    model = PN2V(PN2VConfig(X, mode="pn2v", n_samples=K, **tiny(unet_n_first=4)), "tta",
                 basedir=str(tmp_path_factory.mktemp("models")), noise_model=noise_model)
    model.keras_model.save_weights(str(model.logdir / "weights_best.h5"))
    return model


@pytest.mark.parametrize("transform", range(8))
def test_undo_dihedral_inverts_each_transform(transform):
    stack = np.arange(2 * 3 * 3 * 5 * 2).reshape(2, 3, 3, 5, 2)  # (N, Z, Y, X, C), Y != X
    square = stack[:, :, :, :3]
    for n_dim, array in ((2, square[:, 0]), (3, square)):
        np.testing.assert_array_equal(undo_dihedral(_dihedral(array, transform, n_dim), transform, n_dim), array)
    np.testing.assert_array_equal(undo_dihedral(_dihedral(stack, transform, 3), transform, 3), stack)


def _symmetrise_kernels(keras_model):
    """Average every spatial kernel over the 8 rotations and flips: the network becomes equivariant."""
    for layer in keras_model.layers:
        kernel = getattr(layer, "kernel", None)
        if kernel is None or len(kernel.shape) != 4 or kernel.shape[0] != kernel.shape[1]:
            continue
        value = np.asarray(kernel.value)
        views = [np.rot90(np.flip(value, axis=1) if flip else value, k, axes=(0, 1)) for k, flip in _DIHEDRAL]
        kernel.assign(np.mean(views, axis=0))


def test_tta_of_an_equivariant_network_is_the_plain_prediction(noise_model):
    X = _noisy(np.random.default_rng(2), (2, 32, 32))
    model = PN2V(PN2VConfig(X, mode="pn2v", n_samples=K, **tiny(unet_n_first=4)), None, basedir=None,
                 noise_model=noise_model)
    _symmetrise_kernels(model.keras_model)
    image = _noisy(np.random.default_rng(3), (48, 40))  # sides are multiples of the block: no padding
    for estimator in ("mmse", "prior_mean"):
        plain = model.predict(image, estimator=estimator)
        np.testing.assert_allclose(model.predict(image, estimator=estimator, tta=True), plain, rtol=1e-5,
                                   atol=1e-5 * np.abs(plain).max())


def test_tta_is_equivariant_and_differs_from_the_plain_prediction(model_2d):
    image = _noisy(np.random.default_rng(4), (40, 40))
    augmented = model_2d.predict(image, tta=True)
    assert np.abs(augmented - model_2d.predict(image)).max() > 1e-3 * np.abs(augmented).max()
    rotated = model_2d.predict(np.rot90(image), tta=True)
    np.testing.assert_allclose(rotated, np.rot90(augmented), rtol=1e-5, atol=1e-5 * np.abs(augmented).max())
    flipped = model_2d.predict(image[:, ::-1], tta=True, n_tiles=(2, 1))
    np.testing.assert_allclose(flipped, augmented[:, ::-1], rtol=1e-5, atol=1e-5 * np.abs(augmented).max())


def test_tta_of_a_volume_rotates_in_yx_only(noise_model):
    X = _noisy(np.random.default_rng(5), (2, 8, 16, 16))
    model = PN2V(PN2VConfig(X, mode="pn2v", n_samples=K, **TINY_3D), None, basedir=None, noise_model=noise_model)
    volume = _noisy(np.random.default_rng(6), (8, 20, 20))
    augmented = model.predict(volume, axes="ZYX", tta=True)
    assert augmented.shape == volume.shape
    np.testing.assert_allclose(model.predict(np.rot90(volume, axes=(1, 2)), axes="ZYX", tta=True),
                               np.rot90(augmented, axes=(1, 2)), rtol=1e-5, atol=1e-5 * np.abs(augmented).max())


def test_tta_counts_the_tiles_of_every_view(model_2d):
    seen = []
    model_2d.predict(_noisy(np.random.default_rng(7), (2, 24, 40)), axes="SYX", n_tiles=(1, 2), tta=True,
                     progress=lambda done, total: seen.append((done, total)))
    assert seen[-1][0] == seen[-1][1] == len(seen) and len(seen) >= 2 * 8


def test_pn2v_predict_tta(model_2d, tmp_path, capsys):
    import tifffile

    image = _noisy(np.random.default_rng(8), (36, 44))
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "a.tif", image)
    code, _, err = run(["predict", "--model", model_2d.logdir, tmp_path / "in", "-o", tmp_path / "out", "--tta",
                        "--quiet"], capsys)
    assert code == 0, err
    want = model_2d.predict(image, tta=True)
    np.testing.assert_allclose(tifffile.imread(tmp_path / "out" / "a.tif"), want, rtol=1e-5,
                               atol=1e-5 * np.abs(want).max())
    code, _, err = run(["predict", "--model", model_2d.logdir, tmp_path / "in", "-o", tmp_path / "out2", "--tta",
                        "--estimator", "posterior"], capsys)
    assert code != 0 and "--tta averages mmse or prior_mean" in err
