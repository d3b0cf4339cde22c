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
mean of the frames standing in for the signal. :func:`make_synthetic_data` therefore also returns
many noisy frames of one calibration scene: a smooth ramp with a few superimposed structures whose
signal covers the full range of the training and test images, a bit beyond both ends.

All randomness comes from :class:`numpy.random.Generator` objects; :func:`make_synthetic_data`
derives independent child generators from one seed, so its output is bit-identical for equal
seeds.
"""

import numbers
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from ._checks import is_int as _is_int

__all__ = [
    "CameraParams",
    "SyntheticData",
    "camera_log_likelihood",
    "camera_noise",
    "expected_observation",
    "make_synthetic_data",
    "synthetic_photons",
]

DEFAULT_BACKGROUND = 2.0
DEFAULT_MAX_PHOTONS = 60.0
DEFAULT_GAIN = 3.0
DEFAULT_OFFSET = 100.0
DEFAULT_READ_NOISE = 6.0

PSF_SIGMA = 1.3  # standard deviation of the Gaussian point-spread function, pixels
BLOB_RADIUS_RANGE = (1.5, 14.0)  # pixels, drawn log-uniformly
FILAMENT_STEP = 0.5  # distance between successive filament samples, pixels
FILAMENT_CURVATURE_RADIUS = 40.0  # typical radius of curvature of filaments, pixels
HAZE_STRENGTH = 0.3  # out-of-focus haze relative to the in-focus structures
CALIBRATION_RANGE = (0.0, 1.2)  # calibration photons, in units of max_photons


# --------------------------------------------------------------------------------------------
# argument validation


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(value)


def _check_shape(shape, name):
    """Return ``shape`` as a tuple of two Python ints >= 16, or raise ``ValueError``."""
    try:
        items = tuple(shape)
    except TypeError:
        items = ()
    if len(items) != 2 or not all(_is_int(n) and n >= 16 for n in items):
        raise ValueError(f"{name} must be a pair of integers >= 16, got {shape!r}")
    return tuple(int(n) for n in items)


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


def _pixel_grid(shape):
    """Row and column coordinates of every pixel, each of shape ``shape``."""
    return np.indices(shape, dtype=np.float64)


def _smooth_random_field(shape, rng, sigma):
    """Gaussian-filtered white noise rescaled to [0, 1]."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    low, high = field.min(), field.max()
    return (field - low) / (high - low) if high > low else np.zeros(shape)


def _draw_blobs(shape, rng, n_blobs):
    """Sum of sharp-edged elliptic blobs of random size, orientation and brightness in [0.25, 1]."""
    image = np.zeros(shape)
    if n_blobs == 0:
        return image
    rows, cols = _pixel_grid(shape)
    low, high = np.log(BLOB_RADIUS_RANGE[0]), np.log(BLOB_RADIUS_RANGE[1])
    radii = np.exp(rng.uniform(low, high, n_blobs))
    aspects = rng.uniform(0.6, 1.0, n_blobs)
    angles = rng.uniform(0.0, np.pi, n_blobs)
    centres = rng.uniform(0.0, 1.0, (n_blobs, 2)) * np.array(shape)
    brightness = rng.uniform(0.25, 1.0, n_blobs)
    for radius, aspect, angle, (cy, cx), value in zip(radii, aspects, angles, centres, brightness):
        dy, dx = rows - cy, cols - cx
        along = dy * np.sin(angle) + dx * np.cos(angle)
        across = -dy * np.cos(angle) + dx * np.sin(angle)
        distance = np.hypot(along / radius, across / (aspect * radius))
        # a soft edge one pixel wide avoids aliasing of the smallest blobs
        image += value * np.clip((1.0 - distance) * radius + 0.5, 0.0, 1.0)
    return image


