"""Tests of pn2v_tf.export: the SavedModel (against ``PN2V.predict``, in processes that do not import
pn2v_tf, also in TensorFlow 2.12 and in deepImageJ's TensorFlow 2.7 and 2.10) and the bioimage.io
package (validation, model test, what JDLL reads).

The networks are untrained (fixed seed): the export has to reproduce ``predict`` whatever the weights.
"""

import os
import warnings
import zipfile
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from pn2v_tf import HistogramNoiseModel, PN2V, PN2VConfig  # noqa: E402
from pn2v_tf.datasets import make_synthetic_data  # noqa: E402
from pn2v_tf.export import block_and_context  # noqa: E402
from pn2v_tf.noise_models import GMMNoiseModel  # noqa: E402
import tensorflow as tf  # noqa: E402
import tifffile  # noqa: E402
from tensorflow_runtimes import (DEEPIMAGEJ_TENSORFLOWS, VENV_TENSORFLOW, run_saved_models,  # noqa: E402
                                 tensorflow_runtime)
from conftest import tiny  # noqa: E402

TINY = tiny(seed=0)
K = 16

def _quiet(function, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*exceed the noise model's range.*")
        return function(*args, **kwargs)


def _close(actual, expected):
    """float32 agreement (relative to the image's scale)."""
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


# -- models, images, exports -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def data():
    return make_synthetic_data(seed=5, shape=(64, 64), n_train=2, calibration_shape=(32, 32),
                               calibration_frames=10)


@pytest.fixture(scope="module")
def pn2v(data):
    everything = np.concatenate([data.calibration.ravel(), data.train.ravel(), data.test.ravel()])
    noise_model = HistogramNoiseModel.from_calibration_stack(
        data.calibration, bins=64, value_range=(float(everything.min()) - 1, float(everything.max()) + 1))
    keras.utils.set_random_seed(0)
    # untrained: samples spread wide (not the default start) so that MMSE and prior mean differ
    return PN2V(PN2VConfig(data.train, mode="pn2v", n_samples=K, samples_init_spread=1.0, **TINY), "tiny_pn2v",
                basedir=None,
                noise_model=noise_model)


@pytest.fixture(scope="module")
def pn2v_gmm(data):
    """The export knows noise models only by their interface: a second kind, with censored
    (saturated) tails, whose likelihood needs other operations than the plain mixture's."""
    saturation = tuple(float(v) for v in np.percentile(data.calibration, [2, 98]))
    noise_model = GMMNoiseModel.fit(data.calibration.mean(axis=0), data.calibration, steps=20, saturation=saturation)
    keras.utils.set_random_seed(2)
    return PN2V(PN2VConfig(data.train, mode="pn2v", n_samples=K, samples_init_spread=1.0, **TINY), "tiny_gmm",
                basedir=None,
                noise_model=noise_model)


@pytest.fixture(scope="module")
def n2v(data):
    """Mode 'n2v' (one output, no noise model), depth 3: padding to multiples of 4."""
    keras.utils.set_random_seed(1)
    return PN2V(PN2VConfig(data.train, mode="n2v", **{**TINY, "unet_n_depth": 3}), "tiny_n2v", basedir=None)


@pytest.fixture(scope="module")
def care(data):
    """Mode 'care': one output, trained on pairs (untrained here), no noise model."""
    keras.utils.set_random_seed(3)
    return PN2V(PN2VConfig(data.train, mode="care", **TINY), "tiny_care", basedir=None)


@pytest.fixture(scope="module")
def pn2v2(data, pn2v):
    """PN2V with N2V2's network (max-blur pooling, no top skip connection, nearest upsampling)."""
    keras.utils.set_random_seed(4)
    config = PN2VConfig(data.train, mode="pn2v", n_samples=K, samples_init_spread=1.0, blurpool=True,
                        skip_skipone=True, **TINY)
    return PN2V(config, "tiny_pn2v2", basedir=None, noise_model=pn2v.noise_model)


@pytest.fixture(scope="module")
def images(data):
    test = data.test
    return {"even": test, "odd": test[:61, :57], "tall": np.concatenate([test, test[::-1]])[:117, :61],
            "batch": data.train[:, :45, :38]}


@pytest.fixture(scope="module")
def exported(pn2v, pn2v_gmm, n2v, care, pn2v2, images, tmp_path_factory):
    folder = tmp_path_factory.mktemp("exports")
    (block, _), (context, _) = block_and_context(pn2v.config)  # along Y (2-D: the same along X)
    # strips of 2 blocks plus context: the tall image takes many strips
    strips = (2 * block + 2 * context) * 62 * K
    paths = {"pn2v": pn2v.export_SavedModel(folder / "pn2v"),
             "strips": pn2v.export_SavedModel(folder / "strips", max_tile_elements=strips),
             "gmm": pn2v_gmm.export_SavedModel(folder / "gmm"),
             "n2v": n2v.export_SavedModel(folder / "n2v"),
             "care": care.export_SavedModel(folder / "care"),
             "pn2v2": pn2v2.export_SavedModel(folder / "pn2v2"),
             "xla": pn2v.export_SavedModel(folder / "xla", jit_compile=True)}
    for name, image in images.items():
        stack = image if image.ndim == 3 else image[np.newaxis]
        np.save(folder / f"{name}.npy", stack[..., np.newaxis].astype(np.float32))
    return folder, {key: str(value) for key, value in paths.items()}


def _job(folder, paths, model, image, signature="serving_default", how="eager"):
    return {"model": paths[model], "input": str(folder / f"{image}.npy"), "signature": signature, "how": how}


# -- the SavedModel ---------------------------------------------------------------------------------

def test_saved_model_reproduces_predict_in_a_process_without_pn2v_tf(pn2v, pn2v_gmm, n2v, images, exported,
                                                                      tmp_path):
    folder, paths = exported
    cases = [("pn2v", "even", "serving_default", "mmse"), ("pn2v", "odd", "serving_default", "mmse"),
             ("pn2v", "batch", "serving_default", "mmse"), ("pn2v", "odd", "prior_mean", "prior_mean"),
             ("strips", "tall", "serving_default", "mmse"), ("gmm", "odd", "serving_default", "mmse"),
             ("n2v", "odd", "serving_default", "mmse"), ("xla", "odd", "serving_default", "mmse"),
             ("xla", "batch", "prior_mean", "prior_mean")]
    jobs = [_job(folder, paths, model, image, signature) for model, image, signature, _ in cases]
    jobs += [_job(folder, paths, "pn2v", "odd", "samples"), _job(folder, paths, "pn2v", "odd", how="tfsm"),
             _job(folder, paths, "pn2v", "odd", how="session")]
    outputs, report = run_saved_models(None, jobs, tmp_path)

    assert report["pn2v_tf_imported"] == []
    assert report["keys"] == [["input"], ["output"]]
    assert report["signatures"][paths["pn2v"]] == ["prior_mean", "samples", "serve", "serving_default"]
    assert report["signatures"][paths["n2v"]] == ["serve", "serving_default"]
    models = {"pn2v": pn2v, "strips": pn2v, "gmm": pn2v_gmm, "n2v": n2v, "xla": pn2v}
    for (model, image, _, estimator), out in zip(cases, outputs):
        axes = "SYX" if images[image].ndim == 3 else "YX"
        expected = _quiet(models[model].predict, images[image], axes=axes, estimator=estimator, n_tiles=(1, 1))
        assert out.shape == (images[image].reshape((-1,) + images[image].shape[-2:]).shape + (1,))
        _close(out.reshape(expected.shape), expected)
    samples, tfsm, session = outputs[len(cases):]
    assert samples.shape == (1, 61, 57, K)
    _close(samples.mean(axis=-1)[0], outputs[3][0, ..., 0])
    _close(tfsm, outputs[1])
    _close(session, outputs[1])


def test_each_signature_runs_only_its_own_part_of_the_graph(exported):
    """serving_default (MMSE) needs no node of the prior mean's strip loop, not even through control
    dependencies (a graph traced with tf.function ties every output to every stateful op)."""
    import tensorflow as tf

    _, paths = exported
    with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as session:
        meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], paths["pn2v"])
        assert tf.compat.v1.global_variables() == []
        nodes = {node.name: node for node in graph.as_graph_def().node}

    def ancestors(tensor_name):
        seen, todo = set(), [tensor_name.split(":")[0]]
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo += [i.lstrip("^").split(":")[0] for i in nodes[name].input]
        return seen

    serve = ancestors(meta.signature_def["serving_default"].outputs["output"].name)
    prior_mean = ancestors(meta.signature_def["prior_mean"].outputs["output"].name)
    # the MMSE sums its weights as one complex sum (pn2v_tf.inference.mmse), the prior mean is a Mean
    assert "Complex" in {nodes[n].op for n in serve} and "Mean" not in {nodes[n].op for n in serve}
    assert "Mean" in {nodes[n].op for n in prior_mean} and "Complex" not in {nodes[n].op for n in prior_mean}
    # one copy of the weights: both signatures read the same constant kernels
    kernels = {n for n in nodes if nodes[n].op == "Const" and len(nodes[n].attr["value"].tensor.tensor_shape.dim) == 4}
    assert kernels and kernels <= serve & prior_mean


