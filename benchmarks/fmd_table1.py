"""The PN2V paper's Table 1 on the real FMD microscopy data: PSNR of each method against ground truth.

For every chosen dataset (Confocal mice, Confocal zebrafish, Two-photon mice) and noise regime
(raw = NR1, avg2 .. avg16 = NR2 .. NR5) the script trains and evaluates the paper's rows:

- ``n2v``       U-Net trained with Noise2Void on the noisy images it denoises;
- ``pn2v``      PN2V (MMSE) with a 256-bin histogram noise model from (ground truth, noisy) pairs;
- ``pn2v_gmm``  PN2V (MMSE) with a GMM noise model bootstrapped from the N2V prediction (no ground
                truth anywhere: fully unsupervised);
- ``care``      the same U-Net trained supervised (noisy -> ground truth), two-fold across the image
                halves so that no pixel is predicted by a network that saw its ground truth;
- ``vst_bm3d``  BM3D after a generalised Anscombe transform whose Poisson-Gaussian parameters are
                estimated from each noisy image (needs the ``bm3d`` package).

It reports PSNR (data range 255) per image, their mean +- 2 SEM, and the scale-and-shift-invariant
PSNR, as markdown with the paper's Table 1 rows beside ours (read from ``paper_table1.csv``, see
``--paper-table``), and a summary over all regimes run: N2V and PN2V beside the paper, and PN2V minus N2V.
Everything it trains and predicts is written under ``--outdir``.

    python benchmarks/fmd_table1.py --budget quick --outdir fmd_quick [--append-markdown BENCHMARKS.md]
    python benchmarks/fmd_table1.py --budget paper --outdir fmd_paper        # meant for a GPU

Data: ``../shared/data/fmd`` beside the checkout (or ``--data``); see its README.md.
"""

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from speed import machine_info  # noqa: E402

DATASETS = ("Confocal_MICE", "Confocal_FISH", "TwoPhoton_MICE")
REGIMES = ("raw", "avg2", "avg4", "avg8", "avg16")
METHODS = ("vst_bm3d", "n2v", "pn2v", "pn2v_gmm", "care")
ROW_NAMES = {"input": "Input", "vst_bm3d": "VST+BM3D", "n2v": "N2V", "pn2v": "PN2V (histogram)",
             "pn2v_gmm": "PN2V (bootstrapped GMM)", "care": "CARE (supervised)"}
DATA_RANGE = 255.0
EIGHT_BIT_BINS = (-0.5, 255.5)  # 256 bins of width 1 centred on the values 0..255
DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "fmd"

PAPER_CSV_NAME = "paper_table1.csv"  # the paper's Table 1; see ../shared/data/README.md
# Our rows beside the paper's rows of the same method (the CSV's names). PN2V (bootstrapped GMM) and the
# PN2V prior mean have no row in the paper; DnCNN and N2N are the paper's only.
PAPER_ROWS = {"input": "Input", "pn2v": "U-Net (PN2V)", "n2v": "U-Net (N2V)", "vst_bm3d": "VST+BM3D",
              "care": "U-Net (trad.)"}
PAPER_ONLY_NAMES = {"DnCNN": "DnCNN", "N2N": "N2N"}
# A published run of the authors' code, not Table 1: juglab/pn2v, examples/Mouse-3-Prediction.ipynb
# (Confocal mice, raw; trained on the other fields of view; mean +- 2 SEM over 50 test images).
AUTHORS_NOTEBOOK = {("Confocal_MICE", "raw"): {"pn2v": (38.18, 0.02), "pn2v_prior_mean": (37.52, 0.02)}}
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Budget:
    """Network and schedule shared by the N2V, PN2V and CARE rows."""

    n_first: int
    n_depth: int
    n_samples: int
    patch: int
    batch_size: int
    learning_rate: float
    epochs: int
    steps: int
    pn2v_epochs: int
    care_epochs: int
    reduce_lr_patience: int
    gmm_steps: int
    n_val_patches: int = 256
    pn2v_mean_weight: float = 0.0

    def describe(self):
        return (f"U-Net depth {self.n_depth}, {self.n_first} features, K = {self.n_samples}; "
                f"{self.patch}x{self.patch} patches, batch {self.batch_size}, Adam {self.learning_rate:g}; "
                f"N2V {self.epochs} x {self.steps} steps, PN2V {self.pn2v_epochs} x {self.steps}, "
                f"CARE {self.care_epochs} x {self.steps} per fold; learning rate halved after "
                f"{self.reduce_lr_patience} epochs without gain on {self.n_val_patches} validation patches; "
                f"GMM fit {self.gmm_steps} steps"
                + (f"; PN2V loss with the samples' mean term, weight {self.pn2v_mean_weight:g}"
                   if self.pn2v_mean_weight else ""))


