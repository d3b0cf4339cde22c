"""Tests of the ``pn2v`` command (pn2v_tf.cli): every subcommand end to end on small synthetic TIFFs,
one-line errors with exit code 2 that leave nothing behind, --overwrite, atomic outputs, SIGTERM and
--resume, diverging training.

Most runs go through ``main(argv)`` in this process; the interrupted training runs as
``python -m pn2v_tf.cli`` in a subprocess.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
import zipfile
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tifffile  # noqa: E402

from pn2v_tf import cli  # noqa: E402
from pn2v_tf.datasets import make_synthetic_data  # noqa: E402
from pn2v_tf.metrics import psnr, psnr_scale_invariant  # noqa: E402
from pn2v_tf.resume import load_state, read_log  # noqa: E402
from conftest import error_line, run, tiny, train_options  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY_N2V = train_options(tiny(train_batch_size=4, train_learning_rate=1e-3, seed=0))
TINY = TINY_N2V + ["--n-samples", "16"]
SHORT = ["--epochs", "2", "--steps-per-epoch", "2"]
VALUE_RANGE = ["--value-range", "40", "600"]


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in Path(folder).rglob("*") if p.is_file()}


# -- data and a trained model shared by the tests ------------------------------------------------

@pytest.fixture(scope="module")
def data():
    return make_synthetic_data(seed=4, shape=(64, 64), n_train=3, calibration_shape=(48, 48),
                               calibration_frames=20)


@pytest.fixture(scope="module")
def files(data, tmp_path_factory):
    """TIFFs in a folder: calibration stack, noisy training images (one file each), test image, clean."""
    root = tmp_path_factory.mktemp("files")
    (root / "noisy").mkdir()
    (root / "clean").mkdir()
    tifffile.imwrite(root / "calibration.tif", data.calibration, photometric="minisblack")
    tifffile.imwrite(root / "calibration_clean.tif", data.calibration_clean)
    for i, image in enumerate(data.train):
        tifffile.imwrite(root / "noisy" / f"train_{i}.tif", image)
    tifffile.imwrite(root / "test.tif", data.test)
    tifffile.imwrite(root / "clean" / "test.tif", data.test_clean)
    return root


@pytest.fixture(scope="module")
def noise_model_file(files):
    path = files / "histogram.npz"
    code = cli.main(["noise-model", "--calibration", str(files / "calibration.tif"), "-o", str(path),
                     "--bins", "64", *VALUE_RANGE, "--quiet"])
    assert code == 0
    return path


@pytest.fixture(scope="module")
def model_dir(files, noise_model_file, tmp_path_factory):
    folder = tmp_path_factory.mktemp("models") / "pn2v"
    code = cli.main(["train", str(files / "noisy"), "--noise-model", str(noise_model_file), "--model", str(folder),
                     *TINY, *SHORT, "--quiet"])
    assert code == 0
    return folder


# -- the command line itself ---------------------------------------------------------------------

def test_help_is_quick_and_imports_no_tensorflow():
    code = ("import sys\nfrom pn2v_tf import cli\ntry:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('tensorflow' in sys.modules)")
    started = time.time()
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert result.stdout.strip().endswith("False"), result.stderr
    assert "noise-model" in result.stdout and "evaluate" in result.stdout
    assert time.time() - started < 20


def test_every_option_of_every_subcommand_explains_its_default():
    parser = cli.build_parser()
    subcommands = next(a for a in parser._actions if a.dest == "command").choices
    assert set(subcommands) == {"noise-model", "train", "predict", "export", "evaluate"}
    for name, sub in subcommands.items():
        help_text = sub.format_help()
        assert "example:" in help_text and "exit codes" in help_text
        for action in sub._actions:
            if not action.option_strings or action.dest == "help" or action.const is True:
                continue
            required = action.required or any(action in group._group_actions and group.required
                                               for group in sub._mutually_exclusive_groups)
            shown = cli._Formatter("pn2v")._get_help_string(action)
            assert required or "default" in shown or "required" in shown, f"pn2v {name} {action.option_strings}"


def test_setup_installs_the_command():
    import re

    setup = (ROOT / "setup.py").read_text()
    assert re.search(r'"pn2v = pn2v_tf\.cli:main"', setup) and "pn2v-demo = pn2v_tf.demo:main" in setup


def test_every_command_of_the_readme_example_parses():
    import re
    import shlex

    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- cli-example:.*?-->\s*```bash\n(.*?)\n```", text, re.S).group(1)
    commands = [shlex.split(line)[1:] for line in block.splitlines() if line.startswith("pn2v ")]
    assert [c[0] for c in commands] == ["noise-model", "train", "predict", "evaluate", "export"]
    parser = cli.build_parser()
    for argv in commands:
        assert parser.parse_args(argv).run is not None


@pytest.mark.parametrize("axes", ["YX", "ZYX"])
def test_training_defaults_are_the_configs(axes):
    from pn2v_tf import PN2VConfig

    from_options = cli._config(None, "pn2v", dict(cli.TRAINING_DEFAULTS), n_dim=len(axes))
    assert vars(from_options) == vars(PN2VConfig(None, axes=axes, seed=cli.TRAINING_DEFAULTS["seed"]))


# -- noise-model ---------------------------------------------------------------------------------

def test_noise_model_from_a_calibration_stack_equals_the_library_call(files, noise_model_file, data):
    from pn2v_tf import HistogramNoiseModel, load_noise_model

    written = load_noise_model(noise_model_file)
    expected = HistogramNoiseModel.from_calibration_stack(data.calibration, bins=64, value_range=(40, 600))
    np.testing.assert_allclose(np.asarray(written.histogram), np.asarray(expected.histogram), atol=1e-7)
    assert written.value_range == (40.0, 600.0)
    assert (files / "histogram.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gmm_noise_model_from_clean_and_noisy_pairs(files, tmp_path, capsys):
    code, out, _ = run(["noise-model", "--signal", files / "calibration_clean.tif", "--observation",
                        files / "calibration.tif", "--kind", "gmm", "--gmm-steps", "20",
                        "-o", tmp_path / "gmm", "--plot", tmp_path / "plot.png"], capsys)
    from pn2v_tf import load_noise_model

    assert code == 0 and "gmm noise model" in out
    assert load_noise_model(tmp_path / "gmm.npz").kind == "gmm"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gmm.npz", "plot.png"]


def test_bootstrapped_noise_model_from_noisy_images_alone(files, tmp_path, capsys):
    code, out, err = run(["noise-model", "--bootstrap", files / "noisy", "-o", tmp_path / "boot.npz", "--bins",
                          "32", *TINY_N2V, "--epochs", "1", "--steps-per-epoch", "2"], capsys)
    from pn2v_tf import load_noise_model

    assert code == 0
    assert "epoch 1/1: loss" in out and "histogram noise model" in out
    assert "N2V for the bootstrap" in err  # its progress bar
    assert load_noise_model(tmp_path / "boot.npz").kind == "histogram"
    assert (tmp_path / "boot.png").exists()


# -- train ---------------------------------------------------------------------------------------

def test_training_writes_a_csbdeep_model_folder_with_a_log(model_dir):
    from pn2v_tf import PN2V

    assert {"config.json", "noise_model.npz", "weights_best.h5", "weights_last.h5", "training_state.npz",
            "training_log.csv"} <= {p.name for p in model_dir.iterdir()}
    log = read_log(model_dir / "training_log.csv")
    assert [row["epoch"] for row in log] == [1, 2] and all(np.isfinite(row["val_loss"]) for row in log)
    assert load_state(model_dir / "training_state.npz").epoch == 2
    config = json.loads((model_dir / "config.json").read_text())
    assert config["n_samples"] == 16 and config["n2v_patch_shape"] == [32, 32] and config["unet_n_depth"] == 2
    model = PN2V(None, model_dir.name, basedir=str(model_dir.parent))
    assert model.noise_model.kind == "histogram"


def test_training_prints_one_summary_line_per_epoch_and_bars_unless_quiet(files, noise_model_file, tmp_path, capsys):
    code, out, err = run(["train", files / "noisy", "--noise-model", noise_model_file, "--model", tmp_path / "m",
                          *TINY, *SHORT], capsys)
    assert code == 0
    assert [line.split(":")[0] for line in out.splitlines() if line.startswith("epoch")] == ["epoch 1/2", "epoch 2/2"]
    assert "training: 100%" in err  # the epoch bar
    calibrated = [line for line in out.splitlines() if line.startswith("prior spread calibrated")]
    assert len(calibrated) == 1 and 1 / 16 <= float(calibrated[0].rsplit(" ", 1)[1]) <= 1
    code, out, err = run(["train", files / "noisy", "--noise-model", noise_model_file, "--model", tmp_path / "q",
                          *TINY, *SHORT, "--quiet"], capsys)
    assert code == 0 and out == "" and "epoch" not in err


def test_an_existing_model_is_kept_without_overwrite(files, noise_model_file, model_dir, capsys):
    before = snapshot(model_dir)
    code, _, err = run(["train", files / "noisy", "--noise-model", noise_model_file, "--model", model_dir,
                        *TINY, *SHORT], capsys)
    assert code == 2 and "--overwrite" in error_line(err, "train")
    assert snapshot(model_dir) == before


def test_overwrite_replaces_a_model_and_its_training_log(files, noise_model_file, tmp_path, capsys):
    folder = tmp_path / "m"
    argv = ["train", files / "noisy", "--noise-model", noise_model_file, "--model", folder, *TINY, "--quiet"]
    assert run(argv + ["--epochs", "2", "--steps-per-epoch", "1"], capsys)[0] == 0
    assert run(argv + ["--epochs", "1", "--steps-per-epoch", "1", "--overwrite"], capsys)[0] == 0
    assert len(read_log(folder / "training_log.csv")) == 1


def test_overwrite_leaves_no_state_of_the_replaced_training_to_resume(files, noise_model_file, model_dir, tmp_path,
                                                                      capsys, monkeypatch):
    """The replacing run is interrupted before its first epoch: --resume must not find the old state."""
    folder = tmp_path / "m"
    shutil.copytree(model_dir, folder)
    assert (folder / "training_state.npz").exists() and (folder / "training_log.csv").exists()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_fit", interrupted)
    code, _, err = run(["train", files / "noisy", "--noise-model", noise_model_file, "--model", folder, *TINY,
                        *SHORT, "--overwrite", "--quiet"], capsys)
    assert code == 130 and "pn2v train: interrupted: no epoch was completed" in err
    assert not {"training_state.npz", "training_log.csv", "weights_best.h5", "weights_last.h5"} & {
        p.name for p in folder.iterdir()}
    code, _, err = run(["train", "--model", folder, "--resume", "--epochs", "3"], capsys)
    assert code == 2 and "no training_state.npz" in error_line(err, "train")


def test_diverging_training_stops_with_one_line_and_exit_code_1(files, tmp_path, capsys):
    folder = tmp_path / "nan"
    code, _, err = run(["train", files / "noisy", "--mode", "n2v", "--model", folder, *TINY,
                        "--learning-rate", "1e25", "--epochs", "3", "--steps-per-epoch", "3", "--quiet"], capsys)
    assert code == 1
    assert "diverged" in error_line(err, "train") and "--learning-rate" in err
    from pn2v_tf import PN2V

    for name in ("weights_best.h5", "weights_last.h5"):
        if (folder / name).exists():  # a finite first epoch was kept
            model = PN2V(None, "nan", basedir=str(tmp_path))
            model.load_weights(name)
            assert all(np.all(np.isfinite(w)) for w in model.keras_model.get_weights())


def test_sigterm_keeps_the_last_epoch_and_resume_completes_the_run(files, noise_model_file, tmp_path, capsys):
    folder, epochs = tmp_path / "killed", 6
    argv = ["train", files / "noisy", "--noise-model", noise_model_file, "--model", folder, *TINY,
            "--epochs", str(epochs), "--steps-per-epoch", "6", "--quiet"]
    process = subprocess.Popen([sys.executable, "-m", "pn2v_tf.cli", *map(str, argv)], cwd=ROOT,
                               env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    log = folder / "training_log.csv"
    deadline = time.time() + 600   # generous: the first epoch of a loaded machine
    while not (log.exists() and len(read_log(log)) >= 1) and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, err
    assert "pn2v train: interrupted" in err and "--resume" in err
    done = len(read_log(log))
    assert 1 <= done < epochs
    assert load_state(folder / "training_state.npz").epoch == done
    assert not list(folder.glob("*.tmp"))

    from pn2v_tf import PN2V

    model = PN2V(None, "killed", basedir=str(tmp_path))
    model.load_weights("weights_last.h5")  # the last completed epoch's weights load
    assert all(np.all(np.isfinite(w)) for w in model.keras_model.get_weights())

    code, out, _ = run(["train", "--model", folder, "--resume"], capsys)
    assert code == 0 and f"resuming {folder} after epoch {done} of {epochs}" in out
    rows = read_log(log)
    assert [row["epoch"] for row in rows] == list(range(1, epochs + 1))
    assert int(load_state(folder / "training_state.npz").optimizer[0]) == epochs * 6  # Adam's steps, all epochs
    uninterrupted = tmp_path / "whole"
    assert run(argv[:5] + [uninterrupted] + argv[6:], capsys)[0] == 0
    assert len(read_log(uninterrupted / "training_log.csv")) == len(rows)


def test_resume_refuses_what_it_cannot_do(files, noise_model_file, model_dir, tmp_path, capsys):
    code, _, err = run(["train", "--model", model_dir, "--resume"], capsys)
    assert code == 2 and "done all 2 epochs" in error_line(err, "train")
    code, _, err = run(["train", "--model", model_dir, "--resume", "--patch-size", "16"], capsys)
    assert code == 2 and "--patch-size" in error_line(err, "train")
    (tmp_path / "empty").mkdir()
    code, _, err = run(["train", "--model", tmp_path / "empty", "--resume"], capsys)
    assert code == 2 and "no config.json" in error_line(err, "train")


def test_resume_can_extend_a_finished_training_and_restores_the_optimiser(files, noise_model_file, tmp_path,
                                                                          capsys):
    folder = tmp_path / "m"
    assert run(["train", files / "noisy", "--noise-model", noise_model_file, "--model", folder, *TINY,
                "--epochs", "1", "--steps-per-epoch", "1", "--quiet"], capsys)[0] == 0
    assert run(["train", "--model", folder, "--resume", "--epochs", "2", "--quiet"], capsys)[0] == 0
    assert [row["epoch"] for row in read_log(folder / "training_log.csv")] == [1, 2]
    # Adam's step count goes on from the first run's step: 2 epochs x 1 step (a fresh optimiser would count 1)
    assert int(load_state(folder / "training_state.npz").optimizer[0]) == 2 * 1


# -- predict -------------------------------------------------------------------------------------

def test_predict_writes_the_models_mmse_as_float32_imagej_tiffs(model_dir, files, tmp_path, capsys):
    from pn2v_tf import PN2V

    code, out, err = run(["predict", "--model", model_dir, files / "test.tif", files / "noisy", "-o", tmp_path / "out"],
                         capsys)
    assert code == 0 and "wrote 4 denoised files (mmse)" in out
    assert "files" in err and "tile" in err  # progress bars over files and tiles
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["test.tif", "train_0.tif", "train_1.tif",
                                                                     "train_2.tif"]
    with tifffile.TiffFile(tmp_path / "out" / "test.tif") as tif:
        assert tif.is_imagej and tif.series[0].axes == "YX"
        written = tif.asarray()
    model = PN2V(None, model_dir.name, basedir=str(model_dir.parent))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = model.predict(tifffile.imread(files / "test.tif"), axes="YX")
    assert written.dtype == np.float32
    np.testing.assert_allclose(written, expected, rtol=1e-5, atol=1e-4)


def test_predict_prior_mean_posterior_explicit_tiles_and_integer_output(model_dir, files, tmp_path, capsys):
    test = files / "test.tif"
    assert run(["predict", "--model", model_dir, test, "-o", tmp_path / "pm", "--estimator", "prior_mean",
                "--dtype", "uint16", "--n-tiles", "2", "2", "--quiet"], capsys)[0] == 0
    prior_mean = tifffile.imread(tmp_path / "pm" / "test.tif")
    assert prior_mean.dtype == np.uint16 and prior_mean.shape == (64, 64)
    assert run(["predict", "--model", model_dir, test, "-o", tmp_path / "post", "--estimator", "posterior",
                "--n-posterior", "3", "--quiet"], capsys)[0] == 0
    with tifffile.TiffFile(tmp_path / "post" / "test.tif") as tif:
        assert tif.series[0].axes == "CYX" and tif.series[0].shape == (3, 64, 64)


def test_predict_keeps_a_stacks_axes(model_dir, data, tmp_path, capsys):
    tifffile.imwrite(tmp_path / "movie.tif", data.train, imagej=True, metadata={"axes": "TYX"})
    tifffile.imwrite(tmp_path / "stack.tif", data.train, photometric="minisblack")
    assert run(["predict", "--model", model_dir, tmp_path / "movie.tif", tmp_path / "stack.tif",
                "-o", tmp_path / "out", "--quiet"], capsys)[0] == 0
    for name, axes in (("movie.tif", "TYX"), ("stack.tif", "ZYX")):
        with tifffile.TiffFile(tmp_path / "out" / name) as tif:
            assert tif.series[0].axes == axes and tif.series[0].shape == (3, 64, 64)


def test_an_existing_output_is_kept_without_overwrite(model_dir, files, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "test.tif").write_bytes(b"mine")
    code, _, err = run(["predict", "--model", model_dir, files / "test.tif", "-o", out], capsys)
    assert code == 2 and "--overwrite" in error_line(err, "predict")
    assert (out / "test.tif").read_bytes() == b"mine"
    assert run(["predict", "--model", model_dir, files / "test.tif", "-o", out, "--overwrite", "--quiet"],
               capsys)[0] == 0
    assert tifffile.imread(out / "test.tif").shape == (64, 64)


def test_an_interrupted_prediction_leaves_no_truncated_tiff(model_dir, files, tmp_path, capsys, monkeypatch):
    import pn2v_tf.io

    def write_half_then_interrupt(handle, image, **kwargs):
        handle.write(b"II*\x00" + bytes(1000))
        raise KeyboardInterrupt

    monkeypatch.setattr(pn2v_tf.io.tifffile, "imwrite", write_half_then_interrupt)
    code, _, err = run(["predict", "--model", model_dir, files / "test.tif", "-o", tmp_path / "out", "--quiet"],
                       capsys)
    assert code == 130 and "pn2v predict: interrupted" in err
    assert list((tmp_path / "out").iterdir()) == []


# -- bad input: one line naming file and problem, exit code 2, nothing written --------------------

def _bad_files(folder, data):
    """name -> (path, expected problem)."""
    folder.mkdir()
    (folder / "empty").mkdir()
    (folder / "text.tif").write_text("hello")
    tifffile.imwrite(folder / "whole.tif", data.train, imagej=True, metadata={"axes": "ZYX"})
    whole = (folder / "whole.tif").read_bytes()
    (folder / "truncated.tif").write_bytes(whole[: len(whole) // 2])
    tifffile.imwrite(folder / "rgb.tif", np.zeros((64, 64, 3), np.uint8))
    tifffile.imwrite(folder / "small.tif", data.test[:16, :16])
    nan = data.test.copy()
    nan[5, 5] = np.nan
    tifffile.imwrite(folder / "nan.tif", nan)
    bright = data.test.copy()
    bright[0, 0] = 5000
    tifffile.imwrite(folder / "bright.tif", bright)
    return {
        "text": (folder / "text.tif", "cannot read it as a TIFF file"),
        "truncated": (folder / "truncated.tif", "corrupt TIFF file"),
        "rgb": (folder / "rgb.tif", "3 channels"),
        "nan": (folder / "nan.tif", "NaN or infinite values (1)"),
        "empty": (folder / "empty", "no TIFF files"),
        "range": (folder / "bright.tif", "exceed the noise model's range"),
        "missing": (folder / "missing.tif", "no such file or folder"),
    }


@pytest.fixture(scope="module")
def bad(data, tmp_path_factory):
    return _bad_files(tmp_path_factory.mktemp("bad") / "inputs", data)


@pytest.mark.parametrize("case", ["text", "truncated", "rgb", "nan", "empty", "range", "missing", "small"])
def test_bad_training_input(case, bad, noise_model_file, tmp_path, capsys):
    path, problem = bad.get(case, (bad["nan"][0].with_name("small.tif"), "smaller than the training patch 32x32"))
    code, _, err = run(["train", path, "--noise-model", noise_model_file, "--model", tmp_path / "m", *TINY, *SHORT],
                       capsys)
    assert code == 2
    line = error_line(err, "train")
    assert line.startswith(f"pn2v train: error: {path}: ") and problem in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("case", ["text", "truncated", "rgb", "nan", "empty", "range", "missing"])
def test_bad_prediction_input(case, bad, model_dir, files, tmp_path, capsys):
    path, problem = bad[case]
    code, _, err = run(["predict", "--model", model_dir, files / "test.tif", path, "-o", tmp_path / "out"], capsys)
    assert code == 2
    line = error_line(err, "predict")
    assert line.startswith(f"pn2v predict: error: {path}: ") and problem in line
    assert list(tmp_path.iterdir()) == []


def test_wrong_axes_option_names_the_file(model_dir, files, tmp_path, capsys):
    stack = files / "calibration.tif"
    code, _, err = run(["predict", "--model", model_dir, stack, "-o", tmp_path / "out", "--axes", "YX"], capsys)
    assert code == 2 and error_line(err, "predict").startswith(f"pn2v predict: error: {stack}: ")
    assert list(tmp_path.iterdir()) == []


def test_bad_calibration_input_writes_no_noise_model(bad, tmp_path, capsys):
    for case in ("truncated", "empty", "nan"):
        path, problem = bad[case]
        code, _, err = run(["noise-model", "--calibration", path, "-o", tmp_path / "nm.npz"], capsys)
        assert code == 2 and problem in error_line(err, "noise-model")
    single = bad["nan"][0].with_name("small.tif")
    code, _, err = run(["noise-model", "--calibration", single, "-o", tmp_path / "nm.npz"], capsys)
    assert code == 2 and "at least 2 frames" in error_line(err, "noise-model")
    assert list(tmp_path.iterdir()) == []


def test_a_model_folder_that_is_not_one(files, tmp_path, capsys):
    code, _, err = run(["predict", "--model", tmp_path, files / "test.tif", "-o", tmp_path / "out"], capsys)
    assert code == 2 and "no config.json" in error_line(err, "predict")


# -- export and evaluate -------------------------------------------------------------------------

def test_export_savedmodel_and_bioimageio_needs_a_test_input(model_dir, tmp_path, capsys):
    code, out, _ = run(["export", "--model", model_dir, "-o", tmp_path / "saved"], capsys)
    assert code == 0 and "savedmodel" in out and (tmp_path / "saved" / "saved_model.pb").exists()
    code, _, err = run(["export", "--model", model_dir, "-o", tmp_path / "saved"], capsys)
    assert code == 2 and "--overwrite" in error_line(err, "export")
    old_model = tmp_path / "models" / "old"  # a model trained before the example input was kept
    shutil.copytree(model_dir, old_model)
    (old_model / "example_input.tif").unlink()
    code, _, err = run(["export", "--model", old_model, "-o", tmp_path / "package.zip"], capsys)
    assert code == 2 and "--test-input" in error_line(err, "export") and "example_input.tif" in err
    code, _, err = run(["export", "--model", model_dir, "-o", tmp_path / "package.zip", "--xla"], capsys)
    assert code == 2 and "--xla is for --format savedmodel" in error_line(err, "export")
    code, out, _ = run(["export", "--model", model_dir, "-o", tmp_path / "fast", "--xla"], capsys)
    assert code == 0 and b"_XlaMustCompile" in (tmp_path / "fast" / "saved_model.pb").read_bytes()
    assert b"_XlaMustCompile" not in (tmp_path / "saved" / "saved_model.pb").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fast", "models", "saved"]


def test_a_package_exported_with_the_kept_example_denoises_like_its_model_folder(model_dir, files, tmp_path, capsys):
    pytest.importorskip("bioimageio.spec", reason="optional extra not installed: pip install 'pn2v_tf[bioimageio]'")
    package = tmp_path / "my_pn2v.zip"
    code, out, _ = run(["export", "--model", model_dir, "-o", package, "--author", "A Tester"], capsys)
    assert code == 0 and "(bioimageio)" in out
    with zipfile.ZipFile(package) as archive:
        test_input = np.load(archive.open("test_input.npy"))[0, ..., 0]
    np.testing.assert_array_equal(test_input, tifffile.imread(model_dir / "example_input.tif"))

    for estimator in ("mmse", "prior_mean"):
        for name, model in (("package", package), ("folder", model_dir)):
            code, out, _ = run(["predict", "--model", model, files / "test.tif", files / "noisy", "-o",
                                tmp_path / estimator / name, "--estimator", estimator, "--quiet"], capsys)
            assert code == 0
        written = snapshot(tmp_path / estimator / "package")
        assert len(written) == 4 and written.keys() == snapshot(tmp_path / estimator / "folder").keys()
        for file in written:
            expected = tifffile.imread(tmp_path / estimator / "folder" / file)
            np.testing.assert_allclose(tifffile.imread(tmp_path / estimator / "package" / file), expected,
                                       rtol=1e-5, atol=1e-5 * np.abs(expected).max())

    tifffile.imwrite(tmp_path / "thin.tif", np.full((1, 8), 100, np.float32))
    for inputs, option, problem in (([], ["--estimator", "posterior"], "needs a model folder"),
                                    ([], ["--n-tiles", "2", "2"], "bounds its memory itself"),
                                    ([tmp_path / "thin.tif"], [],
                                     "thin.tif: images of 1x8 pixels; the package takes at least 2 x 2")):
        code, _, err = run(["predict", "--model", package, files / "test.tif", *inputs, "-o", tmp_path / "no",
                            *option], capsys)
        assert code == 2 and problem in error_line(err, "predict")
    assert not (tmp_path / "no").exists()


def test_predict_refuses_a_package_that_pn2v_tf_did_not_make(files, tmp_path, capsys):
    package = tmp_path / "other.zip"
    with zipfile.ZipFile(package, "w") as archive:
        archive.writestr("rdf.yaml", "type: model\nname: some other model\nconfig: {stardist: {}}\n")
    code, _, err = run(["predict", "--model", package, files / "test.tif", "-o", tmp_path / "out"], capsys)
    assert code == 2
    assert error_line(err, "predict") == (f"pn2v predict: error: {package}: this bioimage.io model was not made by "
                                          "pn2v_tf (its rdf.yaml has no config.pn2v_tf); run it with bioimageio.core "
                                          "or deepImageJ instead")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.zip"]


def test_evaluate_prints_the_psnr_table_and_writes_csv(files, data, tmp_path, capsys):
    predictions = tmp_path / "pred"
    predictions.mkdir()
    denoised = (data.test + data.test_clean) / 2
    tifffile.imwrite(predictions / "test.tif", denoised.astype(np.float32))
    code, out, _ = run(["evaluate", predictions, "-g", files / "clean", "--csv", tmp_path / "table.csv"], capsys)
    assert code == 0
    expected = psnr(data.test_clean, denoised.astype(np.float32))
    row = next(line for line in out.splitlines() if line.startswith(f"| {predictions / 'test.tif'} |"))
    assert f"| 1 | {expected:.2f} | {psnr_scale_invariant(data.test_clean, denoised.astype(np.float32)):.2f} |" in row
    assert out.splitlines()[-1].startswith("| mean |  | 1 |")
    assert (tmp_path / "table.csv").read_text().splitlines()[0].startswith("prediction,ground truth")


def test_evaluate_names_a_prediction_without_ground_truth(files, tmp_path, capsys):
    for name in ("a.tif", "b.tif"):
        tifffile.imwrite(tmp_path / name, np.zeros((64, 64), np.float32))
    code, _, err = run(["evaluate", tmp_path, "-g", files / "clean"], capsys)
    assert code == 2 and error_line(err, "evaluate").startswith(f"pn2v evaluate: error: {tmp_path / 'a.tif'}: ")
