"""PN2V from TIFF files: calibration stack -> noise model -> training -> MMSE denoising.

The README's Python example as a script. With no TIFFs of your own, ``--make-example-data DIR``
first writes synthetic ones (a calibration stack, a noisy training stack and a noisy image):

    python examples/pn2v_from_tiffs.py --make-example-data example_data
    python examples/pn2v_from_tiffs.py --calibration my_calibration.tif --noisy my_stack.tif \
        --image my_image.tif --name my_model --epochs 100
"""

import argparse
from pathlib import Path

import numpy as np
import tifffile

from pn2v_tf import PN2V, HistogramNoiseModel, PN2VConfig


def write_example_data(folder, seed=0):
    """Synthetic calibration.tif, noisy_stack.tif (SYX) and noisy_image.tif in ``folder``."""
    from pn2v_tf.datasets import make_synthetic_data

    data = make_synthetic_data(seed=seed, shape=(128, 128), n_train=3, calibration_frames=50)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = {"calibration": folder / "calibration.tif", "noisy": folder / "noisy_stack.tif",
             "image": folder / "noisy_image.tif"}
    for path in files.values():
        if path.exists():
            raise SystemExit(f"{path} exists; not overwriting it")
    for key, array in (("calibration", data.calibration), ("noisy", data.train), ("image", data.test)):
        tifffile.imwrite(files[key], array, photometric="minisblack")
    return files


def denoise(calibration, noisy, image, name, basedir, epochs, steps, n_samples, n_first, output):
    noise_model = HistogramNoiseModel.from_calibration_stack(tifffile.imread(calibration), bins=256)

    X = tifffile.imread(noisy).astype(np.float32)
    X_train, X_val = X[:-1], X[-1:]
    config = PN2VConfig(X_train, mode="pn2v", n_samples=n_samples, unet_n_first=n_first,
                        n2v_patch_shape=(64, 64), train_epochs=epochs, train_steps_per_epoch=steps,
                        train_batch_size=16, train_learning_rate=2e-3)
    model = PN2V(config, name, basedir=basedir, noise_model=noise_model)
    model.train(X_train, X_val)

    restored = PN2V(None, name, basedir=basedir)  # noise model and normalisation come with it
    denoised = restored.predict(tifffile.imread(image), axes="YX")
    if Path(output).exists():
        raise SystemExit(f"{output} exists; not overwriting it")
    tifffile.imwrite(output, denoised)
    print(f"wrote {output}")
    return denoised


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--make-example-data", metavar="DIR", help="write synthetic TIFFs to DIR and use them")
    parser.add_argument("--calibration", help="calibration stack (N, Y, X)")
    parser.add_argument("--noisy", help="noisy training images (S, Y, X); the last one validates")
    parser.add_argument("--image", help="noisy image (Y, X) to denoise")
    parser.add_argument("--name", default="pn2v_example", help="model name")
    parser.add_argument("--basedir", default="models", help="folder of model folders")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--n-samples", type=int, default=800)
    parser.add_argument("--n-first", type=int, default=32)
    parser.add_argument("--output", default="denoised.tif")
    args = parser.parse_args(argv)

    if args.make_example_data:
        files = write_example_data(args.make_example_data)
        args.calibration, args.noisy, args.image = files["calibration"], files["noisy"], files["image"]
    if not (args.calibration and args.noisy and args.image):
        parser.error("give --calibration, --noisy and --image, or --make-example-data DIR")
    return denoise(args.calibration, args.noisy, args.image, args.name, args.basedir, args.epochs,
                   args.steps, args.n_samples, args.n_first, args.output)


if __name__ == "__main__":
    main()
