"""Multichannel PN2V: one noise model per channel, one U-Net per channel (``--shared``: one for all).

Makes synthetic 3-channel data (nuclei, vesicles, filaments; each channel with its own brightness
and camera, see ``pn2v_tf.datasets.make_synthetic_multichannel``), fits one histogram noise model per
channel from that channel's calibration stack, trains a multichannel PN2V model (and, unless
``--no-n2v``, a Noise2Void model with the same network and budget for comparison), denoises a test
image and prints the PSNR of each channel against the ground truth. The images are written as
ImageJ TIFFs (axes YXC) to ``--output``.

    python examples/pn2v_multichannel.py                          # a few minutes on 2 CPU cores
    python examples/pn2v_multichannel.py --output mc_out --steps 400 --n-samples 800 --n-first 32

The default budget is small so that the example finishes quickly on a laptop; more steps and a
larger network (``--steps``, ``--n-first``, ``--depth``) denoise better.
"""

import argparse
import time
import warnings
from pathlib import Path

import numpy as np

OUTPUT_FILES = ("noisy.tif", "ground_truth.tif", "pn2v_mmse.tif", "pn2v_prior_mean.tif", "n2v.tif")


def make_data(seed, size, n_train, calibration_frames):
    """Synthetic 3-channel training, validation and test images and one calibration stack per channel."""
    from pn2v_tf.datasets import make_synthetic_multichannel

    return make_synthetic_multichannel(seed=seed, shape=(size, size), n_train=n_train,
                                       calibration_shape=(size, size), calibration_frames=calibration_frames)


def fit_noise_models(calibration_stacks, bins):
    """One histogram noise model per channel, each from that channel's calibration stack (N, Y, X)."""
    from pn2v_tf import HistogramNoiseModel

    return [HistogramNoiseModel.from_calibration_stack(stack, bins=bins) for stack in calibration_stacks]


def train_model(mode, name, X_train, X_val, args, noise_models=None):
    """Train a multichannel model (axes YXC) of ``mode`` 'pn2v' or 'n2v' with the budget in ``args``."""
    import keras

    from pn2v_tf import PN2V, PN2VConfig

    keras.utils.set_random_seed(args.seed)
    config = PN2VConfig(X_train, axes="YXC", mode=mode, n_samples=args.n_samples, unet_n_depth=args.depth,
                        unet_n_first=args.n_first, n2v_patch_shape=(args.patch, args.patch),
                        train_batch_size=args.batch, train_epochs=args.epochs,
                        train_steps_per_epoch=max(1, args.steps // args.epochs), train_learning_rate=args.learning_rate,
                        train_n_val_patches=args.val_patches, train_tensorboard=False, seed=args.seed,
                        single_net_per_channel=not args.shared)
    model = PN2V(config, name, basedir=str(args.output / "models"), noise_model=noise_models)
    started = time.time()
    model.train(X_train, X_val, verbose=0)
    print(f"trained {mode.upper()} ({name}) in {time.time() - started:.0f} s", flush=True)
    return model


def psnr_table(names, clean, images):
    """Markdown table of the PSNR (dB, per channel, data range of its ground truth) of each image."""
    from pn2v_tf.metrics import psnr

    lines = ["| image | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for label, image in images.items():
        values = [psnr(clean[..., c], image[..., c]) for c in range(len(names))]
        lines.append(f"| {label} | " + " | ".join(f"{v:.2f}" for v in values) + " |")
    return "\n".join(lines)


def check_output_folder(folder):
    """Refuse to write into a folder that holds this example's results already."""
    existing = [name for name in OUTPUT_FILES + ("models",) if (folder / name).exists()]
    if existing:
        raise SystemExit(f"{folder} holds {', '.join(existing)} already; not overwriting: choose another --output")


def write_images(folder, images):
    """Each (Y, X, C) image as an ImageJ TIFF ``<name>.tif`` in ``folder``."""
    from pn2v_tf.io import write_tiff

    for name, image in images.items():
        write_tiff(folder / f"{name}.tif", np.asarray(image, dtype=np.float32), "YXC")
    print(f"wrote {', '.join(f'{name}.tif' for name in images)} to {folder}")


def run(args):
    """The whole example; returns the written images by name."""
    check_output_folder(args.output)
    data = make_data(args.seed, args.size, args.n_train + 1, args.calibration_frames)
    X_train, X_val = data.train[:-1], data.train[-1:]
    print(f"channels: {', '.join(data.names)}; training images {X_train.shape}, test image {data.test.shape}")
    for spec in data.channels:
        camera = spec.camera
        print(f"  {spec.name}: up to {spec.max_photons:g} photons, gain {camera.gain:g}, offset {camera.offset:g}, "
              f"read noise {camera.read_noise:g}")
    noise_models = fit_noise_models(data.calibration, args.bins)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. CSBDeep's notes on new model folders
        pn2v = train_model("pn2v", "pn2v_multichannel", X_train, X_val, args, noise_models)
        results = {"noisy": data.test, "ground_truth": data.test_clean,
                   "pn2v_mmse": pn2v.predict(data.test, axes="YXC"),
                   "pn2v_prior_mean": pn2v.predict(data.test, axes="YXC", estimator="prior_mean")}
        if not args.no_n2v:
            n2v = train_model("n2v", "n2v_multichannel", X_train, X_val, args)
            results["n2v"] = n2v.predict(data.test, axes="YXC")

    labels = {"noisy": "input", "n2v": "N2V", "pn2v_prior_mean": "PN2V prior mean", "pn2v_mmse": "PN2V MMSE"}
    print("\nPSNR (dB) of the test image per channel:\n")
    print(psnr_table(data.names, data.test_clean, {labels[k]: results[k] for k in labels if k in results}))
    print()
    write_images(args.output, results)
    return results


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=Path("pn2v_multichannel_output"),
                        help="folder of the TIFFs and models (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=150, help="optimiser steps in total (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs the steps are split into (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=8, help="patches per step (default: %(default)s)")
    parser.add_argument("--patch", type=int, default=64, help="patch side (default: %(default)s)")
    parser.add_argument("--n-samples", type=int, default=200, help="K prior samples per pixel (default: %(default)s)")
    parser.add_argument("--n-first", type=int, default=16,
                        help="U-Net features at the first level (default: %(default)s)")
    parser.add_argument("--depth", type=int, default=2, help="U-Net levels (default: %(default)s)")
    parser.add_argument("--learning-rate", type=float, default=2e-3, help="Adam (default: %(default)s)")
    parser.add_argument("--val-patches", type=int, default=16, help="validation patches (default: %(default)s)")
    parser.add_argument("--size", type=int, default=128, help="image side (default: %(default)s)")
    parser.add_argument("--n-train", type=int, default=3, help="training images (default: %(default)s)")
    parser.add_argument("--calibration-frames", type=int, default=50,
                        help="calibration frames per channel (default: %(default)s)")
    parser.add_argument("--bins", type=int, default=256,
                        help="histogram bins of the noise models (default: %(default)s)")
    parser.add_argument("--no-n2v", action="store_true", help="skip the N2V comparison")
    parser.add_argument("--shared", action="store_true",
                        help="one U-Net for all channels instead of one per channel (faster to train)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.steps < args.epochs:
        parser.error(f"--steps ({args.steps}) must be at least --epochs ({args.epochs})")
    return args


def main(argv=None):
    return run(parse_args(argv))


if __name__ == "__main__":
    main()