def _xla_functions(path):
    """Names of the functions of a SavedModel's graph that are marked for XLA, and the ops that call them."""
    with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as session:
        tf.compat.v1.saved_model.loader.load(session, ["serve"], path)
        graph_def = graph.as_graph_def()
    marked = {f.signature.name for f in graph_def.library.function
              if "_XlaMustCompile" in f.attr and f.attr["_XlaMustCompile"].b}
    callers = {node.op for node in graph_def.node if node.attr["f"].func.name in marked}
    return marked, callers


def test_only_the_export_asked_for_xla_holds_an_xla_function(exported):
    """The default graph must run where XLA cannot (TensorFlow Java on a GPU); jit_compile=True marks
    the chunk function (MMSE, prior mean), and its results equal predict's (other tests)."""
    _, paths = exported
    assert _xla_functions(paths["pn2v"]) == (set(), set())
    marked, callers = _xla_functions(paths["xla"])
    assert len(marked) == 2 and all("estimate_chunk" in name for name in marked)
    assert callers == {"StatefulPartitionedCall"}


def test_mmse_and_prior_mean_differ_so_the_comparison_can_tell_them_apart(pn2v, images):
    mmse = _quiet(pn2v.predict, images["odd"])
    prior_mean = pn2v.predict(images["odd"], estimator="prior_mean")
    assert np.abs(mmse - prior_mean).max() > 100 * 1e-5 * np.abs(mmse).max()