def _filament_path(shape, rng):
    """Sample points (rows, cols) of one smooth random curve, FILAMENT_STEP pixels apart.

    The heading performs a random walk with momentum: its rate of change is temporally smoothed
    white noise, which gives gently bending, occasionally curling curves.
    """
    length = rng.uniform(0.2, 0.7) * float(np.mean(shape))
    n_points = max(int(length / FILAMENT_STEP), 2)
    turn = ndimage.gaussian_filter1d(rng.standard_normal(n_points), sigma=20.0)
    turn *= FILAMENT_STEP / FILAMENT_CURVATURE_RADIUS / max(turn.std(), 1e-12)
    heading = rng.uniform(0.0, 2 * np.pi) + np.cumsum(turn)
    start = rng.uniform(0.0, 1.0, 2) * np.array(shape)
    rows = start[0] + FILAMENT_STEP * np.cumsum(np.sin(heading))
    cols = start[1] + FILAMENT_STEP * np.cumsum(np.cos(heading))
    return rows, cols


def _splat_bilinear(shape, rows, cols, weights):
    """Accumulate point weights into an image, spreading each point over its 4 neighbours."""
    r0, c0 = np.floor(rows).astype(np.int64), np.floor(cols).astype(np.int64)
    fr, fc = rows - r0, cols - c0
    indices, values = [], []
    for dr, dc, w in ((0, 0, (1 - fr) * (1 - fc)), (0, 1, (1 - fr) * fc),
                      (1, 0, fr * (1 - fc)), (1, 1, fr * fc)):
        r, c = r0 + dr, c0 + dc
        inside = (r >= 0) & (r < shape[0]) & (c >= 0) & (c < shape[1])
        indices.append(r[inside] * shape[1] + c[inside])
        values.append((weights * w)[inside])
    flat = np.bincount(np.concatenate(indices), weights=np.concatenate(values),
                       minlength=shape[0] * shape[1])
    return flat.reshape(shape)


def _draw_filaments(shape, rng, n_filaments):
    """Thin curved lines whose peak after blurring with the PSF is their brightness in [0.2, 0.6].

    A straight line of linear density ``d`` blurred with a Gaussian of standard deviation ``s``
    peaks at ``d / (sqrt(2 pi) s)``; the density is chosen to make that peak the brightness.
    """
    paths = [_filament_path(shape, rng) for _ in range(n_filaments)]
    brightness = rng.uniform(0.2, 0.6, n_filaments)
    if n_filaments == 0:
        return np.zeros(shape)
    rows = np.concatenate([r for r, _ in paths])
    cols = np.concatenate([c for _, c in paths])
    density = np.sqrt(2 * np.pi) * PSF_SIGMA * FILAMENT_STEP
    weights = np.concatenate([np.full(len(r), b * density) for (r, _), b in zip(paths, brightness)])
    return _splat_bilinear(shape, rows, cols, weights)


def _structure_image(shape, rng, n_blobs, n_filaments):
    """In-focus structures plus out-of-focus haze, blurred by the PSF, scaled to maximum 1."""
    texture = 0.6 + 0.4 * _smooth_random_field(shape, rng, sigma=3.0)
    blobs = _draw_blobs(shape, rng, n_blobs) * texture
    filaments = _draw_filaments(shape, rng, n_filaments)
    in_focus = ndimage.gaussian_filter(blobs + filaments, PSF_SIGMA, mode="constant")
    haze = ndimage.gaussian_filter(in_focus, min(shape) / 12.0, mode="reflect")
    structure = in_focus + HAZE_STRENGTH * haze
    peak = structure.max()
    return structure / peak if peak > 0 else structure


def synthetic_photons(shape, rng, background=DEFAULT_BACKGROUND, n_blobs=30, n_filaments=15,
                      max_photons=DEFAULT_MAX_PHOTONS):
    """Expected photon counts of a random fluorescence-like scene.

    The scene is a constant dim background plus blurred elliptic blobs of radius 1.5 to 14 pixels
    (cells, nuclei, vesicles) with a faint texture, thin curved filaments (random walks with
    momentum), a Gaussian point-spread function (sigma 1.3 pixels) and a weak out-of-focus haze.

    Parameters
    ----------
    shape : tuple of int
        Image shape (Y, X), each >= 16.
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

    Returns
    -------
    numpy.ndarray
        float64 array of ``shape`` with values in [``background``, ``max_photons``]; the maximum is
        reached unless there are no structures.
    """
    shape = _check_shape(shape, "shape")
    rng = _check_rng(rng)
    background = _check_real(background, "background", low=0)
    n_blobs = _check_int(n_blobs, "n_blobs", 0)
    n_filaments = _check_int(n_filaments, "n_filaments", 0)
    max_photons = _check_real(max_photons, "max_photons", low=background, strict=True)
    structure = _structure_image(shape, rng, n_blobs, n_filaments)
    return background + (max_photons - background) * structure


