"""Tests of what a new user of the ``pn2v`` command meets first (issue 19, item 4): histogram bins on
the integers of 8- and 16-bit data, one warning for values outside the noise model's range, no
TensorFlow chatter on stderr, and a ``--bootstrap`` that shows its progress and keeps its N2V model.
"""

import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tifffile  # noqa: E402

from pn2v_tf import cli  # noqa: E402
from pn2v_tf.noise_models.histogram import integer_bins  # noqa: E402
from conftest import error_line, run, tiny, train_options  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: A tiny N2V network on 16x16 patches, trained for one epoch of two steps.
TINY_N2V = train_options(tiny(unet_n_first=4, n2v_patch_shape=(16, 16), train_batch_size=4, seed=0))
SHORT = ["--epochs", "1", "--steps-per-epoch", "2"]
#: Signs of TensorFlow's own messages on stderr: C++ log lines and the Python logger's warnings.
TENSORFLOW_NOISE = (*cli.TENSORFLOW_STARTUP_LINES, "cpu_feature_guard", "port.cc", "util.cc", "WARNING:tensorflow",
                    "triggered tf.function retracing")


def integer_stack(dtype, low, high, shape=(8, 32, 32), seed=0):
    """A calibration stack (or with a 2-D ``shape`` an image) of integers of ``dtype`` whose minimum is
    ``low`` and maximum ``high``: Gaussian noise around a ramp, clipped into that range, with both
    extremes present."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(low, high, shape[-2] * shape[-1]).reshape(shape[-2:])
    stack = np.clip(rng.normal(ramp, 0.05 * (high - low) + 1, size=shape), low, high).round()
    stack[..., 0, 0], stack[..., -1, -1] = low, high
    return stack.astype(dtype)


def noise_model_of(path, tmp_path, capsys, *options):
    """``pn2v noise-model --calibration path`` with ``options`` -> the histogram it wrote."""
    from pn2v_tf import load_noise_model

    code, _, err = run(["noise-model", "--calibration", path, "-o", tmp_path / "nm.npz", "--quiet", *options], capsys)
    assert code == 0, err
    return load_noise_model(tmp_path / "nm.npz")


# -- histogram bins on the integers --------------------------------------------------------------

@pytest.mark.parametrize("low, high, bins, step, origin, expected", [
    (0, 255, 256, 1, 0, (256, (-0.5, 255.5))),          # 8-bit: one bin per value
    (3, 40, 256, 1, 0, (38, (2.5, 40.5))),              # fewer values than bins: one bin per value, no empty bins
    (0, 511, 256, 1, 0, (256, (-0.5, 511.5))),          # two values per bin
    (100, 1099, 256, 1, 0, (250, (99.5, 1099.5))),      # four values per bin: 250 bins reach 1099
    (0, 512, 256, 1, 0, (171, (-0.5, 512.5))),          # three per bin; 256 of them would leave a third empty
    (-7.2, 9.6, 4, 1, 0, (4, (-8.5, 11.5))),            # non-integer ends are rounded outwards
    (0, 4080, 256, 16, 0, (256, (-8.0, 4088.0))),       # 12-bit data stored as multiples of 16
    (103, 4083, 256, 16, 3, (250, (91.0, 4091.0))),     # values 3 + 16 j; 103 lies between two of them
])
def test_integer_bins_hold_a_whole_number_of_possible_values_each(low, high, bins, step, origin, expected):
    n, (start, stop) = integer_bins(low, high, bins, step, origin)
    per_bin = (stop - start) / n / step   # possible values per bin

    assert (n, (start, stop)) == expected
    assert per_bin == int(per_bin) >= 1 and n <= bins
    assert ((start + step / 2) - origin) % step == 0     # the first bin is centred on a possible value
    width = per_bin * step
    assert start <= low < start + width and stop - width < high <= stop   # no bin beyond the first and last needed


def test_integer_bins_name_bad_arguments():
    with pytest.raises(ValueError, match="bins must be an integer >= 2"):
        integer_bins(0, 255, 1)
    with pytest.raises(ValueError, match=r"integer bins need finite low <= high, got \(5, 4\)"):
        integer_bins(5, 4)
    with pytest.raises(ValueError, match="step must be an integer >= 1 and origin an integer, got step 0.5"):
        integer_bins(0, 4, step=0.5)


@pytest.mark.parametrize("dtype, low, high", [("uint8", 0, 255), ("uint16", 0, 255), ("int16", -20, 235),
                                              ("float32", 0, 255)])  # float32 TIFF of integer values
def test_8_bit_values_get_one_bin_per_integer(dtype, low, high, tmp_path, capsys):
    tifffile.imwrite(tmp_path / "calibration.tif", integer_stack(dtype, low, high))

    model = noise_model_of(tmp_path / "calibration.tif", tmp_path, capsys, "--bins", "256")

    assert model.bins == 256 and model.value_range == (low - 0.5, high + 0.5) and model.bin_width == 1.0
    assert model.signal_range[0] >= low and model.signal_range[1] <= high


def test_16_bit_values_get_a_whole_number_of_integers_per_bin(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "calibration.tif", integer_stack("uint16", 1000, 3000))  # 2001 values

    model = noise_model_of(tmp_path / "calibration.tif", tmp_path, capsys, "--bins", "256")

    assert model.bin_width == 8.0  # ceil(2001 / 256)
    assert model.bins == 251 and model.value_range == (999.5, 999.5 + 251 * 8)


def test_12_bit_values_stored_as_multiples_of_16_get_bins_on_those_multiples(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "calibration.tif", integer_stack("uint16", 2, 255) * np.uint16(16))  # 32..4080

    model = noise_model_of(tmp_path / "calibration.tif", tmp_path, capsys, "--bins", "256")

    assert model.bins == 254 and model.value_range == (32 - 8, 4080 + 8) and model.bin_width == 16


def test_an_explicit_value_range_and_non_integer_data_keep_their_bins(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "calibration.tif", integer_stack("uint8", 0, 255))
    model = noise_model_of(tmp_path / "calibration.tif", tmp_path, capsys, "--bins", "64", "--value-range", "0",
                           "255", "--overwrite")
    assert model.bins == 64 and model.value_range == (0.0, 255.0)

    fractional = integer_stack("float32", 0, 255) + np.float32(0.25)
    tifffile.imwrite(tmp_path / "calibration.tif", fractional)
    model = noise_model_of(tmp_path / "calibration.tif", tmp_path, capsys, "--bins", "64", "--overwrite")
    assert model.bins == 64 and model.value_range == (0.25, 255.25)


# -- one warning for values outside the noise model's range --------------------------------------

def test_an_image_outside_the_noise_models_range_warns_once_naming_it(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "calibration.tif", integer_stack("uint16", 50, 300))
    noisy = tmp_path / "noisy"
    noisy.mkdir()
    for i in range(3):
        image = integer_stack("uint16", 60, 290, shape=(32, 32), seed=i + 1)
        image[:2, :2] = 0
        tifffile.imwrite(noisy / f"image_{i}.tif", image)
    assert run(["noise-model", "--calibration", tmp_path / "calibration.tif", "-o", tmp_path / "nm.npz", "--quiet"],
               capsys)[0] == 0
    model = tmp_path / "model"

    code, _, err = run(["train", noisy, "--noise-model", tmp_path / "nm.npz", "--model", model, *TINY_N2V, *SHORT,
                        "--n-samples", "8", "--allow-out-of-range", "--quiet"], capsys)
    assert code == 0, err
    warned = [line for line in err.splitlines() if "noise model's range" in line]
    assert warned == [f"pn2v train: warning: {noisy / 'image_0.tif'}: pixel values [0, 290] exceed the noise "
                      "model's range [49.5, 300.5]; they are clamped to it"]

    code, _, err = run(["predict", "--model", model, noisy / "image_1.tif", "-o", tmp_path / "out",
                        "--allow-out-of-range", "--quiet"], capsys)
    assert code == 0, err
    warned = [line for line in err.splitlines() if "noise model's range" in line]
    assert len(warned) == 1 and warned[0].startswith(f"pn2v predict: warning: {noisy / 'image_1.tif'}: pixel values")


# -- TensorFlow stays quiet ----------------------------------------------------------------------

def user_environment():
    """This process's environment as a user's shell has it: no TF_CPP_MIN_LOG_LEVEL, no PN2V_DEBUG."""
    env = {key: value for key, value in os.environ.items() if key not in ("TF_CPP_MIN_LOG_LEVEL", "PN2V_DEBUG")}
    return {**env, "PYTHONPATH": str(ROOT)}


def test_the_command_writes_no_tensorflow_messages_to_stderr(tmp_path):
    """A whole --bootstrap (TensorFlow's import, training, prediction) in a fresh process: what reaches
    stderr is the command's own warnings only."""
    noisy = tmp_path / "noisy"
    noisy.mkdir()
    for i in range(3):
        tifffile.imwrite(noisy / f"image_{i}.tif", integer_stack("uint16", 60, 290, shape=(32, 32), seed=i))

    result = subprocess.run([sys.executable, "-m", "pn2v_tf.cli", "noise-model", "--bootstrap", str(noisy), "-o",
                             str(tmp_path / "nm.npz"), *TINY_N2V, *SHORT, "--quiet"], cwd=tmp_path,
                            capture_output=True, text=True, env=user_environment(), timeout=300)

    assert result.returncode == 0, result.stderr
    assert not [part for part in TENSORFLOW_NOISE if part in result.stderr], result.stderr
    assert all(line.startswith("pn2v noise-model: warning: ") for line in result.stderr.splitlines()), result.stderr


RETRACING = """
import sys
import tensorflow as tf

def retrace():
    function = tf.function(lambda x: x + 1)
    for n in range(2, 9):
        function(tf.zeros((n,)))

retrace()
print("-- quiet --", file=sys.stderr, flush=True)
from pn2v_tf import cli
cli._quiet_tensorflow()
retrace()
"""


def test_retracing_warnings_are_silenced():
    result = subprocess.run([sys.executable, "-c", RETRACING], capture_output=True, text=True,
                            env=user_environment(), timeout=120)

    assert result.returncode == 0, result.stderr
    before, after = result.stderr.split("-- quiet --")
    assert "triggered tf.function retracing" in before  # without the command's settings it is there
    assert "retracing" not in after and "WARNING:tensorflow" not in after


# -- the bootstrap -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def noisy_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bootstrap") / "noisy"
    folder.mkdir()
    for i in range(3):
        tifffile.imwrite(folder / f"image_{i}.tif", integer_stack("uint16", 60, 290, shape=(32, 32), seed=i))
    return folder


def test_bootstrap_shows_its_phases_and_keeps_its_n2v_model(noisy_folder, tmp_path, capsys):
    from pn2v_tf import PN2V, HistogramNoiseModel, load_noise_model

    code, out, err = run(["noise-model", "--bootstrap", noisy_folder, "-o", tmp_path / "boot.npz", "--bins", "64",
                          *TINY_N2V, *SHORT], capsys)

    assert code == 0, err
    for phase in ("N2V for the bootstrap", "N2V signal", "fitting the histogram noise model"):
        assert phase in err
    folder = tmp_path / "boot_n2v"
    assert f"the N2V model it trained is in {folder}" in out.splitlines()[-1]
    n2v = PN2V(None, folder.name, basedir=str(tmp_path))
    assert n2v.config.mode == "n2v"
    images = np.stack([tifffile.imread(path) for path in sorted(noisy_folder.iterdir())]).astype(np.float32)
    signal = n2v.predict(images, axes="SYX")
    written = load_noise_model(tmp_path / "boot.npz")
    bins, value_range = integer_bins(min(signal.min(), images.min()), max(signal.max(), images.max()), 64)
    assert written.bins == bins and written.value_range == value_range
    assert f"values {value_range[0]:g}..{value_range[1]:g} in {bins} bins" in out
    expected = HistogramNoiseModel.from_pairs(signal, images, bins=bins, value_range=value_range)
    np.testing.assert_allclose(np.asarray(written.histogram), np.asarray(expected.histogram), atol=1e-6)


def test_bootstrap_refuses_to_replace_an_n2v_model_without_overwrite(noisy_folder, tmp_path, capsys):
    argv = ["noise-model", "--bootstrap", noisy_folder, *TINY_N2V, *SHORT, "--quiet"]
    assert run([*argv, "-o", tmp_path / "first.npz", "--n2v-model", tmp_path / "n2v"], capsys)[0] == 0
    kept = {path.name: path.read_bytes() for path in (tmp_path / "n2v").iterdir()}

    code, _, err = run([*argv, "-o", tmp_path / "second.npz", "--n2v-model", tmp_path / "n2v"], capsys)
    assert code == 2
    assert f"{tmp_path / 'n2v'} exists" in error_line(err, "noise-model") and "--overwrite" in err
    assert not (tmp_path / "second.npz").exists()
    assert {path.name: path.read_bytes() for path in (tmp_path / "n2v").iterdir()} == kept

    code, _, err = run([*argv, "-o", tmp_path / "second.npz", "--n2v-model", tmp_path / "n2v", "--overwrite",
                        "--seed", "1"], capsys)
    assert code == 0, err
    assert (tmp_path / "n2v" / "weights_best.h5").read_bytes() != kept["weights_best.h5"]


def test_bootstrap_refuses_a_file_as_its_model_folder(noisy_folder, tmp_path, capsys):
    (tmp_path / "taken").write_text("not a folder")
    code, _, err = run(["noise-model", "--bootstrap", noisy_folder, "-o", tmp_path / "nm.npz", "--n2v-model",
                        tmp_path / "taken", *TINY_N2V, *SHORT], capsys)
    assert code == 2 and "taken: exists and is not a folder" in error_line(err, "noise-model")


# -- which option is for which source ------------------------------------------------------------

def noise_model_groups():
    """Title -> option strings of each argument group of ``pn2v noise-model``."""
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["noise-model"]
    return {group.title: {o for action in group._group_actions for o in action.option_strings}
            for group in sub._action_groups}


def test_help_groups_the_options_by_source_and_kind():
    groups = noise_model_groups()

    assert {"--epochs", "--steps-per-epoch", "--unet-depth", "--validation-fraction", "--n2v-model"} <= \
        groups["training (--bootstrap only)"]
    assert {"--calibration", "--signal", "--bootstrap", "--observation"} <= \
        groups["data (give one of --calibration, --signal and --bootstrap)"]
    assert groups["histogram (--kind histogram, any data source)"] == {"--bins", "--value-range"}
    assert {"--n-gaussians", "--gmm-steps"} <= groups["gmm (--kind gmm, any data source)"]


def test_training_options_are_refused_without_bootstrap(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "calibration.tif", integer_stack("uint8", 0, 255))

    code, _, err = run(["noise-model", "--calibration", tmp_path / "calibration.tif", "-o", tmp_path / "nm.npz",
                        "--epochs", "3", "--n2v2"], capsys)

    assert code == 2
    assert error_line(err, "noise-model") == ("pn2v noise-model: error: --epochs, --n2v2: training options are for "
                                              "--bootstrap (its N2V model); leave them out with --calibration")
    assert not (tmp_path / "nm.npz").exists()
