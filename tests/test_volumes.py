"""3-D models on z-stacks: the n-dimensional path through config, masking, network, data, tiling, export, files."""

import json
import os
import warnings

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tifffile  # noqa: E402

from pn2v_tf import HistogramNoiseModel, PN2V, PN2VConfig  # noqa: E402
from pn2v_tf.data import MaskedPatches, random_dihedral  # noqa: E402
from pn2v_tf.datasets import make_synthetic_volumes  # noqa: E402
from pn2v_tf.inference import auto_n_tiles  # noqa: E402
from pn2v_tf.masking import grid_shape, mask_patches, n_masked, neighbour_coords, stratified_coords  # noqa: E402
from pn2v_tf.nets import GatherPixels, build_networks, receptive_radius  # noqa: E402

from conftest import TINY_3D  # noqa: E402

K = 8


def _quiet(function, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return function(*args, **kwargs)


@pytest.fixture(scope="module")
def data():
    return make_synthetic_volumes(seed=0, shape=(14, 32, 32), n_train=2, calibration_shape=(32, 32),
                                  calibration_frames=20, max_photons=60.0)


@pytest.fixture(scope="module")
def noise_model(data):
    return HistogramNoiseModel.from_calibration_stack(data.calibration, bins=64)


@pytest.fixture(scope="module")
def trained(data, noise_model, tmp_path_factory):
    """A tiny 3-D PN2V model trained for two steps in a model folder: (model, basedir)."""
    basedir = tmp_path_factory.mktemp("models3d")
    keras.utils.set_random_seed(0)
    model = PN2V(PN2VConfig(data.train, mode="pn2v", n_samples=K, **TINY_3D), "vol", basedir=str(basedir),
                 noise_model=noise_model)
    _quiet(model.train, data.train[:1], data.train[1:], epochs=1, steps_per_epoch=2, verbose=0)
    return model, basedir


# -- config --------------------------------------------------------------------------------------

def test_the_config_axes_decide_the_dimensions(data):
    config = PN2VConfig(data.train[..., np.newaxis], axes="ZYX", n2v_patch_shape=(16, 32, 32))
    assert (config.n_dim, config.axes, config.unet_pool, config.block_shape) == (3, "ZYXC", (2, 2, 2), (4, 4, 4))
    assert config.means == [pytest.approx(float(data.train.mean()))] and config.is_valid()
    assert PN2VConfig(None, axes="ZYX").n2v_patch_shape == (16, 64, 64)
    assert PN2VConfig(None).n_dim == 2 and PN2VConfig(None).unet_pool == (2, 2)  # the default stays 2-D
    with pytest.raises(ValueError, match=r"X must have axes SZYX \(or SZYXC with one channel\)"):
        PN2VConfig(data.train[0], axes="ZYX")


@pytest.mark.parametrize("changes, invalid", [
    (dict(n2v_patch_shape=(10, 64, 64)), ("n2v_patch_shape",)),               # 10 is no multiple of 2**2
    (dict(n2v_patch_shape=(10, 64, 64), unet_pool=(1, 2, 2)), ()),           # without pooling along Z it is
    (dict(n2v_patch_shape=(64, 64)), ("n2v_patch_shape",)),                  # 2-D patch for a 3-D model
    (dict(unet_pool=(2, 2)), ("unet_pool",)),
    (dict(unet_pool=(0, 2, 2)), ("unet_pool",)),
    (dict(n2v_patch_shape=(2, 64, 64), unet_pool=(1, 2, 2)), ("n2v_patch_shape",)),  # not above the radius 2
])
def test_is_valid_names_a_patch_shape_or_pooling_that_does_not_fit(changes, invalid):
    assert PN2VConfig(None, axes="ZYX", **changes).is_valid(return_invalid=True)[1] == invalid


def test_a_config_written_before_unet_pool_existed_loads_as_2d():
    stored = {key: value for key, value in vars(PN2VConfig(None)).items() if key != "unet_pool"}
    config = PN2VConfig(**json.loads(json.dumps(stored)))
    assert config.unet_pool == (2, 2) and config.n2v_patch_shape == (64, 64) and config.is_valid()


# -- masking and augmentation ---------------------------------------------------------------------

def test_3d_masking_covers_perc_pix_of_the_voxels():
    shape = (16, 64, 64)
    assert grid_shape(shape, 3.0) == tuple(round(s * 0.03 ** (1 / 3)) for s in shape) == (5, 20, 20)
    assert n_masked(shape, 3.0) / np.prod(shape) == pytest.approx(0.03, rel=0.1)
    # the 2-D spacing sqrt(100 / perc) applied to three axes would mask about 0.5 % of the voxels
    assert np.prod([round(s * 0.03 ** 0.5) for s in shape]) / np.prod(shape) < 0.006


def test_3d_stratified_coords_put_one_voxel_in_every_cell():
    shape, perc = (9, 20, 24), 5.0
    coords = stratified_coords(np.random.default_rng(1), 50, shape, perc)
    grid = grid_shape(shape, perc)
    assert coords.shape == (50, np.prod(grid), 3)
    cells = [np.searchsorted((np.arange(n + 1) * s) // n, coords[..., axis], side="right") - 1
             for axis, (s, n) in enumerate(zip(shape, grid))]
    flat = (cells[0] * grid[1] + cells[1]) * grid[2] + cells[2]
    assert all(np.array_equal(np.sort(row), np.arange(np.prod(grid))) for row in flat)


def test_3d_neighbours_lie_in_the_cube_and_are_never_the_voxel_itself():
    rng = np.random.default_rng(2)
    shape, radius = (5, 12, 12), 2
    coords = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).reshape(-1, 3)
    coords = np.repeat(coords, 20, axis=0)
    neighbours = neighbour_coords(rng, coords, shape, radius)
    offsets = neighbours - coords
    assert not np.any(np.all(offsets == 0, axis=-1))
    assert np.abs(offsets).max() <= radius and np.all(neighbours >= 0) and np.all(neighbours < shape)
    assert set(np.unique(offsets[..., 0])) == set(range(-radius, radius + 1))  # Z offsets are drawn too


def test_3d_mask_patches_replace_exactly_the_masked_voxels_by_neighbours():
    patches = np.random.default_rng(3).normal(size=(3, 8, 16, 16)).astype(np.float32)
    masked, coords, values = mask_patches(np.random.default_rng(4), patches, 5.0, 2)
    at = (np.arange(3)[:, None], coords[..., 0], coords[..., 1], coords[..., 2])
    np.testing.assert_array_equal(values, patches[at])
    changed = masked != patches
    assert changed.sum() == np.count_nonzero(masked[at] != patches[at]) == coords.shape[0] * coords.shape[1]
    for b, (z, y, x) in zip(np.repeat(np.arange(3), coords.shape[1]), coords.reshape(-1, 3)):
        window = patches[b, max(z - 2, 0):z + 3, max(y - 2, 0):y + 3, max(x - 2, 0):x + 3]
        assert masked[b, z, y, x] in window


def test_3d_augmentation_flips_z_but_never_rotates_it_into_y_or_x():
    z, y, x = np.meshgrid(np.arange(4), np.arange(6), np.arange(6), indexing="ij")
    patch = (z * 100 + y * 10 + x).astype(np.float32)
    (out,) = random_dihedral(np.random.default_rng(5), np.repeat(patch[None], 200, axis=0), n_dim=3)
    planes_in = [set(plane.ravel()) for plane in patch]
    seen = set()
    for sample in out:
        planes_out = [set(plane.ravel()) for plane in sample]
        assert planes_out in (planes_in, planes_in[::-1])  # each z plane stays one z plane
        seen.add(tuple(sample[0, 0, :2]) + (sample[0, 0, 0] >= 300,))
    assert len(seen) == 16  # 8 transforms in YX, each with and without the Z flip


def test_masked_patches_of_volumes_carry_3d_coordinates(data):
    dataset = MaskedPatches(data.train, (8, 16, 16), batch_size=3, steps_per_epoch=1, perc_pix=5.0, seed=0)
    inputs, targets = dataset[0]
    assert inputs["image"].shape == (3, 8, 16, 16, 1) and inputs["coords"].shape == (3, n_masked((8, 16, 16), 5.0), 1, 3)
    assert targets.shape == (3, inputs["coords"].shape[1], 1)


# -- network -------------------------------------------------------------------------------------

def test_gather_pixels_reads_3d_coordinates():
    features = np.random.default_rng(6).normal(size=(2, 3, 4, 5, 6)).astype(np.float32)
    coords = np.array([[[0, 0, 0], [2, 3, 4]], [[1, 2, 3], [2, 0, 1]]], np.int32)
    gathered = keras.ops.convert_to_numpy(GatherPixels()(features, coords))
    expected = np.stack([features[b, c[:, 0], c[:, 1], c[:, 2]] for b, c in enumerate(coords)])
    np.testing.assert_array_equal(gathered, expected)


def test_3d_receptive_field_per_axis_bounds_what_an_output_voxel_sees():
    config = PN2VConfig(None, mode="n2v", axes="ZYX", unet_n_depth=2, unet_n_first=4, unet_pool=(1, 2, 2))
    radius = receptive_radius(2, 3, (1, 2, 2))
    assert radius == (6, 10, 10)  # along Z: six 3x3x3 convolutions at full resolution, 2 * (2 * 1 + 1)
    keras.utils.set_random_seed(7)
    network, _ = build_networks(config)
    base = np.random.default_rng(8).normal(size=(1, 16, 32, 32, 1)).astype(np.float32)
    bumped = base.copy()
    bumped[0, 8, 16, 16, 0] += 100.0
    changed = np.abs(network.predict(bumped, verbose=0) - network.predict(base, verbose=0))[0, ..., 0] > 1e-4
    reach = [int(np.max(np.abs(np.nonzero(changed)[axis] - centre))) for axis, centre in enumerate((8, 16, 16))]
    assert reach[0] == radius[0] and all(r <= bound for r, bound in zip(reach[1:], radius[1:]))


# -- prediction ----------------------------------------------------------------------------------

def test_auto_tiles_of_a_volume_bound_tile_voxels_times_k():
    tiles = auto_n_tiles((64, 512, 512), 800, 2 ** 26, context=(6, 12, 12))
    sizes = [np.ceil(s / n) + 2 * c * (n > 1) for s, n, c in zip((64, 512, 512), tiles, (6, 12, 12))]
    assert np.prod(sizes) * 800 <= 2 ** 26 and len(tiles) == 3


def test_tiled_volume_prediction_equals_untiled(trained, data):
    model, _ = trained
    volume = data.test[:13, :30, :28]
    for estimator in ("mmse", "prior_mean"):
        whole = model.predict(volume, axes="ZYX", n_tiles=(1, 1, 1), estimator=estimator)
        tiled = model.predict(volume, axes="ZYX", n_tiles=(2, 2, 2), estimator=estimator)
        assert whole.shape == volume.shape
        np.testing.assert_allclose(tiled, whole, rtol=1e-5, atol=1e-5 * np.abs(whole).max())
    samples = model.sample_posterior(volume, n_samples=3, axes="ZYX", n_tiles=(2, 1, 1))
    assert samples.shape == (3,) + volume.shape and np.all(np.isfinite(samples))


def test_a_3d_model_takes_volume_stacks_and_needs_z(trained, data):
    model, _ = trained
    one = model.predict(data.train[0], n_tiles=(1, 1, 1))  # axes default to the model's, ZYX
    both = model.predict(np.moveaxis(data.train, 0, 1), axes="ZTYX", n_tiles=(1, 1, 1))
    np.testing.assert_allclose(both[:, 0], one, rtol=1e-6)
    with pytest.raises(ValueError, match="include ZYX .* name the image's Z axis"):
        model.predict(data.train[0, 0], axes="YX")
    with pytest.raises(ValueError, match=r"n_tiles must be 3 positive integers \(Z, Y, X\)"):
        model.predict(data.train[0], axes="ZYX", n_tiles=(2, 2))


def test_a_2d_model_denoises_a_stack_slice_by_slice(data, noise_model):
    config = PN2VConfig(data.train.reshape(-1, 32, 32), mode="pn2v", n_samples=K, unet_n_depth=2,
                        unet_n_first=4, n2v_patch_shape=(16, 16), seed=0)
    model = PN2V(config, "flat", basedir=None, noise_model=noise_model)
    stacked = model.predict(data.train, axes="SZYX")
    slices = np.stack([[model.predict(plane, axes="YX") for plane in volume] for volume in data.train])
    np.testing.assert_allclose(stacked, slices, rtol=1e-6)


def test_a_reloaded_3d_model_predicts_the_same(trained, data):
    model, basedir = trained
    loaded = PN2V(None, "vol", basedir=str(basedir))
    assert loaded.config.n_dim == 3 and loaded.config.unet_pool == (1, 2, 2)
    np.testing.assert_allclose(loaded.predict(data.test), model.predict(data.test), rtol=1e-6)
    kept = tifffile.imread(basedir / "vol" / "example_input.tif")
    assert kept.shape == data.train[1].shape  # smaller than the crop: the whole validation volume


# -- export --------------------------------------------------------------------------------------

def test_a_3d_package_declares_z_and_reproduces_predict(trained, data, tmp_path):
    pytest.importorskip("bioimageio.spec", reason="optional extra not installed: pip install 'pn2v_tf[bioimageio]'")
    import zipfile

    import yaml

    from pn2v_tf import load_bioimageio
    from pn2v_tf.export import block_and_context

    model, _ = trained
    # pieces: 3 strips along Z, each cut into 2 along Y and those into 2 along X (for the volume below)
    package = _quiet(model.export_TF, tmp_path / "vol.zip", max_tile_elements=110_000)
    with zipfile.ZipFile(package) as archive:
        rdf = yaml.safe_load(archive.read("rdf.yaml"))
    block, halo = block_and_context(model.config)
    inputs, outputs = rdf["inputs"][0]["axes"], rdf["outputs"][0]["axes"]
    assert [axis["id"] for axis in inputs] == ["batch", "z", "y", "x", "channel"] and "3d" in rdf["tags"]
    assert [axis["size"] for axis in inputs[1:4]] == [{"min": 2 * h + b, "step": b} for b, h in zip(block, halo)]
    assert [axis["halo"] for axis in outputs[1:4]] == list(halo) and block[0] == 1 and halo[0] < halo[1]
    volume = data.test[:, :28, :26]
    expected = model.predict(volume)
    with load_bioimageio(package) as packaged:
        assert packaged.n_dim == 3
        for estimator in ("mmse", "prior_mean"):
            reference = expected if estimator == "mmse" else model.predict(volume, estimator="prior_mean")
            np.testing.assert_allclose(packaged.predict(volume, estimator=estimator), reference,
                                       rtol=1e-5, atol=1e-5 * np.abs(reference).max())


# -- files and the command line -------------------------------------------------------------------

def test_pn2v_train_predict_and_resume_on_a_zyx_tiff(data, noise_model, tmp_path, capsys):
    from pn2v_tf import cli, resume

    for index, volume in enumerate(data.train):
        tifffile.imwrite(tmp_path / f"stack{index}.tif", volume, imagej=True, metadata={"axes": "ZYX"})
    noise_model.save(tmp_path / "nm.npz")
    options = ["--n-samples", str(K), "--unet-depth", "2", "--unet-n-first", "4", "--unet-pool", "1", "2", "2",
               "--patch-size", "8", "16", "16", "--batch-size", "2", "--steps-per-epoch", "2", "--quiet"]
    files = [str(tmp_path / "stack0.tif"), str(tmp_path / "stack1.tif")]
    assert cli.main(["train", *files, "--noise-model", str(tmp_path / "nm.npz"), "--model", str(tmp_path / "m"),
                     "--epochs", "1", *options]) == 0
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["axes"] == "ZYXC" and config["n2v_patch_shape"] == [8, 16, 16] and config["unet_pool"] == [1, 2, 2]
    assert cli.main(["train", "--model", str(tmp_path / "m"), "--resume", "--epochs", "2", "--quiet"]) == 0
    assert resume.load_state(tmp_path / "m" / resume.STATE_FILE).epoch == 2

    assert cli.main(["predict", "--model", str(tmp_path / "m"), files[0], "-o", str(tmp_path / "out"),
                     "--n-tiles", "1", "2", "2", "--quiet"]) == 0
    with tifffile.TiffFile(tmp_path / "out" / "stack0.tif") as tif:
        assert tif.series[0].axes == "ZYX"
        written = tif.asarray()
    expected = PN2V(None, "m", basedir=str(tmp_path)).predict(data.train[0], axes="ZYX")
    np.testing.assert_allclose(written, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    capsys.readouterr()
    assert cli.main(["predict", "--model", str(tmp_path / "m"), files[0], "-o", str(tmp_path / "out2"),
                     "--n-tiles", "2", "2"]) == 2
    assert "--n-tiles takes 3 values for this 3-D model" in capsys.readouterr().err


def test_a_calibration_time_series_of_a_volume_averages_over_time_only(tmp_path):
    from pn2v_tf import cli

    frames = np.random.default_rng(9).normal(100, 5, (6, 3, 16, 16)).astype(np.float32)
    frames += np.arange(3)[None, :, None, None] * 50  # every z plane its own signal
    tifffile.imwrite(tmp_path / "calibration.tif", frames, imagej=True, metadata={"axes": "TZYX"})
    signal, observation = cli._calibration_pairs([tmp_path / "calibration.tif"], None)
    np.testing.assert_allclose(signal, np.broadcast_to(frames.mean(axis=0), frames.shape).ravel(), rtol=1e-6)
    np.testing.assert_array_equal(observation, frames.ravel())


def test_a_noise_model_bootstraps_from_a_3d_n2v_model(data):
    from pn2v_tf.bootstrap import bootstrap_noise_model

    keras.utils.set_random_seed(0)
    n2v = PN2V(PN2VConfig(data.train, mode="n2v", **TINY_3D), "n2v3d", basedir=None)
    _quiet(n2v.train, data.train[:1], data.train[1:], epochs=1, steps_per_epoch=1, verbose=0)
    bootstrapped = bootstrap_noise_model(data.train, kind="histogram", n2v_model=n2v, bins=32)
    direct = HistogramNoiseModel.from_pairs(n2v.predict(data.train, axes="SZYX"), data.train, bins=32)
    np.testing.assert_array_equal(bootstrapped.histogram, direct.histogram)


def test_the_readme_3d_commands_parse():
    import re
    import shlex
    from pathlib import Path

    from pn2v_tf import cli

    text = (Path(__file__).parent.parent / "README.md").read_text()
    block = re.search(r"<!-- cli-example-3d.*?-->\s*```bash\n(.*?)\n\s*```", text, re.S).group(1)
    commands = [shlex.split(line.strip())[1:] for line in block.splitlines() if line.strip().startswith("pn2v ")]
    assert [c[0] for c in commands] == ["train", "predict"]
    parsed = [cli.build_parser().parse_args(argv) for argv in commands]
    assert parsed[0].patch_size == [16, 64, 64] and parsed[0].unet_pool == [1, 2, 2] and parsed[1].n_tiles == [1, 2, 2]


def test_a_calibration_series_of_volumes_makes_the_same_noise_model_as_its_pairs(data):
    frames = np.stack([data.calibration[:10], data.calibration[10:]], axis=1)  # (T=10, Z=2, Y, X)
    from_stack = HistogramNoiseModel.from_calibration_stack(frames, bins=32)
    signal = np.broadcast_to(frames.mean(axis=0), frames.shape)
    from_pairs = HistogramNoiseModel.from_pairs(signal, frames, bins=32)
    np.testing.assert_array_equal(from_stack.histogram, from_pairs.histogram)


def test_a_3d_saved_model_runs_in_deepimagej_tensorflow_2_7(trained, data, tmp_path):
    from tensorflow_runtimes import DEEPIMAGEJ_TENSORFLOWS, run_saved_models, tensorflow_runtime

    model, _ = trained
    runtime = tensorflow_runtime(DEEPIMAGEJ_TENSORFLOWS[0])  # deepImageJ's default engine; skips if unavailable
    volume = data.test[:, :28, :26]
    _quiet(model.export_SavedModel, tmp_path / "vol", max_tile_elements=110_000)
    np.save(tmp_path / "volume.npy", volume[np.newaxis, ..., np.newaxis])
    job = {"model": str(tmp_path / "vol"), "input": str(tmp_path / "volume.npy"), "signature": "serving_default",
           "how": "session"}
    (out,), report = run_saved_models(runtime, [job], tmp_path)
    expected = model.predict(volume)
    assert report["tensorflow"] == DEEPIMAGEJ_TENSORFLOWS[0] and out.shape == (1,) + volume.shape + (1,)
    np.testing.assert_allclose(out[0, ..., 0], expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
