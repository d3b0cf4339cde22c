"""Does the exported SavedModel give ``PN2V.predict``'s result in every TensorFlow that runs it?

Exports small untrained models of every mode and noise model kind (pn2v with a histogram, pn2v with
a GMM with saturated tails, n2v, care), runs their ``serving_default`` on an odd-sized test image in
TensorFlow 2.7.4 and 2.10.1 (deepImageJ's engines) and 2.12 in graph mode by signature, as
TensorFlow Java loads a SavedModel, and in this Python's TensorFlow eagerly, through Keras'
``TFSMLayer`` and in graph mode, and prints the largest difference from ``PN2V.predict`` relative to
the largest value of the image. The older TensorFlows come from the tests' recipe
(``tests/tensorflow_runtimes.py``), built once into ``~/.cache/pn2v_tf``.

    python benchmarks/export_runtimes.py
    python benchmarks/export_runtimes.py --runtimes 2.7.4 current
"""

import argparse
import os
import sys
import tempfile
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from tensorflow_runtimes import DEEPIMAGEJ_TENSORFLOWS, VENV_TENSORFLOW, run_saved_models, tensorflow_runtime  # noqa: E402

RUNTIMES = {version: ["session"] for version in DEEPIMAGEJ_TENSORFLOWS + (VENV_TENSORFLOW,)}
RUNTIMES["current"] = ["eager", "tfsm", "session"]


def tiny_models():
    """Untrained models of every mode and noise model kind, on synthetic data, and a test image."""
    import keras

    from pn2v_tf import GMMNoiseModel, HistogramNoiseModel, PN2V, PN2VConfig
    from pn2v_tf.datasets import make_synthetic_data

    data = make_synthetic_data(seed=5, shape=(64, 64), n_train=2, calibration_shape=(32, 32), calibration_frames=10)
    values = np.concatenate([data.calibration.ravel(), data.train.ravel(), data.test.ravel()])
    histogram = HistogramNoiseModel.from_calibration_stack(
        data.calibration, bins=64, value_range=(float(values.min()) - 1, float(values.max()) + 1))
    saturation = tuple(float(v) for v in np.percentile(data.calibration, [2, 98]))
    gmm = GMMNoiseModel.fit(data.calibration.mean(axis=0), data.calibration, steps=20, saturation=saturation)
    tiny = dict(unet_n_depth=2, unet_n_first=8, n2v_patch_shape=(32, 32), seed=0, train_tensorboard=False)
    pn2v = dict(mode="pn2v", n_samples=16, samples_init_spread=1.0)
    models = {}
    for seed, (name, config, noise_model) in enumerate((("pn2v histogram", pn2v, histogram),
                                                         ("pn2v GMM (saturated)", pn2v, gmm),
                                                         ("n2v", dict(mode="n2v"), None),
                                                         ("care", dict(mode="care"), None))):
        keras.utils.set_random_seed(seed)
        models[name] = PN2V(PN2VConfig(data.train, **config, **tiny), f"model{seed}", basedir=None,
                            noise_model=noise_model)
    return models, data.test[:61, :57].astype(np.float32)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runtimes", nargs="+", choices=list(RUNTIMES), default=list(RUNTIMES))
    args = parser.parse_args()

    models, image = tiny_models()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        np.save(folder / "image.npy", image[np.newaxis, ..., np.newaxis])
        expected = {}
        for index, (name, model) in enumerate(models.items()):
            model.export_SavedModel(folder / f"model{index}")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                expected[name] = model.predict(image, n_tiles=(1, 1))
        print("| TensorFlow | how | " + " | ".join(models) + " |")
        print("|---|---|" + "---|" * len(models))
        for version in args.runtimes:
            try:
                runtime = None if version == "current" else tensorflow_runtime(version)
            except pytest.skip.Exception as error:  # the runtime could not be built
                print(f"| {version} | not available: {error} |")
                continue
            for how in RUNTIMES[version]:
                jobs = [{"model": str(folder / f"model{index}"), "input": str(folder / "image.npy"),
                         "signature": "serving_default", "how": how} for index in range(len(models))]
                run = folder / f"{version}-{how}"
                run.mkdir()
                outputs, report = run_saved_models(runtime, jobs, run)
                differences = [np.abs(out[0, ..., 0] - expected[name]).max() / np.abs(expected[name]).max()
                               for name, out in zip(models, outputs)]
                print(f"| {report['tensorflow']} | {how} | " + " | ".join(f"{d:.1e}" for d in differences) + " |")


if __name__ == "__main__":
    main()
