"""What the prior-spread calibration picks, against what the PSNR would pick.

For PN2V trained without the calibration (``train_calibrate_spread=False``; the network, data and
schedule of ``short_budget.py``), every factor f of a grid from 1/16 to 2 moves the samples towards
(or away from) their mean, ``s_k -> m + f (s_k - m)``, and the script prints per factor the evidence
that ``train_calibrate_spread`` maximises on the validation images (``PN2V.spread_evidence``,
mean log evidence per pixel, higher is better) and Stein's estimate of the MMSE's squared error
(``PN2V.spread_risk``, per pixel, up to a constant; lower is better), and the PSNR of the MMSE on the
held-out test images; then the factor that the calibration picks (of 1 to 1/16, the smallest within
one standard error of the likeliest, ``best_spread_factors``; the column "SE" gives each factor's
evidence shortfall from the likeliest of the whole grid in its standard errors; the risk is a second
view that the calibration does not use), the factor with the best PSNR, and the prior mean's PSNR
(which every factor leaves as it is).

    python benchmarks/spread_calibration.py --steps 400 --seeds 0 1 2
    python benchmarks/spread_calibration.py --datasets Confocal_FISH --steps 1600 --seeds 0   # needs ../shared
"""

import argparse
import os
import sys
import tempfile
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

#: Factors 2^(k/3), k = -12..3: the calibration's grid (1 to 1/16) and three widenings.
FACTORS = tuple(float(2.0 ** (k / 3)) for k in range(3, -13, -1))


def scan(name, steps, seed):
    """Train one PN2V without calibration; return rows (factor, evidence per pixel, evidence shortfall
    from the likeliest factor in standard errors, risk per pixel, PSNR), the prior mean's PSNR and the
    calibration's factor."""
    import keras

    import short_budget
    from pn2v_tf import PN2V, PN2VConfig
    from pn2v_tf.calibration import SPREAD_FACTORS, best_spread_factors, evidence_shortfalls, scale_head_spread
    from pn2v_tf.metrics import psnr

    train, test, clean, noise_model, data_range = short_budget.load_dataset(name, seed)
    X, X_val = short_budget.split(train)
    epochs = max(1, steps // short_budget.STEPS_PER_EPOCH)
    keras.utils.set_random_seed(seed)
    config = PN2VConfig(X, mode="pn2v", seed=seed, train_epochs=epochs, train_calibrate_spread=False,
                        **short_budget.NETWORK)
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = PN2V(config, "pn2v", basedir=folder, noise_model=noise_model)
        model.train(X, X_val, verbose=0)
        evidence = model.spread_evidence(X_val, FACTORS)
        shortfall = evidence_shortfalls(evidence)[:, 0]
        chosen = float(best_spread_factors(evidence.subset(SPREAD_FACTORS))[0])
        risk = model.spread_risk(X_val, FACTORS)
        head = model.keras_model.get_layer("head")
        trained = [w.numpy() for w in head.weights]

        def score(estimator="mmse"):  # the engine reads the head's weights as they are now
            predicted = model.predict(test, axes="SYX", estimator=estimator)
            return float(np.mean([psnr(c, p, data_range) for c, p in zip(clean, predicted)]))

        rows = []
        for row, factor in enumerate(FACTORS):
            for weight, value in zip(head.weights, trained):
                weight.assign(value)
            scale_head_spread(head, [factor])
            rows.append((factor, evidence.totals[row, 0] / evidence.pixels, shortfall[row],
                         risk.totals[row, 0] / risk.pixels, score()))
        prior_mean = score("prior_mean")
    return rows, prior_mean, min(FACTORS, key=lambda f: abs(f - chosen))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["synthetic"],
                        help="'synthetic' or FMD datasets (e.g. Confocal_FISH; needs ../shared)")
    parser.add_argument("--steps", type=int, default=400, help="optimiser steps (epochs of 40)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args(argv)
    for name in args.datasets:
        for seed in args.seeds:
            rows, prior_mean, chosen = scan(name, args.steps, seed)
            best = max(rows, key=lambda r: r[4])
            print(f"\n{name}, {args.steps} steps, seed {seed}: prior mean {prior_mean:.2f} dB")
            print("| factor | evidence (nats / pixel) | SE below the likeliest | risk (per pixel) | MMSE PSNR (dB) |\n"
                  "|---|---|---|---|---|")
            for factor, evidence, shortfall, risk, value in rows:
                marks = (" (calibration)" if factor == chosen else "") + (" (best PSNR)" if factor == best[0] else "")
                print(f"| {factor:.3g}{marks} | {evidence:.5f} | {shortfall:.2f} | {risk:.4f} | {value:.2f} |")
            at_one = next(r for r in rows if r[0] == 1.0)[4]
            chosen_psnr = next(r for r in rows if r[0] == chosen)[4]
            print(f"calibrated: factor {chosen:.3g}, {chosen_psnr:.2f} dB ({chosen_psnr - at_one:+.2f} against "
                  f"factor 1, {chosen_psnr - best[4]:+.2f} against the best factor {best[0]:.3g})", flush=True)


if __name__ == "__main__":
    main()
