"""Multichannel PN2V on synthetic 3-channel data: quality per channel at equal budget, and training cost.

Quality. On ``pn2v_tf.datasets.make_synthetic_multichannel`` data (nuclei, vesicles, filaments; each
channel with its own brightness, structures and camera, one histogram noise model per channel from
its calibration stack) the script trains, all with the same network and the same total budget of
``--steps`` x ``--batch`` patches:

- ``n2v``          (a) multichannel Noise2Void, one U-Net for all channels;
- ``n2v_single``   (a') multichannel Noise2Void with one U-Net per channel (n2v's default);
- ``pn2v``         (b) multichannel PN2V, one shared U-Net whose head predicts K samples per channel;
- ``pn2v_single``  (c) multichannel PN2V with ``single_net_per_channel=True`` (one U-Net per channel);
- ``pn2v_alone``   (d) one single-channel PN2V model per channel, each trained for ``--steps / C``
                   steps, so that the C models together see as many patches as the others;

and prints the PSNR of each channel of ``--n-test`` test images (each a field of view of its own,
data range of its ground truth), mean over the images, for the MMSE (and the prior mean of (b)).

Cost. Seconds per training step of a 3-channel PN2V against a 1-channel PN2V of the same network,
patch and batch (and of the 3-channel model with one U-Net per channel; ``--channels`` picks a subset of
the three channels for everything): in one process, untrained
networks, ``--timing-rounds`` rounds of ``--timing-steps`` ``train_on_batch`` calls of each on
pre-generated masked batches, the order of the models rotating from round to round so that load from
other processes on a shared machine affects all alike. The ratio is that of the summed times, with
its range over the rounds.

    python benchmarks/multichannel.py                                   # ~25 min on 2 CPU cores
    python benchmarks/multichannel.py --steps 400 --n-first 32 --n-samples 400 --json /tmp/mc.json
    python benchmarks/multichannel.py --quick                           # smoke test, seconds
"""

import argparse
import datetime
import json
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from speed import machine_info  # noqa: E402

METHODS = ("n2v", "n2v_single", "pn2v", "pn2v_single", "pn2v_alone")
ROW_NAMES = {"input": "input", "n2v": "(a) N2V, multichannel", "n2v_single": "(a') N2V, one U-Net per channel",
             "pn2v": "(b) PN2V, multichannel, shared U-Net",
             "pn2v_prior_mean": "(b) prior mean",
             "pn2v_single": "(c) PN2V, one U-Net per channel",
             "pn2v_alone": "(d) PN2V, each channel alone (steps / C each)"}
TIMING_MODELS = ("one_channel", "all_channels", "all_channels_single")
TIMING_NAMES = {"one_channel": "PN2V, 1 channel", "all_channels": "PN2V, {C} channels, shared U-Net",
                "all_channels_single": "PN2V, {C} channels, one U-Net per channel"}
CHANNEL_NAMES = ("nuclei", "vesicles", "filaments")  # the names of DEFAULT_CHANNELS
QUICK = dict(size=32, n_train=2, n_test=1, calibration_frames=4, steps=6, epochs=1, batch=2, patch=16, depth=2,
             n_first=4, n_samples=8, val_patches=4, timing_steps=1, timing_rounds=2, timing_warmup=2)


# -- data -----------------------------------------------------------------------------------------

def make_data(args):
    """Training images (n_train + 1, the last validates), test images (n_test, Y, X, C) with their ground
    truth, and the calibration stacks (C, N, Y, X) of the channels ``args.channels``. Test image i is
    the test field of seed ``seed + i``."""
    from pn2v_tf.datasets import DEFAULT_CHANNELS, make_synthetic_multichannel

    channels = [spec for spec in DEFAULT_CHANNELS if spec.name in args.channels]

    def field(seed, n_train):
        return make_synthetic_multichannel(seed=seed, shape=(args.size, args.size), n_train=n_train,
                                           calibration_shape=(max(args.size, 64),) * 2,
                                           calibration_frames=args.calibration_frames, channels=channels)

    data = field(args.seed, args.n_train + 1)
    others = [field(args.seed + i, 1) for i in range(1, args.n_test)]
    test = np.stack([data.test] + [d.test for d in others])
    clean = np.stack([data.test_clean] + [d.test_clean for d in others])
    return data, test, clean


