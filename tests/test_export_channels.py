"""Export of multichannel models: the SavedModel (input and output (batch, *spatial, C)), the bioimage.io
package (a channel axis with channel names) and running the package, each against ``PN2V.predict``.

The networks are tiny and untrained (fixed seeds): the export has to reproduce ``predict`` whatever the
weights. Two channels of different brightness and noise, each with its own noise model (of different
kinds), so that a channel mixed up with the other or weighted with the other's noise model shows.
The SavedModels run in this process by signature in graph mode (as TensorFlow Java runs them; quick
to load), and in deepImageJ's oldest TensorFlow (2.7).
"""

import os
import warnings
import zipfile

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
import tifffile  # noqa: E402

from pn2v_tf import PN2V, PN2VConfig, load_bioimageio  # noqa: E402
from pn2v_tf.engine import DEFAULT_CHUNK_ELEMENTS  # noqa: E402
from pn2v_tf.export import WholeImage, _channel_names, block_and_context  # noqa: E402
from pn2v_tf.noise_models import ChannelNoiseModels, GMMNoiseModel, HistogramNoiseModel  # noqa: E402
from conftest import SMALL_NET, TINY_3D, tiny  # noqa: E402
from tensorflow_runtimes import DEEPIMAGEJ_TENSORFLOWS, run_saved_models, tensorflow_runtime  # noqa: E402

K = 6
C = 2
TINY = tiny(SMALL_NET, n_samples=K, samples_init_spread=1.0)  # samples spread wide: MMSE and prior mean differ


