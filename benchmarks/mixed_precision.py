"""The U-Net body in bfloat16 against float32: training time, denoising quality and prediction time.

Two parts, each optional:

- **quality** (``--datasets``): for each dataset and seed, PN2V trained twice on the same patches
  and schedule as ``short_budget.py`` (U-Net depth 2, 32 features, K = 400, ``--steps`` steps of
  batch 8), once with ``unet_dtype_policy='float32'`` and once with ``'mixed_bfloat16'``. Each model
  predicts the test images with its body in both policies. Printed: training seconds, PSNR of the
  MMSE and the prior mean per (trained, predicted) policy, and how far each model's bfloat16 MMSE is
  from its float32 one (largest and root-mean-square difference, relative to the float32 image's
  maximum).
- **speed** (``--sizes``): the paper's network (depth 3, 64 features, K = 800, untrained, histogram
  noise model) on size x size images: N2V's prediction (one output), PN2V's prior mean and MMSE
  through ``predict`` and the exported SavedModel, each with the body in float32 and in bfloat16, in
  ``--rounds`` alternating rounds in one process after a warm-up call each; medians and the
  bfloat16/float32 ratios per round. On a GPU also the peak of its memory per call.

The speed-up needs bfloat16 arithmetic in hardware (GPUs; CPUs with AMX or AVX512-BF16, which
TensorFlow's oneDNN kernels use): elsewhere bfloat16 is emulated and slower.

    python benchmarks/mixed_precision.py                          # synthetic, 400 steps, seed 0; 512 x 512
    python benchmarks/mixed_precision.py --datasets --sizes 512 2048 --rounds 5      # speed only
    python benchmarks/mixed_precision.py --datasets synthetic Confocal_MICE --steps 1600 --sizes
"""

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
POLICIES = ("float32", "mixed_bfloat16")
PAPER_NETWORK = dict(n_depth=3, n_first=64, n_samples=800, patch=64, batch=8, perc_pix=1.6)


