"""Training and prediction speed and peak memory of PN2V against N2V on the same network.

One command measures, each measurement in its own subprocess (so its peak resident memory,
``ru_maxrss`` at its end, is its own):

- training throughput (patches/s, s per optimiser step) of PN2V and N2V for the paper's network
  (depth 3, 64 features, K = 800, 96x96 patches, batch 4) and a small one (the demo's: depth 3,
  16 features, K = 800, 64x64 patches, batch 16, 3% masked), and the ratio PN2V/N2V;
- the same for 3-D models on z-stacks ("3d": depth 3, 32 features, K = 800, 16x64x64 patches,
  pooling 1x2x2, batch 4, 3% masked; "3d-small": the z-stack demo's, 16 features, batch 1). Both
  modes run in one process, alternating rounds of ``--steps-3d`` steps (PN2V first in the
  1st, 3rd, ... round, N2V first in the others), so that load from other processes on a shared machine
  affects both alike; the ratio is that of their summed times, with its range over the rounds;
- prediction throughput (megapixels/s) of MMSE and prior mean with the paper's network on square
  images of the given sizes, with glibc's default allocator settings and with
  ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=10000000000`` ("tuned");
- the prediction engine on one image (``--engine-sizes``, default 512): in one process, alternating
  rounds of the forward pass of the same network with one output (N2V's), ``predict``'s prior mean
  and MMSE, and the exported SavedModel's MMSE, as exported by default (no XLA) and with
  ``jit_compile=True``, with the ratios per round;
- the original PyTorch PN2V (``../shared/anchors/pn2v_original/time_original.py``, when that folder
  and PyTorch are there) in the same run, for the speed-up of the MMSE;
- the FLOP rate achieved by the network's forward pass (forward FLOPs per pixel x pixels / prior-mean
  prediction time; prior mean is dominated by the forward pass) against the machine's practical
  peak, a large float32 ``tf.linalg.matmul`` timed here.

The network is untrained: speed does not depend on the weights.

    python benchmarks/speed.py                                   # everything
    python benchmarks/speed.py --configs small --sizes 512 --allocator default --steps 5 --repeats 1
    python benchmarks/speed.py --json /tmp/speed.json --append-markdown BENCHMARKS.md
    python benchmarks/speed.py --configs 3d 3d-small --sizes --onednn on    # 3-D training rows only

``--onednn on|off`` sets ``TF_ENABLE_ONEDNN_OPTS`` in the measuring processes (TensorFlow 2.21's CPU
build leaves its oneDNN kernels off unless it is 1; the gradients of 3-D convolutions are then 10
to 20 times slower, a training step of "3d-small" about 8 times); the default leaves the environment
as it is.
"""

import argparse
import datetime
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

TUNED_ALLOCATOR_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "10000000000"}
SMALL_CONFIG = dict(n_depth=3, n_first=16, n_samples=800, patch=64, batch=16, perc_pix=3.0)
#: 3-D training configurations (``--batch-3d`` and ``--n-first-3d`` change "3d").
THREE_D_CONFIGS = {
    "3d": dict(n_depth=3, n_first=32, n_samples=800, patch=(16, 64, 64), batch=4, perc_pix=3.0, pool=(1, 2, 2)),
    "3d-small": dict(n_depth=3, n_first=16, n_samples=800, patch=(16, 64, 64), batch=1, perc_pix=3.0,
                     pool=(1, 2, 2)),
}
ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"
ORIGINAL_DEFAULT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "shared", "anchors", "pn2v_original")
TARGETS = {
    "train": "PN2V >= 0.7x N2V training throughput (goal 0.9x)",
    "train3d": "3-D PN2V >= 0.9x 3-D N2V training throughput on the same network",
    "predict": "MMSE 2048x2048 with K = 800 under 1.5 GB peak RSS in a fresh process",
    "engine": "MMSE 512x512 <= 1.25x prior mean, prior mean <= 1.3x the N2V forward pass, SavedModel <= 1.2x "
              "predict, MMSE >= 30x faster than the original PyTorch PN2V",
}


