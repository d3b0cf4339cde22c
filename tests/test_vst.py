"""Tests of pn2v_tf.vst: Poisson-Gaussian parameter estimation, GAT and its inverses, VST denoising.

numpy and scipy only (no TensorFlow, no bm3d).
"""

import numpy as np
import pytest
from scipy import ndimage

from pn2v_tf.vst import (VSTResult, estimate_poisson_gaussian, gat_forward, gat_inverse,
                         vst_denoise)

GAIN, SIGMA = 3.0, 5.0


def smooth_truth(lo, hi, seed, n=512, edges=True):
    """Smooth structured image with values in [lo, hi]: waves, blobs and (optionally) discs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:n, 0:n] / n
    image = 0.5 + 0.3 * np.sin(2 * np.pi * (1.3 * xx + 0.4 * yy)) * np.cos(2 * np.pi * 0.7 * yy)
    for _ in range(12):
        cx, cy = rng.uniform(0, 1, 2)
        width, amplitude = rng.uniform(0.03, 0.12), rng.uniform(-0.4, 0.6)
        image += amplitude * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * width ** 2))
    if edges:  # sharp-edged discs: the estimator must not mistake them for noise
        for _ in range(6):
            cx, cy = rng.uniform(0, 1, 2)
            image[(xx - cx) ** 2 + (yy - cy) ** 2 < rng.uniform(0.03, 0.1) ** 2] += rng.uniform(-0.3, 0.3)
    image = (image - image.min()) / (image.max() - image.min())
    return lo + (hi - lo) * image


def poisson_gaussian(y, gain, sigma, seed, dark=0.0):
    """``gain * Poisson((y - dark) / gain) + N(dark, sigma**2)``: variance ``gain*y + sigma**2 - gain*dark``."""
    rng = np.random.default_rng(seed)
    return gain * rng.poisson(np.maximum(y - dark, 0) / gain) + rng.normal(dark, sigma, np.shape(y))


# ---------------------------------------------------------------------------------------------
# Estimation
# ---------------------------------------------------------------------------------------------

# Measured over seeds 0-11 at the time of writing: gain within 4.2 % of the truth, offset within
# +-11.5 of it (3.4 % and +-10.9 with the uint8 clipping below), fitted standard deviation within
# 5.2 % over the range of the image. Tolerances: 10 % on gain, +-15 on the offset (about
# 5 % of the variance at y = 100), 7 % on the standard deviation.
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_estimation_recovers_gain_and_offset(seed):
    y = smooth_truth(10, 200, seed)
    z = poisson_gaussian(y, GAIN, SIGMA, seed + 10)
    gain, offset = estimate_poisson_gaussian(z)
    assert type(gain) is float and type(offset) is float
    assert gain == pytest.approx(GAIN, rel=0.10)
    assert offset == pytest.approx(SIGMA ** 2, abs=15)
    levels = np.array([20.0, 100.0, 190.0])
    np.testing.assert_allclose(np.sqrt(gain * levels + offset), np.sqrt(GAIN * levels + SIGMA ** 2), rtol=0.07)


@pytest.mark.parametrize("seed", [0, 1])
def test_estimation_with_uint8_clipping_at_0_and_255(seed):
    # values from -20 to 275 before clipping: dark and saturated regions
    y = smooth_truth(-20, 275, seed)
    z = np.clip(np.round(poisson_gaussian(y, GAIN, SIGMA, seed + 20)), 0, 255).astype(np.uint8)
    assert np.mean(z == 0) > 0.005 and np.mean(z == 255) > 0.005
    gain, offset = estimate_poisson_gaussian(z)
    assert gain == pytest.approx(GAIN, rel=0.10)
    assert offset == pytest.approx(SIGMA ** 2, abs=15)


def test_clipping_is_what_the_auto_limits_handle():
    # the same data as float without clip limits: clipped pixels enter the fit, which must then
    # be clearly worse than with clip="auto" on uint8 or an explicit clip on float (3-10 % of the
    # pixels are clipped)
    y = smooth_truth(-80, 330, 0)
    z8 = np.clip(np.round(poisson_gaussian(y, GAIN, SIGMA, 7)), 0, 255).astype(np.uint8)
    auto = estimate_poisson_gaussian(z8)
    explicit = estimate_poisson_gaussian(z8.astype(np.float32), clip=(0, 255))
    ignored = estimate_poisson_gaussian(z8.astype(np.float32))
    assert auto == pytest.approx(explicit)
    assert auto[0] == pytest.approx(GAIN, rel=0.10)

    def variance_error(fit):
        levels = np.array([10.0, 128.0, 245.0])
        return np.max(np.abs(fit[0] * levels + fit[1] - (GAIN * levels + SIGMA ** 2)) / (GAIN * levels + SIGMA ** 2))
    assert variance_error(auto) < 0.1
    assert variance_error(ignored) > 2 * variance_error(auto)


def test_estimation_with_a_negative_offset():
    # dark level 10, read noise 5: offset = 25 - 3 * 10 = -5
    y = smooth_truth(20, 200, 3)
    z = poisson_gaussian(y, GAIN, SIGMA, 13, dark=10.0)
    gain, offset = estimate_poisson_gaussian(z)
    assert gain == pytest.approx(GAIN, rel=0.10)
    assert offset == pytest.approx(-5.0, abs=15)


def test_estimation_of_other_parameters_and_scales():
    # low counts, gain 1 (photon counting with little read noise), then the same image scaled
    y = smooth_truth(0.5, 30, 4, edges=False)
    z = poisson_gaussian(y, 1.0, 0.5, 14)
    gain, offset = estimate_poisson_gaussian(z)
    assert gain == pytest.approx(1.0, rel=0.10)
    assert offset == pytest.approx(0.25, abs=1.0)
    # z / 100 has gain 0.01 and offset 0.25 / 100**2: nothing in the estimator depends on the scale
    scaled = estimate_poisson_gaussian(z / 100)
    assert scaled[0] == pytest.approx(gain / 100, rel=1e-6)
    assert scaled[1] == pytest.approx(offset / 100 ** 2, rel=1e-5, abs=1e-12)


def test_pure_gaussian_noise_gives_a_gain_near_zero():
    y = smooth_truth(10, 200, 5)
    z = y + np.random.default_rng(15).normal(0, 10, y.shape)
    gain, offset = estimate_poisson_gaussian(z)
    assert abs(gain) < 0.1
    assert offset == pytest.approx(100, rel=0.1)


@pytest.mark.parametrize("image, message", [
    (np.zeros((64, 64, 3)), "2-D"),
    (np.zeros(4096), "2-D"),
    (np.zeros((8, 512)), "at least 16"),
    (np.full((64, 64), np.nan), "NaN"),
    (np.where(np.eye(64) > 0, np.inf, 1.0), "NaN or infinite"),
    (np.array([["a"] * 32] * 32), "real numbers"),
    (np.full((64, 64), 255, dtype=np.uint8), "clipping"),
    (np.full((64, 64), 7.0), "too few usable pixels"),
])
def test_estimation_rejects_bad_images(image, message):
    with pytest.raises(ValueError, match=message):
        estimate_poisson_gaussian(image)


@pytest.mark.parametrize("options, message", [
    (dict(clip="yes"), "clip"), (dict(clip=(5, 1)), "low < high"), (dict(clip=(0, np.nan)), "finite"),
    (dict(n_bins=1), "n_bins"), (dict(window=4), "window"), (dict(min_count=0), "min_count"),
    (dict(iterations=-1), "iterations"), (dict(max_clipped_fraction=2), "max_clipped_fraction"),
])
def test_estimation_rejects_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        estimate_poisson_gaussian(np.random.default_rng(0).poisson(10, (64, 64)), **options)


# ---------------------------------------------------------------------------------------------
# Transform
# ---------------------------------------------------------------------------------------------

def test_gat_forward_closed_form_and_clamp():
    z = np.array([[0.0, 10.0], [100.0, -50.0]])
    expected = (2 / GAIN) * np.sqrt(np.maximum(GAIN * z + 3 / 8 * GAIN ** 2 + 25.0, 0))
    np.testing.assert_allclose(gat_forward(z, GAIN, 25.0), expected, rtol=1e-12)
    assert gat_forward(z, GAIN, 25.0)[1, 1] == 0.0  # below the clamp
    # gain 1, offset 0: the Anscombe transform 2 sqrt(z + 3/8)
    np.testing.assert_allclose(gat_forward([0, 5], 1.0, 0.0), 2 * np.sqrt(np.array([0, 5]) + 0.375))


@pytest.mark.parametrize("gain, sigma, dark, levels", [
    (GAIN, SIGMA, 0.0, [30, 100, 300, 1000]),
    (GAIN, SIGMA, 10.0, [40, 100, 300]),   # negative offset
    (1.0, 0.0, 0.0, [5, 20, 100]),         # pure Poisson
])
def test_gat_stabilises_the_variance(gain, sigma, dark, levels):
    offset = sigma ** 2 - gain * dark
    for i, level in enumerate(levels):
        z = poisson_gaussian(np.full(400_000, float(level)), gain, sigma, 100 + i, dark=dark)
        assert np.var(z) == pytest.approx(gain * level + offset, rel=0.02)  # the model holds
        assert np.var(gat_forward(z, gain, offset)) == pytest.approx(1.0, abs=0.03), level
    # without stabilisation the standard deviation grows with the level
    assert np.std(poisson_gaussian(np.full(1000, float(levels[-1])), gain, sigma, 1, dark)) > 5


@pytest.mark.parametrize("gain, sigma, dark", [(GAIN, SIGMA, 0.0), (1.0, 0.0, 0.0), (2.0, 1.0, 20.0)])
def test_inverse_of_the_expected_transform_is_unbiased(gain, sigma, dark):
    offset = sigma ** 2 - gain * dark
    for i, count in enumerate([1.0, 2.0, 4.0, 10.0, 30.0]):   # expected Poisson counts
        y = dark + gain * count
        z = poisson_gaussian(np.full(400_000, y), gain, sigma, 200 + i, dark=dark)
        mean = gat_forward(z, gain, offset).mean()
        unbiased = float(gat_inverse(mean, gain, offset))
        algebraic = float(gat_inverse(mean, gain, offset, method="algebraic"))
        # the algebraic inverse is off by about gain / 4 (more at low counts)
        assert abs(algebraic - y) > 0.15 * gain
        assert abs(unbiased - y) < 0.15 * abs(algebraic - y), count
        if count >= 4:
            assert unbiased == pytest.approx(y, abs=0.01 * (y - dark))


def test_inverse_is_continuous_and_increasing_and_handles_small_values():
    d = np.linspace(-1.0, 40.0, 400_001)
    y = gat_inverse(d, 1.0, 0.0)
    assert np.all(np.diff(y[d > 0]) > 0)
    assert np.all(np.isfinite(y))
    # no jump where the closed form takes over (both are 0 at sqrt(3/2))
    assert gat_inverse(np.sqrt(1.5) + 1e-9, 1.0, 0.0) - gat_inverse(np.sqrt(1.5) - 1e-9, 1.0, 0.0) < 1e-8
    # negative and zero D: the value gat_forward maps to 0, gain * (-3/8 - c)
    c = 25.0 / GAIN ** 2
    np.testing.assert_allclose(gat_inverse([-2.0, 0.0], GAIN, 25.0), GAIN * (-0.375 - c))
    z0 = GAIN * (-0.375 - c)
    assert gat_forward(z0, GAIN, 25.0) == pytest.approx(0.0, abs=1e-6)
    # at D = sqrt(3/2) (a zero Poisson count) both inverses give y = 0 in normalised units
    assert gat_inverse(np.sqrt(1.5), 1.0, 0.0) == pytest.approx(0.0, abs=1e-12)
    assert gat_inverse(np.sqrt(1.5), 1.0, 0.0, method="algebraic") == pytest.approx(0.0, abs=1e-12)


def test_inverse_after_forward_at_high_counts():
    z = np.linspace(500.0, 5000.0, 50)
    for offset in (25.0, -5.0):
        d = gat_forward(z, GAIN, offset)
        np.testing.assert_allclose(gat_inverse(d, GAIN, offset, method="algebraic"), z, rtol=1e-12)
        # the unbiased inverse adds E[f(z)] - f(E[z]) back: about gain / 4 at high counts
        # (plus gain * sqrt(3/2) / (4 D) + ..., 0.035 at z = 500)
        np.testing.assert_allclose(gat_inverse(d, GAIN, offset) - z, GAIN / 4, atol=0.04)


@pytest.mark.parametrize("gain, offset, message", [
    (0.0, 1.0, "gain must be positive"), (-1.0, 1.0, "gain must be positive"),
    (np.nan, 1.0, "gain must be a finite"), (1.0, np.inf, "offset must be a finite"),
    ("2", 1.0, "gain must be a finite"), (True, 1.0, "gain must be a finite"),
])
def test_transform_parameters_are_checked(gain, offset, message):
    with pytest.raises(ValueError, match=message):
        gat_forward(np.ones(3), gain, offset)
    with pytest.raises(ValueError, match=message):
        gat_inverse(np.ones(3), gain, offset)


def test_transform_values_are_checked():
    with pytest.raises(ValueError, match="z contains NaN"):
        gat_forward([1.0, np.nan], 1.0, 0.0)
    with pytest.raises(ValueError, match="d contains NaN"):
        gat_inverse([np.inf], 1.0, 0.0)
    with pytest.raises(ValueError, match="method"):
        gat_inverse([1.0], 1.0, 0.0, method="exact")


# ---------------------------------------------------------------------------------------------
# Denoising
# ---------------------------------------------------------------------------------------------

def gaussian_denoiser(image, sigma):
    assert sigma == 1.0
    return ndimage.gaussian_filter(image, 2.0)


def test_vst_denoise_reduces_the_error():
    y = smooth_truth(10, 200, 6, edges=False)
    z = poisson_gaussian(y, GAIN, SIGMA, 16)
    result = vst_denoise(z, gaussian_denoiser)
    assert isinstance(result, VSTResult)
    denoised, gain, offset = result
    assert denoised.dtype == np.float32 and denoised.shape == z.shape
    assert (gain, offset) == estimate_poisson_gaussian(z)
    mse_noisy = np.mean((z - y) ** 2)
    mse = np.mean((denoised - y) ** 2)
    assert mse < mse_noisy / 5
    # a mismatched inverse (the transform of another noise level) does worse
    wrong = gat_inverse(gaussian_denoiser(gat_forward(z, gain, offset), 1.0), 2 * gain, offset)
    assert np.mean((wrong - y) ** 2) > 10 * mse


def test_vst_denoise_with_an_oracle_denoiser_is_unbiased_at_low_counts():
    # four constant quadrants; the "denoiser" replaces each quadrant by its mean in the stabilised
    # domain, so the result is the inverse of E[f(z)]: unbiased with the right inverse, biased by
    # about -gain / 4 with the algebraic inverse, wrong if forward and inverse disagree
    levels = np.array([[2.0, 6.0], [20.0, 80.0]])   # expected counts per quadrant
    y = np.kron(levels * GAIN, np.ones((256, 256)))
    z = poisson_gaussian(y, GAIN, SIGMA, 17)
    quadrants = np.kron(np.arange(4).reshape(2, 2), np.ones((256, 256), dtype=int))

    def oracle(image, sigma):
        means = ndimage.mean(image, quadrants, index=np.arange(4))
        return means[quadrants]
    denoised, gain, offset = vst_denoise(z, oracle, gain=GAIN, offset=SIGMA ** 2)
    assert (gain, offset) == (GAIN, SIGMA ** 2)
    quadrant_means = ndimage.mean(denoised, quadrants, index=np.arange(4))
    np.testing.assert_allclose(quadrant_means, GAIN * levels.ravel(), rtol=0.02)
    algebraic = gat_inverse(oracle(gat_forward(z, GAIN, SIGMA ** 2), 1.0), GAIN, SIGMA ** 2, method="algebraic")
    low = quadrants == 0
    assert abs(algebraic[low].mean() - y[low].mean()) > 5 * abs(denoised[low].mean() - y[low].mean())


def test_vst_denoise_with_the_identity_denoiser():
    y = smooth_truth(300, 3000, 8, n=128)   # high counts: the inverse of f(z) is z + gain / 4
    z = poisson_gaussian(y, GAIN, SIGMA, 18)
    denoised, _, _ = vst_denoise(z, lambda image, sigma: image, gain=GAIN, offset=SIGMA ** 2)
    np.testing.assert_allclose(denoised, z + GAIN / 4, atol=0.05 * GAIN + 1e-3 * z.max())
    np.testing.assert_allclose(denoised, gat_inverse(gat_forward(z, GAIN, SIGMA ** 2), GAIN, SIGMA ** 2),
                               rtol=1e-6)


def test_vst_denoise_calls_the_denoiser_with_the_stabilised_image():
    z = poisson_gaussian(smooth_truth(10, 200, 9, n=64), GAIN, SIGMA, 19)
    seen = {}

    def spy(image, sigma):
        seen.update(image=image, sigma=sigma)
        return image
    vst_denoise(z, spy, gain=GAIN, offset=SIGMA ** 2)
    assert seen["sigma"] == 1.0
    assert seen["image"].shape == z.shape and seen["image"].dtype == np.float64
    np.testing.assert_allclose(seen["image"], gat_forward(z, GAIN, SIGMA ** 2))


def test_vst_denoise_checks_its_arguments():
    z = poisson_gaussian(smooth_truth(10, 200, 9, n=64), GAIN, SIGMA, 19)
    identity = lambda image, sigma: image  # noqa: E731
    with pytest.raises(TypeError, match="callable"):
        vst_denoise(z, "bm3d")
    with pytest.raises(ValueError, match="both gain and offset"):
        vst_denoise(z, identity, gain=GAIN)
    with pytest.raises(ValueError, match="2-D"):
        vst_denoise(z[None], identity, gain=GAIN, offset=1.0)
    with pytest.raises(ValueError, match="NaN"):
        vst_denoise(np.where(z > 100, np.nan, z), identity, gain=GAIN, offset=1.0)
    with pytest.raises(ValueError, match="gain must be positive"):
        vst_denoise(z, identity, gain=0.0, offset=1.0)
    with pytest.raises(ValueError, match="shape"):
        vst_denoise(z, lambda image, sigma: image[1:], gain=GAIN, offset=1.0)
    with pytest.raises(ValueError, match="NaN or infinite"):
        vst_denoise(z, lambda image, sigma: image * np.nan, gain=GAIN, offset=1.0)
