"""How close do fitted noise models come to the true one? Held-out log-likelihood on camera noise.

Pairs come from the synthetic camera ``3 * Poisson(photons) + 100 + N(0, 6)`` (pn2v_tf.datasets),
photons uniform in [0, 300]; held-out pairs are drawn independently. For each model the script
prints the mean held-out log-likelihood per pixel, its gap to the exact camera likelihood (0 is
the best possible; negative is worse) and the time to build the model.

    python benchmarks/noise_models.py [--pairs 200000 1000000] [--held-out 20000] [--json out.json]
"""

import argparse
import json
import os
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from pn2v_tf.datasets import CameraParams, camera_log_likelihood, camera_noise  # noqa: E402
from pn2v_tf.noise_models import GMMNoiseModel, HistogramNoiseModel  # noqa: E402

CAMERA = CameraParams()
MAX_PHOTONS = 300.0


def camera_pairs(n, seed, photons_range=(0.0, MAX_PHOTONS)):
    rng = np.random.default_rng(seed)
    photons = rng.uniform(*photons_range, size=n)
    observation = camera_noise(photons, rng, CAMERA.gain, CAMERA.offset, CAMERA.read_noise).astype(np.float64)
    return CAMERA.gain * photons + CAMERA.offset, observation, photons


def candidates():
    """Name -> function (signal, observation) -> noise model."""
    return {
        "GMM, 1 Gaussian": lambda s, x: GMMNoiseModel.fit(s, x, n_gaussians=1, n_coeff=2),
        "GMM, 3 Gaussians": lambda s, x: GMMNoiseModel.fit(s, x, n_gaussians=3, n_coeff=2),
        "histogram, 64 bins": lambda s, x: HistogramNoiseModel.from_pairs(s, x, bins=64),
        "histogram, 128 bins": lambda s, x: HistogramNoiseModel.from_pairs(s, x, bins=128),
        "histogram, 256 bins": lambda s, x: HistogramNoiseModel.from_pairs(s, x, bins=256),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, nargs="+", default=[200_000, 1_000_000], help="training pairs")
    parser.add_argument("--held-out", type=int, default=20_000, help="held-out pairs")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    # Held-out signals stay inside the training signals' range, as in a calibrated use.
    held_signal, held_observation, held_photons = camera_pairs(args.held_out, seed=2, photons_range=(5.0, 295.0))
    true = float(np.mean(camera_log_likelihood(held_observation, held_photons, CAMERA)))
    print(f"exact camera model: mean held-out log-likelihood {true:.4f} nats per pixel\n")
    print("| training pairs | model | held-out log-likelihood | gap to exact | build time (s) |")
    print("|---|---|---|---|---|")
    results = {"exact": true, "models": []}
    for n in args.pairs:
        signal, observation, _ = camera_pairs(n, seed=1)
        for name, build in candidates().items():
            started = time.perf_counter()
            model = build(signal, observation)
            seconds = time.perf_counter() - started
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a few held-out values beyond a histogram's edges
                score = float(np.mean(model.log_likelihood(held_observation, held_signal)))
            results["models"].append({"pairs": n, "model": name, "log_likelihood": score,
                                      "gap": score - true, "seconds": seconds})
            print(f"| {n:,} | {name} | {score:.4f} | {score - true:+.4f} | {seconds:.1f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
