"""Synthetic fluorescence-microscopy data with a known camera noise process.

The demo and the tests of :mod:`pn2v_tf` need noisy images whose clean signal and noise
distribution are known exactly, without downloading anything. This module draws such data from a
simple, physically motivated model.

Scene model
-----------
A scene is an image of *expected photon counts* per pixel (:func:`synthetic_photons`): a dim,
constant background, blurred round or elliptic blobs of various sizes (cells, nuclei, vesicles)
with a faint internal texture, and thin curved filaments (cytoskeleton-like random walks with
momentum). Everything is blurred by a Gaussian point-spread function, and a weak, very wide
out-of-focus haze is added. The structures are scaled so that the scene spans ``background`` to
``max_photons`` photons.

Z-stacks
--------
The same code draws 3-D scenes (Z, Y, X): ellipsoidal blobs in random orientations, filaments
that are space curves (their plane of bending twists), and a Gaussian PSF per axis. All sizes are
physical, in units of the pixel size; the planes are ``z_step`` pixel sizes apart (default 3), so a
structure spans ``z_step`` times fewer voxels along Z than along Y and X. The PSF is wider along Z
(``axial_psf_sigma`` = 3 pixel sizes against 1.3 laterally, as the axial resolution of a microscope
is 2 to 3 times worse), i.e. ``axial_psf_sigma / z_step`` voxels. :func:`make_synthetic_volumes`
returns a data set of such stacks; its calibration data stay 2-D frames, because the noise model
is pixel-wise.

Noise model
-----------
A camera observation of a scene with expected photon counts :math:`p` is (:func:`camera_noise`)

.. math::

    x = g \\, n + o + r, \\qquad n \\sim \\mathrm{Poisson}(p), \\qquad
    r \\sim \\mathcal{N}(0, \\sigma_r^2),

with gain :math:`g` (camera units per photon), offset :math:`o` and read noise :math:`\\sigma_r`
(camera units), all pixels independent. The *signal*, i.e. the ground truth a denoiser should
recover, is the expected observation :math:`s = g p + o` (:func:`expected_observation`). The noise
is signal dependent: :math:`\\mathrm{E}[x] = s` and
:math:`\\mathrm{Var}[x] = g (s - o) + \\sigma_r^2 = g^2 p + \\sigma_r^2`.

Calibration data
----------------
Probabilistic Noise2Void needs a noise model :math:`p(x \\mid s)`, typically a 2-D histogram of
(signal, observation) pairs measured on a static calibration sample imaged many times, with the
mean of the frames standing in for the signal. :func:`make_synthetic_data` (and
:func:`make_synthetic_volumes`) therefore also returns many noisy frames of one calibration
scene: a smooth ramp with a few superimposed structures whose signal covers the full range of the
training and test images, a bit beyond both ends.

Multichannel images
-------------------
:func:`make_synthetic_multichannel` draws images (Y, X, C) whose channels are different stains of
one field of view, each imaged through its own camera settings and described by a
:class:`ChannelSpec`: its own structures (e.g. large nuclei with a mottled, chromatin-like texture;
many small vesicles; filaments), brightness (photon counts) and gain, offset and read noise, so each
channel needs its own noise model; it comes with one calibration stack per channel. The default
channels are :data:`DEFAULT_CHANNELS`. The structures of different channels are drawn
independently: the channels do not share positions.

All randomness comes from :class:`numpy.random.Generator` objects; :func:`make_synthetic_data`,
:func:`make_synthetic_volumes` and :func:`make_synthetic_multichannel` derive independent child
generators from one seed, so their output is bit-identical for equal seeds.
"""

import itertools
import math
import numbers
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from scipy import ndimage

from ._checks import is_int as _is_int

__all__ = [
    "CameraParams",
    "SyntheticData",
    "camera_log_likelihood",
    "camera_noise",
    "expected_observation",
    "ChannelSpec",
    "DEFAULT_CHANNELS",
    "SyntheticMultichannelData",
    "make_synthetic_data",
    "make_synthetic_multichannel",
    "make_synthetic_volumes",
    "synthetic_photons",
]

DEFAULT_BACKGROUND = 2.0
DEFAULT_MAX_PHOTONS = 60.0
DEFAULT_GAIN = 3.0
DEFAULT_OFFSET = 100.0
DEFAULT_READ_NOISE = 6.0

PSF_SIGMA = 1.3  # standard deviation of the Gaussian point-spread function, pixels
DEFAULT_Z_STEP = 3.0  # distance between the planes of a z-stack, pixels
AXIAL_PSF_SIGMA = 3.0  # standard deviation of the PSF along Z, pixels (about 2.3 times lateral)
MIN_DEPTH = 4  # fewest planes of a z-stack
VOLUME_BLOB_DENSITY = 80e-6  # blobs per cubic pixel of make_synthetic_volumes' scenes
VOLUME_FILAMENT_DENSITY = 30e-6  # filaments per cubic pixel of make_synthetic_volumes' scenes
BLOB_RADIUS_RANGE = (1.5, 14.0)  # pixels, drawn log-uniformly
FILAMENT_STEP = 0.5  # distance between successive filament samples, pixels
FILAMENT_CURVATURE_RADIUS = 40.0  # typical radius of curvature of filaments, pixels
TEXTURE_SCALE = 3.0  # correlation length of the blobs' texture, pixels
TEXTURE_CONTRAST = 0.4  # the texture scales the blobs' brightness by 1 - TEXTURE_CONTRAST to 1
HAZE_STRENGTH = 0.3  # out-of-focus haze relative to the in-focus structures
CALIBRATION_RANGE = (0.0, 1.2)  # calibration photons, in units of max_photons


# --------------------------------------------------------------------------------------------
# argument validation


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(value)