BUDGETS = {
    # ~21 min on 2 CPU cores for NR1 of the three datasets: a 16-feature U-Net instead of 64 and
    # 1,600 instead of 10,000 optimiser steps (the paper: 200 epochs x 50 steps).
    "quick": Budget(n_first=16, n_depth=3, n_samples=800, patch=64, batch_size=16, learning_rate=2e-3,
                    epochs=40, steps=40, pn2v_epochs=40, care_epochs=10, reduce_lr_patience=8,
                    gmm_steps=1000),
    # The paper's PN2V row at NR1 in at most 30 min of training per model on 2 CPU cores (22 min for
    # Confocal mice here): the quick budget with twice the features, four times PN2V's steps and the
    # mean term (train_mean_weight=1), which lifted PN2V on FMD at the quick budget (BENCHMARKS.md).
    "standard": Budget(n_first=32, n_depth=3, n_samples=800, patch=64, batch_size=16, learning_rate=2e-3,
                       epochs=40, steps=40, pn2v_epochs=160, care_epochs=10, reduce_lr_patience=8,
                       gmm_steps=1000, pn2v_mean_weight=1.0),
    # The paper's network and schedule (depth 3, 64 features, K = 800, 100x100 patches, batch 4,
    # Adam 1e-4, 200 epochs x 50 steps); meant for a GPU.
    "paper": Budget(n_first=64, n_depth=3, n_samples=800, patch=100, batch_size=4, learning_rate=1e-4,
                    epochs=200, steps=50, pn2v_epochs=200, care_epochs=200, reduce_lr_patience=10,
                    gmm_steps=2000),
}
BUDGETS["smoke"] = Budget(n_first=4, n_depth=2, n_samples=16, patch=16, batch_size=4, learning_rate=1e-3,
                          epochs=2, steps=3, pn2v_epochs=2, care_epochs=2, reduce_lr_patience=3,
                          gmm_steps=50, n_val_patches=8)  # checks the pipeline in seconds; numbers meaningless
DEFAULT_REGIMES = {"quick": ("raw",), "standard": ("raw",), "paper": REGIMES, "smoke": ("raw",)}


# -- data ---------------------------------------------------------------------------------------

def load_regime(data_dir, dataset, regime):
    """The 4 noisy images of one dataset and regime and their ground truth, float32 (4, Y, X)."""
    from PIL import Image

    def stack(folder):
        paths = sorted((data_dir / folder).glob(f"{dataset}_*.png"))
        if not paths:
            raise FileNotFoundError(f"no {dataset}_*.png in {data_dir / folder}")
        return np.stack([np.asarray(Image.open(p), dtype=np.float32) for p in paths])

    noisy, gt = stack(regime), stack("gt")
    if noisy.shape != gt.shape:
        raise ValueError(f"{dataset}/{regime}: noisy {noisy.shape} and ground truth {gt.shape} differ")
    return noisy, gt


def check_data_dir(data_dir):
    missing = [d for d in ("raw", "gt") if not (data_dir / d).is_dir()]
    if missing:
        sys.exit(f"fmd_table1: the FMD data is not at {data_dir} (missing {', '.join(missing)}/); "
                 "pass --data DIR (see ../shared/data/README.md)")


