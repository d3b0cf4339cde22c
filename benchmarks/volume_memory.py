"""Peak memory and time of denoising a large z-stack: MMSE against prior mean, K = 800.

Each estimator runs in its own fresh process (as in ``benchmarks/export_memory.py``), which
denoises one 64 x 512 x 512 stack with ``PN2V.predict`` and its default tiling (``n_tiles=None``:
tiles so that tile voxels x the network's first-level features stay at or below
``DEFAULT_MAX_TILE_ELEMENTS`` as far as the tiles' context lets them shrink; the K samples exist for one
chunk of voxels at a time) and reports its peak resident memory (``ru_maxrss`` and ``VmHWM`` of
``/proc/self/status``; also the resident memory just before ``predict``, after TensorFlow, the model and
the stack are loaded) and the time of the ``predict`` call (the first call: it includes tracing the
network for each tile shape and compiling the estimator with XLA).

The network is an untrained 3-D U-Net (depth 3, 32 features, pooling 1x2x2, K = 800): memory and
time do not depend on the weights. The stack is the synthetic test stack of
``make_synthetic_volumes`` (64 x 128 x 128) tiled 4 x 4 in Y and X; the histogram noise model
(256 bins) comes from its calibration frames, which cover 0 to 1.2 times the brightest voxel's photons.

The script also prints the tiling (tiles, context, voxels computed per voxel of the stack) and, with
``--breakdown``, how the peak grows with the network body on one tile and with the chunked head and MMSE.

    python benchmarks/volume_memory.py                                # both estimators, the whole stack
    python benchmarks/volume_memory.py --max-tiles 40                 # stop each after 40 tiles
    python benchmarks/volume_memory.py --onednn on --json /tmp/volume_memory.json
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

ESTIMATORS = ("prior_mean", "mmse")
LIMIT_MB = 2048


class _Enough(Exception):
    """Raised by the progress callback to stop a prediction after ``--max-tiles`` tiles."""


def proc_status_mb(field):
    """``VmHWM`` or ``VmRSS`` of this process in MB (None where /proc is missing)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def build_model(args, stack):
    from pn2v_tf import PN2V, PN2VConfig
    from pn2v_tf.noise_models import load_noise_model

    noise_model = load_noise_model(args.noise_model_file)
    config = PN2VConfig(None, mode="pn2v", axes="ZYX", unet_pool=tuple(args.pool), unet_n_depth=args.n_depth,
                        unet_n_first=args.n_first, n_samples=args.n_samples, means=[float(np.mean(stack))],
                        stds=[float(np.std(stack))], n2v_patch_shape=(16, 64, 64), seed=0)
    return PN2V(config, "volume_memory", basedir=None, noise_model=noise_model)


