"""Tests of pn2v_tf.noise_models.plots: PNG files of noise models and of their fit, and the numbers
the plots show."""

import os

import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import pytest
from scipy.special import gammaln, logsumexp

from pn2v_tf.datasets import camera_noise, make_synthetic_data
from pn2v_tf.noise_models import HistogramNoiseModel, plot_fit_summary, plot_noise_model
from pn2v_tf.noise_models.pairs import flatten_pairs

RANGE_WARNING = "ignore:.*exceed the noise model's range:UserWarning"
HELD_OUT_FRAMES = 4

# Two signal images of two pixels and four observation images: observations 0, 1 pair with signal
# image 0 and observations 2, 3 with signal image 1 (j // 2). The pixels with signal 3 observe
# 0.5, 2.5, 0.1, 0.2; pairing j % 2 instead would give them 0.5, 6.5, 7.5, 0.2.
PAIR_SIGNAL = np.array([[3.0, 1.0], [1.0, 3.0]])
PAIR_OBSERVATION = np.array([[0.5, 7.0], [2.5, 7.5], [6.5, 0.1], [3.5, 0.2]])
TINY_COUNTS = np.array([[2, 1, 1, 0], [0, 0, 0, 0], [0, 1, 2, 1], [0, 0, 0, 0]])  # signal range (1, 5)
TINY_RANGE = (0.0, 8.0)


@pytest.fixture(scope="module")
def data():
    return make_synthetic_data(seed=3, shape=(32, 32), n_train=1, calibration_shape=(32, 32),
                               calibration_frames=40)


@pytest.fixture(scope="module")
def histogram(data):
    return HistogramNoiseModel.from_calibration_stack(data.calibration, bins=64)


@pytest.fixture(scope="module")
def held_out(data):
    """Signal (1, Y, X) and HELD_OUT_FRAMES fresh observations of it (one signal per 4 frames)."""
    camera = data.camera
    photons = (data.test_clean.astype(np.float64) - camera.offset) / camera.gain
    frames = np.broadcast_to(np.maximum(photons, 0), (HELD_OUT_FRAMES,) + photons.shape)
    rng = np.random.default_rng(7)
    observation = camera_noise(frames, rng, camera.gain, camera.offset, camera.read_noise)
    return data.test_clean[np.newaxis], observation


@pytest.fixture
def tiny_model():
    return HistogramNoiseModel.from_counts(TINY_COUNTS, TINY_RANGE)


@pytest.fixture(autouse=True)
def no_figures_left_open():
    yield
    assert plt.get_fignums() == []


def camera_log_likelihood(camera):
    """Exact log p(x|s) of ``gain * Poisson((s - offset) / gain) + offset + N(0, read_noise)``."""
    def log_likelihood(observation, signal):
        photons = np.maximum((signal - camera.offset) / camera.gain, 1e-12)
        n = np.arange(200)[:, np.newaxis]
        log_poisson = n * np.log(photons) - photons - gammaln(n + 1)
        residual = (observation - camera.gain * n - camera.offset) / camera.read_noise
        log_normal = -0.5 * residual ** 2 - np.log(camera.read_noise * np.sqrt(2 * np.pi))
        return logsumexp(log_poisson + log_normal, axis=0)
    return log_likelihood


def _png_shape(path):
    return matplotlib.image.imread(path).shape


# -- pairs ---------------------------------------------------------------------------------------

def test_flatten_pairs_pairs_observation_j_with_signal_j_div_n():
    signal, observation = flatten_pairs(PAIR_SIGNAL, PAIR_OBSERVATION)

    np.testing.assert_array_equal(signal, [3, 1, 3, 1, 1, 3, 1, 3])
    np.testing.assert_array_equal(observation, [0.5, 7.0, 2.5, 7.5, 6.5, 0.1, 3.5, 0.2])


def test_flatten_pairs_accepts_one_signal_image_without_leading_axis():
    signal, observation = flatten_pairs(PAIR_SIGNAL[0], PAIR_OBSERVATION[:3])

    np.testing.assert_array_equal(signal, [3, 1, 3, 1, 3, 1])
    np.testing.assert_array_equal(observation, PAIR_OBSERVATION[:3].ravel())


# -- plot_noise_model ----------------------------------------------------------------------------

def test_plot_noise_model_writes_a_png_and_returns_the_plotted_likelihood(histogram, data, tmp_path):
    path = tmp_path / "model.png"

    numbers = plot_noise_model(histogram, path, data.calibration.mean(axis=0), data.calibration, bins=64)

    assert _png_shape(path) == (480, 1200, 4)
    assert os.listdir(tmp_path) == ["model.png"]
    s, x = numbers["signal"], numbers["observation"]
    assert s.shape == x.shape == (64,)
    assert histogram.signal_range[0] <= s.min() < s.max() <= histogram.signal_range[1]
    assert histogram.value_range[0] < x.min() < x.max() < histogram.value_range[1]
    np.testing.assert_allclose(numbers["log_likelihood"],
                               histogram.log_likelihood(x[:, np.newaxis], s[np.newaxis, :]))
    assert len(numbers["slice_signals"]) == 4 and np.all(numbers["pairs_per_slice"] > 0)
    # each empirical density is a density over the model's value range
    for density in numbers["empirical_density"]:
        assert np.sum(density * np.diff(numbers["observation_edges"])) == pytest.approx(1.0)


