"""Prediction of chunked arrays block by block (pn2v_tf.chunked), its command line, and training from
chunked arrays: every path equals ``model.predict`` of the array in memory."""

import numpy as np
import pytest

from conftest import noisy as _noisy, small_histogram, TINY_3D, run, tiny

dask = pytest.importorskip("dask")
zarr = pytest.importorskip("zarr")
import dask.array as da  # noqa: E402

from pn2v_tf import PN2V, PN2VConfig  # noqa: E402
from pn2v_tf.chunked import (PREDICTION_ATTRIBUTE, BlockPlan, predict_dask, predict_to_zarr,  # noqa: E402
                             plan_blocks)

K = 8
#: Small blocks (input values, context included), so that small arrays are cut into many blocks.
SMALL_BLOCKS = 2 * 64 * 64


def _model(basedir, name, X, noise_model, **settings):
    """An untrained model with saved weights (workers of other processes load them)."""
    model = PN2V(PN2VConfig(X, mode="pn2v", n_samples=K, **settings), name, basedir=str(basedir),
                 noise_model=noise_model)
    model.keras_model.save_weights(str(model.logdir / "weights_best.h5"))
    return model


@pytest.fixture(scope="module")
def noise_model():
    return small_histogram()


@pytest.fixture(scope="module")
def models(tmp_path_factory, noise_model):
    basedir = tmp_path_factory.mktemp("models")
    rng = np.random.default_rng(0)
    return {"2d": _model(basedir, "m2d", _noisy(rng, (2, 32, 32)), noise_model, **tiny(unet_n_first=4)),
            "rgb": _model(basedir, "mrgb", _noisy(rng, (2, 32, 32, 3)), noise_model, axes="YXC",
                          **tiny(unet_n_first=4)),
            "3d": _model(basedir, "m3d", _noisy(rng, (2, 8, 16, 16)), noise_model, **TINY_3D)}


def _zarr(path, array, chunks):
    out = zarr.open_array(str(path), mode="w", shape=array.shape, chunks=chunks, dtype=array.dtype)
    out[:] = array
    return out


# -- the block plan ------------------------------------------------------------------------------

@pytest.mark.parametrize("shape, axes, chunks", [((3, 150, 133), "SYX", (2, 40, 32)),
                                                 ((37, 61, 3), "YXC", (16, 16, 1)),
                                                 ((20, 45, 30), "ZYX", (5, 45, 7))])
def test_blocks_cover_the_array_once_in_whole_chunks_and_read_their_context_from_the_pooling_grid(shape, axes, chunks):
    n_dim = 3 if axes == "ZYX" else 2
    grid, context = (1, 4, 4)[-n_dim:], (4, 8, 8)[-n_dim:]
    plan = BlockPlan(shape, axes, chunks, n_dim, grid, context, max_elements=3000)
    covered = np.zeros(shape, dtype=int)
    spatial = [axes.index(a) for a in "ZYX"[-n_dim:]]
    for number in plan:
        out = plan.output_slices(number)
        covered[out] += 1
        for axis, s in enumerate(out):
            assert s.start % chunks[axis] == 0 or axes[axis] == "C"  # whole chunks: one writer per chunk
            assert s.stop % chunks[axis] == 0 or s.stop == shape[axis] or axes[axis] == "C"
        read, keep = plan.read(number)
        for axis, (r, k, o) in enumerate(zip(read, keep, out)):
            if axis not in spatial:
                assert r == o
                continue
            g, c = dict(zip(spatial, grid))[axis], dict(zip(spatial, context))[axis]
            assert r.start % g == 0 and (r.stop % g == 0 or r.stop == shape[axis])
            assert r.start + k.start == o.start and k.stop - k.start == o.stop - o.start
            assert o.start - r.start >= min(c, o.start) and r.stop - o.stop >= min(c, shape[axis] - o.stop)
    assert np.all(covered == 1)
    assert len(plan) > 1


def test_blocks_grow_to_the_bound_and_hold_at_least_one_chunk():
    plan = BlockPlan((1000, 1000), "YX", (100, 100), 2, (4, 4), (8, 8), max_elements=420 ** 2)
    assert plan.steps == (400, 400)  # 416^2 fits, 816 x 416 does not
    assert BlockPlan((1000, 1000), "YX", (300, 300), 2, (4, 4), (8, 8), max_elements=10).steps == (300, 300)
    assert BlockPlan((50, 60), "YX", (16, 16), 2, (4, 4), (8, 8), max_elements=10 ** 6).counts == (1, 1)


# -- equality with predict -----------------------------------------------------------------------

