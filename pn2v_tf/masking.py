"""Noise2Void blind-spot masking of training patches, in pure and vectorised NumPy.

Noise2Void trains on noisy patches in which a few "blind-spot" pixels have their value replaced by
the value of a random neighbour; the loss is evaluated only at those pixels, against their original
noisy value. The training graph gathers the network output at the masked coordinates only, so the
functions here return coordinates and values rather than a dense mask.

Patches are 2-D (Y, X) or 3-D (Z, Y, X); every function works along all axes alike. The masked
pixels (voxels) are placed on a stratified grid: the patch is divided into ``ny * nx`` (``nz * ny *
nx``) cells of (almost) equal size and one pixel is drawn uniformly inside each cell. The number of
masked pixels is therefore the same for every patch (:func:`n_masked`), about ``perc_pix`` percent
of the pixels, and they are spread over the whole patch.

All randomness comes from a :class:`numpy.random.Generator` passed by the caller.
"""

import math
import numbers

import numpy as np

from ._checks import is_int as _is_int
from .arrays import check_patch_shape

__all__ = ["grid_shape", "n_masked", "stratified_coords", "neighbour_coords", "mask_patches"]


# -- validation --------------------------------------------------------------------------------

def _check_patch_shape(patch_shape) -> tuple[int, ...]:
    """Return ``patch_shape`` as a tuple of two or three positive ints, or raise ValueError."""
    return check_patch_shape(patch_shape)


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

def grid_shape(patch_shape, perc_pix) -> tuple[int, ...]:
    """Shape of the stratified grid of masked pixels.

    Parameters
    ----------
    patch_shape : tuple of int
        Patch shape ``(Y, X)`` or ``(Z, Y, X)``.
    perc_pix : float
        Percentage of masked pixels, in (0, 100].

    Returns
    -------
    tuple of int
        ``max(1, round(side * p**(1/n)))`` per side, with ``p = perc_pix / 100`` and ``n`` the number
        of axes (Python's ``round``): in 3-D the spacing is ``(100 / perc_pix)**(1/3)``, so that the
        ``nz * ny * nx`` cells, one masked voxel each, are about ``perc_pix`` percent of the voxels.

    Raises
    ------
    ValueError
        If ``patch_shape`` or ``perc_pix`` is invalid.
    """
    shape = _check_patch_shape(patch_shape)
    fraction = _check_perc_pix(perc_pix) / 100.0
    root = math.sqrt(fraction) if len(shape) == 2 else fraction ** (1.0 / len(shape))
    return tuple(max(1, round(side * root)) for side in shape)


def n_masked(patch_shape, perc_pix) -> int:
    """Number of masked pixels per patch, the product of :func:`grid_shape`.

    Parameters
    ----------
    patch_shape : tuple of int
        Patch shape ``(Y, X)`` or ``(Z, Y, X)``.
    perc_pix : float
        Percentage of masked pixels, in (0, 100].

    Returns
    -------
    int
        The number of masked pixels in every patch.
    """
    return math.prod(grid_shape(patch_shape, perc_pix))


def _cell_edges(size: int, n_cells: int) -> np.ndarray:
    """Cell edges ``floor(arange(n_cells + 1) * size / n_cells)``, computed exactly in integers."""
    return (np.arange(n_cells + 1, dtype=np.int64) * size) // n_cells


def stratified_coords(rng, n_patches, patch_shape, perc_pix) -> np.ndarray:
    """Draw one random pixel inside each cell of the stratified grid, for each patch.

    The cell edges along an axis of size ``S`` with ``n`` cells are ``floor(arange(n + 1) * S / n)``,
    so cells may differ by one pixel in size; every drawn position lies inside its own cell,
    uniformly.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    n_patches : int
        Number of patches ``B`` (>= 0).
    patch_shape : tuple of int
        Patch shape ``(Y, X)`` or ``(Z, Y, X)``.
    perc_pix : float
        Percentage of masked pixels, in (0, 100].

    Returns
    -------
    numpy.ndarray
        ``(B, M, n_dim)`` int32 coordinates (``(y, x)`` or ``(z, y, x)``), ``M = n_masked(patch_shape,
        perc_pix)``, cells in row-major order (cell ``(j, k)`` of a 2-D grid is entry ``j * nx + k``).
    """
    if not _is_int(n_patches) or n_patches < 0:
        raise ValueError(f"n_patches must be an integer >= 0, got {n_patches!r}")
    patch_shape = _check_patch_shape(patch_shape)
    grid = grid_shape(patch_shape, perc_pix)
    n_dim = len(grid)
    columns = []
    for axis, (size, n_cells) in enumerate(zip(patch_shape, grid)):
        edges = _cell_edges(size, n_cells)
        along = [1] * n_dim
        along[axis] = n_cells
        columns.append(rng.integers(edges[:-1].reshape(along), edges[1:].reshape(along),
                                    size=(n_patches,) + grid))
    coords = np.stack(columns, axis=-1).astype(np.int32)
    return coords.reshape(n_patches, math.prod(grid), n_dim)


# -- neighbours ----------------------------------------------------------------------------------

