"""The main job in one command: synthetic data -> noise model -> PN2V and N2V -> PSNR table and images.

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
    return parser.parse_args(argv)


def run(args):
    """Run the demo; returns the PSNR table as a dict {row name: dB}."""
    import keras

    from .config import PN2VConfig
    from .datasets import make_synthetic_data
    from .metrics import psnr
    from .model import PN2V
    from .noise_models import HistogramNoiseModel

    if args.shape < 64 or args.n_train < 1:
        sys.exit("pn2v-demo: --shape must be at least 64 and --n-train at least 1")
    outdir = _prepare_outdir(Path(args.outdir), args.overwrite)
    started = time.time()
    data = make_synthetic_data(seed=args.seed, shape=(args.shape, args.shape), n_train=args.n_train,
                               max_photons=args.max_photons)
    noise_model = HistogramNoiseModel.from_calibration_stack(data.calibration, bins=256)
    print(f"noise model: {noise_model.bins} bins over {noise_model.value_range[0]:.1f}..{noise_model.value_range[1]:.1f}, "
          f"calibrated signals {noise_model.signal_range[0]:.1f}..{noise_model.signal_range[1]:.1f}")

    X, X_val = _split_for_validation(data.train)
    patch = min(64, min(X_val.shape[1:]) // 4 * 4)
    common = dict(unet_n_depth=3, unet_n_first=args.n_first, n2v_patch_shape=(patch, patch),
                  train_batch_size=args.batch_size, train_epochs=args.epochs,
                  train_steps_per_epoch=args.steps, train_learning_rate=args.learning_rate, seed=args.seed,
                  train_reduce_lr={"factor": 0.5, "patience": 3})
    results = {}
    for mode in ("n2v", "pn2v"):
        print(f"\n=== training {mode.upper()} ({args.epochs} epochs x {args.steps} steps) ===")
        keras.utils.set_random_seed(args.seed)  # same initial weights for both, reproducible runs
        config = PN2VConfig(X, mode=mode, n_samples=args.n_samples, **common)
        model = PN2V(config, mode, basedir=str(outdir / "models"), overwrite=args.overwrite,
                     noise_model=noise_model if mode == "pn2v" else None)
        model.train(X, X_val)
        if mode == "n2v":
            results["N2V"] = model.predict(data.test, axes="YX")
        else:
            results["PN2V prior mean"] = model.predict(data.test, axes="YX", estimator="prior_mean")
            results["PN2V MMSE"] = model.predict(data.test, axes="YX", estimator="mmse")

    images = {"input": data.test, **results}
    table = {name: psnr(data.test_clean, image) for name, image in images.items()}
    elapsed = time.time() - started
    _write_tiffs(outdir, {"ground_truth": data.test_clean, **images})
    _write_figure(outdir / "comparison.png", data.test_clean, images, table)
    with open(outdir / "psnr.json", "w") as f:
        json.dump({"psnr_db": table, "seconds": elapsed, "args": vars(args)}, f, indent=2)
    print(format_table(table))
    print(f"\ntotal time {elapsed:.0f} s; images, figure and models in {outdir.resolve()}")
    return table


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


def _split_for_validation(train):
    """All but the last image for training; a quarter of the last one for validation patches."""
    if len(train) > 1:
        return train[:-1], train[-1:]
    height = train.shape[1] * 3 // 4
    return train[:, :height], train[:, height:]


def _write_tiffs(outdir, images):
    import numpy as np
    import tifffile

    for name, image in images.items():
        filename = name.lower().replace(" ", "_") + ".tif"
        tifffile.imwrite(outdir / filename, np.asarray(image, dtype=np.float32), imagej=True)


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
