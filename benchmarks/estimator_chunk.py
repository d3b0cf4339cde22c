"""The MMSE of one chunk of the prediction engine, timed alone: the histogram's lookup tables passed in
(as the engine does) against derived inside the XLA-compiled chunk, and the estimator's arithmetic
without any lookup as a floor.

A chunk is 2621 pixels x 800 samples (the engine's default bound); a tf.while_loop runs ``--chunks``
of them in one call, the median of ``--repeats`` calls is printed. Random 256-bin histogram and
samples; no network. Pin it to one core (``taskset -c 0``) for figures that do not depend on the
machine's load.

    taskset -c 0 python benchmarks/estimator_chunk.py
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from pn2v_tf.inference import mmse  # noqa: E402
from pn2v_tf.noise_models import HistogramNoiseModel  # noqa: E402

PIXELS, K = 2621, 800


def arithmetic_only(noise_model, observation, samples):
    """The MMSE's index arithmetic and sums with a weight computed from the index instead of looked up."""
    low, width, bins = noise_model.value_range[0], noise_model.bin_width, noise_model.bins
    samples = noise_model.clip_signal(samples)
    x_bin = tf.cast(tf.clip_by_value(tf.floor((observation - low) / width), 0, bins - 1), tf.int32)
    row = tf.clip_by_value(samples * np.float32(1 / width) - np.float32(low / width + 0.5), 0.0, bins - 1.0)
    row_below = tf.floor(row)
    index = tf.cast(x_bin * bins + tf.cast(row_below, tf.int32), tf.float32)
    weights = tf.maximum(index * 1e-5 + (row - row_below) * 1e-6, 1e-10)
    sums = tf.reduce_sum(tf.complex(weights * samples, weights), axis=-1, keepdims=True)
    return tf.math.real(sums) / tf.math.imag(sums)


def time_chunks(estimate, observation, samples, n_chunks, repeats):
    """Median seconds of one call that runs ``estimate`` (XLA) on ``n_chunks`` chunks in a loop."""
    compiled = tf.function(estimate, jit_compile=True, autograph=False)

    @tf.function
    def run():
        def body(index, total):
            shifted = observation + tf.cast(index, tf.float32) * 1e-3   # a new input every chunk
            return index + 1, total + compiled(shifted, samples)
        return tf.while_loop(lambda index, _: index < n_chunks, body, (tf.constant(0), tf.zeros((PIXELS, 1))))[1]

    run().numpy()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run().numpy()
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=100, help="chunks per call (100: 262,100 pixels)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    noise_model = HistogramNoiseModel.from_counts(rng.random((256, 256)) + 0.01, (0.0, 256.0))
    observation = tf.constant(rng.uniform(0, 256, (PIXELS, 1)).astype(np.float32))
    samples = tf.constant(rng.uniform(0, 256, (PIXELS, K)).astype(np.float32))
    tables = noise_model.weight_tables()
    variants = {
        "tables derived inside the chunk": lambda x, s: mmse(x, s, noise_model),
        "tables passed in (the engine)": lambda x, s: mmse(x, s, noise_model, tables),
        "arithmetic without lookups": lambda x, s: arithmetic_only(noise_model, x, s),
    }
    print(f"MMSE of {args.chunks} chunks of {PIXELS} pixels x {K} samples, XLA, median of {args.repeats} calls")
    print("\n| chunk | s |\n|---|---|")
    for name, estimate in variants.items():
        print(f"| {name} | {time_chunks(estimate, observation, samples, args.chunks, args.repeats):.3f} |", flush=True)


if __name__ == "__main__":
    main()
