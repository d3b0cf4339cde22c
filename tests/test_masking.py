"""Tests of pn2v_tf.masking: stratified blind-spot positions, neighbour replacement, masking."""

import numpy as np
import pytest

from pn2v_tf.masking import grid_shape, mask_patches, n_masked, neighbour_coords, stratified_coords


def _cell_index(coords, patch_shape, perc_pix):
    """Row-major index of the grid cell each coordinate lies in, from the documented cell edges."""
    n_y, n_x = grid_shape(patch_shape, perc_pix)
    edges_y = np.floor(np.arange(n_y + 1) * patch_shape[0] / n_y).astype(int)
    edges_x = np.floor(np.arange(n_x + 1) * patch_shape[1] / n_x).astype(int)
    cell_y = np.searchsorted(edges_y, coords[..., 0], side="right") - 1
    cell_x = np.searchsorted(edges_x, coords[..., 1], side="right") - 1
    return cell_y * n_x + cell_x


def _all_pixels(patch_shape, repeats):
    """Every pixel of the patch (borders and corners included), ``repeats`` times: (repeats, Y*X, 2)."""
    ys, xs = np.meshgrid(np.arange(patch_shape[0]), np.arange(patch_shape[1]), indexing="ij")
    pixels = np.stack([ys.ravel(), xs.ravel()], axis=-1)
    return np.broadcast_to(pixels, (repeats,) + pixels.shape).astype(np.int32)


# -- grid ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("patch_shape, perc_pix, expected", [
    ((64, 64), 3.0, (11, 11)),      # 64 * sqrt(0.03) = 11.09
    ((64, 32), 3.0, (11, 6)),       # 32 * sqrt(0.03) = 5.54
    ((16, 16), 6.25, (4, 4)),
    ((10, 20), 100, (10, 20)),
    ((8, 8), 0.01, (1, 1)),         # never fewer than one cell
    ((37, 50), 5.0, (8, 11)),       # 8.27, 11.18
])
def test_grid_shape(patch_shape, perc_pix, expected):
    assert grid_shape(patch_shape, perc_pix) == expected
    assert n_masked(patch_shape, perc_pix) == expected[0] * expected[1]


@pytest.mark.parametrize("perc_pix", [0, -1, 100.5, True, "3", None, float("nan")])
def test_grid_shape_rejects_bad_perc_pix(perc_pix):
    with pytest.raises(ValueError, match="perc_pix"):
        grid_shape((64, 64), perc_pix)


@pytest.mark.parametrize("patch_shape", [(64,), (0, 64), (64, 64.0), 64])
def test_grid_shape_rejects_bad_patch_shape(patch_shape):
    with pytest.raises(ValueError, match="patch_shape"):
        grid_shape(patch_shape, 3.0)


# -- stratified coordinates ----------------------------------------------------------------------

@pytest.mark.parametrize("patch_shape, perc_pix", [((64, 64), 3.0), ((37, 50), 5.0), ((9, 13), 40.0),
                                                   ((6, 5), 100.0)])
def test_stratified_coords_one_per_cell(patch_shape, perc_pix):
    rng = np.random.default_rng(0)
    coords = stratified_coords(rng, 200, patch_shape, perc_pix)
    m = n_masked(patch_shape, perc_pix)
    assert coords.shape == (200, m, 2) and coords.dtype == np.int32
    assert coords.min() >= 0
    assert np.all(coords[..., 0] < patch_shape[0]) and np.all(coords[..., 1] < patch_shape[1])
    # entry j lies in cell j (row-major), hence exactly one position per cell
    cells = _cell_index(coords, patch_shape, perc_pix)
    np.testing.assert_array_equal(cells, np.broadcast_to(np.arange(m), cells.shape))


def test_stratified_coords_all_pixels_when_perc_is_100():
    coords = stratified_coords(np.random.default_rng(1), 3, (5, 7), 100)
    np.testing.assert_array_equal(coords, _all_pixels((5, 7), 3))


def test_stratified_coords_uniform_over_patch():
    # 16 x 16 patch, 4 x 4 grid of 4 x 4 cells: every pixel equally likely
    n = 16000
    coords = stratified_coords(np.random.default_rng(2), n, (16, 16), 6.25)
    counts = np.zeros((16, 16))
    np.add.at(counts, (coords[..., 0].ravel(), coords[..., 1].ravel()), 1)
    expected = n / 16           # one pixel of 16 in each cell per patch -> 1000, std ~ 31
    assert np.all(np.abs(counts - expected) < 0.15 * expected)


def test_stratified_coords_uniform_within_unequal_cells():
    # 10 x 10 with a 3 x 3 grid: cell edges 0, 3, 6, 10 -> cells of 3 or 4 pixels per side
    n = 30000
    coords = stratified_coords(np.random.default_rng(3), n, (10, 10), 9.0)
    assert grid_shape((10, 10), 9.0) == (3, 3)
    counts = np.zeros((10, 10))
    np.add.at(counts, (coords[..., 0].ravel(), coords[..., 1].ravel()), 1)
    side = np.array([3, 3, 3, 3, 3, 3, 4, 4, 4, 4])
    expected = n / (side[:, None] * side[None, :])
    assert np.all(np.abs(counts - expected) < 0.15 * expected)


