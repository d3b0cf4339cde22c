"""Training data: random patches, dihedral augmentation and Keras ``PyDataset`` batches.

Patches are 2-D (Y, X) or 3-D (Z, Y, X), as the length of ``patch_shape`` says; volumes are
augmented by flips along each axis and 90-degree rotations in YX only (Z is never rotated into Y).
Images may have a last channel axis (one more axis than ``S`` + spatial); every channel of a patch is
cut and transformed alike, and blind spots are drawn for each channel independently.

:class:`MaskedPatches` produces Noise2Void-masked patches for the objectives ``'n2v'`` and
``'pn2v'``; :class:`SupervisedPatches` produces pairs of input and target patches for ``'care'``.

Images stay in raw float32 intensities here; the network normalises them itself.

Every batch is generated from its own :class:`numpy.random.Generator`,
``np.random.default_rng([seed, epoch, index])``, so batches are reproducible and do not depend on
the order in which Keras (or its worker threads and processes) asks for them.
"""

import keras
import numpy as np

from .arrays import as_image_stack, check_fits, check_patch_shape, image_shapes, is_chunked
from .masking import (_check_manipulator, _check_perc_pix, _check_radius, _is_int, check_struct_mask, mask_patches,
                      n_masked)

__all__ = ["random_patches", "random_dihedral", "split_validation", "mask_channels", "MaskedPatches",
           "SupervisedPatches"]


def _as_images(images, name, n_dim):
    """Images as a float32 (S, *spatial, C) array or a list of float32 (*spatial, C) images (see
    :mod:`pn2v_tf.arrays`); C from a last axis beyond S + spatial (each image's spatial axes), else 1."""
    is_list = isinstance(images, (list, tuple))
    first = images if is_chunked(images) else np.asarray(images[0] if is_list and len(images) else images)
    n_channels = first.shape[-1] if len(first.shape) == n_dim + 1 + (not is_list) else 1
    return as_image_stack(images, n_dim, name, allow_list=True, n_channels=n_channels)


def split_validation(images, fraction=0.1, min_rows=1, n_channels=1):
    """Hold out images for validation: the last ones, or the last rows (along Y) of a single image.

    Parameters
    ----------
    images : numpy.ndarray
        (S, *spatial) stack of 2-D or 3-D images, or (S, *spatial, C) with ``n_channels`` > 1.
    fraction : float
        Share held out, in (0, 1): ``round(fraction * S)`` images (at least 1, at most S - 1), or
        for S = 1 that share of the image's rows.
    min_rows : int
        Each part of a single image keeps at least this many rows (the training patch's height).
    n_channels : int
        More than 1: the last axis of ``images`` holds channels (Y is then the third-last axis).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        Training and validation stacks (views, no pixel in both).

    Raises
    ------
    ValueError
        If ``fraction`` is not in (0, 1), or a single image is too small for two parts of
        ``min_rows`` rows.
    """
    if not (isinstance(fraction, (int, float)) and 0 < fraction < 1):
        raise ValueError(f"the validation fraction must be between 0 and 1, got {fraction!r}")
    if len(images) > 1:
        n_val = min(len(images) - 1, max(1, round(fraction * len(images))))
        return images[:-n_val], images[-n_val:]
    channels = (slice(None),) if n_channels > 1 else ()
    y_axis = images.ndim - 2 - len(channels)
    height = images.shape[y_axis]
    rows = max(min_rows, round(fraction * height))
    if height - rows < min_rows:
        size = " x ".join(str(s) for s in images.shape[1:y_axis + 2])
        raise ValueError(f"one image of {size} pixels cannot be split into training and validation parts of at "
                         f"least {min_rows} rows (the patch height); give more images or validation data")
    return (images[(..., slice(None, -rows), slice(None)) + channels],
            images[(..., slice(-rows, None), slice(None)) + channels])


# -- patches -------------------------------------------------------------------------------------

def _crop_positions(rng, images, patch_shape, n):
    """Draw ``n`` crops: image indices (uniform) and corners (uniform over valid positions), (n, n_dim)."""
    sizes = image_shapes(images, len(patch_shape))
    index = rng.integers(0, len(sizes), size=n)
    corners = [rng.integers(0, sizes[index, axis] - side + 1) for axis, side in enumerate(patch_shape)]
    return index, np.stack(corners, axis=-1).reshape(n, len(patch_shape))