def peak_rss_mb():
    """Peak resident memory of this process so far (``ru_maxrss`` is in KB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def network_config(args, name):
    if name == "small":
        return dict(SMALL_CONFIG)
    if name == "3d":
        return dict(THREE_D_CONFIGS["3d"], batch=args.batch_3d, n_first=args.n_first_3d)
    if name in THREE_D_CONFIGS:
        return dict(THREE_D_CONFIGS[name])
    return dict(n_depth=args.n_depth, n_first=args.n_first, n_samples=args.n_samples,
                patch=args.patch, batch=args.batch, perc_pix=args.perc_pix)


def calibrated_noise_model(data, kind):
    """A histogram (or 3-Gaussian GMM, ``kind='gmm'``) noise model of the data's calibration stack."""
    from pn2v_tf.noise_models import GMMNoiseModel, HistogramNoiseModel

    if kind == "gmm":
        return GMMNoiseModel.from_calibration_stack(data.calibration, n_gaussians=3, n_coeff=2)
    return HistogramNoiseModel.from_calibration_stack(data.calibration)


def build_model(net, mode, noise_model_kind, image_side):
    from pn2v_tf import PN2V, PN2VConfig
    from pn2v_tf.datasets import make_synthetic_data

    data = make_synthetic_data(seed=0, shape=(image_side, image_side), n_train=1)
    noise_model = calibrated_noise_model(data, noise_model_kind) if mode == "pn2v" else None
    config = PN2VConfig(data.train, mode=mode, unet_n_depth=net["n_depth"], unet_n_first=net["n_first"],
                        n_samples=net["n_samples"], n2v_perc_pix=net["perc_pix"],
                        n2v_patch_shape=(net["patch"], net["patch"]))
    return PN2V(config, mode, basedir=None, noise_model=noise_model), data


def onednn_enabled():
    """Whether this process's TensorFlow runs its oneDNN kernels (None if it cannot tell)."""
    try:
        from tensorflow.python.util import _pywrap_util_port
        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):  # private API: may move
        return None


def build_model_3d(net, mode, noise_model_kind):
    """An untrained 3-D model (axes ZYX) of configuration ``net`` and synthetic z-stacks for it."""
    from pn2v_tf import PN2V, PN2VConfig
    from pn2v_tf.datasets import make_synthetic_volumes

    depth, height, width = net["patch"]
    data = make_synthetic_volumes(seed=0, shape=(max(32, depth), max(128, height), max(128, width)), n_train=2)
    noise_model = calibrated_noise_model(data, noise_model_kind) if mode == "pn2v" else None
    config = PN2VConfig(data.train, mode=mode, axes="ZYX", unet_pool=tuple(net["pool"]), unet_n_depth=net["n_depth"],
                        unet_n_first=net["n_first"], n_samples=net["n_samples"], n2v_perc_pix=net["perc_pix"],
                        n2v_patch_shape=tuple(net["patch"]), seed=0)
    return PN2V(config, mode, basedir=None, noise_model=noise_model), data


