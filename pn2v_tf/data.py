"""Training data: random patches, dihedral augmentation and Keras ``PyDataset`` batches.

:class:`MaskedPatches` produces Noise2Void-masked patches for the objectives ``'n2v'`` and
``'pn2v'``; :class:`SupervisedPatches` produces pairs of input and target patches for ``'care'``.

Images stay in raw float32 intensities here; the network normalises them itself.

Every batch is generated from its own :class:`numpy.random.Generator`,
``np.random.default_rng([seed, epoch, index])``, so batches are reproducible and do not depend on
the order in which Keras (or its worker threads and processes) asks for them.
"""

import keras
import numpy as np

from .masking import _check_patch_shape, _check_perc_pix, _check_radius, _is_int, mask_patches, n_masked

__all__ = ["random_patches", "random_dihedral", "MaskedPatches", "SupervisedPatches"]


# -- images --------------------------------------------------------------------------------------

def _squeeze_channel(image: np.ndarray, ndim: int, name: str) -> np.ndarray:
    """Drop a trailing channel axis of size 1 from an array meant to have ``ndim`` dimensions."""
    if image.ndim == ndim + 1 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} axes (optionally plus a channel axis of size 1), "
                         f"got shape {image.shape}")
    return image


def _as_images(images, name: str = "images"):
    """Images as a float32 ``(S, Y, X)`` array or a list of float32 ``(Y, X)`` arrays.

    Accepts an ``(S, Y, X)`` or ``(S, Y, X, 1)`` array, or a list/tuple of ``(Y, X)`` or
    ``(Y, X, 1)`` arrays (which may differ in size). Does not copy float32 input.
    """
    if isinstance(images, (list, tuple)):
        if len(images) == 0:
            raise ValueError(f"{name} is empty")
        return [_squeeze_channel(np.asarray(image, dtype=np.float32), 2, f"each image of {name}")
                for image in images]
    images = _squeeze_channel(np.asarray(images, dtype=np.float32), 3, name)
    if images.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    return images


def _image_shapes(images) -> np.ndarray:
    """(S, 2) int array of the image sizes ``(Y, X)``."""
    if isinstance(images, np.ndarray):
        return np.tile(np.asarray(images.shape[1:]), (len(images), 1))
    return np.array([image.shape for image in images])


def _check_fits(images, patch_shape, name: str = "images") -> tuple[int, int]:
    """Check that a patch of ``patch_shape`` fits into every image; return it as a tuple of ints."""
    shape = _check_patch_shape(patch_shape)
    sizes = _image_shapes(images)
    too_small = np.any(sizes < shape, axis=1)
    if np.any(too_small):
        index = int(np.argmax(too_small))
        raise ValueError(f"patch shape {shape} does not fit into image {index} of {name} with shape "
                         f"{tuple(int(s) for s in sizes[index])}")
    return shape


def _check_finite(images, name: str = "images") -> None:
    """Raise ValueError if any image contains NaN or infinite values."""
    stack = [images] if isinstance(images, np.ndarray) else images
    n_bad = sum(int(np.count_nonzero(~np.isfinite(image))) for image in stack)
    if n_bad:
        raise ValueError(f"{name} contain {n_bad} NaN or infinite values; remove or replace them "
                         "before training")


# -- patches -------------------------------------------------------------------------------------

def _crop_positions(rng, images, patch_shape, n):
    """Draw ``n`` crops: image indices (uniform) and top-left corners (uniform over valid positions)."""
    sizes = _image_shapes(images)
    index = rng.integers(0, len(sizes), size=n)
    y0 = rng.integers(0, sizes[index, 0] - patch_shape[0] + 1)
    x0 = rng.integers(0, sizes[index, 1] - patch_shape[1] + 1)
    return index, y0, x0


def _crop(images, patch_shape, index, y0, x0) -> np.ndarray:
    """Cut the crops given by ``_crop_positions`` out of ``images``: ``(n, py, px)`` float32."""
    size_y, size_x = patch_shape
    out = np.empty((len(index), size_y, size_x), dtype=np.float32)
    for k, (i, y, x) in enumerate(zip(index, y0, x0)):
        out[k] = images[i][y:y + size_y, x:x + size_x]
    return out


def random_patches(rng, images, patch_shape, n) -> np.ndarray:
    """Cut ``n`` random patches out of a set of images.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    images : numpy.ndarray or list of numpy.ndarray
        ``(S, Y, X)`` (or ``(S, Y, X, 1)``) array, or a list of 2-D images of different sizes.
    patch_shape : tuple of int
        Patch shape ``(py, px)``.
    n : int
        Number of patches.

    Returns
    -------
    numpy.ndarray
        ``(n, py, px)`` float32 patches. For each patch the image is chosen uniformly and the
        position uniformly over all positions where the patch fits.

    Raises
    ------
    ValueError
        If the patch does not fit into one of the images (the message names both sizes).
    """
    if not _is_int(n) or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n!r}")
    images = _as_images(images)
    patch_shape = _check_fits(images, patch_shape)
    return _crop(images, patch_shape, *_crop_positions(rng, images, patch_shape, n))


