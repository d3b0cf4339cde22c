"""PN2V on data that need not fit in memory: zarr in, zarr out, on a Dask ``LocalCluster``.

Makes a synthetic time-lapse (T frames of camera noise on fluorescence scenes, see
``pn2v_tf.datasets.make_synthetic_data``) and stores it as a chunked zarr array, trains PN2V on it
without loading it (each batch reads the chunks its patches touch), then denoises it block by block
into a second zarr array with ``pn2v_tf.chunked.predict_to_zarr`` on a ``dask.distributed``
``LocalCluster`` (each worker process loads the model from its folder once), and checks that the
result equals ``model.predict`` of the frames in memory.

    python examples/pn2v_large_data.py                        # a few minutes on 2 CPU cores
    python examples/pn2v_large_data.py --output big_out --frames 8 --size 1024 --workers 2

The same prediction from the command line: ``pn2v predict --model big_out/models/pn2v_large
big_out/noisy.zarr -o big_out/denoised --axes TYX`` (``--scheduler tcp://host:8786`` for a cluster
of your own).
"""

import argparse
import logging
from pathlib import Path

import numpy as np


def write_noisy_zarr(path, frames, size, chunk, seed):
    """T synthetic noisy frames (T, Y, X) written frame by frame into a zarr array; returns it and the
    calibration stack."""
    import zarr

    from pn2v_tf.datasets import make_synthetic_data

    data = make_synthetic_data(seed=seed, shape=(size, size), n_train=frames, calibration_frames=60)
    array = zarr.open_array(str(path), mode="w-", shape=(frames, size, size), chunks=(1, chunk, chunk),
                            dtype="float32", dimension_names=("t", "y", "x"))
    for t in range(frames):
        array[t] = data.train[t]
    return array, data.calibration


def train(noisy, calibration, basedir, args):
    import dask.array as da
    import keras

    from pn2v_tf import HistogramNoiseModel, PN2V, PN2VConfig

    keras.utils.set_random_seed(args.seed)
    frames = da.from_zarr(noisy)  # lazy: slicing it reads nothing
    low, high = float(calibration.min()), float(calibration.max())
    margin = 0.1 * (high - low)  # room for the noise tails of the images beyond the calibration's extremes
    noise_model = HistogramNoiseModel.from_calibration_stack(calibration, bins=128,
                                                             value_range=(low - margin, high + margin))
    config = PN2VConfig(frames[:-1], mode="pn2v", n_samples=args.n_samples, unet_n_depth=2, unet_n_first=args.n_first,
                        n2v_patch_shape=(64, 64), train_batch_size=8, train_epochs=args.epochs,
                        train_steps_per_epoch=args.steps, train_tensorboard=False, seed=args.seed)
    model = PN2V(config, "pn2v_large", basedir=str(basedir), noise_model=noise_model)
    model.train(frames[:-1], frames[-1:], verbose=0)
    return model


def denoise_on_a_cluster(model, noisy, output, workers):
    from distributed import Client, LocalCluster

    from pn2v_tf.chunked import predict_to_zarr

    with LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        print(f"cluster: {client}")
        return predict_to_zarr(model, noisy, output, axes="TYX", scheduler=client)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="pn2v_large_data", help="folder for the arrays and the model")
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--n-samples", type=int, default=200)
    parser.add_argument("--n-first", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    folder = Path(args.output)
    if folder.exists():
        raise SystemExit(f"{folder} exists; not overwriting it (choose another --output)")
    folder.mkdir(parents=True)
    noisy, calibration = write_noisy_zarr(folder / "noisy.zarr", args.frames, args.size, args.chunk, args.seed)
    model = train(noisy, calibration, folder / "models", args)
    denoised = denoise_on_a_cluster(model, noisy, folder / "denoised.zarr", args.workers)
    frame = noisy.shape[0] - 1
    in_memory = model.predict(noisy[frame], axes="YX")
    difference = float(np.abs(denoised[frame] - in_memory).max() / np.abs(in_memory).max())
    print(f"wrote {folder / 'denoised.zarr'} {denoised.shape} chunks {denoised.chunks}; last frame against "
          f"model.predict in memory: largest relative difference {difference:.1e}")
    return denoised


if __name__ == "__main__":
    main()
