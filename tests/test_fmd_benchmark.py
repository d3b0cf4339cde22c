"""benchmarks/fmd_table1.py on a made-up FMD folder (small images, the 'smoke' budget)."""

import importlib.util
import json
import os

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATASETS = ("Confocal_MICE", "TwoPhoton_MICE")
# A few rows in the format of ../shared/data/fmd/paper_table1.csv (not read from there): a value and 2 SEM
# that differ in every regime, rows without 2 SEM, and the si rows of two-photon.
PAPER_CSV = """dataset,method,psnr,NR1,NR1_2sem,NR2,NR2_2sem,NR3,NR3_2sem,NR4,NR4_2sem,NR5,NR5_2sem,mean
Confocal_MICE,Input,plain,29.38,0.01,32.44,0.01,35.59,0.01,38.90,0.01,42.64,0.03,35.79
Confocal_MICE,U-Net (PN2V),plain,38.24,0.02,39.72,0.03,41.34,0.03,43.02,0.04,45.11,0.05,41.49
Confocal_MICE,U-Net (N2V),plain,37.56,0.02,38.78,0.02,39.94,0.02,41.01,0.02,41.95,0.02,39.85
Confocal_MICE,VST+BM3D,plain,37.95,,39.47,,41.09,,42.73,,44.52,,41.15
Confocal_MICE,U-Net (trad.),plain,38.38,0.02,39.90,0.03,41.37,0.03,43.06,0.04,45.16,0.05,41.58
Confocal_MICE,DnCNN,plain,38.15,,39.78,,41.41,,43.11,,45.20,,41.53
TwoPhoton_MICE,U-Net (PN2V),plain,33.67,0.33,34.58,0.39,35.42,0.42,36.58,0.37,39.78,0.24,36.00
TwoPhoton_MICE,U-Net (N2V),plain,33.42,0.31,34.31,0.36,35.09,0.38,36.08,0.33,37.80,0.14,35.34
TwoPhoton_MICE,U-Net (PN2V),si,34.84,0.06,36.02,0.07,37.08,0.08,38.28,0.09,40.89,0.07,37.42
TwoPhoton_MICE,U-Net (N2V),si,34.60,0.09,35.77,0.1,36.71,0.1,37.64,0.09,38.49,0.05,36.64
"""


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
                image = Image.fromarray(np.clip(np.round(noisy), 0, 255).astype(np.uint8))
                image.save(root / folder / f"{dataset}_{i}.png")
        (root / "gt").mkdir(exist_ok=True)
        for i in range(1, 5):
            Image.fromarray(np.round(gt).astype(np.uint8)).save(root / "gt" / f"{dataset}_{i}.png")
    (root / "paper_table1.csv").write_text(PAPER_CSV)  # found beside --data
    return root


def table_rows(report, title):
    """The cells of each row of the markdown table under ``title``, keyed by the first cell."""
    lines = report.split(title, 1)[1].strip().splitlines()
    rows = {}
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0] if cells[0] not in rows else (cells[0], cells[1])] = cells
    return [c.strip() for c in lines[0].strip("|").split("|")], rows


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
    # the paper's table found beside --data, its numbers beside ours
    _, rows = table_rows(table, "**Confocal_MICE, raw (NR1)**")
    assert rows["Input"][2] == "29.38 +- 0.01" and rows["PN2V (histogram)"][2] == "38.24 +- 0.02"
    assert rows["N2V"][2] == "37.56 +- 0.02"
    assert "**Summary: mean PSNR (dB) over all regimes run**" in table
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


