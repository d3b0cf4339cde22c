"""Denoising quality on synthetic anisotropic z-stacks: 3-D PN2V against 3-D N2V, the input and a
2-D PN2V applied plane by plane, all trained at the same budget.

Runs the z-stack demo (``pn2v-demo --3d``, :func:`pn2v_tf.demo.run`) once per seed: a synthetic data
set of ``--n-train`` noisy stacks (a quarter of them, at least one, validate), a test stack and
2-D calibration frames (``make_synthetic_volumes``); the histogram noise model of the calibration
frames; 3-D N2V and 3-D PN2V (U-Net depth 3, pooling 1x2x2, K = 800) on 3-D patches of
``--patch-planes`` x 64 x 64 voxels, ``--batch-size`` per step; a 2-D PN2V on the planes of the same
stacks with ``--patch-planes`` x ``--batch-size`` patches of 64 x 64 pixels per step (the same voxels
and masked voxels per step, the same steps and validation voxels), applied plane by plane. It prints
the PSNR of each result per seed, their mean, and the margins between them (dB).

TensorFlow's oneDNN kernels are switched on (``TF_ENABLE_ONEDNN_OPTS=1``, unless the environment
sets it): without them the gradients of 3-D convolutions take 10 to 20 times as long on CPU.

    python benchmarks/volumes.py                                   # seeds 0 and 1, 20 x 20 steps
    python benchmarks/volumes.py --seeds 0 --epochs 2 --steps 2    # a quick look
    python benchmarks/volumes.py --json /tmp/volumes.json --append-markdown BENCHMARKS.md
"""

import argparse
import datetime
import json
import os
import platform
import shlex
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # before TensorFlow loads

import numpy as np  # noqa: E402

ROWS = ["input", "3-D N2V", "3-D PN2V prior mean", "3-D PN2V MMSE", "2-D PN2V MMSE, plane by plane"]
#: (name, row a, row b): the margin a - b in dB.
MARGINS = [
    ("3-D PN2V MMSE - 3-D N2V", "3-D PN2V MMSE", "3-D N2V"),
    ("3-D PN2V MMSE - 2-D PN2V MMSE (plane by plane)", "3-D PN2V MMSE", "2-D PN2V MMSE, plane by plane"),
    ("3-D N2V - input", "3-D N2V", "input"),
    ("3-D PN2V MMSE - 3-D PN2V prior mean", "3-D PN2V MMSE", "3-D PN2V prior mean"),
    ("3-D PN2V prior mean - 3-D N2V", "3-D PN2V prior mean", "3-D N2V"),
]


def demo_argv(args, seed, outdir):
    """The ``pn2v-demo --3d`` options of one seed's run."""
    return ["--3d", "--seed", str(seed), "--outdir", outdir, "--epochs", str(args.epochs), "--steps", str(args.steps),
            "--batch-size", str(args.batch_size), "--patch-planes", str(args.patch_planes), "--shape", str(args.shape),
            "--planes", str(args.planes), "--n-train", str(args.n_train), "--n-first", str(args.n_first),
            "--n-samples", str(args.n_samples), "--max-photons", str(args.max_photons), "--z-step", str(args.z_step),
            "--learning-rate", str(args.learning_rate)] + (
                [] if args.mean_weight is None else ["--mean-weight", str(args.mean_weight)]) + (
                [] if args.decouple_mean else ["--no-decouple-mean"])


def run_seeds(args, outdir):
    """One demo run per seed; returns {seed: {"psnr_db": table, "seconds": s}}."""
    import keras

    from pn2v_tf import demo

    runs = {}
    for seed in args.seeds:
        print(f"\n##### seed {seed} #####", flush=True)
        started = time.time()
        table = demo.run(demo.parse_args(demo_argv(args, seed, os.path.join(outdir, f"seed{seed}"))))
        runs[seed] = {"psnr_db": table, "seconds": time.time() - started}
        keras.backend.clear_session()
    return runs


def summarise(runs):
    """Mean PSNR per row and each margin per seed and on average."""
    seeds = list(runs)
    mean = {row: float(np.mean([runs[s]["psnr_db"][row] for s in seeds])) for row in ROWS}
    margins = {name: {str(s): runs[s]["psnr_db"][a] - runs[s]["psnr_db"][b] for s in seeds}
               for name, a, b in MARGINS}
    for name, per_seed in margins.items():
        per_seed["mean"] = float(np.mean([per_seed[str(s)] for s in seeds]))
    return {"mean_psnr_db": mean, "margins_db": margins}


