"""PN2V against N2V at short and longer budgets, and which of PN2V's training choices decide it.

A user tries PN2V at a budget where N2V has converged; PN2V must not lose. This trains N2V and
PN2V variants on the same network, patches and schedule for each budget (optimiser steps) and seed,
and prints the PSNR of N2V, and of each PN2V's prior mean and MMSE, on held-out images:

- ``synthetic``: ``make_synthetic_data(seed)`` (blobs, filaments and texture under camera noise);
  trained on its 4 training images (the last one for validation), tested on its test image;
  histogram noise model from its calibration stack. The seed sets data, weights, patches and masks.
- an FMD dataset name (``Confocal_FISH``, ...; needs ``../shared/data/fmd``): trained on the first 3
  raw images (validation rows held out of them), tested on the 4th; histogram noise model from the
  (ground truth, noisy) pairs of the 3 training images only.

PN2V variants (``--variants``; each a set of configuration values over the package's defaults,
which are a head whose K columns start as one shared column plus 1% (``samples_init_spread=0.01``),
outputs not scaled (``samples_output_scale=1``) and N2V's squared error of the samples' mean in the loss
with weight 1, in units of the noise's variance, from which alone the mean learns
(``train_mean_weight=1``, ``train_decouple_mean=True``)):

- ``pn2v``: the defaults; ``mean1_decoupled``: the same written out; ``mean05_decoupled``: weight 0.5
  (the default from aebf65d until weight 1 replaced it); ``mean2_decoupled``, ``mean4_decoupled``:
  weight 2 or 4;
- ``no_mean``: the paper's loss alone (``train_mean_weight=0``, the default before 2026-12-01);
- ``mean1``, ``mean01``: the squared error added with weight 1 or 0.1, the likelihood pulling the mean
  as well (``train_decouple_mean=False``);
- ``independent_x10``: the PN2V reference: independent columns (``samples_init_spread=None``),
  outputs scaled by 10, no mean term; ``independent_x10_mean1`` with the mean term;
- ``independent_x1``, ``shared_x10``: one of the reference's two head choices only (no mean term);
- ``spread01``, ``spread03``, ``spread1``: the shared column plus 0.1, 0.3 or 1 times an independent
  Glorot kernel (``samples_init_spread``), between the default's near copies and independent columns;
- ``cosine``: the defaults with a cosine decay of the learning rate to 0 over the budget, instead of
  halving it on a plateau of the validation loss;
- ``no_best``: the defaults, keeping the last weights instead of those with the best validation loss;
- ``no_ema``: the defaults without the weights' moving average (``train_ema_momentum=0``, the default
  before 4072333); ``n2v_ema``: N2V with it (``train_ema_momentum=0.99``; N2V's default is 0).

Network and schedule: U-Net depth 2, 32 features, K = 400, 64x64 patches, batch 8, Adam 4e-4,
epochs of 40 steps, learning rate halved after 10 epochs without a lower validation loss on 64 fixed
patches (the package's default schedule); the weights with the lowest validation loss are kept, as
``train`` does. One JSON line per trained model, then a Markdown table per dataset (mean over seeds,
and the spread).

    python benchmarks/short_budget.py                                  # 400 and 1600 steps, seeds 0-2
    python benchmarks/short_budget.py --steps 6400 --seeds 0 --variants pn2v mean1
    python benchmarks/short_budget.py --datasets Confocal_FISH --steps 400
"""

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

FMD = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "fmd"
FMD_RANGE = 255.0
STEPS_PER_EPOCH = 40
NETWORK = dict(unet_n_depth=2, unet_n_first=32, n_samples=400, n2v_patch_shape=(64, 64), train_batch_size=8,
               train_learning_rate=4e-4, train_steps_per_epoch=STEPS_PER_EPOCH)
