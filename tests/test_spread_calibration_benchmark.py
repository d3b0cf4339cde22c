"""Tests of benchmarks/spread_calibration.py on a tiny network and tiny images (the real run is the benchmark)."""

import importlib.util
import os

import numpy as np
import pytest
from conftest import noisy, small_histogram

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_NETWORK = dict(unet_n_depth=2, unet_n_first=4, n_samples=8, n2v_patch_shape=(16, 16), train_batch_size=4,
                    train_learning_rate=4e-4, train_steps_per_epoch=3, train_n_val_patches=4, train_tensorboard=False)


@pytest.fixture(scope="module")
def spread_calibration():
    path = os.path.join(ROOT, "benchmarks", "spread_calibration.py")
    spec = importlib.util.spec_from_file_location("spread_calibration", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.filterwarnings("ignore:.*exceed the noise model's range:UserWarning")
def test_scan_picks_an_offered_factor_and_the_least_is_the_prior_mean(spread_calibration, monkeypatch):
    import short_budget     # on sys.path through the script

    rng = np.random.default_rng(3)
    clean = rng.uniform(20, 90, (1, 32, 32)).astype(np.float32)
    data = (noisy(rng, (4, 32, 32)), rng.poisson(clean).astype(np.float32), clean, small_histogram(), 70.0)
    monkeypatch.setattr(short_budget, "load_dataset", lambda name, seed: data)
    monkeypatch.setattr(short_budget, "split", lambda train: (train[:3], train[3:]))
    monkeypatch.setattr(short_budget, "NETWORK", TINY_NETWORK)

    rows, prior_mean, chosen = spread_calibration.scan("synthetic", 80, 0)

    factors = [row[0] for row in rows]
    assert factors == list(spread_calibration.FACTORS)
    offered = [row for row in rows if row[0] <= 1]
    likeliest = max(offered, key=lambda row: row[1])[0]
    assert chosen in [row[0] for row in offered] and chosen <= likeliest   # never wider than the likeliest
    assert min(row[2] for row in rows) == 0 and all(row[2] >= 0 for row in rows)   # standard errors below the best
    assert rows[-1][0] == pytest.approx(1 / 16) and rows[-1][4] == pytest.approx(prior_mean, abs=0.05)
    assert all(np.isfinite(row[1]) and row[1] < 0 for row in rows)   # mean log evidence per pixel
    assert all(np.isfinite(row[3]) and row[3] > 0 for row in rows)   # squared error plus 2 v du/dx