def fit_noise_models(calibration, bins):
    """One histogram noise model per channel from its calibration stack."""
    from pn2v_tf.noise_models import HistogramNoiseModel

    return [HistogramNoiseModel.from_calibration_stack(stack, bins=bins) for stack in calibration]


# -- models ---------------------------------------------------------------------------------------

def make_config(X, args, mode, steps, axes="YXC", single_net=False):
    """The benchmark's network and schedule for images X; ``steps`` optimiser steps in ``args.epochs`` epochs."""
    from pn2v_tf import PN2VConfig
    from pn2v_tf.demo import pn2v_loss_options

    return PN2VConfig(X, axes=axes, mode=mode, n_samples=args.n_samples, unet_n_depth=args.depth,
                      unet_n_first=args.n_first, n2v_patch_shape=(args.patch, args.patch),
                      train_batch_size=args.batch, train_learning_rate=args.learning_rate, train_epochs=args.epochs,
                      train_steps_per_epoch=steps_per_epoch(steps, args.epochs), train_n_val_patches=args.val_patches,
                      train_tensorboard=False, single_net_per_channel=single_net, seed=args.seed,
                      **(pn2v_loss_options(args) if mode == "pn2v" else {}))


def steps_per_epoch(steps, epochs):
    """Steps per epoch for ``steps`` steps in all (exact when ``epochs`` divides them, as parse_args
    ensures; at least one)."""
    return max(1, round(steps / epochs))


def train(config, X_train, X_val, seed, noise_model=None):
    """A new model of ``config`` trained on X_train; returns it, its training time in seconds and its
    validation loss after each epoch."""
    import keras

    from pn2v_tf import PN2V

    keras.utils.set_random_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = PN2V(config, "model", basedir=None, noise_model=noise_model)
        started = time.perf_counter()
        history = model.train(X_train, X_val, verbose=0)
    return model, time.perf_counter() - started, [float(v) for v in history.history.get("val_loss", [])]