VARIANTS = {
    "pn2v": {},
    "no_mean": dict(train_mean_weight=0.0),
    "mean1": dict(train_mean_weight=1.0, train_decouple_mean=False),
    "mean01": dict(train_mean_weight=0.1, train_decouple_mean=False),
    "mean1_decoupled": dict(train_mean_weight=1.0, train_decouple_mean=True),
    "mean05_decoupled": dict(train_mean_weight=0.5, train_decouple_mean=True),
    "mean2_decoupled": dict(train_mean_weight=2.0, train_decouple_mean=True),
    "mean4_decoupled": dict(train_mean_weight=4.0, train_decouple_mean=True),
    "independent_x10": dict(samples_init_spread=None, samples_output_scale=10.0, train_mean_weight=0.0),
    "independent_x10_mean1": dict(samples_init_spread=None, samples_output_scale=10.0),
    "independent_x1": dict(samples_init_spread=None, train_mean_weight=0.0),
    "shared_x10": dict(samples_output_scale=10.0, train_mean_weight=0.0),
    "spread01": dict(samples_init_spread=0.1),
    "spread03": dict(samples_init_spread=0.3),
    "spread1": dict(samples_init_spread=1.0),
    "cosine": dict(train_reduce_lr=None),
    "no_best": {},
    "no_ema": dict(train_ema_momentum=0.0),
    "n2v_ema": dict(train_ema_momentum=0.99),
}


def load_dataset(name, seed):
    """(train (S, Y, X), test (T, Y, X), test ground truth, noise model, data range)."""
    from pn2v_tf.datasets import make_synthetic_data
    from pn2v_tf.noise_models import HistogramNoiseModel

    if name == "synthetic":
        data = make_synthetic_data(seed=seed, shape=(256, 256), n_train=4)
        noise_model = HistogramNoiseModel.from_calibration_stack(data.calibration, bins=256)
        clean = data.test_clean
        return data.train, data.test[None], clean[None], noise_model, float(clean.max() - clean.min())
    from fmd_table1 import EIGHT_BIT_BINS, load_regime

    noisy, gt = load_regime(FMD.resolve(), name, "raw")
    noise_model = HistogramNoiseModel.from_pairs(gt[:3], noisy[:3], bins=256, value_range=EIGHT_BIT_BINS)
    return noisy[:3], noisy[3:], gt[3:], noise_model, FMD_RANGE


def split(train):
    from pn2v_tf.data import split_validation

    return split_validation(train, fraction=0.25, min_rows=64)


