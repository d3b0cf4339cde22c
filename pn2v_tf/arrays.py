"""The one check of image arrays: axes, channel, emptiness, finiteness, size; one set of messages.

Images are 2-D (``YX``) or 3-D (``ZYX``) as the model's ``n_dim`` says. Everything that takes images
from a user (configuration, training, prediction, export, bootstrap, files) goes through these
functions and trusts their output: float32, finite, and either without a channel axis (a
single-channel model's data) or with the channel axis last (``n_channels`` given).

Axes use CSBDeep's letters: the spatial axes, an optional channel axis ``C``, and batch axes ``S``,
``T`` (and ``Z`` for a 2-D model, which then works slice by slice).
"""

import numpy as np
from csbdeep.utils import axes_check_and_normalize

from ._checks import is_int

#: Spatial axes of a 2-D and a 3-D model.
SPATIAL_AXES = {2: "YX", 3: "ZYX"}


def spatial_axes(n_dim):
    """'YX' for ``n_dim`` 2, 'ZYX' for 3."""
    if n_dim not in SPATIAL_AXES:
        raise ValueError(f"images are 2-D or 3-D, got n_dim={n_dim!r}")
    return SPATIAL_AXES[n_dim]


def spatial_dims(axes):
    """Number of spatial axes (Z, Y, X) in an axes string (0 if it is not a string)."""
    return sum(letter in "ZYX" for letter in axes.upper()) if isinstance(axes, str) else 0


def _drop_channel(array, n_axes):
    """Drop a trailing channel axis of size 1 from an array meant to have ``n_axes`` axes."""
    if array.ndim == n_axes + 1 and array.shape[-1] == 1:
        return array[..., 0]
    return array


def count_not_finite(images):
    """Number of NaN or infinite values in an array or a list of arrays."""
    stack = [images] if isinstance(images, np.ndarray) else images
    return sum(int(np.count_nonzero(~np.isfinite(image))) for image in stack)


def check_finite(images, name):
    """Raise ValueError naming ``name`` if ``images`` hold NaN or infinite values."""
    n_bad = count_not_finite(images)
    if n_bad:
        raise ValueError(f"{name} contains NaN or infinite values ({n_bad}); remove or replace them")


def is_chunked(array):
    """An array that is read on demand: a Dask or zarr array, an HDF5 dataset or a memory map (anything
    with ``shape`` and slicing that is not a NumPy array in memory)."""
    if isinstance(array, np.memmap):
        return True
    return (not isinstance(array, (np.ndarray, list, tuple)) and hasattr(array, "shape") and hasattr(array, "dtype")
            and hasattr(array, "__getitem__"))


def as_dask(array):
    """A chunked array as a Dask array of its own chunks (itself if it is one)."""
    import dask.array as da

    if isinstance(array, da.Array):
        return array
    chunks = getattr(array, "chunks", None)
    return da.from_array(array, chunks=chunks if isinstance(chunks, tuple) and chunks else "auto")


def _chunked_stack(images, n_dim, name, n_channels):
    """The checks of :func:`as_image_stack` on a chunked array, as a lazy float32 Dask array (one pass
    over the data for the finiteness check)."""
    import dask.array as da

    array = _stack_axes(as_dask(images), n_dim, name, n_channels).astype(np.float32)
    n_bad = int((~da.isfinite(array)).sum().compute())
    if n_bad:
        raise ValueError(f"{name} contains NaN or infinite values ({n_bad}); remove or replace them")
    return array


def channel_extremes(images):
    """(2, C) array of the minimum and maximum of each channel (last axis) of a stack, in one pass for
    chunked arrays: what :meth:`NoiseModel.check_range` looks at."""
    if is_chunked(images):
        import dask.array as da

        array = as_dask(images)
        axes = tuple(range(array.ndim - 1))
        low, high = da.compute(array.min(axis=axes), array.max(axis=axes))
    else:
        axes = tuple(range(images.ndim - 1))
        low, high = images.min(axis=axes), images.max(axis=axes)
    return np.stack([low, high])


