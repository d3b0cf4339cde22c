"""benchmarks/speed.py's markdown writer on a made-up result (no measurement is run)."""

import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_speed():
    spec = importlib.util.spec_from_file_location("speed", os.path.join(ROOT, "benchmarks", "speed.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_markdown_section_and_header(tmp_path):
    speed = load_speed()
    train = {"patches_per_s": 2.0, "s_per_step": 2.0, "peak_rss_mb": 800.0}
    pred = {"s": 4.0, "mpix_per_s": 0.065, "peak_rss_mb": 1000.0, "forward_gflop_per_s": 50.0}
    results = {"date": "2026-01-01 00:00 UTC", "command": "python benchmarks/speed.py --sizes 512",
               "machine": {"cpu": "Test CPU", "cores": 2, "tensorflow": "2.x"}, "noise_model": "histogram",
               "configs": {"small": dict(speed.SMALL_CONFIG)},
               "train": {"small": {"pn2v": train, "n2v": dict(train, patches_per_s=4.0), "ratio_pn2v_over_n2v": 0.5}},
               "predict": {"tuned": {"512": {"prior_mean": pred, "mmse": dict(pred, s=6.0),
                                            "ratio_mmse_over_prior_mean": 1.5}}},
               "matmul": {"n": 2048, "gflop_per_s": 200.0}}
    text = speed.format_markdown(results)
    assert text.startswith("## 2026-01-01 00:00 UTC")
    assert "`python benchmarks/speed.py --sizes 512`" in text and "Test CPU, 2 cores, TensorFlow 2.x" in text
    assert "| PN2V | small: depth 3, 16 feat., K=800, 64x64, batch 16, 3% masked | 2.00 | 2.000 | 800 | 0.50 |" in text
    assert "| mmse | tuned | 512x512 | 6.00 | 0.065 | 1000 | 1.50 |  |" in text
    assert "| prior mean | tuned | 512x512 | 4.00 | 0.065 | 1000 |  | 50.0 (25%) |" in text
    path = tmp_path / "BENCHMARKS.md"
    speed.append_markdown(str(path), text)
    speed.append_markdown(str(path), text)
    content = path.read_text()
    assert content.startswith("# Benchmarks") and content.count("# Benchmarks") == 1
    assert content.count("## 2026-01-01") == 2
