"""How fast does PN2V's prior become good enough for the MMSE? PSNR of MMSE and prior mean during training.

Trains histogram-PN2V with the network, patches and learning rate of ``fmd_table1.py --budget quick``
on one FMD dataset for ``--epochs`` (40 steps each) and prints, every ``--every`` epochs, the mean
PSNR of the MMSE and of the prior mean over the dataset's 4 images. The quick budget stops at 40
epochs; the question is where the MMSE overtakes the prior mean, as it does in the paper.

    python benchmarks/pn2v_convergence.py [--dataset Confocal_FISH] [--epochs 160] [--every 20]
"""

import argparse
import os
import sys
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from fmd_table1 import BUDGETS, DATA_RANGE, DATASETS, DEFAULT_DATA, EIGHT_BIT_BINS, Runner, check_data_dir, load_regime  # noqa: E402,E501


def main(argv=None):
    import keras

    from pn2v_tf.metrics import psnr
    from pn2v_tf.noise_models import HistogramNoiseModel

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=DATASETS, default="Confocal_FISH")
    parser.add_argument("--regime", default="raw")
    parser.add_argument("--epochs", type=int, default=160)
    parser.add_argument("--every", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args(argv)
    check_data_dir(args.data.resolve())
    noisy, gt = load_regime(args.data.resolve(), args.dataset, args.regime)
    budget = replace(BUDGETS["quick"], pn2v_epochs=args.epochs)
    noise_model = HistogramNoiseModel.from_pairs(gt, noisy, bins=256, value_range=EIGHT_BIT_BINS)
    started = time.time()

    def mean_psnr(model, estimator):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            images = model.predict(noisy, axes="SYX", estimator=estimator)
        return np.mean([psnr(g, p, DATA_RANGE) for g, p in zip(gt, images)])

    class Report(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if (epoch + 1) % args.every == 0:
                mmse, prior = mean_psnr(model, "mmse"), mean_psnr(model, "prior_mean")
                print(f"| {epoch + 1} | {(epoch + 1) * budget.steps} | {mmse:.2f} | {prior:.2f} | {mmse - prior:+.2f} | "
                      f"{time.time() - started:.0f} |", flush=True)

    print(f"{args.dataset} {args.regime}, histogram PN2V; {budget.describe()}\n")
    print("| epochs | steps | MMSE PSNR | prior mean PSNR | MMSE - prior mean | s |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        runner = Runner(budget, Path(folder), args.seed, noisy, gt)
        model = runner.new_model("pn2v", "pn2v", args.epochs, noisy, noise_model)
        model.train(noisy, noisy, verbose=0, callbacks=[Report()])


if __name__ == "__main__":
    main()