def test_empirical_density_uses_the_pairs_near_each_slice(tiny_model, tmp_path):
    """One slice at the middle of the signal range (1, 5), s = 3; the pixels with signal 3 observe
    0.5, 2.5, 0.1, 0.2: three in x bin [0, 2) and one in [2, 4), density count / (4 * 2)."""
    numbers = plot_noise_model(tiny_model, tmp_path / "tiny.png", PAIR_SIGNAL, PAIR_OBSERVATION,
                               n_slices=1, bins=4, window=0.5)

    np.testing.assert_allclose(numbers["slice_signals"], [3.0])
    np.testing.assert_array_equal(numbers["pairs_per_slice"], [4])
    np.testing.assert_allclose(numbers["empirical_density"][0], [0.375, 0.125, 0.0, 0.0])


def test_empirical_density_keeps_the_window_and_counts_observations_outside_the_range(tiny_model, tmp_path):
    """Slice s = 3, window 0.5: the pixels with signal 3.0 and 3.4 count (not 3.6, not 2.0); their
    observations 1.0, 1.5 | 3.0 | 9.5 (beyond the range (0, 8)) give densities 2/8, 1/8, 0, 0."""
    signal = np.array([3.0, 3.4, 3.6, 2.0])
    observation = np.array([[1.0, 3.0, 5.0, 1.0], [9.5, 1.5, 1.0, 1.0]])

    numbers = plot_noise_model(tiny_model, tmp_path / "tiny.png", signal, observation, n_slices=1, bins=4,
                               window=0.5)

    np.testing.assert_array_equal(numbers["pairs_per_slice"], [4])
    np.testing.assert_allclose(numbers["empirical_density"][0], [0.25, 0.125, 0.0, 0.0])


def test_without_data_there_is_no_empirical_density(tiny_model, tmp_path):
    numbers = plot_noise_model(tiny_model, tmp_path / "tiny.png", n_slices=2, bins=8)

    assert numbers["empirical_density"] == [None, None]
    np.testing.assert_allclose(numbers["slice_signals"], [2.0, 4.0])


def test_plot_method_delegates_with_its_options(tiny_model, tmp_path):
    numbers = tiny_model.plot(tmp_path / "tiny.png", PAIR_SIGNAL, PAIR_OBSERVATION, n_slices=1, bins=4,
                              window=0.5)

    np.testing.assert_allclose(numbers["empirical_density"][0], [0.375, 0.125, 0.0, 0.0])
    assert (tmp_path / "tiny.png").is_file()


# -- plot_fit_summary ----------------------------------------------------------------------------

@pytest.mark.filterwarnings(RANGE_WARNING)
def test_fit_summary_returns_mean_held_out_log_likelihoods(histogram, data, held_out, tmp_path):
    signal, observation = held_out
    cal_signal = data.calibration.mean(axis=0, keepdims=True)
    wrong = HistogramNoiseModel.from_pairs(cal_signal, data.calibration + 15.0, bins=64)  # offset off by 15
    pairs_signal = np.broadcast_to(signal, observation.shape).ravel().astype(np.float64)
    pairs_observation = observation.ravel().astype(np.float64)

    means = plot_fit_summary({"histogram": histogram, "wrong": wrong}, signal, observation,
                             tmp_path / "summary.png", reference=camera_log_likelihood(data.camera))

    assert _png_shape(tmp_path / "summary.png") == (460, 1000, 4)
    assert set(means) == {"histogram", "wrong", "reference"}
    for name, model in (("histogram", histogram), ("wrong", wrong)):
        expected = np.mean(model.log_likelihood(pairs_observation, pairs_signal).astype(np.float64))
        assert means[name] == pytest.approx(expected, rel=1e-9)
    expected_reference = np.mean(camera_log_likelihood(data.camera)(pairs_observation, pairs_signal))
    assert means["reference"] == pytest.approx(expected_reference, rel=1e-9)
    assert means["reference"] > means["histogram"] > means["wrong"]


def test_a_noise_model_can_be_the_reference(histogram, held_out, tmp_path):
    means = plot_fit_summary({"histogram": histogram}, *held_out, tmp_path / "summary.png",
                             reference=histogram)

    assert means["reference"] == means["histogram"]


