"""Tests of the synthetic data generator :mod:`pn2v_tf.datasets`."""


import numpy as np
import pytest

from pn2v_tf.datasets import (
    CameraParams,
    SyntheticData,
    camera_log_likelihood,
    camera_noise,
    expected_observation,
    make_synthetic_data,
    make_synthetic_volumes,
    synthetic_photons,
)

SMALL = dict(shape=(64, 48), n_train=3, calibration_shape=(32, 40), calibration_frames=8)


def psnr(image, reference):
    data_range = reference.max() - reference.min()
    mse = np.mean((image.astype(np.float64) - reference) ** 2)
    return 10 * np.log10(data_range**2 / mse)


@pytest.fixture(scope="module")
def default_data():
    return make_synthetic_data()


def _arrays(data):
    return [data.train, data.test, data.test_clean, data.calibration, data.calibration_clean]


# --------------------------------------------------------------------------------------------
# determinism


def test_same_seed_gives_bit_identical_data():
    first, second = make_synthetic_data(seed=7, **SMALL), make_synthetic_data(seed=7, **SMALL)
    for a, b in zip(_arrays(first), _arrays(second)):
        assert a.tobytes() == b.tobytes()
    assert first.camera == second.camera


def test_different_seeds_give_different_scenes():
    first, second = make_synthetic_data(seed=1, **SMALL), make_synthetic_data(seed=2, **SMALL)
    for a, b in zip(_arrays(first), _arrays(second)):
        assert not np.array_equal(a, b)


def test_images_within_one_data_set_are_different_scenes():
    data = make_synthetic_data(seed=3, **SMALL)
    images = np.concatenate([data.train, data.test[None]])
    for i in range(len(images)):
        for j in range(i + 1, len(images)):
            # different scenes: far more different than two noisy views of one scene would be
            assert np.corrcoef(images[i].ravel(), images[j].ravel())[0, 1] < 0.9


def test_train_images_do_not_depend_on_n_train():
    few = make_synthetic_data(seed=5, **{**SMALL, "n_train": 2})
    more = make_synthetic_data(seed=5, **{**SMALL, "n_train": 4})
    np.testing.assert_array_equal(few.train, more.train[:2])
    np.testing.assert_array_equal(few.test, more.test)


def test_synthetic_photons_deterministic_given_generator():
    a = synthetic_photons((40, 40), np.random.default_rng(11))
    b = synthetic_photons((40, 40), np.random.default_rng(11))
    c = synthetic_photons((40, 40), np.random.default_rng(12))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


# --------------------------------------------------------------------------------------------
# shapes, dtypes, value ranges


def test_shapes_and_dtypes():
    data = make_synthetic_data(seed=0, **SMALL)
    assert isinstance(data, SyntheticData)
    assert data.train.shape == (3, 64, 48)
    assert data.test.shape == data.test_clean.shape == (64, 48)
    assert data.calibration.shape == (8, 32, 40)
    assert data.calibration_clean.shape == (32, 40)
    for array in _arrays(data):
        assert array.dtype == np.float32
        assert np.all(np.isfinite(array))
    assert data.camera == CameraParams()


def test_synthetic_photons_range_and_dtype():
    background, max_photons = 3.0, 90.0
    photons = synthetic_photons((128, 128), np.random.default_rng(0), background=background,
                                max_photons=max_photons)
    assert photons.dtype == np.float64
    assert photons.min() >= background
    assert photons.max() == pytest.approx(max_photons)
    # a dim background with bright sparse structures: a wide intensity range
    assert np.median(photons) < background + 0.2 * (max_photons - background)
    assert np.percentile(photons, 99) > background + 0.3 * (max_photons - background)


def test_synthetic_photons_without_structures_is_the_background():
    photons = synthetic_photons((32, 32), np.random.default_rng(0), background=4.0, n_blobs=0,
                                n_filaments=0)
    np.testing.assert_array_equal(photons, 4.0)