def tiling(config, shape, n_tiles=None):
    """The tiling ``predict`` uses, from CSBDeep's tile iterator (which may cut more tiles than asked
    for): n_tiles asked for, tiles cut, context per axis, the largest tile and its kept part, and the
    voxels the network computes per voxel of the stack."""
    import warnings

    from csbdeep.internals.predict import tile_iterator

    from pn2v_tf.inference import DEFAULT_MAX_TILE_ELEMENTS, auto_n_tiles, tile_context
    from pn2v_tf.nets import network_geometry

    block, radius = network_geometry(config)
    context = tile_context(radius, block)
    n_tiles = tuple(n_tiles) if n_tiles else auto_n_tiles(shape, config.unet_n_first, DEFAULT_MAX_TILE_ELEMENTS, context)
    padded = tuple(s + (-s) % b for s, b in zip(shape, block))
    if all(n == 1 for n in n_tiles):
        tiles = [(padded, padded)]
    else:
        dummy = np.broadcast_to(np.float32(0), padded)  # no memory: the iterator only slices it
        overlaps = tuple(c // b for c, b in zip(context, block))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="invalid value .* for 'n_tiles'")
            tiles = [(tile.shape, tuple(c.indices(n)[1] - c.indices(n)[0] for c, n in zip(crop, tile.shape)))
                     for tile, crop, _ in tile_iterator(dummy, n_tiles=n_tiles, block_sizes=block,
                                                        n_block_overlaps=overlaps)]
    largest, kept = max(tiles, key=lambda t: np.prod(t[0]))
    return {"n_tiles": list(n_tiles), "context": list(context), "tile": list(largest), "kept": list(kept),
            "total_tiles": len(tiles), "max_tile_elements": DEFAULT_MAX_TILE_ELEMENTS,
            "computed_per_voxel": float(sum(np.prod(t) for t, _ in tiles) / np.prod(shape))}


def run_one(args):
    """Body of a child process: one estimator on the stack, peak memory and time as JSON."""
    stack = np.load(args.stack_file)
    model = build_model(args, stack)
    before = {"rss_before_predict_mb": proc_status_mb("VmRSS"), "hwm_before_predict_mb": proc_status_mb("VmHWM")}
    info = tiling(model.config, stack.shape, args.n_tiles)
    done, tile_times = 0, []
    last = [time.perf_counter()]

    reported_total = []

    def progress(n_done, total):
        nonlocal done
        reported_total[:] = [total]
        now = time.perf_counter()
        tile_times.append(now - last[0])
        last[0] = now
        done = n_done
        if args.max_tiles and args.max_tiles <= n_done < info["total_tiles"]:
            raise _Enough

    start = time.perf_counter()
    finished = True
    try:
        out = model.predict(stack, axes="ZYX", estimator=args.only, progress=progress,
                            n_tiles=tuple(args.n_tiles) if args.n_tiles else None)
    except _Enough:
        finished, out = False, None
    seconds = time.perf_counter() - start
    result = {"estimator": args.only, "seconds": seconds, "tiles_done": done, "finished": finished, **info, **before,
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
              "vm_hwm_mb": proc_status_mb("VmHWM"), "onednn": _onednn_enabled(),
              "progress_total": reported_total[0] if reported_total else None,
              "first_tile_s": tile_times[0] if tile_times else None,
              "median_tile_s": float(np.median(tile_times[1:])) if len(tile_times) > 1 else None}
    if finished:
        result["output_finite"] = bool(np.all(np.isfinite(out)))
        result["output_shape"] = list(out.shape)
    else:  # the rest of the tiles at the median pace of those done after the first
        result["extrapolated_seconds"] = seconds + (info["total_tiles"] - done) * result["median_tile_s"]
    with open(args.result, "w") as f:
        json.dump(result, f)


def run_breakdown(args):
    """Body of a child process: where one tile's memory goes. The network body on the largest tile of
    the default tiling, then head and MMSE of its kept part in chunks, as ``predict`` runs them (the
    model's ``PredictionEngine``); the growth of the peak resident memory after each."""
    import tensorflow as tf

    stack = np.load(args.stack_file)
    model = build_model(args, stack)
    info = tiling(model.config, stack.shape, args.n_tiles)
    tile = np.ascontiguousarray(stack[tuple(slice(0, min(t, s)) for t, s in zip(info["tile"], stack.shape))])
    engine = model.engine
    steps = {"before": proc_status_mb("VmHWM")}
    features = engine.features(tf.constant(tile[np.newaxis, ..., np.newaxis]), training=False)
    steps["network body (features of the tile)"] = proc_status_mb("VmHWM")
    start = [(t - k) // 2 for t, k in zip(tile.shape, info["kept"])]
    size = tuple(min(k, t) for k, t in zip(info["kept"], tile.shape))
    out = engine(tile, crop=tuple(slice(a, a + n) for a, n in zip(start, size)))
    steps["head and MMSE of the kept part, in chunks"] = proc_status_mb("VmHWM")
    result = {"tile": list(tile.shape), "kept": list(size), "features_shape": list(features.shape),
              "features_mb": int(np.prod(features.shape)) * 4 / 2 ** 20, "output_shape": list(out.shape),
              "chunk_samples_mb": engine.chunk_pixels * engine.n_outputs * 4 / 2 ** 20,
              "vm_hwm_mb": steps, "onednn": _onednn_enabled()}
    with open(args.result, "w") as f:
        json.dump(result, f)


def run_timing(args):
    """Body of a child process: MMSE against prior mean time, alternated in this one process (so that
    load from other processes affects both alike): ``--ratio-rounds`` rounds, each predicting the first
    ``--ratio-tiles`` tiles with each estimator (prior mean first in rounds 1, 3, ...), after a round
    that traces and compiles both."""
    stack = np.load(args.stack_file)
    model = build_model(args, stack)
    info = tiling(model.config, stack.shape, args.n_tiles)
    n_tiles = tuple(args.n_tiles) if args.n_tiles else None

    def stop(n_done, total):
        if n_done >= args.ratio_tiles:
            raise _Enough

    seconds = {est: [] for est in ESTIMATORS}
    for round_index in range(args.ratio_rounds + 1):
        order = ESTIMATORS if round_index % 2 == 1 else ESTIMATORS[::-1]
        for est in order:
            start = time.perf_counter()
            try:
                model.predict(stack, axes="ZYX", estimator=est, progress=stop, n_tiles=n_tiles)
            except _Enough:
                pass
            if round_index > 0:  # round 0 traces the network and compiles the estimators
                seconds[est].append(time.perf_counter() - start)
    per_round = [m / p for m, p in zip(seconds["mmse"], seconds["prior_mean"])]
    result = {"rounds": args.ratio_rounds, "tiles": min(args.ratio_tiles, info["total_tiles"]), "seconds": seconds,
              "ratio_mmse_over_prior_mean": float(np.sum(seconds["mmse"]) / np.sum(seconds["prior_mean"])),
              "ratio_range": [float(min(per_round)), float(max(per_round))], "onednn": _onednn_enabled(), **info}
    with open(args.result, "w") as f:
        json.dump(result, f)


def _onednn_enabled():
    try:
        from tensorflow.python.util import _pywrap_util_port
        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        return None


def make_inputs(args, folder):
    """The stack (.npy) and the histogram noise model (.npz) the children load."""
    from pn2v_tf.datasets import make_synthetic_volumes
    from pn2v_tf.noise_models import HistogramNoiseModel

    depth, height, width = args.shape
    data = make_synthetic_volumes(seed=0, shape=(depth, 128, 128), n_train=1)
    reps = (1, -(-height // 128), -(-width // 128))
    stack = np.ascontiguousarray(np.tile(data.test, reps)[:depth, :height, :width], dtype=np.float32)
    stack_file = os.path.join(folder, "stack.npy")
    np.save(stack_file, stack)
    noise_model = HistogramNoiseModel.from_calibration_stack(data.calibration, bins=256)
    noise_model_file = os.path.join(folder, "noise_model.npz")
    noise_model.save(noise_model_file)
    return stack_file, noise_model_file, noise_model


def child(args, estimator, stack_file, noise_model_file, folder):
    """Run one measurement (an estimator, or "breakdown") in a fresh interpreter; its JSON."""
    env = dict(os.environ)
    if args.onednn != "default":
        env["TF_ENABLE_ONEDNN_OPTS"] = "1" if args.onednn == "on" else "0"
    result = os.path.join(folder, f"{estimator}.json")
    cmd = [sys.executable, os.path.abspath(__file__), "--only", estimator, "--result", result,
           "--stack-file", stack_file, "--noise-model-file", noise_model_file,
           "--n-depth", str(args.n_depth), "--n-first", str(args.n_first), "--n-samples", str(args.n_samples),
           "--pool", *map(str, args.pool), "--max-tiles", str(args.max_tiles),
           "--ratio-rounds", str(args.ratio_rounds), "--ratio-tiles", str(args.ratio_tiles)]
    if args.n_tiles:
        cmd += ["--n-tiles", *map(str, args.n_tiles)]
    print(f"  running {estimator} ...", file=sys.stderr, flush=True)
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    with open(result) as f:
        return json.load(f)


def tensor_sizes_mb(args, info):
    """Float32 tensors that grow with the tile (MB), and the K samples that chunking never creates."""
    from pn2v_tf.engine import DEFAULT_CHUNK_ELEMENTS

    tile, kept = np.prod(info["tile"]), np.prod(info["kept"])
    return {"first-level features of one tile (tile voxels x n_first)": tile * args.n_first * 4 / 2 ** 20,
            "K samples of one chunk (what the engine holds)": DEFAULT_CHUNK_ELEMENTS * 4 / 2 ** 20,
            "K samples of the kept part of a tile (never created)": kept * args.n_samples * 4 / 2 ** 20,
            "the stack, and the result (each)": np.prod(args.shape) * 4 / 2 ** 20,
            "untiled samples (stack voxels x K)": np.prod(args.shape) * args.n_samples * 4 / 2 ** 20}


def format_report(args, results, sizes):
    info = next(iter(results.values()))
    lines = [f"stack {'x'.join(map(str, args.shape))} (ZYX), untrained 3-D U-Net depth {args.n_depth}, {args.n_first} "
             f"features, pooling {'x'.join(map(str, args.pool))}, K = {args.n_samples}; oneDNN "
             f"{ {True: 'on', False: 'off', None: 'unknown'}[info['onednn']] }",
             f"tiling: n_tiles {info['n_tiles']} asked for, {info['total_tiles']} tiles cut, context {info['context']}, tile "
             f"{info['tile']} = {np.prod(info['tile'])} voxels (x {args.n_first} features = "
             f"{np.prod(info['tile']) * args.n_first:.3g} elements; bound {info['max_tile_elements']:.3g}), its kept part "
             f"{info['kept']}; the network computes "
             f"{info['computed_per_voxel']:.1f} voxels per voxel of the stack", "",
             "| estimator | tiles | s | peak RSS MB (ru_maxrss) | VmHWM MB | RSS before predict MB | "
             f"under {LIMIT_MB} MB | MMSE/prior mean time |", "|---|---|---|---|---|---|---|---|"]
    for est, r in results.items():
        seconds = r["seconds"] if r["finished"] else r["extrapolated_seconds"]
        shown = f"{seconds:.1f}" if r["finished"] else f"{seconds:.0f} (extrapolated from {r['seconds']:.1f})"
        ratio = ""
        if est == "mmse" and "prior_mean" in results:
            p = results["prior_mean"]
            ratio = f"{seconds / (p['seconds'] if p['finished'] else p['extrapolated_seconds']):.2f}"
        lines.append(f"| {est.replace('_', ' ')} | {r['tiles_done']}/{r['total_tiles']} | {shown} | "
                     f"{r['peak_rss_mb']:.0f} | {r['vm_hwm_mb']:.0f} | {r['rss_before_predict_mb']:.0f} | "
                     f"{'yes' if r['peak_rss_mb'] < LIMIT_MB else 'NO'} | {ratio} |")
    lines += ["", "tensors that grow with the tile (float32):"]
    lines += [f"  {name}: {mb:.0f} MB" for name, mb in sizes.items()]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=[64, 512, 512], metavar=("Z", "Y", "X"))
    parser.add_argument("--n-depth", type=int, default=3)
    parser.add_argument("--n-first", type=int, default=32)
    parser.add_argument("--n-samples", type=int, default=800)
    parser.add_argument("--pool", type=int, nargs=3, default=[1, 2, 2], metavar=("Z", "Y", "X"))
    parser.add_argument("--estimators", nargs="*", choices=ESTIMATORS, default=list(ESTIMATORS),
                        help="estimators whose peak memory and time are measured, each in its own process "
                             "(none: skip)")
    parser.add_argument("--max-tiles", type=int, default=0,
                        help="stop each prediction after this many tiles and extrapolate its time (0: all tiles)")
    parser.add_argument("--n-tiles", type=int, nargs=3, metavar=("Z", "Y", "X"),
                        help="tiles per axis instead of predict's default")
    parser.add_argument("--onednn", choices=("default", "on", "off"), default="default",
                        help="TF_ENABLE_ONEDNN_OPTS of the measuring processes (default: as in this environment)")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--breakdown", action="store_true",
                        help="also measure, in another process, the memory of the network on one largest tile "
                             "and of the MMSE on its kept part")
    parser.add_argument("--ratio-rounds", type=int, default=3,
                        help="rounds of the MMSE/prior mean time ratio, measured alternately in one more process "
                             "(0: skip)")
    parser.add_argument("--ratio-tiles", type=int, default=20, help="tiles per estimator and round of the ratio")
    parser.add_argument("--only", choices=ESTIMATORS + ("breakdown", "timing"), help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--stack-file", help=argparse.SUPPRESS)
    parser.add_argument("--noise-model-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.only == "breakdown":
        run_breakdown(args)
        return
    if args.only == "timing":
        run_timing(args)
        return
    if args.only:
        run_one(args)
        return
    with tempfile.TemporaryDirectory() as folder:
        stack_file, noise_model_file, _ = make_inputs(args, folder)
        results = {est: child(args, est, stack_file, noise_model_file, folder) for est in args.estimators}
        breakdown = child(args, "breakdown", stack_file, noise_model_file, folder) if args.breakdown else None
        timing = child(args, "timing", stack_file, noise_model_file, folder) if args.ratio_rounds > 0 else None
    first = next(iter(results.values()), None) or breakdown or timing
    if first is None:
        return
    sizes = tensor_sizes_mb(args, first)
    if results:
        print(format_report(args, results, sizes))
    if timing is not None:
        pm, mm = (float(np.sum(timing["seconds"][e])) for e in ESTIMATORS)
        print(f"\nMMSE/prior mean time, alternated in one process: {timing['ratio_mmse_over_prior_mean']:.2f} "
              f"(range over rounds {timing['ratio_range'][0]:.2f}..{timing['ratio_range'][1]:.2f}; "
              f"{timing['rounds']} rounds of the first {timing['tiles']} of {timing['total_tiles']} tiles: prior "
              f"mean {pm:.1f} s, MMSE {mm:.1f} s in all; oneDNN "
              f"{ {True: 'on', False: 'off', None: 'unknown'}[timing['onednn']] })")
    if breakdown is not None:
        hwm = breakdown["vm_hwm_mb"]
        print(f"\nbreakdown (one process; tile {breakdown['tile']}, features {breakdown['features_shape']} = "
              f"{breakdown['features_mb']:.0f} MB, kept part {breakdown['kept']}, K samples of one chunk "
              f"{breakdown['chunk_samples_mb']:.0f} MB): VmHWM before {hwm['before']:.0f} MB")
        previous = hwm["before"]
        for step, value in list(hwm.items())[1:]:
            print(f"  after {step}: {value:.0f} MB (+{value - previous:.0f})")
            previous = value
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results, "breakdown": breakdown, "timing": timing,
                       "tensor_sizes_mb": sizes}, f, indent=2)


if __name__ == "__main__":
    main()
