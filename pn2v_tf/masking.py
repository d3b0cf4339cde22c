"""Noise2Void blind-spot masking of training patches, in pure and vectorised NumPy.

Noise2Void trains on noisy patches in which a few "blind-spot" pixels have their value replaced by
the value of a random neighbour; the loss is evaluated only at those pixels, against their original
noisy value. The training graph gathers the network output at the masked coordinates only, so the
functions here return coordinates and values rather than a dense mask.

The masked pixels are placed on a stratified grid: the patch is divided into ``ny * nx`` cells of
(almost) equal size and one pixel is drawn uniformly inside each cell. The number of masked pixels
is therefore the same for every patch (:func:`n_masked`), about ``perc_pix`` percent of the pixels,
and they are spread over the whole patch.

All randomness comes from a :class:`numpy.random.Generator` passed by the caller.
"""

import math
import numbers

import numpy as np

from ._checks import is_int as _is_int

__all__ = ["grid_shape", "n_masked", "stratified_coords", "neighbour_coords", "mask_patches"]


# -- validation --------------------------------------------------------------------------------

def _check_patch_shape(patch_shape) -> tuple[int, int]:
    """Return ``patch_shape`` as a tuple of two positive ints, or raise ValueError."""
    try:
        shape = tuple(patch_shape)
    except TypeError:
        shape = None
    if shape is None or len(shape) != 2 or not all(_is_int(s) and s >= 1 for s in shape):
        raise ValueError(f"patch_shape must be two positive integers (Y, X), got {patch_shape!r}")
    return int(shape[0]), int(shape[1])


def _check_perc_pix(perc_pix) -> float:
    """Return ``perc_pix`` as a float in (0, 100], or raise ValueError."""
    ok = isinstance(perc_pix, numbers.Real) and not isinstance(perc_pix, bool)
    if not ok or not (0 < perc_pix <= 100):
        raise ValueError(f"perc_pix must be a number in (0, 100], got {perc_pix!r}")
    return float(perc_pix)


def _check_radius(radius, patch_shape) -> int:
    """Return ``radius`` as an int >= 1 that is smaller than every patch side, or raise ValueError."""
    if not _is_int(radius) or radius < 1:
        raise ValueError(f"radius must be an integer >= 1, got {radius!r}")
    if min(patch_shape) <= radius:
        raise ValueError(f"every patch side must be larger than the neighbourhood radius {radius}, "
                         f"got patch shape {tuple(patch_shape)}")
    return int(radius)


# -- grid ----------------------------------------------------------------------------------------

def grid_shape(patch_shape, perc_pix) -> tuple[int, int]:
    """Shape of the stratified grid of masked pixels.

    Parameters
    ----------
    patch_shape : tuple of int
        Patch shape ``(Y, X)``.
    perc_pix : float
        Percentage of masked pixels, in (0, 100].

    Returns
    -------
    tuple of int
        ``(ny, nx) = (max(1, round(Y * sqrt(p))), max(1, round(X * sqrt(p))))`` with
        ``p = perc_pix / 100`` (Python's ``round``). Each of the ``ny * nx`` cells gets exactly
        one masked pixel, so the count is fixed per patch (about ``perc_pix`` percent).

    Raises
    ------
    ValueError
        If ``patch_shape`` or ``perc_pix`` is invalid.
    """
    size_y, size_x = _check_patch_shape(patch_shape)
    root = math.sqrt(_check_perc_pix(perc_pix) / 100.0)
    return max(1, round(size_y * root)), max(1, round(size_x * root))


def n_masked(patch_shape, perc_pix) -> int:
    """Number of masked pixels per patch, ``ny * nx`` of :func:`grid_shape`.

    Parameters
    ----------
    patch_shape : tuple of int
        Patch shape ``(Y, X)``.
    perc_pix : float
        Percentage of masked pixels, in (0, 100].

    Returns
    -------
    int
        The number of masked pixels in every patch.
    """
    n_y, n_x = grid_shape(patch_shape, perc_pix)
    return n_y * n_x


