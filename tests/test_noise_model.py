"""Tests of pn2v_tf.noise_models: the histogram noise model p(x|s), its files and its Keras side.

Most likelihood tests use one tiny hand-made histogram (4 bins over (0, 8), bin width 2, bin
centres 1, 3, 5, 7) whose probabilities are written out below, so that expected values can be
computed by hand from the layout in the module docstring of ``pn2v_tf/noise_models/histogram.py``.
"""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from pn2v_tf.noise_models import GMMNoiseModel, HistogramNoiseModel, NoiseModel, load_noise_model
from pn2v_tf.noise_models.histogram import MIN_PROBABILITY

RANGE_WARNING = "ignore:.*exceed the noise model's range:UserWarning"

# counts[signal bin, observation bin]; rows 1 and 3 have no data.
COUNTS = np.array([
    [2, 1, 1, 0],
    [0, 0, 0, 0],
    [0, 1, 2, 1],
    [0, 0, 0, 0],
])
VALUE_RANGE = (0.0, 8.0)
WIDTH = 2.0
# Row 0 and row 2 normalised; row 1 is halfway between them (its neighbours with data are rows 0
# and 2); row 3 lies above the last row with data and copies it.
EXPECTED_HISTOGRAM = np.array([
    [0.50, 0.25, 0.25, 0.00],
    [0.25, 0.25, 0.375, 0.125],
    [0.00, 0.25, 0.50, 0.25],
    [0.00, 0.25, 0.50, 0.25],
])
# Centres of the first and last rows with data (rows 0 and 2).
EXPECTED_SIGNAL_RANGE = (1.0, 5.0)


@pytest.fixture
def tiny_model():
    return HistogramNoiseModel.from_counts(COUNTS, VALUE_RANGE)


def _histogram(model):
    return keras.ops.convert_to_numpy(model.histogram)


# -- the histogram -------------------------------------------------------------------------------

def test_from_counts_normalises_rows_and_interpolates_empty_rows(tiny_model):
    np.testing.assert_allclose(_histogram(tiny_model), EXPECTED_HISTOGRAM, atol=1e-7)
    assert tiny_model.signal_range == pytest.approx(EXPECTED_SIGNAL_RANGE)
    assert tiny_model.value_range == VALUE_RANGE
    assert tiny_model.bin_width == WIDTH


def test_every_row_sums_to_one_including_rows_filled_by_interpolation():
    """Random counts with gaps of empty rows (below, between and above the rows with data)."""
    rng = np.random.default_rng(1)
    counts = rng.integers(0, 20, size=(12, 12)).astype(float)
    empty_rows = [0, 1, 4, 5, 6, 9, 11]
    counts[empty_rows] = 0

    histogram = _histogram(HistogramNoiseModel.from_counts(counts, (0, 12)))

    np.testing.assert_allclose(histogram.sum(axis=1), 1.0, rtol=1e-6)
    # Row 5 lies between rows 3 and 7 (with data) at weight 1/2.
    row3, row7 = counts[3] / counts[3].sum(), counts[7] / counts[7].sum()
    np.testing.assert_allclose(histogram[5], 0.5 * row3 + 0.5 * row7, atol=1e-7)
    np.testing.assert_allclose(histogram[4], 0.75 * row3 + 0.25 * row7, atol=1e-7)


# -- the likelihood against hand-computed values -------------------------------------------------

@pytest.mark.filterwarnings(RANGE_WARNING)
@pytest.mark.parametrize("x, s, probability, case", [
    (2.5, 2.0, 0.25, "x bin 1; s row 0.5 between rows 0 and 1 (equal entries)"),
    (0.1, 2.0, 0.375, "x bin 0; 0.5 * 0.5 + 0.5 * 0.25"),
    (5.0, 3.5, 0.40625, "x bin 2; row 1.25: 0.375 + 0.25 * (0.5 - 0.375)"),
    (6.0, 4.0, 0.1875, "x bin 3; row 1.5: 0.125 + 0.5 * (0.25 - 0.125)"),
    (5.0, 3.0, 0.375, "s exactly on the centre of row 1"),
    (4.0, 1.0, 0.25, "x on the edge between bins 1 and 2 belongs to bin 2; s on centre of row 0"),
    (7.9, 6.0, 0.25, "s above signal_range is clamped to row 2"),
    (7.9, 7.5, 0.25, "s above signal_range (in a row without data) is clamped to row 2"),
    (0.5, 0.2, 0.50, "s below signal_range is clamped to row 0"),
    (-3.0, 1.0, 0.50, "x below value_range falls into bin 0"),
    (100.0, 5.0, 0.25, "x above value_range falls into bin 3"),
    (8.0, 5.0, 0.25, "x == high falls into the last bin"),
])
def test_log_likelihood_equals_hand_computed_value(tiny_model, x, s, probability, case):
    expected = np.log(probability / WIDTH)

    actual = tiny_model.log_likelihood(np.array([x]), np.array([s]))

    np.testing.assert_allclose(actual, [expected], rtol=1e-6, err_msg=case)