def _quiet(function, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*exceed the noise model's range.*")
        return function(*args, **kwargs)


def _close(actual, expected, channel_axis=-1):
    """float32 agreement of each channel, relative to that channel's scale."""
    assert actual.shape == expected.shape
    for channel in range(expected.shape[channel_axis]):
        want = np.take(expected, channel, axis=channel_axis)
        np.testing.assert_allclose(np.take(actual, channel, axis=channel_axis), want, rtol=1e-5,
                                   atol=1e-5 * np.abs(want).max(), err_msg=f"channel {channel}")


def _noisy(clean, rng):
    """Channel 0 Poisson with Gaussian read noise, channel 1 Poisson in steps of 4 (a gain)."""
    return np.stack([rng.poisson(clean[..., 0]) + rng.normal(0, 2, clean.shape[:-1]),
                     4 * rng.poisson(clean[..., 1] / 4)], axis=-1).astype(np.float32)


# -- models, images, exports -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def frames():
    """Three noisy frames (48, 40, 2) of one two-channel scene."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:48, :40]
    clean = np.stack([50 + 25 * np.sin(xx / 3.0), 90 + 60 * (((yy // 8) + (xx // 8)) % 2)], axis=-1)
    return np.stack([_noisy(clean, rng) for _ in range(3)])


@pytest.fixture(scope="module")
def images(frames):
    return {"even": frames[0, :32, :32], "odd": frames[0, :29, :31], "tall": frames[1],
            "batch": frames[1:, 5:28, 3:22]}


@pytest.fixture(scope="module")
def noise_model():
    """A histogram for channel 0, a Gaussian (a GMM of one component, std 10) for channel 1."""
    rng = np.random.default_rng(1)
    signal = rng.uniform(0, 260, 100_000)
    histogram = HistogramNoiseModel.from_pairs(signal, rng.poisson(signal) + rng.normal(0, 2, signal.size),
                                               bins=64, value_range=(-20, 320))
    gaussian = GMMNoiseModel(n_gaussians=1, n_coeff=2, signal_range=(0, 300), scale=10.0, value_range=(-50, 400))
    return ChannelNoiseModels([histogram, gaussian])


def _model(frames, noise_model, seed, basedir=None, **kwargs):
    keras.utils.set_random_seed(seed)
    config = PN2VConfig(frames, axes="YXC", mode="pn2v", **{**TINY, **kwargs})
    return PN2V(config, "two_channels", basedir=None if basedir is None else str(basedir), noise_model=noise_model)


@pytest.fixture(scope="module")
def models(frames, noise_model, tmp_path_factory):
    """One U-Net for both channels, and one U-Net per channel (whose head's input holds both channels'
    features), the latter in a model folder (for export_TF)."""
    return {"shared": _model(frames, noise_model, seed=0),
            "per_channel": _model(frames, noise_model, seed=1, basedir=tmp_path_factory.mktemp("models"),
                                  single_net_per_channel=True)}


def _strip_bound(model):
    """A bound on a piece's features that cuts the tall image (48 x 40) into strips along Y and lies
    above one channel's features of the whole image, so that the strips come from counting both."""
    (block, _), (context, _) = block_and_context(model.config)
    return 2 * (2 * block + 2 * context) ** 2 * model.engine.n_features


@pytest.fixture(scope="module")
def exported(models, tmp_path_factory):
    """The shared network's model whole, the per-channel networks' model in strips."""
    folder = tmp_path_factory.mktemp("exports")
    return {"shared": str(models["shared"].export_SavedModel(folder / "shared")),
            "per_channel": str(models["per_channel"].export_SavedModel(
                folder / "per_channel", max_tile_elements=_strip_bound(models["per_channel"])))}


def _run(path, requests):
    """Outputs of a SavedModel for ``requests`` [(signature, image)], by signature in graph mode, and
    the static shape of its input (None for sizes that vary)."""
    with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as session:
        meta = tf.compat.v1.saved_model.loader.load(session, [tf.saved_model.SERVING], path)
        outputs = []
        for name, image in requests:
            signature = meta.signature_def[name]
            outputs.append(session.run(signature.outputs["output"].name, {signature.inputs["input"].name: image}))
        shape = tf.TensorShape(meta.signature_def["serving_default"].inputs["input"].tensor_shape).as_list()
    return outputs, shape


def _expected(model, image, estimator="mmse"):
    """``model.predict`` of a batch (B, Y, X, C) or one image, batched."""
    axes = "SYXC" if image.ndim == 4 else "YXC"
    out = _quiet(model.predict, image, axes=axes, estimator=estimator)
    return out if image.ndim == 4 else out[np.newaxis]


# -- the SavedModel ---------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["shared", "per_channel"])
def test_saved_model_equals_predict_in_each_channel(which, models, exported, images):
    """Whole (shared) and in strips (per_channel): both equal the same predict, so strips equal whole."""
    model = models[which]
    cases = [(name, estimator) for name in ("odd", "tall", "batch") for estimator in ("mmse", "prior_mean")]
    requests = [("serving_default" if estimator == "mmse" else "prior_mean",
                 images[name] if images[name].ndim == 4 else images[name][np.newaxis]) for name, estimator in cases]
    outputs, input_shape = _run(exported[which], requests)
    assert input_shape == [None, None, None, C]
    for (name, estimator), out in zip(cases, outputs):
        _close(out, _expected(model, images[name], estimator))
    mmse, prior_mean = outputs[:2]  # the signatures differ in each channel, so the comparison tells them apart
    assert all(np.abs(mmse - prior_mean)[..., c].max() > 100 * 1e-5 * np.abs(mmse[..., c]).max() for c in range(C))


def test_saved_model_samples_are_the_networks_channel_major(models, exported, images):
    image = images["even"][np.newaxis]  # multiples of the block: no padding, the network's own output
    (out,), _ = _run(exported["per_channel"], [("samples", image)])
    assert out.shape == (1, 32, 32, C * K)
    _close(out, keras.ops.convert_to_numpy(models["per_channel"].keras_model(image)))


def test_pieces_count_every_channels_features_and_samples(models, images):
    model = models["per_channel"]
    bound = _strip_bound(model)
    whole = WholeImage(model.keras_model, model.noise_model, *block_and_context(model.config), bound)
    engine = whole.engine
    assert engine.n_features == C * model.config.unet_n_first  # one U-Net per channel: both channels' features
    assert 48 * 40 * engine.n_features > bound >= 48 * 40 * model.config.unet_n_first
    # a chunk's samples (pixels x C x K) within the engine's bound, and no more pixels than a piece holds
    assert engine.chunk_pixels * C * K <= DEFAULT_CHUNK_ELEMENTS and engine.chunk_pixels <= bound // engine.n_features
    pieces = []
    estimate_kept = engine.estimate_kept

    def recording(piece, *args, **kwargs):
        pieces.append(tuple(piece.shape))
        return estimate_kept(piece, *args, **kwargs)

    engine.estimate_kept = recording  # eager: the strip loops run in Python, piece by piece
    out = whole.estimate(tf.constant(images["tall"][np.newaxis])).numpy()
    assert len(pieces) > 1
    assert all(shape[-1] == C and np.prod(shape[:-1]) * engine.n_features <= bound for shape in pieces)
    _close(out, _expected(model, images["tall"]))


def test_a_3d_multichannel_n2v_saved_model_equals_predict(tmp_path):
    """Axes ZYXC, and mode 'n2v': one output per channel, no noise model."""
    rng = np.random.default_rng(2)
    zz, yy, xx = np.mgrid[:6, :16, :16]
    clean = np.stack([50 + 25 * np.sin((xx + zz) / 3.0), 90 + 60 * (((yy // 6) + (xx // 6)) % 2)], axis=-1)
    volumes = np.stack([_noisy(clean, rng) for _ in range(2)])
    keras.utils.set_random_seed(3)
    config = PN2VConfig(volumes, **tiny(TINY_3D, axes="ZYXC", mode="n2v", n2v_patch_shape=(4, 8, 8)))
    model = PN2V(config, "volume", basedir=None)
    volume = volumes[0, :5, :15, :13]
    (out,), input_shape = _run(str(model.export_SavedModel(tmp_path / "volume")),
                               [("serving_default", volume[np.newaxis])])
    assert input_shape == [None] * 4 + [C]
    _close(out[0], model.predict(volume, axes="ZYXC"))


def test_multichannel_saved_model_runs_in_deepimagej_tensorflow_2_7(models, exported, images, tmp_path):
    """The oldest runtime that single-channel exports are tested in (deepImageJ's default engine), by
    signature in graph mode, as TensorFlow Java loads it; without pn2v_tf."""
    version = DEEPIMAGEJ_TENSORFLOWS[0]
    runtime = tensorflow_runtime(version)
    np.save(tmp_path / "batch.npy", images["batch"])
    jobs = [{"model": exported[which], "input": str(tmp_path / "batch.npy"), "signature": "serving_default",
             "how": "session"} for which in ("shared", "per_channel")]
    outputs, report = run_saved_models(runtime, jobs, tmp_path)
    assert report["tensorflow"] == version and report["pn2v_tf_imported"] == []
    for which, out in zip(("shared", "per_channel"), outputs):
        _close(out, _expected(models[which], images["batch"]))


# -- bioimage.io -----------------------------------------------------------------------------------

def _rdf(package):
    import yaml

    with zipfile.ZipFile(package) as archive:
        return yaml.safe_load(archive.read("rdf.yaml"))


@pytest.fixture(scope="module")
def package(models, images):
    """export_TF of the per-channel networks' model, with the example input that train keeps."""
    pytest.importorskip("bioimageio.spec", reason="optional extra not installed: pip install 'pn2v_tf[bioimageio]'")
    model = models["per_channel"]
    model._save_example_input(images["odd"])  # what train keeps: a raw validation image (Y, X, C)
    return _quiet(model.export_TF, authors=[{"name": "A Tester"}], channel_names=["DAPI", "GFP"])


def test_package_has_channel_axes_with_names_and_tests_that_equal_predict(package, models, images):
    rdf = _rdf(package)
    for tensor in rdf["inputs"] + rdf["outputs"]:
        assert [axis["id"] for axis in tensor["axes"]] == ["batch", "y", "x", "channel"]
        assert tensor["axes"][-1] == {"type": "channel", "id": "channel", "channel_names": ["DAPI", "GFP"]}
    assert rdf["config"]["pn2v_tf"]["n_channels"] == C and rdf["config"]["pn2v_tf"]["axes"] == "YXC"
    assert rdf["config"]["pn2v_tf"]["noise_model"] == "per_channel"
    cropped = images["odd"][:28, :30]  # the kept example input, cut to multiples of the block (2)
    with zipfile.ZipFile(package) as archive:
        test_input = np.load(archive.open("test_input.npy"))
        test_output = np.load(archive.open("test_output.npy"))
        readme = archive.read("README.md").decode()
        with archive.open("sample_input.tif") as sample, tifffile.TiffFile(sample) as tif:
            assert tif.series[0].axes == "CYX" and tif.asarray().shape == (C, 28, 30)
    np.testing.assert_array_equal(test_input, cropped[np.newaxis])
    _close(test_output[0], _quiet(models["per_channel"].predict, cropped, axes="YXC"))
    assert "`DAPI`, `GFP`" in readme and "one U-Net per channel" in readme and "channel 1: [" in readme


def test_multichannel_package_validates(package):
    """bioimage.io's own validation (bioimageio.core's model test, which runs the weights on the test
    input as test_package_predicts_like_its_model_in_the_images_layout does, costs half a minute)."""
    from bioimageio.spec import load_description

    descr = load_description(package)
    assert descr.validation_summary.status == "valid-format", descr.validation_summary.format()
    for tensor in (descr.inputs[0], descr.outputs[0]):
        assert [a.id for a in tensor.axes] == ["batch", "y", "x", "channel"]
        assert tensor.axes[-1].channel_names == ["DAPI", "GFP"]


def test_channel_names_must_name_each_channel_once(models, images, tmp_path):
    pytest.importorskip("bioimageio.spec", reason="optional extra not installed: pip install 'pn2v_tf[bioimageio]'")
    assert _channel_names(None, 2) == (["channel0", "channel1"], ["channel0", "channel1"])
    assert _channel_names(None, 1) == (["raw"], ["denoised"])  # as single-channel packages always had
    model = models["shared"]
    with pytest.raises(ValueError, match=r"name each of the model's 2 channels once, got 3 names"):
        model.export_bioimageio(tmp_path / "three", images["odd"], channel_names=["a", "b", "c"])
    with pytest.raises(ValueError, match="distinct non-empty strings"):
        model.export_bioimageio(tmp_path / "twice", images["odd"], channel_names=["a", "a"])
    with pytest.raises(ValueError, match=r"test_input must be one 2D image \(YXC\)"):
        model.export_bioimageio(tmp_path / "one", images["odd"][..., 0])
    assert list(tmp_path.iterdir()) == []


def test_package_predicts_like_its_model_in_the_images_layout(package, models, images):
    model = models["per_channel"]
    with zipfile.ZipFile(package) as archive:
        test_input, test_output = (np.load(archive.open(f"test_{kind}.npy")) for kind in ("input", "output"))
    with load_bioimageio(package) as packaged:
        assert packaged.n_channels == C and packaged.channel_names == ["DAPI", "GFP"]
        assert isinstance(packaged.noise_model, ChannelNoiseModels)
        _close(_quiet(packaged.predict, test_input, axes="SYXC"), test_output)  # the package's own test
        cases = ((images["odd"], "YXC"), (images["batch"], "SYXC"), (np.moveaxis(images["odd"], -1, 0), "CYX"))
        for image, axes in cases:
            for estimator in ("mmse", "prior_mean"):
                expected = _quiet(model.predict, image, axes=axes, estimator=estimator)
                _close(_quiet(packaged.predict, image, axes=axes, estimator=estimator), expected,
                       channel_axis=axes.index("C"))
        _close(_quiet(packaged.predict, images["odd"]), _quiet(model.predict, images["odd"]))  # default axes: YXC
        with pytest.raises(ValueError, match="axis C of the image has size 1"):
            packaged.predict(images["odd"][..., :1], axes="YXC")
        with pytest.raises(ValueError, match="the model takes 2 channels: axes must include C"):
            packaged.predict(images["odd"][..., 0], axes="YX")
