"""Where the spread's calibration stands on z-stacks: MMSE against the spread factor, and what the
evidence says about the factors under the calibration histogram and under an almost noise-free one.

Trains (or reads, ``--from``) the z-stack demo of one seed (``pn2v-demo --3d``, the budget of
``volumes.py``), then, for its 3-D PN2V model as calibrated:

- the PSNR of the test stack's MMSE when every sample's distance from the samples' mean is scaled
  once more by each factor of the calibration's grid (``--voxels`` random voxels), and the prior mean's;
- for each factor, how many standard errors its summed evidence on the validation voxels falls
  short of the likeliest factor's (``PN2V.spread_evidence``, ``evidence_standard_errors``), once under
  the model's histogram (from the demo's 100 calibration frames) and once under a histogram of the
  same bins from ``--pairs`` exact camera pairs (signals uniform over its signal range), whose
  estimation noise is negligible (and, with ``--smooth``, under the model's histogram smoothed by a
  Gaussian of that many bins along lines of constant x - s, as the calibration reads it with 1 bin); with each,
  the factor the one-standard-error rule would pick.

With ``--2d`` the same for the 2-D demo (``pn2v-demo``, its PN2V with the histogram noise model);
``--widen N`` puts N factors above 1 (2^(1/3) apart) on top as well, and ``--smooth-signal`` reads the
evidence under the histogram smoothed along its signal axis alone (which widens p(x|s)), for comparison.

    python benchmarks/volume_calibration.py --seed 0
    python benchmarks/volume_calibration.py --2d --from pn2v_demo --widen 4 --smooth 1 --smooth-signal 1
    python benchmarks/volume_calibration.py --from /tmp/pn2v_demo_3d --seed 0   # a finished demo run
"""

import argparse
import os
import sys
import tempfile
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import numpy as np  # noqa: E402


def mmse_psnr_by_factor(model, stack, clean, factors, n_voxels, seed):
    """PSNR (dB, data range of ``clean``) of the MMSE of ``n_voxels`` random voxels per factor, and of
    the prior mean."""
    import keras
    import tensorflow as tf

    from pn2v_tf.inference import mmse
    from pn2v_tf.metrics import psnr

    samples = keras.ops.convert_to_numpy(model.keras_model(stack[None, ..., None], training=False))[0]
    samples = samples.reshape(-1, samples.shape[-1])
    pick = np.random.default_rng(seed).permutation(len(samples))[:n_voxels]
    samples, observed, truth = samples[pick], stack.reshape(-1)[pick], clean.reshape(-1)[pick]
    data_range = float(clean.max() - clean.min())
    mean = samples.mean(axis=-1, keepdims=True)
    rows = {}
    for factor in factors:
        moved = mean + np.float32(factor) * (samples - mean)
        estimate = np.concatenate([mmse(tf.constant(observed[i:i + 4096, None]), tf.constant(moved[i:i + 4096]),
                                        model.noise_model).numpy()[:, 0] for i in range(0, len(pick), 4096)])
        rows[factor] = psnr(truth, estimate, data_range)
    return rows, psnr(truth, mean[:, 0], data_range)


def exact_histogram(noise_model, camera, n_pairs, seed):
    """A histogram of ``noise_model``'s bins and range from ``n_pairs`` pairs of the exact camera."""
    from pn2v_tf.datasets import camera_noise
    from pn2v_tf.noise_models import HistogramNoiseModel

    rng = np.random.default_rng(seed)
    signal = rng.uniform(*noise_model.signal_range, n_pairs)
    photons = np.maximum((signal - camera.offset) / camera.gain, 0.0)
    observation = camera_noise(photons, rng, gain=camera.gain, offset=camera.offset, read_noise=camera.read_noise)
    return HistogramNoiseModel.from_pairs(signal, observation, bins=noise_model.bins,
                                          value_range=noise_model.value_range)


def smoothed_along_signal(noise_model, sigma_bins):
    """``noise_model`` (a histogram) with each observation bin's p(x|s) smoothed along the signal axis alone
    by a Gaussian of ``sigma_bins`` bins (rows renormalised)."""
    from scipy.ndimage import gaussian_filter1d

    from pn2v_tf.noise_models import HistogramNoiseModel

    rows = gaussian_filter1d(np.asarray(noise_model.histogram.numpy(), np.float64), sigma_bins, axis=0, mode="nearest")
    smoothed = HistogramNoiseModel(bins=noise_model.bins, value_range=noise_model.value_range,
                                   signal_range=noise_model.signal_range)
    smoothed.histogram.assign((rows / rows.sum(axis=1, keepdims=True)).astype(np.float32))
    return smoothed