def test_the_graph_rejects_images_smaller_than_a_block(exported):
    import tensorflow as tf

    _, paths = exported
    serve = tf.saved_model.load(paths["n2v"]).signatures["serving_default"]
    assert serve(input=tf.ones((1, 4, 4, 1)))["output"].shape == (1, 4, 4, 1)
    with pytest.raises(tf.errors.InvalidArgumentError, match="at least 4 pixels"):
        serve(input=tf.ones((1, 3, 9, 1)))


def test_saved_model_loads_and_reproduces_predict_in_tensorflow_2_12(pn2v, images, exported, tmp_path):
    folder, paths = exported
    jobs = [_job(folder, paths, "pn2v", "odd"), _job(folder, paths, "pn2v", "odd", how="session"),
            _job(folder, paths, "strips", "tall", how="session"), _job(folder, paths, "xla", "odd", how="session")]
    outputs, report = run_saved_models(tensorflow_runtime(VENV_TENSORFLOW), jobs, tmp_path)
    assert report["tensorflow"].startswith(VENV_TENSORFLOW + ".")
    assert report["pn2v_tf_imported"] == []
    odd = _quiet(pn2v.predict, images["odd"], n_tiles=(1, 1))
    _close(outputs[0][0, ..., 0], odd)
    _close(outputs[1][0, ..., 0], odd)
    _close(outputs[2][0, ..., 0], _quiet(pn2v.predict, images["tall"], n_tiles=(1, 1)))
    _close(outputs[3][0, ..., 0], odd)


