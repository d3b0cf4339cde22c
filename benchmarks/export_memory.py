"""Peak memory and time of the exported SavedModel on a large image (paper network, K = 800).

Exports an untrained model (weights do not change memory or time), then denoises one random
image of the given size with the SavedModel's ``serving_default`` in a fresh process that imports
TensorFlow only, and prints that process's peak resident memory and the run time. For comparison
it prints the size of one untiled image x K float32 tensor.

    python benchmarks/export_memory.py                      # 1024 x 1024, depth 3, 64 features, K = 800
    python benchmarks/export_memory.py --size 512 --n-samples 400
    python benchmarks/export_memory.py --how session        # graph mode, as deepImageJ runs it
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


RUN = r"""
import json, resource, sys, time
import numpy as np
import tensorflow as tf
image = np.random.default_rng(0).normal(float(sys.argv[3]), float(sys.argv[4]), (1, int(sys.argv[2]), int(sys.argv[2]), 1))
image = image.astype(np.float32)
if sys.argv[5] == "eager":
    serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
    start = time.perf_counter()
    out = serve(input=tf.constant(image))["output"].numpy()
else:  # graph mode by signature, as TensorFlow Java (deepImageJ) runs it
    session = tf.compat.v1.Session(graph=tf.Graph())
    with session.graph.as_default():
        signature = tf.compat.v1.saved_model.loader.load(session, ["serve"], sys.argv[1]).signature_def["serving_default"]
    start = time.perf_counter()
    out = session.run(signature.outputs["output"].name, {signature.inputs["input"].name: image})
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "shape": list(out.shape), "finite": bool(np.isfinite(out).all()),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1024, help="side of the square test image")
    parser.add_argument("--n-depth", type=int, default=3)
    parser.add_argument("--n-first", type=int, default=64)
    parser.add_argument("--n-samples", type=int, default=800)
    parser.add_argument("--how", choices=("eager", "session"), default="eager",
                        help="eager: tf.saved_model.load; session: graph mode by signature, as TensorFlow Java runs it")
    args = parser.parse_args()

    from pn2v_tf import PN2V, PN2VConfig
    from pn2v_tf.datasets import make_synthetic_data
    from pn2v_tf.noise_models import HistogramNoiseModel

    data = make_synthetic_data(seed=0, shape=(64, 64), n_train=1, calibration_shape=(64, 64), calibration_frames=20)
    noise_model = HistogramNoiseModel.from_calibration_stack(data.calibration, bins=256)
    config = PN2VConfig(data.train, mode="pn2v", n_samples=args.n_samples, unet_n_depth=args.n_depth,
                        unet_n_first=args.n_first, seed=0)
    model = PN2V(config, "memory", basedir=None, noise_model=noise_model)
    with tempfile.TemporaryDirectory() as tmp:
        path = model.export_SavedModel(Path(tmp) / "saved_model")
        env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
        result = subprocess.run([sys.executable, "-c", RUN, str(path), str(args.size), str(config.means[0]),
                                 str(config.stds[0]), args.how], capture_output=True, text=True, env=env, check=True)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    report["untiled_samples_mb"] = args.size ** 2 * args.n_samples * 4 / 2 ** 20
    print(json.dumps({**vars(args), **report}, indent=1))


if __name__ == "__main__":
    main()
