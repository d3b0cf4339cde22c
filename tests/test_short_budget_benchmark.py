"""Tests of benchmarks/short_budget.py's report and arguments (the training itself is what the benchmark measures)."""

import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def short_budget():
    spec = importlib.util.spec_from_file_location("short_budget", os.path.join(ROOT, "benchmarks", "short_budget.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(variant, steps, seed, **scores):
    return {"dataset": "synthetic", "variant": variant, "steps": steps, "seed": seed, **scores}


def test_table_gives_means_over_seeds_and_the_lead_over_n2v_of_the_same_seed(short_budget):
    rows = [_row("n2v", 400, 0, n2v=30.0), _row("n2v", 400, 1, n2v=32.0),
            _row("pn2v", 400, 0, prior_mean=29.0, mmse=30.5), _row("pn2v", 400, 1, prior_mean=31.0, mmse=31.7),
            _row("n2v", 1600, 0, n2v=33.0), _row("pn2v", 1600, 0, prior_mean=33.5, mmse=34.0),
            {**_row("pn2v", 400, 0, prior_mean=1.0, mmse=1.0), "dataset": "Confocal_FISH"}]

    lines = short_budget.table(rows, "synthetic").splitlines()

    assert "| 400 | N2V | 0 1 | | 31.00 (30.00..32.00) | |" in lines
    # leads +0.5 and -0.3: mean +0.10; prior means 29 and 31
    assert "| 400 | pn2v | 0 1 | 30.00 (29.00..31.00) | 31.10 (30.50..31.70) | 0.10 (-0.30..0.50) |" in lines
    assert "| 1600 | pn2v | 0 | 33.50 (33.50..33.50) | 34.00 (34.00..34.00) | 1.00 (1.00..1.00) |" in lines
    assert not any("1.00 (1.00..1.00) |" in line and "| 400 |" in line for line in lines)   # other dataset left out


def test_variants_change_only_what_they_name(short_budget):
    from pn2v_tf import PN2VConfig

    defaults = vars(PN2VConfig(None))
    for name, values in short_budget.VARIANTS.items():
        assert all(key in defaults for key in values), name
    assert short_budget.VARIANTS["no_mean"] == {"train_mean_weight": 0.0} and defaults["train_mean_weight"] == 1.0
    assert all(defaults[key] == value for key, value in short_budget.VARIANTS["mean1_decoupled"].items())
    assert short_budget.VARIANTS["mean05_decoupled"]["train_mean_weight"] != defaults["train_mean_weight"]
    assert short_budget.VARIANTS["mean1"]["train_decouple_mean"] is not defaults["train_decouple_mean"]
    assert short_budget.VARIANTS["independent_x10"]["samples_init_spread"] is None


def test_unknown_variant_is_refused_by_name(short_budget, capsys):
    with pytest.raises(SystemExit):
        short_budget.main(["--variants", "pn2v", "bogus"])
    assert "unknown variants ['bogus']" in capsys.readouterr().err