def test_stratified_coords_reproducible():
    a = stratified_coords(np.random.default_rng(7), 4, (32, 32), 3.0)
    b = stratified_coords(np.random.default_rng(7), 4, (32, 32), 3.0)
    np.testing.assert_array_equal(a, b)


# -- neighbours ----------------------------------------------------------------------------------

@pytest.mark.parametrize("patch_shape, radius", [((2, 2), 1), ((3, 2), 1), ((7, 6), 1), ((3, 3), 2),
                                                 ((3, 8), 2), ((6, 7), 2), ((5, 5), 3)])
def test_neighbours_never_self_inside_and_within_radius(patch_shape, radius):
    # every pixel, including all borders and corners, many times
    coords = _all_pixels(patch_shape, 400)
    neighbours = neighbour_coords(np.random.default_rng(4), coords, patch_shape, radius)
    assert neighbours.shape == coords.shape and neighbours.dtype == np.int32
    assert not np.any(np.all(neighbours == coords, axis=-1)), "a pixel was its own neighbour"
    assert np.max(np.abs(neighbours - coords)) <= radius, "neighbour outside the Chebyshev radius"
    assert neighbours.min() >= 0
    assert np.all(neighbours[..., 0] < patch_shape[0]) and np.all(neighbours[..., 1] < patch_shape[1])


@pytest.mark.parametrize("radius", [1, 2])
def test_neighbours_use_all_offsets_uniformly_for_interior_pixels(radius):
    n = 24000
    coords = np.full((n, 2), 10, dtype=np.int32)
    neighbours = neighbour_coords(np.random.default_rng(5), coords, (21, 21), radius)
    offsets, counts = np.unique(neighbours - coords, axis=0, return_counts=True)
    n_offsets = (2 * radius + 1) ** 2 - 1
    assert len(offsets) == n_offsets                    # 8 for r = 1, 24 for r = 2
    assert not np.any(np.all(offsets == 0, axis=1))
    expected = n / n_offsets
    assert np.all(np.abs(counts - expected) < 0.15 * expected)


@pytest.mark.parametrize("corner, diagonal, sides", [
    ((0, 0), (1, 1), {(0, 1), (1, 0)}),
    ((4, 5), (3, 4), {(4, 4), (3, 5)}),
])
def test_neighbours_at_corners_are_mirrored(corner, diagonal, sides):
    # r = 1 at a corner of a 5 x 6 patch: of the 8 offsets, 4 end on the diagonal pixel (1 directly,
    # 3 mirrored) and 2 on each side pixel (1 directly, 1 mirrored): frequencies 1/2, 1/4, 1/4
    n = 8000
    coords = np.tile(np.array(corner, dtype=np.int32), (n, 1))
    neighbours = [tuple(p) for p in neighbour_coords(np.random.default_rng(6), coords, (5, 6), 1)]
    assert set(neighbours) == sides | {diagonal}
    assert abs(neighbours.count(diagonal) / n - 0.5) < 0.03
    for side in sides:
        assert abs(neighbours.count(side) / n - 0.25) < 0.03


def test_neighbours_radius_two_next_to_border_never_self():
    # y = 1, dy = -2 mirrors back to y = 1: with dx = 0 that would be the pixel itself
    coords = np.tile(np.array([[1, 1], [1, 5], [5, 1], [4, 4]], dtype=np.int32), (5000, 1))
    neighbours = neighbour_coords(np.random.default_rng(8), coords, (6, 7), 2)
    assert not np.any(np.all(neighbours == coords, axis=-1))
    assert np.max(np.abs(neighbours - coords)) <= 2


@pytest.mark.parametrize("patch_shape, radius", [((2, 8), 2), ((8, 1), 1), ((3, 3), 3)])
def test_neighbours_reject_patch_not_larger_than_radius(patch_shape, radius):
    coords = np.zeros((1, 1, 2), dtype=np.int32)
    with pytest.raises(ValueError, match="radius"):
        neighbour_coords(np.random.default_rng(0), coords, patch_shape, radius)


@pytest.mark.parametrize("radius", [0, -1, 1.5, True])
def test_neighbours_reject_bad_radius(radius):
    with pytest.raises(ValueError, match="radius"):
        neighbour_coords(np.random.default_rng(0), np.zeros((1, 2), np.int32), (8, 8), radius)


def test_neighbours_reject_coords_outside_patch():
    with pytest.raises(ValueError, match="inside"):
        neighbour_coords(np.random.default_rng(0), np.array([[8, 0]]), (8, 8), 1)


# -- masking -------------------------------------------------------------------------------------