def _check_shape(shape, name, ndims=(2,)):
    """Return ``shape`` as a tuple of Python ints, or raise ``ValueError``.

    ``ndims`` lists the allowed numbers of axes: (Y, X) with Y, X >= 16, or (Z, Y, X) with also
    Z >= MIN_DEPTH.
    """
    try:
        items = tuple(shape)
    except TypeError:
        items = ()
    ok = (len(items) in ndims and all(_is_int(n) for n in items)
          and all(n >= 16 for n in items[-2:]) and all(n >= MIN_DEPTH for n in items[:-2]))
    if not ok:
        pair = "a pair of integers >= 16"
        triple = f"three integers (Z, Y, X), Z >= {MIN_DEPTH} and Y, X >= 16"
        wanted = {(2,): pair, (3,): triple}.get(tuple(ndims), f"{pair} (Y, X) or {triple}")
        raise ValueError(f"{name} must be {wanted}, got {shape!r}")
    return tuple(int(n) for n in items)


def _check_axial(shape, z_step, axial_psf_sigma):
    """Defaults and checks of the 3-D sampling arguments; both must be None for a 2-D shape."""
    if len(shape) == 2:
        for value, name in ((z_step, "z_step"), (axial_psf_sigma, "axial_psf_sigma")):
            if value is not None:
                raise ValueError(f"{name} applies to 3-D shapes (Z, Y, X) only, got {name}={value!r} "
                                 f"for shape {shape!r}")
        return None, None
    z_step = DEFAULT_Z_STEP if z_step is None else _check_real(z_step, "z_step", low=0, strict=True)
    axial_psf_sigma = AXIAL_PSF_SIGMA if axial_psf_sigma is None else _check_real(
        axial_psf_sigma, "axial_psf_sigma", low=0, strict=True)
    return z_step, axial_psf_sigma


def _check_int(value, name, low):
    if not _is_int(value) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _check_real(value, name, low=None, strict=False):
    ok = _is_real(value) and (low is None or (value > low if strict else value >= low))
    if not ok:
        bound = "" if low is None else (f" > {low}" if strict else f" >= {low}")
        raise ValueError(f"{name} must be a finite number{bound}, got {value!r}")
    return float(value)


def _check_radius_range(value, name):
    """``value`` as a (smallest, largest) pair of floats with 0 < smallest <= largest."""
    try:
        low, high = value
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (smallest, largest) of radii, got {value!r}") from None
    ok = _is_real(low) and _is_real(high) and 0 < low <= high
    if not ok:
        raise ValueError(f"{name} must be a pair of finite radii with 0 < smallest <= largest, got {value!r}")
    return float(low), float(high)


def _check_texture(contrast, scale):
    """(texture_contrast in [0, 1], texture_scale > 0) as floats, or ``ValueError``."""
    contrast = _check_real(contrast, "texture_contrast", low=0)
    if contrast > 1:
        raise ValueError(f"texture_contrast must be in [0, 1], got {contrast!r}")
    return contrast, _check_real(scale, "texture_scale", low=0, strict=True)


def _check_photons(photons):
    photons = np.asarray(photons, dtype=np.float64)
    if not np.all(np.isfinite(photons)) or np.any(photons < 0):
        raise ValueError("photons must be finite and non-negative")
    return photons


def _check_rng(rng):
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return rng


# --------------------------------------------------------------------------------------------
# camera


@dataclass(frozen=True)
class CameraParams:
    """Parameters of the camera noise model ``gain * Poisson(photons) + offset + N(0, read_noise)``.

    The defaults resemble a low-light sCMOS acquisition.

    Attributes
    ----------
    gain : float
        Camera units (ADU) per detected photon, > 0. Default: 3.0.
    offset : float
        Camera units added to every pixel (bias). Default: 100.0.
    read_noise : float
        Standard deviation of the Gaussian read noise in camera units, >= 0. Default: 6.0.
    """

    gain: float = DEFAULT_GAIN
    offset: float = DEFAULT_OFFSET
    read_noise: float = DEFAULT_READ_NOISE

    def __post_init__(self):
        _check_real(self.gain, "gain", low=0, strict=True)
        _check_real(self.offset, "offset")
        _check_real(self.read_noise, "read_noise", low=0)


def expected_observation(photons, gain=DEFAULT_GAIN, offset=DEFAULT_OFFSET):
    """Noise-free signal in camera units, ``gain * photons + offset``.

    This is the mean of :func:`camera_noise` and the ground truth a denoiser should recover.

    Parameters
    ----------
    photons : array_like
        Expected photon counts, finite and >= 0.
    gain : float
        Camera units per photon, > 0.
    offset : float
        Camera offset (bias).

    Returns
    -------
    numpy.ndarray
        float32 array of the shape of ``photons``.
    """
    photons = _check_photons(photons)
    gain = _check_real(gain, "gain", low=0, strict=True)
    offset = _check_real(offset, "offset")
    return (gain * photons + offset).astype(np.float32)


def camera_noise(photons, rng, gain=DEFAULT_GAIN, offset=DEFAULT_OFFSET,
                 read_noise=DEFAULT_READ_NOISE):
    """Draw one noisy camera observation, ``gain * Poisson(photons) + offset + N(0, read_noise)``.

    Mean and variance per pixel are ``gain * photons + offset`` and
    ``gain**2 * photons + read_noise**2``; pixels are independent.

    Parameters
    ----------
    photons : array_like
        Expected photon counts, finite and >= 0, any shape (e.g. a stack of frames).
    rng : numpy.random.Generator
        Source of the shot and read noise.
    gain : float
        Camera units per photon, > 0.
    offset : float
        Camera offset (bias).
    read_noise : float
        Standard deviation of the Gaussian read noise in camera units, >= 0.

    Returns
    -------
    numpy.ndarray
        float32 array of the shape of ``photons``.
    """
    photons = _check_photons(photons)
    rng = _check_rng(rng)
    gain = _check_real(gain, "gain", low=0, strict=True)
    offset = _check_real(offset, "offset")
    read_noise = _check_real(read_noise, "read_noise", low=0)
    detected = rng.poisson(photons)
    read = rng.normal(0.0, read_noise, size=photons.shape)
    return (gain * detected + offset + read).astype(np.float32)


