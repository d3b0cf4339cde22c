"""Tests of pn2v_tf.demo: one tiny run (three tiny models), its table and the files it writes."""

import json
import math
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tifffile  # noqa: E402

from pn2v_tf import demo  # noqa: E402
from pn2v_tf.datasets import make_synthetic_data  # noqa: E402
from pn2v_tf.metrics import psnr  # noqa: E402
from pn2v_tf.noise_models import load_noise_model  # noqa: E402

ROWS = ["input", "N2V", "PN2V prior mean", "PN2V MMSE", "PN2V MMSE, bootstrapped GMM"]
TIFFS = {"input": "input.tif", "N2V": "n2v.tif", "PN2V prior mean": "pn2v_prior_mean.tif",
         "PN2V MMSE": "pn2v_mmse.tif", "PN2V MMSE, bootstrapped GMM": "pn2v_mmse_bootstrapped_gmm.tif"}
FIGURES = ["comparison.png", "noise_model_histogram.png", "noise_model_bootstrapped_gmm.png", "noise_model_fit.png"]
SHAPE, SEED, N_TRAIN = 64, 5, 2


def _argv(outdir, *extra):
    return ["--epochs", "1", "--steps", "2", "--n-samples", "16", "--n-first", "8", "--shape", str(SHAPE),
            "--n-train", str(N_TRAIN), "--seed", str(SEED), "--outdir", str(outdir), *extra]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """Run the demo once: (outdir, returned table)."""
    outdir = tmp_path_factory.mktemp("demo") / "out"
    table = demo.run(demo.parse_args(_argv(outdir)))
    return outdir, table


def _snapshot(folder):
    return {p.relative_to(folder): (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.rglob("*") if p.is_file()}


def test_parse_args_reads_the_options(tmp_path):
    args = demo.parse_args(_argv(tmp_path / "x", "--overwrite", "--learning-rate", "0.003", "--batch-size", "4"))
    assert (args.epochs, args.steps, args.n_samples, args.n_first, args.shape, args.n_train, args.seed) == (
        1, 2, 16, 8, SHAPE, N_TRAIN, SEED)
    assert args.overwrite is True and args.learning_rate == pytest.approx(0.003) and args.batch_size == 4
    assert args.outdir == str(tmp_path / "x")
    defaults = demo.parse_args([])
    assert defaults.overwrite is False and defaults.n_samples == 800


def test_table_has_the_four_rows_with_finite_values(demo_run):
    _, table = demo_run
    assert list(table) == ROWS
    assert all(isinstance(v, float) and math.isfinite(v) for v in table.values())


def test_files_are_written(demo_run):
    outdir, _ = demo_run
    for name in list(TIFFS.values()) + FIGURES + ["ground_truth.tif", "psnr.json"]:
        assert (outdir / name).is_file(), name
    for name in FIGURES:
        assert (outdir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in ("n2v", "pn2v", "pn2v_bootstrap"):
        assert (outdir / "models" / name / "config.json").is_file()
        assert (outdir / "models" / name / "weights_best.h5").is_file()
    assert load_noise_model(outdir / "models" / "pn2v" / "noise_model.npz").kind == "histogram"
    assert load_noise_model(outdir / "models" / "pn2v_bootstrap" / "noise_model.npz").kind == "gmm"


def test_bootstrap_only_run_uses_no_calibration_data(tmp_path):
    outdir = tmp_path / "unsupervised"
    table = demo.run(demo.parse_args(_argv(outdir, "--noise-models", "bootstrap")))

    assert list(table) == ["input", "N2V", "PN2V MMSE, bootstrapped GMM"]
    assert sorted(p.name for p in (outdir / "models").iterdir()) == ["n2v", "pn2v_bootstrap"]
    assert not (outdir / "noise_model_histogram.png").exists()


def test_file_stems_are_plain():
    assert demo._file_stem("PN2V MMSE, bootstrapped GMM") == "pn2v_mmse_bootstrapped_gmm"
    assert demo._file_stem("input") == "input"


def test_tiffs_hold_the_data_of_the_requested_seed_and_shape(demo_run):
    outdir, _ = demo_run
    data = make_synthetic_data(seed=SEED, shape=(SHAPE, SHAPE), n_train=N_TRAIN,
                               max_photons=demo.parse_args([]).max_photons)
    np.testing.assert_array_equal(tifffile.imread(outdir / "ground_truth.tif"), data.test_clean)
    np.testing.assert_array_equal(tifffile.imread(outdir / "input.tif"), data.test)
    for name in TIFFS.values():
        image = tifffile.imread(outdir / name)
        assert image.shape == (SHAPE, SHAPE) and image.dtype == np.float32 and np.all(np.isfinite(image))


def test_table_equals_psnr_recomputed_from_the_tiffs(demo_run):
    outdir, table = demo_run
    ground_truth = tifffile.imread(outdir / "ground_truth.tif")
    for row, name in TIFFS.items():
        assert table[row] == pytest.approx(psnr(ground_truth, tifffile.imread(outdir / name)), rel=1e-9, abs=1e-9)


def test_psnr_json_holds_the_table_and_the_arguments(demo_run):
    outdir, table = demo_run
    with open(outdir / "psnr.json") as f:
        stored = json.load(f)
    assert stored["psnr_db"] == table
    assert stored["args"]["epochs"] == 1 and stored["args"]["seed"] == SEED and stored["args"]["shape"] == SHAPE
    assert stored["seconds"] > 0


def test_format_table_lists_every_row(demo_run):
    _, table = demo_run
    text = demo.format_table(table)
    for row, value in table.items():
        assert f"| {row} | {value:.2f} |" in text


def test_second_run_into_a_non_empty_outdir_exits_and_touches_nothing(demo_run):
    outdir, _ = demo_run
    before = _snapshot(outdir)
    with pytest.raises(SystemExit) as info:
        demo.run(demo.parse_args(_argv(outdir)))
    assert "--overwrite" in str(info.value.code)
    assert _snapshot(outdir) == before


def test_empty_outdir_is_accepted_and_nonexistent_parents_are_created(tmp_path):
    # only the outdir check: an existing empty folder and a new nested one pass it
    (tmp_path / "empty").mkdir()
    assert demo._prepare_outdir(tmp_path / "empty", overwrite=False) == tmp_path / "empty"
    nested = demo._prepare_outdir(tmp_path / "a" / "b", overwrite=False)
    assert nested.is_dir()
    (nested / "keep.txt").write_text("x")
    assert demo._prepare_outdir(nested, overwrite=True) == nested  # --overwrite lets it through
    assert (nested / "keep.txt").read_text() == "x"
