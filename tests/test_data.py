"""Tests of pn2v_tf.data: random crops, dihedral augmentation and the Keras PyDataset classes."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from pn2v_tf.data import MaskedPatches, SupervisedPatches, random_dihedral, random_patches  # noqa: E402
from pn2v_tf.masking import n_masked  # noqa: E402


def _unique_images(n_images, shape):
    """Images whose values are all different (exact in float32): a value tells where it came from."""
    return np.arange(n_images * shape[0] * shape[1], dtype=np.float32).reshape(n_images, *shape)


def _locate(patch, images):
    """(image, y0, x0) of the crop of ``images`` (unique values) that ``patch`` starts with."""
    image, y0, x0 = np.unravel_index(int(patch[0, 0]), images.shape)
    return int(image), int(y0), int(x0)


def _reference_transforms(patch):
    """The 8 elements of the dihedral group applied to a 2-D patch."""
    rotations = [np.rot90(patch, k) for k in range(4)]
    return rotations + [r[:, ::-1] for r in rotations]


def _which_transform(out, patch):
    matches = [i for i, ref in enumerate(_reference_transforms(patch))
               if ref.shape == out.shape and np.array_equal(ref, out)]
    assert len(matches) == 1, "output is not exactly one dihedral transform of the input"
    return matches[0]


# -- random_patches ------------------------------------------------------------------------------

def test_random_patches_are_crops_and_positions_uniform():
    images = _unique_images(3, (6, 7))
    n = 6000
    patches = random_patches(np.random.default_rng(0), images, (4, 4), n)
    assert patches.shape == (n, 4, 4) and patches.dtype == np.float32
    counts = np.zeros((3, 3, 4))                    # 3 images x 3 x 4 valid positions
    for patch in patches:
        image, y0, x0 = _locate(patch, images)
        np.testing.assert_array_equal(patch, images[image, y0:y0 + 4, x0:x0 + 4])
        counts[image, y0, x0] += 1
    expected = n / counts.size                      # ~167 each
    assert np.all(np.abs(counts - expected) < 0.35 * expected)


def test_random_patches_list_of_different_sizes_and_channel_axis():
    images = [np.full((8, 10), 1, np.float32), np.full((20, 9), 2, np.float32)[..., None]]
    patches = random_patches(np.random.default_rng(1), images, (8, 9), 400)
    assert patches.shape == (400, 8, 9)
    assert set(np.unique(patches)) == {1.0, 2.0}
    # each patch is cut from one image only, images chosen uniformly
    per_patch = patches.reshape(400, -1)
    assert np.all(per_patch.min(axis=1) == per_patch.max(axis=1))
    assert 150 < np.sum(per_patch[:, 0] == 1) < 250
    stack = random_patches(np.random.default_rng(1), _unique_images(2, (9, 9))[..., None], (3, 3), 5)
    assert stack.shape == (5, 3, 3)


def test_random_patches_reproducible():
    images = np.random.default_rng(0).normal(size=(4, 32, 32)).astype(np.float32)
    a = random_patches(np.random.default_rng(5), images, (8, 8), 10)
    b = random_patches(np.random.default_rng(5), images, (8, 8), 10)
    np.testing.assert_array_equal(a, b)


def test_random_patches_too_large_names_sizes():
    with pytest.raises(ValueError, match=r"\(16, 16\).*\(12, 40\)"):
        random_patches(np.random.default_rng(0), np.zeros((2, 12, 40), np.float32), (16, 16), 4)
    images = [np.zeros((40, 40), np.float32), np.zeros((20, 10), np.float32)]
    with pytest.raises(ValueError, match=r"image 1.*\(20, 10\)"):
        random_patches(np.random.default_rng(0), images, (16, 16), 4)


def test_random_patches_rejects_bad_input():
    with pytest.raises(ValueError, match="axes"):
        random_patches(np.random.default_rng(0), np.zeros((32, 32), np.float32), (8, 8), 4)
    with pytest.raises(ValueError, match="axes"):
        random_patches(np.random.default_rng(0), np.zeros((2, 32, 32, 3, 2), np.float32), (8, 8), 4)
    with pytest.raises(ValueError, match="empty"):
        random_patches(np.random.default_rng(0), [], (8, 8), 4)


# -- random_dihedral -----------------------------------------------------------------------------

def test_dihedral_transforms_distinct_and_consistent():
    patch = np.arange(25, dtype=np.float32).reshape(5, 5)
    target = patch ** 2 - 3                              # different patch, same transform expected
    assert len({ref.tobytes() for ref in _reference_transforms(patch)}) == 8
    n = 400
    inputs, targets = np.tile(patch, (n, 1, 1)), np.tile(target, (n, 1, 1))
    out_inputs, out_targets = random_dihedral(np.random.default_rng(0), inputs, targets)
    np.testing.assert_array_equal(inputs, np.tile(patch, (n, 1, 1)))      # inputs untouched
    used = []
    for out_input, out_target in zip(out_inputs, out_targets):
        k = _which_transform(out_input, patch)
        assert _which_transform(out_target, target) == k
        used.append(k)
    counts = np.bincount(used, minlength=8)
    assert np.all(counts > 20)                          # all 8 transforms occur (~50 each)


def test_dihedral_non_square_keeps_shape():
    patch = np.arange(12, dtype=np.float32).reshape(3, 4)
    n = 200
    (out,) = random_dihedral(np.random.default_rng(1), np.tile(patch, (n, 1, 1)))
    assert out.shape == (n, 3, 4)
    used = {_which_transform(o, patch) for o in out}
    assert used == {0, 2, 4, 6}                         # identity, 180 degrees and the two flips
    assert len({o.tobytes() for o in out}) == 4


def test_dihedral_carries_trailing_axes_and_dtypes():
    a = np.random.default_rng(0).normal(size=(10, 6, 6, 1)).astype(np.float32)
    b = np.arange(360).reshape(10, 6, 6, 1)
    out_a, out_b = random_dihedral(np.random.default_rng(2), a, b)
    assert out_a.dtype == np.float32 and out_b.dtype == b.dtype
    for i in range(10):
        assert _which_transform(out_a[i, ..., 0], a[i, ..., 0]) == _which_transform(out_b[i, ..., 0],
                                                                                   b[i, ..., 0])


def test_dihedral_rejects_mismatched_stacks():
    with pytest.raises(ValueError, match="same shape"):
        random_dihedral(np.random.default_rng(0), np.zeros((2, 4, 4)), np.zeros((2, 4, 5)))
    with pytest.raises(ValueError):
        random_dihedral(np.random.default_rng(0))


# -- MaskedPatches -------------------------------------------------------------------------------

def _noisy_images(n=3, shape=(48, 40), seed=0):
    return np.random.default_rng(seed).normal(100, 10, size=(n, *shape)).astype(np.float32)


def test_masked_patches_batch_contract():
    ds = MaskedPatches(_noisy_images(), (32, 16), batch_size=5, steps_per_epoch=7, seed=1)
    assert len(ds) == 7
    inputs, values = ds[0]
    m = n_masked((32, 16), 3.0)
    assert set(inputs) == {"image", "coords"}
    assert inputs["image"].shape == (5, 32, 16, 1) and inputs["image"].dtype == np.float32
    assert inputs["coords"].shape == (5, m, 1, 2) and inputs["coords"].dtype == np.int32
    assert values.shape == (5, m, 1) and values.dtype == np.float32
    with pytest.raises(IndexError):
        ds[7]


def test_masked_patches_restore_to_crops():
    # without augmentation, putting the returned values back at the coordinates gives exact crops
    images = _unique_images(2, (40, 30))
    ds = MaskedPatches(images, (16, 16), batch_size=8, steps_per_epoch=3, perc_pix=5.0, radius=2,
                       augment=False, seed=3)
    for index in range(3):
        inputs, values = ds[index]
        masked, coords = inputs["image"][..., 0], inputs["coords"][:, :, 0]
        batch = np.arange(8)[:, None]
        restored = masked.copy()
        restored[batch, coords[..., 0], coords[..., 1]] = values[..., 0]
        for patch in restored:
            image, y0, x0 = _locate(patch, images)
            np.testing.assert_array_equal(patch, images[image, y0:y0 + 16, x0:x0 + 16])
        changed = masked != restored
        assert np.all(changed.sum(axis=(1, 2)) == n_masked((16, 16), 5.0))


def test_masked_patches_reproducible_and_order_independent():
    images = _noisy_images()
    a = MaskedPatches(images, (16, 16), batch_size=4, steps_per_epoch=5, seed=42)
    b = MaskedPatches(images, (16, 16), batch_size=4, steps_per_epoch=5, seed=42)
    later_first = b[3]
    _assert_batches_equal(a[0], b[0])
    _assert_batches_equal(a[3], later_first)
    other = MaskedPatches(images, (16, 16), batch_size=4, steps_per_epoch=5, seed=43)
    assert not np.array_equal(a[0][0]["image"], other[0][0]["image"])
    assert not np.array_equal(a[0][0]["image"], a[1][0]["image"])


def test_masked_patches_seed_none_draws_a_seed():
    images = _noisy_images()
    a = MaskedPatches(images, (16, 16), batch_size=4, steps_per_epoch=2)
    b = MaskedPatches(images, (16, 16), batch_size=4, steps_per_epoch=2)
    _assert_batches_equal(a[1], a[1])
    assert a.seed != b.seed


def test_masked_patches_epochs_differ_unless_fixed():
    images = _noisy_images()
    train = MaskedPatches(images, (16, 16), batch_size=4, steps_per_epoch=2, seed=5)
    fixed = MaskedPatches(images, (16, 16), batch_size=4, steps_per_epoch=2, seed=5, fixed=True)
    first_train, first_fixed = train[0], fixed[0]
    train.on_epoch_end()
    fixed.on_epoch_end()
    assert not np.array_equal(first_train[0]["image"], train[0][0]["image"])
    assert not np.array_equal(first_train[0]["coords"], train[0][0]["coords"])
    _assert_batches_equal(first_fixed, fixed[0])
    assert not fixed.augment


def test_masked_patches_validation():
    images = _noisy_images(shape=(20, 30))
    with pytest.raises(ValueError, match=r"\(32, 16\).*\(20, 30\)"):
        MaskedPatches(images, (32, 16), batch_size=4, steps_per_epoch=2)
    bad = images.copy()
    bad[1, 3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        MaskedPatches(bad, (16, 16), batch_size=4, steps_per_epoch=2)
    bad[1, 3, 4] = np.inf
    with pytest.raises(ValueError, match="infinite"):
        MaskedPatches(bad, (16, 16), batch_size=4, steps_per_epoch=2)
    with pytest.raises(ValueError, match="radius"):
        MaskedPatches(images, (16, 2), batch_size=4, steps_per_epoch=2, radius=2)
    with pytest.raises(ValueError, match="perc_pix"):
        MaskedPatches(images, (16, 16), batch_size=4, steps_per_epoch=2, perc_pix=0)
    with pytest.raises(ValueError, match="batch_size"):
        MaskedPatches(images, (16, 16), batch_size=0, steps_per_epoch=2)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        MaskedPatches(images, (16, 16), batch_size=4, steps_per_epoch=0)
    with pytest.raises(ValueError, match="seed"):
        MaskedPatches(images, (16, 16), batch_size=4, steps_per_epoch=2, seed=-1)


def test_masked_patches_accepts_channel_axis_lists_and_keras_kwargs():
    images = _noisy_images()
    ds = MaskedPatches(images[..., None], (16, 16), batch_size=2, steps_per_epoch=1, seed=0)
    _assert_batches_equal(ds[0], MaskedPatches(images, (16, 16), 2, 1, seed=0)[0])
    listed = MaskedPatches([images[0], images[1][:20, :17]], (16, 16), batch_size=2, steps_per_epoch=1,
                           workers=2, max_queue_size=3)
    assert listed[0][0]["image"].shape == (2, 16, 16, 1)
    assert listed.workers == 2 and listed.max_queue_size == 3


# -- SupervisedPatches ---------------------------------------------------------------------------

def test_supervised_patches_aligned_crops_and_transforms():
    images = _unique_images(3, (24, 20))
    targets = 2 * images + 1                         # any misaligned crop or transform breaks this
    ds = SupervisedPatches(images, targets, (12, 12), batch_size=64, steps_per_epoch=2, seed=0)
    inputs, outputs = ds[0]
    assert inputs.shape == outputs.shape == (64, 12, 12, 1)
    assert inputs.dtype == outputs.dtype == np.float32
    np.testing.assert_array_equal(outputs, 2 * inputs + 1)
    used = set()
    for patch in inputs[..., 0]:
        corner = [patch[0, 0], patch[0, -1], patch[-1, 0], patch[-1, -1]]
        image, y0, x0 = np.unravel_index(int(min(corner)), images.shape)
        crop = images[image, y0:y0 + 12, x0:x0 + 12]
        used.add(_which_transform(patch, crop))
    assert len(used) >= 6                            # augmentation in use (64 draws of 8)


def test_supervised_patches_fixed_and_validation():
    images = _noisy_images(shape=(20, 20))
    ds = SupervisedPatches(images, images + 1, (8, 8), 4, 2, seed=1, fixed=True)
    first = ds[1]
    ds.on_epoch_end()
    np.testing.assert_array_equal(first[0], ds[1][0])
    with pytest.raises(ValueError, match="same"):
        SupervisedPatches(images, images[:, :10], (8, 8), 4, 2)
    bad = images.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="targets.*NaN"):
        SupervisedPatches(images, bad, (8, 8), 4, 2)


# -- Keras contract ------------------------------------------------------------------------------

class _GatherAtCoords(keras.layers.Layer):
    """Pick the (B, Y, X, 1) features at (B, M, 1, 2) coordinates -> (B, M, 1)."""

    def call(self, features, coords):
        shape = keras.ops.shape(features)
        flat = keras.ops.reshape(features, (shape[0], shape[1] * shape[2], shape[3]))
        index = coords[..., 0, 0] * shape[2] + coords[..., 0, 1]
        return keras.ops.take_along_axis(flat, keras.ops.expand_dims(index, -1), axis=1)


class _LoggingMaskedPatches(MaskedPatches):
    """Records (epoch counter, index) of every batch Keras asks for."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.requests = []

    def __getitem__(self, index):
        self.requests.append((self.epoch, index))
        return super().__getitem__(index)


