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
from pn2v_tf.datasets import make_synthetic_data, make_synthetic_volumes  # noqa: E402
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
    assert defaults.mean_weight is None and defaults.decouple_mean is True   # the package's defaults


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


# -- the z-stack demo (--3d) -------------------------------------------------------------------

ROWS_3D = ["input", "3-D N2V", "3-D PN2V prior mean", "3-D PN2V MMSE", "2-D PN2V MMSE, plane by plane"]
TIFFS_3D = {"input": "input.tif", "3-D N2V": "3_d_n2v.tif", "3-D PN2V prior mean": "3_d_pn2v_prior_mean.tif",
            "3-D PN2V MMSE": "3_d_pn2v_mmse.tif", "2-D PN2V MMSE, plane by plane": "2_d_pn2v_mmse_plane_by_plane.tif"}
PLANES_3D, SIDE_3D, PATCH_PLANES_3D = 8, 32, 4


def _argv_3d(outdir, *extra):
    return [*extra, "--3d", "--epochs", "1", "--steps", "1", "--n-samples", "8", "--n-first", "4",
            "--shape", str(SIDE_3D), "--planes", str(PLANES_3D), "--patch-planes", str(PATCH_PLANES_3D),
            "--n-train", "2", "--seed", str(SEED), "--outdir", str(outdir)]


@pytest.fixture(scope="module")
def demo_3d_run(tmp_path_factory):
    """Run the z-stack demo once (three tiny models, one step each): (outdir, returned table)."""
    outdir = tmp_path_factory.mktemp("demo3d") / "out"
    table = demo.run(demo.parse_args(_argv_3d(outdir, "--mean-weight", "0.5", "--no-decouple-mean")))
    return outdir, table


def test_3d_options_have_their_own_defaults_and_leave_the_2d_ones():
    args = demo.parse_args(["--3d"])
    assert args.three_d is True
    assert {name: getattr(args, name) for name in demo.DEFAULTS_3D} == demo.DEFAULTS_3D
    assert (args.planes, args.z_step, args.patch_planes) == (32, 3.0, 16)
    flat = demo.parse_args([])
    assert flat.three_d is False
    assert {name: getattr(flat, name) for name in demo.DEFAULTS_2D} == demo.DEFAULTS_2D
    assert demo.parse_args(["--3d", "--batch-size", "2", "--shape", "96"]).batch_size == 2
    with pytest.raises(SystemExit):
        demo.parse_args(["--3d", "--noise-models", "both"])


def test_3d_demo_table_rows_and_stack_shaped_results(demo_3d_run):
    outdir, table = demo_3d_run
    assert list(table) == ROWS_3D
    assert all(isinstance(v, float) and math.isfinite(v) for v in table.values())
    data = make_synthetic_volumes(seed=SEED, shape=(PLANES_3D, SIDE_3D, SIDE_3D), n_train=2,
                                  z_step=3.0, max_photons=demo.DEFAULTS_3D["max_photons"])
    ground_truth = tifffile.imread(outdir / "ground_truth.tif")
    np.testing.assert_array_equal(ground_truth, data.test_clean)
    np.testing.assert_array_equal(tifffile.imread(outdir / "input.tif"), data.test)
    for row, name in TIFFS_3D.items():
        image = tifffile.imread(outdir / name)
        assert image.shape == (PLANES_3D, SIDE_3D, SIDE_3D) and image.dtype == np.float32, name
        assert np.all(np.isfinite(image)), name
        assert table[row] == pytest.approx(psnr(ground_truth, image), rel=1e-9, abs=1e-9)
    with open(outdir / "psnr.json") as f:
        stored = json.load(f)
    assert stored["psnr_db"] == table and stored["args"]["three_d"] is True
    for name in ("comparison.png", "noise_model_histogram.png", "noise_model_fit.png"):
        assert (outdir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert demo.format_table(table).count("\n| ") == len(ROWS_3D) + 1


def test_3d_demo_models_train_at_the_same_budget(demo_3d_run):
    """Same steps, voxels and validation voxels per model; the 2-D model's patches are the 3-D ones' planes."""
    outdir, _ = demo_3d_run
    configs = {}
    for name in ("n2v_3d", "pn2v_3d", "pn2v_2d"):
        with open(outdir / "models" / name / "config.json") as f:
            configs[name] = json.load(f)
        assert (outdir / "models" / name / "weights_best.h5").is_file()
    assert load_noise_model(outdir / "models" / "pn2v_3d" / "noise_model.npz").kind == "histogram"
    three_d, two_d = configs["pn2v_3d"], configs["pn2v_2d"]
    assert configs["n2v_3d"]["mode"] == "n2v" and three_d["mode"] == two_d["mode"] == "pn2v"
    assert three_d["train_mean_weight"] == two_d["train_mean_weight"] == 0.5
    assert three_d["train_decouple_mean"] is two_d["train_decouple_mean"] is False
    assert configs["n2v_3d"]["train_decouple_mean"] is True      # the PN2V loss's options only
    assert three_d["axes"].startswith("ZYX") and two_d["axes"].startswith("YX")
    assert list(three_d["n2v_patch_shape"]) == [PATCH_PLANES_3D, SIDE_3D, SIDE_3D]
    assert list(three_d["unet_pool"]) == list(demo.POOL_3D)

    def voxels(config, count):
        return np.prod(config["n2v_patch_shape"]) * config[count]

    for count in ("train_batch_size", "train_n_val_patches"):
        assert voxels(three_d, count) == voxels(two_d, count) == voxels(configs["n2v_3d"], count)
    for key in ("train_epochs", "train_steps_per_epoch", "n2v_perc_pix", "unet_n_first", "unet_n_depth"):
        assert three_d[key] == two_d[key] == configs["n2v_3d"][key], key