def camera_log_likelihood(observation, photons, camera=None):
    """Exact ``log p(x | photons)`` of :func:`camera_noise`: the true noise model of the synthetic data.

    ``p(x | photons) = sum_k Poisson(k; photons) N(x; gain k + offset, read_noise)``, summed over
    every count k with non-negligible probability. A reference for fitted noise models.

    Parameters
    ----------
    observation, photons : array_like
        Broadcastable observations (camera units) and expected photon counts (>= 0).
    camera : CameraParams or None
        Default: ``CameraParams()``.

    Returns
    -------
    numpy.ndarray
        float64, the broadcast shape.
    """
    from scipy import special

    camera = CameraParams() if camera is None else camera
    if camera.read_noise <= 0:
        raise ValueError("the likelihood of a camera without read noise is not a density")
    observation, photons = np.broadcast_arrays(np.asarray(observation, dtype=np.float64), _check_photons(photons))
    photons = photons.astype(np.float64)
    top = float(photons.max(initial=0.0))
    counts = np.arange(int(top + 12 * np.sqrt(top) + 20))
    flat_x, flat_p = observation.reshape(-1, 1), photons.reshape(-1, 1)
    log_poisson = special.xlogy(counts, flat_p) - flat_p - special.gammaln(counts + 1)
    residual = (flat_x - camera.gain * counts - camera.offset) / camera.read_noise
    log_terms = log_poisson - 0.5 * residual ** 2 - np.log(camera.read_noise * np.sqrt(2 * np.pi))
    return special.logsumexp(log_terms, axis=1).reshape(observation.shape)


# --------------------------------------------------------------------------------------------
# scene


@dataclass(frozen=True)
class _Geometry:
    """Sampling of a scene: voxel ``shape``, ``spacing`` (pixel sizes per voxel, per axis) and the
    point-spread function's standard deviations ``psf`` in voxels, per axis."""

    shape: tuple
    spacing: tuple
    psf: tuple

    @property
    def extent(self):
        """Physical size of the scene per axis, in pixel sizes."""
        return np.array(self.shape) * np.array(self.spacing)

    def voxels(self, length):
        """A physical ``length`` (pixel sizes) in voxels, per axis."""
        return tuple(length / step for step in self.spacing)


def _geometry(shape, z_step=None, axial_psf_sigma=None):
    """2-D: square pixels and PSF_SIGMA. 3-D: voxels ``z_step`` deep, axial PSF ``axial_psf_sigma``."""
    if len(shape) == 2:
        return _Geometry(shape, (1.0, 1.0), (PSF_SIGMA, PSF_SIGMA))
    return _Geometry(shape, (z_step, 1.0, 1.0), (axial_psf_sigma / z_step, PSF_SIGMA, PSF_SIGMA))


