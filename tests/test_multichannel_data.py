"""Synthetic multichannel data (pn2v_tf.datasets), the multichannel example and benchmarks/multichannel.py."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from pn2v_tf.datasets import (DEFAULT_CHANNELS, CameraParams, ChannelSpec, SyntheticData,
                              make_synthetic_multichannel, synthetic_photons)

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(shape=(96, 96), n_train=2, calibration_shape=(64, 64), calibration_frames=40)


def load_script(relative_path, name):
    spec = importlib.util.spec_from_file_location(name, ROOT / relative_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def data():
    return make_synthetic_multichannel(seed=0, **SMALL)


def _arrays(data):
    return [data.train, data.test, data.test_clean, data.calibration, data.calibration_clean]


# -- data: layout and determinism --------------------------------------------------------------------

def test_shapes_dtypes_and_channel_names(data):
    assert data.train.shape == (2, 96, 96, 3) and data.test.shape == data.test_clean.shape == (96, 96, 3)
    assert data.calibration.shape == (3, 40, 64, 64) and data.calibration_clean.shape == (3, 64, 64)
    assert all(array.dtype == np.float32 for array in _arrays(data))
    assert data.n_channels == 3 and data.names == ("nuclei", "vesicles", "filaments")
    assert data.cameras == tuple(spec.camera for spec in DEFAULT_CHANNELS)


def test_same_seed_gives_identical_data_and_another_seed_other_data(data):
    again = make_synthetic_multichannel(seed=0, **SMALL)
    for a, b in zip(_arrays(data), _arrays(again)):
        np.testing.assert_array_equal(a, b)
    other = make_synthetic_multichannel(seed=1, **SMALL)
    for c in range(3):
        assert not np.allclose(other.test_clean[..., c], data.test_clean[..., c])


def test_a_channel_does_not_depend_on_the_other_channels_or_on_n_train(data):
    alone = make_synthetic_multichannel(seed=0, **dict(SMALL, n_train=1), channels=DEFAULT_CHANNELS[:1])
    assert alone.train.shape == (1, 96, 96, 1)
    np.testing.assert_array_equal(alone.train[0, ..., 0], data.train[0, ..., 0])
    np.testing.assert_array_equal(alone.test_clean[..., 0], data.test_clean[..., 0])
    np.testing.assert_array_equal(alone.calibration[0], data.calibration[0])


def test_images_of_a_channel_are_different_scenes(data):
    assert not np.allclose(data.train[0], data.train[1])
    assert not np.allclose(data.train[0], data.test)


def test_channel_view_is_a_single_channel_data_set(data):
    one = data.channel(2)
    assert isinstance(one, SyntheticData) and one.camera == DEFAULT_CHANNELS[2].camera
    np.testing.assert_array_equal(one.train, data.train[..., 2])
    np.testing.assert_array_equal(one.calibration, data.calibration[2])
    assert one.test.shape == (96, 96)


# -- data: channels differ in brightness, noise and structure -----------------------------------------

def test_each_channel_spans_its_own_photon_range_through_its_own_camera(data):
    for c, spec in enumerate(data.channels):
        clean = data.test_clean[..., c]
        camera = spec.camera
        assert clean.max() == pytest.approx(camera.gain * spec.max_photons + camera.offset, rel=1e-5)
        assert clean.min() >= camera.gain * spec.background + camera.offset - 1e-3
    photons = [spec.max_photons for spec in data.channels]
    assert len(set(photons)) == 3   # brightness differs


def test_calibration_stacks_reveal_each_channels_gain_offset_and_read_noise(data):
    """Var[x] = gain * (s - offset) + read_noise**2: a line through the calibration frames' moments."""
    fitted = []
    for c, camera in enumerate(data.cameras):
        frames = data.calibration[c].astype(np.float64)
        mean, variance = frames.mean(axis=0).ravel(), frames.var(axis=0, ddof=1).ravel()
        true_signal = data.calibration_clean[c].ravel().astype(np.float64)
        np.testing.assert_allclose(mean, true_signal, atol=5 * np.sqrt(variance.max() / frames.shape[0]))
        slope, intercept = np.polyfit(true_signal - camera.offset, variance, 1)
        assert slope == pytest.approx(camera.gain, rel=0.1)
        assert np.sqrt(max(intercept, 0.0)) == pytest.approx(camera.read_noise, rel=0.25, abs=1.0)
        fitted.append(slope)
    assert fitted[0] < fitted[1] < fitted[2]   # the default channels' gains are 2, 3 and 5