def test_paper_table_lookup(fmd, tmp_path):
    path = tmp_path / "table1.csv"
    path.write_text(PAPER_CSV)
    paper = fmd.read_paper_table(path)
    # NR1..NR5 are the regimes raw..avg16, each with its own 2 SEM
    assert paper.lookup("Confocal_MICE", "U-Net (PN2V)", "raw") == (38.24, 0.02)
    assert paper.lookup("Confocal_MICE", "U-Net (PN2V)", "avg4") == (41.34, 0.03)
    assert paper.lookup("Confocal_MICE", "U-Net (PN2V)", "avg16") == (45.11, 0.05)
    assert paper.lookup("TwoPhoton_MICE", "U-Net (N2V)", "avg8") == (36.08, 0.33)
    # the scale- and shift-invariant rows are kept apart from the plain ones
    assert paper.lookup("TwoPhoton_MICE", "U-Net (N2V)", "avg8", "si") == (37.64, 0.09)
    assert paper.lookup("TwoPhoton_MICE", "U-Net (PN2V)", "avg16", psnr="si") == (40.89, 0.07)
    # no 2 SEM in the paper: None, not 0
    assert paper.lookup("Confocal_MICE", "VST+BM3D", "avg2") == (39.47, None)
    assert fmd.fmt_paper(paper.lookup("Confocal_MICE", "VST+BM3D", "avg2")) == "39.47"
    assert fmd.fmt_paper(paper.lookup("Confocal_MICE", "U-Net (N2V)", "avg8")) == "41.01 +- 0.02"
    assert paper.lookup("Confocal_MICE", "U-Net (PN2V)", "raw", "si") is None
    assert paper.lookup("Confocal_FISH", "U-Net (PN2V)", "raw") is None
    assert paper.methods("Confocal_MICE") == ["Input", "U-Net (PN2V)", "U-Net (N2V)", "VST+BM3D", "U-Net (trad.)",
                                              "DnCNN"]
    assert paper.methods("TwoPhoton_MICE", "si") == ["U-Net (PN2V)", "U-Net (N2V)"]
    assert fmd.read_paper_table(tmp_path / "missing.csv") is None
    assert fmd.shown_path(fmd.DEFAULT_DATA / "paper_table1.csv") == "../shared/data/fmd/paper_table1.csv"


def fake_results(tmp_path, fmd):
    """A results.json as a run would write it, with made-up per-image PSNRs (nothing trained)."""
    from dataclasses import asdict

    def scores(base, si_shift=1.0):
        values = [base - 0.3, base - 0.1, base + 0.1, base + 0.3]
        return {"psnr": values, "psnr_si": [v + si_shift for v in values]}

    results = []
    for dataset, offset in (("Confocal_MICE", 0.0), ("TwoPhoton_MICE", -5.0)):
        for regime, step in (("raw", 0.0), ("avg16", 4.0)):
            base = 37.0 + offset + step
            results.append({"dataset": dataset, "regime": regime, "seconds": {"n2v": 100.0, "pn2v": 200.0},
                            "extra": {},
                            "scores": {"input": scores(base - 8), "n2v": scores(base),
                                       # PN2V - N2V per image: 0.5, 0.6, 0.7, 0.8 (+ step / 4)
                                       "pn2v": {"psnr": [base + 0.2 + step / 4, base + 0.5 + step / 4,
                                                         base + 0.8 + step / 4, base + 1.1 + step / 4],
                                                "psnr_si": [base + 1.2, base + 1.5, base + 1.8, base + 2.1]},
                                       "pn2v_prior_mean": scores(base + 0.2),
                                       "vst_bm3d": scores(base + 0.4)}})
    argv = ["--budget", "smoke", "--data", str(tmp_path / "nowhere"), "--outdir", str(tmp_path / "out"),
            "--datasets", *DATASETS, "--regimes", "raw", "avg16", "--methods", "n2v", "pn2v", "vst_bm3d"]
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"budget": asdict(fmd.BUDGETS["smoke"]), "args": argv, "seconds": 60.0,
                                "machine": "test machine", "results": results}))
    return path