def train_and_score(name, steps, seed, policy):
    """Train PN2V in ``policy`` as ``short_budget.py`` does; PSNRs of its MMSE and prior mean predicted
    in either policy, training seconds, and the MMSE's differences between the two policies."""
    import keras

    from pn2v_tf import PN2V, PN2VConfig
    from pn2v_tf.metrics import psnr
    from short_budget import NETWORK, STEPS_PER_EPOCH, load_dataset, split

    train, test, clean, noise_model, data_range = load_dataset(name, seed)
    X, X_val = split(train)
    epochs = max(1, steps // STEPS_PER_EPOCH)
    keras.utils.set_random_seed(seed)
    config = PN2VConfig(X, mode="pn2v", seed=seed, train_epochs=epochs, unet_dtype_policy=policy, **NETWORK)
    result = {"dataset": name, "seed": seed, "steps": epochs * STEPS_PER_EPOCH, "trained": policy}
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = PN2V(config, policy, basedir=folder, noise_model=noise_model)
        started = time.perf_counter()
        model.train(X, X_val, verbose=0)
        result["seconds"] = round(time.perf_counter() - started, 1)
        mmse = {}
        for predicted in POLICIES:
            for estimator in ("mmse", "prior_mean"):
                out = model.predict(test, axes="SYX", estimator=estimator, dtype_policy=predicted)
                if estimator == "mmse":
                    mmse[predicted] = out
                result[f"{estimator}_{predicted}"] = round(float(np.mean(
                    [psnr(c, p, data_range) for c, p in zip(clean, out)])), 3)
    relative = np.abs(mmse["mixed_bfloat16"] - mmse["float32"]) / np.abs(mmse["float32"]).max()
    result["mmse_max_relative_difference"] = float(relative.max())
    result["mmse_rms_relative_difference"] = float(np.sqrt(np.mean(relative ** 2)))
    return result


def quality_table(rows):
    lines = ["| dataset | seed | steps | trained in | training s | MMSE, predicted in float32 | MMSE, in bfloat16 | "
             "prior mean, float32 | prior mean, bfloat16 | MMSE difference, largest / rms |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['dataset']} | {r['seed']} | {r['steps']} | {r['trained']} | {r['seconds']:.1f} | "
                     f"{r['mmse_float32']:.2f} | {r['mmse_mixed_bfloat16']:.2f} | {r['prior_mean_float32']:.2f} | "
                     f"{r['prior_mean_mixed_bfloat16']:.2f} | {r['mmse_max_relative_difference']:.1e} / "
                     f"{r['mmse_rms_relative_difference']:.1e} |")
    return "\n".join(lines)


def gpu_peak_mb():
    import tensorflow as tf

    if not tf.config.list_logical_devices("GPU"):
        return None
    return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2 ** 20


def reset_gpu_peak():
    import tensorflow as tf

    if tf.config.list_logical_devices("GPU"):
        tf.config.experimental.reset_memory_stats("GPU:0")


def measure_speed(size, rounds):
    """Seconds per call (median over rounds) of each prediction in each policy, the ratios bfloat16 /
    float32 per round (median, range) and, on a GPU, each call's peak memory (MB)."""
    import tensorflow as tf

    from speed import build_model

    model, data = build_model(PAPER_NETWORK, "pn2v", "histogram", image_side=min(size, 512))
    n2v, _ = build_model(PAPER_NETWORK, "n2v", None, image_side=min(size, 512))
    reps = -(-size // data.test.shape[0])
    image = np.tile(data.test, (reps, reps))[:size, :size].astype(np.float32)
    x = tf.constant(image[np.newaxis, ..., np.newaxis])
    calls = {}
    with tempfile.TemporaryDirectory() as tmp:
        for policy in POLICIES:
            path = os.path.join(tmp, policy)
            model.export_SavedModel(path, dtype_policy=policy)
            serve = tf.saved_model.load(path).signatures["serving_default"]
            calls[("n2v", policy)] = lambda p=policy: n2v.predict(image, dtype_policy=p)
            calls[("prior_mean", policy)] = lambda p=policy: model.predict(image, estimator="prior_mean",
                                                                           dtype_policy=p)
            calls[("mmse", policy)] = lambda p=policy: model.predict(image, dtype_policy=p)
            calls[("saved_model_mmse", policy)] = lambda s=serve: s(input=x)["output"].numpy()[0, ..., 0]
        outputs, peaks = {}, {}
        for key, call in calls.items():  # warm-up: trace and compile
            reset_gpu_peak()
            outputs[key] = call()
            peaks[key] = gpu_peak_mb()
        times = {key: [] for key in calls}
        for round_index in range(rounds):
            for key in (list(calls) if round_index % 2 == 0 else list(reversed(calls))):
                start = time.perf_counter()
                calls[key]()
                times[key].append(time.perf_counter() - start)
    names = sorted({name for name, _ in calls}, key=[name for name, _ in calls].index)
    result = {"size": size, "rounds": rounds, "rows": []}
    for name in names:
        f32, bf16 = (np.asarray(times[(name, p)]) for p in POLICIES)
        ratio = bf16 / f32
        difference = np.abs(outputs[(name, "mixed_bfloat16")] - outputs[(name, "float32")])
        scale = np.abs(outputs[(name, "float32")]).max()
        result["rows"].append({
            "prediction": name, "float32_s": float(np.median(f32)), "bfloat16_s": float(np.median(bf16)),
            "ratio": [float(np.median(ratio)), float(ratio.min()), float(ratio.max())],
            "max_relative_difference": float(difference.max() / scale),
            "rms_relative_difference": float(np.sqrt(np.mean(difference ** 2)) / scale),
            "gpu_peak_mb": [peaks[(name, p)] for p in POLICIES]})
    return result


def speed_table(result, machine):
    gpu = any(row["gpu_peak_mb"][0] is not None for row in result["rows"])
    lines = [f"{result['size']}x{result['size']}, paper network (depth 3, 64 features, K = 800), {machine}; "
             f"medians of {result['rounds']} alternated rounds", "",
             "| prediction | float32 s | bfloat16 body s | bfloat16 / float32 (range) | difference, largest / rms |"
             + (" GPU peak MB (float32, bfloat16) |" if gpu else ""),
             "|---|---|---|---|---|" + ("---|" if gpu else "")]
    for row in result["rows"]:
        median, low, high = row["ratio"]
        line = (f"| {row['prediction']} | {row['float32_s']:.3f} | {row['bfloat16_s']:.3f} | {median:.2f} "
                f"({low:.2f}..{high:.2f}) | {row['max_relative_difference']:.1e} / "
                f"{row['rms_relative_difference']:.1e} |")
        if gpu:
            line += " {:.0f}, {:.0f} |".format(*row["gpu_peak_mb"])
        lines.append(line)
    return "\n".join(lines)


def machine():
    import platform

    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return f"GPU {tf.config.experimental.get_device_details(gpus[0]).get('device_name', 'GPU')}"
    name = platform.processor() or "CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="*", default=["synthetic"],
                        help="quality part: 'synthetic' or FMD dataset names (none: leave the part out)")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[512], help="speed part (none: leave it out)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    results = {"machine": machine(), "quality": [], "speed": []}
    print(f"Machine: {results['machine']}", flush=True)
    for name in args.datasets:
        for seed in args.seeds:
            for policy in POLICIES:
                row = train_and_score(name, args.steps, seed, policy)
                print(json.dumps(row), flush=True)
                results["quality"].append(row)
    if results["quality"]:
        print("\n" + quality_table(results["quality"]))
    for size in args.sizes:
        result = measure_speed(size, args.rounds)
        results["speed"].append(result)
        print("\n" + speed_table(result, results["machine"]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