def measure_training_alternating(net, noise_model_kind, steps, rounds, warmup=2):
    """3-D PN2V and N2V of the same network in one process: ``rounds`` rounds of ``steps``
    ``train_on_batch`` calls of each (PN2V first in rounds 0, 2, ..., N2V first in the others),
    on the same pre-generated masked batches. Returns per mode patches/s, steps/s, voxels/s and
    s/step over all rounds, the ratio PN2V/N2V of the summed times and its range over the rounds."""
    import keras

    from pn2v_tf.data import MaskedPatches

    trainings, batches = {}, None
    for mode in ("pn2v", "n2v"):
        keras.utils.set_random_seed(0)  # the same initial U-Net for both
        model, data = build_model_3d(net, mode, noise_model_kind)
        cfg = model.config
        if batches is None:
            patches = MaskedPatches(data.train, tuple(net["patch"]), net["batch"], steps + warmup, cfg.n2v_perc_pix,
                                    cfg.n2v_neighborhood_radius, seed=0)
            batches = [patches[i] for i in range(steps + warmup)]
        training = model._training_model
        training.compile(optimizer="adam", loss=model._loss())
        for x, y in batches[:warmup]:
            training.train_on_batch(x, y)
        trainings[mode] = training
    seconds = {"pn2v": [], "n2v": []}
    for round_index in range(rounds):
        order = ("pn2v", "n2v") if round_index % 2 == 0 else ("n2v", "pn2v")
        for mode in order:
            start = time.perf_counter()
            for x, y in batches[warmup:]:
                trainings[mode].train_on_batch(x, y)
            seconds[mode].append(time.perf_counter() - start)
    voxels = int(np.prod(net["patch"])) * net["batch"]
    result = {"steps": steps, "rounds": rounds, "onednn": onednn_enabled()}
    for mode, times in seconds.items():
        total = float(np.sum(times))
        n = steps * rounds
        result[mode] = {"steps_per_s": n / total, "s_per_step": total / n, "patches_per_s": n * net["batch"] / total,
                        "voxels_per_s": n * voxels / total, "round_seconds": times}
    per_round = [n2v / pn2v for pn2v, n2v in zip(seconds["pn2v"], seconds["n2v"])]
    result["ratio_pn2v_over_n2v"] = result["pn2v"]["steps_per_s"] / result["n2v"]["steps_per_s"]
    result["ratio_range"] = [float(min(per_round)), float(max(per_round))]
    return result


def measure_training(net, mode, noise_model_kind, steps, warmup=3):
    """Patches/s and s/step of ``train_on_batch`` on pre-generated masked batches."""
    from pn2v_tf.data import MaskedPatches

    model, data = build_model(net, mode, noise_model_kind, image_side=256)
    cfg = model.config
    patches = MaskedPatches(data.train, (net["patch"], net["patch"]), net["batch"], steps + warmup,
                            cfg.n2v_perc_pix, cfg.n2v_neighborhood_radius, seed=0)
    batches = [patches[i] for i in range(steps + warmup)]
    training = model._training_model
    training.compile(optimizer="adam", loss=model._loss())
    for x, y in batches[:warmup]:
        training.train_on_batch(x, y)
    start = time.perf_counter()
    for x, y in batches[warmup:]:
        training.train_on_batch(x, y)
    seconds = time.perf_counter() - start
    return {"patches_per_s": steps * net["batch"] / seconds, "s_per_step": seconds / steps, "steps": steps}