def test_report_puts_the_paper_beside_ours(fmd, tmp_path, capsys):
    csv_path = tmp_path / "table1.csv"
    csv_path.write_text(PAPER_CSV)
    results = fake_results(tmp_path, fmd)
    out = tmp_path / "REPORT.md"
    fmd.main(["--report-from", str(results), "--paper-table", str(csv_path), "--append-markdown", str(out)])
    report = out.read_text()

    header, rows = table_rows(report, "**Confocal_MICE, avg16 (NR5)**")
    assert header == ["method", "PSNR", "paper", "si-PSNR", "train+predict (s)"]  # no si rows for confocal
    # ours (mean +- 2 SEM of the 4 images), then the paper's NR5 value and 2 SEM beside it
    assert rows["PN2V (histogram)"][1:3] == ["42.65 +- 0.39", "45.11 +- 0.05"]
    assert rows["N2V"][1:3] == ["41.00 +- 0.26", "41.95 +- 0.02"]
    assert rows["VST+BM3D"][1:3] == ["41.40 +- 0.26", "44.52"]
    assert rows["Input"][2] == "42.64 +- 0.03"
    assert rows["PN2V prior mean (histogram)"][2] == ""  # no such row in the paper
    # the paper's rows of methods not run here, ours 'not run'
    assert rows["CARE (supervised) (paper: U-Net (trad.))"][1:3] == ["not run", "45.16 +- 0.05"]
    assert rows["DnCNN (paper: DnCNN)"][1:3] == ["not run", "45.20"]

    _, rows = table_rows(report, "**Confocal_MICE, raw (NR1)**")
    assert rows["PN2V (histogram)"][2] == "38.24 +- 0.02" and rows["N2V"][2] == "37.56 +- 0.02"
    assert "Authors' code on this dataset and regime: PN2V (histogram) 38.18 +- 0.02" in report

    # two-photon: the paper's si rows beside our si-PSNR
    header, rows = table_rows(report, "**TwoPhoton_MICE, avg16 (NR5)**")
    assert header == ["method", "PSNR", "paper", "si-PSNR", "paper si", "train+predict (s)"]
    assert rows["PN2V (histogram)"][1:5] == ["37.65 +- 0.39", "39.78 +- 0.24", "37.65 +- 0.39", "40.89 +- 0.07"]
    assert rows["N2V"][3:6] == ["37.00 +- 0.26", "38.49 +- 0.05", "100"]
    assert rows["Input"][2:5] == ["n/a", "29.00 +- 0.26", ""]  # not in this CSV

    # the summary over all regimes: ours beside the paper, our PN2V - paper, PN2V - N2V ours and the paper's
    header, rows = table_rows(report, "**Summary: mean PSNR (dB) over all regimes run**")
    assert header == ["dataset", "regime", "N2V", "paper", "PN2V (histogram)", "paper", "PN2V - paper", "VST+BM3D",
                      "paper", "PN2V - N2V", "paper PN2V - N2V"]
    summary = {(r[0], r[1]): r for r in rows.values()}
    assert summary[("Confocal_MICE", "avg16 (NR5)")][2:] == [
        "41.00", "41.95", "42.65", "45.11", "-2.46", "41.40", "44.52", "+1.65 +- 0.13", "+3.16"]
    assert summary[("Confocal_MICE", "raw (NR1)")][-2:] == ["+0.65 +- 0.13", "+0.68"]
    assert summary[("TwoPhoton_MICE", "raw (NR1)")][2:7] == ["32.00", "33.42", "32.65", "33.67", "-1.02"]
    assert summary[("TwoPhoton_MICE", "raw (NR1)")][7:9] == ["32.40", "n/a"]
    assert len(summary) == 4

    # without the CSV: said so, no paper columns, and the report is still there
    capsys.readouterr()
    missing = tmp_path / "no_table.csv"
    fmd.main(["--report-from", str(results), "--paper-table", str(missing)])
    report = capsys.readouterr().out
    assert f"paper: not available ({missing} missing)" in report
    header, rows = table_rows(report, "**Confocal_MICE, avg16 (NR5)**")
    assert header == ["method", "PSNR", "si-PSNR", "train+predict (s)"]
    assert rows["PN2V (histogram)"][1] == "42.65 +- 0.39" and "CARE (supervised) (paper: U-Net (trad.))" not in rows
    header, _ = table_rows(report, "**Summary: mean PSNR (dB) over all regimes run**")
    assert header == ["dataset", "regime", "N2V", "PN2V (histogram)", "VST+BM3D", "PN2V - N2V"]