def test_masked_patches_train_a_keras_model():
    keras.utils.set_random_seed(0)
    image = keras.Input((16, 16, 1), name="image")
    coords = keras.Input((None, 1, 2), dtype="int32", name="coords")
    features = keras.layers.Conv2D(1, 3, padding="same")(image)
    model = keras.Model({"image": image, "coords": coords}, _GatherAtCoords()(features, coords))
    model.compile(optimizer="adam", loss="mse")
    images = _noisy_images(shape=(32, 32)) / 100
    train = _LoggingMaskedPatches(images, (16, 16), batch_size=4, steps_per_epoch=2, seed=0)
    val = MaskedPatches(images, (16, 16), batch_size=4, steps_per_epoch=1, seed=1, augment=False,
                        fixed=True)
    history = model.fit(train, validation_data=val, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"])) and len(history.history["val_loss"]) == 2
    # Keras called on_epoch_end between the epochs, so the second epoch drew new batches
    assert len({epoch for epoch, _ in train.requests}) >= 2


def test_supervised_patches_train_a_keras_model():
    keras.utils.set_random_seed(0)
    image = keras.Input((None, None, 1))
    model = keras.Model(image, keras.layers.Conv2D(1, 3, padding="same")(image))
    model.compile(optimizer="adam", loss="mse")
    images = _noisy_images(shape=(32, 32)) / 100
    train = SupervisedPatches(images, images * 0.5, (16, 16), batch_size=4, steps_per_epoch=2, seed=0)
    history = model.fit(train, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def _assert_batches_equal(a, b):
    (inputs_a, values_a), (inputs_b, values_b) = a, b
    np.testing.assert_array_equal(inputs_a["image"], inputs_b["image"])
    np.testing.assert_array_equal(inputs_a["coords"], inputs_b["coords"])
    np.testing.assert_array_equal(values_a, values_b)
