"""Tests of the ``pn2v`` command on multichannel TIFFs: a noise model per channel from a calibration
hyperstack or a bootstrap, training with one file per channel, one multichannel file or one shared
file, --resume, predictions that keep the channel axis, and the errors of mismatched channels.

The data are two channels of different brightness and camera noise, 32x32 pixels; the networks
are tiny and train for an epoch or two of two steps.
"""

import os
import shutil

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tifffile  # noqa: E402

from pn2v_tf import cli  # noqa: E402
from pn2v_tf.resume import read_log  # noqa: E402
from conftest import error_line, run, tiny, train_options  # noqa: E402

#: A U-Net of one level (the cheapest to build and trace), 4 feature channels, 16x16 patches.
TINY_N2V = train_options(tiny(unet_n_depth=1, unet_n_first=4, n2v_patch_shape=(16, 16), train_batch_size=4,
                              train_learning_rate=1e-3, seed=0))
TINY = TINY_N2V + ["--n-samples", "8"]
ONE_EPOCH = ["--epochs", "1", "--steps-per-epoch", "2"]
BINS = ["--bins", "32"]


def _noisy(rng, clean):
    """Channel 0: Poisson plus read noise; channel 1: a camera of gain 4."""
    return np.stack([rng.poisson(clean[:, 0]) + rng.normal(0, 3, clean[:, 0].shape),
                     4 * rng.poisson(clean[:, 1] / 4)], axis=1).astype(np.float32)