def _calibration_photons(shape, rng, low, high):
    """Photon counts of a static calibration scene spanning [low, high] with a near-flat histogram.

    A horizontal ramp from ``low`` to ``high`` is perturbed by a few blurred blobs (so it is not a
    perfect ramp) and rescaled back to [low, high]; every level in between is hit by many pixels.
    """
    ramp = np.broadcast_to(np.linspace(0.0, 1.0, shape[1]), shape)
    structures = _structure_image(shape, rng, n_blobs=8, n_filaments=3)
    scene = ramp + 0.15 * structures
    scene = (scene - scene.min()) / (scene.max() - scene.min())
    return low + (high - low) * scene


# --------------------------------------------------------------------------------------------
# data set


@dataclass
class SyntheticData:
    """Noisy training and test images plus calibration frames, with their ground truth.

    Attributes
    ----------
    train : numpy.ndarray
        (n_train, Y, X) float32 noisy images, single observations of different scenes.
    test : numpy.ndarray
        (Y, X) float32 noisy image of a scene not in ``train``.
    test_clean : numpy.ndarray
        (Y, X) float32 ground truth of ``test`` in camera units (:func:`expected_observation`).
    calibration : numpy.ndarray
        (n_frames, cY, cX) float32 noisy frames of one static calibration scene.
    calibration_clean : numpy.ndarray
        (cY, cX) float32 true signal of the calibration scene in camera units. Real data only has
        the mean of the frames, ``calibration.mean(axis=0)``.
    camera : CameraParams
        The camera that produced all observations.
    """

    train: np.ndarray
    test: np.ndarray
    test_clean: np.ndarray
    calibration: np.ndarray
    calibration_clean: np.ndarray
    camera: CameraParams = field(default_factory=CameraParams)


def _observe(photons, rng, camera):
    return camera_noise(photons, rng, camera.gain, camera.offset, camera.read_noise)


def _signal(photons, camera):
    return expected_observation(photons, camera.gain, camera.offset)


def make_synthetic_data(seed=0, shape=(256, 256), n_train=4, calibration_shape=(128, 128),
                        calibration_frames=100, camera=None, max_photons=DEFAULT_MAX_PHOTONS):
    """Generate a complete synthetic PN2V data set, deterministic given ``seed``.

    Independent random streams are derived from ``seed`` for the test image, each training image
    and the calibration data, so e.g. training image ``i`` does not depend on ``n_train``.

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
        1.2 ``max_photons``.
    """
    shape = _check_shape(shape, "shape")
    n_train = _check_int(n_train, "n_train", 1)
    calibration_shape = _check_shape(calibration_shape, "calibration_shape")
    calibration_frames = _check_int(calibration_frames, "calibration_frames", 2)
    if camera is None:
        camera = CameraParams()
    elif not isinstance(camera, CameraParams):
        raise ValueError(f"camera must be a CameraParams or None, got {type(camera).__name__}")

    test_seq, train_seq, calibration_seq = np.random.SeedSequence(seed).spawn(3)

    scene_rng, noise_rng = (np.random.default_rng(s) for s in test_seq.spawn(2))
    test_photons = synthetic_photons(shape, scene_rng, max_photons=max_photons)
    test = _observe(test_photons, noise_rng, camera)

    train = np.empty((n_train,) + shape, dtype=np.float32)
    for i, image_seq in enumerate(train_seq.spawn(n_train)):
        scene_rng, noise_rng = (np.random.default_rng(s) for s in image_seq.spawn(2))
        train[i] = _observe(synthetic_photons(shape, scene_rng, max_photons=max_photons), noise_rng, camera)

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
    )