def _crop(images, patch_shape, index, corners) -> np.ndarray:
    """Cut the crops given by ``_crop_positions`` out of ``images`` (with their trailing channel
    axis): ``(n, *patch_shape, C)`` float32."""
    where = [(int(i),) + tuple(slice(c, c + side) for c, side in zip(corner, patch_shape))
             for i, corner in zip(index, corners)]
    if is_chunked(images):  # one Dask computation reads the chunks that the batch's crops touch
        import dask

        crops = dask.compute(*[images[w] for w in where]) if where else ()
        return np.stack(crops).astype(np.float32) if where else np.empty(
            (0,) + tuple(patch_shape) + images.shape[1 + len(patch_shape):], dtype=np.float32)
    out = np.empty((len(index),) + tuple(patch_shape) + images[0].shape[len(patch_shape):], dtype=np.float32)
    for k, w in enumerate(where):
        out[k] = images[w[0]][w[1:]]
    return out


def random_patches(rng, images, patch_shape, n) -> np.ndarray:
    """Cut ``n`` random patches out of a set of images.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    images : numpy.ndarray or list of numpy.ndarray
        ``(S, Y, X)`` or ``(S, Z, Y, X)`` array (optionally with a channel axis of size 1), or a
        list of images of different sizes.
    patch_shape : tuple of int
        Patch shape ``(py, px)`` or ``(pz, py, px)``; its length says whether images are 2-D or 3-D.
    n : int
        Number of patches.

    Returns
    -------
    numpy.ndarray
        ``(n, *patch_shape)`` float32 patches, ``(n, *patch_shape, C)`` for images with C > 1
        channels. For each patch the image is chosen uniformly and the position uniformly over all
        positions where the patch fits.

    Raises
    ------
    ValueError
        If the patch does not fit into one of the images (the message names both sizes).
    """
    if not _is_int(n) or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n!r}")
    patch_shape = check_patch_shape(patch_shape)
    images = _as_images(images, "images", len(patch_shape))
    patch_shape = check_fits(images, patch_shape)
    patches = _crop(images, patch_shape, *_crop_positions(rng, images, patch_shape, n))
    return patches[..., 0] if patches.shape[-1] == 1 else patches


# -- augmentation --------------------------------------------------------------------------------

#: The dihedral group D4 as (number of 90-degree rotations, flip along X afterwards).
_DIHEDRAL = tuple((k, flip) for flip in (False, True) for k in range(4))
#: The transforms that keep a non-square shape: identity, 180 degrees and the two axis flips.
_SHAPE_KEEPING = tuple(i for i, (k, _) in enumerate(_DIHEDRAL) if k % 2 == 0)


def _dihedral(stack: np.ndarray, transform: int, n_dim: int = 2) -> np.ndarray:
    """Apply a transform to the spatial axes 1..n_dim of ``stack``: index into ``_DIHEDRAL`` in YX,
    plus, in 3-D, a flip along Z for indices of 8 and above."""
    k, flip = _DIHEDRAL[transform % len(_DIHEDRAL)]
    y_axis, x_axis = n_dim - 1, n_dim
    out = np.rot90(stack, k, axes=(y_axis, x_axis))
    out = np.flip(out, axis=x_axis) if flip else out
    return np.flip(out, axis=1) if transform >= len(_DIHEDRAL) else out


def undo_dihedral(stack: np.ndarray, transform: int, n_dim: int = 2) -> np.ndarray:
    """The inverse of ``_dihedral(stack, transform, n_dim)`` for the 8 in-plane transforms."""
    k, flip = _DIHEDRAL[transform]
    y_axis, x_axis = n_dim - 1, n_dim
    out = np.flip(stack, axis=x_axis) if flip else stack
    return np.rot90(out, -k, axes=(y_axis, x_axis))