def test_calibration_covers_the_signal_of_every_channel(data):
    for c in range(data.n_channels):
        low, high = data.calibration_clean[c].min(), data.calibration_clean[c].max()
        signal = data.test_clean[..., c]
        assert low <= signal.min() and high >= signal.max()
        assert high == pytest.approx(data.cameras[c].gain * 1.2 * data.channels[c].max_photons + data.cameras[c].offset,
                                     rel=1e-5)


def _structure_measures(clean):
    """Foreground: brighter than a tenth of the way from background to peak. Returns the fractions of
    foreground pixels in connected structures of more than 300 and of fewer than 60 pixels, and the
    fraction that survives an erosion by 3 pixels (thin structures vanish)."""
    mask = clean > clean.min() + 0.1 * (clean.max() - clean.min())
    labels, _ = ndimage.label(mask)
    area_of_pixel = np.bincount(labels.ravel())[labels[mask]]
    eroded = ndimage.binary_erosion(mask, iterations=3).sum() / mask.sum()
    return (area_of_pixel > 300).mean(), (area_of_pixel < 60).mean(), eroded


def test_default_channels_have_large_nuclei_small_vesicles_and_thin_filaments():
    data = make_synthetic_multichannel(seed=3, shape=(256, 256), n_train=1, calibration_shape=(32, 32),
                                       calibration_frames=2)
    nuclei, vesicles, filaments = (_structure_measures(data.test_clean[..., c]) for c in range(3))
    assert nuclei[0] > 0.8 and nuclei[2] > 0.5             # large, compact
    assert vesicles[0] == 0 and vesicles[1] > 0.5          # small
    assert filaments[0] > 0.5 and filaments[2] < 0.15      # long (connected) and thin
    # independent stains: the channels' ground truths are hardly correlated
    correlation = np.corrcoef(data.test_clean.reshape(-1, 3).T)
    assert np.all(np.abs(correlation[np.triu_indices(3, 1)]) < 0.3)


def test_structure_counts_scale_with_the_image_area():
    spec = ChannelSpec("x", max_photons=10.0, n_blobs=150, n_filaments=7)
    assert spec.structure_counts((256, 256)) == (150, 7)
    assert spec.structure_counts((128, 128)) == (38, 2)     # 37.5 -> 38, 1.75 -> 2
    assert spec.structure_counts((16, 16)) == (1, 1)        # a positive count never vanishes
    assert ChannelSpec("y", max_photons=10.0, n_blobs=0, n_filaments=3).structure_counts((512, 512)) == (0, 12)


def test_a_channel_without_structures_is_its_constant_background():
    spec = ChannelSpec("empty", max_photons=10.0, background=3.0, n_blobs=0, n_filaments=0,
                       camera=CameraParams(gain=2.0, offset=50.0, read_noise=1.0))
    data = make_synthetic_multichannel(seed=0, shape=(32, 32), n_train=1, calibration_shape=(32, 32),
                                       calibration_frames=2, channels=[spec])
    np.testing.assert_allclose(data.test_clean, 2.0 * 3.0 + 50.0)


def test_texture_contrast_mottles_the_inside_of_blobs():
    def core_spread(contrast):
        photons = synthetic_photons((64, 64), np.random.default_rng(7), n_blobs=1, n_filaments=0,
                                    blob_radius_range=(20.0, 20.0), texture_contrast=contrast, texture_scale=1.5)
        core = photons > photons.min() + 0.6 * (photons.max() - photons.min())
        core = ndimage.binary_erosion(core, iterations=4)        # away from the blurred edge
        return photons[core].std() / photons[core].mean()

    spreads = [core_spread(contrast) for contrast in (0.0, 0.4, 0.8)]
    assert spreads[0] < 0.025 and spreads[0] * 2 < spreads[1] and spreads[1] * 1.5 < spreads[2]


