"""Variance stabilisation for Poisson-Gaussian noise: the "VST + Gaussian denoiser" baseline.

Noise model: a pixel ``z`` with expected value ``y`` has variance ``gain * y + offset``. This is
the Poisson-Gaussian model ``z = gain * p + n`` with ``p ~ Poisson((y - mu) / gain)`` and
``n ~ N(mu, sigma**2)``, for which ``offset = sigma**2 - gain * mu``; ``offset`` can be negative
when the dark level ``mu`` is large compared with the read noise.

* :func:`estimate_poisson_gaussian` fits ``gain`` and ``offset`` from one noisy image, in the spirit
  of Foi, Trimeche, Katkovnik and Egiazarian, "Practical Poissonian-Gaussian noise modeling and
  fitting for single-image raw-data", IEEE Trans. Image Process. 17(10), 2008: a high-pass residual
  measures the local noise, a low-pass image the local expected value, only smooth and unclipped
  regions are used, and the variances of level sets (bins of the local mean) are fitted by a line.
* :func:`gat_forward` is the generalised Anscombe transform (GAT), after which the noise has
  approximately unit variance.
* :func:`gat_inverse` is, by default, the closed-form approximation of the exact unbiased inverse of
  the GAT given by Makitalo and Foi, "A closed-form approximation of the exact unbiased inverse of
  the Anscombe variance-stabilizing transformation", IEEE Trans. Image Process. 20(9), 2011, and
  "Optimal inversion of the generalized Anscombe transformation for Poisson-Gaussian noise",
  IEEE Trans. Image Process. 22(1), 2013.
* :func:`vst_denoise` chains them around any Gaussian denoiser, e.g. BM3D with ``sigma = 1``.

Only numpy and scipy are used; BM3D (the ``bm3d`` package) is the caller's choice of denoiser.
"""

from collections import namedtuple
import math

import numpy as np
from scipy import ndimage, signal

from ._checks import is_int, is_number

__all__ = ["estimate_poisson_gaussian", "gat_forward", "gat_inverse", "vst_denoise", "VSTResult"]

VSTResult = namedtuple("VSTResult", ["denoised", "gain", "offset"])
VSTResult.__doc__ = """Result of :func:`vst_denoise`: ``denoised, gain, offset = vst_denoise(...)``.

denoised : numpy.ndarray
    float32 estimate of the expected image, same shape as the input.
gain, offset : float
    Noise parameters used (given or estimated): variance = ``gain * value + offset``.
"""

#: Smallest image side accepted by the estimator.
MIN_SIDE = 16
#: Side of the window of the local residual energy used to find non-smooth regions.
ENERGY_WINDOW = 9
#: Regions whose energy ratio exceeds 1 by more than this many null standard deviations are excluded.
ENERGY_THRESHOLD = 3.0
#: 1.4826 * MAD is the standard deviation of a normal distribution.
_MAD_TO_STD = 1.482602218505602
#: sqrt(3/2); also 2 * sqrt(3/8), the transform of a zero Poisson count (normalised units).
_SQRT_3_2 = np.sqrt(1.5)
#: High-pass kernel: outer product of second differences, unit sum of squares.
_RESIDUAL_KERNEL = np.outer([1.0, -2.0, 1.0], [1.0, -2.0, 1.0]) / 6.0


# ---------------------------------------------------------------------------------------------
# Transform and its inverses
# ---------------------------------------------------------------------------------------------

def gat_forward(z, gain, offset):
    """Generalised Anscombe transform ``(2 / gain) * sqrt(max(gain*z + 3/8*gain**2 + offset, 0))``.

    Parameters
    ----------
    z : array_like
        Noisy values with ``Var[z] = gain * E[z] + offset``; any shape.
    gain : float
        Positive Poisson gain (variance per unit of signal).
    offset : float
        Variance at zero signal (read-noise variance minus ``gain`` times the dark level).

    Returns
    -------
    numpy.ndarray
        float64 array of the shape of ``z``; its noise has approximately unit variance.
    """
    gain, offset = _check_parameters(gain, offset)
    z = _finite_array(z, "z")
    return (2.0 / gain) * np.sqrt(np.maximum(gain * z + 0.375 * gain ** 2 + offset, 0.0))