def as_image_stack(images, n_dim=2, name="images", allow_list=False, n_channels=None):
    """Images as a finite float32 array (S, *spatial), or a list of finite float32 spatial arrays.

    Parameters
    ----------
    images : numpy.ndarray or list of numpy.ndarray
        An array with axes ``S`` + spatial (optionally + ``C``), or, with ``allow_list``, a non-empty
        list of single images (spatial, optionally + ``C``) that may differ in size.
    n_dim : int
        2 (``YX``) or 3 (``ZYX``).
    name : str
        What the error messages call the images.
    allow_list : bool
        Accept a list or tuple of images of different sizes.
    n_channels : int or None
        ``None``: one channel, whose axis (of size 1, if there is one) is removed. An int: the
        images keep (or get) a last channel axis, which must have this size; an image without a
        channel axis counts as one channel.

    Returns
    -------
    numpy.ndarray or list of numpy.ndarray or dask.array.Array
        float32; the input itself when it is already a float32 array of the right axes. A chunked
        array (:func:`is_chunked`: zarr, Dask, HDF5, memory map) stays on disk: it comes back as a
        lazy Dask array, checked in one pass over its chunks.
    """
    spatial_axes(n_dim)  # checks n_dim
    if is_chunked(images):
        return _chunked_stack(images, n_dim, name, n_channels)
    if allow_list and isinstance(images, (list, tuple)):
        if len(images) == 0:
            raise ValueError(f"{name} is empty (no images)")
        out = [_one_image(np.asarray(image, dtype=np.float32), n_dim, n_channels, f"image {index} of {name}")
               for index, image in enumerate(images)]
        check_finite(out, name)
        return out
    array = _stack_axes(np.asarray(images), n_dim, name, n_channels).astype(np.float32, copy=False)
    check_finite(array, name)
    return array


def _stack_axes(array, n_dim, name, n_channels):
    """Check a stack's axes (S, *spatial[, C]) and emptiness; drop or add the channel axis as
    :func:`as_image_stack` says."""
    axes = spatial_axes(n_dim)
    if n_channels is None:
        array = _drop_channel(array, n_dim + 1)
        if array.ndim != n_dim + 1:
            raise ValueError(f"{name} must have axes S{axes} (or S{axes}C with one channel), got shape {array.shape}")
    else:
        array = _with_channels(array, n_dim + 1, n_channels, name, f"S{axes}C")
    if array.shape[0] == 0:
        raise ValueError(f"{name} is empty (no images)")
    return array


def _one_image(image, n_dim, n_channels, name):
    axes = spatial_axes(n_dim)
    if n_channels is not None:
        return _with_channels(image, n_dim, n_channels, name, f"{axes}C")
    image = _drop_channel(image, n_dim)
    if image.ndim != n_dim:
        raise ValueError(f"each image must have axes {axes} (or {axes}C with one channel), "
                         f"got shape {image.shape} for {name}")
    return image


def _with_channels(array, n_axes, n_channels, name, axes):
    """``array`` with ``n_axes`` axes before a last channel axis of size ``n_channels`` (added when it
    is missing and ``n_channels`` is 1)."""
    if array.ndim == n_axes and n_channels == 1:
        return array[..., np.newaxis]
    if array.ndim != n_axes + 1:
        raise ValueError(f"{name} must have axes {axes} with {n_channels} channel{'s' * (n_channels > 1)} "
                         f"(C last), got shape {array.shape}")
    if array.shape[-1] != n_channels:
        raise ValueError(f"{name} has {array.shape[-1]} channels (the last axis of {axes}), the model takes "
                         f"{n_channels}")
    return array


def image_shapes(images, n_dim=None):
    """(S, n_dim) int array of the spatial sizes of a stack or a list of images (the first ``n_dim``
    axes of each image; default: all)."""
    if hasattr(images, "shape"):
        n_dim = len(images.shape) - 1 if n_dim is None else n_dim
        return np.tile(np.asarray(images.shape[1:1 + n_dim]), (len(images), 1))
    return np.array([image.shape[:n_dim] for image in images])


def check_patch_shape(patch_shape, n_dim=None, name="patch_shape"):
    """``patch_shape`` as a tuple of 2 or 3 (``n_dim`` when given) positive ints, or ValueError."""
    try:
        shape = tuple(patch_shape)
    except TypeError:
        shape = None
    lengths = (2, 3) if n_dim is None else (n_dim,)
    if shape is None or len(shape) not in lengths or not all(is_int(s, 1) for s in shape):
        axes = " or ".join(f"({', '.join(spatial_axes(n))})" for n in lengths)
        raise ValueError(f"{name} must be {' or '.join(str(n) for n in lengths)} positive integers {axes}, "
                         f"got {patch_shape!r}")
    return tuple(int(s) for s in shape)