# -- augmentation --------------------------------------------------------------------------------

#: The dihedral group D4 as (number of 90-degree rotations, flip along X afterwards).
_DIHEDRAL = tuple((k, flip) for flip in (False, True) for k in range(4))
#: The transforms that keep a non-square shape: identity, 180 degrees and the two axis flips.
_SHAPE_KEEPING = tuple(i for i, (k, _) in enumerate(_DIHEDRAL) if k % 2 == 0)


def _dihedral(stack: np.ndarray, transform: int) -> np.ndarray:
    """Apply transform ``transform`` (index into ``_DIHEDRAL``) to axes 1 and 2 of ``stack``."""
    k, flip = _DIHEDRAL[transform]
    out = np.rot90(stack, k, axes=(1, 2))
    return out[:, :, ::-1] if flip else out


def random_dihedral(rng, *stacks) -> tuple:
    """Apply the same random flip/rotation per patch to several stacks of patches.

    Patch ``b`` of every stack gets the same one of the 8 elements of the dihedral group (rotations
    by 0/90/180/270 degrees, each optionally followed by a flip), so a patch and its target stay
    aligned. Rotations by 90 and 270 degrees are only used if ``Y == X``; otherwise the transform is
    drawn uniformly from the 4 that keep the shape.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    *stacks : numpy.ndarray
        One or more arrays of the same shape ``(B, Y, X)`` (trailing axes are carried along).

    Returns
    -------
    tuple of numpy.ndarray
        The transformed stacks (new arrays, same shapes and dtypes), one per input, in order.
    """
    if not stacks:
        raise ValueError("random_dihedral needs at least one stack")
    stacks = [np.asarray(stack) for stack in stacks]
    shape = stacks[0].shape
    if len(shape) < 3 or any(stack.shape != shape for stack in stacks):
        raise ValueError(f"stacks must have the same shape (B, Y, X), got {[s.shape for s in stacks]}")
    choices = np.arange(len(_DIHEDRAL)) if shape[1] == shape[2] else np.array(_SHAPE_KEEPING)
    transforms = rng.choice(choices, size=shape[0])
    outs = [np.empty_like(stack) for stack in stacks]
    for transform in np.unique(transforms):
        which = np.flatnonzero(transforms == transform)
        for stack, out in zip(stacks, outs):
            out[which] = _dihedral(stack[which], transform)
    return tuple(outs)


# -- Keras datasets ------------------------------------------------------------------------------

class _RandomPatches(keras.utils.PyDataset):
    """Shared logic: validation, seeding and epoch counting of the patch datasets."""

    def __init__(self, images, patch_shape, batch_size, steps_per_epoch, augment=True, seed=None,
                 fixed=False, **kwargs):
        super().__init__(**kwargs)
        self.images = _as_images(images, "images")
        _check_finite(self.images, "images")
        self.patch_shape = _check_fits(self.images, patch_shape, "images")
        if not _is_int(batch_size) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if not _is_int(steps_per_epoch) or steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be an integer >= 1, got {steps_per_epoch!r}")
        if seed is None:
            seed = int(np.random.default_rng().integers(2**63))
        elif not _is_int(seed) or seed < 0:
            raise ValueError(f"seed must be None or an integer >= 0, got {seed!r}")
        self.batch_size = int(batch_size)
        self.steps_per_epoch = int(steps_per_epoch)
        self.seed = int(seed)
        self.fixed = bool(fixed)
        self.augment = bool(augment) and not self.fixed
        self.epoch = 0

    def __len__(self) -> int:
        return self.steps_per_epoch

    def _rng(self, index) -> np.random.Generator:
        """The generator of batch ``index`` in the current epoch (epoch 0 if ``fixed``)."""
        if not _is_int(index) or not 0 <= index < len(self):
            raise IndexError(f"batch index {index!r} out of range for {len(self)} batches")
        epoch = 0 if self.fixed else self.epoch
        return np.random.default_rng([self.seed, epoch, int(index)])

    def on_epoch_end(self) -> None:
        """Advance the epoch counter so that the next epoch draws different batches."""
        self.epoch += 1