def _scenes(n, shift=0):
    """n clean two-channel images (n, C, Y, X) of different structure and brightness."""
    yy, xx = np.mgrid[:32, :32]
    scenes = [np.stack([80 + 30 * np.sin((xx + shift + 5 * i) / 3.0),
                        450 + 100 * (((yy + i) // 8 + xx // 8) % 2)]) for i in range(n)]
    return np.array(scenes, dtype=np.float64)


@pytest.fixture(scope="module")
def data():
    """Calibration (T, C, Y, X): 20 frames of ramps wider than the training images' values."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 1, 32)[np.newaxis, :].repeat(32, axis=0)
    static = np.stack([20 + 140 * ramp, 300 + 350 * ramp])[np.newaxis]
    return dict(calibration=_noisy(rng, static.repeat(20, axis=0)), train=_noisy(rng, _scenes(4)),
                test=_noisy(rng, _scenes(1, shift=2))[0])


@pytest.fixture(scope="module")
def files(data, tmp_path_factory):
    root = tmp_path_factory.mktemp("channels")
    tifffile.imwrite(root / "calibration.tif", data["calibration"], imagej=True, metadata={"axes": "TCYX"})
    tifffile.imwrite(root / "train.tif", data["train"], imagej=True, metadata={"axes": "TCYX"})
    tifffile.imwrite(root / "test.tif", data["test"], imagej=True, metadata={"axes": "CYX"})
    return root


@pytest.fixture(scope="module")
def noise_model_file(files):
    path = files / "nm.npz"
    assert cli.main(["noise-model", "--calibration", str(files / "calibration.tif"), "-o", str(path), *BINS,
                     "--quiet"]) == 0
    return path


@pytest.fixture(scope="module")
def model_dir(files, noise_model_file, tmp_path_factory):
    folder = tmp_path_factory.mktemp("models") / "two_channels"
    assert cli.main(["train", str(files / "train.tif"), "--noise-model", str(noise_model_file), "--model",
                     str(folder), *TINY, *ONE_EPOCH, "--quiet"]) == 0
    return folder


def _load(folder):
    from pn2v_tf import PN2V

    return PN2V(None, folder.name, basedir=str(folder.parent))


# -- noise-model ---------------------------------------------------------------------------------

def test_calibration_hyperstack_gives_one_histogram_per_channel_in_one_file(files, noise_model_file, data):
    from pn2v_tf import ChannelNoiseModels, HistogramNoiseModel, load_noise_model

    written = load_noise_model(noise_model_file)
    assert isinstance(written, ChannelNoiseModels) and written.n_channels == 2
    plain = HistogramNoiseModel.from_calibration_stack(data["calibration"][:, 0], bins=32)
    assert written.models[0].value_range == plain.value_range  # read noise: not integers, minimum to maximum
    low, high = written.models[1].value_range  # a gain of 4: bins centred on multiples of 4 (test_first_hour.py)
    assert written.models[1].bins <= 32 and (low + 2) % 4 == 0 and (high + 2) % 4 == 0
    for channel, model in enumerate(written.models):
        alone = HistogramNoiseModel.from_calibration_stack(data["calibration"][:, channel], bins=model.bins,
                                                           value_range=model.value_range)
        np.testing.assert_allclose(np.asarray(model.histogram), np.asarray(alone.histogram), atol=1e-7)
    assert written.models[0].value_range[1] < written.models[1].value_range[0]   # each channel its own range
    for name in ("nm_c0.png", "nm_c1.png"):
        assert (files / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (files / "nm.png").exists()


def test_axes_option_reads_channels_of_a_plain_file_and_names_every_output(files, noise_model_file, data, tmp_path,
                                                                           capsys):
    from pn2v_tf import load_noise_model

    tifffile.imwrite(tmp_path / "plain.tif", np.moveaxis(data["calibration"], 1, -1), photometric="minisblack")
    code, out, _ = run(["noise-model", "--calibration", tmp_path / "plain.tif", "--axes", "TYXC", "-o",
                        tmp_path / "nm", "--plot", tmp_path / "fit.png", *BINS], capsys)
    assert code == 0
    assert "2 histogram noise models, one per channel, from 20480 pixels each: channel 0: signals" in out
    assert f"wrote {tmp_path / 'nm.npz'} and {tmp_path / 'fit_c0.png'}, {tmp_path / 'fit_c1.png'}" in out
    expected = load_noise_model(noise_model_file)
    for mine, theirs in zip(load_noise_model(tmp_path / "nm.npz").models, expected.models):
        np.testing.assert_array_equal(np.asarray(mine.histogram), np.asarray(theirs.histogram))
    code, _, err = run(["noise-model", "--calibration", tmp_path / "plain.tif", "--axes", "TYXC", "-o",
                        tmp_path / "other", "--plot", tmp_path / "fit.png", *BINS], capsys)
    assert code == 2 and f"{tmp_path / 'fit_c0.png'} exists" in error_line(err, "noise-model")
    assert not (tmp_path / "other.npz").exists()


def test_signal_and_observation_files_pair_channel_by_channel(files, noise_model_file, data, bad, tmp_path,
                                                              capsys):
    from pn2v_tf import load_noise_model

    tifffile.imwrite(tmp_path / "mean.tif", data["calibration"].mean(axis=0), imagej=True, metadata={"axes": "CYX"})
    code, _, _ = run(["noise-model", "--signal", tmp_path / "mean.tif", "--observation", files / "calibration.tif",
                      "-o", tmp_path / "pairs", *BINS, "--quiet"], capsys)
    assert code == 0
    for mine, theirs in zip(load_noise_model(tmp_path / "pairs.npz").models, load_noise_model(noise_model_file).models):
        np.testing.assert_array_equal(np.asarray(mine.histogram), np.asarray(theirs.histogram))
    code, _, err = run(["noise-model", "--signal", tmp_path / "mean.tif", "--observation", bad / "one.tif",
                        "-o", tmp_path / "bad"], capsys)
    assert code == 2 and "one.tif: 1 channel (axes 'YX'), unlike the 2 of" in error_line(err, "noise-model")
    assert not (tmp_path / "bad.npz").exists()


def test_bootstrap_fits_one_noise_model_per_channel(files, tmp_path, capsys):
    from pn2v_tf import ChannelNoiseModels, load_noise_model

    code, out, _ = run(["noise-model", "--bootstrap", files / "train.tif", "-o", tmp_path / "boot.npz", *BINS,
                        *TINY_N2V, *ONE_EPOCH], capsys)
    assert code == 0 and "epoch 1/1: loss" in out and "2 histogram noise models, one per channel" in out
    written = load_noise_model(tmp_path / "boot.npz")
    assert isinstance(written, ChannelNoiseModels) and all(m.bins <= 32 for m in written.models)
    assert written.models[0].value_range[1] < written.models[1].value_range[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["boot.npz", "boot_c0.png", "boot_c1.png", "boot_n2v"]


# -- train and predict ---------------------------------------------------------------------------

def test_training_makes_a_two_channel_model_with_the_per_channel_noise_model(model_dir, noise_model_file):
    from pn2v_tf import ChannelNoiseModels

    model = _load(model_dir)
    assert model.config.axes == "YXC" and model.config.n_channels == 2
    assert isinstance(model.noise_model, ChannelNoiseModels) and model.noise_model.n_channels == 2
    assert model.config.means[1] > 4 * model.config.means[0]   # each channel normalised on its own
    assert model.config.single_net_per_channel is True           # n2v's default: a U-Net per channel


def test_predict_writes_imagej_channels_equal_to_the_models_prediction(model_dir, files, data, tmp_path, capsys):
    tifffile.imwrite(tmp_path / "stack.tif", np.moveaxis(data["train"], 1, -1), photometric="minisblack")
    inputs = [files / "test.tif", files / "train.tif"]
    code, out, _ = run(["predict", "--model", model_dir, *inputs, "-o", tmp_path / "mmse", "--quiet"], capsys)
    assert code == 0
    code, _, _ = run(["predict", "--model", model_dir, tmp_path / "stack.tif", "--axes", "SYXC", "-o",
                      tmp_path / "axes", "--quiet"], capsys)
    assert code == 0
    model = _load(model_dir)
    cases = ((tmp_path / "mmse" / "test.tif", "CYX", data["test"], "CYX"),
             (tmp_path / "mmse" / "train.tif", "TCYX", data["train"], "TCYX"),
             (tmp_path / "axes" / "stack.tif", "ZCYX", np.moveaxis(data["train"], 1, -1), "SYXC"))
    for path, file_axes, image, axes in cases:
        with tifffile.TiffFile(path) as tif:
            assert tif.is_imagej and tif.series[0].axes == file_axes
            written = tif.asarray()
        expected = model.predict(image, axes=axes)
        if axes == "SYXC":
            expected = np.moveaxis(expected, -1, 1)
        np.testing.assert_allclose(written, expected, rtol=1e-5, atol=1e-4)


def test_prior_mean_and_posterior_samples_keep_the_channels(model_dir, files, data, tmp_path, capsys):
    model = _load(model_dir)
    code, _, _ = run(["predict", "--model", model_dir, files / "test.tif", "-o", tmp_path / "pm", "--estimator",
                      "prior_mean", "--quiet"], capsys)
    assert code == 0
    np.testing.assert_allclose(tifffile.imread(tmp_path / "pm" / "test.tif"),
                               model.predict(data["test"], axes="CYX", estimator="prior_mean"), rtol=1e-5, atol=1e-4)
    code, _, _ = run(["predict", "--model", model_dir, files / "test.tif", files / "train.tif", "-o",
                      tmp_path / "post", "--estimator", "posterior", "--n-posterior", "3", "--quiet"], capsys)
    assert code == 0
    for name, axes, shape in (("test.tif", "TCYX", (3, 2, 32, 32)), ("train.tif", "TZCYX", (4, 3, 2, 32, 32))):
        with tifffile.TiffFile(tmp_path / "post" / name) as tif:   # samples as frames T, or slices Z beside T
            assert tif.series[0].axes == axes and tif.series[0].shape == shape
    np.testing.assert_allclose(tifffile.imread(tmp_path / "post" / "test.tif"),
                               model.sample_posterior(data["test"], n_samples=3, axes="CYX", seed=0),
                               rtol=1e-5, atol=1e-4)


def test_resume_continues_a_multichannel_training(model_dir, tmp_path, capsys):
    folder = tmp_path / "two_channels"
    shutil.copytree(model_dir, folder)
    code, _, err = run(["train", "--model", folder, "--resume", "--epochs", "2", "--single-net-per-channel"], capsys)
    assert code == 2 and "leave out --single-net-per-channel" in error_line(err, "train")
    code, out, _ = run(["train", "--model", folder, "--resume", "--epochs", "2"], capsys)
    assert code == 0 and f"resuming {folder} after epoch 1 of 2" in out
    assert [row["epoch"] for row in read_log(folder / "training_log.csv")] == [1, 2]
    assert _load(folder).config.n_channels == 2


# -- the noise model files of a training ---------------------------------------------------------

@pytest.fixture(scope="module")
def channel_files(noise_model_file, tmp_path_factory):
    """Each channel's noise model in its own file."""
    from pn2v_tf import load_noise_model

    root = tmp_path_factory.mktemp("per_channel")
    return [model.save(root / f"c{c}.npz") for c, model in enumerate(load_noise_model(noise_model_file).models)]


def _stop_before_training(monkeypatch):
    """Training stops (as if interrupted) once the model folder with its noise model is written."""
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_fit", interrupted)


def test_one_noise_model_file_per_channel_repeated_or_listed(files, channel_files, tmp_path, capsys, monkeypatch):
    from pn2v_tf import load_noise_model

    _stop_before_training(monkeypatch)
    for name, options in (("listed", ["--noise-model", *channel_files]),
                          ("repeated", ["--noise-model", channel_files[0], "--noise-model", channel_files[1]])):
        code, _, err = run(["train", files / "train.tif", *options, "--model", tmp_path / name, *TINY, *ONE_EPOCH,
                            "--quiet"], capsys)
        assert code == 130 and "warning" not in err
        stored = load_noise_model(tmp_path / name / "noise_model.npz")
        assert stored.kind == "per_channel"
        np.testing.assert_array_equal(np.asarray(stored.models[1].histogram),
                                      np.asarray(load_noise_model(channel_files[1]).histogram))


def test_no_single_net_per_channel_trains_one_shared_u_net(files, noise_model_file, tmp_path, capsys, monkeypatch):
    _stop_before_training(monkeypatch)
    code, _, _ = run(["train", files / "train.tif", "--noise-model", noise_model_file, "--model", tmp_path / "shared",
                      "--no-single-net-per-channel", *TINY, *ONE_EPOCH, "--quiet"], capsys)
    assert code == 130
    model = _load(tmp_path / "shared")
    assert model.config.single_net_per_channel is False
    assert not any(layer.name.startswith("c1_") for layer in model.keras_model.layers)   # no second body


def test_one_single_channel_file_is_applied_to_every_channel_with_a_warning(files, data, tmp_path, capsys,
                                                                            monkeypatch):
    from pn2v_tf import HistogramNoiseModel, load_noise_model

    both = HistogramNoiseModel.from_calibration_stack(data["calibration"].reshape(20, 64, 32), bins=32)
    shared = both.save(tmp_path / "shared.npz")   # covers the values of both channels
    _stop_before_training(monkeypatch)
    code, _, err = run(["train", files / "train.tif", "--noise-model", shared, "--model", tmp_path / "m", *TINY,
                        *ONE_EPOCH, "--quiet"], capsys)
    assert code == 130
    warned = [line for line in err.splitlines() if line.startswith("pn2v train: warning: ")]
    assert len(warned) == 1, err
    assert f"{shared} is one channel's noise model: it is applied to each of the 2 channels" in warned[0]
    assert load_noise_model(tmp_path / "m" / "noise_model.npz").kind == "histogram"


# -- errors ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bad(data, files):
    """Files whose channels do not fit: one channel, three channels, a pixel outside channel 1's range."""
    folder = files / "bad"
    folder.mkdir()
    tifffile.imwrite(folder / "one.tif", data["test"][0], imagej=True, metadata={"axes": "YX"})
    three = np.concatenate([data["test"], data["test"][:1]])
    tifffile.imwrite(folder / "three.tif", three, imagej=True, metadata={"axes": "CYX"})
    bright = data["test"].copy()
    bright[1, 0, 0] = 100.0   # inside channel 0's range, far below channel 1's
    tifffile.imwrite(folder / "range.tif", bright, imagej=True, metadata={"axes": "CYX"})
    volumes = np.repeat(data["test"][np.newaxis, np.newaxis], 2, axis=0).repeat(2, axis=1)
    tifffile.imwrite(folder / "tzcyx.tif", volumes, imagej=True, metadata={"axes": "TZCYX"})
    return folder


@pytest.mark.parametrize("inputs, options, problem", [
    ("bad/one.tif", ["--noise-model", "nm.npz"], "nm.npz: holds the noise models of 2 channels, but the images "
                                                 "have 1 channel"),
    ("train.tif", ["--noise-model", "nm.npz", "nm.npz", "nm.npz"], "3 --noise-model files for images of 2 channels"),
    ("train.tif", ["--noise-model", "nm.npz", "nm.npz"], "nm.npz: holds the noise models of 2 channels; with one "
                                                         "--noise-model file per channel each must be of one channel"),
    ("train.tif bad/three.tif", ["--noise-model", "nm.npz"], "three.tif: 3 channels (axes 'CYX'), unlike the 2 of"),
    ("bad/range.tif", ["--noise-model", "nm.npz"], "range.tif: pixel (channel 1) values"),
    ("", ["--noise-model", "nm.npz", "train.tif"], "--noise-model takes noise model files (.npz), not"),
])
def test_bad_training_input_names_the_channels(inputs, options, problem, bad, files, noise_model_file, tmp_path,
                                              capsys):
    paths = [files / name for name in inputs.split()]
    options = [files / o if o.endswith((".npz", ".tif")) else o for o in options]
    code, _, err = run(["train", *paths, *options, "--model", tmp_path / "m", *TINY, *ONE_EPOCH], capsys)
    line = error_line(err, "train")
    assert code == 2 and problem in line, line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name, options, problem", [
    ("three.tif", [], "the image has 3 channels (axes 'CYX'), the model takes 2 channels"),
    ("one.tif", [], "the image has 1 channel (axes 'YX'), the model takes 2 channels"),
    ("range.tif", [], "pixel (channel 1) values"),
    ("tzcyx.tif", ["--estimator", "posterior"], "its posterior samples need a sixth axis"),
])
def test_bad_prediction_input_names_the_channels(name, options, problem, bad, model_dir, files, tmp_path, capsys):
    code, _, err = run(["predict", "--model", model_dir, files / "test.tif", bad / name, "-o", tmp_path / "out",
                        *options], capsys)
    line = error_line(err, "predict")
    assert code == 2 and line.startswith(f"pn2v predict: error: {bad / name}: ") and problem in line, line
    assert list(tmp_path.iterdir()) == []