def test_fit_history_adds_a_panel_of_training_curves(histogram, held_out, tmp_path):
    trained = HistogramNoiseModel.from_counts(TINY_COUNTS, TINY_RANGE)
    trained.fit_history = {"loss": [5.0, 4.5, 4.2, 4.1], "val_loss": [4.8, 4.3], "val_step": [1, 3]}

    with pytest.warns(UserWarning, match="exceed the noise model's range"):
        plot_fit_summary({"histogram": histogram, "trained": trained}, *held_out, tmp_path / "summary.png")

    assert _png_shape(tmp_path / "summary.png") == (460, 1500, 4)


@pytest.mark.parametrize("history", [
    [4.0, 3.0],                                      # not a dict
    {"val_loss": [1.0]},                             # no loss
    {"loss": [2.0, 1.0], "val_loss": [1.5, 1.2], "val_step": [1]},
])
def test_malformed_fit_history_is_rejected(histogram, held_out, tmp_path, history):
    trained = HistogramNoiseModel.from_counts(TINY_COUNTS, TINY_RANGE)
    trained.fit_history = history

    with pytest.raises(ValueError, match="fit_history"):
        plot_fit_summary({"trained": trained}, *held_out, tmp_path / "summary.png")
    assert os.listdir(tmp_path) == []


# -- files ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("plot", ["model", "summary"])
def test_refuses_to_overwrite_unless_asked(tiny_model, tmp_path, plot):
    def draw(n, overwrite=False):
        if plot == "model":
            return plot_noise_model(tiny_model, path, n_slices=n, bins=8, overwrite=overwrite)
        return plot_fit_summary({"tiny": tiny_model}, PAIR_SIGNAL, PAIR_OBSERVATION, path,
                                signal_bins=n, overwrite=overwrite)

    path = tmp_path / "plot.png"
    draw(1)
    before = path.read_bytes()

    with pytest.raises(FileExistsError, match=str(path)):
        draw(3)
    assert path.read_bytes() == before

    draw(3, overwrite=True)
    assert path.read_bytes() != before
    assert os.listdir(tmp_path) == ["plot.png"]


def test_a_failed_write_leaves_no_file_behind(tiny_model, tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    def broken_savefig(self, fname, **kwargs):
        with open(fname, "wb") as f:
            f.write(b"half a png")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)

    with pytest.raises(OSError, match="disk full"):
        plot_noise_model(tiny_model, tmp_path / "model.png", bins=8)
    assert os.listdir(tmp_path) == []


# -- bad input -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    (dict(n_slices=0), "n_slices"),
    (dict(n_slices=2.0), "n_slices"),
    (dict(bins=1), "bins"),
    (dict(signal=PAIR_SIGNAL), "both signal and observation"),
    (dict(signal=PAIR_SIGNAL, observation=PAIR_OBSERVATION[:3]), "cannot be split evenly"),
    (dict(signal=PAIR_SIGNAL, observation=np.ones((4, 3))), "differ in shape"),
    (dict(window=-1.0), "window"),
    (dict(path="model.pdf"), r"\.png"),
])
def test_plot_noise_model_rejects_bad_input(tiny_model, tmp_path, kwargs, message):
    kwargs = dict(kwargs)
    path = tmp_path / kwargs.pop("path", "model.png")
    with pytest.raises(ValueError, match=message):
        plot_noise_model(tiny_model, path, **kwargs)
    assert os.listdir(tmp_path) == []


def test_plot_noise_model_rejects_what_is_not_a_noise_model(tmp_path):
    with pytest.raises(ValueError, match="NoiseModel"):
        plot_noise_model(lambda x, s: x, tmp_path / "model.png")


@pytest.mark.parametrize("models, kwargs, message", [
    ({}, {}, "non-empty"),
    ({"a": "not a model"}, {}, "NoiseModel"),
    ({"tiny": None}, dict(observation=PAIR_OBSERVATION[:3]), "cannot be split evenly"),
    ({"reference": None}, dict(reference=lambda x, s: x), "clashes"),
    ({"tiny": None}, dict(reference=lambda x, s: x[:1]), "reference returned shape"),
    ({"tiny": None}, dict(reference=3.0), "callable"),
    ({"tiny": None}, dict(signal_bins=0), "signal_bins"),
])
def test_plot_fit_summary_rejects_bad_input(tiny_model, tmp_path, models, kwargs, message):
    models = {name: tiny_model if model is None else model for name, model in models.items()}
    kwargs = dict(dict(signal=PAIR_SIGNAL, observation=PAIR_OBSERVATION), **kwargs)
    with pytest.raises(ValueError, match=message):
        plot_fit_summary(models, path=tmp_path / "summary.png", **kwargs)
    assert os.listdir(tmp_path) == []


def test_figures_get_the_usual_file_permissions(tiny_model, tmp_path):
    """Written like any file (mode 0666 less the umask), not 0600 as a private temporary file."""
    umask = os.umask(0o022)
    try:
        path = plot_noise_model(tiny_model, tmp_path / "shared.png", n_slices=1, bins=8) and tmp_path / "shared.png"
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644