# -- metrics ------------------------------------------------------------------------------------

def score(gt, images):
    """Per-image PSNR and scale-and-shift-invariant PSNR (data range 255)."""
    from pn2v_tf.metrics import psnr, psnr_scale_invariant

    return {"psnr": [psnr(g, p, DATA_RANGE) for g, p in zip(gt, images)],
            "psnr_si": [psnr_scale_invariant(g, p, DATA_RANGE) for g, p in zip(gt, images)]}


def mean_2sem(values):
    values = np.asarray(values, dtype=np.float64)
    sem = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else float("nan")
    return float(values.mean()), float(2 * sem)


# -- the paper's Table 1 --------------------------------------------------------------------------

@dataclass
class PaperTable:
    """The rows of ``paper_table1.csv``: ``rows[(dataset, method, psnr)]`` is a list of 5 (value, 2 SEM or
    None) pairs, NR1..NR5 = the regimes raw..avg16; ``psnr`` is 'plain' or 'si'."""

    path: Path
    rows: dict

    def lookup(self, dataset, method, regime, psnr="plain"):
        """(value, 2 SEM or None) of the paper's ``method`` row (its name in the CSV), or None."""
        row = self.rows.get((dataset, method, psnr))
        return None if row is None else row[REGIMES.index(regime)]

    def methods(self, dataset, psnr="plain"):
        """The paper's methods for one dataset, in the file's order."""
        return [m for d, m, p in self.rows if d == dataset and p == psnr]


def read_paper_table(path):
    """The paper's Table 1 from its CSV, or None when the file is not there."""
    import csv

    path = Path(path)
    if not path.is_file():
        return None
    rows = {}
    with open(path, newline="") as f:
        for record in csv.DictReader(f):
            cells = []
            for k in range(1, len(REGIMES) + 1):
                value, two_sem = record[f"NR{k}"].strip(), record[f"NR{k}_2sem"].strip()
                cells.append(None if not value else (float(value), float(two_sem) if two_sem else None))
            key = (record["dataset"].strip(), record["method"].strip(), record["psnr"].strip())
            if key in rows:
                raise ValueError(f"{path}: {key} appears twice")
            rows[key] = cells
    return PaperTable(path, rows)


def paper_table_path(args):
    """--paper-table, else paper_table1.csv beside --data, else the one in ../shared/data/fmd."""
    if getattr(args, "paper_table", None):
        return args.paper_table
    beside = args.data / PAPER_CSV_NAME
    return beside if beside.is_file() else DEFAULT_DATA / PAPER_CSV_NAME


def shown_path(path):
    """A path as the report prints it: ``../shared/...`` for a file in the shared folder beside the
    checkout (wherever the checkout is), any other path as given."""
    shared = Path(os.path.abspath(ROOT / ".." / "shared"))
    try:
        return str(Path("..") / "shared" / Path(os.path.abspath(path)).relative_to(shared))
    except ValueError:
        return str(path)


def fmt_paper(cell):
    if cell is None:
        return "n/a"
    value, two_sem = cell
    return f"{value:.2f}" if two_sem is None else f"{value:.2f} +- {two_sem:.2f}"


# -- methods ------------------------------------------------------------------------------------

