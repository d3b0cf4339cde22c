"""What N2V2 and structN2V are for, with and without a noise model: checkerboard artefacts and noise
correlated along X.

Checkerboard (``--part checkerboard``): N2V, N2V2, PN2V and PN2V2 (N2V2 = ``blurpool``,
``skip_skipone`` and ``n2v_manipulator='median'``, which goes up by nearest upsampling; also N2V2 with
the transposed convolutions up that the plain network uses) on the same network and budget, on synthetic
camera data (``make_synthetic_data``) and, when ``../shared/data/fmd`` is there, on FMD Confocal_MICE
(the 4 raw images, trained on themselves; histogram noise model of (ground truth, noisy) pairs).
For each: PSNR against the ground truth and the checkerboard measure, the prediction's spectral power
at the Nyquist frequencies (ny/2, 0), (0, nx/2) and (ny/2, nx/2) against the median power of their
7 x 7 neighbourhood in the spectrum (the point itself left out), in dB, averaged over the three points
and the test images: about 0 dB for an image without a period-2 pattern, more with one.

Correlated noise (``--part correlated``): synthetic camera data plus Gaussian noise correlated along X
(white noise averaged over ``--corr-length`` pixels of a row, scaled to ``--corr-sigma``), in the
training, test and calibration images alike. N2V, structN2V, PN2V and structPN2V (a 1 x (2L - 1)
structuring element, which hides every pixel whose noise is correlated with the blind spot's), PN2V's
histogram built from the calibration stack with the same noise. For each: PSNR and the stripe power of
the residual r = prediction - ground truth: var(box_x(r)) - var(box_y(r)), box filters of length L
along X and along Y; white residuals give 0, stripes along X a positive value (intensity units
squared; the input's is printed beside it).

Each row also gives the training time. One JSON line per model, then a Markdown table.

    python benchmarks/n2v2_struct.py                         # both parts, ~25 minutes on 2 CPU cores
    python benchmarks/n2v2_struct.py --part correlated --seeds 0 1
"""

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

FMD = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "fmd"
N2V2 = dict(blurpool=True, skip_skipone=True, n2v_manipulator="median")
N2V2_TRANSPOSED = dict(N2V2, unet_upsampling="transpose")


# -- measures --------------------------------------------------------------------------------------