def _smooth_random_field(shape, rng, sigma):
    """Gaussian-filtered white noise rescaled to [0, 1]."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    low, high = field.min(), field.max()
    return (field - low) / (high - low) if high > low else np.zeros(shape)


def _random_rotations(rng, n, ndim):
    """``n`` random rotation matrices, shape (n, ndim, ndim), uniformly distributed.

    2-D: an angle in [0, pi) (enough for a centrally symmetric ellipse). 3-D: a normalised
    Gaussian quaternion, which is uniform on the rotation group.
    """
    if ndim == 2:
        angles = rng.uniform(0.0, np.pi, n)
        sin, cos = np.sin(angles), np.cos(angles)
        return np.stack([np.stack([sin, cos], axis=-1), np.stack([-cos, sin], axis=-1)], axis=1)
    q = rng.standard_normal((n, 4))
    w, x, y, z = (q / np.linalg.norm(q, axis=1, keepdims=True)).T
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], axis=-1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], axis=-1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], axis=-1),
    ], axis=1)


def _draw_blobs(geometry, rng, n_blobs, radius_range=BLOB_RADIUS_RANGE):
    """Sum of sharp-edged elliptic (ellipsoidal) blobs of random size, orientation and brightness.

    Sizes, orientations and positions are physical (pixel sizes), so in a stack of voxels
    ``z_step`` deep a blob spans ``z_step`` times fewer voxels along Z. Major semi-axes are drawn
    log-uniformly from ``radius_range``; brightness is in [0.25, 1]. Each blob is evaluated in its
    bounding box only.
    """
    shape, spacing = geometry.shape, geometry.spacing
    ndim = len(shape)
    image = np.zeros(shape)
    if n_blobs == 0:
        return image
    low, high = np.log(radius_range[0]), np.log(radius_range[1])
    radii = np.exp(rng.uniform(low, high, n_blobs))
    aspects = rng.uniform(0.6, 1.0, (n_blobs, ndim - 1))  # minor over major semi-axes
    rotations = _random_rotations(rng, n_blobs, ndim)
    centres = rng.uniform(0.0, 1.0, (n_blobs, ndim)) * geometry.extent
    brightness = rng.uniform(0.25, 1.0, n_blobs)
    for radius, aspect, rotation, centre, value in zip(radii, aspects, rotations, centres, brightness):
        # nothing farther than radius + 0.5 from the centre: the box reaches radius + 1
        box, offsets = [], []
        for axis, (size, step, c) in enumerate(zip(shape, spacing, centre)):
            first = max(int(np.floor((c - radius - 1.0) / step)), 0)
            stop = min(int(np.ceil((c + radius + 1.0) / step)) + 1, size)
            box.append(slice(first, stop))
            along_axis = np.arange(first, stop, dtype=np.float64) * step - c
            offsets.append(along_axis.reshape([-1 if a == axis else 1 for a in range(ndim)]))
        semi_axes = [radius] + [a * radius for a in aspect]
        distance = None
        for row, semi_axis in zip(rotation, semi_axes):
            coordinate = offsets[0] * row[0]
            for offset, weight in zip(offsets[1:], row[1:]):
                coordinate = coordinate + offset * weight
            coordinate = coordinate / semi_axis
            distance = coordinate if distance is None else np.hypot(distance, coordinate)
        # a soft edge one pixel wide avoids aliasing of the smallest blobs
        image[tuple(box)] += value * np.clip((1.0 - distance) * radius + 0.5, 0.0, 1.0)
    return image


def _space_curve_tangents(curvature, torsion, rng):
    """Unit tangents (3, n) of a 3-D curve with the given turn and twist per step (radians).

    A Frenet-like frame (tangent, normal) turns the tangent towards the normal by
    ``curvature[i]`` and twists the normal about the tangent by ``torsion[i]`` at every step.
    """
    tangent = rng.standard_normal(3)
    tangent /= np.linalg.norm(tangent)
    normal = rng.standard_normal(3)
    normal -= normal.dot(tangent) * tangent
    normal /= max(np.linalg.norm(normal), 1e-12)
    tx, ty, tz = tangent.tolist()
    nx, ny, nz = normal.tolist()
    out = np.empty((len(curvature), 3))
    for i, (cos_k, sin_k, cos_t, sin_t) in enumerate(zip(
            np.cos(curvature).tolist(), np.sin(curvature).tolist(),
            np.cos(torsion).tolist(), np.sin(torsion).tolist())):
        tx, ty, tz, nx, ny, nz = (cos_k * tx + sin_k * nx, cos_k * ty + sin_k * ny,
                                  cos_k * tz + sin_k * nz, cos_k * nx - sin_k * tx,
                                  cos_k * ny - sin_k * ty, cos_k * nz - sin_k * tz)
        bx, by, bz = ty * nz - tz * ny, tz * nx - tx * nz, tx * ny - ty * nx
        nx, ny, nz = cos_t * nx + sin_t * bx, cos_t * ny + sin_t * by, cos_t * nz + sin_t * bz
        out[i] = tx, ty, tz
    return out.T


def _filament_path(geometry, rng):
    """Sample points of one smooth random curve, FILAMENT_STEP pixels apart, in voxel coordinates.

    Returns one array of coordinates per axis. The heading performs a random walk with momentum:
    its rate of change is temporally smoothed white noise, which gives gently bending,
    occasionally curling curves. In 3-D the plane of bending also twists slowly.
    """
    ndim = len(geometry.shape)
    extent = geometry.extent
    length = rng.uniform(0.2, 0.7) * float(np.mean(extent))
    n_points = max(int(length / FILAMENT_STEP), 2)

    def smooth_turns():
        turn = ndimage.gaussian_filter1d(rng.standard_normal(n_points), sigma=20.0)
        return turn * (FILAMENT_STEP / FILAMENT_CURVATURE_RADIUS / max(turn.std(), 1e-12))

    turn = smooth_turns()
    if ndim == 2:
        heading = rng.uniform(0.0, 2 * np.pi) + np.cumsum(turn)
        tangents = [np.sin(heading), np.cos(heading)]
    else:
        tangents = _space_curve_tangents(turn, smooth_turns(), rng)
    start = rng.uniform(0.0, 1.0, ndim) * extent
    return [(s + FILAMENT_STEP * np.cumsum(t)) / step
            for s, t, step in zip(start, tangents, geometry.spacing)]


def _splat_linear(shape, coordinates, weights):
    """Accumulate point weights into an array, spreading each point over its 2**ndim neighbours.

    ``coordinates`` holds one array of (fractional) voxel coordinates per axis (n-linear
    interpolation weights; points partly outside lose that part).
    """
    lower = [np.floor(c).astype(np.int64) for c in coordinates]
    fractions = [c - f for c, f in zip(coordinates, lower)]
    indices, values = [], []
    for corner in itertools.product((0, 1), repeat=len(shape)):
        weight = inside = flat = None
        for size, first, fraction, up in zip(shape, lower, fractions, corner):
            factor = fraction if up else 1 - fraction
            index = first + up
            valid = (index >= 0) & (index < size)
            weight = factor if weight is None else weight * factor
            inside = valid if inside is None else inside & valid
            flat = index if flat is None else flat * size + index
        indices.append(flat[inside])
        values.append((weights * weight)[inside])
    flat = np.bincount(np.concatenate(indices), weights=np.concatenate(values),
                       minlength=math.prod(shape))
    return flat.reshape(shape)


def _draw_filaments(geometry, rng, n_filaments):
    """Thin curved lines whose peak after blurring with the PSF is their brightness in [0.2, 0.6].

    A straight line of linear density ``d`` blurred with a Gaussian of standard deviations ``s_i``
    across it peaks at ``d / prod(sqrt(2 pi) s_i)``; the density is chosen to make that peak the
    brightness for lines along X (in 3-D, lines along Z are narrower and peak higher).
    """
    paths = [_filament_path(geometry, rng) for _ in range(n_filaments)]
    brightness = rng.uniform(0.2, 0.6, n_filaments)
    if n_filaments == 0:
        return np.zeros(geometry.shape)
    coordinates = [np.concatenate([path[axis] for path in paths]) for axis in range(len(geometry.shape))]
    density = np.sqrt(2 * np.pi) ** (len(geometry.shape) - 1) * np.prod(geometry.psf[:-1]) * FILAMENT_STEP
    weights = np.concatenate([np.full(len(path[0]), b * density) for path, b in zip(paths, brightness)])
    return _splat_linear(geometry.shape, coordinates, weights)


def _structure_image(geometry, rng, n_blobs, n_filaments, radius_range=BLOB_RADIUS_RANGE,
                     texture_contrast=TEXTURE_CONTRAST, texture_scale=TEXTURE_SCALE):
    """In-focus structures plus out-of-focus haze, blurred by the PSF, scaled to maximum 1.

    The blobs are modulated by a smooth random texture between ``1 - texture_contrast`` and 1
    with correlation length ``texture_scale`` (pixel sizes).
    """
    shape = geometry.shape
    field = _smooth_random_field(shape, rng, sigma=geometry.voxels(texture_scale))
    texture = (1.0 - texture_contrast) + texture_contrast * field
    blobs = _draw_blobs(geometry, rng, n_blobs, radius_range) * texture
    filaments = _draw_filaments(geometry, rng, n_filaments)
    in_focus = ndimage.gaussian_filter(blobs + filaments, geometry.psf, mode="constant")
    haze_sigma = geometry.voxels(min(geometry.extent) / 12.0)
    haze = ndimage.gaussian_filter(in_focus, haze_sigma, mode="reflect")
    structure = in_focus + HAZE_STRENGTH * haze
    peak = structure.max()
    return structure / peak if peak > 0 else structure


def synthetic_photons(shape, rng, background=DEFAULT_BACKGROUND, n_blobs=30, n_filaments=15,
                      max_photons=DEFAULT_MAX_PHOTONS, z_step=None, axial_psf_sigma=None,
                      blob_radius_range=BLOB_RADIUS_RANGE, texture_contrast=TEXTURE_CONTRAST,
                      texture_scale=TEXTURE_SCALE):
    """Expected photon counts of a random fluorescence-like scene, an image or a z-stack.

    The scene is a constant dim background plus blurred elliptic blobs of radius 1.5 to 14 pixels
    by default (cells, nuclei, vesicles) with a faint texture, thin curved filaments (random walks with
    momentum), a Gaussian point-spread function (sigma 1.3 pixels) and a weak out-of-focus haze.

    A 3-D ``shape`` (Z, Y, X) gives a z-stack of the same kind of scene with ellipsoidal blobs and
    space-curve filaments. Its voxels are anisotropic: planes are ``z_step`` pixel sizes apart,
    so every structure spans ``z_step`` times fewer voxels along Z than along Y and X. The PSF is
    wider along Z (``axial_psf_sigma`` pixel sizes, i.e. ``axial_psf_sigma / z_step`` voxels).

    Parameters
    ----------
    shape : tuple of int
        Image shape (Y, X), each >= 16, or stack shape (Z, Y, X) with Z >= 4 and Y, X >= 16.
    rng : numpy.random.Generator
        Source of all random choices.
    background : float
        Photons per pixel away from any structure, >= 0. Default: 2.0.
    n_blobs : int
        Number of blobs, >= 0. Default: 30.
    n_filaments : int
        Number of filaments, >= 0. Default: 15.
    max_photons : float
        Photons at the brightest pixel, > ``background``. Default: 60.0.
    z_step : float or None
        3-D only: distance between planes in units of the pixel size, > 0; 1 means isotropic
        voxels. ``None``: 3.0 for a 3-D shape. Must be ``None`` for a 2-D shape.
    axial_psf_sigma : float or None
        3-D only: standard deviation of the PSF along Z in pixel sizes, > 0 (the lateral one is
        1.3). ``None``: 3.0 for a 3-D shape. Must be ``None`` for a 2-D shape.
    blob_radius_range : tuple of float
        (smallest, largest) major semi-axis of the blobs in pixel sizes, 0 < smallest <= largest;
        radii are drawn log-uniformly in between. Default: (1.5, 14.0).
    texture_contrast : float
        Depth of the blobs' internal texture in [0, 1]: their brightness is multiplied by a smooth
        random field between ``1 - texture_contrast`` and 1. 0 gives uniform blobs, values near 1
        a mottled, chromatin-like interior. Default: 0.4.
    texture_scale : float
        Correlation length (Gaussian sigma) of that texture in pixel sizes, > 0. Default: 3.0.

    Returns
    -------
    numpy.ndarray
        float64 array of ``shape`` with values in [``background``, ``max_photons``]; the maximum is
        reached unless there are no structures.
    """
    shape = _check_shape(shape, "shape", ndims=(2, 3))
    rng = _check_rng(rng)
    background = _check_real(background, "background", low=0)
    n_blobs = _check_int(n_blobs, "n_blobs", 0)
    n_filaments = _check_int(n_filaments, "n_filaments", 0)
    max_photons = _check_real(max_photons, "max_photons", low=background, strict=True)
    z_step, axial_psf_sigma = _check_axial(shape, z_step, axial_psf_sigma)
    blob_radius_range = _check_radius_range(blob_radius_range, "blob_radius_range")
    texture_contrast, texture_scale = _check_texture(texture_contrast, texture_scale)
    structure = _structure_image(_geometry(shape, z_step, axial_psf_sigma), rng, n_blobs, n_filaments,
                                 blob_radius_range, texture_contrast, texture_scale)
    return background + (max_photons - background) * structure


def _calibration_photons(shape, rng, low, high):
    """Photon counts of a static calibration scene spanning [low, high] with a near-flat histogram.

    A horizontal ramp from ``low`` to ``high`` is perturbed by a few blurred blobs (so it is not a
    perfect ramp) and rescaled back to [low, high]; every level in between is hit by many pixels.
    """
    ramp = np.broadcast_to(np.linspace(0.0, 1.0, shape[1]), shape)
    structures = _structure_image(_geometry(shape), rng, n_blobs=8, n_filaments=3)
    scene = ramp + 0.15 * structures
    scene = (scene - scene.min()) / (scene.max() - scene.min())
    return low + (high - low) * scene


# --------------------------------------------------------------------------------------------
# data set


@dataclass
class SyntheticData:
    """Noisy training and test images (or z-stacks) plus calibration frames, with their ground truth.

    Attributes
    ----------
    train : numpy.ndarray
        (n_train, Y, X) or, for z-stacks, (n_train, Z, Y, X) float32 noisy images, single
        observations of different scenes.
    test : numpy.ndarray
        (Y, X) or (Z, Y, X) float32 noisy image of a scene not in ``train``.
    test_clean : numpy.ndarray
        Ground truth of ``test`` in camera units (:func:`expected_observation`), float32.
    calibration : numpy.ndarray
        (n_frames, cY, cX) float32 noisy frames of one static 2-D calibration scene (also for
        z-stacks: the noise is pixel-wise, so a time series of one plane calibrates it).
    calibration_clean : numpy.ndarray
        (cY, cX) float32 true signal of the calibration scene in camera units. Real data only has
        the mean of the frames, ``calibration.mean(axis=0)``.
    camera : CameraParams
        The camera that produced all observations.
    z_step : float or None
        Distance between the planes of the z-stacks in pixel sizes; ``None`` for 2-D images.
    """

    train: np.ndarray
    test: np.ndarray
    test_clean: np.ndarray
    calibration: np.ndarray
    calibration_clean: np.ndarray
    camera: CameraParams = field(default_factory=CameraParams)
    z_step: Optional[float] = None


def _observe(photons, rng, camera):
    return camera_noise(photons, rng, camera.gain, camera.offset, camera.read_noise)


def _signal(photons, camera):
    return expected_observation(photons, camera.gain, camera.offset)


def _check_camera(camera):
    if camera is None:
        return CameraParams()
    if not isinstance(camera, CameraParams):
        raise ValueError(f"camera must be a CameraParams or None, got {type(camera).__name__}")
    return camera


def _make_data(seed, shape, n_train, calibration_shape, calibration_frames, camera, max_photons,
               scene=None, z_step=None):
    """The common body of :func:`make_synthetic_data` and :func:`make_synthetic_volumes`.

    ``scene`` holds further keyword arguments of :func:`synthetic_photons` for every scene.
    ``seed`` is an int, None or a :class:`numpy.random.SeedSequence` (e.g. one channel's child).
    """
    scene = {} if scene is None else scene
    sequence = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    test_seq, train_seq, calibration_seq = sequence.spawn(3)

    scene_rng, noise_rng = (np.random.default_rng(s) for s in test_seq.spawn(2))
    test_photons = synthetic_photons(shape, scene_rng, max_photons=max_photons, **scene)
    test = _observe(test_photons, noise_rng, camera)

    train = np.empty((n_train,) + shape, dtype=np.float32)
    for i, image_seq in enumerate(train_seq.spawn(n_train)):
        scene_rng, noise_rng = (np.random.default_rng(s) for s in image_seq.spawn(2))
        photons = synthetic_photons(shape, scene_rng, max_photons=max_photons, **scene)
        train[i] = _observe(photons, noise_rng, camera)

    scene_rng, noise_rng = (np.random.default_rng(s) for s in calibration_seq.spawn(2))
    low, high = (f * max_photons for f in CALIBRATION_RANGE)
    calibration_photons = _calibration_photons(calibration_shape, scene_rng, low, high)
    frames = np.broadcast_to(calibration_photons, (calibration_frames,) + calibration_shape)
    calibration = _observe(frames, noise_rng, camera)

    return SyntheticData(
        train=train,
        test=test,
        test_clean=_signal(test_photons, camera),
        calibration=calibration,
        calibration_clean=_signal(calibration_photons, camera),
        camera=camera,
        z_step=z_step,
    )


def make_synthetic_data(seed=0, shape=(256, 256), n_train=4, calibration_shape=(128, 128),
                        calibration_frames=100, camera=None, max_photons=DEFAULT_MAX_PHOTONS):
    """Generate a complete synthetic PN2V data set of 2-D images, deterministic given ``seed``.

    Independent random streams are derived from ``seed`` for the test image, each training image
    and the calibration data, so e.g. training image ``i`` does not depend on ``n_train``. For
    z-stacks see :func:`make_synthetic_volumes`.

    Parameters
    ----------
    seed : int or None
        Seed of :class:`numpy.random.SeedSequence`; ``None`` draws fresh entropy. Default: 0.
    shape : tuple of int
        Shape (Y, X) of training and test images, each >= 16. Default: (256, 256).
    n_train : int
        Number of training images, >= 1. Default: 4.
    calibration_shape : tuple of int
        Shape (cY, cX) of the calibration scene, each >= 16. Default: (128, 128).
    calibration_frames : int
        Number of noisy calibration frames, >= 2. Default: 100.
    camera : CameraParams or None
        Camera noise parameters; ``None`` uses ``CameraParams()`` (gain 3, offset 100, read
        noise 6).
    max_photons : float
        Photons at the brightest pixel of a scene (the background has 2); more photons, less
        relative noise. Default: 60.0.

    Returns
    -------
    SyntheticData
        Scenes span 2 to ``max_photons`` photons per pixel; the calibration scene covers 0 to
        1.2 ``max_photons``. ``z_step`` is ``None``.
    """
    try:
        shape = _check_shape(shape, "shape")
    except ValueError as error:
        if np.ndim(shape) == 1 and len(shape) == 3:
            raise ValueError(f"{error}; for z-stacks use make_synthetic_volumes") from None
        raise
    n_train = _check_int(n_train, "n_train", 1)
    calibration_shape = _check_shape(calibration_shape, "calibration_shape")
    calibration_frames = _check_int(calibration_frames, "calibration_frames", 2)
    camera = _check_camera(camera)
    return _make_data(seed, shape, n_train, calibration_shape, calibration_frames, camera, max_photons)


def make_synthetic_volumes(seed=0, shape=(32, 128, 128), n_train=2, z_step=DEFAULT_Z_STEP,
                           calibration_shape=(128, 128), calibration_frames=100, camera=None,
                           max_photons=DEFAULT_MAX_PHOTONS, axial_psf_sigma=AXIAL_PSF_SIGMA,
                           n_blobs=None, n_filaments=None):
    """Generate a synthetic PN2V data set of anisotropic z-stacks, deterministic given ``seed``.

    The 3-D counterpart of :func:`make_synthetic_data`: training and test data are z-stacks
    (:func:`synthetic_photons` with a 3-D shape) observed through the same camera; the calibration
    data stay 2-D frames of a static scene, as the noise model is pixel-wise. The random streams
    are derived from ``seed`` as in :func:`make_synthetic_data`.

    Parameters
    ----------
    seed : int or None
        Seed of :class:`numpy.random.SeedSequence`; ``None`` draws fresh entropy. Default: 0.
    shape : tuple of int
        Shape (Z, Y, X) of training and test stacks, Z >= 4 and Y, X >= 16. Default: (32, 128, 128).
    n_train : int
        Number of training stacks, >= 1. Default: 2.
    z_step : float
        Distance between planes in units of the pixel size, > 0; structures span ``z_step`` times
        fewer voxels along Z than along Y and X. 1 gives isotropic voxels. Default: 3.0.
    calibration_shape : tuple of int
        Shape (cY, cX) of the calibration scene, each >= 16. Default: (128, 128).
    calibration_frames : int
        Number of noisy calibration frames, >= 2. Default: 100.
    camera : CameraParams or None
        Camera noise parameters; ``None`` uses ``CameraParams()``.
    max_photons : float
        Photons at the brightest voxel of a scene (the background has 2). Default: 60.0.
    axial_psf_sigma : float
        Standard deviation of the PSF along Z in pixel sizes, > 0 (lateral: 1.3), i.e.
        ``axial_psf_sigma / z_step`` voxels. Default: 3.0.
    n_blobs, n_filaments : int or None
        Structures per stack, >= 0. ``None``: proportional to the physical volume
        ``Z * z_step * Y * X``, 80 blobs and 30 filaments per million cubic pixels (at least 1),
        e.g. 126 and 47 for the default shape; about 10 % of the voxels are then brighter than a
        sixth of ``max_photons``.

    Returns
    -------
    SyntheticData
        ``train`` (n_train, Z, Y, X), ``test`` and ``test_clean`` (Z, Y, X), ``calibration``
        (calibration_frames, cY, cX) and ``calibration_clean`` (cY, cX), all float32; ``z_step``
        as given. Scenes span 2 to ``max_photons`` photons per voxel; the calibration scene covers
        0 to 1.2 ``max_photons``.
    """
    shape = _check_shape(shape, "shape", ndims=(3,))
    n_train = _check_int(n_train, "n_train", 1)
    z_step = _check_real(z_step, "z_step", low=0, strict=True)
    axial_psf_sigma = _check_real(axial_psf_sigma, "axial_psf_sigma", low=0, strict=True)
    calibration_shape = _check_shape(calibration_shape, "calibration_shape")
    calibration_frames = _check_int(calibration_frames, "calibration_frames", 2)
    camera = _check_camera(camera)
    volume = math.prod(shape) * z_step
    n_blobs = (max(1, round(VOLUME_BLOB_DENSITY * volume)) if n_blobs is None
               else _check_int(n_blobs, "n_blobs", 0))
    n_filaments = (max(1, round(VOLUME_FILAMENT_DENSITY * volume)) if n_filaments is None
                   else _check_int(n_filaments, "n_filaments", 0))
    scene = dict(z_step=z_step, axial_psf_sigma=axial_psf_sigma, n_blobs=n_blobs, n_filaments=n_filaments)
    return _make_data(seed, shape, n_train, calibration_shape, calibration_frames, camera, max_photons,
                      scene=scene, z_step=z_step)


# --------------------------------------------------------------------------------------------
# multichannel data set

REFERENCE_FIELD = 256 * 256  # ChannelSpec's structure counts are per this many pixels


def _check_camera_params(camera):
    if not isinstance(camera, CameraParams):
        raise ValueError(f"camera must be a CameraParams, got {type(camera).__name__}")
    return camera



@dataclass(frozen=True)
class ChannelSpec:
    """One channel of a synthetic multichannel image: its structures, brightness and camera.

    Attributes
    ----------
    name : str
        Short name of the stain, e.g. ``'nuclei'``.
    max_photons : float
        Photons at the brightest pixel of a scene, > ``background``; sets the channel's brightness
        and thereby its relative shot noise.
    background : float
        Photons per pixel away from any structure, >= 0. Default: 2.0.
    camera : CameraParams
        Gain, offset and read noise of this channel's detector. Default: ``CameraParams()``.
    n_blobs, n_filaments : int
        Structures per 256 x 256 pixels, >= 0; other image sizes get proportionally many (at least
        one when the count is positive). Defaults: 30 and 15.
    blob_radius_range : tuple of float
        Smallest and largest major semi-axis of the blobs, pixels. Default: (1.5, 14.0).
    texture_contrast : float
        Depth of the blobs' internal texture in [0, 1] (see :func:`synthetic_photons`). Default: 0.4.
    texture_scale : float
        Correlation length of that texture, pixels, > 0. Default: 3.0.
    """

    name: str
    max_photons: float
    background: float = DEFAULT_BACKGROUND
    camera: CameraParams = field(default_factory=CameraParams)
    n_blobs: int = 30
    n_filaments: int = 15
    blob_radius_range: tuple = BLOB_RADIUS_RANGE
    texture_contrast: float = TEXTURE_CONTRAST
    texture_scale: float = TEXTURE_SCALE

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty string, got {self.name!r}")
        background = _check_real(self.background, "background", low=0)
        _check_real(self.max_photons, "max_photons", low=background, strict=True)
        _check_camera_params(self.camera)
        _check_int(self.n_blobs, "n_blobs", 0)
        _check_int(self.n_filaments, "n_filaments", 0)
        object.__setattr__(self, "blob_radius_range", _check_radius_range(self.blob_radius_range,
                                                                          "blob_radius_range"))
        _check_texture(self.texture_contrast, self.texture_scale)

    def structure_counts(self, shape):
        """Numbers of blobs and filaments in an image of ``shape`` (Y, X): the per-256x256 counts
        scaled with the area, at least 1 where the count is positive."""
        area = math.prod(shape) / REFERENCE_FIELD
        return tuple(max(1, round(count * area)) if count > 0 else 0
                     for count in (self.n_blobs, self.n_filaments))

    def scene_arguments(self, shape):
        """Keyword arguments of :func:`synthetic_photons` for a scene of this channel (all but
        ``max_photons``)."""
        n_blobs, n_filaments = self.structure_counts(shape)
        return dict(background=self.background, n_blobs=n_blobs, n_filaments=n_filaments,
                    blob_radius_range=self.blob_radius_range, texture_contrast=self.texture_contrast,
                    texture_scale=self.texture_scale)


#: Three stains of the kind a fluorescence cell image often combines, each through its own camera
#: setting: bright, large nuclei with a strongly mottled (chromatin-like) texture on a low-gain,
#: low-read-noise detector; many small, moderately bright vesicles on the default camera; and dim
#: filaments (a cytoskeleton) on a high-gain, high-offset, noisier detector.
DEFAULT_CHANNELS = (
    ChannelSpec("nuclei", max_photons=120.0, background=4.0,
                camera=CameraParams(gain=2.0, offset=100.0, read_noise=3.0),
                n_blobs=7, n_filaments=0, blob_radius_range=(12.0, 26.0), texture_contrast=0.7,
                texture_scale=1.5),
    ChannelSpec("vesicles", max_photons=40.0, background=2.0,
                camera=CameraParams(gain=3.0, offset=200.0, read_noise=6.0),
                n_blobs=150, n_filaments=0, blob_radius_range=(1.0, 4.0), texture_contrast=0.2),
    ChannelSpec("filaments", max_photons=20.0, background=1.0,
                camera=CameraParams(gain=5.0, offset=400.0, read_noise=10.0),
                n_blobs=0, n_filaments=40),
)


@dataclass
class SyntheticMultichannelData:
    """Noisy multichannel training and test images, their ground truth and one calibration stack
    per channel.

    Attributes
    ----------
    train : numpy.ndarray
        (n_train, Y, X, C) float32 noisy images, channels last.
    test : numpy.ndarray
        (Y, X, C) float32 noisy image of a field of view not in ``train``.
    test_clean : numpy.ndarray
        (Y, X, C) float32 ground truth of ``test`` in each channel's camera units.
    calibration : numpy.ndarray
        (C, n_frames, cY, cX) float32: ``calibration[c]`` holds the noisy frames of channel c's
        static calibration scene, taken through channel c's camera; fit channel c's noise model to
        it.
    calibration_clean : numpy.ndarray
        (C, cY, cX) float32 true signal of each channel's calibration scene.
    channels : tuple of ChannelSpec
        How each channel was made (``channels[c].camera`` is its camera).
    """

    train: np.ndarray
    test: np.ndarray
    test_clean: np.ndarray
    calibration: np.ndarray
    calibration_clean: np.ndarray
    channels: tuple

    @property
    def n_channels(self):
        """Number of channels C."""
        return len(self.channels)

    @property
    def names(self):
        """The channels' names."""
        return tuple(channel.name for channel in self.channels)

    @property
    def cameras(self):
        """The channels' cameras, a tuple of :class:`CameraParams`."""
        return tuple(channel.camera for channel in self.channels)

    def channel(self, index):
        """Channel ``index`` as a single-channel :class:`SyntheticData` (images without C axis)."""
        return SyntheticData(train=self.train[..., index], test=self.test[..., index],
                             test_clean=self.test_clean[..., index], calibration=self.calibration[index],
                             calibration_clean=self.calibration_clean[index],
                             camera=self.channels[index].camera)


def _check_channels(channels):
    """The default channels for ``None``, else a non-empty tuple of ChannelSpec."""
    if channels is None:
        return DEFAULT_CHANNELS
    channels = tuple(channels) if isinstance(channels, (list, tuple)) else None
    if not channels or not all(isinstance(channel, ChannelSpec) for channel in channels):
        raise ValueError("channels must be a non-empty list of ChannelSpec (or None for DEFAULT_CHANNELS)")
    return channels


def _stack_channels(per_channel):
    """Single-channel data sets (one per channel) -> arrays with a last channel axis (images) or a
    first one (calibration)."""
    return dict(
        train=np.stack([data.train for data in per_channel], axis=-1),
        test=np.stack([data.test for data in per_channel], axis=-1),
        test_clean=np.stack([data.test_clean for data in per_channel], axis=-1),
        calibration=np.stack([data.calibration for data in per_channel]),
        calibration_clean=np.stack([data.calibration_clean for data in per_channel]),
    )


def make_synthetic_multichannel(seed=0, shape=(256, 256), n_train=4, calibration_shape=(128, 128),
                                calibration_frames=100, channels=None):
    """Generate a synthetic multichannel PN2V data set (channels last), deterministic given ``seed``.

    Each channel is a different stain of the same fields of view: its scenes are drawn by
    :func:`synthetic_photons` with the channel's structures and brightness and observed through the
    channel's camera (:func:`camera_noise`), so channels differ in structure, photon counts and
    noise model. Each channel also gets its own calibration stack (a static scene covering 0 to
    1.2 times its ``max_photons``, through its camera), from which its noise model is fitted.

    One independent random stream per channel is derived from ``seed`` and split as in
    :func:`make_synthetic_data`, so a channel does not depend on the other channels or on
    ``n_train``.

    Parameters
    ----------
    seed : int or None
        Seed of :class:`numpy.random.SeedSequence`; ``None`` draws fresh entropy. Default: 0.
    shape : tuple of int
        Shape (Y, X) of training and test images, each >= 16. Default: (256, 256).
    n_train : int
        Number of training images, >= 1. Default: 4.
    calibration_shape : tuple of int
        Shape (cY, cX) of each channel's calibration scene, each >= 16. Default: (128, 128).
    calibration_frames : int
        Number of noisy calibration frames per channel, >= 2. Default: 100.
    channels : sequence of ChannelSpec or None
        The channels, at least one. ``None``: :data:`DEFAULT_CHANNELS` (nuclei, vesicles, filaments;
        up to 120, 40 and 20 photons; gains 2, 3, 5; offsets 100, 200, 400; read noise 3, 6, 10).

    Returns
    -------
    SyntheticMultichannelData
        ``train`` (n_train, Y, X, C), ``test`` and ``test_clean`` (Y, X, C), ``calibration``
        (C, calibration_frames, cY, cX), ``calibration_clean`` (C, cY, cX), all float32.

    Examples
    --------
    >>> data = make_synthetic_multichannel(seed=0, shape=(128, 128), n_train=2)
    >>> data.train.shape, data.calibration.shape, data.names
    ((2, 128, 128, 3), (3, 100, 128, 128), ('nuclei', 'vesicles', 'filaments'))
    """
    shape = _check_shape(shape, "shape")
    n_train = _check_int(n_train, "n_train", 1)
    calibration_shape = _check_shape(calibration_shape, "calibration_shape")
    calibration_frames = _check_int(calibration_frames, "calibration_frames", 2)
    channels = _check_channels(channels)
    streams = np.random.SeedSequence(seed).spawn(len(channels))
    per_channel = [_make_data(stream, shape, n_train, calibration_shape, calibration_frames, channel.camera,
                              channel.max_photons, scene=channel.scene_arguments(shape))
                   for stream, channel in zip(streams, channels)]
    return SyntheticMultichannelData(channels=channels, **_stack_channels(per_channel))
