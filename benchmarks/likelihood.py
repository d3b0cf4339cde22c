"""Cost of the PN2V loss and its gradient for each noise model, without the network.

Times ``-log mean_k p(x|s_k)`` and its gradient with respect to the K samples for a batch shaped
like the training graph's masked pixels, (batch, masked pixels per patch, K), two ways: as
TensorFlow runs it op by op in one ``tf.function``, and as training runs it, through
:class:`pn2v_tf.losses.PN2VLoss` (loss and gradient fused into one XLA program). Prints
milliseconds per evaluation and the ratio to the histogram's.

    python benchmarks/likelihood.py [--batch 16] [--pixels 123] [--n-samples 800] [--repeats 10]
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from pn2v_tf.datasets import make_synthetic_data  # noqa: E402
from pn2v_tf.losses import PN2VLoss, pn2v_negative_log_likelihood  # noqa: E402
from pn2v_tf.noise_models import GMMNoiseModel, HistogramNoiseModel  # noqa: E402


def loss_and_gradient_ms(noise_model, observation, samples, repeats, fused):
    loss_fn = PN2VLoss(noise_model)

    def per_pixel():
        if fused:
            return loss_fn.call(observation, samples)
        return pn2v_negative_log_likelihood(noise_model.log_likelihood(observation, samples))

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(per_pixel())
        return loss, tape.gradient(loss, samples)

    step()
    started = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - started) / repeats * 1000


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--pixels", type=int, default=123, help="masked pixels per patch (3%% of 64x64)")
    parser.add_argument("--n-samples", type=int, default=800)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)

    data = make_synthetic_data(seed=0, max_photons=300, calibration_frames=20)
    models = {"histogram, 256 bins": HistogramNoiseModel.from_calibration_stack(data.calibration)}
    for n in (1, 3):
        models[f"GMM, {n} Gaussian{'s' if n > 1 else ''}"] = GMMNoiseModel.from_calibration_stack(
            data.calibration, n_gaussians=n, steps=50)
    models["GMM, 3 Gaussians, saturation"] = GMMNoiseModel.from_calibration_stack(
        data.calibration, n_gaussians=3, steps=50, saturation=(0.0, float(data.calibration.max())))

    rng = np.random.default_rng(0)
    low, high = np.percentile(data.calibration_clean, (5, 95))
    observation = tf.constant(rng.uniform(low, high, (args.batch, args.pixels, 1)).astype(np.float32))
    samples = tf.Variable(rng.uniform(low, high, (args.batch, args.pixels, args.n_samples)).astype(np.float32))
    print(f"loss + gradient for {args.batch} x {args.pixels} x {args.n_samples} samples\n")
    print("| noise model | op by op, ms | ratio to histogram | fused XLA (as trained), ms | ratio to histogram |")
    print("|---|---|---|---|---|")
    reference = {}
    for name, model in models.items():
        ms = {fused: loss_and_gradient_ms(model, observation, samples, args.repeats, fused) for fused in (False, True)}
        for fused in ms:
            reference.setdefault(fused, ms[fused])
        print(f"| {name} | {ms[False]:.1f} | {ms[False] / reference[False]:.2f} | {ms[True]:.1f} | "
              f"{ms[True] / reference[True]:.2f} |")


if __name__ == "__main__":
    main()
