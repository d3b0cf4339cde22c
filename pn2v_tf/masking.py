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

Each masked pixel gets a replacement value from its neighbourhood (``manipulator``): the value of a
random neighbour (``'uniform_withoutCP'``, Noise2Void's) or the median of the neighbourhood without
the pixel itself (``'median'``, N2V2's, which removes the checkerboard artefacts of blind-spot
networks together with blur pooling). A structuring element (structN2V's ``structN2Vmask``) hides
the pixels next to each blind spot whose noise is correlated with its own: they get values drawn
from elsewhere in the patch, and the blind spot's replacement comes from outside the element.

All randomness comes from a :class:`numpy.random.Generator` passed by the caller.
"""

import math
import numbers

import numpy as np

from ._checks import is_int as _is_int
from .arrays import check_patch_shape

__all__ = ["MANIPULATORS", "grid_shape", "n_masked", "stratified_coords", "neighbour_coords",
           "neighbourhood_medians", "replacement_values", "check_struct_mask", "mask_patches"]

#: Replacements of masked pixels, by n2v's names (:func:`replacement_values`): a random neighbour
#: (Noise2Void; the default) and the neighbourhood's median (N2V2), both without the pixel itself, and
#: n2v's other variants.
MANIPULATORS = ("uniform_withoutCP", "median", "uniform_withCP", "normal_withoutCP", "mean", "normal_additive",
                "normal_fitted", "identity")
#: Standard deviation (pixels) of the offsets of 'normal_withoutCP', as in n2v.
NORMAL_OFFSET_SIGMA = 4.0


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


def _check_manipulator(manipulator) -> str:
    if manipulator not in MANIPULATORS:
        raise ValueError(f"manipulator must be one of {', '.join(map(repr, MANIPULATORS))}, got {manipulator!r}")
    return manipulator


def check_struct_mask(struct_mask, n_dim):
    """Return a structN2V structuring element as a boolean array, or raise ValueError.

    Parameters
    ----------
    struct_mask : array_like or None
        ``n_dim``-dimensional nested list of 0 and 1 with an odd side along every axis, centred on the
        blind spot; 1 marks the pixels hidden with it (n2v's ``structN2Vmask``). Its centre is always
        masked, whatever its value there.
    n_dim : int
        2 or 3.

    Returns
    -------
    numpy.ndarray or None
        Boolean array, ``None`` for ``None``.
    """
    if struct_mask is None:
        return None
    try:
        mask = np.asarray(struct_mask)
    except ValueError as error:  # ragged nested lists
        raise ValueError(f"structN2Vmask must be a rectangular nested list of 0 and 1, got {struct_mask!r}") from error
    if mask.ndim != n_dim or mask.dtype == object or not np.all(np.isin(mask, (0, 1))):
        raise ValueError(f"structN2Vmask must be a {n_dim}-D nested list of 0 and 1 (one level per axis "
                         f"{'ZYX'[-n_dim:]}), got {struct_mask!r}")
    if any(side % 2 == 0 for side in mask.shape):
        raise ValueError(f"structN2Vmask must have an odd side along every axis (it is centred on the blind "
                         f"spot), got shape {mask.shape}")
    return mask.astype(bool)


def _struct_offsets(struct_mask) -> np.ndarray:
    """Non-zero offsets (K, n_dim) of the pixels that a structuring element hides around a blind spot."""
    offsets = np.argwhere(struct_mask) - np.array(struct_mask.shape) // 2
    return offsets[np.any(offsets != 0, axis=1)].astype(np.int32)


def _replacement_offsets(radius: int, n_dim: int, struct_mask=None) -> np.ndarray:
    """The neighbourhood's non-zero offsets that a replacement value may come from: those of the
    (2r+1)**n_dim cube outside the structuring element."""
    offsets = _nonzero_offsets(radius, n_dim)
    if struct_mask is not None:
        hidden = {tuple(o) for o in _struct_offsets(struct_mask)}
        offsets = offsets[[tuple(o) not in hidden for o in offsets]]
        if not len(offsets):
            raise ValueError(f"structN2Vmask hides the whole neighbourhood of radius {radius}: increase "
                             "n2v_neighborhood_radius or shrink the mask")
    return offsets.astype(np.int32)


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


def neighbour_coords(rng, coords, patch_shape, radius, struct_mask=None) -> np.ndarray:
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
    struct_mask : numpy.ndarray or None
        Structuring element (:func:`check_struct_mask`): offsets that it hides are never drawn.

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
    offsets = _replacement_offsets(radius, n_dim, struct_mask)
    points = coords.astype(np.int32)

    def draw(at):
        pick = rng.integers(0, len(offsets), size=at.shape[:-1])
        return np.stack([_mirror(at[..., axis] + offsets[pick, axis], patch_shape[axis])
                         for axis in range(n_dim)], axis=-1)

    neighbours = draw(points)
    same = np.all(neighbours == points, axis=-1)
    # Every side > radius >= 1, so an offset of one step never leads back to the pixel; only offsets
    # left by a structuring element can all do so, on tiny patches.
    for _ in range(1000):
        if not np.any(same):
            return neighbours.astype(np.int32)
        neighbours[same] = draw(points[same])
        same = np.all(neighbours == points, axis=-1)
    raise ValueError(f"patch shape {patch_shape} is too small for a neighbour outside structN2Vmask within "
                     f"radius {radius}")


def _mirrored_neighbourhoods(coords, patch_shape, offsets) -> np.ndarray:
    """Coordinates (..., K, n_dim) of ``coords`` plus each offset, mirrored into the patch."""
    points = coords[..., None, :].astype(np.int32) + offsets
    return np.stack([_mirror(points[..., axis], patch_shape[axis]) for axis in range(len(patch_shape))], axis=-1)


def _neighbourhood(patches, coords, radius, struct_mask=None):
    """Values (B, M, K) of each pixel's neighbourhood without the pixel itself and without what the
    structuring element hides, mirrored at the borders, and whether each is valid (mirroring can map
    an offset onto the pixel itself, which is then left out)."""
    patches = np.asarray(patches, dtype=np.float32)
    patch_shape = _check_patch_shape(patches.shape[1:])
    radius = _check_radius(radius, patch_shape)
    coords = _check_coords(coords, patch_shape)
    points = _mirrored_neighbourhoods(coords, patch_shape, _replacement_offsets(radius, len(patch_shape), struct_mask))
    batch = np.arange(patches.shape[0])[:, None, None]
    values = patches[(batch,) + tuple(points[..., axis] for axis in range(len(patch_shape)))]
    return values, ~np.all(points == coords[..., None, :], axis=-1)


def neighbourhood_medians(patches, coords, radius, struct_mask=None) -> np.ndarray:
    """Median of each masked pixel's neighbourhood without the pixel itself (N2V2's replacement).

    The neighbourhood is the (2r+1)**n_dim cube of Chebyshev radius ``radius`` around the pixel,
    minus the pixel and the pixels a structuring element hides; neighbours outside the patch are
    mirrored back in as in :func:`neighbour_coords`, and those that mirroring maps onto the pixel
    itself are left out. With an even number of values the median is the mean of the two middle ones.

    Parameters
    ----------
    patches : numpy.ndarray
        ``(B, Y, X)`` or ``(B, Z, Y, X)`` patches.
    coords : numpy.ndarray
        ``(B, M, n_dim)`` integer coordinates inside the patches.
    radius : int
        Chebyshev radius ``>= 1``; every patch side must exceed it.
    struct_mask : numpy.ndarray or None
        Structuring element (:func:`check_struct_mask`).

    Returns
    -------
    numpy.ndarray
        ``(B, M)`` float32 medians.
    """
    values, valid = _neighbourhood(patches, coords, radius, struct_mask)
    values = np.sort(np.where(valid, values, np.inf), axis=-1)
    n_values = valid.sum(axis=-1, keepdims=True)
    low = np.take_along_axis(values, (n_values - 1) // 2, axis=-1)
    high = np.take_along_axis(values, n_values // 2, axis=-1)
    return ((low + high) / 2)[..., 0].astype(np.float32)


def _neighbourhood_moments(patches, coords, radius, struct_mask):
    values, valid = _neighbourhood(patches, coords, radius, struct_mask)
    n_values = valid.sum(axis=-1)
    mean = np.where(valid, values, 0).sum(axis=-1) / n_values
    variance = np.where(valid, (values - mean[..., None]) ** 2, 0).sum(axis=-1) / n_values
    return mean, np.sqrt(variance)


def replacement_values(rng, patches, coords, radius, manipulator="uniform_withoutCP", struct_mask=None):
    """The values that replace the masked pixels, by n2v's manipulators.

    - ``'uniform_withoutCP'``: a random neighbour within Chebyshev radius ``radius``, never the pixel
      itself (:func:`neighbour_coords`); Noise2Void's and the default.
    - ``'median'``: the median of the neighbourhood without the pixel (:func:`neighbourhood_medians`),
      N2V2's.
    - ``'uniform_withCP'``: a random pixel of the (2r+1)**n_dim cube, the pixel itself included (n2v's
      default: with probability 1/(2r+1)**n_dim the pixel keeps its value).
    - ``'normal_withoutCP'``: the pixel at a random offset, each axis's offset a rounded normal number
      of standard deviation :data:`NORMAL_OFFSET_SIGMA` (not all zero), clipped into the patch.
    - ``'mean'``: the mean of the neighbourhood without the pixel.
    - ``'normal_additive'``: the pixel's own value plus normal noise of standard deviation ``radius``
      (in intensity units, as n2v uses its radius).
    - ``'normal_fitted'``: a normal number with the mean and standard deviation of the neighbourhood
      without the pixel.
    - ``'identity'``: the pixel's own value (the network can learn the identity: for tests only).

    Neighbourhoods leave out what a structuring element hides and are mirrored at the borders.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    patches : numpy.ndarray
        ``(B, Y, X)`` or ``(B, Z, Y, X)`` float32 patches.
    coords : numpy.ndarray
        ``(B, M, n_dim)`` coordinates of the masked pixels.
    radius : int
        Chebyshev radius ``>= 1`` of the neighbourhood.
    manipulator : str
        One of :data:`MANIPULATORS`.
    struct_mask : numpy.ndarray or None
        Structuring element (:func:`check_struct_mask`).

    Returns
    -------
    numpy.ndarray
        ``(B, M)`` float32 replacement values.
    """
    _check_manipulator(manipulator)
    patch_shape = patches.shape[1:]
    n_dim = len(patch_shape)
    batch = np.arange(len(patches))[:, None]

    def at(points):
        return patches[(batch,) + tuple(points[..., axis] for axis in range(n_dim))]

    if manipulator == "uniform_withoutCP":
        return at(neighbour_coords(rng, coords, patch_shape, radius, struct_mask))
    if manipulator == "median":
        return neighbourhood_medians(patches, coords, radius, struct_mask)
    if manipulator == "uniform_withCP":
        offsets = np.concatenate([np.zeros((1, n_dim), np.int32), _replacement_offsets(radius, n_dim, struct_mask)])
        points = _mirrored_neighbourhoods(coords, patch_shape, offsets)
        pick = rng.integers(0, len(offsets), size=coords.shape[:-1])
        return at(np.take_along_axis(points, pick[..., None, None], axis=-2)[..., 0, :])
    if manipulator == "normal_withoutCP":
        return at(_normal_neighbours(rng, coords, patch_shape))
    if manipulator in ("mean", "normal_fitted"):
        mean, std = _neighbourhood_moments(patches, coords, radius, struct_mask)
        return (mean if manipulator == "mean" else rng.normal(mean, std)).astype(np.float32)
    own = at(coords)
    if manipulator == "normal_additive":
        return (own + rng.normal(0.0, radius, size=own.shape)).astype(np.float32)
    return own


def _normal_neighbours(rng, coords, patch_shape):
    """Coordinates at rounded normal offsets (never all zero) from ``coords``, clipped into the patch."""
    def draw(at):
        offsets = np.round(rng.normal(0.0, NORMAL_OFFSET_SIGMA, size=at.shape)).astype(np.int32)
        return np.clip(at + offsets, 0, np.array(patch_shape) - 1)

    neighbours = draw(coords)
    same = np.all(neighbours == coords, axis=-1)
    while np.any(same):
        neighbours[same] = draw(coords[same])
        same = np.all(neighbours == coords, axis=-1)
    return neighbours


# -- masking -------------------------------------------------------------------------------------

def mask_patches(rng, patches, perc_pix, radius, manipulator="uniform_withoutCP",
                 struct_mask=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply Noise2Void blind-spot masking to a batch of 2-D or 3-D patches.

    On each patch, :func:`stratified_coords` chooses ``M`` pixels; each gets a replacement value
    (:func:`replacement_values`): by default the original value of a random neighbour, with
    ``'median'`` the median of its neighbourhood. Replacement values are read from the input, so a
    pixel never receives a value that was itself already replaced.

    With a structuring element, the other pixels it covers around each blind spot (inside the patch)
    get the original values of pixels drawn uniformly from the whole patch, so that they tell the
    network nothing about the blind spot's noise; these are written last, so a blind spot that lies
    under another one's element gets such a value too.

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
    manipulator : str
        ``'uniform_withoutCP'`` (a random neighbour, default), ``'median'`` or another of
        :data:`MANIPULATORS`.
    struct_mask : array_like or None
        structN2V's structuring element (:func:`check_struct_mask`); ``None``: the blind spot alone.

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
        If ``patches`` is not 3-D or 4-D or ``perc_pix``/``radius``/``manipulator``/``struct_mask``
        are invalid.
    """
    patches = np.asarray(patches, dtype=np.float32)
    if patches.ndim not in (3, 4):
        raise ValueError(f"patches must have shape (B, Y, X) or (B, Z, Y, X), got {patches.shape}")
    n_patches, patch_shape = patches.shape[0], patches.shape[1:]
    n_dim = len(patch_shape)
    _check_perc_pix(perc_pix)
    _check_radius(radius, patch_shape)
    _check_manipulator(manipulator)
    struct_mask = check_struct_mask(struct_mask, n_dim)
    coords = stratified_coords(rng, n_patches, patch_shape, perc_pix)
    batch = np.arange(n_patches)[:, None]
    at_coords = (batch,) + tuple(coords[..., axis] for axis in range(n_dim))
    values = patches[at_coords]
    masked = patches.copy()
    masked[at_coords] = replacement_values(rng, patches, coords, radius, manipulator, struct_mask)
    if struct_mask is not None:
        _hide_struct_neighbours(rng, patches, masked, coords, struct_mask)
    return masked, coords, values


def _covered(offsets, element):
    """Whether each offset (N, n_dim) from a blind spot falls on a 1 of ``element`` (centred on it)."""
    centre = np.array(element.shape) // 2
    index = offsets + centre
    inside = np.all((index >= 0) & (index < element.shape), axis=-1)
    clipped = np.clip(index, 0, np.array(element.shape) - 1)
    return inside & element[tuple(clipped[:, axis] for axis in range(len(element.shape)))]


def _hide_struct_neighbours(rng, patches, masked, coords, struct_mask):
    """Write the original values of random pixels of the same patch at the pixels (inside the patch)
    that the structuring element covers around each blind spot, the blind spot itself excepted; the
    source pixels lie outside that blind spot's element (and are not the blind spot)."""
    patch_shape = patches.shape[1:]
    offsets = _struct_offsets(struct_mask)
    points = coords[:, :, None, :] + offsets  # (B, M, K, n_dim)
    inside = np.all((points >= 0) & (points < np.array(patch_shape)), axis=-1)
    which_patch = np.broadcast_to(np.arange(len(patches))[:, None, None], inside.shape)[inside]
    centres = np.broadcast_to(coords[:, :, None, :], points.shape)[inside]
    hidden = points[inside]
    element = struct_mask.copy()
    element[tuple(np.array(element.shape) // 2)] = True
    sources = np.stack([rng.integers(0, side, size=len(hidden)) for side in patch_shape], axis=-1)
    for _ in range(1000):
        redraw = _covered(sources - centres, element)
        if not redraw.any():
            break
        sources[redraw] = np.stack([rng.integers(0, side, size=int(redraw.sum())) for side in patch_shape], axis=-1)
    else:
        raise ValueError(f"patch shape {patch_shape} leaves no pixel outside structN2Vmask {struct_mask.shape}")
    masked[(which_patch,) + tuple(hidden[:, axis] for axis in range(len(patch_shape)))] = \
        patches[(which_patch,) + tuple(sources[:, axis] for axis in range(len(patch_shape)))]