@pytest.mark.parametrize("version", DEEPIMAGEJ_TENSORFLOWS)
def test_saved_model_runs_in_deepimagej_tensorflow_as_tensorflow_java_loads_it(version, pn2v, pn2v_gmm, n2v, care,
                                                                               pn2v2, images, exported, tmp_path):
    """Every mode and noise model kind, in graph mode by signature (TensorFlow Java's way)."""
    folder, paths = exported
    cases = [("pn2v", "odd", "serving_default", "mmse"), ("pn2v", "batch", "serving_default", "mmse"),
             ("pn2v", "odd", "prior_mean", "prior_mean"), ("strips", "tall", "serving_default", "mmse"),
             ("gmm", "odd", "serving_default", "mmse"), ("n2v", "odd", "serving_default", "mmse"),
             ("care", "odd", "serving_default", "mmse"), ("pn2v2", "odd", "serving_default", "mmse"),
             ("xla", "odd", "serving_default", "mmse")]
    jobs = [_job(folder, paths, model, image, signature, how="session") for model, image, signature, _ in cases]
    outputs, report = run_saved_models(tensorflow_runtime(version), jobs, tmp_path)

    assert report["tensorflow"] == version
    models = {"pn2v": pn2v, "strips": pn2v, "gmm": pn2v_gmm, "n2v": n2v, "care": care, "pn2v2": pn2v2, "xla": pn2v}
    for (model, image, _, estimator), out in zip(cases, outputs):
        axes = "SYX" if images[image].ndim == 3 else "YX"
        expected = _quiet(models[model].predict, images[image], axes=axes, estimator=estimator, n_tiles=(1, 1))
        _close(out.reshape(expected.shape), expected)


# -- files: refuse, overwrite, nothing half-written ------------------------------------------------