def checkerboard_db(images):
    """Spectral power at the Nyquist frequencies against its 7 x 7 spectral neighbourhood (dB), mean
    over the three Nyquist points and the images (Y, X) or (N, Y, X)."""
    ratios = []
    for image in np.reshape(images, (-1,) + np.shape(images)[-2:]):
        power = np.abs(np.fft.fft2(image - image.mean())) ** 2
        ny, nx = power.shape
        for fy, fx in ((ny // 2, 0), (0, nx // 2), (ny // 2, nx // 2)):
            ys, xs = np.meshgrid(np.arange(fy - 3, fy + 4) % ny, np.arange(fx - 3, fx + 4) % nx, indexing="ij")
            around = np.delete(power[ys, xs].ravel(), 24)
            ratios.append(power[fy, fx] / np.median(around))
    return float(10 * np.log10(np.mean(ratios)))


def _box(image, length, axis):
    kernel = np.ones(length) / length
    return np.apply_along_axis(lambda line: np.convolve(line, kernel, mode="valid"), axis, image)


def stripe_power(residual, length):
    """var(box along X) - var(box along Y) of residuals (Y, X) or (N, Y, X): 0 for white residuals."""
    residual = np.reshape(residual, (-1,) + np.shape(residual)[-2:])
    return float(np.mean([np.var(_box(r, length, 1)) - np.var(_box(r, length, 0)) for r in residual]))


# -- data ------------------------------------------------------------------------------------------

def correlated_along_x(shape, rng, length, sigma):
    """Gaussian noise of standard deviation ``sigma``, each value the mean of ``length`` white values of
    its row (correlated with its neighbours up to ``length - 1`` pixels away along X)."""
    white = rng.normal(size=shape[:-1] + (shape[-1] + length - 1,))
    return (sigma * np.sqrt(length) * _box(white, length, white.ndim - 1)).astype(np.float32)


def synthetic(seed, size, max_photons):
    from pn2v_tf.datasets import make_synthetic_data

    return make_synthetic_data(seed=seed, shape=(size, size), n_train=4, max_photons=max_photons)


def with_correlated_noise(data, seed, length, sigma):
    rng = np.random.default_rng([seed, 17])
    add = {name: getattr(data, name) + correlated_along_x(getattr(data, name).shape, rng, length, sigma)
           for name in ("train", "test", "calibration")}
    return data._replace(**add) if hasattr(data, "_replace") else type(data)(**{**vars(data), **add})


def load_fmd(dataset="Confocal_MICE"):
    from PIL import Image

    def stack(folder):
        return np.stack([np.asarray(Image.open(p), dtype=np.float32)
                         for p in sorted((FMD / folder).glob(f"{dataset}_*.png"))])

    return stack("raw"), stack("gt")


# -- models ----------------------------------------------------------------------------------------

def train(mode, X, X_val, noise_model, seed, args, **options):
    import keras

    from pn2v_tf import PN2V, PN2VConfig

    keras.utils.set_random_seed(seed)
    config = PN2VConfig(X, mode=mode, n_samples=args.n_samples, unet_n_depth=args.depth, unet_n_first=args.n_first,
                        n2v_patch_shape=(64, 64), train_batch_size=8, train_epochs=args.epochs,
                        train_steps_per_epoch=args.steps // args.epochs, train_learning_rate=args.learning_rate,
                        train_tensorboard=False, seed=seed, **options)
    model = PN2V(config, None, basedir=None, noise_model=noise_model if mode == "pn2v" else None)
    started = time.perf_counter()
    model.train(X, X_val, verbose=0)
    return model, time.perf_counter() - started


def checkerboard_rows(args, seed):
    from pn2v_tf import HistogramNoiseModel
    from pn2v_tf.metrics import psnr

    data = synthetic(seed, args.size, args.max_photons)
    sets = [("synthetic", data.train[:-1], data.train[-1:], data.test[None], data.test_clean[None], None,
             HistogramNoiseModel.from_calibration_stack(data.calibration, bins=128))]
    if (FMD / "raw").is_dir():
        noisy, gt = load_fmd()
        sets.append(("FMD Confocal_MICE", noisy, noisy, noisy, gt, 255.0,
                     HistogramNoiseModel.from_pairs(gt, noisy, bins=256, value_range=(-0.5, 255.5))))
    else:
        print(f"no FMD data at {FMD}: synthetic data only")
    for name, X, X_val, test, clean, data_range, noise_model in sets:
        yield {"data": name, "method": "input", "psnr": round(_mean_psnr(psnr, clean, test, data_range), 2),
               "checkerboard_db": round(checkerboard_db(test), 2), "seed": seed}
        for method, mode, options in (("N2V", "n2v", {}), ("N2V2", "n2v", N2V2),
                                      ("N2V2, transposed convolutions up", "n2v", N2V2_TRANSPOSED),
                                      ("PN2V", "pn2v", {}), ("PN2V2", "pn2v", N2V2)):
            model, seconds = train(mode, X, X_val, noise_model, seed, args, **options)
            prediction = model.predict(test, axes="SYX")
            yield {"data": name, "method": method, "psnr": round(_mean_psnr(psnr, clean, prediction, data_range), 2),
                   "checkerboard_db": round(checkerboard_db(prediction), 2), "train_s": round(seconds, 1),
                   "seed": seed}


def correlated_rows(args, seed):
    from pn2v_tf import HistogramNoiseModel
    from pn2v_tf.metrics import psnr

    length = args.corr_length
    data = with_correlated_noise(synthetic(seed, args.size, args.max_photons), seed, length, args.corr_sigma)
    noise_model = HistogramNoiseModel.from_calibration_stack(data.calibration, bins=128)
    element = {"structN2Vmask": [[1] * (2 * length - 1)]}
    name = f"synthetic + noise correlated along X (L = {length}, sigma = {args.corr_sigma:g})"
    yield {"data": name, "method": "input", "psnr": round(psnr(data.test_clean, data.test), 2),
           "stripe_power": round(stripe_power(data.test - data.test_clean, length), 2), "seed": seed}
    for method, mode, options in (("N2V", "n2v", {}), ("structN2V", "n2v", element), ("PN2V", "pn2v", {}),
                                  ("structPN2V", "pn2v", element)):
        model, seconds = train(mode, data.train[:-1], data.train[-1:], noise_model, seed, args, **options)
        prediction = model.predict(data.test)
        yield {"data": name, "method": method, "psnr": round(psnr(data.test_clean, prediction), 2),
               "stripe_power": round(stripe_power(prediction - data.test_clean, length), 2),
               "train_s": round(seconds, 1), "seed": seed}


def _mean_psnr(psnr, clean, images, data_range):
    return float(np.mean([psnr(c, i, data_range) for c, i in zip(clean, images)]))


def markdown(rows):
    keys = ["data", "method", "seed", "psnr", "checkerboard_db", "stripe_power", "train_s"]
    keys = [k for k in keys if any(k in row for row in rows)]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(row.get(k, "")) for k in keys) + " |" for row in rows]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("checkerboard", "correlated", "both"), default="both")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--max-photons", type=float, default=60.0)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--n-first", type=int, default=16)
    parser.add_argument("--n-samples", type=int, default=200)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--corr-length", type=int, default=4, help="pixels of a row averaged into each value")
    parser.add_argument("--corr-sigma", type=float, default=20.0, help="standard deviation of the correlated noise")
    args = parser.parse_args(argv)
    rows = []
    for seed in args.seeds:
        parts = (checkerboard_rows, correlated_rows) if args.part == "both" else \
            ((checkerboard_rows,) if args.part == "checkerboard" else (correlated_rows,))
        for part in parts:
            for row in part(args, seed):
                print(json.dumps(row), flush=True)
                rows.append(row)
    print(markdown(rows))
    return rows


if __name__ == "__main__":
    main()