def format_markdown(results):
    seeds = [str(s) for s in results["seeds"]]
    a = results["args"]
    side = min(64, a["shape"] // 4 * 4)  # the demo's patch side
    lines = [f"## {results['date']}: z-stacks, 3-D PN2V against 3-D N2V and 2-D PN2V plane by plane", "",
             f"Command: `{results['command']}`", "",
             f"Machine: {results['machine']}; TF_ENABLE_ONEDNN_OPTS={results['onednn']}; "
             f"total {results['total_seconds'] / 60:.1f} min (shared machine: times are contended).", "",
             f"Data: `make_synthetic_volumes`, stacks {a['planes']}x{a['shape']}x{a['shape']} (ZYX), z step "
             f"{a['z_step']:g} pixel sizes, {a['max_photons']:g} photons at the brightest voxel, {a['n_train']} noisy "
             "stacks (the last quarter, at least one, validate), one test stack; histogram noise model (256 bins) of 100 2-D "
             "calibration frames.", "",
             f"Budget of every model: {a['epochs']} epochs x {a['steps']} steps, Adam {a['learning_rate']:g}, "
             f"U-Net depth 3, {a['n_first']} features, K = {a['n_samples']}; 3-D: {a['batch_size']} patch(es) of "
             f"{a['patch_planes']}x{side}x{side} voxels per step, pooling 1x2x2; 2-D: "
             f"{a['batch_size'] * a['patch_planes']} patches of {side}x{side} per step (the same voxels and masked voxels "
             "per step), applied plane by plane.", "",
             "| PSNR (dB) | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |",
             "|---|" + "---|" * (len(seeds) + 1)]
    for row in ROWS:
        values = [results["runs"][s]["psnr_db"][row] for s in seeds]
        lines.append(f"| {row} | " + " | ".join(f"{v:.2f}" for v in values)
                     + f" | {results['mean_psnr_db'][row]:.2f} |")
    lines += ["", "| margin (dB) | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |",
              "|---|" + "---|" * (len(seeds) + 1)]
    for name, per_seed in results["margins_db"].items():
        lines.append(f"| {name} | " + " | ".join(f"{per_seed[s]:+.2f}" for s in seeds)
                     + f" | {per_seed['mean']:+.2f} |")
    lines += ["", "Train+predict time per seed (s): "
              + ", ".join(f"seed {s}: {results['runs'][s]['seconds']:.0f}" for s in seeds) + ".", ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="data and training seeds")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--steps", type=int, default=20, help="steps per epoch")
    parser.add_argument("--batch-size", type=int, default=1, help="3-D patches per step")
    parser.add_argument("--patch-planes", type=int, default=16, help="Z of the 3-D patches")
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--n-first", type=int, default=16)
    parser.add_argument("--n-samples", type=int, default=800)
    parser.add_argument("--mean-weight", type=float, default=None,
                        help="3-D and 2-D PN2V's train_mean_weight (default: the package's)")
    parser.add_argument("--no-decouple-mean", dest="decouple_mean", action="store_false",
                        help="3-D and 2-D PN2V's train_decouple_mean=False")
    parser.add_argument("--shape", type=int, default=128, help="Y and X of the stacks")
    parser.add_argument("--planes", type=int, default=32, help="Z of the stacks")
    parser.add_argument("--n-train", type=int, default=3, help="noisy stacks (a quarter, at least one, validate)")
    parser.add_argument("--max-photons", type=float, default=60.0)
    parser.add_argument("--z-step", type=float, default=3.0)
    parser.add_argument("--outdir", help="folder for the demo runs (default: a temporary folder, removed)")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--append-markdown", metavar="PATH", help="append the markdown section to this file")
    args = parser.parse_args(argv)

    import tensorflow as tf

    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        outdir = args.outdir or tmp
        runs = run_seeds(args, outdir)
    results = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "command": "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__)] + sys.argv[1:]),
               "machine": f"{platform.machine()}, {os.cpu_count()} cores, TensorFlow {tf.__version__}",
               "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS"), "args": vars(args), "seeds": args.seeds,
               "runs": {str(s): r for s, r in runs.items()}, "total_seconds": time.time() - started}
    results.update(summarise(runs))
    results["seeds"] = [str(s) for s in args.seeds]
    text = format_markdown(results)
    print("\n" + text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    if args.append_markdown:
        with open(args.append_markdown, "a") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
