"""How well do the noise models describe the real FMD noise? Held-out log-likelihood per pixel.

For each dataset (one noise regime), the models are fitted to (ground truth, noisy) pairs of
images 1-3 and scored on image 4's pairs (its own noise realisation). Also prints the share of
observations at the zero-photon level, the sign of photon-counting (PMT) noise.

    python benchmarks/fmd_noise_models.py [--regime raw] [--data ../shared/data/fmd]
"""

import argparse
import os
import sys
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from fmd_table1 import DATASETS, DEFAULT_DATA, EIGHT_BIT_BINS, check_data_dir, load_regime  # noqa: E402


def models(signal, observation):
    from pn2v_tf.noise_models import GMMNoiseModel, HistogramNoiseModel

    return {
        "histogram, 256 bins of width 1": HistogramNoiseModel.from_pairs(signal, observation, 256, EIGHT_BIT_BINS),
        "GMM, 3 Gaussians, saturated at 0/255": GMMNoiseModel.fit(signal, observation, n_gaussians=3, n_coeff=2,
                                                                 saturation=(0.0, 255.0)),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regime", default="raw")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args(argv)
    check_data_dir(args.data.resolve())
    print("| dataset | share at the darkest pixels' commonest value +-1 (darkest 20%) | model | held-out log-likelihood (nats/pixel) |")
    print("|---|---|---|---|")
    for dataset in DATASETS:
        noisy, gt = load_regime(args.data.resolve(), dataset, args.regime)
        dark = gt <= np.percentile(gt, 20)
        zero_level = np.bincount(noisy[gt <= np.percentile(gt, 1)].astype(int)).argmax()  # most common value
        share = float(np.mean(np.abs(noisy[dark] - zero_level) <= 1))
        for name, model in models(gt[:3], noisy[:3]).items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # image 4's extremes may lie beyond the fitted range
                score = float(np.mean(model.log_likelihood(noisy[3], gt[3])))
            print(f"| {dataset} | {share:.2f} (values {zero_level - 1:.0f}..{zero_level + 1:.0f}) | {name} | {score:.3f} |")


if __name__ == "__main__":
    main()
