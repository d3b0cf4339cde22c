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


def test_markdown_3d_training_rows():
    speed = load_speed()
    mode = {"steps_per_s": 0.25, "s_per_step": 4.0, "patches_per_s": 1.0, "voxels_per_s": 65536.0}
    results = {"date": "2026-01-01 00:00 UTC", "command": "python benchmarks/speed.py --configs 3d --sizes",
               "machine": {"cpu": "Test CPU", "cores": 2, "tensorflow": "2.x"}, "noise_model": "histogram",
               "onednn": "on", "configs": {"3d": dict(speed.THREE_D_CONFIGS["3d"])}, "train": {}, "predict": {},
               "train3d": {"3d": {"pn2v": dict(mode, steps_per_s=0.24), "n2v": mode, "ratio_pn2v_over_n2v": 0.96,
                                  "ratio_range": [0.9, 1.01], "peak_rss_mb": 1500.0, "steps": 4, "rounds": 3,
                                  "onednn": True}}}
    text = speed.format_markdown(results)
    assert "untrained networks; TF_ENABLE_ONEDNN_OPTS on" in text
    assert ("| PN2V | 3d: depth 3, 32 feat., K=800, 16x64x64, pool 1x2x2, batch 4, 3% masked | 0.240 | 1.00 | "
            "0.066 | 4.000 | 1500 | 0.96 (0.90..1.01) |") in text
    assert "| N2V | 3d: depth 3, 32 feat., K=800, 16x64x64, pool 1x2x2, batch 4, 3% masked | 0.250 |" in text
    assert "3 rounds of 4 steps per mode" in text and "oneDNN kernels on" in text
    assert "| prediction" not in text and "| training | network |" not in text


def test_3d_configurations_follow_the_options():
    speed = load_speed()
    args = type("Args", (), {"batch_3d": 2, "n_first_3d": 64})()
    assert speed.network_config(args, "3d")["batch"] == 2 and speed.network_config(args, "3d")["n_first"] == 64
    assert speed.network_config(args, "3d-small") == speed.THREE_D_CONFIGS["3d-small"]
    assert speed.THREE_D_CONFIGS["3d"]["batch"] == 4  # the module's table is not changed by the call


def _channel_benchmark():
    spec = importlib.util.spec_from_file_location("channel_prediction",
                                                  os.path.join(ROOT, "benchmarks", "channel_prediction.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_channel_prediction_ratios_are_per_round():
    times = {"forward_n2v_c1": [1.0, 2.0], "prior_mean_c1": [2.0, 3.0], "mmse_c1": [3.0, 3.0],
             "forward_n2v_c3": [1.0, 1.0], "prior_mean_c3": [4.0, 2.0], "mmse_c3": [6.0, 6.0]}
    ratios = _channel_benchmark().ratios(times, 3)
    assert ratios["mmse_over_prior_mean_c1"] == [1.25, 1.0, 1.5]          # 3/2 and 3/3 per round
    assert ratios["prior_mean_over_forward_c3"] == [3.0, 2.0, 4.0]
    assert ratios["mmse_c3_over_mmse_c1"] == [2.0, 2.0, 2.0]
    assert ratios["mmse_c3_over_c3_single_channel_mmses"] == [2 / 3, 2 / 3, 2 / 3]


def test_channel_prediction_runs_and_reports_every_estimator(tmp_path):
    result = _channel_benchmark().main(["--size", "32", "--rounds", "1", "--n-depth", "2", "--n-first", "4",
                                        "--n-samples", "4", "--channels", "2", "--json", str(tmp_path / "c.json")])
    assert set(result["s"]) == {f"{name}_c{c}" for name in ("forward_n2v", "prior_mean", "mmse") for c in (1, 2)}
    assert all(len(times) == 1 for times in result["s_all"].values())
    assert (tmp_path / "c.json").exists()


def test_markdown_engine_row_has_both_saved_models():
    speed = load_speed()
    seconds = {"forward_n2v": 0.5, "prior_mean": 0.7, "mmse": 0.9, "saved_model_mmse": 2.0,
               "saved_model_xla_mmse": 0.95}
    ratios = {"mmse_over_prior_mean": [1.29, 1.2, 1.3], "prior_mean_over_forward_n2v": [1.4, 1.4, 1.5],
              "saved_model_over_predict": [2.2, 2.1, 2.3], "saved_model_xla_over_predict": [1.06, 1.0, 1.1]}
    results = {"date": "2026-01-01 00:00 UTC", "command": "python benchmarks/speed.py --configs --sizes",
               "machine": {"cpu": "Test CPU", "cores": 2, "tensorflow": "2.x"}, "noise_model": "histogram",
               "configs": {}, "train": {}, "predict": {},
               "engine": {"512": {"size": 512, "rounds": 5, "s": seconds, "ratios": ratios,
                                  "saved_model_max_relative_difference": 1e-6}}}
    text = speed.format_markdown(results)
    assert ("| medians of 5 rounds | 512x512 | 0.50 | 0.70 | 0.90 | 2.00 | 0.95 | 1.29 (1.20..1.30) | "
            "1.40 (1.40..1.50) | 2.20 (2.10..2.30) | 1.06 (1.00..1.10) |") in text
    assert "SavedModel (XLA)/predict" in text and "at most 1.0e-06" in text