def gat_inverse(d, gain, offset, method="unbiased"):
    """Inverse of :func:`gat_forward`, for an estimate of the *expected* transformed value.

    Parameters
    ----------
    d : array_like
        Transformed values, e.g. a denoised stabilised image; any shape.
    gain, offset : float
        Parameters used in :func:`gat_forward`.
    method : {"unbiased", "algebraic"}
        ``"unbiased"`` (default): the closed-form approximation of the exact unbiased inverse of
        the Anscombe transform (Makitalo and Foi 2011), used for the GAT as in Makitalo and Foi
        2013: in normalised units ``y = z / gain`` and ``c = offset / gain**2``,
        ``I(D) = D**2/4 + (1/4) sqrt(3/2) / D - (11/8) / D**2 + (5/8) sqrt(3/2) / D**3 - 1/8``
        and the result is ``gain * (I(D) - c)``. ``"algebraic"``: the direct inverse
        ``gain * (D**2/4 - 3/8 - c)``, which is biased at low counts because
        ``E[f(z)] != f(E[z])``.

    Returns
    -------
    numpy.ndarray
        float64 array of the shape of ``d``.

    Notes
    -----
    The closed form grows without bound as ``D -> 0`` (the ``D**-3`` term). It is used for
    ``D >= sqrt(3/2)``, the transform of a zero Poisson count with no Gaussian noise, where it
    equals 0 and increases with ``D``. Below that the algebraic inverse ``D**2/4 - 3/8`` is used; it
    also equals 0 at ``D = sqrt(3/2)``, so the inverse is continuous and increasing on ``D >= 0``.
    Negative ``d`` is treated as 0, whose inverse ``gain * (-3/8 - c)`` is the value that
    :func:`gat_forward` maps to 0. The result is not clipped at 0 (the data may have a dark
    level).
    """
    gain, offset = _check_parameters(gain, offset)
    d = np.maximum(_finite_array(d, "d"), 0.0)
    algebraic = d ** 2 / 4.0 - 0.375
    if method == "algebraic":
        y = algebraic
    elif method == "unbiased":
        safe = np.maximum(d, _SQRT_3_2)
        closed = (safe ** 2 / 4.0 + 0.25 * _SQRT_3_2 / safe - 1.375 / safe ** 2
                  + 0.625 * _SQRT_3_2 / safe ** 3 - 0.125)
        y = np.where(d >= _SQRT_3_2, closed, algebraic)
    else:
        raise ValueError(f"method must be 'unbiased' or 'algebraic', not {method!r}")
    return gain * (y - offset / gain ** 2)


# ---------------------------------------------------------------------------------------------
# Denoising
# ---------------------------------------------------------------------------------------------

def vst_denoise(image, denoiser, gain=None, offset=None, clip="auto"):
    """Denoise Poisson-Gaussian noise with a Gaussian denoiser in the GAT-stabilised domain.

    Parameters
    ----------
    image : array_like
        2-D noisy image.
    denoiser : callable
        Called as ``denoiser(stabilised, sigma=1.0)`` with a float64 2-D array whose noise has
        unit standard deviation; must return an array of the same shape, e.g.
        ``lambda x, sigma: bm3d.bm3d(x, sigma)``.
    gain, offset : float or None
        Noise parameters; both ``None`` (default) to estimate them from ``image`` with
        :func:`estimate_poisson_gaussian`, or both given.
    clip : "auto", None or (low, high)
        Passed to :func:`estimate_poisson_gaussian` when estimating.

    Returns
    -------
    VSTResult
        Named tuple ``(denoised, gain, offset)``: the float32 denoised image of the input's shape
        (inverse transform by :func:`gat_inverse` with ``method="unbiased"``) and the parameters
        used, as floats.
    """
    if not callable(denoiser):
        raise TypeError("denoiser must be callable as denoiser(image, sigma=1.0)")
    z = _check_image(image)
    if (gain is None) != (offset is None):
        raise ValueError("give both gain and offset, or neither (to estimate both)")
    if gain is None:
        gain, offset = estimate_poisson_gaussian(image, clip=clip)
    gain, offset = _check_parameters(gain, offset)
    stabilised = gat_forward(z, gain, offset)
    result = np.asarray(denoiser(stabilised, sigma=1.0), dtype=np.float64)
    if result.shape != z.shape:
        raise ValueError(f"the denoiser returned shape {result.shape} for an image of shape {z.shape}")
    if not np.all(np.isfinite(result)):
        raise ValueError("the denoiser returned NaN or infinite values")
    denoised = gat_inverse(result, gain, offset).astype(np.float32)
    return VSTResult(denoised, gain, offset)