class Runner:
    """Trains and applies every method on one dataset and regime; models go under ``folder``."""

    def __init__(self, budget, folder, seed, noisy, gt):
        self.budget, self.folder, self.seed = budget, folder, seed
        self.noisy, self.gt = noisy, gt
        self.extra = {}

    def config(self, X, mode, epochs):
        from pn2v_tf import PN2VConfig

        b = self.budget
        return PN2VConfig(X, mode=mode, n_samples=b.n_samples, unet_n_depth=b.n_depth, unet_n_first=b.n_first,
                          n2v_patch_shape=(b.patch, b.patch), train_batch_size=b.batch_size,
                          train_learning_rate=b.learning_rate, train_epochs=epochs, train_steps_per_epoch=b.steps,
                          train_reduce_lr={"factor": 0.5, "patience": b.reduce_lr_patience},
                          train_n_val_patches=b.n_val_patches, train_tensorboard=False, seed=self.seed,
                          train_mean_weight=b.pn2v_mean_weight if mode == "pn2v" else 0.0,
                          # as measured: the paper's loss, or it plus the mean term; the last weights
                          train_decouple_mean=False, train_ema_momentum=0.0)

    def new_model(self, name, mode, epochs, X, noise_model=None):
        import keras

        from pn2v_tf import PN2V

        keras.utils.set_random_seed(self.seed)
        return PN2V(self.config(X, mode, epochs), name, basedir=str(self.folder / "models"), overwrite=True,
                    noise_model=noise_model)

    def train_self_supervised(self, name, mode, epochs, noise_model=None):
        """Trained on the noisy images it then denoises; validation patches from the same images."""
        model = self.new_model(name, mode, epochs, self.noisy, noise_model)
        started = time.time()
        model.train(self.noisy, self.noisy, verbose=0)
        self.extra[f"{name}_train_s"] = time.time() - started
        return model

    def n2v(self):
        self.n2v_model = self.train_self_supervised("n2v", "n2v", self.budget.epochs)
        return self.n2v_model.predict(self.noisy, axes="SYX")

    def pn2v(self):
        from pn2v_tf.noise_models import HistogramNoiseModel

        noise_model = HistogramNoiseModel.from_pairs(self.gt, self.noisy, bins=256, value_range=EIGHT_BIT_BINS)
        noise_model.save(self.folder / "noise_model_histogram.npz", overwrite=True)
        model = self.train_self_supervised("pn2v", "pn2v", self.budget.pn2v_epochs, noise_model)
        self.extra["pn2v_prior_mean"] = model.predict(self.noisy, axes="SYX", estimator="prior_mean")
        return model.predict(self.noisy, axes="SYX", estimator="mmse")

    def pn2v_gmm(self):
        from pn2v_tf.bootstrap import bootstrap_noise_model
        from pn2v_tf.noise_models import HistogramNoiseModel

        if not hasattr(self, "n2v_model"):  # --methods without n2v: train it for the bootstrap only
            self.n2v()
        noise_model = bootstrap_noise_model(self.noisy, kind="gmm", n2v_model=self.n2v_model, seed=self.seed,
                                            steps=self.budget.gmm_steps, saturation=(0.0, 255.0))
        noise_model.save(self.folder / "noise_model_bootstrapped_gmm.npz", overwrite=True)
        # Exact at the 8-bit values and linear between integer signals; a lookup per sample instead
        # of a censored 3-component mixture makes training about 4x faster.
        table = HistogramNoiseModel.from_noise_model(noise_model, bins=256, value_range=EIGHT_BIT_BINS)
        model = self.train_self_supervised("pn2v_gmm", "pn2v", self.budget.pn2v_epochs, table)
        return model.predict(self.noisy, axes="SYX", estimator="mmse")

    def care(self):
        """Two folds over the left and right image halves: train on one half's (noisy, gt) pairs,
        predict the other half (the network still sees the whole noisy image as context)."""
        width = self.noisy.shape[2]
        halves = (slice(0, width // 2), slice(width // 2, width))
        prediction = np.empty_like(self.noisy)
        for fold, (train, test) in enumerate((halves, halves[::-1])):
            X, Y = self.noisy[:, :, train], self.gt[:, :, train]
            val_rows = slice(0, X.shape[1] // 4)  # a quarter of the training half for validation
            fit_rows = slice(X.shape[1] // 4, None)
            model = self.new_model(f"care_fold{fold}", "care", self.budget.care_epochs, X[:, fit_rows])
            started = time.time()
            model.train(X[:, fit_rows], X[:, val_rows], Y[:, fit_rows], Y[:, val_rows], verbose=0)
            self.extra[f"care_fold{fold}_train_s"] = time.time() - started
            prediction[:, :, test] = model.predict(self.noisy, axes="SYX")[:, :, test]
        return prediction

    def vst_bm3d(self):
        try:
            import bm3d
        except ImportError:
            raise SystemExit("fmd_table1: the VST+BM3D row needs the bm3d package (pip install bm3d), "
                             "or leave it out with --methods") from None
        from pn2v_tf.vst import vst_denoise

        def denoiser(image, sigma):
            return bm3d.bm3d(image, sigma)

        out, parameters = [], []
        for image in self.noisy:
            result = vst_denoise(image, denoiser, clip=(0.0, 255.0))
            out.append(result.denoised)
            parameters.append((result.gain, result.offset))
        self.extra["vst_parameters"] = parameters
        return np.stack(out)


# -- one dataset and regime -----------------------------------------------------------------------

def run_regime(args, budget, dataset, regime):
    noisy, gt = load_regime(args.data, dataset, regime)
    folder = args.outdir / f"{dataset}_{regime}"
    folder.mkdir(parents=True, exist_ok=True)
    runner = Runner(budget, folder, args.seed, noisy, gt)
    predictions, seconds = {"input": noisy}, {}
    for method in args.methods:
        print(f"--- {dataset} {regime}: {ROW_NAMES[method]}", flush=True)
        started = time.time()
        predictions[method] = getattr(runner, method)()
        seconds[method] = time.time() - started
        print(f"    {seconds[method]:.0f} s, PSNR {np.mean(score(gt, predictions[method])['psnr']):.2f} dB",
              flush=True)
    if "pn2v_prior_mean" in runner.extra:
        predictions["pn2v_prior_mean"] = runner.extra.pop("pn2v_prior_mean")
    write_predictions(folder, predictions, gt)
    scores = {name: score(gt, images) for name, images in predictions.items()}
    write_figure(folder / "figure.png", dataset, regime, predictions, gt, scores)
    result = {"dataset": dataset, "regime": regime, "scores": scores, "seconds": seconds,
              "extra": runner.extra}
    with open(folder / "result.json", "w") as f:
        json.dump(result, f, indent=1, default=float)
    return result


def write_predictions(folder, predictions, gt):
    from pn2v_tf.io import write_tiff

    for name, images in {**predictions, "ground_truth": gt}.items():
        write_tiff(folder / f"{name}.tif", np.asarray(images, dtype=np.float32), "SYX", overwrite=True)


def write_figure(path, dataset, regime, predictions, gt, scores, crop=128):
    """Input, N2V, PN2V and ground truth crops side by side (as the paper's Fig. 2), for image 1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in ("input", "vst_bm3d", "n2v", "pn2v", "pn2v_gmm", "care") if n in predictions]
    panels = [(ROW_NAMES[n], predictions[n][0], scores[n]["psnr"][0]) for n in names]
    panels.append(("Ground truth", gt[0], None))
    crop = min(crop, *gt.shape[1:])
    y0, x0 = _brightest_crop(gt[0], crop)
    low, high = np.percentile(gt[0], (0.5, 99.8))
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 3.0), layout="constrained")
    for ax, (title, image, value) in zip(axes, panels):
        ax.imshow(image[y0:y0 + crop, x0:x0 + crop], cmap="gray", vmin=low, vmax=high)
        ax.set_title(title if value is None else f"{title}\n{value:.2f} dB", fontsize=9)
        ax.axis("off")
    fig.suptitle(f"{dataset}, {regime} (image 1, {crop}x{crop} crop)", fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _brightest_crop(image, crop):
    """Top-left corner of the crop with the most structure (largest ground-truth variance)."""
    step = max(1, crop // 2)
    corners = [(y, x) for y in range(0, image.shape[0] - crop + 1, step)
               for x in range(0, image.shape[1] - crop + 1, step)]
    return max(corners, key=lambda c: float(np.var(image[c[0]:c[0] + crop, c[1]:c[1] + crop])))


# -- report -------------------------------------------------------------------------------------

def markdown_report(results, args, budget, elapsed, machine_name=None, paper=None, paper_path=None):
    """The markdown report: a summary over all regimes run, then one table per dataset and regime with the
    paper's Table 1 rows (``paper``, a PaperTable, or None when ``paper_path`` is missing) beside ours."""
    lines = [f"### FMD, PN2V Table 1 protocol (`--budget {args.budget}`)", "",
             f"Command: `python benchmarks/fmd_table1.py {' '.join(args.argv)}`", "",
             f"Machine: {machine_name or machine()}; total {elapsed / 60:.1f} min.", "",
             f"Network and schedule: {budget.describe()}.", "", PROTOCOL, ""]
    if paper is None:
        lines += [f"paper: not available ({shown_path(paper_path)} missing)", ""]
    else:
        lines += [f"Paper: Table 1 of Krull et al. 2020 (doi:10.3389/fcomp.2020.00005) from "
                  f"`{shown_path(paper.path)}`: mean PSNR over its 50 test images per regime, +- 2 SEM where "
                  "the paper gives one (VST+BM3D, DnCNN and N2N are quoted there from the FMD paper, without "
                  "one); its networks trained on the 19 other fields of view. Beside ours: U-Net (PN2V) next "
                  "to PN2V (histogram), U-Net (N2V) next to N2V, U-Net (trad.) next to CARE (supervised); "
                  "PN2V (bootstrapped GMM) and the prior mean have no paper row.", ""]
    lines += summary_table(results, args, paper)
    lines += ["PSNR in dB (data range 255): mean over the 4 images +- 2 SEM. Scale-and-shift-invariant PSNR "
              "(si) is given for all datasets; the paper gives it for two-photon only. Rows with 'not run' "
              "are the paper's only.", ""]
    for result in results:
        lines += regime_table(result, args, paper)
    lines += ["Authors' code: juglab/pn2v, examples/Mouse-3-Prediction.ipynb (one training run on the 19 other "
              "fields of view; mean +- 2 SEM over 50 test images).", ""]
    return "\n".join(lines)


def report_rows(result, args):
    rows = ["input", *[m for m in METHODS if m in args.methods and m in result["scores"]]]
    if "pn2v_prior_mean" in result["scores"] and "pn2v" in rows:
        rows.insert(rows.index("pn2v") + 1, "pn2v_prior_mean")
    return rows


def regime_table(result, args, paper):
    dataset, regime = result["dataset"], result["regime"]
    names = {**ROW_NAMES, "pn2v_prior_mean": "PN2V prior mean (histogram)"}
    column = REGIMES.index(regime)
    with_si = paper is not None and bool(paper.methods(dataset, "si"))
    header = ["method", "PSNR", *(["paper"] if paper else []), "si-PSNR", *(["paper si"] if with_si else []),
              "train+predict (s)"]
    lines = [f"**{dataset}, {regime} (NR{column + 1})**", "", "| " + " | ".join(header) + " |",
             "|" + "---|" * len(header)]

    def paper_cells(method):
        if paper is None:
            return []
        cells = ["" if method is None else fmt_paper(paper.lookup(dataset, method, regime))]
        if with_si:
            cells.append("" if method is None or paper.lookup(dataset, method, regime, "si") is None
                         else fmt_paper(paper.lookup(dataset, method, regime, "si")))
        return cells

    for row in report_rows(result, args):
        value, err = mean_2sem(result["scores"][row]["psnr"])
        si, si_err = mean_2sem(result["scores"][row]["psnr_si"])
        published = paper_cells(PAPER_ROWS.get(row))
        seconds = result["seconds"].get(row)
        cells = [names[row], f"{value:.2f} +- {err:.2f}", *published[:1], f"{si:.2f} +- {si_err:.2f}",
                 *published[1:], "" if seconds is None else f"{seconds:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    if paper is not None:  # the paper's rows of methods not run here
        ours = {PAPER_ROWS[r] for r in report_rows(result, args) if r in PAPER_ROWS}
        by_paper_name = {**{v: ROW_NAMES[k] for k, v in PAPER_ROWS.items()}, **PAPER_ONLY_NAMES}
        for method in paper.methods(dataset):
            if method in ours:
                continue
            published = paper_cells(method)
            cells = [f"{by_paper_name.get(method, method)} (paper: {method})", "not run", *published[:1], "",
                     *published[1:], ""]
            lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    notebook = AUTHORS_NOTEBOOK.get((dataset, regime), {})
    quoted = [f"{names[k]} {v:.2f} +- {e:.2f}" for k, (v, e) in notebook.items() if k in result["scores"]]
    if quoted:
        lines += [f"Authors' code on this dataset and regime: {', '.join(quoted)}.", ""]
    return lines


def summary_table(results, args, paper):
    """Per dataset and regime: ours beside the paper for N2V, PN2V (and VST+BM3D, CARE when run), our PN2V
    minus the paper's, and PN2V minus N2V, ours (mean +- 2 SEM of the per-image differences) and the paper's."""
    shown = [m for m in ("n2v", "pn2v", "vst_bm3d", "care") if m in args.methods]
    if not shown or not results:
        return []
    both = "n2v" in shown and "pn2v" in shown
    header = ["dataset", "regime"]
    for method in shown:
        header += [ROW_NAMES[method], *(["paper"] if paper else [])]
        if method == "pn2v" and paper:
            header.append("PN2V - paper")
    if both:
        header += ["PN2V - N2V", *(["paper PN2V - N2V"] if paper else [])]
    lines = ["**Summary: mean PSNR (dB) over all regimes run**", "", "| " + " | ".join(header) + " |",
             "|" + "---|" * len(header)]

    def published(dataset, method, regime):
        cell = paper.lookup(dataset, PAPER_ROWS[method], regime) if paper else None
        return None if cell is None else cell[0]

    def fmt(value, signed=False):
        return "n/a" if value is None else (f"{value:+.2f}" if signed else f"{value:.2f}")

    for result in results:
        dataset, regime, scores = result["dataset"], result["regime"], result["scores"]
        cells = [dataset, f"{regime} (NR{REGIMES.index(regime) + 1})"]
        for method in shown:
            ours = mean_2sem(scores[method]["psnr"])[0] if method in scores else None
            theirs = published(dataset, method, regime)
            cells += [fmt(ours), *([fmt(theirs)] if paper else [])]
            if method == "pn2v" and paper:
                cells.append(fmt(None if ours is None or theirs is None else ours - theirs, signed=True))
        if both:
            if "n2v" in scores and "pn2v" in scores:
                gain, err = mean_2sem(np.subtract(scores["pn2v"]["psnr"], scores["n2v"]["psnr"]))
                cells.append(f"{gain:+.2f} +- {err:.2f}")
            else:
                cells.append("n/a")
            if paper:
                p, n = published(dataset, "pn2v", regime), published(dataset, "n2v", regime)
                cells.append(fmt(None if p is None or n is None else p - n, signed=True))
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


PROTOCOL = (
    "Protocol: the 4 test images of each dataset and regime (field of view 19 of FMD, 512x512, 8-bit) "
    "are all the data there is. N2V and both PN2V models train on those 4 noisy images and denoise "
    "them (self-supervised; validation patches from the same images). The histogram noise model counts "
    "(ground truth, noisy) pairs of the same 4 images, 256 bins of width 1; the bootstrapped GMM "
    "(3 Gaussians, linear in the signal, 255 treated as saturated) is fitted to (N2V prediction, noisy) "
    "pairs and uses no ground truth; for speed PN2V uses it tabulated at the 8-bit values "
    "(`HistogramNoiseModel.from_noise_model`). CARE trains on (noisy, ground truth) of one image half and "
    "predicts the other, both ways. VST+BM3D estimates gain and offset of a Poisson-Gaussian model "
    "from each noisy image, applies the generalised Anscombe transform, BM3D with sigma 1 and the "
    "closed-form unbiased inverse. The paper instead trained on the 19 other fields of view "
    "(950 images) and tested on 50 images per regime.")


def machine():
    import tensorflow as tf

    info, gpus = machine_info(), tf.config.list_physical_devices("GPU")
    accelerator = f"{len(gpus)} GPU" if gpus else "no GPU"
    return f"{info['cpu']}, {info['cores']} cores, {accelerator}, TensorFlow {info['tensorflow']}"


# -- command line -------------------------------------------------------------------------------

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--budget", choices=tuple(BUDGETS), default="quick",
                        help="quick: ~21 min on 2 CPU cores for the raw regime; standard: 32 features, four "
                             "times the PN2V steps and the mean term; paper: the paper's network and schedule, all "
                             "regimes (meant for a GPU)")
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--regimes", nargs="+", choices=REGIMES, default=None,
                        help="noise regimes; default: raw for quick, all for paper")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the FMD folder (raw/, avg*/, gt/)")
    parser.add_argument("--paper-table", type=Path, default=None,
                        help=f"the paper's Table 1 as CSV; default: {PAPER_CSV_NAME} beside --data, else "
                             f"../shared/data/fmd/{PAPER_CSV_NAME}; the report says so when it is missing")
    parser.add_argument("--outdir", type=Path, default=Path("fmd_table1"), help="models, predictions, figures")
    parser.add_argument("--overwrite", action="store_true", help="reuse a non-empty --outdir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write all results to this JSON file")
    parser.add_argument("--append-markdown", type=Path, help="append the report to this markdown file")
    parser.add_argument("--report-from", type=Path, metavar="RESULTS_JSON",
                        help="train nothing: print (and append) the report of an earlier run's results.json")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.data = args.data.resolve()
    if args.regimes is None:
        args.regimes = list(DEFAULT_REGIMES[args.budget])
    args.methods = [m for m in METHODS if m in args.methods]  # n2v before the GMM it bootstraps
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.report_from:
        return report_again(args)
    check_data_dir(args.data)
    if args.outdir.exists() and any(args.outdir.iterdir()) and not args.overwrite:
        sys.exit(f"fmd_table1: {args.outdir} is not empty; pass --overwrite or choose another --outdir")
    args.outdir.mkdir(parents=True, exist_ok=True)
    budget = BUDGETS[args.budget]
    started = time.time()
    results = [run_regime(args, budget, d, r) for d in args.datasets for r in args.regimes]
    elapsed = time.time() - started
    path = paper_table_path(args)
    report = markdown_report(results, args, budget, elapsed, paper=read_paper_table(path), paper_path=path)
    print("\n" + report)
    (args.outdir / "table.md").write_text(report + "\n")
    summary = {"budget": asdict(budget), "args": args.argv, "seconds": elapsed, "machine": machine(),
               "results": results}
    for path in filter(None, (args.outdir / "results.json", args.json)):
        with open(path, "w") as f:
            json.dump(summary, f, indent=1, default=float)
    if args.append_markdown:
        with open(args.append_markdown, "a") as f:
            f.write("\n" + report + "\n")
    return results


def report_again(args):
    """The report of a finished run, from its results.json (its own command line and budget)."""
    summary = json.loads(args.report_from.read_text())
    run_args = parse_args(summary["args"])
    budget = Budget(**{k: v for k, v in summary["budget"].items() if k in Budget.__dataclass_fields__})
    path = args.paper_table or paper_table_path(run_args)  # this command's --paper-table, else the run's
    report = markdown_report(summary["results"], run_args, budget, summary["seconds"], summary.get("machine"),
                             paper=read_paper_table(path), paper_path=path)
    print(report)
    if args.append_markdown:
        with open(args.append_markdown, "a") as f:
            f.write("\n" + report + "\n")
    return summary["results"]


if __name__ == "__main__":
    main()