def random_dihedral(rng, *stacks, n_dim=2, keep=None) -> tuple:
    """Apply the same random flip/rotation per patch to several stacks of patches.

    Patch ``b`` of every stack gets the same one of the 8 elements of the dihedral group in YX
    (rotations by 0/90/180/270 degrees, each optionally followed by a flip); 3-D patches are also
    flipped along Z with probability 1/2 (16 transforms; Z is never rotated into Y or X). Rotations
    by 90 and 270 degrees are only used if ``Y == X``; otherwise the transform is drawn uniformly
    from those that keep the shape.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    *stacks : numpy.ndarray
        One or more arrays of the same shape ``(B, Y, X)`` or ``(B, Z, Y, X)`` (trailing axes are
        carried along).
    n_dim : int
        Number of spatial axes after the batch axis: 2 (Y, X) or 3 (Z, Y, X).
    keep : numpy.ndarray or None
        An ``n_dim``-D array (a structN2V structuring element) that every transform used must leave
        unchanged: the others are never drawn, so that noise correlated along one axis stays along it.

    Returns
    -------
    tuple of numpy.ndarray
        The transformed stacks (new arrays, same shapes and dtypes), one per input, in order.
    """
    if not stacks:
        raise ValueError("random_dihedral needs at least one stack")
    if n_dim not in (2, 3):
        raise ValueError(f"n_dim must be 2 or 3, got {n_dim!r}")
    stacks = [np.asarray(stack) for stack in stacks]
    shape = stacks[0].shape
    if len(shape) < n_dim + 1 or any(stack.shape != shape for stack in stacks):
        raise ValueError(f"stacks must have the same shape (B, {', '.join('ZYX'[-n_dim:])}), "
                         f"got {[s.shape for s in stacks]}")
    in_plane = np.arange(len(_DIHEDRAL)) if shape[n_dim - 1] == shape[n_dim] else np.array(_SHAPE_KEEPING)
    choices = in_plane if n_dim == 2 else np.concatenate([in_plane, in_plane + len(_DIHEDRAL)])
    if keep is not None:
        keep = np.asarray(keep)
        choices = np.array([t for t in choices if _leaves_unchanged(keep, t, n_dim)])
    transforms = rng.choice(choices, size=shape[0])
    outs = [np.empty_like(stack) for stack in stacks]
    for transform in np.unique(transforms):
        which = np.flatnonzero(transforms == transform)
        for stack, out in zip(stacks, outs):
            out[which] = _dihedral(stack[which], transform, n_dim)
    return tuple(outs)


def _leaves_unchanged(array, transform, n_dim):
    moved = _dihedral(array[np.newaxis], transform, n_dim)[0]
    return moved.shape == array.shape and np.array_equal(moved, array)


# -- Keras datasets ------------------------------------------------------------------------------