def _cell_edges(size: int, n_cells: int) -> np.ndarray:
    """Cell edges ``floor(arange(n_cells + 1) * size / n_cells)``, computed exactly in integers."""
    return (np.arange(n_cells + 1, dtype=np.int64) * size) // n_cells


def stratified_coords(rng, n_patches, patch_shape, perc_pix) -> np.ndarray:
    """Draw one random pixel inside each cell of the stratified grid, for each patch.

    The cell edges along Y are ``floor(arange(ny + 1) * Y / ny)`` (the same along X), so cells may
    differ by one pixel in size; every drawn position lies inside its own cell, uniformly.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    n_patches : int
        Number of patches ``B`` (>= 0).
    patch_shape : tuple of int
        Patch shape ``(Y, X)``.
    perc_pix : float
        Percentage of masked pixels, in (0, 100].

    Returns
    -------
    numpy.ndarray
        ``(B, M, 2)`` int32 coordinates ``(y, x)``, ``M = n_masked(patch_shape, perc_pix)``, cells
        in row-major order (cell ``(j, k)`` is entry ``j * nx + k``).
    """
    if not _is_int(n_patches) or n_patches < 0:
        raise ValueError(f"n_patches must be an integer >= 0, got {n_patches!r}")
    size_y, size_x = _check_patch_shape(patch_shape)
    n_y, n_x = grid_shape((size_y, size_x), perc_pix)
    edges_y, edges_x = _cell_edges(size_y, n_y), _cell_edges(size_x, n_x)
    shape = (n_patches, n_y, n_x)
    ys = rng.integers(edges_y[:-1, None], edges_y[1:, None], size=shape)
    xs = rng.integers(edges_x[None, :-1], edges_x[None, 1:], size=shape)
    coords = np.stack([ys, xs], axis=-1).astype(np.int32)
    return coords.reshape(n_patches, n_y * n_x, 2)


# -- neighbours ----------------------------------------------------------------------------------

def _nonzero_offsets(radius: int) -> np.ndarray:
    """All ``(2r+1)**2 - 1`` non-zero offsets ``(dy, dx)`` of the square neighbourhood, (K, 2)."""
    steps = np.arange(-radius, radius + 1)
    grid = np.stack(np.meshgrid(steps, steps, indexing="ij"), axis=-1).reshape(-1, 2)
    return grid[np.any(grid != 0, axis=1)]


def _mirror(index: np.ndarray, size: int) -> np.ndarray:
    """Mirror indices up to ``size - 1`` outside ``[0, size)`` back in: -i -> i, size-1+i -> size-1-i."""
    index = np.abs(index)
    return np.where(index > size - 1, 2 * (size - 1) - index, index)


def _check_coords(coords, patch_shape: tuple[int, int]) -> np.ndarray:
    """Return ``coords`` as an integer array of shape (..., 2) inside the patch, or raise ValueError."""
    coords = np.asarray(coords)
    if coords.ndim < 1 or coords.shape[-1] != 2 or not np.issubdtype(coords.dtype, np.integer):
        raise ValueError(f"coords must be integers of shape (..., 2), got {coords.dtype} {coords.shape}")
    if coords.size:
        for axis in (0, 1):
            if coords[..., axis].min() < 0 or coords[..., axis].max() >= patch_shape[axis]:
                raise ValueError(f"coords must lie inside the patch of shape {patch_shape}")
    return coords


