"""Out-of-core prediction: peak memory of ``pn2v predict`` on zarr arrays of two sizes, and throughput
of the block-by-block path against in-memory ``predict`` and on a ``LocalCluster``.

The network is the paper's (depth 3, 64 features, K = 800), untrained (speed and memory do not
depend on the weights), with a 256-bin histogram noise model of synthetic Poisson calibration data;
the images are Poisson noise around a smooth synthetic signal within the noise model's range.

Memory (``--sizes``): for each side N, a float32 N x N zarr array (chunks 1024 x 1024) is written to a
temporary folder, and ``pn2v predict --model M in.zarr -o out/`` runs in its own process; its peak
resident memory is sampled every 0.2 s (psutil, the process and its children). While it runs, a line
every ``--report-every`` seconds gives the chunks written so far and the peak so far; with
``--max-minutes`` a run is stopped after that time and reported as partial (the peak over the part
that ran). The throughput part runs first.

Throughput (``--throughput N``): in one process, alternating ``--rounds`` times, ``model.predict`` of
an N x N image in memory and ``predict_to_zarr`` of the same image as a zarr array (chunks 1024 x
1024, the threaded scheduler); then ``predict_to_zarr`` on a ``LocalCluster`` of ``--cluster-workers``
processes with 1 thread each (started before the clock; two runs, the first with each worker's
loading of the model) against the threaded scheduler (one block in flight) in the same run, both with
blocks of ``--cluster-block-elements`` so that the image makes several blocks. Mpixel/s of each, and
the ratios.

    python benchmarks/large_data.py                                  # both parts, 2048 and 16384
    python benchmarks/large_data.py --sizes 2048 --throughput 0      # memory of the smaller only
    python benchmarks/large_data.py --sizes --throughput 1024 --rounds 1 --n-first 16   # quick check
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

CHUNK = 1024


def make_model(folder, args):
    """An untrained model with saved weights and a histogram noise model, in ``folder/large``."""
    from pn2v_tf import HistogramNoiseModel, PN2V, PN2VConfig

    rng = np.random.default_rng(0)
    signal = np.linspace(0, args.max_photons, 64 * 64, dtype=np.float32).reshape(1, 64, 64)
    calibration = rng.poisson(np.repeat(signal, 200, axis=0)).astype(np.float32)
    noise_model = HistogramNoiseModel.from_calibration_stack(calibration, bins=256)
    X = rng.poisson(np.full((2, 64, 64), args.max_photons / 2)).astype(np.float32)
    config = PN2VConfig(X, mode="pn2v", n_samples=args.n_samples, unet_n_depth=args.n_depth,
                        unet_n_first=args.n_first, n2v_patch_shape=(64, 64), train_tensorboard=False)
    model = PN2V(config, "large", basedir=str(folder), noise_model=noise_model)
    model.keras_model.save_weights(str(model.logdir / "weights_best.h5"))
    return model


def signal_rows(side, rows, start, max_photons):
    """Rows ``start:start+rows`` of a smooth synthetic signal of side ``side`` (photons)."""
    y = np.arange(start, start + rows, dtype=np.float32)[:, None]
    x = np.arange(side, dtype=np.float32)[None, :]
    wave = np.sin(y / 37.0) * np.cos(x / 53.0) + 0.5 * np.sin((x + y) / 211.0)
    return (0.15 + 0.7 * (wave + 1.5) / 3.0) * max_photons


def write_image(path, side, max_photons, seed=1):
    """A Poisson-noisy float32 side x side zarr array, written in bands of ``CHUNK`` rows."""
    import zarr

    rng = np.random.default_rng(seed)
    array = zarr.open_array(str(path), mode="w", shape=(side, side), chunks=(min(CHUNK, side),) * 2,
                            dtype="float32")
    for start in range(0, side, CHUNK):
        rows = min(CHUNK, side - start)
        array[start:start + rows] = rng.poisson(signal_rows(side, rows, start, max_photons)).astype(np.float32)
    return array


def chunk_files(path):
    """Chunks written so far under a zarr array's folder."""
    return sum(1 for p in Path(path).rglob("*") if p.is_file() and p.name not in ("zarr.json", ".zarray", ".zattrs"))


