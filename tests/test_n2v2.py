"""N2V2 (max-blur pooling, no top-level skip connection, median replacement) and structN2V
(structuring elements around the blind spots): mechanics checked against independent computations,
and the options through config, training, prediction, export and the command line."""

import numpy as np
import pytest

from conftest import noisy as _noisy, small_histogram, TINY_3D, run, tiny

from pn2v_tf import PN2V, PN2VConfig
from pn2v_tf.data import MaskedPatches, random_dihedral
from pn2v_tf.masking import check_struct_mask, mask_patches, neighbourhood_medians, replacement_values
from pn2v_tf.nets import MaxBlurPool, receptive_radius

K = 8
LINE_X = [[0, 1, 1, 1, 1, 1, 0]]  # hides 2 pixels left and right of each blind spot


@pytest.fixture(scope="module")
def noise_model():
    return small_histogram()


# -- max-blur pooling ------------------------------------------------------------------------------

def _max_blur_pool_by_hand(image):
    """2x2 max at stride 1 (windows [i, i+1] x [j, j+1], clipped at the end), then along each axis the
    mean of pairs (i, i+1) (the last one alone) and the mean of pairs (2i, 2i+1) of that: the blur
    [1, 2, 1] / 4 at every second position. Element by element."""
    ny, nx = image.shape
    maxima = np.array([[image[i:i + 2, j:j + 2].max() for j in range(nx)] for i in range(ny)])

    def blur_rows(a):
        pairs = np.array([[a[i:i + 2, j].mean() for j in range(a.shape[1])] for i in range(a.shape[0])])
        return np.array([[pairs[2 * i:2 * i + 2, j].mean() for j in range(a.shape[1])]
                         for i in range(a.shape[0] // 2)])

    return blur_rows(blur_rows(maxima).T).T


def test_max_blur_pool_equals_the_hand_computed_result():
    image = np.array([[0, 1, 2, 3, 4, 5], [6, 0, 1, 2, 3, 4], [5, 6, 0, 1, 2, 3], [4, 5, 6, 0, 1, 2]], np.float32)
    out = np.asarray(MaxBlurPool((2, 2))(image[None, :, :, None]))[0, :, :, 0]
    # maxima rows 0..2 of columns 0..2: (6, 2, 3), (6, 6, 2), (6, 6, 6); blurred down: (6, 5, 3.25); across:
    assert out[0, 0] == pytest.approx((6 + 2 * 5 + 3.25) / 4)
    np.testing.assert_allclose(out, _max_blur_pool_by_hand(image), rtol=1e-6)
    image = np.random.default_rng(0).normal(size=(8, 10)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(MaxBlurPool((2, 2))(image[None, :, :, None]))[0, :, :, 0],
                               _max_blur_pool_by_hand(image), rtol=1e-5, atol=1e-6)


def test_max_blur_pool_in_3d_leaves_an_unpooled_axis_alone_and_pools_each_channel():
    volume = np.random.default_rng(1).normal(size=(1, 3, 8, 6, 2)).astype(np.float32)
    out = np.asarray(MaxBlurPool((1, 2, 2))(volume))
    assert out.shape == (1, 3, 4, 3, 2)
    for z in range(3):
        for c in range(2):
            np.testing.assert_allclose(out[0, z, :, :, c], _max_blur_pool_by_hand(volume[0, z, :, :, c]),
                                       rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("upsampling", ["transpose", "nearest"])
def test_receptive_radius_covers_what_a_blurpool_network_sees(upsampling):
    """Impulses far from the borders, at every position of the pooling grid, change the output only
    within the stated radius, and further than a max-pooling network's radius."""
    config = PN2VConfig(_noisy(np.random.default_rng(2), (1, 32, 32)), mode="n2v", blurpool=True,
                        unet_upsampling=upsampling, **tiny(unet_n_depth=3, seed=0))
    model = PN2V(config, None, basedir=None)
    radius = receptive_radius(3, 3, 2, blurpool=True, upsampling=upsampling)
    assert radius > receptive_radius(3, 3, 2)
    base = np.asarray(model.keras_model(np.zeros((1, 128, 128, 1), np.float32)))[0, ..., 0]
    reach = 0
    for at in range(60, 64):
        image = np.zeros((1, 128, 128, 1), np.float32)
        image[0, at, at, 0] = 100.0
        changed = np.argwhere(np.abs(np.asarray(model.keras_model(image))[0, ..., 0] - base) > 1e-6)
        reach = max(reach, np.abs(changed - at).max())
    assert receptive_radius(3, 3, 2) < reach <= radius


# -- median replacement ----------------------------------------------------------------------------

def test_median_replacement_never_uses_the_pixel_itself():
    """A patch of zeros with a huge value at each masked pixel: the median of its neighbours is 0,
    which it could not be if the pixel itself were among them (nor if mirroring brought it back)."""
    rng = np.random.default_rng(3)
    patches = np.zeros((4, 6, 7), np.float32)
    coords = np.array([[[0, 0], [5, 6], [1, 1], [2, 3]]] * 4, np.int32)
    for b in range(4):
        patches[b, coords[b, :, 0], coords[b, :, 1]] = 1e6 + rng.uniform(size=4)
    medians = neighbourhood_medians(patches, coords, 2)
    assert np.all(medians < 1e6)  # the other huge pixels are a minority of every neighbourhood


def test_median_replacement_equals_numpy_median_of_the_neighbours():
    rng = np.random.default_rng(4)
    patches = rng.normal(size=(3, 9, 8)).astype(np.float32)
    coords = np.stack([rng.integers(2, 7, (3, 5)), rng.integers(2, 6, (3, 5))], axis=-1).astype(np.int32)
    medians = neighbourhood_medians(patches, coords, 2)
    for b in range(3):
        for m, (y, x) in enumerate(coords[b]):
            window = patches[b, y - 2:y + 3, x - 2:x + 3].ravel()
            want = np.median(np.delete(window, 12))  # all 24 neighbours: inside the patch, no mirroring
            assert medians[b, m] == pytest.approx(want, rel=1e-6)


def test_median_manipulator_in_mask_patches_and_3d():
    rng = np.random.default_rng(5)
    volumes = rng.normal(size=(2, 6, 10, 10)).astype(np.float32)
    masked, coords, values = mask_patches(np.random.default_rng(6), volumes, 5.0, 1, manipulator="median")
    batch = np.arange(2)[:, None]
    at = (batch, coords[..., 0], coords[..., 1], coords[..., 2])
    np.testing.assert_array_equal(values, volumes[at])
    np.testing.assert_allclose(masked[at], neighbourhood_medians(volumes, coords, 1))
    changed = masked != volumes
    assert changed.sum() == coords.shape[0] * coords.shape[1]


def test_unknown_manipulator_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="manipulator must be one of 'uniform_withoutCP', 'median', 'uniform_withCP'"):
        mask_patches(np.random.default_rng(0), np.zeros((1, 16, 16)), 3.0, 2, manipulator="gaussian")


def test_command_line_offers_every_manipulator():
    from pn2v_tf.cli import MANIPULATOR_CHOICES
    from pn2v_tf.masking import MANIPULATORS

    assert MANIPULATOR_CHOICES == MANIPULATORS


def _interior_case(seed):
    """Patches of distinct values and masked pixels at least 2 from the borders (no mirroring)."""
    rng = np.random.default_rng(seed)
    patches = rng.permutation(4 * 12 * 11).reshape(4, 12, 11).astype(np.float32)
    coords = np.stack([rng.integers(2, 10, (4, 30)), rng.integers(2, 9, (4, 30))], axis=-1).astype(np.int32)
    return patches, coords


def _window(patches, b, y, x, radius=2):
    return patches[b, y - radius:y + radius + 1, x - radius:x + radius + 1]


@pytest.mark.parametrize("manipulator", ["uniform_withCP", "normal_withoutCP", "mean", "normal_additive",
                                         "normal_fitted", "identity"])
def test_n2v_manipulators(manipulator):
    patches, coords = _interior_case(15)
    values = replacement_values(np.random.default_rng(16), patches, coords, 2, manipulator)
    own = patches[np.arange(4)[:, None], coords[..., 0], coords[..., 1]]
    windows = [[_window(patches, b, y, x) for y, x in coords[b]] for b in range(4)]
    if manipulator == "uniform_withCP":  # from the 5x5 window, sometimes the pixel itself
        assert all(values[b, m] in windows[b][m] for b in range(4) for m in range(30))
        many = replacement_values(np.random.default_rng(17), np.repeat(patches, 50, 0), np.repeat(coords, 50, 0), 2,
                                  manipulator)
        assert 0.5 / 25 < np.mean(many == np.repeat(own, 50, 0)) < 2 / 25
    elif manipulator == "normal_withoutCP":  # another pixel, mostly within a few sigma
        assert np.all(values != own) and np.all(np.isin(values, patches))
    elif manipulator in ("mean", "normal_fitted"):
        neighbours = [[np.delete(w.ravel(), 12) for w in row] for row in windows]
        means = np.array([[n.mean() for n in row] for row in neighbours])
        if manipulator == "mean":
            np.testing.assert_allclose(values, means, rtol=1e-6)
        else:
            stds = np.array([[n.std() for n in row] for row in neighbours])
            z = (values - means) / stds
            assert abs(z.mean()) < 0.5 and 0.6 < z.std() < 1.5
    elif manipulator == "normal_additive":
        assert 0.5 < np.std(values - own) < 4
    else:
        np.testing.assert_array_equal(values, own)


# -- structuring element ---------------------------------------------------------------------------

def _zone(coords, mask, shape):
    """The pixels (inside the patch) that the element centred on each coordinate covers, centre excluded."""
    centre = np.array(mask.shape) // 2
    zone = set()
    for point in coords:
        for offset in np.argwhere(mask) - centre:
            where = tuple(np.asarray(point) + offset)
            if any(offset) and all(0 <= w < s for w, s in zip(where, shape)):
                zone.add(where)
    return zone


@pytest.mark.parametrize("struct_mask, shape", [(LINE_X, (24, 20)), ([[0, 1, 0], [1, 1, 1], [0, 1, 0]], (16, 16)),
                                                 ([[[1]], [[1]], [[1]]], (6, 10, 10))])
@pytest.mark.parametrize("manipulator", ["uniform_withoutCP", "median"])
def test_struct_mask_is_applied_at_every_blind_spot_and_nowhere_else(struct_mask, shape, manipulator):
    rng = np.random.default_rng(7)
    patches = rng.normal(size=(3,) + shape).astype(np.float32)  # continuous: a replaced value differs
    masked, coords, _ = mask_patches(np.random.default_rng(8), patches, 4.0, 2, manipulator, struct_mask)
    mask = check_struct_mask(struct_mask, len(shape))
    for b in range(3):
        spots = {tuple(c) for c in coords[b]}
        zone = _zone(coords[b], mask, shape)
        changed = {tuple(p) for p in np.argwhere(masked[b] != patches[b])}
        assert changed == zone | spots
        assert all(masked[b][p] in patches[b] for p in zone)  # values from the patch itself
        for spot in spots - zone:  # replaced from outside its own element
            own = _zone([spot], mask, shape)
            candidates = [patches[b][q] for q in np.ndindex(shape)
                          if max(abs(np.subtract(q, spot))) <= 2 and q != spot and q not in own]
            if manipulator == "uniform_withoutCP" and min(spot) >= 2 and all(s < n - 2 for s, n in zip(spot, shape)):
                assert masked[b][spot] in candidates
            if manipulator == "median" and min(spot) >= 2 and all(s < n - 2 for s, n in zip(spot, shape)):
                assert masked[b][spot] == pytest.approx(np.median(candidates), rel=1e-6)


@pytest.mark.parametrize("bad, message", [
    ([[1, 1]], "odd side"),
    ([1, 1, 1], "2-D nested list of 0 and 1"),
    ([[0, 2, 0]], "2-D nested list of 0 and 1"),
    ([[1, 1, 1], [1]], "nested list of 0 and 1"),
])
def test_bad_struct_masks_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        mask_patches(np.random.default_rng(0), np.zeros((1, 16, 16)), 3.0, 2, struct_mask=bad)


def test_struct_mask_that_hides_the_whole_neighbourhood_is_refused():
    with pytest.raises(ValueError, match="hides the whole neighbourhood of radius 1"):
        mask_patches(np.random.default_rng(0), np.zeros((1, 16, 16)), 3.0, 1, struct_mask=np.ones((3, 3)))


def test_augmentation_keeps_the_struct_mask_direction():
    """Noise correlated along X stays along X: only transforms that leave the element unchanged."""
    rng = np.random.default_rng(9)
    patches = np.zeros((400, 8, 8), np.float32)
    patches[:, 3, :] = 1.0  # a row
    (out,) = random_dihedral(rng, patches, keep=np.array(LINE_X))
    assert np.all(out.sum(axis=2).max(axis=1) == 8)  # still a full row in every patch
    assert len({out[i].tobytes() for i in range(len(out))}) == 2  # row 3 or, flipped, row 4
    generator = MaskedPatches(np.zeros((1, 32, 32), np.float32) + np.arange(32)[:, None], (16, 16), 4, 1,
                              struct_mask=LINE_X, seed=0)
    assert generator.struct_mask.shape == (1, 7)


# -- the options in the model ------------------------------------------------------------------------

def test_config_stores_and_validates_the_options():
    X = _noisy(np.random.default_rng(2), (1, 32, 32))
    config = PN2VConfig(X, mode="n2v", blurpool=True, skip_skipone=True, n2v_manipulator="median",
                        structN2Vmask=np.array(LINE_X), **tiny())
    assert config.is_valid() and config.structN2Vmask == LINE_X
    defaults = PN2VConfig(X, mode="n2v", **tiny())
    assert (defaults.blurpool, defaults.skip_skipone, defaults.n2v_manipulator, defaults.structN2Vmask) == \
        (False, False, "uniform_withoutCP", None)
    for keywords, name in [(dict(n2v_manipulator="average"), "n2v_manipulator"), (dict(blurpool=1), "blurpool"),
                           (dict(structN2Vmask=[[1, 1]]), "structN2Vmask"),
                           (dict(structN2Vmask=[[1] * 41]), "structN2Vmask"),  # wider than the patch
                           (dict(skip_skipone="yes"), "skip_skipone")]:
        assert PN2VConfig(X, mode="n2v", **tiny(), **keywords).is_valid(return_invalid=True)[1] == (name,)
    assert PN2VConfig(X, mode="care", structN2Vmask=LINE_X, **tiny()).is_valid(return_invalid=True)[1] == \
        ("structN2Vmask",)


def test_skip_skipone_removes_exactly_the_top_skip_connection():
    X = _noisy(np.random.default_rng(2), (1, 32, 32))
    for upsampling in ("transpose", "nearest"):
        configs = {skip: PN2VConfig(X, mode="n2v", skip_skipone=skip, unet_upsampling=upsampling, **tiny())
                   for skip in (False, True)}
        names = {skip: {layer.name for layer in PN2V(config, None, basedir=None).keras_model.layers}
                 for skip, config in configs.items()}
        assert names[False] - names[True] == {"up0_merge"}
        assert names[True] - names[False] == set()


def test_skip_skipone_goes_up_by_nearest_upsampling_unless_told_otherwise():
    X = _noisy(np.random.default_rng(2), (1, 32, 32))
    assert PN2VConfig(X, mode="n2v", **tiny()).unet_upsampling == "transpose"
    assert PN2VConfig(X, mode="n2v", skip_skipone=True, **tiny()).unet_upsampling == "nearest"
    kept = PN2VConfig(X, mode="n2v", skip_skipone=True, unet_upsampling="transpose", **tiny())
    assert kept.unet_upsampling == "transpose"
    stored = {k: v for k, v in vars(PN2VConfig(X, mode="n2v", **tiny())).items() if k != "unet_upsampling"}
    assert PN2VConfig(None, **stored).unet_upsampling == "transpose"  # a config.json from before the option


@pytest.mark.parametrize("mode", ["n2v", "pn2v", "care"])
def test_n2v2_models_train_reload_and_tile_exactly_in_2d(mode, noise_model, tmp_path):
    rng = np.random.default_rng(10)
    X = _noisy(rng, (2, 48, 48))
    n2v2 = dict(blurpool=True, skip_skipone=True)
    if mode != "care":
        n2v2.update(n2v_manipulator="median", structN2Vmask=LINE_X)
    config = PN2VConfig(X, mode=mode, n_samples=K, train_batch_size=2, train_n_val_patches=2, seed=0,
                        **tiny(unet_n_first=4, unet_n_depth=3), **n2v2)
    model = PN2V(config, "n2v2", basedir=str(tmp_path), noise_model=noise_model if mode == "pn2v" else None)
    targets = dict(Y=X + 1, validation_Y=X[:1] + 1) if mode == "care" else {}
    history = model.train(X, X[:1], epochs=1, steps_per_epoch=2, verbose=0, **targets)
    assert np.all(np.isfinite(history.history["loss"]))
    image = _noisy(rng, (70, 54))
    whole = model.predict(image, n_tiles=(1, 1))
    np.testing.assert_allclose(model.predict(image, n_tiles=(3, 2)), whole, rtol=1e-5, atol=1e-5 * np.abs(whole).max())
    again = PN2V(None, "n2v2", basedir=str(tmp_path))
    assert (again.config.blurpool, again.config.skip_skipone) == (True, True)
    if mode != "care":
        assert (again.config.n2v_manipulator, again.config.structN2Vmask) == ("median", LINE_X)
    np.testing.assert_allclose(again.predict(image), whole, rtol=1e-5, atol=1e-5 * np.abs(whole).max())


def test_n2v2_struct_pn2v_in_3d_tiles_exactly_and_exports(noise_model, tmp_path):
    import tensorflow as tf

    rng = np.random.default_rng(11)
    X = _noisy(rng, (2, 8, 32, 32))
    config = PN2VConfig(X, mode="pn2v", n_samples=K, blurpool=True, skip_skipone=True, n2v_manipulator="median",
                        structN2Vmask=[[[1, 1, 1]]], **{**TINY_3D, "unet_pool": (2, 2, 2)})
    model = PN2V(config, "n2v2_3d", basedir=str(tmp_path), noise_model=noise_model)
    model.train(X, X[:1], epochs=1, steps_per_epoch=2, verbose=0)
    volume = _noisy(rng, (10, 36, 28))
    whole = model.predict(volume, axes="ZYX", n_tiles=(1, 1, 1))
    np.testing.assert_allclose(model.predict(volume, axes="ZYX", n_tiles=(2, 2, 1)), whole, rtol=1e-5,
                               atol=1e-5 * np.abs(whole).max())
    path = model.export_SavedModel(tmp_path / "export")
    exported = tf.saved_model.load(str(path)).signatures["serving_default"]
    out = exported(input=tf.constant(volume[None, ..., None]))["output"].numpy()
    np.testing.assert_allclose(out[0, ..., 0], whole, rtol=1e-5, atol=1e-5 * np.abs(whole).max())


def test_n2v2_2d_export_equals_predict(tmp_path):
    import tensorflow as tf

    X = _noisy(np.random.default_rng(12), (2, 32, 32))
    model = PN2V(PN2VConfig(X, mode="n2v", blurpool=True, skip_skipone=True, **tiny(unet_n_depth=3, seed=0)), None,
                 basedir=None)
    image = _noisy(np.random.default_rng(13), (45, 38))
    path = model.export_SavedModel(tmp_path / "export")
    out = tf.saved_model.load(str(path)).signatures["serving_default"](input=tf.constant(image[None, ..., None]))
    want = model.predict(image)
    np.testing.assert_allclose(out["output"].numpy()[0, ..., 0], want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_pn2v_train_with_n2v2_and_struct_options(tmp_path, capsys):
    import tifffile

    (tmp_path / "train").mkdir()
    tifffile.imwrite(tmp_path / "train" / "a.tif", _noisy(np.random.default_rng(14), (48, 48)))
    argv = ["train", tmp_path / "train", "--mode", "n2v", "--model", tmp_path / "cli",
            "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "2", "--patch-size", "16", "--unet-depth",
            "2", "--unet-n-first", "4", "--n2v2", "--struct-mask", "[[1, 1, 1, 1, 1]]", "--quiet"]
    code, _, err = run(argv, capsys)
    assert code == 0, err
    config = PN2V(None, "cli", basedir=str(tmp_path)).config
    assert (config.blurpool, config.skip_skipone, config.n2v_manipulator) == (True, True, "median")
    assert config.structN2Vmask == [[1, 1, 1, 1, 1]]
    code, _, err = run(argv[:5] + [tmp_path / "bad"] + argv[6:-3] + ["--struct-mask", "[[1, 1]]"], capsys)
    assert code != 0 and "--struct-mask" in err and "odd side" in err
