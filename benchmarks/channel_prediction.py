"""Prediction cost of multichannel PN2V against single-channel PN2V on the same network.

In one process, alternating rounds (forward order in even rounds, reversed in odd ones) of, for
C = 1 and C = ``--channels``: the forward pass of the N2V network of C channels (one output per
channel; a ``tf.function`` of the Keras model on the whole image), ``predict``'s prior mean and
``predict``'s MMSE, each on one size x size image of C channels (a histogram noise model per
channel), after one warm-up call each. Ratios are per round (median and range).

The network is untrained: speed does not depend on the weights. Only the K-sample head (64 -> C x K)
and the estimator grow with C; the U-Net body is shared by the channels.

    python benchmarks/channel_prediction.py                       # paper network, K = 800, 512 x 512, C = 3
    python benchmarks/channel_prediction.py --size 256 --rounds 2 --n-first 16 --json /tmp/channels.json
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def channel_data(n_channels, side, seed=0):
    """(clean, noisy image (side, side, C), one histogram noise model per channel): each channel is
    a synthetic fluorescence image of its own seed with its own calibration stack."""
    from pn2v_tf.datasets import make_synthetic_data
    from pn2v_tf.noise_models import HistogramNoiseModel

    images, models = [], []
    for channel in range(n_channels):
        data = make_synthetic_data(seed=seed + channel, shape=(side, side), n_train=1)
        images.append(data.test)
        models.append(HistogramNoiseModel.from_calibration_stack(data.calibration, bins=256))
    return np.stack(images, axis=-1).astype(np.float32), models


def build(n_channels, mode, args, image, models):
    from pn2v_tf import PN2V, PN2VConfig

    config = PN2VConfig(image[np.newaxis], axes="YXC", mode=mode, unet_n_depth=args.n_depth,
                        unet_n_first=args.n_first, n_samples=args.n_samples)
    noise_model = None if mode == "n2v" else (models if n_channels > 1 else models[0])
    return PN2V(config, f"{mode}_{n_channels}", basedir=None, noise_model=noise_model)


def measure(args):
    import tensorflow as tf

    image, models = channel_data(args.channels, args.size)
    calls = {}
    for n_channels in (1, args.channels):
        x = image[..., :n_channels]
        pn2v = build(n_channels, "pn2v", args, x, models[:n_channels])
        n2v = build(n_channels, "n2v", args, x, models[:n_channels])
        forward = tf.function(lambda t, net=n2v.keras_model: net(t, training=False),
                              input_signature=[tf.TensorSpec((None, None, None, n_channels), tf.float32)])
        tensor = tf.constant(x[np.newaxis])
        calls[f"forward_n2v_c{n_channels}"] = lambda f=forward, t=tensor: f(t).numpy()
        calls[f"prior_mean_c{n_channels}"] = lambda m=pn2v, i=x: m.predict(i, axes="YXC", estimator="prior_mean")
        calls[f"mmse_c{n_channels}"] = lambda m=pn2v, i=x: m.predict(i, axes="YXC")
    for call in calls.values():  # warm-up: trace and compile
        call()
    times = {name: [] for name in calls}
    for round_index in range(args.rounds):
        for name in (list(calls) if round_index % 2 == 0 else list(reversed(calls))):
            start = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - start)
    return times


def ratios(times, n_channels):
    """Per-round ratios (median, min, max) of the quantities the targets are about."""
    c = n_channels
    pairs = {"mmse_over_prior_mean_c1": ("mmse_c1", "prior_mean_c1"),
             f"mmse_over_prior_mean_c{c}": (f"mmse_c{c}", f"prior_mean_c{c}"),
             "prior_mean_over_forward_c1": ("prior_mean_c1", "forward_n2v_c1"),
             f"prior_mean_over_forward_c{c}": (f"prior_mean_c{c}", f"forward_n2v_c{c}"),
             f"mmse_c{c}_over_mmse_c1": (f"mmse_c{c}", "mmse_c1"),
             f"mmse_c{c}_over_c{c}_single_channel_mmses": (f"mmse_c{c}", "mmse_c1")}
    out = {}
    for name, (top, bottom) in pairs.items():
        r = np.divide(times[top], times[bottom])
        if name.endswith("single_channel_mmses"):
            r = r / c   # against C separate single-channel predictions
        out[name] = [float(np.median(r)), float(r.min()), float(r.max())]
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--channels", type=int, default=3, help="C of the multichannel model (default: 3)")
    parser.add_argument("--size", type=int, default=512, help="image side (default: 512)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default: 5)")
    parser.add_argument("--n-depth", type=int, default=3)
    parser.add_argument("--n-first", type=int, default=64)
    parser.add_argument("--n-samples", type=int, default=800)
    parser.add_argument("--json", help="write the times and ratios to this file")
    args = parser.parse_args(argv)
    if args.channels < 2:
        parser.error("--channels must be at least 2")
    times = measure(args)
    result = {"args": vars(args), "s": {name: float(np.median(t)) for name, t in times.items()},
              "s_all": times, "ratios": ratios(times, args.channels)}
    print(f"{args.size} x {args.size}, depth {args.n_depth}, {args.n_first} features, K = {args.n_samples}, "
          f"{args.rounds} rounds (median s):")
    for name, seconds in result["s"].items():
        print(f"  {name:<22} {seconds:8.3f} s")
    print("ratios per round (median [min, max]):")
    for name, (median, low, high) in result["ratios"].items():
        print(f"  {name:<42} {median:6.2f}  [{low:.2f}, {high:.2f}]")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