def test_mask_patches_hand_check():
    # a 4 x 4 patch masked with perc 25 -> 2 x 2 grid; reproduce the documented draw order by hand
    patch = np.arange(16, dtype=np.float32).reshape(1, 4, 4) * 10
    masked, coords, values = mask_patches(np.random.default_rng(11), patch, 25.0, 1)
    rng = np.random.default_rng(11)
    expected_coords = stratified_coords(rng, 1, (4, 4), 25.0)
    neighbours = neighbour_coords(rng, expected_coords, (4, 4), 1)
    np.testing.assert_array_equal(coords, expected_coords)
    expected = patch.copy()
    for (y, x), (ny, nx) in zip(coords[0], neighbours[0]):
        assert (y, x) != (ny, nx) and max(abs(y - ny), abs(x - nx)) == 1
        expected[0, y, x] = patch[0, ny, nx]
    np.testing.assert_array_equal(masked, expected)
    np.testing.assert_array_equal(values[0], [patch[0, y, x] for y, x in coords[0]])


def test_mask_patches_shapes_values_and_untouched_pixels():
    rng = np.random.default_rng(12)
    patches = rng.normal(size=(16, 64, 48)).astype(np.float32)
    original = patches.copy()
    masked, coords, values = mask_patches(rng, patches, 3.0, 2)
    m = n_masked((64, 48), 3.0)
    assert masked.shape == patches.shape and masked.dtype == np.float32
    assert coords.shape == (16, m, 2) and coords.dtype == np.int32
    assert values.shape == (16, m) and values.dtype == np.float32
    np.testing.assert_array_equal(patches, original)                    # input untouched
    batch = np.arange(16)[:, None]
    np.testing.assert_array_equal(values, original[batch, coords[..., 0], coords[..., 1]])
    is_masked = np.zeros(patches.shape, bool)
    is_masked[batch, coords[..., 0], coords[..., 1]] = True
    assert np.all(is_masked.sum(axis=(1, 2)) == m)                      # fixed count per patch
    np.testing.assert_array_equal(masked[~is_masked], original[~is_masked])
    # continuous noise: every masked pixel got a different value
    assert np.all(masked[is_masked] != original[is_masked])


@pytest.mark.parametrize("radius", [1, 2])
def test_mask_patches_uses_original_neighbour_values(radius):
    # every pixel masked (perc 100) and every value unique: a value decodes to the pixel it came
    # from, which must be a different pixel within the radius -- replacing from already-replaced
    # pixels would chain values over larger distances or back onto the pixel itself
    shape = (6, 7)
    patches = np.tile(np.arange(42, dtype=np.float32).reshape(1, *shape), (200, 1, 1))
    masked, coords, values = mask_patches(np.random.default_rng(13), patches, 100, radius)
    assert coords.shape == (200, 42, 2)
    source = masked.astype(int)
    source_y, source_x = source // shape[1], source % shape[1]
    ys, xs = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    distance = np.maximum(np.abs(source_y - ys), np.abs(source_x - xs))
    assert distance.min() >= 1 and distance.max() <= radius
    np.testing.assert_array_equal(values, np.broadcast_to(np.arange(42, dtype=np.float32), (200, 42)))


def test_mask_patches_borders_of_small_patches():
    # 3 x 3 patches, r = 2, every pixel masked: borders, corners and centre never replaced by itself
    patches = np.tile(np.arange(9, dtype=np.float32).reshape(1, 3, 3), (500, 1, 1))
    masked, _, _ = mask_patches(np.random.default_rng(14), patches, 100, 2)
    assert not np.any(masked == patches)


def test_mask_patches_converts_and_reproduces():
    patches = np.random.default_rng(0).integers(0, 1000, size=(4, 16, 16))     # int input
    a = mask_patches(np.random.default_rng(3), patches, 10.0, 2)
    b = mask_patches(np.random.default_rng(3), patches.astype(np.float32), 10.0, 2)
    assert a[0].dtype == np.float32 and a[2].dtype == np.float32
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_mask_patches_validation():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="B, Y, X"):
        mask_patches(rng, np.zeros((16, 16), np.float32), 3.0, 2)
    with pytest.raises(ValueError, match="B, Y, X"):
        mask_patches(rng, np.zeros((2, 1, 16, 16, 1), np.float32), 3.0, 2)
    with pytest.raises(ValueError, match="larger than the neighbourhood radius"):  # a 3-D patch of depth 1
        mask_patches(rng, np.zeros((2, 16, 16, 1), np.float32), 3.0, 2)
    with pytest.raises(ValueError, match="perc_pix"):
        mask_patches(rng, np.zeros((2, 16, 16), np.float32), 0, 2)
    with pytest.raises(ValueError, match="radius"):
        mask_patches(rng, np.zeros((2, 16, 16), np.float32), 3.0, 0)
    with pytest.raises(ValueError, match="radius"):
        mask_patches(rng, np.zeros((2, 2, 16), np.float32), 3.0, 2)