def measure_prediction(net, estimator, size, noise_model_kind, repeats):
    """Median seconds of ``predict`` (automatic tiling) on a size x size image after one warm-up
    (``repeats=0``: the seconds of that first call, tracing and compiling included)."""
    from pn2v_tf.nets import count_forward_flops_per_pixel

    model, data = build_model(net, "pn2v", noise_model_kind, image_side=min(size, 512))
    reps = -(-size // data.test.shape[0])
    image = np.tile(data.test, (reps, reps))[:size, :size]
    start = time.perf_counter()
    model.predict(image, estimator=estimator)  # trace and compile
    times = [time.perf_counter() - start] if repeats == 0 else []  # --repeats 0: the first call only
    for _ in range(repeats):
        start = time.perf_counter()
        model.predict(image, estimator=estimator)
        times.append(time.perf_counter() - start)
    seconds = float(np.median(times))
    flops = count_forward_flops_per_pixel(model.config) * size * size
    return {"s": seconds, "mpix_per_s": size * size / seconds / 1e6, "forward_gflop": flops / 1e9,
            "forward_gflop_per_s": flops / seconds / 1e9, "repeats": repeats}


def measure_engine(net, size, noise_model_kind, rounds):
    """In one process, ``rounds`` alternating rounds (forward order in even rounds, reversed in odd
    ones) of: the forward pass of the same network with one output (N2V's; a ``tf.function`` of the
    Keras model on the whole image), ``predict`` prior mean, ``predict`` MMSE, and the exported
    SavedModel's ``serving_default`` (MMSE, loaded with ``tf.saved_model.load``), exported by default
    and with ``jit_compile=True``, on one size x size image after one warm-up call each. Ratios are
    per round (median and range)."""
    import tensorflow as tf

    model, data = build_model(net, "pn2v", noise_model_kind, image_side=min(size, 512))
    n2v, _ = build_model(net, "n2v", None, image_side=min(size, 512))
    reps = -(-size // data.test.shape[0])
    image = np.tile(data.test, (reps, reps))[:size, :size].astype(np.float32)
    x = tf.constant(image[np.newaxis, ..., np.newaxis])
    forward = tf.function(lambda t: n2v.keras_model(t, training=False),
                          input_signature=[tf.TensorSpec((None, None, None, 1), tf.float32)])
    with tempfile.TemporaryDirectory() as tmp:
        model.export_SavedModel(os.path.join(tmp, "saved_model"))
        model.export_SavedModel(os.path.join(tmp, "saved_model_xla"), jit_compile=True)
        serve = tf.saved_model.load(os.path.join(tmp, "saved_model")).signatures["serving_default"]
        serve_xla = tf.saved_model.load(os.path.join(tmp, "saved_model_xla")).signatures["serving_default"]
        calls = {"forward_n2v": lambda: forward(x).numpy(),
                 "prior_mean": lambda: model.predict(image, estimator="prior_mean"),
                 "mmse": lambda: model.predict(image),
                 "saved_model_mmse": lambda: serve(input=x)["output"].numpy()[0, ..., 0],
                 "saved_model_xla_mmse": lambda: serve_xla(input=x)["output"].numpy()[0, ..., 0]}
        outputs = {name: call() for name, call in calls.items()}  # warm-up: trace and compile
        times = {name: [] for name in calls}
        for round_index in range(rounds):
            for name in (list(calls) if round_index % 2 == 0 else list(reversed(calls))):
                start = time.perf_counter()
                calls[name]()
                times[name].append(time.perf_counter() - start)
    per_round = {"mmse_over_prior_mean": np.divide(times["mmse"], times["prior_mean"]),
                 "prior_mean_over_forward_n2v": np.divide(times["prior_mean"], times["forward_n2v"]),
                 "saved_model_over_predict": np.divide(times["saved_model_mmse"], times["mmse"]),
                 "saved_model_xla_over_predict": np.divide(times["saved_model_xla_mmse"], times["mmse"])}
    difference = max(np.abs(outputs[name] - outputs["mmse"]).max() / np.abs(outputs["mmse"]).max()
                     for name in ("saved_model_mmse", "saved_model_xla_mmse"))
    return {"size": size, "rounds": rounds, "s": {name: float(np.median(t)) for name, t in times.items()},
            "s_all": times, "ratios": {name: [float(np.median(r)), float(r.min()), float(r.max())]
                                       for name, r in per_round.items()},
            "saved_model_max_relative_difference": float(difference)}


TO_TENSOR_SHIM = """import numpy as np, torch
def to_tensor(pic):
    array = np.asarray(pic)
    array = array[:, :, None] if array.ndim == 2 else array
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))).float()
"""


def _torchvision_shim(folder):
    """A ``torchvision`` with only ``transforms.functional.to_tensor`` (all the original PN2V imports
    it for), for machines where the real one cannot be installed beside a CPU build of PyTorch."""
    package = os.path.join(folder, "torchvision", "transforms")
    os.makedirs(package)
    open(os.path.join(folder, "torchvision", "__init__.py"), "w").write("from . import transforms\n")
    open(os.path.join(package, "__init__.py"), "w").write("from . import functional\n")
    open(os.path.join(package, "functional.py"), "w").write(TO_TENSOR_SHIM)


def measure_original(path, patch=96):
    """The original PyTorch PN2V timed by ``time_original.py`` (its JSON plus the torch version and
    whether torchvision was replaced by :func:`_torchvision_shim`), or None where it cannot run."""
    script = os.path.join(path, "time_original.py")
    if not os.path.exists(script):
        return None
    try:
        import torch
    except ImportError:
        print("  PyTorch is not installed: the original PN2V is not timed", file=sys.stderr)
        return None
    print("  running the original PyTorch PN2V ...", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ)
        shimmed = subprocess.run([sys.executable, "-c", "import torchvision"], capture_output=True).returncode != 0
        if shimmed:
            _torchvision_shim(tmp)
            env["PYTHONPATH"] = os.pathsep.join([tmp, env.get("PYTHONPATH", "")])
        out = subprocess.run([sys.executable, script, path, str(patch)], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        print(f"  the original PN2V failed:\n{out.stderr[-2000:]}", file=sys.stderr)
        return None
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return {**result, "torch": torch.__version__, "torchvision_shim": shimmed}


def measure_matmul(n=2048, repeats=10):
    """Practical float32 peak: best time of an n x n matmul, 2 n^3 / t."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    a = tf.constant(rng.standard_normal((n, n), dtype=np.float32))
    b = tf.constant(rng.standard_normal((n, n), dtype=np.float32))
    tf.linalg.matmul(a, b).numpy()
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        tf.linalg.matmul(a, b).numpy()
        best = min(best, time.perf_counter() - start)
    return {"n": n, "s": best, "gflop_per_s": 2.0 * n ** 3 / best / 1e9}


def run_one(args):
    """Body of a child process: one measurement, its result and peak RSS as JSON."""
    kind, *rest = args.only.split(":")
    if kind == "train3d":
        result = measure_training_alternating(network_config(args, rest[0]), args.noise_model, args.steps_3d,
                                              args.rounds)
    elif kind == "train":
        config_name, mode = rest
        result = measure_training(network_config(args, config_name), mode, args.noise_model, args.steps)
    elif kind == "predict":
        size, estimator = rest
        result = measure_prediction(network_config(args, "paper"), estimator, int(size), args.noise_model,
                                    args.repeats)
    elif kind == "engine":
        result = measure_engine(network_config(args, "paper"), int(rest[0]), args.noise_model, args.engine_rounds)
    elif kind == "matmul":
        result = measure_matmul()
    else:
        raise SystemExit(f"unknown measurement {args.only!r}")
    result["peak_rss_mb"] = peak_rss_mb()
    with open(args.result, "w") as f:
        json.dump(result, f)


def child(args, only, allocator="default"):
    """Run one measurement in a fresh interpreter and read back its JSON."""
    env = dict(os.environ)
    for key in TUNED_ALLOCATOR_ENV:
        env.pop(key, None)
    if allocator == "tuned":
        env.update(TUNED_ALLOCATOR_ENV)
    if args.onednn != "default":
        env[ONEDNN_ENV] = "1" if args.onednn == "on" else "0"
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "result.json")
        cmd = [sys.executable, os.path.abspath(__file__), "--only", only, "--result", path,
               "--steps", str(args.steps), "--repeats", str(args.repeats), "--noise-model", args.noise_model,
               "--n-depth", str(args.n_depth), "--n-first", str(args.n_first), "--n-samples", str(args.n_samples),
               "--patch", str(args.patch), "--batch", str(args.batch), "--perc-pix", str(args.perc_pix),
               "--steps-3d", str(args.steps_3d), "--rounds", str(args.rounds), "--batch-3d", str(args.batch_3d),
               "--n-first-3d", str(args.n_first_3d), "--engine-rounds", str(args.engine_rounds)]
        print(f"  running {only} ({allocator} allocator) ...", file=sys.stderr, flush=True)
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
        with open(path) as f:
            return json.load(f)


def machine_info():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import tensorflow as tf
    return {"cpu": cpu, "cores": os.cpu_count(), "tensorflow": tf.__version__, "python": platform.python_version()}


def run_all(args):
    results = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "command": "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__)] + sys.argv[1:]),
               "machine": machine_info(), "noise_model": args.noise_model,
               "onednn": os.environ.get(ONEDNN_ENV, "unset") if args.onednn == "default" else args.onednn,
               "configs": {name: network_config(args, name) for name in args.configs},
               "train": {}, "train3d": {}, "predict": {}}
    for name in args.configs:
        if name in THREE_D_CONFIGS:
            results["train3d"][name] = child(args, f"train3d:{name}")
            continue
        runs = {mode: child(args, f"train:{name}:{mode}") for mode in ("pn2v", "n2v")}
        runs["ratio_pn2v_over_n2v"] = runs["pn2v"]["patches_per_s"] / runs["n2v"]["patches_per_s"]
        results["train"][name] = runs
    allocators = ("default", "tuned") if args.allocator == "both" else (args.allocator,)
    for allocator in allocators if args.sizes else ():  # --sizes with no value: no prediction (nor matmul)
        per_size = {}
        for size in args.sizes:
            runs = {est: child(args, f"predict:{size}:{est}", allocator) for est in args.estimators}
            if len(runs) == 2:
                runs["ratio_mmse_over_prior_mean"] = runs["mmse"]["s"] / runs["prior_mean"]["s"]
            per_size[str(size)] = runs
        results["predict"][allocator] = per_size
    if results["predict"]:
        results["matmul"] = child(args, "matmul")
    results["engine"] = {str(size): child(args, f"engine:{size}") for size in args.engine_sizes}
    if args.engine_sizes and args.original != "none":
        original = measure_original(args.original)
        if original is not None:
            results["original"] = original
    return results


def format_markdown(results):
    """The results as a markdown section: heading (date, command, machine), tables, targets."""
    m = results["machine"]
    lines = [f"## {results['date']}", "",
             f"Command: `{results['command']}`", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, TensorFlow {m['tensorflow']}; "
             f"{results['noise_model']} noise model; untrained networks"
             + (f"; {ONEDNN_ENV} {results['onednn']}" if "onednn" in results else ""), ""]
    if results["train"]:
        lines += ["| training | network | patches/s | s/step | peak RSS MB | PN2V/N2V |",
                  "|---|---|---|---|---|---|"]
        for name, runs in results["train"].items():
            c = results["configs"][name]
            net = (f"{name}: depth {c['n_depth']}, {c['n_first']} feat., K={c['n_samples']}, "
                   f"{c['patch']}x{c['patch']}, batch {c['batch']}, {c['perc_pix']:g}% masked")
            for mode in ("pn2v", "n2v"):
                r = runs[mode]
                ratio = f"{runs['ratio_pn2v_over_n2v']:.2f}" if mode == "pn2v" else ""
                lines.append(f"| {mode.upper()} | {net} | {r['patches_per_s']:.2f} | {r['s_per_step']:.3f} | "
                             f"{r['peak_rss_mb']:.0f} | {ratio} |")
        lines += ["", f"Target: {TARGETS['train']}.", ""]
    if results.get("train3d"):
        lines += ["| training, 3-D (alternated in one process) | network | steps/s | patches/s | Mvoxel/s | s/step | "
                  "peak RSS MB | PN2V/N2V (range over rounds) |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, r in results["train3d"].items():
            c = results["configs"][name]
            net = (f"{name}: depth {c['n_depth']}, {c['n_first']} feat., K={c['n_samples']}, "
                   f"{'x'.join(str(n) for n in c['patch'])}, pool {'x'.join(str(n) for n in c['pool'])}, "
                   f"batch {c['batch']}, {c['perc_pix']:g}% masked")
            for mode in ("pn2v", "n2v"):
                m = r[mode]
                ratio = (f"{r['ratio_pn2v_over_n2v']:.2f} ({r['ratio_range'][0]:.2f}..{r['ratio_range'][1]:.2f})"
                         if mode == "pn2v" else "")
                lines.append(f"| {mode.upper()} | {net} | {m['steps_per_s']:.3f} | {m['patches_per_s']:.2f} | "
                             f"{m['voxels_per_s'] / 1e6:.3f} | {m['s_per_step']:.3f} | {r['peak_rss_mb']:.0f} | {ratio} |")
        first = next(iter(results["train3d"].values()))
        onednn = {True: "on", False: "off", None: "unknown"}[first.get("onednn")]
        lines += ["", f"{first['rounds']} rounds of {first['steps']} steps per mode after 2 warm-up steps each; one "
                  f"process per network (peak RSS covers both models); oneDNN kernels {onednn}.", "",
                  f"Target: {TARGETS['train3d']}.", ""]
    if results["predict"]:
        peak = results["matmul"]["gflop_per_s"]
        lines += ["| prediction (paper network) | allocator | image | s | Mpixel/s | peak RSS MB | "
                  "MMSE/prior mean | forward GFLOP/s (% of peak) |",
                  "|---|---|---|---|---|---|---|---|"]
        for allocator, per_size in results["predict"].items():
            for size, runs in per_size.items():
                for est in ("prior_mean", "mmse"):
                    if est not in runs:
                        continue
                    r = runs[est]
                    both = "ratio_mmse_over_prior_mean" in runs
                    ratio = f"{runs['ratio_mmse_over_prior_mean']:.2f}" if both and est == "mmse" else ""
                    rate = (f"{r['forward_gflop_per_s']:.1f} ({100 * r['forward_gflop_per_s'] / peak:.0f}%)"
                            if est == "prior_mean" else "")
                    lines.append(f"| {est.replace('_', ' ')} | {allocator} | {size}x{size} | {r['s']:.2f} | "
                                 f"{r['mpix_per_s']:.3f} | {r['peak_rss_mb']:.0f} | {ratio} | {rate} |")
        mm = results["matmul"]
        lines += ["", f"Machine's practical peak: {peak:.1f} GFLOP/s (float32 tf.linalg.matmul, "
                  f"{mm['n']}x{mm['n']}, best of 10). The forward rate is the network's forward FLOPs "
                  "(count_forward_flops_per_pixel x pixels) over the prior-mean prediction time, which "
                  "the forward pass dominates. Tuned allocator: "
                  + " ".join(f"{k}={v}" for k, v in TUNED_ALLOCATOR_ENV.items()) + ".", "",
                  f"Target: {TARGETS['predict']}.", ""]
    if results.get("engine"):
        lines += ["| prediction engine (paper network), one process, alternated | image | N2V forward s | "
                  "prior mean s | MMSE s | SavedModel MMSE s | SavedModel (XLA) s | MMSE/prior mean | "
                  "prior mean/N2V forward | SavedModel/predict | SavedModel (XLA)/predict |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for size, r in results["engine"].items():
            t, q = r["s"], r["ratios"]
            ratio = {name: f"{v[0]:.2f} ({v[1]:.2f}..{v[2]:.2f})" for name, v in q.items()}
            lines.append(f"| medians of {r['rounds']} rounds | {size}x{size} | {t['forward_n2v']:.2f} | "
                         f"{t['prior_mean']:.2f} | {t['mmse']:.2f} | {t['saved_model_mmse']:.2f} | "
                         f"{t['saved_model_xla_mmse']:.2f} | {ratio['mmse_over_prior_mean']} | "
                         f"{ratio['prior_mean_over_forward_n2v']} | {ratio['saved_model_over_predict']} | "
                         f"{ratio['saved_model_xla_over_predict']} |")
        lines += ["", "Ratios: median over the rounds (range). SavedModel (XLA): exported with "
                  "`jit_compile=True`. Both SavedModels and predict differ by at most "
                  + ", ".join(f"{r['saved_model_max_relative_difference']:.1e}" for r in results["engine"].values())
                  + " (max |difference| / max |predict|).", "",
                  f"Target: {TARGETS['engine']}.", ""]
    if results.get("original"):
        o = results["original"]
        mmse = results["engine"].get("512", {}).get("s", {}).get("mmse")
        faster = f"; this package's MMSE (512x512, above) is {o['mmse_512_s'] / mmse:.1f}x faster" if mmse else ""
        lines += [f"Original PyTorch PN2V in the same run (`time_original.py`, torch "
                  f"{o.get('torch', 'installed')}{', torchvision replaced by to_tensor alone' if o.get('torchvision_shim') else ''}"
                  f"): 512x512 tiled MMSE {o['mmse_512_s']:.2f} s, training "
                  f"PN2V {o['pn2v_patches_per_s']:.2f} and N2V {o['n2v_patches_per_s']:.2f} patches/s "
                  f"({o['patch']}x{o['patch']}){faster}.", ""]
    else:
        lines += ["Original PyTorch PN2V: not measured (it runs in the same run when PyTorch is installed and "
                  "../shared/anchors/pn2v_original is there, unless --original none).", ""]
    return "\n".join(lines)


MARKDOWN_HEADER = """# Benchmarks

Speed and peak memory of pn2v_tf, appended by `python benchmarks/speed.py --append-markdown BENCHMARKS.md`
(one section per run, figures exactly as the script printed them). Each measurement runs in its own
process; peak RSS is that process's `ru_maxrss`, including Python, TensorFlow and the test data.

"""


def append_markdown(path, text):
    new = not os.path.exists(path)
    with open(path, "a") as f:
        if new:
            f.write(MARKDOWN_HEADER)
        f.write(text + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-depth", type=int, default=3, help="paper network")
    parser.add_argument("--n-first", type=int, default=64, help="paper network")
    parser.add_argument("--n-samples", type=int, default=800, help="paper network's K")
    parser.add_argument("--patch", type=int, default=96, help="paper training patch side (multiple of 2**(depth-1))")
    parser.add_argument("--batch", type=int, default=4, help="paper training batch")
    parser.add_argument("--perc-pix", type=float, default=3.125, help="3.125%% of 96x96 = 289 masked pixels")
    parser.add_argument("--configs", nargs="*", choices=("paper", "small", *THREE_D_CONFIGS),
                        default=["paper", "small", "3d"], help="training configurations (none: skip training)")
    parser.add_argument("--steps-3d", type=int, default=4, help="timed steps per mode and round of 3-D training")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of 3-D training")
    parser.add_argument("--batch-3d", type=int, default=4, help="3-D patches per step of configuration '3d'")
    parser.add_argument("--n-first-3d", type=int, default=32, help="first-level features of configuration '3d'")
    parser.add_argument("--onednn", choices=("default", "on", "off"), default="default",
                        help=f"{ONEDNN_ENV} of the measuring processes (default: as in this environment)")
    parser.add_argument("--sizes", nargs="*", type=int, default=[512, 2048],
                        help="sides of the predicted images (none: skip prediction)")
    parser.add_argument("--allocator", choices=("default", "tuned", "both"), default="both",
                        help="glibc malloc settings of the prediction processes")
    parser.add_argument("--estimators", nargs="+", choices=("prior_mean", "mmse"), default=["prior_mean", "mmse"],
                        help="estimators of the prediction rows (--sizes)")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps (after 3 warm-up steps)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed predictions (median; after one warm-up); 0: time the warm-up call itself")
    parser.add_argument("--noise-model", choices=("histogram", "gmm"), default="histogram",
                        help="PN2V's noise model, built from the synthetic calibration stack")
    parser.add_argument("--engine-sizes", nargs="*", type=int, default=[512],
                        help="image sides of the prediction-engine comparison (N2V forward, prior mean, MMSE, "
                             "SavedModel in one process); none: skip it and the original")
    parser.add_argument("--engine-rounds", type=int, default=5, help="alternating rounds of that comparison")
    parser.add_argument("--original", default=ORIGINAL_DEFAULT,
                        help="folder of the original PyTorch PN2V and time_original.py (default: "
                             "../shared/anchors/pn2v_original beside the project); 'none': do not time it")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--append-markdown", metavar="PATH", help="append the markdown section to this file")
    parser.add_argument("--only", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.only:
        run_one(args)
        return
    results = run_all(args)
    text = format_markdown(results)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    if args.append_markdown:
        append_markdown(args.append_markdown, text)


if __name__ == "__main__":
    main()