@pytest.mark.filterwarnings(RANGE_WARNING)
def test_signals_at_first_and_last_bin_centres_read_the_edge_rows():
    """All rows have data, so signal_range spans the first to the last bin centre; the edge rows
    are read without interpolating beyond the table."""
    counts = np.array([[3, 1, 0, 0], [1, 2, 1, 0], [0, 1, 2, 1], [0, 0, 1, 3]])
    model = HistogramNoiseModel.from_counts(counts, VALUE_RANGE)
    x = np.array([0.5, 2.5, 4.5, 6.5])[:, np.newaxis]

    first = model.likelihood(x, np.array([[1.0, -2.0]]))     # centre of row 0, and below it
    last = model.likelihood(x, np.array([[7.0, 9.0]]))       # centre of row 3, and above it

    assert model.signal_range == pytest.approx((1.0, 7.0))
    np.testing.assert_allclose(first, np.repeat(counts[0][:, np.newaxis] / 4 / WIDTH, 2, axis=1), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(last, np.repeat(counts[3][:, np.newaxis] / 4 / WIDTH, 2, axis=1), rtol=1e-6, atol=1e-9)


def test_empty_cell_gives_floor_probability_and_finite_log(tiny_model):
    """Row 0 has no observation in bin 3: the floor MIN_PROBABILITY applies."""
    actual = tiny_model.log_likelihood(np.array([7.0]), np.array([1.0]))

    assert np.all(np.isfinite(actual))
    np.testing.assert_allclose(actual, [np.log(MIN_PROBABILITY / WIDTH)], rtol=1e-6)


def test_likelihood_is_exp_of_log_likelihood_and_a_density(tiny_model):
    x = np.array([2.5, 5.0])
    s = np.array([2.0, 3.5])

    np.testing.assert_allclose(tiny_model.likelihood(x, s), [0.25 / WIDTH, 0.40625 / WIDTH], rtol=1e-6)


def test_density_integrates_to_one_over_observations(tiny_model):
    """Summed over bin centres times bin width, p(x|s) is 1 for any s inside signal_range."""
    centres = np.array([1.0, 3.0, 5.0, 7.0])[:, np.newaxis]
    signals = np.linspace(1.0, 5.0, 9)[np.newaxis, :]

    total = tiny_model.likelihood(centres, signals).sum(axis=0) * WIDTH

    np.testing.assert_allclose(total, 1.0, rtol=1e-6)


# -- from_pairs / from_calibration_stack ---------------------------------------------------------

def test_from_pairs_pairs_observation_j_with_signal_j_div_n():
    """Two signal images, four observations: 0, 1 go with signal 0 and 2, 3 with signal 1.

    A pairing j % M (signal 0 with observations 0 and 2) would give a different histogram.
    """
    signal = np.array([[1.0, 1.0], [5.0, 5.0]])
    observation = np.array([[0.5, 1.5], [2.5, 3.5], [4.5, 5.5], [6.5, 7.5]])
    expected_counts = np.zeros((4, 4))
    expected_counts[0] = [2, 2, 0, 0]   # s = 1: x = 0.5, 1.5, 2.5, 3.5
    expected_counts[2] = [0, 0, 2, 2]   # s = 5: x = 4.5, 5.5, 6.5, 7.5
    expected = HistogramNoiseModel.from_counts(expected_counts, VALUE_RANGE)

    model = HistogramNoiseModel.from_pairs(signal, observation, bins=4, value_range=VALUE_RANGE)

    np.testing.assert_allclose(_histogram(model), _histogram(expected), atol=1e-7)
    assert model.signal_range == pytest.approx((1.0, 5.0))


def test_from_pairs_accepts_one_signal_image_without_leading_axis():
    """One (2, 2) signal image stands for all three observation images."""
    signal = np.array([[1.0, 5.0], [5.0, 1.0]])
    observation = np.stack([signal + 0.5, signal - 0.5, signal + 1.5])
    expected_counts = np.zeros((4, 4))
    expected_counts[0] = [4, 2, 0, 0]   # s = 1 (two pixels): x = 1.5, 0.5 (bin 0), 2.5 (bin 1)
    expected_counts[2] = [0, 0, 4, 2]   # s = 5 (two pixels): x = 5.5, 4.5 (bin 2), 6.5 (bin 3)

    model = HistogramNoiseModel.from_pairs(signal, observation, bins=4, value_range=VALUE_RANGE)

    np.testing.assert_allclose(
        _histogram(model), _histogram(HistogramNoiseModel.from_counts(expected_counts, VALUE_RANGE)), atol=1e-7)


@pytest.mark.parametrize("signal, observation, expected", [
    ([2.0, 5.0], [1.0, 7.0, 3.0, 4.0], (1.0, 7.0)),     # observations span the range
    ([0.5, 9.0], [1.0, 7.0, 3.0, 4.0], (0.5, 9.0)),     # signals span the range
    ([-2.0, 3.0], [1.0, 7.0, 3.0, 4.0], (-2.0, 7.0)),   # one end from each
])
def test_from_pairs_default_value_range_is_min_and_max_over_both(signal, observation, expected):
    model = HistogramNoiseModel.from_pairs(np.array(signal), np.array(observation), bins=4)

    assert model.value_range == pytest.approx(expected)


def test_from_pairs_counts_the_maximum_in_the_last_bin():
    """With the default range, the largest value lies on ``high`` and must not be dropped."""
    signal = np.array([0.0, 8.0])
    observation = np.array([0.0, 8.0])

    model = HistogramNoiseModel.from_pairs(signal, observation, bins=4)

    assert model.signal_range == pytest.approx((1.0, 7.0))
    np.testing.assert_allclose(_histogram(model)[-1], [0, 0, 0, 1], atol=1e-7)


def test_from_calibration_stack_uses_the_frame_mean_as_signal():
    """Pixel a: frames 0.5, 1.5, 1.0 (mean 1, s bin 0); pixel b: frames 2.1, 6.9, 7.0 (mean 5.33,
    s bin 2; its median 6.9 or first frame 2.1 would fall into other s bins)."""
    stack = np.array([[[0.5, 2.1]], [[1.5, 6.9]], [[1.0, 7.0]]])   # (N=3, Y=1, X=2)
    expected_counts = np.zeros((4, 4))
    expected_counts[0] = [3, 0, 0, 0]
    expected_counts[2] = [0, 1, 0, 2]

    model = HistogramNoiseModel.from_calibration_stack(stack, bins=4, value_range=VALUE_RANGE)

    np.testing.assert_allclose(
        _histogram(model), _histogram(HistogramNoiseModel.from_counts(expected_counts, VALUE_RANGE)), atol=1e-7)
    assert model.signal_range == pytest.approx((1.0, 5.0))


# -- array types, broadcasting, gradients --------------------------------------------------------

def test_numpy_in_gives_numpy_out_with_broadcast_shape(tiny_model):
    x = np.array([[1.0], [3.0], [5.0]])          # (3, 1): x bins 0, 1, 2
    s = np.array([[[1.0, 2.0, 3.0, 4.0]]])       # (1, 1, 4): rows 0, 0.5, 1, 1.5
    h = EXPECTED_HISTOGRAM
    rows = np.stack([h[0], (h[0] + h[1]) / 2, h[1], (h[1] + h[2]) / 2])   # [s, x bin]

    out = tiny_model.log_likelihood(x, s)

    assert isinstance(out, np.ndarray)
    assert out.shape == (1, 3, 4)
    np.testing.assert_allclose(out[0], np.log(rows[:, :3].T / WIDTH), rtol=1e-6)


def test_numpy_observation_with_python_scalar_signal(tiny_model):
    out = tiny_model.log_likelihood(np.array([2.5, 5.0]), 3.0)

    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, np.log(EXPECTED_HISTOGRAM[1, [1, 2]] / WIDTH), rtol=1e-6)


