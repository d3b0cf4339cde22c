"""The main job in one command: synthetic data -> noise models -> N2V and PN2V -> PSNR table and images.

Run ``pn2v-demo`` (or ``python -m pn2v_tf.demo``); ``--help`` lists the options. ``pn2v-demo --3d``
does the same for anisotropic z-stacks: 3-D N2V, 3-D PN2V and, for comparison, a 2-D PN2V trained
on the stacks' planes at the same budget and applied plane by plane.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path


#: Defaults that differ between the 2-D demo and ``--3d`` (for options not given).
DEFAULTS_2D = dict(shape=256, n_train=4, max_photons=300.0, batch_size=16, epochs=30, steps=40,
                   noise_models="both")
DEFAULTS_3D = dict(shape=128, n_train=3, max_photons=60.0, batch_size=1, epochs=15, steps=10,
                   noise_models="calibrated")
#: The 3-D U-Net pools Y and X only: the demo's stacks have a z step of 3 pixel sizes and few planes.
POOL_3D = (1, 2, 2)
#: Validation voxels of every model: as many as 64 patches of 64 x 64 pixels.
N_VAL_PATCHES_2D = 64


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="pn2v-demo",
        description="Train PN2V and N2V on synthetic microscopy data and compare them on a test image "
                    "(with --3d: on z-stacks, against a 2-D PN2V applied plane by plane).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    both = " (2-D default %s, --3d default %s)"
    parser.add_argument("--3d", dest="three_d", action="store_true",
                        help="z-stacks: train 3-D N2V, 3-D PN2V and a 2-D PN2V on the planes at the same "
                             "budget (same voxels and masked voxels per step, same steps)")
    parser.add_argument("--outdir", default="pn2v_demo", help="folder for models, TIFFs, figure and table")
    parser.add_argument("--overwrite", action="store_true", help="replace results already in --outdir")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic data and of training")
    parser.add_argument("--epochs", type=int, default=argparse.SUPPRESS, help="training epochs of each model" + both % (
        DEFAULTS_2D["epochs"], DEFAULTS_3D["epochs"]))
    parser.add_argument("--steps", type=int, default=argparse.SUPPRESS, help="steps per epoch" + both % (
        DEFAULTS_2D["steps"], DEFAULTS_3D["steps"]))
    parser.add_argument("--batch-size", type=int, default=argparse.SUPPRESS,
                        help="patches per step; with --3d, 3-D patches per step, and the 2-D PN2V gets "
                             "--patch-planes times as many 2-D patches" + both % (
                                 DEFAULTS_2D["batch_size"], DEFAULTS_3D["batch_size"]))
    parser.add_argument("--learning-rate", type=float, default=2e-3, help="Adam learning rate")
    parser.add_argument("--n-samples", type=int, default=800, help="prior samples K of PN2V")
    parser.add_argument("--n-first", type=int, default=16, help="features of the U-Net's first level")
    parser.add_argument("--mean-weight", type=float, default=None,
                        help="PN2V's train_mean_weight, N2V's squared error of the samples' mean in its loss "
                             "(default: the package's, 1; 0: the paper's loss alone)")
    parser.add_argument("--no-decouple-mean", dest="decouple_mean", action="store_false",
                        help="PN2V's train_decouple_mean=False: the likelihood pulls the samples' mean as well")
    parser.add_argument("--shape", type=int, default=argparse.SUPPRESS,
                        help="side (Y and X) of the synthetic images" + both % (
                            DEFAULTS_2D["shape"], DEFAULTS_3D["shape"]))
    parser.add_argument("--n-train", type=int, default=argparse.SUPPRESS,
                        help="number of noisy training images (stacks with --3d; "
                             "a quarter of them, at least one, validate)" + both % (
                                 DEFAULTS_2D["n_train"], DEFAULTS_3D["n_train"]))
    parser.add_argument("--max-photons", type=float, default=argparse.SUPPRESS,
                        help="photons at the brightest pixel (more photons: less relative noise)" + both % (
                            DEFAULTS_2D["max_photons"], DEFAULTS_3D["max_photons"]))
    parser.add_argument("--noise-models", choices=("calibrated", "bootstrap", "both"), default=argparse.SUPPRESS,
                        help="PN2V with the histogram of the calibration stack, with a GMM bootstrapped "
                             "from the noisy training images alone (fully unsupervised), or both; --3d "
                             "takes 'calibrated' only" + both % (
                                 DEFAULTS_2D["noise_models"], DEFAULTS_3D["noise_models"]))
    parser.add_argument("--planes", type=int, default=32, help="--3d: planes (Z) of each synthetic stack")
    parser.add_argument("--z-step", type=float, default=3.0,
                        help="--3d: distance between planes in pixel sizes (anisotropy)")
    parser.add_argument("--patch-planes", type=int, default=16,
                        help="--3d: planes (Z) of the 3-D training patches, whose Y and X sides are those "
                             "of the 2-D patches (64, or less for small images)")
    args = parser.parse_args(argv)
    for name, value in (DEFAULTS_3D if args.three_d else DEFAULTS_2D).items():
        if not hasattr(args, name):  # argparse.SUPPRESS: not given
            setattr(args, name, value)
    if args.three_d and args.noise_models != "calibrated":
        parser.error("--3d trains PN2V with the calibrated histogram only (--noise-models calibrated)")
    return args


def run(args):
    """Run the demo (``args.three_d``: the z-stack demo); returns the PSNR table as a dict {row name: dB}."""
    from .data import split_validation
    from .datasets import make_synthetic_data

    if args.three_d:
        return _run_3d(args)
    if args.shape < 64 or args.n_train < 1:
        sys.exit("pn2v-demo: --shape must be at least 64 and --n-train at least 1")
    outdir = _prepare_outdir(Path(args.outdir), args.overwrite)
    started = time.time()
    data = make_synthetic_data(seed=args.seed, shape=(args.shape, args.shape), n_train=args.n_train,
                               max_photons=args.max_photons)
    X, X_val = split_validation(data.train, fraction=0.25)
    trainer = _Trainer(args, X, X_val, outdir / "models")
    n2v = trainer.train("n2v")
    results = {"N2V": n2v.predict(data.test, axes="YX")}
    noise_models = {}
    if args.noise_models in ("calibrated", "both"):
        noise_models["histogram"] = _calibrated_noise_model(data.calibration)
        pn2v = trainer.train("pn2v", noise_models["histogram"])
        results["PN2V prior mean"] = pn2v.predict(data.test, axes="YX", estimator="prior_mean")
        results["PN2V MMSE"] = pn2v.predict(data.test, axes="YX", estimator="mmse")
    if args.noise_models in ("bootstrap", "both"):
        noise_models["bootstrapped GMM"] = _bootstrapped_noise_model(data.train, n2v, args.seed)
        pn2v = trainer.train("pn2v_bootstrap", noise_models["bootstrapped GMM"])
        results["PN2V MMSE, bootstrapped GMM"] = pn2v.predict(data.test, axes="YX", estimator="mmse")
    return _finish(args, outdir, data, results, noise_models, started)


def _run_3d(args):
    """The z-stack demo: 3-D N2V and PN2V, and a 2-D PN2V trained on the planes of the same stacks.

    All three train with the same steps, the same voxels per step and the same masked share: a 3-D
    step takes ``batch_size`` patches of ``(patch_planes, p, p)`` voxels, a 2-D step
    ``patch_planes * batch_size`` patches of ``(p, p)`` pixels; validation holds the same voxels
    (:data:`N_VAL_PATCHES_2D` 2-D patches' worth) in both. The 2-D model denoises the test stack
    plane by plane.
    """
    from .data import split_validation
    from .datasets import make_synthetic_volumes

    if args.shape < 16 or args.n_train < 2 or args.planes < 4:
        sys.exit("pn2v-demo --3d: --shape must be at least 16, --planes at least 4 and --n-train at least 2 "
                 "(one stack validates)")
    if not 2 < args.patch_planes <= args.planes:
        sys.exit("pn2v-demo --3d: --patch-planes must be more than 2 (the masking radius) and at most --planes")
    outdir = _prepare_outdir(Path(args.outdir), args.overwrite)
    started = time.time()
    data = make_synthetic_volumes(seed=args.seed, shape=(args.planes, args.shape, args.shape),
                                  n_train=args.n_train, z_step=args.z_step, max_photons=args.max_photons)
    stacks, stacks_val = split_validation(data.train, fraction=0.25)
    planes, planes_val = (s.reshape((-1,) + s.shape[2:]) for s in (stacks, stacks_val))
    side = _patch_side(stacks_val.shape[2:])
    n_val_3d = max(1, N_VAL_PATCHES_2D // args.patch_planes)
    print(f"budget of every model: {args.epochs} epochs x {args.steps} steps of {args.batch_size} 3-D patches "
          f"{args.patch_planes}x{side}x{side} = {args.patch_planes * args.batch_size} 2-D patches {side}x{side}")
    trainer_3d = _Trainer(args, stacks, stacks_val, outdir / "models",
                          patch_shape=(args.patch_planes, side, side), n_val_patches=n_val_3d,
                          axes="ZYX", pool=POOL_3D)
    trainer_2d = _Trainer(args, planes, planes_val, outdir / "models", patch_shape=(side, side),
                          batch_size=args.patch_planes * args.batch_size,
                          n_val_patches=n_val_3d * args.patch_planes)
    noise_models = {"histogram": _calibrated_noise_model(data.calibration)}
    n2v = trainer_3d.train("n2v_3d")
    results = {"3-D N2V": n2v.predict(data.test, axes="ZYX")}
    pn2v = trainer_3d.train("pn2v_3d", noise_models["histogram"])
    results["3-D PN2V prior mean"] = pn2v.predict(data.test, axes="ZYX", estimator="prior_mean")
    results["3-D PN2V MMSE"] = pn2v.predict(data.test, axes="ZYX", estimator="mmse")
    pn2v_2d = trainer_2d.train("pn2v_2d", noise_models["histogram"])
    results["2-D PN2V MMSE, plane by plane"] = pn2v_2d.predict(data.test, axes="ZYX", estimator="mmse")
    return _finish(args, outdir, data, results, noise_models, started)


def _finish(args, outdir, data, results, noise_models, started):
    """PSNR table of the input and the results; TIFFs, figures, psnr.json; print and return the table."""
    from .metrics import psnr

    images = {"input": data.test, **results}
    table = {name: psnr(data.test_clean, image) for name, image in images.items()}
    elapsed = time.time() - started
    _write_tiffs(outdir, {"ground_truth": data.test_clean, **images})
    _write_figure(outdir / "comparison.png", data.test_clean, images, table, z_step=data.z_step)
    _write_noise_model_figures(outdir, noise_models, data)
    with open(outdir / "psnr.json", "w") as f:
        json.dump({"psnr_db": table, "seconds": elapsed, "args": vars(args)}, f, indent=2)
    print(format_table(table))
    print(f"\ntotal time {elapsed:.0f} s; images, figures and models in {outdir.resolve()}")
    return table


def _patch_side(shape):
    """Y and X side of the training patches: the validation images' shorter side rounded down to a
    multiple of 4 (the depth-3 U-Net's block), at most 64."""
    return min(64, min(shape) // 4 * 4)


class _Trainer:
    """Trains the demo's models on one split with one schedule and the same initial weights.

    ``patch_shape`` defaults to square patches of :func:`_patch_side`, ``batch_size`` to the
    ``--batch-size`` option, ``n_val_patches`` to the configuration's default; ``axes`` and ``pool``
    make a 3-D model (``'ZYX'``, one pooling factor per axis).
    """

    def __init__(self, args, X, X_val, basedir, patch_shape=None, batch_size=None, n_val_patches=None,
                 axes="YX", pool=None):
        self.args, self.basedir = args, basedir
        self.X, self.X_val = X, X_val
        if patch_shape is None:
            side = _patch_side(X_val.shape[1:])
            patch_shape = (side, side)
        self.common = dict(unet_n_depth=3, unet_n_first=args.n_first, n2v_patch_shape=tuple(patch_shape),
                           train_batch_size=args.batch_size if batch_size is None else batch_size,
                           train_epochs=args.epochs, train_steps_per_epoch=args.steps,
                           train_learning_rate=args.learning_rate, seed=args.seed,
                           train_reduce_lr={"factor": 0.5, "patience": 3})
        if axes != "YX":
            self.common["axes"] = axes
        if pool is not None:
            self.common["unet_pool"] = tuple(pool)
        if n_val_patches is not None:
            self.common["train_n_val_patches"] = n_val_patches

    def train(self, name, noise_model=None):
        import keras

        from .config import PN2VConfig
        from .model import PN2V

        mode = "n2v" if noise_model is None else "pn2v"
        print(f"\n=== training {name} ({self.args.epochs} epochs x {self.args.steps} steps) ===")
        keras.utils.set_random_seed(self.args.seed)  # same initial weights for all, reproducible runs
        config = PN2VConfig(self.X, mode=mode, n_samples=self.args.n_samples, **self.common,
                            **(pn2v_loss_options(self.args) if mode == "pn2v" else {}))
        model = PN2V(config, name, basedir=str(self.basedir), overwrite=self.args.overwrite, noise_model=noise_model)
        model.train(self.X, self.X_val)
        return model


def pn2v_loss_options(args):
    """PN2V's mean term as ``--mean-weight`` and ``--no-decouple-mean`` ask: config keywords (the
    package's default weight when none is given)."""
    options = dict(train_decouple_mean=args.decouple_mean)
    if args.mean_weight is not None:
        options["train_mean_weight"] = args.mean_weight
    return options


def _calibrated_noise_model(calibration):
    from .noise_models import HistogramNoiseModel

    noise_model = HistogramNoiseModel.from_calibration_stack(calibration, bins=256)
    low, high = noise_model.signal_range
    print(f"calibrated histogram noise model: {noise_model.bins} bins, signals {low:.1f}..{high:.1f}")
    return noise_model


def _bootstrapped_noise_model(train, n2v, seed):
    """GMM fitted to the N2V predictions of the training images: no calibration data used."""
    from .bootstrap import bootstrap_noise_model

    noise_model = bootstrap_noise_model(train, kind="gmm", n2v_model=n2v, seed=seed)
    low, high = noise_model.signal_range
    print(f"bootstrapped GMM noise model: {noise_model.n_gaussians} Gaussians, signals {low:.1f}..{high:.1f}")
    return noise_model


def format_table(table):
    """Markdown table of PSNR values."""
    lines = ["", "| image | PSNR (dB) |", "|---|---|"]
    lines += [f"| {name} | {value:.2f} |" for name, value in table.items()]
    return "\n".join(lines)


def _prepare_outdir(outdir, overwrite):
    if outdir.exists() and any(outdir.iterdir()) and not overwrite:
        sys.exit(f"pn2v-demo: {outdir} exists and is not empty; pass --overwrite or choose --outdir")
    outdir.mkdir(parents=True, exist_ok=True)
    return outdir


def _file_stem(name):
    """'PN2V MMSE, bootstrapped GMM' -> 'pn2v_mmse_bootstrapped_gmm'."""
    return "_".join("".join(c if c.isalnum() else " " for c in name.lower()).split())


def _write_tiffs(outdir, images):
    import numpy as np
    import tifffile

    for name, image in images.items():
        filename = _file_stem(name) + ".tif"
        tifffile.imwrite(outdir / filename, np.asarray(image, dtype=np.float32), imagej=True)


def _write_noise_model_figures(outdir, noise_models, data):
    """Each noise model against the calibration data; their fit to the test image's pairs (held
    out from every model) beside the exact camera model's."""
    import numpy as np

    from .datasets import camera_log_likelihood
    from .noise_models import plot_fit_summary

    for name, noise_model in noise_models.items():
        noise_model.plot(outdir / f"noise_model_{_file_stem(name)}.png",
                         signal=data.calibration_clean, observation=data.calibration, overwrite=True)
    if noise_models:
        camera = data.camera

        def exact(observation, signal):
            photons = np.maximum((signal - camera.offset) / camera.gain, 0.0)
            return camera_log_likelihood(observation, photons, camera)
        plot_fit_summary(noise_models, data.test_clean, data.test, outdir / "noise_model_fit.png",
                         reference=exact, overwrite=True)


def _write_figure(path, ground_truth, images, table, z_step=None):
    """Whole images in the top row, a zoomed centre crop below (noise is easier to see there); for
    z-stacks the middle plane on top and an XZ section through the middle row below, its planes drawn
    ``z_step`` pixels apart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = {**images, "ground truth": ground_truth}
    low, high = float(ground_truth.min()), float(ground_truth.max())
    if ground_truth.ndim == 3:
        depth, height, _ = ground_truth.shape
        views = [(lambda image: image[depth // 2], 1.0), (lambda image: image[:, height // 2], z_step or 1.0)]
    else:
        height, width = ground_truth.shape
        crop = (slice(height * 3 // 8, height * 5 // 8), slice(width * 3 // 8, width * 5 // 8))
        views = [(lambda image: image, 1.0), (lambda image: image[crop], 1.0)]
    fig, axes = plt.subplots(2, len(panels), figsize=(3.2 * len(panels), 7.0), layout="constrained")
    for column, (name, image) in enumerate(panels.items()):
        title = name if name not in table else f"{name}\n{table[name]:.2f} dB"
        axes[0, column].set_title(title, fontsize=10)
        for row, (view, aspect) in enumerate(views):
            axes[row, column].imshow(view(image), cmap="magma", vmin=low, vmax=high, aspect=aspect,
                                     interpolation="nearest" if ground_truth.ndim == 3 else None)
            axes[row, column].axis("off")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = parse_args(argv)
    if args.three_d:
        # TensorFlow's CPU build (2.21) leaves its oneDNN kernels off; without them the gradient of a
        # 3-D convolution takes 10 to 20 times as long, a training step of this demo's 3-D network
        # about 8 times (benchmarks/speed.py --configs 3d-small). Set before TensorFlow loads;
        # TF_ENABLE_ONEDNN_OPTS=0 in the environment keeps them off.
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    run(args)


if __name__ == "__main__":
    main()