class _RandomPatches(keras.utils.PyDataset):
    """Shared logic: validation, seeding and epoch counting of the patch datasets."""

    def __init__(self, images, patch_shape, batch_size, steps_per_epoch, augment=True, seed=None,
                 fixed=False, **kwargs):
        super().__init__(**kwargs)
        patch_shape = check_patch_shape(patch_shape)
        self.n_dim = len(patch_shape)
        self.images = _as_images(images, "images", self.n_dim)
        self.patch_shape = check_fits(self.images, patch_shape, "images")
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
        Noisy training images ``(S, Y, X)`` or ``(S, Z, Y, X)`` (optionally with a channel axis of
        size 1), or a list of images of different sizes; raw float32 intensities (no
        normalisation here). Must be finite.
    patch_shape : tuple of int
        Patch shape ``(Y, X)`` or ``(Z, Y, X)`` (which makes the patches 3-D); must fit into every
        image and every side must exceed ``radius``.
    batch_size : int
        Patches per batch ``B``.
    steps_per_epoch : int
        Number of batches per epoch (``len(self)``).
    perc_pix : float
        Percentage of masked pixels per patch (see :func:`pn2v_tf.masking.grid_shape`).
    radius : int
        Chebyshev radius of the neighbourhood the replacement values come from.
    manipulator : str
        Replacement of masked pixels: ``'uniform_withoutCP'`` (a random neighbour) or ``'median'``
        (N2V2; :func:`pn2v_tf.masking.mask_patches`).
    struct_mask : array_like or None
        structN2V's structuring element (:func:`pn2v_tf.masking.check_struct_mask`); augmentation
        then only uses the flips and rotations that leave it unchanged.
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
    ``self[i]`` returns ``({"image": (B, *patch_shape, C) float32, "coords": (B, M, C, n_dim) int32},
    (B, M, C) float32)``: the masked patches, each channel's masked coordinates and the original
    values there, with ``M = n_masked(patch_shape, perc_pix)`` per channel (C = 1 for images without
    a channel axis). Each channel's blind spots are drawn independently, so a pixel masked in one
    channel is usually visible in the others; this assumes that the noise is independent across
    channels.
    """

    def __init__(self, images, patch_shape, batch_size, steps_per_epoch, perc_pix=3.0, radius=2,
                 manipulator="uniform_withoutCP", struct_mask=None, augment=True, seed=None, fixed=False,
                 **kwargs):
        super().__init__(images, patch_shape, batch_size, steps_per_epoch, augment=augment,
                         seed=seed, fixed=fixed, **kwargs)
        self.perc_pix = _check_perc_pix(perc_pix)
        self.radius = _check_radius(radius, self.patch_shape)
        self.manipulator = _check_manipulator(manipulator)
        self.struct_mask = check_struct_mask(struct_mask, self.n_dim)
        self.n_masked = n_masked(self.patch_shape, self.perc_pix)

    def __getitem__(self, index):
        rng = self._rng(index)
        patches = _crop(self.images, self.patch_shape,
                        *_crop_positions(rng, self.images, self.patch_shape, self.batch_size))
        if self.augment:
            (patches,) = random_dihedral(rng, patches, n_dim=self.n_dim, keep=self.struct_mask)
        return mask_channels(rng, patches, self.perc_pix, self.radius, self.manipulator, self.struct_mask)


class SupervisedPatches(_RandomPatches):
    """Batches of aligned random input and target patches, for the objective ``'care'``.

    Parameters
    ----------
    images : numpy.ndarray or list of numpy.ndarray
        Input images ``(S, Y, X)`` or ``(S, Z, Y, X)`` (optionally with a channel axis of size 1),
        or a list of images. Must be finite.
    targets : numpy.ndarray or list of numpy.ndarray
        Target images of the same shapes as ``images``. Must be finite.
    patch_shape : tuple of int
        Patch shape ``(Y, X)`` or ``(Z, Y, X)``; must fit into every image.
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
    ``self[i]`` returns ``((B, *patch_shape, C) float32 inputs, (B, *patch_shape, C) float32 targets)``, cut
    at the same positions and transformed alike (C = 1 for images without a channel axis).
    """

    def __init__(self, images, targets, patch_shape, batch_size, steps_per_epoch, augment=True,
                 seed=None, fixed=False, **kwargs):
        super().__init__(images, patch_shape, batch_size, steps_per_epoch, augment=augment,
                         seed=seed, fixed=fixed, **kwargs)
        self.targets = _as_images(targets, "targets", self.n_dim)
        if len(self.images) != len(self.targets) or any(
                np.shape(a) != np.shape(b) for a, b in zip(self.images, self.targets)):
            raise ValueError("images and targets must have the same number and shapes of images")

    def __getitem__(self, index):
        rng = self._rng(index)
        crop = _crop_positions(rng, self.images, self.patch_shape, self.batch_size)
        inputs = _crop(self.images, self.patch_shape, *crop)
        targets = _crop(self.targets, self.patch_shape, *crop)
        if self.augment:
            inputs, targets = random_dihedral(rng, inputs, targets, n_dim=self.n_dim)
        return inputs, targets


def mask_channels(rng, patches, perc_pix, radius, manipulator="uniform_withoutCP", struct_mask=None):
    """Noise2Void masking of each channel of patches (B, *patch_shape, C) independently
    (:func:`pn2v_tf.masking.mask_patches`).

    Returns
    -------
    tuple
        ``({"image": masked patches (B, *patch_shape, C), "coords": (B, M, C, n_dim) int32},
        original values at the coordinates (B, M, C))``; channel c's blind spots are
        ``coords[:, :, c]``, masked in channel c only.
    """
    batch, n_channels, patch_shape = patches.shape[0], patches.shape[-1], patches.shape[1:-1]
    per_channel = np.moveaxis(patches, -1, 1).reshape((batch * n_channels,) + patch_shape)
    masked, coords, values = mask_patches(rng, per_channel, perc_pix, radius, manipulator, struct_mask)
    masked = np.moveaxis(masked.reshape((batch, n_channels) + patch_shape), 1, -1)
    coords = coords.reshape((batch, n_channels) + coords.shape[1:]).transpose(0, 2, 1, 3)
    values = values.reshape((batch, n_channels, -1)).transpose(0, 2, 1)
    return {"image": np.ascontiguousarray(masked), "coords": np.ascontiguousarray(coords)}, np.ascontiguousarray(values)