@pytest.mark.parametrize("n_blobs, n_filaments", [(5, 0), (0, 5)])
def test_blobs_and_filaments_each_produce_structure(n_blobs, n_filaments):
    photons = synthetic_photons((64, 64), np.random.default_rng(1), background=1.0,
                                n_blobs=n_blobs, n_filaments=n_filaments, max_photons=50.0)
    assert photons.max() == pytest.approx(50.0)
    assert np.mean(photons > 10.0) > 0.005


def test_expected_observation_is_affine_in_photons():
    photons = np.array([[0.0, 1.5], [10.0, 80.0]])
    signal = expected_observation(photons, gain=2.5, offset=90.0)
    assert signal.dtype == np.float32
    np.testing.assert_allclose(signal, 2.5 * photons + 90.0, rtol=1e-6)


# --------------------------------------------------------------------------------------------
# noise statistics


@pytest.mark.parametrize("photons", [0.0, 0.7, 5.0, 60.0])
def test_camera_noise_mean_and_variance_match_closed_form(photons):
    gain, offset, read_noise, n = 3.0, 100.0, 6.0, 400_000
    flat = np.full((n // 400, 400), photons)
    noisy = camera_noise(flat, np.random.default_rng(0), gain, offset, read_noise)
    assert noisy.dtype == np.float32 and noisy.shape == flat.shape
    mean = gain * photons + offset
    variance = gain**2 * photons + read_noise**2
    assert abs(noisy.mean(dtype=np.float64) - mean) < 5 * np.sqrt(variance / n)
    assert noisy.var(dtype=np.float64) == pytest.approx(variance, rel=0.03)


@pytest.mark.parametrize("photons", [0.0, 0.7, 5.0, 60.0])
def test_camera_log_likelihood_is_a_density_with_the_camera_moments(photons):
    camera = CameraParams(gain=3.0, offset=100.0, read_noise=6.0)
    x = np.linspace(40.0, 500.0, 46_001)
    density = np.exp(camera_log_likelihood(x, photons, camera))
    mean = np.trapezoid(x * density, x)
    assert np.trapezoid(density, x) == pytest.approx(1.0, abs=1e-6)
    assert mean == pytest.approx(3.0 * photons + 100.0, abs=1e-4)
    assert np.trapezoid((x - mean) ** 2 * density, x) == pytest.approx(9.0 * photons + 36.0, rel=1e-4)


def test_camera_log_likelihood_of_one_photon_on_average_by_hand():
    """photons = 1: p(x) = e^-1 (N(x; 100, 6) + N(x; 103, 6) + N(x; 106, 6) / 2 + ...)."""
    x = np.array([95.0, 103.0, 130.0])
    normal = lambda mu: np.exp(-0.5 * ((x - mu) / 6.0) ** 2) / (6.0 * np.sqrt(2 * np.pi))  # noqa: E731
    expected = np.exp(-1.0) * sum(normal(100.0 + 3.0 * k) / np.prod(np.arange(1, k + 1)) for k in range(30))
    np.testing.assert_allclose(camera_log_likelihood(x, 1.0), np.log(expected), rtol=1e-10)


def test_camera_log_likelihood_broadcasts_and_rejects_a_camera_without_read_noise():
    assert camera_log_likelihood(np.zeros((3, 1)), np.ones((1, 4))).shape == (3, 4)
    with pytest.raises(ValueError, match="read noise"):
        camera_log_likelihood(100.0, 1.0, CameraParams(read_noise=0.0))


def test_camera_noise_without_read_noise_is_gain_times_counts():
    gain, offset = 2.0, 50.0
    noisy = camera_noise(np.full((50, 50), 4.0), np.random.default_rng(3), gain, offset, 0.0)
    counts = (noisy - offset) / gain
    np.testing.assert_array_equal(counts, np.round(counts))
    assert counts.min() >= 0


def test_camera_noise_keeps_the_shape_of_a_stack():
    stack = np.broadcast_to(np.linspace(0, 20, 30), (4, 5, 30))
    noisy = camera_noise(stack, np.random.default_rng(0))
    assert noisy.shape == (4, 5, 30)
    assert not np.array_equal(noisy[0], noisy[1])


def test_test_image_is_a_noisy_view_of_test_clean(default_data):
    data = default_data
    gain, offset, read_noise = data.camera.gain, data.camera.offset, data.camera.read_noise
    residual = data.test.astype(np.float64) - data.test_clean
    expected_variance = gain * (data.test_clean.astype(np.float64) - offset) + read_noise**2
    assert abs(residual.mean()) < 4 * np.sqrt(expected_variance.mean() / residual.size)
    assert np.mean(residual**2) == pytest.approx(expected_variance.mean(), rel=0.03)


def test_default_test_psnr_is_in_a_plausible_range(default_data):
    value = psnr(default_data.test, default_data.test_clean.astype(np.float64))
    assert 20.0 < value < 28.0


def test_custom_camera_is_used():
    camera = CameraParams(gain=1.0, offset=500.0, read_noise=1.0)
    data = make_synthetic_data(seed=0, camera=camera, **SMALL)
    assert data.camera is camera
    assert 500.0 <= data.test_clean.min() < 510.0
    assert data.calibration_clean.min() == pytest.approx(500.0)


# --------------------------------------------------------------------------------------------
# calibration data


def test_mean_of_calibration_frames_converges_to_clean_signal(default_data):
    data = default_data
    gain, offset, read_noise = data.camera.gain, data.camera.offset, data.camera.read_noise
    clean = data.calibration_clean.astype(np.float64)
    mean_variance = np.mean(gain * (clean - offset) + read_noise**2)
    errors = {}
    for n_frames in (25, 100):
        mean = data.calibration[:n_frames].mean(axis=0, dtype=np.float64)
        errors[n_frames] = np.sqrt(np.mean((mean - clean) ** 2))
        assert errors[n_frames] == pytest.approx(np.sqrt(mean_variance / n_frames), rel=0.05)
    assert errors[25] / errors[100] == pytest.approx(2.0, rel=0.1)


def test_calibration_frames_are_independent_observations(default_data):
    frames = default_data.calibration.astype(np.float64)
    residuals = frames - default_data.calibration_clean
    correlation = np.corrcoef(residuals[0].ravel(), residuals[1].ravel())[0, 1]
    assert abs(correlation) < 0.05


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_calibration_signal_covers_the_test_signal_range(seed):
    data = make_synthetic_data(seed=seed, n_train=1, calibration_frames=2)
    clean, calibration = data.test_clean, data.calibration_clean
    assert calibration.min() < clean.min()
    assert calibration.max() > clean.max()
    # many calibration pixels at every signal level the test image uses
    counts, _ = np.histogram(calibration, bins=50, range=(clean.min(), clean.max()))
    assert counts.min() >= 100


# --------------------------------------------------------------------------------------------
# argument validation and speed


@pytest.mark.parametrize("kwargs, name", [
    (dict(shape=(15, 64)), "shape"),
    (dict(shape=(64,)), "shape"),
    (dict(shape=(64, 64, 64)), "shape"),
    (dict(shape=(64.0, 64)), "shape"),
    (dict(shape=64), "shape"),
    (dict(n_train=0), "n_train"),
    (dict(calibration_shape=(8, 128)), "calibration_shape"),
    (dict(calibration_frames=1), "calibration_frames"),
])
def test_make_synthetic_data_rejects_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        make_synthetic_data(**kwargs)


@pytest.mark.parametrize("kwargs, name", [
    (dict(gain=-1.0), "gain"),
    (dict(gain=0.0), "gain"),
    (dict(read_noise=-0.5), "read_noise"),
])
def test_negative_camera_parameters_are_rejected(kwargs, name):
    with pytest.raises(ValueError, match=name):
        CameraParams(**kwargs)
    with pytest.raises(ValueError, match=name):
        camera_noise(np.ones((4, 4)), np.random.default_rng(0), **kwargs)


def test_bad_photons_and_scene_arguments_are_rejected():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="photons"):
        camera_noise(np.full((4, 4), -1.0), rng)
    with pytest.raises(ValueError, match="shape"):
        synthetic_photons((10, 10), rng)
    with pytest.raises(ValueError, match="max_photons"):
        synthetic_photons((32, 32), rng, background=5.0, max_photons=5.0)
    with pytest.raises(ValueError, match="n_blobs"):
        synthetic_photons((32, 32), rng, n_blobs=-1)



def test_max_photons_sets_the_brightest_signal_and_the_calibration_range():
    data = make_synthetic_data(seed=2, shape=(64, 64), n_train=1, calibration_shape=(32, 32),
                               calibration_frames=2, max_photons=300.0)
    camera = data.camera
    np.testing.assert_allclose(data.test_clean.max(), camera.gain * 300.0 + camera.offset, rtol=1e-5)
    np.testing.assert_allclose(data.calibration_clean.max(), camera.gain * 360.0 + camera.offset, rtol=1e-5)


# --------------------------------------------------------------------------------------------
# 3-D: anisotropic z-stacks

VOLUMES = dict(shape=(12, 40, 36), n_train=2, calibration_shape=(32, 24), calibration_frames=3)


@pytest.fixture(scope="module")
def volume_data():
    return make_synthetic_volumes(seed=0, shape=(16, 64, 64), n_train=1, calibration_shape=(64, 64),
                                  calibration_frames=2)


def test_volumes_shapes_dtypes_and_z_step():
    data = make_synthetic_volumes(seed=0, z_step=2.5, **VOLUMES)
    assert isinstance(data, SyntheticData)
    assert data.train.shape == (2, 12, 40, 36)
    assert data.test.shape == data.test_clean.shape == (12, 40, 36)
    assert data.calibration.shape == (3, 32, 24)
    assert data.calibration_clean.shape == (32, 24)
    for array in _arrays(data):
        assert array.dtype == np.float32
        assert np.all(np.isfinite(array))
    assert data.camera == CameraParams()
    assert data.z_step == 2.5
    assert make_synthetic_data(seed=0, **SMALL).z_step is None


def test_volumes_are_deterministic_and_depend_on_the_seed():
    first, second = make_synthetic_volumes(seed=7, **VOLUMES), make_synthetic_volumes(seed=7, **VOLUMES)
    for a, b in zip(_arrays(first), _arrays(second)):
        assert a.tobytes() == b.tobytes()
    other = make_synthetic_volumes(seed=8, **VOLUMES)
    for a, b in zip(_arrays(first), _arrays(other)):
        assert not np.array_equal(a, b)
    # training stacks are different scenes, and stack i does not depend on n_train
    assert np.corrcoef(first.train[0].ravel(), first.train[1].ravel())[0, 1] < 0.9
    fewer = make_synthetic_volumes(seed=7, **{**VOLUMES, "n_train": 1})
    np.testing.assert_array_equal(fewer.train[0], first.train[0])


def test_synthetic_photons_3d_deterministic_given_generator():
    a = synthetic_photons((8, 32, 32), np.random.default_rng(11))
    b = synthetic_photons((8, 32, 32), np.random.default_rng(11))
    c = synthetic_photons((8, 32, 32), np.random.default_rng(12))
    assert a.tobytes() == b.tobytes()
    assert not np.array_equal(a, c)
    # the sampling is part of the scene
    assert not np.array_equal(a, synthetic_photons((8, 32, 32), np.random.default_rng(11), z_step=2.0))


def test_synthetic_photons_3d_range_and_dtype():
    background, max_photons = 3.0, 90.0
    photons = synthetic_photons((16, 64, 64), np.random.default_rng(0), background=background,
                                n_blobs=60, n_filaments=20, max_photons=max_photons)
    assert photons.shape == (16, 64, 64) and photons.dtype == np.float64
    assert photons.min() >= background
    assert photons.max() == pytest.approx(max_photons)
    assert np.median(photons) < background + 0.2 * (max_photons - background)
    assert np.percentile(photons, 99) > background + 0.3 * (max_photons - background)


def test_synthetic_photons_3d_without_structures_is_the_background():
    photons = synthetic_photons((6, 20, 24), np.random.default_rng(0), background=4.0, n_blobs=0,
                                n_filaments=0, z_step=2.0)
    assert photons.shape == (6, 20, 24)
    np.testing.assert_array_equal(photons, 4.0)


@pytest.mark.parametrize("n_blobs, n_filaments", [(8, 0), (0, 8)])
def test_blobs_and_filaments_each_produce_3d_structure(n_blobs, n_filaments):
    photons = synthetic_photons((16, 48, 48), np.random.default_rng(1), background=1.0,
                                n_blobs=n_blobs, n_filaments=n_filaments, max_photons=50.0, z_step=2.0)
    assert photons.max() == pytest.approx(50.0)
    bright = photons > 10.0
    assert np.mean(bright) > 0.002
    # structures extend through several planes, not single-plane flashes
    assert np.sum(bright.any(axis=(1, 2))) >= 3


def test_volume_values_span_background_to_max_photons(volume_data):
    camera = volume_data.camera
    photons = (volume_data.test_clean.astype(np.float64) - camera.offset) / camera.gain
    assert photons.min() >= 2.0 - 1e-4
    assert photons.max() == pytest.approx(60.0, rel=1e-5)


def test_volume_noise_has_the_camera_statistics(volume_data):
    data = volume_data
    gain, offset, read_noise = data.camera.gain, data.camera.offset, data.camera.read_noise
    clean = data.test_clean.astype(np.float64)
    residual = data.test.astype(np.float64) - clean
    variance = gain * (clean - offset) + read_noise**2
    standardized = residual / np.sqrt(variance)
    assert abs(standardized.mean()) < 4 / np.sqrt(standardized.size)
    assert standardized.var() == pytest.approx(1.0, abs=0.03)
    # signal-dependent: the bright voxels are noisier in camera units, exactly as the model says
    bright = clean > offset + gain * 15.0
    assert bright.sum() > 1000
    assert np.var(residual[bright]) > 2 * np.var(residual[~bright])
    assert np.var(standardized[bright]) == pytest.approx(1.0, abs=6 * np.sqrt(2 / bright.sum()))
    # independent voxels: no correlation between neighbouring planes or rows
    for axis in (0, 1):
        a, b = np.moveaxis(standardized, axis, 0)[:-1], np.moveaxis(standardized, axis, 0)[1:]
        assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 0.03


def test_volume_calibration_covers_the_volume_signal_range(volume_data):
    clean, calibration = volume_data.test_clean, volume_data.calibration_clean
    assert calibration.min() < clean.min()
    assert calibration.max() > clean.max()
    counts, _ = np.histogram(calibration, bins=50, range=(clean.min(), clean.max()))
    assert counts.min() >= 30


def _gradient_ratios(seeds=range(4), shape=(24, 48, 48), **kwargs):
    """Pooled mean absolute difference of neighbouring voxels along Z, Y and X, over the mean
    of Y and X (and X over Y)."""
    gradients = np.zeros(3)
    for seed in seeds:
        volume = synthetic_photons(shape, np.random.default_rng(seed), n_blobs=40, n_filaments=20, **kwargs)
        gradients += [np.mean(np.abs(np.diff(volume, axis=axis))) for axis in range(3)]
    return gradients[0] / np.sqrt(gradients[1] * gradients[2]), gradients[2] / gradients[1]


def test_structures_span_fewer_voxels_along_z_the_larger_z_step():
    """Per voxel, a scene changes faster along Z than along Y/X by about z_step over the axial PSF's
    widening: ~2.1 at z_step 3, ~1.5 at z_step 2; lateral axes alike."""
    z3, x_over_y = _gradient_ratios(z_step=3.0)
    z2, _ = _gradient_ratios(z_step=2.0)
    assert z3 > 1.8
    assert 1.25 < z2 < z3
    assert x_over_y == pytest.approx(1.0, abs=0.1)


def test_isotropic_voxels_and_psf_make_z_like_y_and_x():
    z_over_yx, x_over_y = _gradient_ratios(z_step=1.0, axial_psf_sigma=1.3)
    assert z_over_yx == pytest.approx(1.0, abs=0.1)
    assert x_over_y == pytest.approx(1.0, abs=0.1)


def test_wider_axial_psf_smooths_along_z():
    """Isotropic voxels, default axial PSF (3.0 px against 1.3 laterally): smoother along Z."""
    z_over_yx, _ = _gradient_ratios(z_step=1.0)
    assert z_over_yx < 0.9


def test_make_synthetic_volumes_uses_z_step_and_axial_psf_sigma():
    """The stacks' sampling reaches the scenes (a thin stack's Z edges add a little Z gradient)."""
    def z_over_yx(**kwargs):
        data = make_synthetic_volumes(seed=1, shape=(16, 48, 48), n_train=1, calibration_shape=(16, 16),
                                      calibration_frames=2, n_blobs=60, n_filaments=30, **kwargs)
        g = [np.mean(np.abs(np.diff(data.test_clean.astype(np.float64), axis=a))) for a in range(3)]
        return g[0] / np.sqrt(g[1] * g[2])

    assert z_over_yx(z_step=3.0) > 1.7
    isotropic = z_over_yx(z_step=1.0, axial_psf_sigma=1.3)
    assert isotropic < 1.4
    assert isotropic > 1.2 * z_over_yx(z_step=1.0, axial_psf_sigma=4.0)


def test_default_structure_counts_scale_with_the_physical_volume():
    """None: counts proportional to Z * z_step * Y * X, so a 27 times larger physical volume is
    about as full (fixed counts of 30 blobs and 15 filaments fill ~80 % of the small one)."""
    camera = CameraParams()
    bright = camera.offset + camera.gain * 10.0
    for shape, z_step in (((8, 32, 32), 1.0), ((8, 96, 96), 3.0)):
        fill = np.mean([np.mean(make_synthetic_volumes(seed=seed, shape=shape, z_step=z_step, n_train=1,
                                                       calibration_shape=(16, 16), calibration_frames=2)
                                .test_clean > bright) for seed in range(4)])
        assert 0.04 < fill < 0.25
    flat = make_synthetic_volumes(seed=3, shape=(8, 32, 32), n_train=1, calibration_shape=(16, 16),
                                  calibration_frames=2, n_blobs=0, n_filaments=0)
    np.testing.assert_allclose(flat.test_clean, camera.gain * 2.0 + camera.offset)


@pytest.mark.parametrize("shape", [(4, 16, 16, 16), (3, 32, 32), (8, 15, 32), (8.0, 32, 32), (2, 8)])
def test_synthetic_photons_rejects_bad_3d_shapes(shape):
    with pytest.raises(ValueError, match="shape"):
        synthetic_photons(shape, np.random.default_rng(0))


@pytest.mark.parametrize("kwargs, name", [
    (dict(z_step=0.0), "z_step"),
    (dict(z_step=-1.0), "z_step"),
    (dict(z_step=float("nan")), "z_step"),
    (dict(z_step=float("inf")), "z_step"),
    (dict(axial_psf_sigma=0.0), "axial_psf_sigma"),
])
def test_synthetic_photons_rejects_bad_sampling(kwargs, name):
    with pytest.raises(ValueError, match=name):
        synthetic_photons((8, 32, 32), np.random.default_rng(0), **kwargs)


@pytest.mark.parametrize("name", ["z_step", "axial_psf_sigma"])
def test_sampling_arguments_of_a_2d_scene_are_rejected(name):
    with pytest.raises(ValueError, match=f"{name} applies to 3-D shapes"):
        synthetic_photons((32, 32), np.random.default_rng(0), **{name: 2.0})


@pytest.mark.parametrize("kwargs, name", [
    (dict(shape=(64, 64)), "shape"),
    (dict(shape=(4, 16, 16, 16)), "shape"),
    (dict(shape=(2, 64, 64)), "shape"),
    (dict(z_step=0.0), "z_step"),
    (dict(z_step=-2.0), "z_step"),
    (dict(axial_psf_sigma=-1.0), "axial_psf_sigma"),
    (dict(n_train=0), "n_train"),
    (dict(n_blobs=-1), "n_blobs"),
    (dict(n_filaments=2.5), "n_filaments"),
    (dict(calibration_shape=(8, 64, 64)), "calibration_shape"),
    (dict(calibration_frames=1), "calibration_frames"),
    (dict(camera=(3.0, 100.0, 6.0)), "camera"),
])
def test_make_synthetic_volumes_rejects_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        make_synthetic_volumes(**kwargs)