def test_default_texture_arguments_keep_the_single_channel_scenes():
    default = synthetic_photons((48, 48), np.random.default_rng(2))
    explicit = synthetic_photons((48, 48), np.random.default_rng(2), blob_radius_range=(1.5, 14.0),
                                 texture_contrast=0.4, texture_scale=3.0)
    np.testing.assert_array_equal(default, explicit)


@pytest.mark.parametrize("kwargs, match", [
    (dict(max_photons=2.0, background=2.0), "max_photons"),
    (dict(max_photons=10.0, texture_contrast=1.5), "texture_contrast"),
    (dict(max_photons=10.0, blob_radius_range=(5.0, 2.0)), "blob_radius_range"),
    (dict(max_photons=10.0, blob_radius_range=3.0), "blob_radius_range"),
    (dict(max_photons=10.0, n_blobs=-1), "n_blobs"),
    (dict(max_photons=10.0, camera=(3.0, 100.0, 6.0)), "CameraParams"),
    (dict(max_photons=10.0, texture_scale=0.0), "texture_scale"),
])
def test_bad_channel_specs_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ChannelSpec("bad", **kwargs)


@pytest.mark.parametrize("channels", [[], ["nuclei"], "nuclei"])
def test_bad_channel_lists_are_rejected(channels):
    with pytest.raises(ValueError, match="ChannelSpec"):
        make_synthetic_multichannel(shape=(32, 32), calibration_shape=(32, 32), calibration_frames=2,
                                    channels=channels)


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="shape"):
        make_synthetic_multichannel(shape=(8, 32))
    with pytest.raises(ValueError, match="calibration_frames"):
        make_synthetic_multichannel(shape=(32, 32), calibration_frames=1)


# -- example --------------------------------------------------------------------------------------

EXAMPLE_TINY = ["--size", "32", "--n-train", "1", "--calibration-frames", "4", "--steps", "2", "--epochs", "1",
                "--batch", "2", "--patch", "16", "--n-samples", "8", "--n-first", "4", "--val-patches", "2"]


def test_example_writes_every_channel_of_every_image_and_prints_psnr(tmp_path, capsys):
    import tifffile

    example = load_script("examples/pn2v_multichannel.py", "pn2v_multichannel")
    output = tmp_path / "out"
    results = example.main(EXAMPLE_TINY + ["--no-n2v", "--output", str(output)])   # N2V: the same code, mode 'n2v'
    printed = capsys.readouterr().out
    assert "| image | nuclei | vesicles | filaments |" in printed
    for label in ("input", "PN2V prior mean", "PN2V MMSE"):
        assert f"| {label} | " in printed
    for name in ("noisy", "ground_truth", "pn2v_mmse", "pn2v_prior_mean"):
        written = tifffile.imread(output / f"{name}.tif")
        assert written.shape == (3, 32, 32)                      # ImageJ order: C before Y, X
        np.testing.assert_array_equal(np.moveaxis(written, 0, -1), results[name])
        assert np.all(np.isfinite(written))
    assert not (output / "n2v.tif").exists()
    with open(output / "models" / "pn2v_multichannel" / "config.json") as f:
        assert json.load(f)["single_net_per_channel"] is True                  # the default: a U-Net per channel
    with pytest.raises(SystemExit, match="not overwriting"):
        example.main(EXAMPLE_TINY + ["--output", str(output)])


# -- benchmark ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bench():
    return load_script("benchmarks/multichannel.py", "multichannel_benchmark")


def test_benchmark_quick_quality_rows_at_equal_budget(bench, tmp_path, capsys):
    path = tmp_path / "mc.json"
    summary = bench.main(["--quick", "--channels", "nuclei", "filaments", "--methods", "pn2v", "pn2v_alone",
                          "--timing-models", "--json", str(path)])
    assert json.loads(path.read_text())["quality"].keys() == summary["quality"].keys()
    quality = summary["quality"]
    assert set(quality) == {"input", "pn2v", "pn2v_prior_mean", "pn2v_alone"}
    assert all(np.shape(row["psnr"]) == (1, 2) for row in quality.values())
    assert quality["pn2v"]["patches"] == quality["pn2v_alone"]["patches"] == 6 * 2   # equal budgets
    assert summary["timing"] == {}
    printed = capsys.readouterr().out
    assert "| method | nuclei | filaments | mean |" in printed
    assert "| (b) PN2V, multichannel, shared U-Net |" in printed and "| method - N2V" not in printed