def predict(model, images, axes, estimator="mmse"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.predict(images, axes=axes, estimator=estimator)


def run_multichannel(method, data, test, noise_models, args):
    """Methods (a) to (c): one model of all channels. Returns predictions by row, training seconds, steps
    and the validation loss per epoch."""
    X_train, X_val = data.train[:-1], data.train[-1:]
    mode = "n2v" if method.startswith("n2v") else "pn2v"
    config = make_config(X_train, args, mode, args.steps, single_net=method.endswith("_single"))
    model, seconds, val_loss = train(config, X_train, X_val, args.seed, noise_models if mode == "pn2v" else None)
    rows = {method: predict(model, test, "SYXC")}
    if method == "pn2v":
        rows["pn2v_prior_mean"] = predict(model, test, "SYXC", "prior_mean")
    steps = config.train_epochs * config.train_steps_per_epoch
    return rows, seconds, steps, {"all channels": val_loss}


def run_channels_alone(data, test, noise_models, args):
    """Method (d): one single-channel PN2V per channel, each with ``steps / C`` steps."""
    n_channels = data.n_channels
    X_train, X_val = data.train[:-1], data.train[-1:]
    predictions, seconds, steps, val_losses = [], 0.0, 0, {}
    for c in range(n_channels):
        config = make_config(X_train[..., c], args, "pn2v", args.steps / n_channels, axes="YX")
        model, took, val_losses[data.names[c]] = train(config, X_train[..., c], X_val[..., c], args.seed,
                                                       noise_models[c])
        predictions.append(predict(model, test[..., c], "SYX"))
        seconds += took
        steps += config.train_epochs * config.train_steps_per_epoch
    return {"pn2v_alone": np.stack(predictions, axis=-1)}, seconds, steps, val_losses


def psnr_per_channel(clean, images):
    """PSNR (dB) of each image and channel, (n_images, C); data range of each ground-truth channel."""
    from pn2v_tf.metrics import psnr

    return np.array([[psnr(g[..., c], p[..., c]) for c in range(g.shape[-1])] for g, p in zip(clean, images)])


def run_quality(args, data, test, clean, noise_models):
    """Train and evaluate every method; returns {row: {'psnr': (n_images, C) list, ...}}."""
    results = {"input": {"psnr": psnr_per_channel(clean, test).tolist()}}
    for method in args.methods:
        print(f"--- {ROW_NAMES[method]}", flush=True)
        if method == "pn2v_alone":
            rows, seconds, steps, val_loss = run_channels_alone(data, test, noise_models, args)
        else:
            rows, seconds, steps, val_loss = run_multichannel(method, data, test, noise_models, args)
        for row, images in rows.items():
            results[row] = {"psnr": psnr_per_channel(clean, images).tolist(), "train_s": seconds, "steps": steps,
                            "patches": steps * args.batch, "val_loss": val_loss}
        means = np.mean(results[method]["psnr"], axis=0)
        print(f"    {seconds:.0f} s, {steps} steps, PSNR per channel " + ", ".join(f"{m:.2f}" for m in means),
              flush=True)
        for model_name, losses in val_loss.items():
            print(f"    validation loss per epoch ({model_name}): " + " ".join(f"{v:.4g}" for v in losses), flush=True)
    return results


# -- training cost --------------------------------------------------------------------------------

def timing_model(name, data, noise_models, args):
    """An untrained PN2V of timing model ``name`` with its compiled training model and images."""
    from pn2v_tf import PN2V

    if name == "one_channel":  # the first channel through the single-channel path (axes YX)
        X, axes, noise_model = data.train[..., 0], "YX", noise_models[0]
    else:
        X, axes, noise_model = data.train, "YXC", noise_models
    config = make_config(X, args, "pn2v", args.steps, axes=axes, single_net=name == "all_channels_single")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = PN2V(config, name, basedir=None, noise_model=noise_model)
    training = model._training_model
    training.compile(optimizer="adam", loss=model._loss())
    return training, X, config


def masked_batches(X, config, count, seed):
    """``count`` masked training batches of X, generated before any timing."""
    from pn2v_tf.data import MaskedPatches

    patches = MaskedPatches(X, tuple(config.n2v_patch_shape), config.train_batch_size, count, config.n2v_perc_pix,
                            config.n2v_neighborhood_radius, seed=seed)
    return [patches[i] for i in range(count)]


def rotated(names, round_index):
    """The order of the models in round ``round_index``: rotated by one each round."""
    shift = round_index % len(names)
    return names[shift:] + names[:shift]


def run_timing(args, data, noise_models):
    """Seconds per training step of each timing model, alternating rounds in one process."""
    import keras

    names = [n for n in TIMING_MODELS if n in args.timing_models]
    trainings, batches = {}, {}
    for name in names:
        keras.utils.set_random_seed(args.seed)
        training, X, config = timing_model(name, data, noise_models, args)
        batches[name] = masked_batches(X, config, args.timing_warmup + args.timing_steps, args.seed)
        for x, y in batches[name][:args.timing_warmup]:
            training.train_on_batch(x, y)
        trainings[name] = training
    seconds = {name: [] for name in names}
    for round_index in range(args.timing_rounds):
        for name in rotated(names, round_index):
            started = time.perf_counter()
            for x, y in batches[name][args.timing_warmup:]:
                trainings[name].train_on_batch(x, y)
            seconds[name].append((time.perf_counter() - started) / args.timing_steps)
    return summarise_timing(seconds)


def summarise_timing(seconds):
    """Mean s/step per model and, against the 1-channel model, the ratio of summed times and its
    range over the rounds."""
    result = {"s_per_step": {name: float(np.mean(times)) for name, times in seconds.items()},
              "round_s_per_step": {name: [float(t) for t in times] for name, times in seconds.items()}}
    if "one_channel" in seconds:
        reference = np.asarray(seconds["one_channel"])
        result["ratio_over_1ch"] = {
            name: {"ratio": float(np.sum(times) / np.sum(reference)),
                   "per_round": [float(t / r) for t, r in zip(times, reference)]}
            for name, times in seconds.items() if name != "one_channel"}
    return result


# -- report ---------------------------------------------------------------------------------------

def budget_line(args):
    return (f"U-Net depth {args.depth}, {args.n_first} first features, K = {args.n_samples}; "
            f"{args.patch}x{args.patch} patches, batch {args.batch}, Adam {args.learning_rate:g}; "
            f"{args.steps} steps ({args.steps * args.batch} patches) per method in {args.epochs} epochs; "
            f"{args.n_train} training images of {args.size}x{args.size} (+1 for validation), "
            f"{args.n_test} test images; histogram noise models ({args.bins} bins) from "
            f"{args.calibration_frames} calibration frames per channel")


def quality_table(results, names):
    """Markdown: mean PSNR over the test images per channel (+- half the range over images) and their mean."""
    lines = ["| method | " + " | ".join(names) + " | mean | train (s) | steps x batch |",
             "|---|" + "---|" * (len(names) + 3)]
    for row in ("input", "n2v", "n2v_single", "pn2v", "pn2v_prior_mean", "pn2v_single", "pn2v_alone"):
        if row not in results:
            continue
        values = np.asarray(results[row]["psnr"])
        cells = [f"{m:.2f}" for m in values.mean(axis=0)]
        if values.shape[0] > 1:
            cells = [f"{c} ({lo:.2f}..{hi:.2f})" for c, lo, hi in zip(cells, values.min(axis=0), values.max(axis=0))]
        seconds = results[row].get("train_s")
        seconds = "" if seconds is None else f"{seconds:.0f}"
        steps = results[row].get("steps")
        budget = "" if steps is None else f"{steps} x {results[row]['patches'] // steps}"
        lines.append(f"| {ROW_NAMES[row]} | " + " | ".join(cells) + f" | {values.mean():.2f} | {seconds} | {budget} |")
    return "\n".join(lines)


def difference_table(results, names, reference="n2v"):
    """Markdown: PSNR of each PN2V method minus that of the N2V row ``reference`` ('n2v' or
    'n2v_single'), per channel (mean over test images); empty without that row."""
    if reference not in results:
        return ""
    reference_psnr = np.mean(results[reference]["psnr"], axis=0)
    label = "N2V" if reference == "n2v" else "N2V, one U-Net per channel"
    lines = [f"| method - {label} (dB) | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for row in ("pn2v", "pn2v_prior_mean", "pn2v_single", "pn2v_alone"):
        if row in results:
            delta = np.mean(results[row]["psnr"], axis=0) - reference_psnr
            lines.append(f"| {ROW_NAMES[row]} | " + " | ".join(f"{d:+.2f}" for d in delta) + " |")
    return "\n".join(lines)


def timing_table(timing, n_channels):
    lines = ["| model | s / step | ratio to 1 channel (range over rounds) |", "|---|---|---|"]
    for name, value in timing["s_per_step"].items():
        ratio = timing.get("ratio_over_1ch", {}).get(name)
        cell = "1" if name == "one_channel" else ("" if ratio is None else
                                                   f"{ratio['ratio']:.2f} ({min(ratio['per_round']):.2f}.."
                                                   f"{max(ratio['per_round']):.2f})")
        lines.append(f"| {TIMING_NAMES[name].format(C=n_channels)} | {value:.3f} | {cell} |")
    return "\n".join(lines)


def channel_lines(data):
    return [f"- {spec.name}: {spec.background:g} to {spec.max_photons:g} photons, gain {spec.camera.gain:g}, "
            f"offset {spec.camera.offset:g}, read noise {spec.camera.read_noise:g}; "
            f"{spec.n_blobs} blobs (radius {spec.blob_radius_range[0]:g}..{spec.blob_radius_range[1]:g}) and "
            f"{spec.n_filaments} filaments per 256x256" for spec in data.channels]


def report(summary, data, args):
    names = list(data.names)
    lines = [f"## Multichannel PN2V, synthetic {len(names)}-channel data ({summary['date']})", "",
             f"Command: `{summary['command']}`", "",
             f"Machine: {summary['machine']}; total {summary['seconds'] / 60:.1f} min.",
             "", f"Budget: {budget_line(args)}.", "", "Channels:", *channel_lines(data), ""]
    if summary.get("quality"):
        lines += ["PSNR (dB) per channel, mean over the test images (min..max over them):", "",
                  quality_table(summary["quality"], names), ""]
        lines += [table + "\n" for table in (difference_table(summary["quality"], names, reference)
                                             for reference in ("n2v", "n2v_single")) if table]
    if summary.get("timing"):
        lines += [f"Training cost (untrained networks, {args.timing_rounds} alternating rounds of "
                  f"{args.timing_steps} steps, {args.timing_warmup} warm-up steps each):", "",
                  timing_table(summary["timing"], len(names)), ""]
    return "\n".join(lines)


# -- command line ---------------------------------------------------------------------------------

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300, help="optimiser steps per method (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs the steps are split into (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=8, help="patches per step (default: %(default)s)")
    parser.add_argument("--patch", type=int, default=64, help="patch side (default: %(default)s)")
    parser.add_argument("--depth", type=int, default=2, help="U-Net levels (default: %(default)s)")
    parser.add_argument("--n-first", type=int, default=32, help="U-Net first-level features (default: %(default)s)")
    parser.add_argument("--n-samples", type=int, default=400, help="K prior samples (default: %(default)s)")
    parser.add_argument("--learning-rate", type=float, default=2e-3, help="Adam (default: %(default)s)")
    parser.add_argument("--mean-weight", type=float, default=None,
                        help="PN2V's train_mean_weight, the samples' mean term (default: the package's)")
    parser.add_argument("--no-decouple-mean", dest="decouple_mean", action="store_false",
                        help="PN2V's train_decouple_mean=False: the likelihood pulls the samples' mean as well")
    parser.add_argument("--val-patches", type=int, default=32, help="validation patches (default: %(default)s)")
    parser.add_argument("--size", type=int, default=256, help="image side (default: %(default)s)")
    parser.add_argument("--n-train", type=int, default=4, help="training images (default: %(default)s)")
    parser.add_argument("--n-test", type=int, default=3, help="test images (default: %(default)s)")
    parser.add_argument("--calibration-frames", type=int, default=100, help="per channel (default: %(default)s)")
    parser.add_argument("--bins", type=int, default=256, help="histogram bins (default: %(default)s)")
    parser.add_argument("--channels", nargs="+", choices=CHANNEL_NAMES, default=list(CHANNEL_NAMES),
                        help="which of the synthetic channels to use, at least two (default: all three)")
    parser.add_argument("--methods", nargs="*", choices=METHODS, default=list(METHODS),
                        help="quality rows to train (none: timing only)")
    parser.add_argument("--timing-models", nargs="*", choices=TIMING_MODELS, default=list(TIMING_MODELS),
                        help="models whose training step is timed (none: no timing)")
    parser.add_argument("--timing-steps", type=int, default=5,
                        help="timed steps per model and round (default: %(default)s)")
    parser.add_argument("--timing-rounds", type=int, default=4, help="alternating rounds (default: %(default)s)")
    parser.add_argument("--timing-warmup", type=int, default=3, help="untimed steps per model (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write all results to this JSON file")
    parser.add_argument("--quick", action="store_true",
                        help="tiny images, network and budget: checks the pipeline in seconds, numbers meaningless")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    args.methods = [m for m in METHODS if m in args.methods]
    args.channels = [c for c in CHANNEL_NAMES if c in args.channels]
    if len(args.channels) < 2:
        parser.error("--channels: a multichannel benchmark needs at least two channels")
    split = args.epochs * (len(args.channels) if "pn2v_alone" in args.methods else 1)
    if args.steps < split or args.steps % split:
        parser.error(f"--steps ({args.steps}) must be a positive multiple of {split} (--epochs"
                     f"{' x channels, for pn2v_alone' if split != args.epochs else ''}) so that every method "
                     "trains on exactly as many patches")
    return args


def machine():
    info = machine_info()
    return f"{info['cpu']}, {info['cores']} cores, TensorFlow {info['tensorflow']}"


def main(argv=None):
    args = parse_args(argv)
    started = time.time()
    data, test, clean = make_data(args)
    noise_models = fit_noise_models(data.calibration, args.bins)
    quality = run_quality(args, data, test, clean, noise_models) if args.methods else {}
    timing = run_timing(args, data, noise_models) if args.timing_models else {}
    summary = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "command": "python benchmarks/multichannel.py " + " ".join(args.argv), "machine": machine(),
               "seconds": time.time() - started,
               "settings": {k: v for k, v in vars(args).items() if k not in ("json", "argv")},
               "channels": [{"name": s.name, "max_photons": s.max_photons, "background": s.background,
                             "gain": s.camera.gain, "offset": s.camera.offset, "read_noise": s.camera.read_noise}
                            for s in data.channels],
               "quality": quality, "timing": timing}
    print("\n" + report(summary, data, args))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1, default=str))
    return summary


if __name__ == "__main__":
    main()