def check_fits(images, patch_shape, name="images"):
    """Check that a patch fits into every image (a stack or a list, optionally with a last channel
    axis beyond the patch's axes); return it as a tuple of ints."""
    shape = check_patch_shape(patch_shape)
    sizes = image_shapes(images, len(shape))
    too_small = np.any(sizes < shape, axis=1)
    if np.any(too_small):
        index = int(np.argmax(too_small))
        raise ValueError(f"patch shape {shape} does not fit into image {index} of {name} with shape "
                         f"{tuple(int(s) for s in sizes[index])}")
    return shape


def squeeze_channel(img, axes):
    """Check ``axes`` against ``img`` and remove a channel axis ``C`` of size 1: (img, axes)."""
    img = np.asarray(img)
    axes = axes_check_and_normalize(axes, img.ndim)
    for letter, size in zip(axes, img.shape):
        if letter == "C" and size != 1:
            raise ValueError(f"the model takes one channel; axis C of the image has size {size}")
    keep = [i for i, letter in enumerate(axes) if letter != "C"]
    return img.reshape([img.shape[i] for i in keep]), "".join(axes[i] for i in keep)


def stack_from_axes(img, axes, n_dim=2, n_channels=None):
    """Image with ``axes`` -> finite float32 stack (N, *spatial) and a function that restores the layout.

    ``axes`` must hold the spatial axes of ``n_dim`` (``YX`` or ``ZYX``); every other axis (S, T, and
    Z for a 2-D model) is a batch axis whose images are processed one by one.

    With ``n_channels=None`` a channel axis C may have size 1 only, the stack has no channel axis,
    and ``restore`` maps results (N, *spatial, C') back to the axes of ``img`` without C, then C'.
    With ``n_channels`` an int, the image's axis C must have that size (or be missing when it is 1),
    the stack is (N, *spatial, C), and ``restore`` maps results (N, *spatial, C) back to the axes of
    ``img``: C where the image has it, and none when the image has no C axis.
    """
    img = np.asarray(img)
    axes = axes_check_and_normalize(axes, img.ndim)
    has_channel = "C" in axes
    if n_channels is None:
        img, axes = squeeze_channel(img, axes)
    elif has_channel and img.shape[axes.index("C")] != n_channels:
        raise ValueError(f"the model takes {n_channels} channel{'s' * (n_channels > 1)}; axis C of the image "
                         f"has size {img.shape[axes.index('C')]}")
    elif not has_channel and n_channels != 1:
        raise ValueError(f"the model takes {n_channels} channels: axes must include C, got {axes!r}")
    spatial = spatial_axes(n_dim)
    missing = [a for a in spatial if a not in axes]
    if missing:
        hint = "; this is a 3-D model: name the image's Z axis" if "Z" in missing else ""
        raise ValueError(f"axes must include {spatial} (the model is {n_dim}-D), got {axes!r}{hint}")
    batch_axes = [a for a in axes if a not in spatial and a != "C"]
    channel = ["C"] if n_channels is not None and has_channel else []
    order = batch_axes + list(spatial) + channel
    stack = np.transpose(img, [axes.index(a) for a in order])
    batch_shape = stack.shape[:len(batch_axes)]
    stack = stack.reshape((-1,) + stack.shape[len(batch_axes):]).astype(np.float32, copy=False)
    if n_channels is not None and not has_channel:
        stack = stack[..., np.newaxis]
    n_bad = count_not_finite(stack)
    if n_bad:
        raise ValueError(f"image contains NaN or infinite values ({n_bad})")

    def restore(results):
        out = results.reshape(batch_shape + results.shape[1:])
        current = batch_axes + list(spatial) + ["C"]
        if n_channels is None:
            return np.transpose(out, [current.index(a) for a in list(axes) + ["C"]])
        if not has_channel:
            return np.transpose(out[..., 0], [current.index(a) for a in axes])
        return np.transpose(out, [current.index(a) for a in axes])

    return stack, restore
