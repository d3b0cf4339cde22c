"""The main job in one command: synthetic data -> noise models -> N2V and PN2V -> PSNR table and images.

Run ``pn2v-demo`` (or ``python -m pn2v_tf.demo``); ``--help`` lists the options.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="pn2v-demo",
        description="Train PN2V and N2V on synthetic microscopy data and compare them on a test image.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--outdir", default="pn2v_demo", help="folder for models, TIFFs, figure and table")
    parser.add_argument("--overwrite", action="store_true", help="replace results already in --outdir")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic data and of training")
    parser.add_argument("--epochs", type=int, default=30, help="training epochs of each model")
    parser.add_argument("--steps", type=int, default=40, help="steps per epoch")
    parser.add_argument("--batch-size", type=int, default=16, help="patches per step")
    parser.add_argument("--learning-rate", type=float, default=2e-3, help="Adam learning rate")
    parser.add_argument("--n-samples", type=int, default=800, help="prior samples K of PN2V")
    parser.add_argument("--n-first", type=int, default=16, help="features of the U-Net's first level")
    parser.add_argument("--shape", type=int, default=256, help="side of the synthetic images")
    parser.add_argument("--n-train", type=int, default=4, help="number of noisy training images")
    parser.add_argument("--max-photons", type=float, default=300.0,
                        help="photons at the brightest pixel (more photons: less relative noise)")
    parser.add_argument("--noise-models", choices=("calibrated", "bootstrap", "both"), default="both",
                        help="PN2V with the histogram of the calibration stack, with a GMM bootstrapped "
                             "from the noisy training images alone (fully unsupervised), or both")
    return parser.parse_args(argv)


def run(args):
    """Run the demo; returns the PSNR table as a dict {row name: dB}."""
    from .datasets import make_synthetic_data
    from .metrics import psnr

    if args.shape < 64 or args.n_train < 1:
        sys.exit("pn2v-demo: --shape must be at least 64 and --n-train at least 1")
    outdir = _prepare_outdir(Path(args.outdir), args.overwrite)
    started = time.time()
    data = make_synthetic_data(seed=args.seed, shape=(args.shape, args.shape), n_train=args.n_train,
                               max_photons=args.max_photons)
    trainer = _Trainer(args, data.train, outdir / "models")
    n2v = trainer.train("n2v")
    results = {"N2V": n2v.predict(data.test, axes="YX")}
    noise_models = {}
    if args.noise_models in ("calibrated", "both"):
        noise_models["histogram"] = _calibrated_noise_model(data.calibration)
        pn2v = trainer.train("pn2v", noise_models["histogram"])
        results["PN2V prior mean"] = pn2v.predict(data.test, axes="YX", estimator="prior_mean")
        results["PN2V MMSE"] = pn2v.predict(data.test, axes="YX", estimator="mmse")
    if args.noise_models in ("bootstrap", "both"):
        noise_models["bootstrapped GMM"] = _bootstrapped_noise_model(data.train, n2v, args.seed)
        pn2v = trainer.train("pn2v_bootstrap", noise_models["bootstrapped GMM"])
        results["PN2V MMSE, bootstrapped GMM"] = pn2v.predict(data.test, axes="YX", estimator="mmse")

    images = {"input": data.test, **results}
    table = {name: psnr(data.test_clean, image) for name, image in images.items()}
    elapsed = time.time() - started
    _write_tiffs(outdir, {"ground_truth": data.test_clean, **images})
    _write_figure(outdir / "comparison.png", data.test_clean, images, table)
    _write_noise_model_figures(outdir, noise_models, data)
    with open(outdir / "psnr.json", "w") as f:
        json.dump({"psnr_db": table, "seconds": elapsed, "args": vars(args)}, f, indent=2)
    print(format_table(table))
    print(f"\ntotal time {elapsed:.0f} s; images, figures and models in {outdir.resolve()}")
    return table


class _Trainer:
    """Trains the demo's models on one split with one schedule and the same initial weights."""

    def __init__(self, args, train, basedir):
        self.args, self.basedir = args, basedir
        from .data import split_validation

        self.X, self.X_val = split_validation(train, fraction=0.25)
        patch = min(64, min(self.X_val.shape[1:]) // 4 * 4)
        self.common = dict(unet_n_depth=3, unet_n_first=args.n_first, n2v_patch_shape=(patch, patch),
                           train_batch_size=args.batch_size, train_epochs=args.epochs,
                           train_steps_per_epoch=args.steps, train_learning_rate=args.learning_rate,
                           seed=args.seed, train_reduce_lr={"factor": 0.5, "patience": 3})

    def train(self, name, noise_model=None):
        import keras

        from .config import PN2VConfig
        from .model import PN2V

        mode = "n2v" if noise_model is None else "pn2v"
        print(f"\n=== training {name} ({self.args.epochs} epochs x {self.args.steps} steps) ===")
        keras.utils.set_random_seed(self.args.seed)  # same initial weights for all, reproducible runs
        config = PN2VConfig(self.X, mode=mode, n_samples=self.args.n_samples, **self.common)
        model = PN2V(config, name, basedir=str(self.basedir), overwrite=self.args.overwrite, noise_model=noise_model)
        model.train(self.X, self.X_val)
        return model


def _calibrated_noise_model(calibration):
    from .noise_models import HistogramNoiseModel

    noise_model = HistogramNoiseModel.from_calibration_stack(calibration, bins=256)
    low, high = noise_model.signal_range
    print(f"calibrated histogram noise model: {noise_model.bins} bins, signals {low:.1f}..{high:.1f}")
    return noise_model


def _bootstrapped_noise_model(train, n2v, seed):
    """GMM fitted to the N2V predictions of the training images: no calibration data used."""
    from .bootstrap import bootstrap_noise_model

    noise_model = bootstrap_noise_model(train, kind="gmm", n2v_model=n2v, seed=seed)
    low, high = noise_model.signal_range
    print(f"bootstrapped GMM noise model: {noise_model.n_gaussians} Gaussians, signals {low:.1f}..{high:.1f}")
    return noise_model


def format_table(table):
    """Markdown table of PSNR values."""
    lines = ["", "| image | PSNR (dB) |", "|---|---|"]
    lines += [f"| {name} | {value:.2f} |" for name, value in table.items()]
    return "\n".join(lines)


def _prepare_outdir(outdir, overwrite):
    if outdir.exists() and any(outdir.iterdir()) and not overwrite:
        sys.exit(f"pn2v-demo: {outdir} exists and is not empty; pass --overwrite or choose --outdir")
    outdir.mkdir(parents=True, exist_ok=True)
    return outdir


def _file_stem(name):
    """'PN2V MMSE, bootstrapped GMM' -> 'pn2v_mmse_bootstrapped_gmm'."""
    return "_".join("".join(c if c.isalnum() else " " for c in name.lower()).split())


def _write_tiffs(outdir, images):
    import numpy as np
    import tifffile

    for name, image in images.items():
        filename = _file_stem(name) + ".tif"
        tifffile.imwrite(outdir / filename, np.asarray(image, dtype=np.float32), imagej=True)


def _write_noise_model_figures(outdir, noise_models, data):
    """Each noise model against the calibration data; their fit to the test image's pairs (held
    out from every model) beside the exact camera model's."""
    import numpy as np

    from .datasets import camera_log_likelihood
    from .noise_models import plot_fit_summary

    for name, noise_model in noise_models.items():
        noise_model.plot(outdir / f"noise_model_{_file_stem(name)}.png",
                         signal=data.calibration_clean, observation=data.calibration, overwrite=True)
    if noise_models:
        camera = data.camera

        def exact(observation, signal):
            photons = np.maximum((signal - camera.offset) / camera.gain, 0.0)
            return camera_log_likelihood(observation, photons, camera)
        plot_fit_summary(noise_models, data.test_clean, data.test, outdir / "noise_model_fit.png",
                         reference=exact, overwrite=True)


def _write_figure(path, ground_truth, images, table):
    """Whole images in the top row, a zoomed centre crop below (noise is easier to see there)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = {**images, "ground truth": ground_truth}
    low, high = float(ground_truth.min()), float(ground_truth.max())
    height, width = ground_truth.shape
    crop = (slice(height * 3 // 8, height * 5 // 8), slice(width * 3 // 8, width * 5 // 8))
    fig, axes = plt.subplots(2, len(panels), figsize=(3.2 * len(panels), 7.0), layout="constrained")
    for column, (name, image) in enumerate(panels.items()):
        title = name if name not in table else f"{name}\n{table[name]:.2f} dB"
        axes[0, column].set_title(title, fontsize=10)
        for row, view in enumerate((image, image[crop])):
            axes[row, column].imshow(view, cmap="magma", vmin=low, vmax=high)
            axes[row, column].axis("off")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    run(parse_args(argv))


if __name__ == "__main__":
    main()