def neighbour_coords(rng, coords, patch_shape, radius) -> np.ndarray:
    """Draw a random neighbour, different from the pixel itself, for each coordinate.

    Each neighbour is ``coord + offset`` with the offset drawn uniformly from the ``(2r+1)**2 - 1``
    non-zero offsets of the square neighbourhood of Chebyshev radius ``r``. A neighbour outside the
    patch is mirrored back inside (index ``-i -> i``, ``Y-1+i -> Y-1-i``), so it stays within the
    radius. For ``r >= 2`` next to a border, mirroring can map an offset back onto the pixel itself
    (e.g. ``y = 1, dy = -2``); such draws are redrawn, so the neighbour is never the pixel itself and
    is uniform over the offsets that do not lead back to it.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    coords : numpy.ndarray
        Integer coordinates ``(y, x)`` of shape ``(..., 2)``, inside the patch.
    patch_shape : tuple of int
        Patch shape ``(Y, X)``; every side must be larger than ``radius``.
    radius : int
        Chebyshev radius ``r >= 1`` of the neighbourhood.

    Returns
    -------
    numpy.ndarray
        Neighbour coordinates, int32, the same shape as ``coords``.

    Raises
    ------
    ValueError
        If a patch side is not larger than ``radius``, or ``coords`` are invalid.
    """
    patch_shape = _check_patch_shape(patch_shape)
    radius = _check_radius(radius, patch_shape)
    coords = _check_coords(coords, patch_shape)
    offsets = _nonzero_offsets(radius).astype(np.int32)
    ys, xs = coords[..., 0].astype(np.int32), coords[..., 1].astype(np.int32)

    def draw(y, x):
        pick = rng.integers(0, len(offsets), size=y.shape)
        return (_mirror(y + offsets[pick, 0], patch_shape[0]),
                _mirror(x + offsets[pick, 1], patch_shape[1]))

    n_ys, n_xs = draw(ys, xs)
    same = (n_ys == ys) & (n_xs == xs)
    # Terminates: every side > radius >= 1, so an offset of one step never leads back to the pixel.
    while np.any(same):
        n_ys[same], n_xs[same] = draw(ys[same], xs[same])
        same = (n_ys == ys) & (n_xs == xs)
    return np.stack([n_ys, n_xs], axis=-1)


# -- masking -------------------------------------------------------------------------------------

def mask_patches(rng, patches, perc_pix, radius) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply Noise2Void blind-spot masking to a batch of patches.

    On each patch, :func:`stratified_coords` chooses ``M`` pixels; each gets the original value of
    a random neighbour (:func:`neighbour_coords`). The neighbour values are read from the input, so
    a pixel never receives a value that was itself already replaced.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    patches : numpy.ndarray
        ``(B, Y, X)`` patches; converted to float32. Not modified.
    perc_pix : float
        Percentage of masked pixels, in (0, 100].
    radius : int
        Chebyshev radius ``>= 1`` of the neighbourhood the replacement values come from.

    Returns
    -------
    masked : numpy.ndarray
        ``(B, Y, X)`` float32 copy of ``patches`` with the masked pixels replaced.
    coords : numpy.ndarray
        ``(B, M, 2)`` int32 coordinates ``(y, x)`` of the masked pixels.
    values : numpy.ndarray
        ``(B, M)`` float32 original values of ``patches`` at ``coords`` (the training targets).

    Raises
    ------
    ValueError
        If ``patches`` is not 3-D or ``perc_pix``/``radius`` are invalid.
    """
    patches = np.asarray(patches, dtype=np.float32)
    if patches.ndim != 3:
        raise ValueError(f"patches must have shape (B, Y, X), got {patches.shape}")
    n_patches, size_y, size_x = patches.shape
    _check_perc_pix(perc_pix)
    _check_radius(radius, (size_y, size_x))
    coords = stratified_coords(rng, n_patches, (size_y, size_x), perc_pix)
    neighbours = neighbour_coords(rng, coords, (size_y, size_x), radius)
    batch = np.arange(n_patches)[:, None]
    values = patches[batch, coords[..., 0], coords[..., 1]]
    masked = patches.copy()
    masked[batch, coords[..., 0], coords[..., 1]] = patches[batch, neighbours[..., 0], neighbours[..., 1]]
    return masked, coords, values
