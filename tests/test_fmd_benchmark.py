"""benchmarks/fmd_table1.py on a made-up FMD folder (small images, the 'smoke' budget)."""

import importlib.util
import json
import os

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATASETS = ("Confocal_MICE", "TwoPhoton_MICE")


def load_benchmark():
    spec = importlib.util.spec_from_file_location("fmd_table1", os.path.join(ROOT, "benchmarks", "fmd_table1.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def fmd():
    return load_benchmark()


@pytest.fixture(scope="module")
def fake_data(tmp_path_factory):
    """4 noisy 8-bit PNGs per dataset and regime over one smooth ground truth, as in FMD."""
    from PIL import Image

    root = tmp_path_factory.mktemp("fmd")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:64, 0:64]
    for k, dataset in enumerate(DATASETS):
        gt = 20 + 60 * np.exp(-((yy - 20 - 10 * k) ** 2 + (xx - 36) ** 2) / 150.0)
        for folder, frames in (("raw", 1), ("avg2", 2)):
            (root / folder).mkdir(exist_ok=True)
            for i in range(1, 5):
                noisy = np.mean([3 * rng.poisson(gt / 3) + rng.normal(0, 2, gt.shape) for _ in range(frames)], axis=0)
                Image.fromarray(np.clip(np.round(noisy), 0, 255).astype(np.uint8)).save(root / folder / f"{dataset}_{i}.png")
        (root / "gt").mkdir(exist_ok=True)
        for i in range(1, 5):
            Image.fromarray(np.round(gt).astype(np.uint8)).save(root / "gt" / f"{dataset}_{i}.png")
    return root


def test_mean_2sem_by_hand(fmd):
    mean, two_sem = fmd.mean_2sem([1.0, 2.0, 3.0, 6.0])
    assert mean == pytest.approx(3.0)
    # sample std sqrt(((4 + 1 + 0 + 9) / 3)) = sqrt(14 / 3); SEM = that / 2
    assert two_sem == pytest.approx(np.sqrt(14 / 3))


def test_load_regime_and_errors(fmd, fake_data):
    noisy, gt = fmd.load_regime(fake_data, "Confocal_MICE", "avg2")
    assert noisy.shape == gt.shape == (4, 64, 64) and noisy.dtype == np.float32
    with pytest.raises(FileNotFoundError, match="Confocal_FISH"):
        fmd.load_regime(fake_data, "Confocal_FISH", "raw")
    with pytest.raises(SystemExit, match="not at"):
        fmd.check_data_dir(fake_data / "missing")


def test_score_uses_data_range_255(fmd):
    gt = np.zeros((2, 8, 8))
    images = gt + np.array([1.0, 2.0])[:, None, None]
    result = fmd.score(gt + 10, images + 10)
    assert result["psnr"] == pytest.approx([20 * np.log10(255), 20 * np.log10(255 / 2)])
    # a gain and offset error costs nothing in the scale-and-shift-invariant PSNR
    gt = np.random.default_rng(1).uniform(0, 100, (1, 16, 16))
    assert fmd.score(gt, 2 * gt + 5)["psnr_si"][0] > 200


def test_smoke_run_writes_everything_and_care_is_two_fold(fmd, fake_data, tmp_path):
    outdir = tmp_path / "out"
    methods = ["n2v", "pn2v", "pn2v_gmm", "care"]
    # one dataset keeps the run short: a second one repeated the same steps on other images
    argv = ["--budget", "smoke", "--data", str(fake_data), "--outdir", str(outdir), "--datasets", DATASETS[0],
            "--regimes", "raw", "--methods", *methods, "--append-markdown", str(tmp_path / "BENCH.md")]
    results = fmd.main(argv)
    assert [(r["dataset"], r["regime"]) for r in results] == [(DATASETS[0], "raw")]
    folder = outdir / "Confocal_MICE_raw"
    for name in ["input", "ground_truth", "pn2v_prior_mean", *methods]:
        assert (folder / f"{name}.tif").is_file(), name
    assert (folder / "figure.png").stat().st_size > 1000
    assert (folder / "noise_model_histogram.npz").is_file() and (folder / "noise_model_bootstrapped_gmm.npz").is_file()
    for model in ("n2v", "pn2v", "pn2v_gmm", "care_fold0", "care_fold1"):
        assert (folder / "models" / model / "config.json").is_file(), model
    summary = json.loads((outdir / "results.json").read_text())
    scores = summary["results"][0]["scores"]
    assert len(scores["pn2v"]["psnr"]) == 4 and set(scores) >= {"input", *methods}
    table = (tmp_path / "BENCH.md").read_text()
    assert "**Confocal_MICE, raw (NR1)**" in table and "| Input |" in table and "29.38" in table
    assert "--budget smoke" in table

    # CARE: each half is predicted by the fold trained on the other half
    import tifffile

    from pn2v_tf import PN2V

    noisy, _ = fmd.load_regime(fake_data, "Confocal_MICE", "raw")
    care = tifffile.imread(folder / "care.tif")
    fold0 = PN2V(None, "care_fold0", basedir=str(folder / "models"))  # trained on the left half
    fold1 = PN2V(None, "care_fold1", basedir=str(folder / "models"))
    np.testing.assert_allclose(care[:, :, 32:], fold0.predict(noisy, axes="SYX")[:, :, 32:], atol=1e-4)
    np.testing.assert_allclose(care[:, :, :32], fold1.predict(noisy, axes="SYX")[:, :, :32], atol=1e-4)

    with pytest.raises(SystemExit, match="not empty"):
        fmd.main(argv)

    # the report again from results.json, without training: the same tables
    again = tmp_path / "AGAIN.md"
    fmd.main(["--report-from", str(outdir / "results.json"), "--append-markdown", str(again)])
    assert again.read_text().split("Machine:")[1] == table.split("Machine:")[1]