def epoch_scores(model, test, clean, data_range, label):
    """A Keras callback printing, after every epoch, the PSNR of the prior mean (N2V: the output) on
    the test images with the weights as they stand then (averaged, when the model averages them),
    and the validation loss, as one JSON line."""
    import keras

    from pn2v_tf.metrics import psnr

    class EpochScores(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            estimator = {} if model.config.mode == "n2v" else {"estimator": "prior_mean"}
            predicted = model.predict(test, axes="SYX", **estimator)
            score = float(np.mean([psnr(c, p, data_range) for c, p in zip(clean, predicted)]))
            print(json.dumps({**label, "epoch": epoch + 1, "psnr": round(score, 3),
                              "val_loss": round(float((logs or {}).get("val_loss", np.nan)), 5)}), flush=True)

    return EpochScores()


def train_and_score(name, variant, steps, seed, data, track=False):
    """Train one model, return a dict of PSNRs on the test images and the training time; with ``track``
    print the PSNR after every epoch (:func:`epoch_scores`)."""
    import keras

    from pn2v_tf import PN2V, PN2VConfig
    from pn2v_tf.metrics import psnr

    train, test, clean, noise_model, data_range = data
    X, X_val = split(train)
    mode = "n2v" if variant.startswith("n2v") else "pn2v"
    epochs = max(1, steps // STEPS_PER_EPOCH)
    keras.utils.set_random_seed(seed)
    config = PN2VConfig(X, mode=mode, seed=seed, train_epochs=epochs, **NETWORK, **VARIANTS.get(variant, {}))
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = PN2V(config, variant, basedir=None if variant == "no_best" else folder,
                     noise_model=noise_model if mode == "pn2v" else None)
        if variant == "cosine":
            schedule = keras.optimizers.schedules.CosineDecay(config.train_learning_rate, epochs * STEPS_PER_EPOCH)
            model.prepare_for_training(keras.optimizers.Adam(learning_rate=schedule))
        callbacks = [epoch_scores(model, test, clean, data_range, dict(dataset=name, variant=variant, seed=seed))
                     ] if track else []
        started = time.time()
        model.train(X, X_val, verbose=0, callbacks=callbacks)
        seconds = time.time() - started
        scores = {}
        estimators = ("n2v",) if mode == "n2v" else ("prior_mean", "mmse")
        for estimator in estimators:
            predicted = model.predict(test, axes="SYX", **({} if mode == "n2v" else {"estimator": estimator}))
            scores[estimator] = float(np.mean([psnr(c, p, data_range) for c, p in zip(clean, predicted)]))
    return {"dataset": name, "variant": variant, "steps": epochs * STEPS_PER_EPOCH, "seed": seed,
            "learning_rate": config.train_learning_rate, "seconds": round(seconds, 1),
            **{k: round(v, 3) for k, v in scores.items()}}


def table(rows, dataset):
    """Markdown table of one dataset: per budget and variant, mean PSNR over seeds (min..max), and
    the MMSE's lead over N2V of the same seed."""
    rows = [r for r in rows if r["dataset"] == dataset]
    n2v = {(r["steps"], r["seed"]): r["n2v"] for r in rows if r["variant"] == "n2v"}
    lines = [f"\n{dataset}\n", "| steps | model | seeds | prior mean dB | MMSE / N2V dB | MMSE - N2V dB (min..max) |",
             "|---|---|---|---|---|---|"]

    def spread(values):
        return f"{np.mean(values):.2f} ({min(values):.2f}..{max(values):.2f})" if values else ""

    for steps in sorted({r["steps"] for r in rows}):
        for variant in dict.fromkeys(r["variant"] for r in rows if r["steps"] == steps):
            chosen = [r for r in rows if r["steps"] == steps and r["variant"] == variant]
            seeds = " ".join(str(r["seed"]) for r in chosen)
            if variant.startswith("n2v"):
                label = "N2V" if variant == "n2v" else variant
                lines.append(f"| {steps} | {label} | {seeds} | | {spread([r['n2v'] for r in chosen])} | |")
                continue
            lead = [r["mmse"] - n2v[(steps, r["seed"])] for r in chosen if (steps, r["seed"]) in n2v]
            lines.append(f"| {steps} | {variant} | {seeds} | {spread([r['prior_mean'] for r in chosen])} | "
                         f"{spread([r['mmse'] for r in chosen])} | {spread(lead)} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["synthetic"])
    parser.add_argument("--steps", nargs="+", type=int, default=[400, 1600])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--variants", nargs="*", default=["pn2v", "mean1", "independent_x10"],
                        help=f"PN2V variants besides N2V (none: N2V alone): {', '.join(VARIANTS)}")
    parser.add_argument("--learning-rate", type=float, default=NETWORK["train_learning_rate"],
                        help="Adam (default: %(default)s)")
    parser.add_argument("--no-n2v", action="store_true", help="leave N2V out (e.g. when added to an earlier run)")
    parser.add_argument("--track", action="store_true",
                        help="print the PSNR of the prior mean (N2V: the output) after every epoch")
    args = parser.parse_args(argv)
    NETWORK["train_learning_rate"] = args.learning_rate
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    for name in args.datasets:
        if name != "synthetic" and not (FMD / "raw").is_dir():
            parser.error(f"dataset {name} needs the FMD data at {FMD} (see ../shared/data/README.md)")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    rows = []
    for name in args.datasets:
        for steps in args.steps:
            for seed in args.seeds:
                data = load_dataset(name, seed)
                for variant in ([] if args.no_n2v else ["n2v"]) + args.variants:
                    rows.append(train_and_score(name, variant, steps, seed, data, args.track))
                    print(json.dumps(rows[-1]), flush=True)
    for name in args.datasets:
        print(table(rows, name))


if __name__ == "__main__":
    main()