@pytest.mark.parametrize("kind, shape, axes, chunks", [
    ("2d", (3, 150, 133), "SYX", (2, 40, 32)),
    ("2d", (200, 90), "XY", (200, 9)),
    ("rgb", (61, 3, 37), "YCX", (16, 1, 16)),
    ("3d", (12, 40, 36), "ZYX", (5, 16, 36)),
])
def test_zarr_prediction_equals_predict(models, tmp_path, kind, shape, axes, chunks):
    model = models[kind]
    image = _noisy(np.random.default_rng(2), shape)
    want = model.predict(image, axes=axes)
    source = _zarr(tmp_path / "in.zarr", image, chunks)
    out = predict_to_zarr(model, source, tmp_path / "out.zarr", axes=axes, max_block_elements=SMALL_BLOCKS)
    assert out.shape == image.shape and tuple(out.chunks) == chunks and out.dtype == np.float32
    assert len(plan_blocks(model, source, axes, max_block_elements=SMALL_BLOCKS)) > 1
    np.testing.assert_allclose(out[:], want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_dask_memmap_and_lazy_paths_equal_predict(models, tmp_path):
    model = models["2d"]
    image = _noisy(np.random.default_rng(3), (2, 90, 70))
    want = model.predict(image, axes="SYX", estimator="prior_mean")
    memmap = np.lib.format.open_memmap(tmp_path / "in.npy", mode="w+", dtype=np.float32, shape=image.shape)
    memmap[:] = image
    for source in (da.from_array(image, chunks=(1, 30, 35)), memmap):
        out = predict_to_zarr(model, source, tmp_path / "out.zarr", axes="SYX", estimator="prior_mean",
                              chunks=(1, 30, 35), max_block_elements=SMALL_BLOCKS, overwrite=True)
        np.testing.assert_allclose(out[:], want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    lazy = predict_dask(model, da.from_array(image, chunks=(1, 30, 35)), axes="SYX", estimator="prior_mean",
                        max_block_elements=3000)
    assert lazy.shape == image.shape and lazy.numblocks[0] == 2 and max(lazy.numblocks[1:]) > 1
    np.testing.assert_allclose(lazy.compute(scheduler="synchronous"), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


# -- resuming and refusing -----------------------------------------------------------------------

class _Stop(Exception):
    pass


def test_an_interrupted_prediction_resumes_with_the_missing_blocks_only(models, tmp_path):
    model = models["2d"]
    image = _noisy(np.random.default_rng(4), (1, 100, 100))
    source = _zarr(tmp_path / "in.zarr", image, (1, 25, 25))
    options = dict(axes="SYX", max_block_elements=3000, scheduler="synchronous")
    n_blocks = len(plan_blocks(model, source, "SYX", max_block_elements=3000))
    assert n_blocks > 4

    def stop_after_three(done, total):
        if done == 3:
            raise _Stop()

    with pytest.raises(_Stop):
        predict_to_zarr(model, source, tmp_path / "out.zarr", progress=stop_after_three, **options)
    partial = zarr.open_array(str(tmp_path / "out.zarr"))
    assert 0 < np.isnan(partial[:]).mean() < 1  # a missing chunk reads as the fill value NaN
    seen = []
    out = predict_to_zarr(model, source, tmp_path / "out.zarr", progress=lambda done, total: seen.append(done),
                          **options)
    assert seen == list(range(4, n_blocks + 1))  # the three complete blocks were skipped
    want = model.predict(image, axes="SYX")
    np.testing.assert_allclose(out[:], want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_an_existing_output_that_is_not_this_prediction_is_refused_and_kept(models, tmp_path):
    model = models["2d"]
    image = _noisy(np.random.default_rng(5), (40, 40))
    source = _zarr(tmp_path / "in.zarr", image, (20, 20))
    mine = _zarr(tmp_path / "mine.zarr", np.ones((40, 40), np.float32), (20, 20))
    with pytest.raises(FileExistsError, match="is not an unfinished prediction of this model"):
        predict_to_zarr(model, source, tmp_path / "mine.zarr")
    assert np.all(mine[:] == 1)
    predict_to_zarr(model, source, tmp_path / "out.zarr", estimator="prior_mean")
    with pytest.raises(FileExistsError, match="is not an unfinished prediction of this model, estimator"):
        predict_to_zarr(model, source, tmp_path / "out.zarr", estimator="mmse")
    assert PREDICTION_ATTRIBUTE in zarr.open_array(str(tmp_path / "out.zarr")).attrs


def test_a_given_zarr_array_is_written_whole(models, tmp_path):
    model = models["2d"]
    image = _noisy(np.random.default_rng(10), (40, 40))
    source = _zarr(tmp_path / "in.zarr", image, (20, 20))
    given = zarr.open_array(str(tmp_path / "given.zarr"), mode="w", shape=(40, 40), chunks=(20, 20), dtype="float32",
                            fill_value=0)
    given[:] = 1  # no NaN anywhere, but not a prediction: nothing may be skipped
    predict_to_zarr(model, source, given, estimator="prior_mean")
    want = model.predict(image, estimator="prior_mean")
    np.testing.assert_allclose(given[:], want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_bad_input_is_refused_before_anything_is_written(models, tmp_path):
    model = models["2d"]
    image = _noisy(np.random.default_rng(6), (40, 40))
    image[3, 4] = np.nan
    with pytest.raises(ValueError, match="array contains NaN or infinite values"):
        predict_to_zarr(model, _zarr(tmp_path / "in.zarr", image, (20, 20)), tmp_path / "out.zarr")
    assert not (tmp_path / "out.zarr").exists()
    with pytest.raises(ValueError, match="the model takes 3 channels; the array has 1"):
        predict_to_zarr(models["rgb"], np.zeros((40, 40), np.float32), tmp_path / "out.zarr", axes="YX")
    with pytest.raises(ValueError, match=r"axes 'YXC' do not fit the array of shape \(40, 40\)"):
        predict_to_zarr(models["rgb"], np.zeros((40, 40), np.float32), tmp_path / "out.zarr")
    with pytest.raises(ValueError, match="estimator must be one of .* for out-of-core prediction"):
        predict_to_zarr(model, np.zeros((40, 40), np.float32), tmp_path / "out.zarr", estimator="posterior")


# -- a dask.distributed cluster ------------------------------------------------------------------

def test_a_local_cluster_gives_the_threaded_result_and_loads_the_model_once_per_worker(models, tmp_path):
    distributed = pytest.importorskip("distributed")
    model = models["2d"]
    image = _noisy(np.random.default_rng(7), (2, 64, 64))
    source = _zarr(tmp_path / "in.zarr", image, (1, 32, 32))
    threaded = predict_to_zarr(model, source, tmp_path / "threads.zarr", axes="SYX", max_block_elements=3000)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=40) as cluster, distributed.Client(cluster) as client:
        seen = []
        out = predict_to_zarr(model, source, tmp_path / "cluster.zarr", axes="SYX", max_block_elements=3000,
                              scheduler=client, progress=lambda done, total: seen.append((done, total)))
        loads = client.run(lambda: __import__("pn2v_tf.chunked", fromlist=["x"]).MODEL_LOADS)
    n_blocks = len(plan_blocks(model, source, "SYX", max_block_elements=3000))
    assert n_blocks >= 4 and seen == [(done, n_blocks) for done in range(1, n_blocks + 1)]
    assert sorted(loads.values()) in ([1, 1], [0, 1])  # once per worker that ran blocks
    np.testing.assert_array_equal(out[:], threaded[:])


def test_a_model_without_folder_cannot_go_to_other_processes(models):
    import pickle

    from pn2v_tf.chunked import ModelHandle

    model = PN2V(models["2d"].config, None, basedir=None, noise_model=models["2d"].noise_model)
    with pytest.raises(ValueError, match="needs a model with a folder"):
        pickle.dumps(ModelHandle(model))


# -- training from chunked arrays ----------------------------------------------------------------

class _Recorded:
    """An array that records the size of every read (what dask reads of it)."""

    def __init__(self, array, chunks):
        self.array, self.chunks, self.reads = array, chunks, []
        self.shape, self.dtype, self.ndim = array.shape, array.dtype, array.ndim

    def __getitem__(self, where):
        out = self.array[where]
        self.reads.append(out.size)
        return out


def test_training_from_a_chunked_array_draws_the_same_patches_and_never_reads_it_whole(tmp_path):
    from pn2v_tf.data import MaskedPatches

    rng = np.random.default_rng(8)
    X = _noisy(rng, (3, 48, 40))
    source = _zarr(tmp_path / "train.zarr", X, (1, 16, 16))
    for chunked in (source, da.from_zarr(source)):
        a, b = MaskedPatches(X, (16, 16), 4, 3, seed=3)[1], MaskedPatches(chunked, (16, 16), 4, 3, seed=3)[1]
        for key in ("image", "coords"):
            np.testing.assert_array_equal(a[0][key], b[0][key])
        np.testing.assert_array_equal(a[1], b[1])
    recorded = _Recorded(X, (1, 16, 16))
    config = PN2VConfig(recorded, mode="n2v", **tiny(unet_n_first=4, n2v_patch_shape=(16, 16), train_batch_size=2,
                                                    train_n_val_patches=2))
    assert config.means == pytest.approx([X.mean()], rel=1e-5) and config.stds == pytest.approx([X.std()], rel=1e-4)
    model = PN2V(config, None, basedir=None)
    history = model.train(recorded, da.from_zarr(source)[2:], epochs=1, steps_per_epoch=2, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert recorded.reads and max(recorded.reads) <= 16 * 16


# -- the command line ----------------------------------------------------------------------------

def test_pn2v_predict_writes_zarr_ome_zarr_and_tiff_results_like_predict(models, tmp_path, capsys):
    import tifffile

    model = models["2d"]
    folder = model.logdir
    image = _noisy(np.random.default_rng(9), (3, 70, 66))
    want = model.predict(image, axes="TYX")
    _zarr(tmp_path / "stack.zarr", image, (1, 32, 32))
    code, _, err = run(["predict", "--model", folder, tmp_path / "stack.zarr", "-o", tmp_path / "out", "--axes", "TYX",
                        "--quiet"], capsys)
    assert code == 0, err
    out = zarr.open_array(str(tmp_path / "out" / "stack.zarr"))
    assert tuple(out.chunks) == (1, 32, 32)
    np.testing.assert_allclose(out[:], want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    written = tmp_path / "out" / "stack.zarr"
    chunk_files = sorted(p for p in written.rglob("*") if p.is_file() and p.name != "zarr.json")
    assert len(chunk_files) == 3 * 3 * 3
    chunk_files[4].unlink()  # as if the run had stopped before writing this chunk; the same command goes on
    code, _, err = run(["predict", "--model", folder, tmp_path / "stack.zarr", "-o", tmp_path / "out", "--axes", "TYX",
                        "--quiet"], capsys)
    assert code == 0, err
    np.testing.assert_allclose(out[:], want, rtol=1e-5, atol=1e-5 * np.abs(want).max())

    group = zarr.open_group(str(tmp_path / "ome.zarr"), mode="w", zarr_format=2)
    group.create_array("0", shape=image.shape, chunks=(1, 32, 32), dtype="float32")[:] = image
    group.create_array("1", shape=(3, 35, 33), chunks=(1, 32, 32), dtype="float32")[:] = image[:, ::2, ::2]
    axes = [{"name": "t", "type": "time"}, {"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    scales = [{"path": str(level),
               "coordinateTransformations": [{"type": "scale", "scale": [1, 2 ** level, 2 ** level]}]}
              for level in (0, 1)]
    group.attrs["multiscales"] = [{"version": "0.4", "axes": axes, "datasets": scales}]
    code, _, err = run(["predict", "--model", folder, tmp_path / "ome.zarr", "-o", tmp_path / "out", "--quiet"], capsys)
    assert code == 0, err
    result = zarr.open_group(str(tmp_path / "out" / "ome.zarr"))
    assert result.metadata.zarr_format == 2 and dict(result.attrs)["multiscales"][0]["axes"] == axes
    np.testing.assert_allclose(result["0"][:], want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    np.testing.assert_allclose(result["1"][:], want.reshape(3, 35, 2, 33, 2).mean(axis=(2, 4)), rtol=1e-5, atol=1e-3)

    ome05 = zarr.open_group(str(tmp_path / "v05.zarr"), mode="w", zarr_format=3)
    ome05.create_array("s0", shape=image.shape, chunks=(1, 70, 66), dtype="float32")[:] = image
    ome05.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": axes, "datasets": [dict(scales[0], path="s0")]}]}
    code, _, err = run(["predict", "--model", folder, tmp_path / "v05.zarr", "-o", tmp_path / "out", "--quiet"], capsys)
    assert code == 0, err
    result = zarr.open_group(str(tmp_path / "out" / "v05.zarr"))
    assert result.metadata.zarr_format == 3 and dict(result.attrs)["ome"]["version"] == "0.5"
    np.testing.assert_allclose(result["s0"][:], want, rtol=1e-5, atol=1e-5 * np.abs(want).max())

    tifffile.imwrite(tmp_path / "movie.tif", image, imagej=True, metadata={"axes": "TYX"})
    code, _, err = run(["predict", "--model", folder, tmp_path / "movie.tif", "-o", tmp_path / "out", "--zarr",
                        "--quiet"], capsys)
    assert code == 0, err
    np.testing.assert_allclose(zarr.open_array(str(tmp_path / "out" / "movie.zarr"))[:], want, rtol=1e-5,
                               atol=1e-5 * np.abs(want).max())

    code, _, err = run(["predict", "--model", folder, tmp_path / "stack.zarr", "-o", tmp_path / "out", "--axes", "TYX",
                        "--estimator", "prior_mean", "--quiet"], capsys)
    assert code == 2 and "is not an unfinished prediction of this model, estimator" in err
    code, _, err = run(["predict", "--model", folder, tmp_path / "stack.zarr", "-o", tmp_path / "out", "--axes", "TYX",
                        "--estimator", "posterior"], capsys)
    assert code != 0 and "zarr outputs are float32 mmse or prior_mean" in err