def _nonzero_offsets(radius: int, n_dim: int = 2) -> np.ndarray:
    """All ``(2r+1)**n_dim - 1`` non-zero offsets of the square (cubic) neighbourhood, (K, n_dim)."""
    steps = np.arange(-radius, radius + 1)
    grid = np.stack(np.meshgrid(*[steps] * n_dim, indexing="ij"), axis=-1).reshape(-1, n_dim)
    return grid[np.any(grid != 0, axis=1)]


def _mirror(index: np.ndarray, size: int) -> np.ndarray:
    """Mirror indices up to ``size - 1`` outside ``[0, size)`` back in: -i -> i, size-1+i -> size-1-i."""
    index = np.abs(index)
    return np.where(index > size - 1, 2 * (size - 1) - index, index)


def _check_coords(coords, patch_shape: tuple[int, ...]) -> np.ndarray:
    """Return ``coords`` as an integer array of shape (..., n_dim) inside the patch, or raise ValueError."""
    coords = np.asarray(coords)
    n_dim = len(patch_shape)
    if coords.ndim < 1 or coords.shape[-1] != n_dim or not np.issubdtype(coords.dtype, np.integer):
        raise ValueError(f"coords must be integers of shape (..., {n_dim}), got {coords.dtype} {coords.shape}")
    if coords.size:
        for axis in range(n_dim):
            if coords[..., axis].min() < 0 or coords[..., axis].max() >= patch_shape[axis]:
                raise ValueError(f"coords must lie inside the patch of shape {patch_shape}")
    return coords


def neighbour_coords(rng, coords, patch_shape, radius) -> np.ndarray:
    """Draw a random neighbour, different from the pixel itself, for each coordinate.

    Each neighbour is ``coord + offset`` with the offset drawn uniformly from the
    ``(2r+1)**n_dim - 1`` non-zero offsets of the square (2-D) or cubic (3-D) neighbourhood of
    Chebyshev radius ``r``. A neighbour outside the patch is mirrored back inside (index ``-i -> i``,
    ``S-1+i -> S-1-i``), so it stays within the radius. For ``r >= 2`` next to a border, mirroring
    can map an offset back onto the pixel itself (e.g. ``y = 1, dy = -2``); such draws are redrawn,
    so the neighbour is never the pixel itself and is uniform over the offsets that do not lead back
    to it.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    coords : numpy.ndarray
        Integer coordinates of shape ``(..., n_dim)``, inside the patch.
    patch_shape : tuple of int
        Patch shape ``(Y, X)`` or ``(Z, Y, X)``; every side must be larger than ``radius``.
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
    n_dim = len(patch_shape)
    offsets = _nonzero_offsets(radius, n_dim).astype(np.int32)
    points = coords.astype(np.int32)

    def draw(at):
        pick = rng.integers(0, len(offsets), size=at.shape[:-1])
        return np.stack([_mirror(at[..., axis] + offsets[pick, axis], patch_shape[axis])
                         for axis in range(n_dim)], axis=-1)

    neighbours = draw(points)
    same = np.all(neighbours == points, axis=-1)
    # Terminates: every side > radius >= 1, so an offset of one step never leads back to the pixel.
    while np.any(same):
        neighbours[same] = draw(points[same])
        same = np.all(neighbours == points, axis=-1)
    return neighbours.astype(np.int32)


# -- masking -------------------------------------------------------------------------------------

def mask_patches(rng, patches, perc_pix, radius) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply Noise2Void blind-spot masking to a batch of 2-D or 3-D patches.

    On each patch, :func:`stratified_coords` chooses ``M`` pixels; each gets the original value of
    a random neighbour (:func:`neighbour_coords`). The neighbour values are read from the input, so
    a pixel never receives a value that was itself already replaced.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    patches : numpy.ndarray
        ``(B, Y, X)`` or ``(B, Z, Y, X)`` patches; converted to float32. Not modified.
    perc_pix : float
        Percentage of masked pixels, in (0, 100].
    radius : int
        Chebyshev radius ``>= 1`` of the neighbourhood the replacement values come from.

    Returns
    -------
    masked : numpy.ndarray
        float32 copy of ``patches`` with the masked pixels replaced.
    coords : numpy.ndarray
        ``(B, M, n_dim)`` int32 coordinates of the masked pixels.
    values : numpy.ndarray
        ``(B, M)`` float32 original values of ``patches`` at ``coords`` (the training targets).

    Raises
    ------
    ValueError
        If ``patches`` is not 3-D or 4-D or ``perc_pix``/``radius`` are invalid.
    """
    patches = np.asarray(patches, dtype=np.float32)
    if patches.ndim not in (3, 4):
        raise ValueError(f"patches must have shape (B, Y, X) or (B, Z, Y, X), got {patches.shape}")
    n_patches, patch_shape = patches.shape[0], patches.shape[1:]
    _check_perc_pix(perc_pix)
    _check_radius(radius, patch_shape)
    coords = stratified_coords(rng, n_patches, patch_shape, perc_pix)
    neighbours = neighbour_coords(rng, coords, patch_shape, radius)
    batch = np.arange(n_patches)[:, None]
    at_coords = (batch,) + tuple(coords[..., axis] for axis in range(len(patch_shape)))
    at_neighbours = (batch,) + tuple(neighbours[..., axis] for axis in range(len(patch_shape)))
    values = patches[at_coords]
    masked = patches.copy()
    masked[at_coords] = patches[at_neighbours]
    return masked, coords, values