def test_export_refuses_an_existing_path_unless_overwrite(n2v, tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        n2v.export_SavedModel(target)
    assert (target / "keep.txt").read_text() == "mine"
    n2v.export_SavedModel(target, overwrite=True)
    assert (target / "saved_model.pb").exists() and not (target / "keep.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_failed_export_leaves_nothing_half_written(n2v, tmp_path, monkeypatch):
    import pn2v_tf.export

    def write_half_and_fail(outputs, path, n_dim):
        Path(path).mkdir()
        (Path(path) / "saved_model.pb").write_bytes(b"half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(pn2v_tf.export, "write_frozen_saved_model", write_half_and_fail)
    with pytest.raises(RuntimeError, match="disk full"):
        n2v.export_SavedModel(tmp_path / "new")
    assert list(tmp_path.iterdir()) == []
    old = tmp_path / "old"
    old.mkdir()
    (old / "keep.txt").write_text("mine")
    with pytest.raises(RuntimeError, match="disk full"):
        n2v.export_SavedModel(old, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["old"] and (old / "keep.txt").read_text() == "mine"


def test_export_rejects_a_bad_tile_bound(n2v, tmp_path):
    with pytest.raises(ValueError, match="max_tile_elements"):
        n2v.export_SavedModel(tmp_path / "model", max_tile_elements=0)
    with pytest.raises(ValueError, match="jit_compile must be True or False, got 'yes'"):
        n2v.export_SavedModel(tmp_path / "model", jit_compile="yes")


# -- bioimage.io -----------------------------------------------------------------------------------

def test_bioimageio_package_validates_and_its_test_passes(pn2v, data, tmp_path, monkeypatch):
    pytest.importorskip("bioimageio.core", reason="optional extra not installed: pip install 'pn2v_tf[bioimageio]'")
    from bioimageio.core import test_model
    from bioimageio.spec import load_description

    monkeypatch.chdir(tmp_path)  # bioimageio.core unzips the weights into the working directory
    test_input = data.test[:61, :57]
    package = _quiet(pn2v.export_bioimageio, tmp_path / "pn2v_tiny", test_input, authors=[{"name": "A Tester"}])
    assert package == tmp_path / "pn2v_tiny.zip"
    with pytest.raises(FileExistsError):
        pn2v.export_bioimageio(package, test_input)

    with zipfile.ZipFile(package) as archive:
        names = set(archive.namelist())
        assert {"rdf.yaml", "tf_saved_model.zip", "test_input.npy", "test_output.npy", "cover.png",
                "README.md"} <= names
        test_output = np.load(archive.open("test_output.npy"))
        assert "doi:10.3389/fcomp.2020.00005" in archive.read("README.md").decode()
    (block, _), _ = block_and_context(pn2v.config)
    cropped = test_input[: 61 // block * block, : 57 // block * block]
    _close(test_output[0, ..., 0], _quiet(pn2v.predict, cropped))

    descr = load_description(package)
    assert descr.validation_summary.status == "valid-format", descr.validation_summary.format()
    assert descr.format_version.startswith("0.5.")
    assert [t.id for t in descr.inputs] == ["input"] and [t.id for t in descr.outputs] == ["output"]
    assert [a.id for a in descr.inputs[0].axes] == ["batch", "y", "x", "channel"]
    assert [p.id for p in descr.inputs[0].preprocessing] in ([], ["ensure_dtype"])
    assert str(descr.cite[0].doi) == "10.3389/fcomp.2020.00005"
    assert descr.weights.tensorflow_saved_model_bundle is not None

    summary = test_model(package)
    assert summary.status == "passed", summary.format()


# -- what deepImageJ (JDLL) reads, and packages coming back ----------------------------------------

@pytest.fixture(scope="module")
def packages(pn2v, n2v, data, tmp_path_factory):
    """bioimage.io packages of a pn2v and an n2v model (whose depth 3 needs test inputs of 60 pixels)."""
    pytest.importorskip("bioimageio.spec", reason="optional extra not installed: pip install 'pn2v_tf[bioimageio]'")
    folder = tmp_path_factory.mktemp("packages")
    test_input = data.test[:, :61]
    return {"pn2v": _quiet(pn2v.export_bioimageio, folder / "pn2v tiny", test_input, authors=[{"name": "A Tester"}]),
            "n2v": n2v.export_bioimageio(folder / "n2v tiny", test_input, name="Tiny N2V (test)")}


def _rdf(package):
    import yaml

    with zipfile.ZipFile(package) as archive:
        return yaml.safe_load(archive.read("rdf.yaml"))


def test_rdf_carries_what_jdll_needs_to_list_and_run_the_model(packages, pn2v, n2v):
    for package, model in ((packages["pn2v"], pn2v), (packages["n2v"], n2v)):
        rdf = _rdf(package)
        # listed by deepImageJ only with an id (bioimage.io's characters), the name plus the weights' digest
        assert set(rdf["id"]) <= set("abcdefghijklmnopqrstuvwxyz0123456789_-") and len(rdf["id"]) > 9
        for tensor in rdf["inputs"] + rdf["outputs"]:
            assert all("id" in axis and "type" in axis for axis in tensor["axes"])
            assert [axis["id"] for axis in tensor["axes"]] == ["batch", "y", "x", "channel"]
            assert all(len(axis["channel_names"]) == 1 for axis in tensor["axes"] if axis["type"] == "channel")
        (block, _), (halo, _) = block_and_context(model.config)
        for axis in rdf["inputs"][0]["axes"][1:3]:
            # JDLL's tiles are multiples of step, so min must be one too
            assert axis["size"] == {"min": 2 * halo + block, "step": block} and axis["size"]["min"] % block == 0
        for axis in rdf["outputs"][0]["axes"][1:3]:
            assert axis["size"] == {"tensor_id": "input", "axis_id": axis["id"]} and axis["halo"] == halo
        weights = rdf["weights"]["tensorflow_saved_model_bundle"]
        assert weights["tensorflow_version"] == tf.__version__  # a string: JDLL reads an unquoted 2.10 as 2.1
        with zipfile.ZipFile(package) as archive:
            assert "/" not in weights["source"] and weights["source"] in archive.namelist()
            with zipfile.ZipFile(archive.open(weights["source"])) as saved_model:
                assert "saved_model.pb" in saved_model.namelist()
    assert _rdf(packages["pn2v"])["id"].startswith("pn2v-tiny_pn2v-")
    assert _rdf(packages["n2v"])["id"].startswith("tiny-n2v-test-")
    assert _rdf(packages["pn2v"])["attachments"][0]["source"] == "noise_model.npz"


@pytest.mark.parametrize("version", DEEPIMAGEJ_TENSORFLOWS)
def test_package_weights_unzipped_as_jdll_does_run_in_deepimagej_tensorflow(version, packages, pn2v, tmp_path):
    """JDLL unzips the weights zip into the model folder and loads that folder by signature."""
    jobs = []
    for name, package in packages.items():
        with zipfile.ZipFile(package) as archive:
            archive.extractall(tmp_path / name)
        with zipfile.ZipFile(tmp_path / name / "tf_saved_model.zip") as weights:
            weights.extractall(tmp_path / name)
        jobs.append({"model": str(tmp_path / name), "input": str(tmp_path / name / "test_input.npy"),
                     "signature": "serving_default", "how": "session"})
    outputs, report = run_saved_models(tensorflow_runtime(version), jobs, tmp_path)
    assert report["tensorflow"] == version
    for name, out in zip(packages, outputs):
        _close(out, np.load(tmp_path / name / "test_output.npy"))
    test_input = np.load(tmp_path / "pn2v" / "test_input.npy")[0, ..., 0]
    _close(outputs[0][0, ..., 0], _quiet(pn2v.predict, test_input))


def test_a_package_predicts_like_its_model_without_the_model_folder(packages, pn2v, n2v, images, tmp_path):
    from pn2v_tf import load_bioimageio

    with zipfile.ZipFile(packages["pn2v"]) as archive:
        archive.extractall(tmp_path / "unpacked")
    for source in (packages["pn2v"], tmp_path / "unpacked"):
        with load_bioimageio(source) as package:
            assert package.mode == "pn2v" and package.noise_model.kind == "histogram"
            for image, axes in ((images["odd"], "YX"), (images["batch"], "SYX"), (images["odd"][..., None], "YXC")):
                for estimator in ("mmse", "prior_mean"):
                    expected = _quiet(pn2v.predict, image, axes=axes, estimator=estimator)
                    _close(_quiet(package.predict, image, axes=axes, estimator=estimator), expected)
            unpacked = Path(package._tmp.name)
            assert unpacked.is_dir()
        assert not unpacked.exists()
    with load_bioimageio(packages["n2v"]) as package:
        assert package.mode == "n2v" and package.noise_model is None
        _close(package.predict(images["odd"]), n2v.predict(images["odd"]))
        with pytest.raises(ValueError, match="at least 4 pixels"):
            package.predict(images["odd"][:3])
        with pytest.raises(ValueError, match="no posterior samples"):
            package.predict(images["odd"], estimator="posterior")


def test_a_package_checks_the_noise_model_range_as_predict_does(packages, images):
    from pn2v_tf import load_bioimageio

    with load_bioimageio(packages["pn2v"]) as package:
        low, high = package.noise_model.value_range
        with pytest.warns(UserWarning, match="exceed the noise model's range"):
            package.predict(np.clip(images["odd"], low, high) + (high - low))


def _write_zip(path, files):
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return path


def test_load_bioimageio_refuses_what_is_not_a_pn2v_tf_package(packages, tmp_path):
    from pn2v_tf import load_bioimageio

    foreign = _rdf(packages["n2v"])
    del foreign["config"]["pn2v_tf"]
    import yaml

    cases = {
        _write_zip(tmp_path / "foreign.zip", {"rdf.yaml": yaml.safe_dump(foreign)}): "not made by pn2v_tf",
        _write_zip(tmp_path / "dataset.zip", {"rdf.yaml": "type: dataset\nname: images\n"}): "does not describe a model",
        _write_zip(tmp_path / "norfd.zip", {"weights.h5": b"\0"}): "has no file rdf.yaml",
        _write_zip(tmp_path / "broken.zip", {"rdf.yaml": "type: [model\n"}): "not valid YAML",
    }
    rezipped = tmp_path / "rezipped"  # the weights zipped again with their folder: saved_model.pb not at the root
    with zipfile.ZipFile(packages["n2v"]) as archive:
        archive.extractall(rezipped)
    with zipfile.ZipFile(rezipped / "tf_saved_model.zip") as weights:
        members = {name: weights.read(name) for name in weights.namelist() if not name.endswith("/")}
    (rezipped / "tf_saved_model.zip").unlink()
    _write_zip(rezipped / "tf_saved_model.zip", {f"saved_model/{name}": data for name, data in members.items()})
    cases[rezipped] = "do not load as a TensorFlow SavedModel"
    not_a_zip = tmp_path / "model.zip.txt"
    not_a_zip.write_text("hello")
    cases[not_a_zip] = "neither a zip file nor a folder"
    for path, problem in cases.items():
        with pytest.raises(ValueError, match=problem):
            load_bioimageio(path)
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_bioimageio(tmp_path / "missing.zip")


def test_export_TF_writes_the_package_with_the_kept_example_input(data, tmp_path):
    """CSBDeep's export_TF: a bioimage.io package in the model folder, the example input kept by train."""
    pytest.importorskip("bioimageio.spec", reason="optional extra not installed: pip install 'pn2v_tf[bioimageio]'")
    keras.utils.set_random_seed(4)
    config = PN2VConfig(data.train, mode="n2v", train_epochs=1, train_steps_per_epoch=1, train_batch_size=2,
                        **{**TINY, "n2v_patch_shape": (16, 16)})
    model = PN2V(config, "trained", basedir=tmp_path)
    with pytest.raises(ValueError, match="export_TF needs test_input=.*does not exist"):
        model.export_TF()
    model.train(data.train[:1], data.train[1:], verbose=0)
    package = model.export_TF()
    assert package == tmp_path / "trained" / "trained.bioimage.io.zip"
    with zipfile.ZipFile(package) as archive:
        test_input = np.load(archive.open("test_input.npy"))[0, ..., 0]
    np.testing.assert_array_equal(test_input, data.train[1].astype(np.float32))  # 64 x 64: kept whole
    with pytest.raises(FileExistsError, match="overwrite=True"):
        model.export_TF()
    with pytest.raises(ValueError, match="needs fname= for a model without a folder"):
        PN2V(config, "in_memory", basedir=None).export_TF()


def test_the_kept_example_input_is_large_enough_for_a_package_where_the_image_allows(data, tmp_path):
    pytest.importorskip("bioimageio.spec", reason="optional extra not installed: pip install 'pn2v_tf[bioimageio]'")
    deep = PN2VConfig(data.train, mode="n2v", **{**TINY, "unet_n_depth": 5, "n2v_patch_shape": (16, 16)})
    (block, _), (context, _) = block_and_context(deep)
    assert 2 * context + block > 256  # more than the usual crop
    model = PN2V(deep, "deep", basedir=tmp_path)
    model._save_example_input(np.arange(300 * 310, dtype=np.float32).reshape(300, 310, 1))  # (Y, X, C)
    kept = tifffile.imread(tmp_path / "deep" / "example_input.tif")
    assert kept.shape == (2 * context + block,) * 2
    model._save_example_input(data.train[0][..., np.newaxis])  # 64 x 64: too small for this network
    with pytest.raises(ValueError, match=f"at least {2 * context + block} x .* pass a larger raw image as test_input="):
        model.export_TF()
