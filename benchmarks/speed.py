"""Training and prediction speed of PN2V against N2V on the same network.

Prints patches/s for training (PN2V with the head and likelihood at the masked pixels only, and
N2V) and seconds per image for MMSE and prior-mean prediction, with the ratios the project
targets (PN2V >= 0.9x N2V training throughput; MMSE <= 1.5x prior mean).

    python benchmarks/speed.py                 # paper network: depth 3, 64 features, K = 800
    python benchmarks/speed.py --n-first 32 --n-samples 400 --size 256
    python benchmarks/speed.py --noise-model gmm   # PN2V with a 3-Gaussian GMM noise model
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from pn2v_tf import PN2V, PN2VConfig  # noqa: E402
from pn2v_tf.data import MaskedPatches  # noqa: E402
from pn2v_tf.datasets import make_synthetic_data  # noqa: E402
from pn2v_tf.noise_models import GMMNoiseModel, HistogramNoiseModel  # noqa: E402


def training_throughput(model, images, patch, batch, steps, warmup=3):
    """Patches per second of ``train_on_batch`` on pre-generated masked batches."""
    cfg = model.config
    data = MaskedPatches(images, (patch, patch), batch, steps + warmup, cfg.n2v_perc_pix,
                         cfg.n2v_neighborhood_radius, seed=0)
    batches = [data[i] for i in range(steps + warmup)]
    training = model._training_model
    training.compile(optimizer="adam", loss=model._loss())
    for x, y in batches[:warmup]:
        training.train_on_batch(x, y)
    start = time.perf_counter()
    for x, y in batches[warmup:]:
        training.train_on_batch(x, y)
    return steps * batch / (time.perf_counter() - start)


def prediction_seconds(model, image, estimator, repeats):
    model.predict(image, estimator=estimator, n_tiles=None)  # trace and compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.predict(image, estimator=estimator, n_tiles=None)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-depth", type=int, default=3)
    parser.add_argument("--n-first", type=int, default=64)
    parser.add_argument("--n-samples", type=int, default=800)
    parser.add_argument("--patch", type=int, default=96, help="patch side (multiple of 2**(depth-1))")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--perc-pix", type=float, default=3.125, help="3.125%% of 96x96 = 289 masked pixels")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=512, help="side of the predicted image")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--noise-model", choices=("histogram", "gmm"), default="histogram",
                        help="PN2V's noise model, built from the synthetic calibration stack")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()

    data = make_synthetic_data(seed=0, shape=(args.size, args.size), n_train=2)
    if args.noise_model == "gmm":
        noise_model = GMMNoiseModel.from_calibration_stack(data.calibration, n_gaussians=3, n_coeff=2)
    else:
        noise_model = HistogramNoiseModel.from_calibration_stack(data.calibration)
    common = dict(unet_n_depth=args.n_depth, unet_n_first=args.n_first, n_samples=args.n_samples,
                  n2v_perc_pix=args.perc_pix, n2v_patch_shape=(args.patch, args.patch))
    models = {mode: PN2V(PN2VConfig(data.train, mode=mode, **common), mode, basedir=None,
                         noise_model=noise_model if mode == "pn2v" else None)
              for mode in ("n2v", "pn2v")}

    results = {"config": vars(args)}
    for mode, model in models.items():
        results[f"train_{mode}_patches_per_s"] = training_throughput(
            model, data.train, args.patch, args.batch, args.steps)
    for estimator in ("prior_mean", "mmse"):
        results[f"predict_{estimator}_s"] = prediction_seconds(models["pn2v"], data.test, estimator, args.repeats)
    results["train_ratio_pn2v_over_n2v"] = results["train_pn2v_patches_per_s"] / results["train_n2v_patches_per_s"]
    results["predict_ratio_mmse_over_prior_mean"] = results["predict_mmse_s"] / results["predict_prior_mean_s"]

    print(f"network: depth {args.n_depth}, {args.n_first} features, K = {args.n_samples}; "
          f"training patches {args.patch}x{args.patch}, batch {args.batch}; {args.noise_model} noise model")
    print(f"train N2V   {results['train_n2v_patches_per_s']:7.2f} patches/s")
    print(f"train PN2V  {results['train_pn2v_patches_per_s']:7.2f} patches/s   "
          f"ratio PN2V/N2V {results['train_ratio_pn2v_over_n2v']:.2f}")
    print(f"predict {args.size}x{args.size} prior mean {results['predict_prior_mean_s']:6.2f} s")
    print(f"predict {args.size}x{args.size} MMSE       {results['predict_mmse_s']:6.2f} s   "
          f"ratio MMSE/prior mean {results['predict_ratio_mmse_over_prior_mean']:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