def shortfalls_under(model, validation, noise_model, smoothing_bins=0.0, factors=None):
    """(factors, shortfall of each in standard errors, the rule's pick) under ``noise_model``, a histogram
    smoothed by ``smoothing_bins`` bins (``HistogramNoiseModel.smoothed``; the calibration's own: 1)."""
    from pn2v_tf.calibration import best_spread_factors, evidence_shortfalls

    kept = model.noise_model
    model.noise_model = noise_model
    try:
        evidence = model.spread_evidence(validation, factors=factors, smoothing_bins=smoothing_bins)
    finally:
        model.noise_model = kept
    offered = [f for f in evidence.factors if f <= 1.0 + 1e-9]      # the calibration's own grid
    pick = float(best_spread_factors(evidence.subset(offered))[0])
    return evidence.factors, evidence_shortfalls(evidence)[:, 0], pick


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=20, help="the demo's epochs of --steps steps")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--from", dest="source",
                        help="a finished `pn2v-demo --3d` (with --2d: `pn2v-demo`) output folder of the same seed "
                             "and default data options")
    parser.add_argument("--2d", dest="two_d", action="store_true", help="the 2-D demo instead of the z-stack demo")
    parser.add_argument("--widen", type=int, default=0, help="factors above 1 on top (2^(k/3), k = 1..N)")
    parser.add_argument("--voxels", type=int, default=80000, help="test voxels for the PSNR per factor")
    parser.add_argument("--pairs", type=int, default=60_000_000, help="exact camera pairs of the reference histogram")
    parser.add_argument("--smooth", type=float, nargs="*", default=[],
                        help="also the evidence under the histogram smoothed along x - s by Gaussians of "
                             "these widths (bins)")
    parser.add_argument("--smooth-signal", type=float, nargs="*", default=[],
                        help="also the evidence under the histogram smoothed along the signal axis alone (bins)")
    args = parser.parse_args(argv)

    from pn2v_tf import PN2V, demo
    from pn2v_tf.calibration import SPREAD_FACTORS
    from pn2v_tf.data import split_validation
    from pn2v_tf.datasets import make_synthetic_data, make_synthetic_volumes

    kind = [] if args.two_d else ["--3d"]
    factors = tuple(2.0 ** (k / 3) for k in range(args.widen, 0, -1)) + SPREAD_FACTORS

    with tempfile.TemporaryDirectory() as scratch, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        outdir = args.source or os.path.join(scratch, "demo")
        if args.source is None:
            demo.run(demo.parse_args(kind + ["--seed", str(args.seed), "--outdir", outdir, "--epochs",
                                             str(args.epochs), "--steps", str(args.steps)]))
        model = PN2V(None, "pn2v" if args.two_d else "pn2v_3d", basedir=os.path.join(outdir, "models"))
        demo_args = demo.parse_args(kind)
        if args.two_d:
            data = make_synthetic_data(seed=args.seed, shape=(demo_args.shape, demo_args.shape),
                                       n_train=demo_args.n_train, max_photons=demo_args.max_photons)
        else:
            data = make_synthetic_volumes(seed=args.seed, shape=(demo_args.planes, demo_args.shape, demo_args.shape),
                                          n_train=demo_args.n_train, z_step=demo_args.z_step,
                                          max_photons=demo_args.max_photons)
        validation = split_validation(data.train, fraction=0.25)[1]
        psnrs, prior_mean = mmse_psnr_by_factor(model, data.test, data.test_clean, factors, args.voxels, args.seed)
        reference = exact_histogram(model.noise_model, data.camera, args.pairs, args.seed)
        columns = {"unsmoothed histogram": shortfalls_under(model, validation, model.noise_model, 0, factors),
                   "exact-pairs histogram": shortfalls_under(model, validation, reference, 0, factors)}
        for sigma in args.smooth:
            columns[f"smoothed by {sigma:g} bins along x - s"] = shortfalls_under(
                model, validation, model.noise_model, sigma, factors)
        for sigma in args.smooth_signal:
            columns[f"smoothed by {sigma:g} bins along the signal"] = shortfalls_under(
                model, validation, smoothed_along_signal(model.noise_model, sigma), 0, factors)
    print(f"\nseed {args.seed}: {'2-D' if args.two_d else '3-D'} PN2V as calibrated; prior mean {prior_mean:.2f} dB "
          f"on {args.voxels} test pixels (at most)")
    print("| factor on top | MMSE PSNR (dB) |" + "".join(f" SE below the likeliest, {name} |" for name in columns) +
          "\n|---|---|" + "---|" * len(columns))
    for row, factor in enumerate(factors):
        print(f"| {factor:.3g} | {psnrs[factor]:.2f} |" +
              "".join(f" {shortfalls[row]:.2f} |" for _, shortfalls, _ in columns.values()))
    print("the rule (of the factors up to 1 on top) would pick " +
          ", ".join(f"{pick:.3g} with the {name}" for name, (_, _, pick) in columns.items()) +
          f"; best PSNR at {max(psnrs, key=psnrs.get):.3g}")
    return dict(psnr=psnrs, prior_mean=prior_mean,
                shortfalls={name: list(shortfalls) for name, (_, shortfalls, _) in columns.items()})


if __name__ == "__main__":
    sys.exit(main() and 0)