def measure_memory(model_folder, side, args, workdir):
    """Peak RSS (MB) of ``pn2v predict`` on a side x side zarr array, sampled while it runs."""
    import psutil

    source = workdir / f"in{side}.zarr"
    write_image(source, side, args.max_photons)
    out = workdir / f"out{side}"
    command = [sys.executable, "-c", "import sys; from pn2v_tf.cli import main; sys.exit(main())", "predict",
               "--model", str(model_folder), str(source), "-o",
               str(out), "--quiet", "--overwrite"]
    started = time.perf_counter()
    process = subprocess.Popen(command)
    watched = psutil.Process(process.pid)
    peak, last_report, partial = 0.0, started, False
    total_chunks = (-(-side // CHUNK)) ** 2
    while process.poll() is None:
        try:
            rss = watched.memory_info().rss + sum(c.memory_info().rss for c in watched.children(recursive=True))
            peak = max(peak, rss / 2 ** 20)
        except psutil.Error:
            pass
        now = time.perf_counter()
        if now - last_report >= args.report_every:
            last_report = now
            print(f"  {side}: {now - started:.0f} s, {chunk_files(out / source.name)}/{total_chunks} chunks, "
                  f"peak so far {peak:.0f} MB", flush=True)
        if args.max_minutes and now - started > 60 * args.max_minutes:
            process.kill()
            partial = True
            break
        time.sleep(0.2)
    seconds = time.perf_counter() - started
    process.wait()
    if not partial and process.returncode != 0:
        raise RuntimeError(f"pn2v predict failed with exit code {process.returncode}")
    done = chunk_files(out / source.name)
    result = dict(side=side, peak_rss_mb=round(peak, 1), seconds=round(seconds, 1), chunks_done=done,
                  chunks=total_chunks, partial=partial, mpixel_per_s=round(done * CHUNK ** 2 / 1e6 / seconds, 4)
                  if side >= CHUNK else None)
    print(json.dumps(result), flush=True)
    return result


def measure_throughput(model, side, args, workdir):
    from pn2v_tf.chunked import predict_to_zarr

    source = write_image(workdir / "tp.zarr", side, args.max_photons)
    image = source[:]
    megapixels = side * side / 1e6
    model.predict(image[:256, :256])  # traces and compiles outside the clock
    rows = []
    for round_index in range(args.rounds):
        timed = {}
        for path in (("memory", "zarr") if round_index % 2 == 0 else ("zarr", "memory")):
            started = time.perf_counter()
            if path == "memory":
                model.predict(image)
            else:
                predict_to_zarr(model, source, workdir / "tp_out.zarr", overwrite=True, check=False)
            timed[path] = time.perf_counter() - started
        rows.append(timed)
        print(f"  round {round_index + 1}: in memory {megapixels / timed['memory']:.4f} Mpixel/s, zarr "
              f"{megapixels / timed['zarr']:.4f} Mpixel/s, ratio {timed['memory'] / timed['zarr']:.3f}", flush=True)
    result = dict(side=side, rounds=rows, ratio_zarr_over_memory=[round(r["memory"] / r["zarr"], 3) for r in rows])
    if args.cluster_workers:
        result.update(measure_cluster(model, source, args, workdir, megapixels))
    print(json.dumps(result), flush=True)
    return result


def measure_cluster(model, source, args, workdir, megapixels):
    from distributed import Client, LocalCluster

    from pn2v_tf.chunked import predict_to_zarr

    blocks = dict(max_block_elements=args.cluster_block_elements)
    started = time.perf_counter()
    predict_to_zarr(model, source, workdir / "threads.zarr", overwrite=True, check=False, **blocks)
    threads = time.perf_counter() - started
    seconds = []
    with LocalCluster(n_workers=args.cluster_workers, threads_per_worker=1, dashboard_address=None,
                      silence_logs=40) as cluster, Client(cluster) as client:
        for run in ("first", "second"):  # the first includes each worker's loading of the model
            started = time.perf_counter()
            out = predict_to_zarr(model, source, workdir / "cluster.zarr", overwrite=True, check=False,
                                  scheduler=client, **blocks)
            seconds.append(time.perf_counter() - started)
    import zarr

    same = bool(np.array_equal(out[:], zarr.open_array(str(workdir / "threads.zarr"))[:]))
    print(f"  threads {megapixels / threads:.4f} Mpixel/s; LocalCluster {args.cluster_workers}x1 first run (model "
          f"loading included) {megapixels / seconds[0]:.4f}, second run {megapixels / seconds[1]:.4f} Mpixel/s "
          f"(ratios to threads {threads / seconds[0]:.3f}, {threads / seconds[1]:.3f}); identical: {same}", flush=True)
    return dict(threads_s=round(threads, 2), cluster_first_s=round(seconds[0], 2),
                cluster_second_s=round(seconds[1], 2),
                ratio_cluster_over_threads=[round(threads / s, 3) for s in seconds], cluster_identical=same)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="*", type=int, default=[2048, 16384], help="sides of the memory runs")
    parser.add_argument("--throughput", type=int, default=2048, help="side of the throughput image (0: skip)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cluster-workers", type=int, default=2, help="LocalCluster processes (0: skip)")
    parser.add_argument("--cluster-block-elements", type=int, default=2 ** 21,
                        help="block bound of the cluster comparison (both schedulers), so that the image makes "
                             "several blocks (2^21: 1024 x 1024 blocks)")
    parser.add_argument("--n-depth", type=int, default=3)
    parser.add_argument("--n-first", type=int, default=64)
    parser.add_argument("--n-samples", type=int, default=800)
    parser.add_argument("--max-photons", type=float, default=100.0)
    parser.add_argument("--report-every", type=float, default=120.0, help="seconds between progress lines")
    parser.add_argument("--max-minutes", type=float, default=None, help="stop a memory run after this long")
    parser.add_argument("--workdir", help="folder for the arrays (default: a temporary one, removed)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        model = make_model(workdir, args)
        print(f"network: depth {args.n_depth}, {args.n_first} features, K = {args.n_samples}; "
              f"{os.cpu_count()} CPUs", flush=True)
        results = {}
        if args.throughput:
            results["throughput"] = measure_throughput(model, args.throughput, args, workdir)
        results["memory"] = [measure_memory(model.logdir, side, args, workdir) for side in args.sizes]
        if len(results["memory"]) >= 2:
            low, high = results["memory"][0], results["memory"][-1]
            print(f"peak RSS {high['side']}^2 - {low['side']}^2: {high['peak_rss_mb'] - low['peak_rss_mb']:.0f} MB",
                  flush=True)
    return results


if __name__ == "__main__":
    main()