# ---------------------------------------------------------------------------------------------
# Estimation of gain and offset
# ---------------------------------------------------------------------------------------------

def estimate_poisson_gaussian(image, clip="auto", n_bins=24, window=7, min_count=200,
                              max_clipped_fraction=0.02, iterations=2):
    """Estimate ``gain`` and ``offset`` of ``Var[z | E z = y] = gain * y + offset`` from one image.

    Parameters
    ----------
    image : array_like
        2-D noisy image, at least 16 x 16 (much larger in practice: a few hundred pixels a side).
    clip : "auto", None or (low, high)
        Values at which the data were clipped; pixels whose residual involves a value ``<= low`` or
        ``>= high`` are not used, nor are bins with more than ``max_clipped_fraction`` of such
        pixels (their variance is reduced by clipping). ``"auto"``: the limits of an integer dtype
        (0 and 255 for uint8), none for floats. Either limit may be ``None``.
    n_bins : int
        Number of level sets (bins of equal pixel count over the local mean).
    window : int
        Odd side (>= 3) of the box filter giving the local mean.
    min_count : int
        Bins with fewer pixels are not used.
    max_clipped_fraction : float
        Bins in which a larger fraction of pixels was excluded for clipping are not used.
    iterations : int
        Number of refits that exclude non-smooth regions using the previous fit (0 = none).

    Returns
    -------
    gain, offset : float
        Least-squares line through the bin variances. ``gain`` is not forced to be positive: a value
        near or below 0 means that no signal-dependent noise was found.

    Raises
    ------
    ValueError
        For an image that is not 2-D, too small, or not finite, bad options, or when fewer than two
        bins of usable pixels with different means remain.

    Notes
    -----
    * Residual: ``r = (d_xx d_yy z) / 6``, the outer product of second differences ``[1, -2, 1]``
      normalised to a unit sum of squared weights, so that ``Var[r] = v`` for independent noise of
      variance ``v``. It annihilates constant and linear signals and any sum of a function of the
      row and a function of the column. With the noise model, ``Var[r] = gain * s + offset`` where
      ``s`` is the mean of the expected image under the squared weights (the *support mean*).
    * Levels: pixels are sorted into ``n_bins`` equal-count bins by the ``window`` box mean, which
      is uncorrelated with ``r`` (the residual's weights sum to 0) and has little noise. For each
      bin the abscissa is the average support mean of ``z`` and the ordinate a robust variance
      of ``r``: the sample variance within ``4 * 1.4826 * MAD`` of the median, divided by the
      variance of a standard normal truncated to +-4.
    * Fit: weighted least squares, weights ``count / predicted_variance**2``, re-weighted with the
      fitted line (a few times).
    * Smooth regions: each of ``iterations`` refits drops pixels whose *ring energy* (mean of
      ``r**2`` over a 9 x 9 window less its central 5 x 5, i.e. residuals that share no pixel with
      the central one) exceeds the fitted variance by more than 3 of its standard deviations under
      Gaussian noise. The ring makes the selection independent of the central pixel's own noise,
      so that it does not bias the variances, while it removes edges and texture; features smaller
      than the excluded 5 x 5 block go undetected (the robust variance limits their effect).
    * Clipping: pixels whose 3 x 3 neighbourhood has a value at a clipping limit are not used.
      The remaining pixels of a level where clipping is frequent have a reduced variance, hence the
      ``max_clipped_fraction`` rule.
    """
    z = _check_image(image, minimum=MIN_SIDE)
    _check_estimation_options(n_bins, window, min_count, max_clipped_fraction, iterations)
    low, high = _clip_limits(image, clip)
    stats = _local_statistics(z, window, low, high)
    usable = ~stats.near_clip
    if not np.any(usable):
        raise ValueError("no usable pixels: every pixel is at or next to a clipping limit")
    gain, offset = _fit_line(*_bin_variances(stats, usable, n_bins, min_count, max_clipped_fraction))
    for _ in range(iterations):
        selected = usable & _smooth_pixels(stats.energy, stats.level, gain, offset)
        gain, offset = _fit_line(*_bin_variances(stats, selected, n_bins, min_count, max_clipped_fraction))
    return float(gain), float(offset)


_LocalStatistics = namedtuple("_LocalStatistics",
                              ["residual", "level", "support_mean", "near_clip", "energy"])


