"""Tests of pn2v_tf.metrics: PSNR and the scale-and-shift-invariant PSNR."""

import math

import numpy as np
import pytest

from pn2v_tf.metrics import psnr, psnr_scale_invariant


@pytest.fixture
def ground_truth():
    rng = np.random.default_rng(0)
    gt = rng.uniform(10.0, 50.0, (32, 40))
    gt[0, 0], gt[-1, -1] = 10.0, 50.0  # data range exactly 40
    return gt


@pytest.mark.parametrize("error", [0.5, 2.0, -3.0])
def test_psnr_of_a_constant_error(ground_truth, error):
    expected = 10 * math.log10(40.0 ** 2 / error ** 2)
    assert psnr(ground_truth, ground_truth + error) == pytest.approx(expected, rel=1e-12)


def test_psnr_closed_form_with_alternating_error(ground_truth):
    # errors +e and -e on alternating pixels: MSE = e^2
    error = np.where(np.indices(ground_truth.shape).sum(axis=0) % 2 == 0, 1.5, -1.5)
    assert psnr(ground_truth, ground_truth + error) == pytest.approx(20 * math.log10(40.0 / 1.5), rel=1e-12)


def test_psnr_with_explicit_data_range(ground_truth):
    assert psnr(ground_truth, ground_truth + 2.0, data_range=255.0) == pytest.approx(
        10 * math.log10(255.0 ** 2 / 4.0), rel=1e-12)


def test_psnr_is_infinite_for_identical_images(ground_truth):
    assert psnr(ground_truth, ground_truth.copy()) == math.inf


def test_psnr_is_symmetric_in_the_error_and_decreases_with_it(ground_truth):
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 1, ground_truth.shape)
    values = [psnr(ground_truth, ground_truth + s * noise) for s in (0.5, 1.0, 2.0)]
    assert values[0] > values[1] > values[2]
    # doubling the error costs 20 log10(2) dB exactly
    assert values[1] - values[2] == pytest.approx(20 * math.log10(2), rel=1e-10)
    assert psnr(ground_truth, ground_truth - noise) == pytest.approx(values[1], rel=1e-12)


def test_psnr_of_integer_images_does_not_wrap_around():
    gt = np.array([[0, 255], [0, 255]], dtype=np.uint8)
    image = np.array([[10, 245], [10, 245]], dtype=np.uint8)  # errors +-10; uint8 subtraction would wrap
    assert psnr(gt, image) == pytest.approx(10 * math.log10(255.0 ** 2 / 100.0), rel=1e-12)


def test_psnr_shape_mismatch_raises(ground_truth):
    with pytest.raises(ValueError, match="shape"):
        psnr(ground_truth, ground_truth[:, :-1])
    with pytest.raises(ValueError, match="shape"):
        psnr_scale_invariant(ground_truth, ground_truth.T)


def test_psnr_constant_ground_truth_raises():
    with pytest.raises(ValueError, match="constant"):
        psnr(np.full((4, 4), 3.0), np.zeros((4, 4)))
    with pytest.raises(ValueError):
        psnr_scale_invariant(np.full((4, 4), 3.0), np.arange(16.0).reshape(4, 4))


@pytest.mark.parametrize("data_range", [0.0, -1.0])
def test_psnr_non_positive_data_range_raises(ground_truth, data_range):
    with pytest.raises(ValueError, match="data_range"):
        psnr(ground_truth, ground_truth + 1, data_range=data_range)


# -- scale-invariant PSNR --------------------------------------------------------------------------

@pytest.mark.parametrize("a, b", [(1.0, 0.0), (2.5, -7.0), (0.01, 1000.0), (300.0, 3.0)])
def test_scale_invariant_psnr_ignores_gain_and_offset(ground_truth, a, b):
    rng = np.random.default_rng(2)
    image = ground_truth + rng.normal(0, 2.0, ground_truth.shape)
    reference = psnr_scale_invariant(ground_truth, image)
    assert psnr_scale_invariant(ground_truth, a * image + b) == pytest.approx(reference, rel=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_scale_invariant_psnr_is_at_least_psnr(ground_truth, seed):
    rng = np.random.default_rng(seed)
    image = rng.uniform(0.5, 1.5) * ground_truth + rng.normal(0, 3.0, ground_truth.shape) + rng.normal(0, 5)
    assert psnr_scale_invariant(ground_truth, image) >= psnr(ground_truth, image) - 1e-12


def test_scale_invariant_psnr_of_an_affine_copy_is_near_infinite(ground_truth):
    # an exact affine function of the ground truth: the fit recovers it up to rounding
    image = 0.25 * ground_truth - 3.0
    assert psnr_scale_invariant(ground_truth, image) > 200  # only rounding error is left
    assert psnr(ground_truth, image) < 10


def test_scale_invariant_psnr_of_a_constant_image_is_that_of_the_mean(ground_truth):
    # no variance to fit: the best affine fit is the mean of the ground truth
    expected = 10 * math.log10(40.0 ** 2 / float(np.var(ground_truth)))
    assert psnr_scale_invariant(ground_truth, np.full_like(ground_truth, 5.0)) == pytest.approx(expected, rel=1e-10)


def test_scale_invariant_psnr_equals_psnr_of_the_least_squares_fit(ground_truth):
    rng = np.random.default_rng(3)
    image = rng.normal(0, 1, ground_truth.shape) + 0.1 * ground_truth
    design = np.stack([image.ravel(), np.ones(image.size)], axis=1)
    (a, b), *_ = np.linalg.lstsq(design, ground_truth.ravel(), rcond=None)
    assert psnr_scale_invariant(ground_truth, image) == pytest.approx(psnr(ground_truth, a * image + b), rel=1e-9)