class MaskedPatches(_RandomPatches):
    """Batches of Noise2Void-masked random patches, for the objectives ``'n2v'`` and ``'pn2v'``.

    Parameters
    ----------
    images : numpy.ndarray or list of numpy.ndarray
        Noisy training images ``(S, Y, X)`` or ``(S, Y, X, 1)``, or a list of 2-D images of
        different sizes; raw float32 intensities (no normalisation here). Must be finite.
    patch_shape : tuple of int
        Patch shape ``(Y, X)``; must fit into every image and every side must exceed ``radius``.
    batch_size : int
        Patches per batch ``B``.
    steps_per_epoch : int
        Number of batches per epoch (``len(self)``).
    perc_pix : float
        Percentage of masked pixels per patch (see :func:`pn2v_tf.masking.grid_shape`).
    radius : int
        Chebyshev radius of the neighbourhood the replacement values come from.
    augment : bool
        Apply a random flip/rotation to each patch (:func:`random_dihedral`).
    seed : int or None
        Seed; batch ``i`` of epoch ``e`` uses ``np.random.default_rng([seed, e, i])``. ``None``
        draws a seed once, here.
    fixed : bool
        For validation: batch ``i`` is the same in every epoch, and there is no augmentation.
    kwargs : dict
        Passed on to :class:`keras.utils.PyDataset` (``workers``, ``use_multiprocessing``,
        ``max_queue_size``).

    Notes
    -----
    ``self[i]`` returns ``({"image": (B, Y, X, 1) float32, "coords": (B, M, 2) int32},
    (B, M, 1) float32)``: the masked patches, the masked coordinates ``(y, x)`` and the original
    values there, with ``M = n_masked(patch_shape, perc_pix)``.
    """

    def __init__(self, images, patch_shape, batch_size, steps_per_epoch, perc_pix=3.0, radius=2,
                 augment=True, seed=None, fixed=False, **kwargs):
        super().__init__(images, patch_shape, batch_size, steps_per_epoch, augment=augment,
                         seed=seed, fixed=fixed, **kwargs)
        self.perc_pix = _check_perc_pix(perc_pix)
        self.radius = _check_radius(radius, self.patch_shape)
        self.n_masked = n_masked(self.patch_shape, self.perc_pix)

    def __getitem__(self, index):
        rng = self._rng(index)
        patches = random_patches(rng, self.images, self.patch_shape, self.batch_size)
        if self.augment:
            (patches,) = random_dihedral(rng, patches)
        masked, coords, values = mask_patches(rng, patches, self.perc_pix, self.radius)
        return {"image": masked[..., None], "coords": coords}, values[..., None]


class SupervisedPatches(_RandomPatches):
    """Batches of aligned random input and target patches, for the objective ``'care'``.

    Parameters
    ----------
    images : numpy.ndarray or list of numpy.ndarray
        Input images ``(S, Y, X)`` or ``(S, Y, X, 1)``, or a list of 2-D images. Must be finite.
    targets : numpy.ndarray or list of numpy.ndarray
        Target images of the same shapes as ``images``. Must be finite.
    patch_shape : tuple of int
        Patch shape ``(Y, X)``; must fit into every image.
    batch_size : int
        Patches per batch ``B``.
    steps_per_epoch : int
        Number of batches per epoch (``len(self)``).
    augment : bool
        Apply a random flip/rotation to each patch, the same to input and target.
    seed : int or None
        Seed; batch ``i`` of epoch ``e`` uses ``np.random.default_rng([seed, e, i])``. ``None``
        draws a seed once, here.
    fixed : bool
        For validation: batch ``i`` is the same in every epoch, and there is no augmentation.
    kwargs : dict
        Passed on to :class:`keras.utils.PyDataset`.

    Notes
    -----
    ``self[i]`` returns ``((B, Y, X, 1) float32 inputs, (B, Y, X, 1) float32 targets)``, cut at
    the same positions and transformed alike.
    """

    def __init__(self, images, targets, patch_shape, batch_size, steps_per_epoch, augment=True,
                 seed=None, fixed=False, **kwargs):
        super().__init__(images, patch_shape, batch_size, steps_per_epoch, augment=augment,
                         seed=seed, fixed=fixed, **kwargs)
        self.targets = _as_images(targets, "targets")
        if not np.array_equal(_image_shapes(self.images), _image_shapes(self.targets)):
            raise ValueError("images and targets must have the same number and shapes of images")
        _check_finite(self.targets, "targets")

    def __getitem__(self, index):
        rng = self._rng(index)
        crop = _crop_positions(rng, self.images, self.patch_shape, self.batch_size)
        inputs = _crop(self.images, self.patch_shape, *crop)
        targets = _crop(self.targets, self.patch_shape, *crop)
        if self.augment:
            inputs, targets = random_dihedral(rng, inputs, targets)
        return inputs[..., None], targets[..., None]