def test_benchmark_quick_timing_of_one_against_all_channels(bench):
    summary = bench.main(["--quick", "--methods", "--timing-models", "one_channel", "all_channels"])
    timing = summary["timing"]
    assert summary["quality"] == {} and set(timing["s_per_step"]) == {"one_channel", "all_channels"}
    rounds = timing["ratio_over_1ch"]["all_channels"]["per_round"]
    assert len(rounds) == 2 and all(r > 0 for r in rounds)


def test_benchmark_needs_two_channels_and_a_budget_that_splits_evenly(bench):
    with pytest.raises(SystemExit):
        bench.parse_args(["--channels", "nuclei"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--steps", "100", "--epochs", "10"])             # 100 / 3 channels
    assert bench.parse_args(["--steps", "100", "--epochs", "10", "--methods", "n2v", "pn2v"]).steps == 100


def test_budget_split_and_round_order(bench):
    assert bench.steps_per_epoch(300, 10) == 30 and bench.steps_per_epoch(100, 10) == 10
    assert bench.steps_per_epoch(300 / 3, 10) * 10 * 3 == 300
    assert bench.steps_per_epoch(2, 5) == 1
    names = ["a", "b", "c"]
    assert [bench.rotated(names, i)[0] for i in range(4)] == ["a", "b", "c", "a"]


def test_timing_summary_by_hand(bench):
    summary = bench.summarise_timing({"one_channel": [1.0, 2.0], "all_channels": [1.5, 2.5]})
    assert summary["s_per_step"] == {"one_channel": 1.5, "all_channels": 2.0}
    ratio = summary["ratio_over_1ch"]["all_channels"]
    assert ratio["ratio"] == pytest.approx(4.0 / 3.0) and ratio["per_round"] == [1.5, 1.25]
    table = bench.timing_table(summary, 3)
    assert "| PN2V, 3 channels, shared U-Net | 2.000 | 1.33 (1.25..1.50) |" in table


def test_quality_tables_on_a_made_up_result(bench):
    results = {"input": {"psnr": [[20.0, 15.0], [22.0, 17.0]]},
               "n2v": {"psnr": [[30.0, 25.0], [32.0, 27.0]], "train_s": 10.0, "steps": 30, "patches": 240},
               "pn2v_alone": {"psnr": [[31.0, 24.0], [33.0, 26.0]], "train_s": 12.0, "steps": 30, "patches": 240}}
    table = bench.quality_table(results, ["a", "b"])
    assert "| input | 21.00 (20.00..22.00) | 16.00 (15.00..17.00) | 18.50 |  |  |" in table
    assert "| (a) N2V, multichannel | 31.00 (30.00..32.00) | 26.00 (25.00..27.00) | 28.50 | 10 | 30 x 8 |" in table
    differences = bench.difference_table(results, ["a", "b"])
    assert "| (d) PN2V, each channel alone (steps / C each) | +1.00 | -1.00 |" in differences
    assert bench.difference_table(results, ["a", "b"], "n2v_single") == ""
    results["n2v_single"] = {"psnr": [[30.5, 25.5], [31.5, 26.5]], "train_s": 20.0, "steps": 30, "patches": 240}
    assert ("| (a') N2V, one U-Net per channel | 31.00 (30.50..31.50) | 26.00 (25.50..26.50) | 28.50 | 20 | 30 x 8 |"
            in bench.quality_table(results, ["a", "b"]))
    differences = bench.difference_table(results, ["a", "b"], "n2v_single")
    assert "method - N2V, one U-Net per channel (dB)" in differences
    assert "| (d) PN2V, each channel alone (steps / C each) | +1.00 | -1.00 |" in differences