def _local_statistics(z, window, low, high):
    """Per-pixel statistics on the image interior (2-D arrays, no padding effects).

    residual : high-pass residual, unit noise gain.
    level : box mean over ``window`` (the variable the bins are made from).
    support_mean : mean of ``z`` with the squared residual weights (the residual's variance is
        ``gain * E[support_mean] + offset``).
    near_clip : the residual involves a clipped value.
    energy : ring mean of ``residual**2`` (see :func:`_ring_weights`).
    """
    residual = ndimage.correlate(z, _RESIDUAL_KERNEL, mode="reflect")
    level = ndimage.uniform_filter(z, window, mode="reflect")
    support_mean = ndimage.correlate(z, _RESIDUAL_KERNEL ** 2, mode="reflect")
    energy = ndimage.correlate(residual ** 2, _ring_weights(), mode="reflect")
    clipped = np.zeros(z.shape, dtype=bool)
    if low is not None:
        clipped |= z <= low
    if high is not None:
        clipped |= z >= high
    near_clip = ndimage.maximum_filter(clipped, size=3, mode="nearest")
    # the ring energy reaches ENERGY_WINDOW // 2 residuals away, each reaching 1 pixel further
    margin = max(window // 2, ENERGY_WINDOW // 2 + 1)
    interior = (slice(margin, z.shape[0] - margin), slice(margin, z.shape[1] - margin))
    return _LocalStatistics(residual[interior], level[interior], support_mean[interior],
                            near_clip[interior], energy[interior])


def _bin_variances(stats, selected, n_bins, min_count, max_clipped_fraction):
    """Mean support, robust residual variance and count in equal-count bins of the level.

    Bins are made from the selected pixels; a bin is dropped when it has fewer than
    ``min_count`` pixels or when, among all interior pixels with a level in its range, more than
    ``max_clipped_fraction`` are near a clipped value.
    """
    residual, level = stats.residual[selected], stats.level[selected]
    support_mean = stats.support_mean[selected]
    means, variances, counts = [], [], []
    order = np.argsort(level, kind="stable")
    for chunk in np.array_split(order, n_bins) if order.size else []:
        if chunk.size < min_count:
            continue
        in_range = (stats.level >= level[chunk[0]]) & (stats.level <= level[chunk[-1]])
        if np.count_nonzero(stats.near_clip & in_range) > max_clipped_fraction * np.count_nonzero(in_range):
            continue
        means.append(support_mean[chunk].mean())
        variances.append(_robust_variance(residual[chunk]))
        counts.append(chunk.size)
    return np.array(means), np.array(variances), np.array(counts, dtype=np.float64)


def _robust_variance(values, cut=4.0):
    """Variance within ``cut`` robust standard deviations of the median, normal-consistent."""
    centre = np.median(values)
    scale = _MAD_TO_STD * np.median(np.abs(values - centre))
    if scale == 0:
        return float(np.var(values))
    kept = values[np.abs(values - centre) <= cut * scale]
    # variance of a standard normal truncated to [-cut, cut]
    density = np.exp(-0.5 * cut ** 2) / np.sqrt(2 * np.pi)
    inside = math.erf(cut / math.sqrt(2.0))
    factor = 1.0 - 2.0 * cut * density / inside
    return float(np.var(kept) / factor)


def _fit_line(means, variances, counts, iterations=3):
    """Weighted least-squares line ``variance = gain * mean + offset``."""
    if means.size < 2 or np.ptp(means) <= 0:
        raise ValueError(
            "too few usable pixels to fit the noise: fewer than two bins of smooth, unclipped "
            "pixels with different means (is the image large enough, not mostly clipped?)")
    design = np.stack([means, np.ones_like(means)], axis=1)
    floor = 1e-3 * max(float(np.median(np.abs(variances))), np.finfo(float).tiny)
    predicted = np.maximum(variances, floor)
    for _ in range(iterations):
        weights = np.sqrt(counts) / predicted  # sqrt of count / variance**2
        coefficients, *_ = np.linalg.lstsq(design * weights[:, None], variances * weights, rcond=None)
        predicted = np.maximum(design @ coefficients, floor)
    return coefficients[0], coefficients[1]


def _smooth_pixels(energy, level, gain, offset):
    """Pixels whose surrounding residual energy is not clearly above the fitted variance.

    Where the fit holds and the signal is smooth, the ratio of the ring energy to the fitted
    variance has mean 1 and the standard deviation of :func:`_energy_ratio_std`; pixels beyond
    ``1 + ENERGY_THRESHOLD`` such deviations are excluded. The variance is predicted from the
    box mean ``level``, which is uncorrelated with the central residual.
    """
    predicted = gain * level + offset
    floor = 1e-3 * max(float(np.median(np.abs(predicted))), np.finfo(float).tiny)
    ratio = energy / np.maximum(predicted, floor)
    return ratio <= 1.0 + ENERGY_THRESHOLD * _energy_ratio_std()


def _ring_weights():
    """Weights of the ring energy: uniform over the window less its central 5 x 5 block."""
    weights = np.ones((ENERGY_WINDOW, ENERGY_WINDOW))
    centre = ENERGY_WINDOW // 2
    weights[centre - 2:centre + 3, centre - 2:centre + 3] = 0.0
    return weights / weights.sum()


def _energy_ratio_std():
    """Standard deviation of the ring energy over ``v`` for Gaussian noise of variance ``v``.

    ``Var = 2 * sum over pairs (p, q) of w_p w_q rho(p - q)**2``, with ``w`` the ring weights and
    ``rho`` the autocorrelation of the residual's unit-norm kernel.
    """
    rho = signal.correlate2d(_RESIDUAL_KERNEL, _RESIDUAL_KERNEL)
    weights = _ring_weights()
    pairs = signal.correlate2d(weights, weights)
    centre = np.array(pairs.shape) // 2
    offsets = np.array(rho.shape) // 2
    window = pairs[centre[0] - offsets[0]:centre[0] + offsets[0] + 1,
                   centre[1] - offsets[1]:centre[1] + offsets[1] + 1]
    return float(np.sqrt(2.0 * np.sum(window * rho ** 2)))


# ---------------------------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------------------------

def _check_image(image, minimum=1):
    """A finite 2-D float64 copy of ``image`` with both sides at least ``minimum``."""
    z = np.asarray(image)
    if z.ndim != 2:
        raise ValueError(f"image must be 2-D, got shape {z.shape}")
    if min(z.shape) < minimum:
        raise ValueError(f"image must be at least {minimum} x {minimum} pixels, got shape {z.shape}")
    return _finite_array(z, "image")


def _finite_array(values, name):
    values = np.asarray(values)
    if not np.issubdtype(values.dtype, np.number) or np.iscomplexobj(values):
        raise ValueError(f"{name} must be real numbers, got dtype {values.dtype}")
    values = values.astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return values


def _check_parameters(gain, offset):
    for name, value in (("gain", gain), ("offset", offset)):
        if not is_number(value):
            raise ValueError(f"{name} must be a finite real number, got {value!r}")
    if gain <= 0:
        raise ValueError(f"gain must be positive, got {gain!r} (no signal-dependent noise: "
                         "use a Gaussian denoiser directly)")
    return float(gain), float(offset)


def _clip_limits(image, clip):
    """``(low, high)`` clipping limits, either ``None``."""
    if isinstance(clip, str):
        if clip != "auto":
            raise ValueError(f"clip must be 'auto', None or (low, high), not {clip!r}")
        dtype = np.asarray(image).dtype
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            return float(info.min), float(info.max)
        return None, None
    if clip is None:
        return None, None
    try:
        low, high = clip
    except (TypeError, ValueError):
        raise ValueError(f"clip must be 'auto', None or (low, high), not {clip!r}") from None
    for value in (low, high):
        if value is not None and not is_number(value):
            raise ValueError(f"clip limits must be finite numbers or None, got {clip!r}")
    if low is not None and high is not None and low >= high:
        raise ValueError(f"clip must have low < high, got {clip!r}")
    return (None if low is None else float(low)), (None if high is None else float(high))


def _check_estimation_options(n_bins, window, min_count, max_clipped_fraction, iterations):
    if not is_int(n_bins, 2):
        raise ValueError(f"n_bins must be an integer >= 2, got {n_bins!r}")
    if not is_int(window, 3) or window % 2 == 0:
        raise ValueError(f"window must be an odd integer >= 3, got {window!r}")
    if not is_int(min_count, 1):
        raise ValueError(f"min_count must be a positive integer, got {min_count!r}")
    if not is_int(iterations, 0):
        raise ValueError(f"iterations must be a non-negative integer, got {iterations!r}")
    if not (is_number(max_clipped_fraction, 0) and max_clipped_fraction <= 1):
        raise ValueError(f"max_clipped_fraction must be in [0, 1], got {max_clipped_fraction!r}")
