"""Test-time augmentation: PSNR gain and time cost for N2V and PN2V on synthetic data.

Trains N2V and PN2V (histogram noise model of the data's calibration stack) on the same network and
budget on ``make_synthetic_data`` images, then denoises the test images with and without ``tta=True``
and prints, for each model, the PSNR against the ground truth and the prediction time of each (the
first prediction of each kind is a warm-up outside the clock; ``--repeats`` timed ones, median).

    python benchmarks/tta.py                                  # a few minutes on 2 CPU cores
    python benchmarks/tta.py --steps 600 --n-first 32 --seeds 0 1 2
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def train(mode, data, noise_model, args):
    import keras

    from pn2v_tf import PN2V, PN2VConfig

    keras.utils.set_random_seed(args.seed)
    config = PN2VConfig(data.train, mode=mode, n_samples=args.n_samples, unet_n_depth=args.depth,
                        unet_n_first=args.n_first, n2v_patch_shape=(64, 64), train_batch_size=8,
                        train_epochs=args.epochs, train_steps_per_epoch=args.steps // args.epochs,
                        train_learning_rate=args.learning_rate, train_tensorboard=False, seed=args.seed)
    model = PN2V(config, None, basedir=None, noise_model=noise_model if mode == "pn2v" else None)
    model.train(data.train[:-1], data.train[-1:], verbose=0)
    return model


def timed(function, repeats):
    function()  # warm-up: traces and compiles
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return result, float(np.median(times))


def main(argv=None):
    from pn2v_tf import HistogramNoiseModel
    from pn2v_tf.datasets import make_synthetic_data
    from pn2v_tf.metrics import psnr

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--max-photons", type=float, default=60.0)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--n-first", type=int, default=16)
    parser.add_argument("--n-samples", type=int, default=200)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    data = make_synthetic_data(seed=args.seed, shape=(args.size, args.size), n_train=5, max_photons=args.max_photons)
    noise_model = HistogramNoiseModel.from_calibration_stack(data.calibration, bins=128)
    rows = []
    print(f"input: {psnr(data.test_clean, data.test):.2f} dB")
    for mode in ("n2v", "pn2v"):
        model = train(mode, data, noise_model, args)
        plain, plain_s = timed(lambda: model.predict(data.test), args.repeats)
        augmented, tta_s = timed(lambda: model.predict(data.test, tta=True), args.repeats)
        row = dict(mode=mode, psnr=round(psnr(data.test_clean, plain), 2), psnr_tta=round(psnr(data.test_clean,
                   augmented), 2), seconds=round(plain_s, 3), seconds_tta=round(tta_s, 3))
        row["gain_db"] = round(row["psnr_tta"] - row["psnr"], 2)
        row["cost"] = round(tta_s / plain_s, 2)
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


if __name__ == "__main__":
    main()