def test_tensors_in_give_tensors_out_with_same_values(tiny_model):
    x = np.array([[2.5], [5.0]], dtype=np.float32)
    s = np.array([[2.0, 3.5, 4.0]], dtype=np.float32)

    out = tiny_model.log_likelihood(tf.constant(x), tf.constant(s))

    assert tf.is_tensor(out)
    assert tuple(out.shape) == (2, 3)
    np.testing.assert_allclose(out.numpy(), tiny_model.log_likelihood(x, s), rtol=1e-6)


def test_tensors_work_inside_tf_function(tiny_model):
    graph_fn = tf.function(tiny_model.log_likelihood)

    out = graph_fn(tf.constant([5.0]), tf.constant([3.5]))

    np.testing.assert_allclose(out.numpy(), [np.log(0.40625 / WIDTH)], rtol=1e-6)


def test_gradient_wrt_signal_equals_slope_of_interpolation(tiny_model):
    """Between the centres of rows 1 and 2 (s in (3, 5)), p(x|s) is linear in s with slope
    (row2[j] - row1[j]) / w / w; its finite difference must agree with the gradient."""
    x = tf.constant([0.5, 2.5, 5.0, 7.0])                      # x bins 0..3
    s = tf.constant([3.2, 3.9, 4.4, 4.8])
    expected_slope = (EXPECTED_HISTOGRAM[2] - EXPECTED_HISTOGRAM[1]) / WIDTH / WIDTH
    h = 0.05
    finite_difference = (tiny_model.likelihood(x.numpy(), s.numpy() + h)
                         - tiny_model.likelihood(x.numpy(), s.numpy() - h)) / (2 * h)

    with tf.GradientTape() as tape:
        tape.watch(s)
        probability = tf.exp(tiny_model.log_likelihood(x, s))
    gradient = tape.gradient(probability, s).numpy()

    np.testing.assert_allclose(finite_difference, expected_slope, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(gradient, expected_slope, rtol=1e-4, atol=1e-7)


def test_gradient_of_log_likelihood_is_slope_over_probability(tiny_model):
    x = tf.constant([5.0])
    s = tf.constant([3.5])

    with tf.GradientTape() as tape:
        tape.watch(s)
        log_p = tiny_model.log_likelihood(x, s)
    gradient = tape.gradient(log_p, s).numpy()

    slope = (0.5 - 0.375) / WIDTH / WIDTH
    np.testing.assert_allclose(gradient, [slope / (0.40625 / WIDTH)], rtol=1e-5)


def test_gradient_is_zero_outside_signal_range_and_clip_signal_gives_the_same_value(tiny_model):
    x = tf.constant([2.5, 2.5, 5.0, 5.0])
    s = tf.constant([-4.0, 0.5, 5.5, 20.0])   # signal_range is (1, 5)

    with tf.GradientTape() as tape:
        tape.watch(s)
        log_p = tiny_model.log_likelihood(x, s)
    gradient = tape.gradient(log_p, s)

    np.testing.assert_array_equal(gradient.numpy(), 0.0)
    np.testing.assert_array_equal(tiny_model.clip_signal(s).numpy(), [1.0, 1.0, 5.0, 5.0])
    np.testing.assert_array_equal(log_p.numpy(), tiny_model.log_likelihood(x, tiny_model.clip_signal(s)).numpy())


def test_likelihood_of_tensors_is_a_tensor_usable_in_graphs(tiny_model):
    graph_fn = tf.function(tiny_model.likelihood)

    out = graph_fn(tf.constant([5.0]), tf.constant([3.5]))

    assert tf.is_tensor(out)
    np.testing.assert_allclose(out.numpy(), [0.40625 / WIDTH], rtol=1e-6)


# -- values outside the range --------------------------------------------------------------------

def test_observation_outside_value_range_warns_once_and_is_clamped(tiny_model):
    with pytest.warns(UserWarning, match="observation"):
        outside = tiny_model.log_likelihood(np.array([-5.0, 12.0]), np.array([1.0, 5.0]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = tiny_model.log_likelihood(np.array([-7.0, 30.0]), np.array([1.0, 5.0]))
        boundary = tiny_model.log_likelihood(np.array([0.0, 8.0]), np.array([1.0, 5.0]))

    assert [str(w.message) for w in caught] == []
    np.testing.assert_array_equal(outside, boundary)
    np.testing.assert_array_equal(again, boundary)


def test_signal_outside_signal_range_warns_once_and_is_clamped(tiny_model):
    with pytest.warns(UserWarning, match="signal"):
        outside = tiny_model.log_likelihood(np.array([0.5, 5.0]), np.array([0.0, 7.5]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = tiny_model.log_likelihood(np.array([0.5, 5.0]), np.array([-1.0, 6.0]))
        boundary = tiny_model.log_likelihood(np.array([0.5, 5.0]), np.array(EXPECTED_SIGNAL_RANGE))

    assert [str(w.message) for w in caught] == []
    np.testing.assert_array_equal(outside, boundary)
    np.testing.assert_array_equal(again, boundary)


def test_values_inside_the_range_do_not_warn(tiny_model):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tiny_model.log_likelihood(np.array([0.0, 3.0, 8.0]), np.array([1.0, 3.0, 5.0]))

    assert [str(w.message) for w in caught] == []


# -- a histogram of Gaussian noise ---------------------------------------------------------------

def test_histogram_of_gaussian_noise_approximates_gaussian_log_pdf():
    """s uniform on [0, 100], x = s + N(0, 10^2), bin width 2.

    Tolerance: binning smooths the density by a box of one bin width in x and in s (relative
    variance change (2 w^2 / 12) / sigma^2 < 1 %, i.e. < 0.02 in log p within 1.5 sigma), x is read
    at bin centres so that the step of the x lookup adds no first-order error, and each compared
    cell holds >= ~2,000 counts (relative sampling error <= ~2.5 %). A maximum log error of 0.1
    and a mean of 0.03 leave room for that, while a wrong width, shift or normalisation would not.
    """
    rng = np.random.default_rng(0)
    sigma, n = 10.0, 4_000_000
    signal = rng.uniform(0, 100, n)
    observation = signal + rng.normal(0, sigma, n)
    model = HistogramNoiseModel.from_pairs(signal, observation, bins=78, value_range=(-28, 128))
    s = rng.uniform(10, 90, 400)
    z = rng.uniform(-1.5, 1.5, 400)
    x_bin = np.floor((s + z * sigma + 28) / 2)
    x = -28 + (x_bin + 0.5) * 2

    actual = model.log_likelihood(x, s)

    expected = stats.norm.logpdf(x, loc=s, scale=sigma)
    error = np.abs(actual - expected)
    assert error.max() < 0.1
    assert error.mean() < 0.03


# -- files ---------------------------------------------------------------------------------------

def test_save_and_load_give_identical_likelihoods(tiny_model, tmp_path):
    path = tiny_model.save(tmp_path / "noise_model.npz")
    x = np.linspace(0, 8, 17)[:, np.newaxis]
    s = np.linspace(1, 5, 9)[np.newaxis, :]

    loaded = load_noise_model(path)

    assert isinstance(loaded, HistogramNoiseModel)
    assert loaded.value_range == tiny_model.value_range
    assert loaded.signal_range == tiny_model.signal_range
    np.testing.assert_array_equal(loaded.log_likelihood(x, s), tiny_model.log_likelihood(x, s))
    np.testing.assert_array_equal(_histogram(loaded), _histogram(tiny_model))


def test_save_appends_npz_suffix(tiny_model, tmp_path):
    path = tiny_model.save(tmp_path / "noise_model")

    assert path == str(tmp_path / "noise_model.npz")
    assert isinstance(NoiseModel.load(path), HistogramNoiseModel)


def test_save_refuses_to_overwrite_unless_asked(tiny_model, tmp_path):
    path = tmp_path / "noise_model.npz"
    path.write_bytes(b"user data")

    with pytest.raises(FileExistsError, match="overwrite"):
        tiny_model.save(path)
    assert path.read_bytes() == b"user data"

    tiny_model.save(path, overwrite=True)
    np.testing.assert_array_equal(_histogram(load_noise_model(path)), _histogram(tiny_model))


def test_load_rejects_an_npz_that_is_not_a_noise_model(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, weights=np.zeros(3))

    with pytest.raises(ValueError, match="not a noise model") as error:
        load_noise_model(path)
    assert str(path) in str(error.value)


def test_load_rejects_an_unknown_kind(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, kind="spline", histogram=np.zeros((2, 2)))

    with pytest.raises(ValueError, match="spline") as error:
        load_noise_model(path)
    assert str(path) in str(error.value)


def test_load_rejects_a_file_that_is_not_npz(tmp_path):
    path = tmp_path / "garbage.npz"
    path.write_bytes(b"this is not a numpy file" * 10)

    with pytest.raises(ValueError) as error:
        load_noise_model(path)
    assert str(path) in str(error.value)


def test_load_of_missing_file_raises_value_error_naming_it(tmp_path):
    path = tmp_path / "missing.npz"

    with pytest.raises(ValueError) as error:
        load_noise_model(path)
    assert str(path) in str(error.value)


def test_load_rejects_a_truncated_file(tiny_model, tmp_path):
    path = tiny_model.save(tmp_path / "noise_model.npz")
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])

    with pytest.raises(ValueError) as error:
        load_noise_model(path)
    assert str(path) in str(error.value)


def test_load_rejects_an_empty_file(tmp_path):
    path = tmp_path / "empty.npz"
    path.write_bytes(b"")

    with pytest.raises(ValueError) as error:
        load_noise_model(path)
    assert str(path) in str(error.value)


def test_load_rejects_a_histogram_file_missing_its_arrays(tmp_path):
    path = tmp_path / "partial.npz"
    np.savez(path, kind="histogram", value_range=np.array([0.0, 1.0]))

    with pytest.raises(ValueError) as error:
        load_noise_model(path)
    assert str(path) in str(error.value)


# -- Keras ---------------------------------------------------------------------------------------

@pytest.mark.filterwarnings(RANGE_WARNING)
def test_keras_model_save_and_load_gives_identical_outputs(tiny_model, tmp_path):
    x_in = keras.Input((1,), name="x")
    s_in = keras.Input((3,), name="s")
    model = keras.Model([x_in, s_in], tiny_model(x_in, s_in))
    x = np.array([[0.5], [3.0], [5.0], [7.5]], dtype=np.float32)
    s = np.array([[1.0, 2.0, 3.0], [3.5, 4.0, 5.0], [2.2, 4.4, 0.1], [9.0, 1.5, 4.9]], dtype=np.float32)
    expected = model.predict([x, s], verbose=0)

    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")

    np.testing.assert_array_equal(loaded.predict([x, s], verbose=0), expected)
    np.testing.assert_allclose(expected, tiny_model.log_likelihood(x, s), rtol=1e-6)
    layer = [lyr for lyr in loaded.layers if isinstance(lyr, HistogramNoiseModel)][0]
    config = layer.get_config()
    assert config["bins"] == 4
    assert tuple(config["value_range"]) == VALUE_RANGE
    assert tuple(config["signal_range"]) == EXPECTED_SIGNAL_RANGE
    assert [w.name for w in layer.weights] == ["histogram"]
    assert not layer.trainable_weights


@pytest.mark.filterwarnings(RANGE_WARNING)
def test_get_config_from_config_round_trip(tiny_model):
    config = tiny_model.get_config()

    rebuilt = HistogramNoiseModel.from_config(config)
    rebuilt.set_weights(tiny_model.get_weights())

    assert rebuilt.get_config() == config
    assert rebuilt.bins == 4
    assert rebuilt.value_range == VALUE_RANGE
    assert rebuilt.signal_range == EXPECTED_SIGNAL_RANGE
    x, s = np.array([0.5, 5.0, 7.0]), np.array([0.5, 3.5, 4.9])
    np.testing.assert_array_equal(rebuilt.log_likelihood(x, s), tiny_model.log_likelihood(x, s))


def test_serialize_deserialize_finds_registered_class(tiny_model):
    serialized = keras.saving.serialize_keras_object(tiny_model)

    rebuilt = keras.saving.deserialize_keras_object(serialized)

    assert isinstance(rebuilt, HistogramNoiseModel)
    assert rebuilt.signal_range == EXPECTED_SIGNAL_RANGE


def test_constructor_default_signal_range_is_centres_of_first_and_last_bins():
    model = HistogramNoiseModel(bins=8, value_range=(0, 16))

    assert model.signal_range == (1.0, 15.0)


# -- bad input -----------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["signal", "observation"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_from_pairs_rejects_nan_and_inf(bad, value):
    signal = np.array([1.0, 2.0, 3.0])
    observation = np.array([1.5, 2.5, 3.5])
    (signal if bad == "signal" else observation)[1] = value

    with pytest.raises(ValueError, match=f"{bad} contains NaN"):
        HistogramNoiseModel.from_pairs(signal, observation, bins=4, value_range=VALUE_RANGE)


@pytest.mark.parametrize("bad", ["observation", "signal"])
def test_log_likelihood_rejects_nan_with_value_error(tiny_model, bad):
    x = np.array([1.0, 5.0])
    s = np.array([3.0, 3.0])
    (x if bad == "observation" else s)[0] = np.nan

    with pytest.raises(ValueError, match=f"{bad}.*NaN"):
        tiny_model.log_likelihood(x, s)


@pytest.mark.parametrize("stack", [np.zeros((0, 4, 4)), np.ones((1, 4, 4)), np.ones((4, 4))],
                         ids=["empty", "single-frame", "2-D"])
def test_from_calibration_stack_rejects_too_few_frames(stack):
    with pytest.raises(ValueError, match="calibration stack"):
        HistogramNoiseModel.from_calibration_stack(stack)


@pytest.mark.parametrize("bins", [1, 0, -3, 2.5, True, "256"])
def test_bins_must_be_an_integer_of_at_least_two(bins):
    with pytest.raises(ValueError, match="bins"):
        HistogramNoiseModel.from_pairs(np.array([1.0, 2.0]), np.array([1.0, 2.0]), bins=bins)


@pytest.mark.parametrize("value_range", [(5.0, 5.0), (8.0, 0.0), (0.0, np.inf), (np.nan, 1.0)])
def test_value_range_must_be_finite_with_low_below_high(value_range):
    with pytest.raises(ValueError, match="value_range"):
        HistogramNoiseModel.from_pairs(np.array([1.0, 2.0]), np.array([1.0, 2.0]), value_range=value_range)
    with pytest.raises(ValueError, match="value_range"):
        HistogramNoiseModel(bins=4, value_range=value_range)


def test_constant_data_without_value_range_is_rejected():
    """Default range of constant data would have low == high."""
    with pytest.raises(ValueError, match="value_range"):
        HistogramNoiseModel.from_pairs(np.full(4, 3.0), np.full(4, 3.0))


def test_from_pairs_rejects_data_outside_the_given_range():
    with pytest.raises(ValueError, match="empty"):
        HistogramNoiseModel.from_pairs(np.array([10.0, 11.0]), np.array([10.0, 11.0]), value_range=VALUE_RANGE)


def test_from_pairs_rejects_observations_not_divisible_among_signals():
    with pytest.raises(ValueError, match="split evenly"):
        HistogramNoiseModel.from_pairs(np.ones((2, 3)), np.ones((3, 3)), bins=4, value_range=VALUE_RANGE)


def test_from_pairs_rejects_images_of_different_shape():
    with pytest.raises(ValueError, match="differ in shape"):
        HistogramNoiseModel.from_pairs(np.ones((2, 3)), np.ones((4, 5)), bins=4, value_range=VALUE_RANGE)


def test_from_pairs_rejects_empty_arrays():
    with pytest.raises(ValueError, match="empty"):
        HistogramNoiseModel.from_pairs(np.zeros((0,)), np.zeros((0,)), bins=4, value_range=VALUE_RANGE)


def test_from_counts_rejects_non_square_counts():
    with pytest.raises(ValueError, match="square"):
        HistogramNoiseModel.from_counts(np.ones((3, 4)), VALUE_RANGE)


@pytest.mark.filterwarnings(RANGE_WARNING)
def test_saturated_camera_data_gives_finite_likelihoods_and_loss():
    """A 16-bit camera clips at 0 and 65535: such pixels land in the edge bins, the loss stays finite."""
    from pn2v_tf.losses import PN2VLoss

    rng = np.random.default_rng(7)
    signal = rng.uniform(0.0, 70000.0, size=50_000)
    observation = np.clip(signal + rng.normal(0.0, 300.0, size=signal.size), 0.0, 65535.0)
    model = HistogramNoiseModel.from_pairs(np.clip(signal, 0, 65535), observation, bins=256)

    x = np.array([[0.0], [65535.0], [30000.0]], dtype=np.float32)
    samples = np.array([[-500.0, 0.0, 100.0], [65535.0, 70000.0, 1e6], [29000.0, 30000.0, 31000.0]], dtype=np.float32)
    log_p = model.log_likelihood(x, samples)
    loss = float(PN2VLoss(model)(tf.constant(x)[None], tf.constant(samples)[None]))

    assert np.all(np.isfinite(log_p)) and np.isfinite(loss)
    assert log_p[1, 1] > log_p[1, 0] - 1e-6 and log_p[1, 0] > np.log(MIN_PROBABILITY)  # saturation is explained


def test_check_range_errors_only_beyond_the_margin(tiny_model):
    """value_range (0, 8): a margin of 0.05 allows down to -0.4 and up to 8.4 with a warning."""
    with pytest.warns(UserWarning, match="exceed"):
        tiny_model.check_range(np.array([-0.3, 8.3]), "pixel", error_margin=0.05)
    with pytest.raises(ValueError, match="by more than 5% of its width"):
        tiny_model.check_range(np.array([1.0, 8.5]), "pixel", error_margin=0.05)
    with pytest.raises(ValueError, match="by more than 5% of its width"):
        tiny_model.check_range(np.array([-0.5, 1.0]), "pixel", error_margin=0.05)


def test_mean_noise_variance_is_the_noise_variance_averaged_over_signals():
    """Gaussian noise of sigma 3: the histogram's estimate is 9 plus the blur of its bins (width 0.5
    here), a GMM's 9; Poisson-like noise of variance 2 s over signals 10..50: the mean of 2 s, 60."""
    rng = np.random.default_rng(3)
    signal = rng.uniform(4, 60, 200_000)
    observation = signal + rng.normal(0, 3, signal.size)
    histogram = HistogramNoiseModel.from_pairs(signal, observation, bins=128, value_range=(-8, 72))
    assert histogram.mean_noise_variance() == pytest.approx(9, rel=0.03)
    gmm = GMMNoiseModel.fit(signal[:50_000], observation[:50_000], n_gaussians=1, n_coeff=2)
    assert gmm.mean_noise_variance() == pytest.approx(9, rel=0.05)
    signal = rng.uniform(10, 50, 400_000)
    observation = signal + rng.normal(0, 1, signal.size) * np.sqrt(2 * signal)
    poisson_like = HistogramNoiseModel.from_pairs(signal, observation, bins=256, value_range=(-20, 90))
    assert poisson_like.mean_noise_variance() == pytest.approx(60, rel=0.05)


# -- smoothing along x - s ----------------------------------------------------------------------

def test_smoothing_leaves_noise_that_depends_on_x_minus_s_alone_as_it_is():
    bins = 64
    identity = HistogramNoiseModel.from_counts(np.eye(bins), (0.0, 64.0))          # x = s exactly
    offsets = np.arange(bins)[None, :] - np.arange(bins)[:, None]
    shifted = np.exp(-0.5 * ((offsets - 3) / 2.0) ** 2)                           # x - s ~ N(3, 2^2) bins
    gaussian = HistogramNoiseModel.from_counts(shifted, (0.0, 64.0))
    interior = slice(16, 40)               # rows whose smoothing reads no row or column cut by the edges

    for model in (identity, gaussian):
        smoothed = model.smoothed(1.5).histogram.numpy()
        np.testing.assert_allclose(smoothed[interior], model.histogram.numpy()[interior], rtol=1e-4, atol=2e-6)
        np.testing.assert_allclose(smoothed.sum(axis=1), 1.0, rtol=1e-5)


def test_smoothing_keeps_the_width_of_noise_that_grows_with_the_signal():
    bins = 128
    centres = np.arange(bins) + 0.5
    sd = 2.0 + 0.05 * centres                                                      # 2 to 8.4 bins
    rows = np.exp(-0.5 * ((centres[None, :] - centres[:, None]) / sd[:, None]) ** 2)
    model = HistogramNoiseModel.from_counts(rows, (0.0, float(bins)))

    smoothed = model.smoothed(1.0).histogram.numpy()

    def widths(table):
        mean = table @ centres
        return np.sqrt(table @ centres ** 2 - mean ** 2)

    interior = slice(30, 90)
    np.testing.assert_allclose(widths(smoothed)[interior], widths(model.histogram.numpy())[interior], rtol=0.01)


def test_smoothing_keeps_the_bins_and_ranges_and_zero_smoothing_keeps_the_table():
    rng = np.random.default_rng(3)
    signal = rng.uniform(10, 90, 200_000)
    model = HistogramNoiseModel.from_pairs(signal, signal + rng.normal(0, 4, signal.size), bins=50,
                                           value_range=(0.0, 100.0))

    smoothed = model.smoothed(1.0)

    assert (smoothed.bins, smoothed.value_range, smoothed.signal_range) == (50, model.value_range, model.signal_range)
    np.testing.assert_allclose(model.smoothed(0).histogram.numpy(), model.histogram.numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="sigma_bins must be a finite number >= 0, got -1"):
        model.smoothed(-1)


def test_smoothing_brings_a_histogram_of_few_pairs_closer_to_the_truth():
    rng = np.random.default_rng(4)
    value_range, bins = (0.0, 128.0), 128

    def pairs(n):
        signal = rng.uniform(20, 108, n)
        return signal, signal + rng.normal(0, 6, n)

    truth = HistogramNoiseModel.from_pairs(*pairs(20_000_000), bins=bins, value_range=value_range)
    few = HistogramNoiseModel.from_pairs(*pairs(200_000), bins=bins, value_range=value_range)   # ~25 per cell
    rows = slice(30, 98)

    def distance(model):
        return np.abs(model.histogram.numpy()[rows] - truth.histogram.numpy()[rows]).sum()

    assert distance(few.smoothed(1.0)) < 0.7 * distance(few)
