"""Export a trained model: one TensorFlow SavedModel that denoises raw images, and a bioimage.io package.

The SavedModel holds the whole prediction of :meth:`pn2v_tf.PN2V.predict` in one graph: padding to
the network's block size, normalisation, U-Net, noise model, estimator, cropping. It needs only
TensorFlow to run (not Keras, not this package), from TensorFlow 2.7 on: the weights are constants
of the graph (no variables), so that TensorFlow Java in deepImageJ loads it with the engines it
installs (2.7 and 2.10) as well as today's TensorFlow does. Its signatures, each with input key ``input``
(float32, shape (batch, Y, X, C), or (batch, Z, Y, X, C) for a 3-D model, raw intensities; C = 1 for
a single-channel model) and output key ``output`` (float32, same shape, each channel denoised with
its own noise model):

``serving_default`` and ``serve``
    The MMSE estimate (paper Eq. 10) for mode 'pn2v'; the network's prediction for 'n2v' and 'care'.
``prior_mean``
    Mean of the K prior samples (mode 'pn2v' only).
``samples``
    The K prior samples themselves, (batch, ..., C x K), channel-major: channel c's samples are
    outputs c K to c K + K - 1 (mode 'pn2v' only; not tiled, so its memory is the image times C x K).

Each side may be any size from one network block (``unet_pool**(unet_n_depth-1)`` along its axis)
up: the graph reflects the image to a multiple of the block and crops the result, as ``predict``
does. It computes with the same engine as ``predict`` (:class:`pn2v_tf.engine.PredictionEngine`,
without XLA unless told ``jit_compile=True``): the U-Net body on a piece of the image, then the
head and the estimator on chunks of the kept pixels' features, so that only one chunk's K samples
exist at a time. To bound the body's memory it cuts the image into strips along the first spatial
axis, each strip into strips along the next axis and so on, overlapping by the network's receptive
field, as long as a piece's features (batch x piece x the head's input features: ``unet_n_first``,
times C for one network per channel) exceed ``max_tile_elements`` values; a piece within the bound
stays whole. The samples of all channels count in a chunk's bound (the engine's ``chunk_elements``: pixels x C x K).
The result equals the untiled one.
"""

import os
import shutil
import string
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf
import tifffile

from ._checks import DTYPE_POLICIES, is_int
from .arrays import as_image_stack, spatial_axes
from .engine import PredictionEngine
from .inference import DEFAULT_MAX_TILE_ELEMENTS, tile_context
from .model import NOISE_MODEL_FILE, _imagej_layout
from .nets import network_geometry
from .version import __version__

INPUT_KEY = "input"
OUTPUT_KEY = "output"
#: The weights file of a bioimage.io package and the key of its rdf's ``config`` that says pn2v_tf made it.
WEIGHTS_FILE = "tf_saved_model.zip"
PACKAGE_CONFIG_KEY = "pn2v_tf"

#: What the exported graph and package cite.
PN2V_CITATION = ("Krull, A., Vicar, T., Prakash, M., Lalit, M., Jug, F. (2020). Probabilistic Noise2Void: "
                 "Unsupervised content-aware denoising. Frontiers in Computer Science 2:5.")
PN2V_DOI = "10.3389/fcomp.2020.00005"


# -- the graph -------------------------------------------------------------------------------------

def block_and_context(config):
    """(block, context) of a model's network, one int per spatial axis: image sides are padded to
    multiples of ``block``; an output pixel depends on input pixels up to ``context`` away (receptive
    field in whole blocks)."""
    block, radius = network_geometry(config)
    return block, tile_context(radius, block)


def pad_to_block(image, block):
    """Pad a (B, *spatial, C) tensor at the end of each spatial axis to multiples of ``block`` (per axis).

    Reflect padding, or symmetric padding where the image is too small to reflect, exactly as
    :func:`pn2v_tf.inference.pad_to_blocks` pads with NumPy.
    """
    shape = tf.shape(image)
    pads = [(-shape[axis + 1]) % b for axis, b in enumerate(block)]
    paddings = [[0, 0]] + [[0, pad] for pad in pads] + [[0, 0]]
    reflect = tf.reduce_max(tf.stack(pads)) < tf.reduce_min(shape[1:-1])
    return tf.cond(reflect, lambda: tf.pad(image, paddings, mode="REFLECT"),
                   lambda: tf.pad(image, paddings, mode="SYMMETRIC"))


def strip_rows(other_elements, block, context, max_elements):
    """Rows a strip keeps along one axis so that (rows + 2 context) x other_elements <= max_elements,
    where ``other_elements`` counts the strip's elements per row (batch, other axes, K).

    At least one block; a multiple of ``block``. Tensors in, int32 tensor out.
    """
    budget = max_elements // tf.maximum(other_elements, 1) - 2 * context
    return tf.maximum(budget // block * block, block)


def map_strips(function, image, rows, context, axis=1):
    """Apply ``function`` to strips of ``rows`` rows along ``axis`` with ``context`` rows of context each side.

    Strips are cut from ``image`` (B, *spatial, C), never padded beyond it, and keep its static
    sizes except along ``axis`` (the network needs the number of channels). ``function(strip, first,
    count)`` returns the result for rows ``first`` to ``first + count`` of the strip along ``axis``
    (the rows kept from it); they are stitched along that axis.
    """
    rank = image.shape.rank
    length = tf.shape(image)[axis]
    n_strips = (length + rows - 1) // rows
    kept = tf.TensorArray(tf.float32, size=n_strips, infer_shape=False)
    to_front = [axis] + [i for i in range(rank) if i != axis]
    at_axis = tf.one_hot(axis, rank, dtype=tf.int32)

    def body(index, kept):
        start = index * rows
        low = tf.maximum(start - context, 0)
        high = tf.minimum(start + rows + context, length)
        strip = tf.slice(image, at_axis * low, tf.where(at_axis > 0, high - low, -1))
        strip.set_shape([None if i == axis else side for i, side in enumerate(image.shape)])
        out = function(strip, start - low, tf.minimum(rows, length - start))
        return index + 1, kept.write(index, tf.transpose(out, to_front))

    # one strip at a time: strips in parallel would multiply the memory the bound is there to keep
    _, kept = tf.while_loop(lambda index, _: index < n_strips, body, (tf.constant(0), kept), parallel_iterations=1)
    return tf.transpose(kept.concat(), np.argsort(to_front))


def _piece_engine(network, noise_model, max_tile_elements, jit_compile=False, dtype_policy=None):
    """The engine whose chunks hold no more pixels than a piece within the bound (its chunks
    compiled by XLA with ``jit_compile``, its body in ``dtype_policy``).

    The engine pads the kept pixels to whole chunks, so a chunk much larger than the pieces (small
    ``max_tile_elements``) would compute its C x K samples mostly for padding; with the default
    bound a piece holds more pixels than the engine's default chunk, which stays.
    """
    engine = PredictionEngine(network, noise_model, jit_compile=jit_compile, dtype_policy=dtype_policy)
    piece_pixels = max(1, max_tile_elements // engine.n_features)
    if engine.chunk_pixels <= piece_pixels:
        return engine
    return PredictionEngine(network, noise_model, chunk_elements=piece_pixels * engine.n_channels * engine.n_outputs,
                            jit_compile=jit_compile, dtype_policy=dtype_policy)


class WholeImage:
    """Raw image (B, *spatial, C) -> estimate, for any size of at least one block, as graph functions.

    Parameters
    ----------
    network : keras.Model
        A prediction network of :func:`pn2v_tf.nets.build_networks`: raw image (B, *spatial, C) ->
        samples (B, *spatial, C * K) in raw units (normalisation inside), channel-major; spatial
        (Y, X) or (Z, Y, X).
    noise_model : NoiseModel or None
        Needed when K > 1; any kind, or one per channel (:class:`~pn2v_tf.noise_models.ChannelNoiseModels`);
        its ``likelihood_weights`` and ``clip_signal`` on tensors are used.
    block, context : tuple of int
        Per spatial axis; see :func:`block_and_context`.
    max_tile_elements : int
        Bound on the elements of the features of one piece (batch x piece with context x the
        head's input features, which count every channel's network).
    jit_compile : bool
        Compile the head and estimator of each chunk with XLA (see :func:`export_saved_model`).
    dtype_policy : str or None
        The U-Net body's Keras dtype policy (None: the network's; see :func:`export_saved_model`).

    Attributes
    ----------
    n_channels : int
        C, the channels of input and estimate.
    input_shape : tuple
        The input's static shape: (None, *spatial as None, C).
    """

    def __init__(self, network, noise_model, block, context, max_tile_elements=DEFAULT_MAX_TILE_ELEMENTS,
                 jit_compile=False, dtype_policy=None):
        self.max_tile_elements = int(max_tile_elements)
        self.engine = _piece_engine(network, noise_model, self.max_tile_elements, jit_compile, dtype_policy)
        self.n_outputs = self.engine.n_outputs
        self.n_channels = self.engine.n_channels
        self.block, self.context = tuple(int(b) for b in block), tuple(int(c) for c in context)
        self.n_dim = len(self.block)
        self.input_shape = (None,) * (self.n_dim + 1) + (self.n_channels,)

    def _in_pieces(self, estimator, piece, axis=0, kept=()):
        """Cut ``piece`` into strips along spatial axis ``axis`` and each strip along the next axes, so
        that a piece's features stay within the bound; estimate each with the engine."""
        if axis == self.n_dim:
            begin = tf.stack([first for first, _ in kept])
            size = tf.stack([count for _, count in kept])
            return self.engine.estimate_kept(piece, begin, size, estimator)
        shape = tf.shape(piece)
        length = shape[axis + 1]
        per_row = tf.reduce_prod(shape[:-1]) // length * self.engine.n_features
        # a piece within the bound stays whole along this axis (strips would only add context)
        rows = tf.where(per_row * length <= self.max_tile_elements, length,
                        strip_rows(per_row, self.block[axis], self.context[axis], self.max_tile_elements))

        def strip_estimate(strip, first, count):
            return self._in_pieces(estimator, strip, axis + 1, kept + ((first, count),))

        return map_strips(strip_estimate, piece, rows, self.context[axis], axis=axis + 1)

    def _check_size(self, image):
        return tf.debugging.assert_greater_equal(
            tf.reduce_min(tf.shape(image)[1:-1] - tf.constant(self.block)), 0,
            message=f"image sides must be at least {_per_axis_text(self.block)} pixels")

    def _padded(self, image):
        with tf.control_dependencies([self._check_size(image)]):
            padded = pad_to_block(tf.cast(image, tf.float32), self.block)
        padded.set_shape(self.input_shape)  # padding by tensors loses the channels, which the network needs
        return padded

    def _crop_to(self, result, image):
        return tf.slice(result, tf.zeros([self.n_dim + 2], tf.int32),
                        tf.concat([tf.shape(image)[:-1], [-1]], axis=0))

    def estimate(self, image, estimator="mmse"):
        """Estimate (B, *spatial, C) of ``estimator`` ('mmse' or 'prior_mean'), piece by piece."""
        out = self._in_pieces(estimator, self._padded(image))
        out.set_shape(self.input_shape)
        return self._crop_to(out, image)

    def samples(self, image):
        """The network's K samples per channel (B, *spatial, C * K), channel-major, for the whole
        image at once (the body in the engine's dtype policy)."""
        return self._crop_to(self.engine.samples(self._padded(image)), image)


def export_saved_model(model, path, overwrite=False, max_tile_elements=DEFAULT_MAX_TILE_ELEMENTS, jit_compile=False,
                       dtype_policy="float32"):
    """Write a TensorFlow SavedModel that maps raw noisy images to denoised ones.

    Parameters
    ----------
    model : pn2v_tf.PN2V
        A trained model.
    path : str or os.PathLike
        Folder to create.
    overwrite : bool
        Replace an existing ``path``; otherwise an existing path raises ``FileExistsError``.
    max_tile_elements : int
        Bound on batch x piece (with context) x the head's input features (``unet_n_first``, times
        C for one network per channel), the network's largest activations, as the default tiling of
        ``predict`` uses (the C x K samples are bounded per chunk of pixels).
    jit_compile : bool
        Mark the function that computes the head and the estimator of a chunk of pixels for XLA, as
        ``predict`` compiles it: on a CPU the MMSE then takes about ``predict``'s time instead of
        1.7-2 times it (BENCHMARKS.md). TensorFlow for Python (2.7 and later) compiles it when the
        graph first runs; a runtime without XLA's compiler for its device cannot run the graph
        (TensorFlow Java on a GPU, TensorFlow Serving without its XLA flag), so the default graph, and
        every bioimage.io package, runs without XLA.
    dtype_policy : str
        Keras dtype policy of the exported U-Net body, whatever the model was trained with:
        ``'float32'`` (default), which every runtime runs, or ``'mixed_bfloat16'`` for runtimes with
        bfloat16 convolutions (GPUs, recent CPUs); the head and the estimator stay float32.

    Returns
    -------
    pathlib.Path
        ``path``.

    Notes
    -----
    The module docstring lists the signatures: input and output (batch, *spatial, C), C = 1 for a
    single-channel model, equal to ``model.predict`` of the image with axes ``'YXC'`` (``'ZYXC'``).
    The folder is written next to ``path`` under a temporary name and renamed when complete, so a
    failed export leaves no partial folder.
    """
    path = Path(path)
    _refuse_existing(path, overwrite)
    if not is_int(max_tile_elements, 1):
        raise ValueError(f"max_tile_elements must be a positive integer, got {max_tile_elements!r}")
    if not isinstance(jit_compile, bool):
        raise ValueError(f"jit_compile must be True or False, got {jit_compile!r}")
    if dtype_policy not in DTYPE_POLICIES:
        raise ValueError(f"dtype_policy must be one of {DTYPE_POLICIES}, got {dtype_policy!r}")
    whole = WholeImage(model.keras_model, model.noise_model, *block_and_context(model.config), max_tile_elements,
                       jit_compile, dtype_policy)
    outputs = {"serve": lambda image: whole.estimate(image, "mmse")}
    if whole.n_outputs > 1:
        outputs["prior_mean"] = lambda image: whole.estimate(image, "prior_mean")
        outputs["samples"] = whole.samples
    with _atomic_target(path, overwrite) as tmp:
        write_frozen_saved_model(outputs, tmp, whole.input_shape)
    return path


def write_frozen_saved_model(outputs, path, input_shape=(None, None, None, 1)):
    """Write graph functions of one image as a SavedModel whose weights are constants of its graph.

    Parameters
    ----------
    outputs : dict
        Signature name -> function of a float32 tensor of ``input_shape`` returning one tensor. The
        first one is also written as ``serving_default``.
    path : pathlib.Path
        Folder to create.
    input_shape : tuple
        The input's shape in the signatures, None for sizes that vary: (batch, Y, X, C) or (batch,
        Z, Y, X, C), e.g. ``WholeImage.input_shape``.

    Notes
    -----
    One graph, traced once with all outputs and frozen (variables become constants, control flow
    becomes the classic Switch/Merge/Enter/Exit ops), written in the TensorFlow 1 SavedModel layout
    with default attributes stripped and no variables. TensorFlow 2.10 and later write
    ``DisableCopyOnRead`` into the variable-saving functions of a TensorFlow 2 SavedModel, which
    TensorFlow 2.7 (deepImageJ's default engine) cannot load; a graph without variables has no such
    functions. The graph is traced with ``wrap_function``, which (unlike ``tf.function``) ties no
    output to the stateful ops (size checks) of the others, so each signature runs only the part of
    the graph its output needs and the weights are stored once for all of them.
    """
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
    from tensorflow.python.util.deprecation import silence

    names = list(outputs)
    spec = tf.TensorSpec(tuple(input_shape), tf.float32, name=INPUT_KEY)
    traced = tf.compat.v1.wrap_function(lambda image: [outputs[name](image) for name in names], [spec])
    frozen = convert_variables_to_constants_v2(traced)
    graph_def = frozen.graph.as_graph_def()
    output_names = [tensor.name for tensor in frozen.outputs]
    with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as session, silence():
        tf.compat.v1.import_graph_def(graph_def, name="")
        image = graph.get_tensor_by_name(frozen.inputs[0].name)
        signatures = {name: tf.compat.v1.saved_model.predict_signature_def(
            {INPUT_KEY: image}, {OUTPUT_KEY: graph.get_tensor_by_name(output)})
            for name, output in zip(names, output_names)}
        signatures[tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY] = signatures[names[0]]
        builder = tf.compat.v1.saved_model.Builder(str(path))
        builder.add_meta_graph_and_variables(session, [tf.saved_model.SERVING], signature_def_map=signatures,
                                             strip_default_attrs=True)
        builder.save()


# -- bioimage.io ---------------------------------------------------------------------------------

def export_bioimageio(model, path, test_input, name=None, description=None, authors=None, license="CC-BY-4.0",
                      tags=(), overwrite=False, max_tile_elements=DEFAULT_MAX_TILE_ELEMENTS, channel_names=None):
    """Write a bioimage.io model package (zip) for deepImageJ / Fiji, ilastik, bioimageio.core.

    Parameters
    ----------
    model : pn2v_tf.PN2V
        A trained model.
    path : str or os.PathLike
        The zip file to write (``.zip`` is appended if missing).
    test_input : numpy.ndarray
        A raw noisy image (Y, X), or volume (Z, Y, X) for a 3-D model, with a last channel axis C
        for a multichannel model, like the data the model is meant for; it becomes the test input,
        its MMSE (``model.predict``) the test output, and both the cover image (the middle slice of
        a volume; several channels as a colour composite).
    name : str or None
        Model name (letters, digits, spaces, ``_+-()``; 5 to 128 characters). Default: from the model.
    description : str or None
        One-line description. Default: says which estimator and noise model the package uses.
    authors : list of dict or None
        Creators of the package, e.g. ``[{'name': 'Ada Lovelace', 'affiliation': '...'}]``.
        Default: none (bioimage.io validation then warns).
    license : str
        SPDX identifier of the weights' license. Default: ``'CC-BY-4.0'``.
    tags : sequence of str
        Tags added to ``denoising``, ``pn2v`` (or the mode), ``2d`` or ``3d``, ``tensorflow``.
    overwrite : bool
        Replace an existing ``path``.
    max_tile_elements : int
        See :func:`export_saved_model`.
    channel_names : sequence of str or None
        Names of the channels (e.g. ``['DAPI', 'GFP']``), one per channel of the model, for the
        channel axes of input and output. Default: ``['raw']`` in and ``['denoised']`` out for a
        single-channel model, ``['channel0', 'channel1', ...]`` for a multichannel one.

    Returns
    -------
    pathlib.Path
        The zip file.

    Raises
    ------
    ValueError
        If ``test_input`` does not fit the model, ``channel_names`` does not name each channel once,
        or the description does not validate.

    Notes
    -----
    Needs the optional extra: ``pip install 'pn2v_tf[bioimageio]'``. The description is validated by
    ``bioimageio.spec`` before the zip is written. The rdf declares no preprocessing: the input is
    the raw image, the graph normalises it.
    """
    try:
        from bioimageio.spec import ValidationContext, build_description, save_bioimageio_package
    except ImportError as error:
        raise ImportError("export_bioimageio needs bioimageio.spec: pip install 'pn2v_tf[bioimageio]'") from error

    path = Path(path)
    if path.suffix != ".zip":
        path = path.with_name(path.name + ".zip")
    _refuse_existing(path, overwrite)
    names = _channel_names(channel_names, model.config.n_channels)
    block, halo = block_and_context(model.config)
    image = _check_test_input(test_input, block, tuple(2 * h + b for h, b in zip(halo, block)),
                              model.config.n_channels)
    output = model.predict(image, axes=spatial_axes(model.config.n_dim) + "C", estimator="mmse")
    with tempfile.TemporaryDirectory(prefix=".pn2v_bioimageio-", dir=path.parent) as tmp:
        folder = Path(tmp)
        export_saved_model(model, folder / "saved_model", max_tile_elements=max_tile_elements)
        _zip_folder(folder / "saved_model", folder / WEIGHTS_FILE)
        if model.noise_model is not None:
            model.noise_model.save(folder / NOISE_MODEL_FILE)
        _write_test_files(folder, image, output, model.config.n_dim)
        rdf = _rdf(model, name, description, authors, license, tags, _digest(folder / "saved_model" / "saved_model.pb"),
                   names)
        (folder / "README.md").write_text(_documentation(model, rdf, image, output))
        descr = build_description(rdf, context=ValidationContext(root=folder, file_name="rdf.yaml"))
        if descr.validation_summary.status == "failed":
            raise ValueError(f"the bioimage.io description is invalid:\n{descr.validation_summary.format()}")
        tmp_zip = folder / "package.zip"
        save_bioimageio_package(descr, output_path=tmp_zip)
        os.replace(tmp_zip, path)
    return path


def _write_test_files(folder, image, output, n_dim):
    """Test tensors (1, *spatial, C), sample images (ImageJ layout) and cover of a test input and its
    output, both (*spatial, C), into ``folder``."""
    np.save(folder / "test_input.npy", image[np.newaxis])
    np.save(folder / "test_output.npy", output[np.newaxis])
    for kind, tensor in (("input", image), ("output", output)):
        shown, axes = _imagej_layout(tensor, n_dim)
        tifffile.imwrite(folder / f"sample_{kind}.tif", shown, imagej=True, metadata={"axes": axes})
    middle = (len(image) // 2,) if n_dim == 3 else ()
    _write_cover(image[middle], output[middle], folder / "cover.png")


def _channel_names(channel_names, n_channels):
    """(input names, output names) of the channel axes; see :func:`export_bioimageio`."""
    if channel_names is None:
        if n_channels == 1:
            return ["raw"], ["denoised"]
        return [f"channel{c}" for c in range(n_channels)], [f"channel{c}" for c in range(n_channels)]
    names = [channel_names] if isinstance(channel_names, str) else list(channel_names)
    if len(names) != n_channels:
        raise ValueError(f"channel_names must name each of the model's {n_channels} channel"
                         f"{'s' * (n_channels > 1)} once, got {len(names)} name{'s' * (len(names) != 1)}: {names!r}")
    if not all(isinstance(n, str) and n.strip() for n in names) or len(set(names)) != len(names):
        raise ValueError(f"channel_names must be distinct non-empty strings, got {names!r}")
    return names, list(names)


def _rdf(model, name, description, authors, license, tags, digest, channel_names):
    """The rdf (model description, format 0.5) as a dict; files relative to the package root;
    ``channel_names`` (input names, output names) as :func:`_channel_names` gives them.

    Beyond what bioimage.io validation asks, JDLL (deepImageJ's model reader) needs a model ``id``
    (or it leaves the model out of its list), an ``id`` on every axis, an input ``size.min`` that is
    a multiple of ``step`` (its tiles are multiples of ``step``), the halo on output axes that refer
    to the input, and the weights zip at the package root with ``saved_model.pb`` at the zip's root.
    """
    from bioimageio.spec.model.v0_5 import ModelDescr

    cfg = model.config
    pn2v = cfg.mode == "pn2v"
    multi = cfg.n_channels > 1
    block, halo = block_and_context(cfg)
    what = (f"PN2V MMSE denoising (K={cfg.n_samples}, {_noise_model_text(model.noise_model)})" if pn2v
            else {"n2v": "Noise2Void denoising", "care": "CARE denoising"}[cfg.mode])
    axis_ids = spatial_axes(cfg.n_dim).lower()
    same = {"tensor_id": INPUT_KEY}
    name = name or f"{'PN2V' if pn2v else cfg.mode.upper()} {model.name}"
    return {
        "format_version": ModelDescr.implemented_format_version,
        "type": "model",
        "id": _model_id(name, digest),
        "name": name,
        "description": description or (f"{what} of {cfg.n_dim}D {'multichannel ' * multi}microscopy images, "
                                       f"exported by pn2v_tf {__version__}"),
        "authors": list(authors or []),
        "cite": [{"text": PN2V_CITATION, "doi": PN2V_DOI}],
        "license": license,
        "tags": sorted({"denoising", cfg.mode, f"{cfg.n_dim}d", "tensorflow", "noise2void", *tags}),
        "documentation": {"source": "README.md"},
        "covers": [{"source": "cover.png"}],
        "inputs": [{
            "id": INPUT_KEY,
            "description": "raw noisy image (camera counts, not normalised)" + (f", {cfg.n_channels} channels" * multi),
            "axes": [{"type": "batch", "id": "batch"},
                     *({"type": "space", "id": a, "size": {"min": 2 * h + b, "step": b}}
                       for a, b, h in zip(axis_ids, block, halo)),
                     {"type": "channel", "id": "channel", "channel_names": list(channel_names[0])}],
            "test_tensor": {"source": "test_input.npy"},
            "sample_tensor": {"source": "sample_input.tif"},
            "data": {"type": "float32"},
            "preprocessing": [],
        }],
        "outputs": [{
            "id": OUTPUT_KEY,
            "description": "denoised image, same units and channels as the input",
            "axes": [{"type": "batch", "id": "batch"},
                     *({"type": "space", "id": a, "size": {**same, "axis_id": a}, "halo": h}
                       for a, h in zip(axis_ids, halo)),
                     {"type": "channel", "id": "channel", "channel_names": list(channel_names[1])}],
            "test_tensor": {"source": "test_output.npy"},
            "sample_tensor": {"source": "sample_output.tif"},
            "data": {"type": "float32"},
        }],
        "weights": {"tensorflow_saved_model_bundle": {
            "source": WEIGHTS_FILE, "tensorflow_version": tf.__version__,
            "comment": ("network, noise model and estimator in one graph with the weights as constants; "
                        "signature serving_default; runs in TensorFlow 2.7 and later"),
        }},
        "attachments": [{"source": NOISE_MODEL_FILE}] if model.noise_model is not None else [],
        "config": {PACKAGE_CONFIG_KEY: {"version": __version__, "mode": cfg.mode, "n_samples": cfg.n_samples,
                               "unet_n_depth": cfg.unet_n_depth, "unet_n_first": cfg.unet_n_first,
                               "unet_pool": list(cfg.unet_pool), "axes": _predict_axes(cfg),
                               "n_channels": cfg.n_channels, "single_net_per_channel": bool(cfg.single_net_per_channel),
                               "blurpool": bool(cfg.blurpool), "skip_skipone": bool(cfg.skip_skipone),
                               "n2v_manipulator": cfg.n2v_manipulator, "structN2Vmask": cfg.structN2Vmask,
                               "means": list(cfg.means), "stds": list(cfg.stds),
                               "noise_model": None if model.noise_model is None else model.noise_model.kind}},
    }


def _predict_axes(config):
    """The axes of one image as ``predict`` takes it by default: spatial, and C for several channels."""
    return spatial_axes(config.n_dim) + ("C" if config.n_channels > 1 else "")


def _noise_model_text(noise_model):
    """'histogram noise model', or 'per-channel noise models (histogram, gmm)'."""
    models = getattr(noise_model, "models", None)
    if models is None:
        return f"{noise_model.kind} noise model"
    return f"per-channel noise models ({', '.join(m.kind for m in models)})"


def _normalisation_text(config):
    """'mean 10, standard deviation 2', or per channel for several channels."""
    if config.n_channels == 1:
        return f"mean {config.means[0]:g}, standard deviation {config.stds[0]:g}"
    return (f"per channel: means {', '.join(f'{m:g}' for m in config.means)}, standard deviations "
            f"{', '.join(f'{s:g}' for s in config.stds)}")


def _channels_text(config, names):
    """README line on the channel axis of a multichannel model (None for one channel)."""
    if config.n_channels == 1:
        return None
    networks = "one U-Net per channel" if config.single_net_per_channel else "one U-Net for all channels"
    return (f"- Channels (the last axis, in this order): {', '.join(f'`{n}`' for n in names)}. The model "
            f"uses {networks}; the output has the same channels, each denoised with its own noise model "
            "and normalisation.")


def _noise_text(noise_model):
    """README line on the noise model's range (None without a noise model)."""
    if noise_model is None:
        return None
    models = getattr(noise_model, "models", None)
    if models is None:
        subject, ranges = f"Noise model ({noise_model.kind}) describes", _range_text(noise_model)
    else:
        subject = f"Noise models, one per channel ({', '.join(m.kind for m in models)}), describe"
        ranges = "; ".join(f"channel {c}: {_range_text(m)}" for c, m in enumerate(models))
    return (f"- {subject} observations in {ranges}: values outside are treated as its first or last bin, "
            "signals are clamped to its calibrated range.")


def _range_text(noise_model):
    low, high = noise_model.value_range
    return f"[{low:g}, {high:g}]"


def _documentation(model, rdf, image, output):
    """The package's README.md: data, sizes, method, validation, Fiji, reference."""
    cfg = model.config
    block, halo = block_and_context(cfg)
    method = (f"The network predicts K = {cfg.n_samples} samples of each pixel's clean signal from its "
              "neighbourhood; the output is their average weighted by the noise model's likelihood of the "
              "pixel's own noisy value (the MMSE estimate, paper Eq. 10)." if cfg.mode == "pn2v" else
              f"The network was trained in mode `{cfg.mode}` and predicts one value per pixel.")
    lines = [
        f"# {rdf['name']}", "", f"{rdf['description']}.", "",
        "## Input and output", "",
        f"- Input `input`: a raw noisy {cfg.n_dim}D image, axes (batch, {', '.join(spatial_axes(cfg.n_dim).lower())}, "
        "channel), float32, in the camera's "
        "raw intensity units as recorded. **Do not normalise it**: the graph normalises internally "
        f"({_normalisation_text(cfg)} of the training data), so the rdf declares no preprocessing.",
        _channels_text(cfg, rdf["inputs"][0]["axes"][-1]["channel_names"]),
        "- Output `output`: the denoised image, same shape and units.",
        _noise_text(model.noise_model),
        f"- Sizes (along {', '.join(spatial_axes(cfg.n_dim).lower())}): the graph itself takes any size of at least "
        f"{_per_axis_text(block)} pixels (it pads to multiples of {_per_axis_text(block)} by reflection and crops the "
        "result) and bounds its memory by working on overlapping pieces. The rdf declares sizes "
        f"{_per_axis_text(tuple(2 * h + b for h, b in zip(halo, block)))} + n x {_per_axis_text(block)} and a halo of "
        f"{_per_axis_text(halo)} pixels (the network's receptive field), so that tools which tile an image "
        "overlap the tiles enough for seamless results.",
        "", "## Method", "",
        f"Probabilistic Noise2Void (Krull et al. 2020): a U-Net ({cfg.unet_n_depth} levels, "
        f"{cfg.unet_n_first} features in the first) trained on noisy images alone. {method} "
        f"Exported by pn2v_tf {__version__}.",
        "", "## Validation", "",
        f"The test input (shape {image.shape if cfg.n_channels > 1 else image.shape[:-1]}, values "
        f"{float(image.min()):g} to {float(image.max()):g}) "
        f"gives the test output (values {float(output.min()):g} to {float(output.max()):g}), computed by "
        "`pn2v_tf`'s `PN2V.predict`; `bioimageio.core`'s model test checks that the weights reproduce "
        "it. To judge the denoising on your own data, compare with a ground truth (for example the "
        "average of many frames of a static sample) by PSNR.",
        "", "## Use in Fiji", "",
        "Enable the DeepImageJ update site, install this zip with *DeepImageJ Install Model*, open a raw "
        "image and run *DeepImageJ Run* with this model. It runs on deepImageJ's TensorFlow 2 engines "
        "(TensorFlow 2.7 and 2.10): the weights are frozen into the graph, which has no variables. In "
        "Python, `pn2v_tf.load_bioimageio` runs this package without the model folder.",
        "", "## Reference", "", f"{PN2V_CITATION} doi:{PN2V_DOI}", "",
    ]
    return "\n".join(line for line in lines if line is not None)


# -- files -----------------------------------------------------------------------------------------

def _refuse_existing(path, overwrite):
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; choose another path or pass overwrite=True")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"folder {path.parent} does not exist")


class _atomic_target:
    """Context manager: yields a temporary sibling path; on success it replaces ``path``."""

    def __init__(self, path, overwrite):
        self.path, self.overwrite = Path(path), overwrite

    def __enter__(self):
        self.tmpdir = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", dir=self.path.parent))
        return self.tmpdir / "new"

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                _refuse_existing(self.path, self.overwrite)
                if self.path.exists():
                    os.replace(self.path, self.tmpdir / "old")
                os.replace(self.tmpdir / "new", self.path)
        finally:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
        return False


def _zip_folder(folder, zip_path):
    """Zip the contents of ``folder`` (paths relative to it, folders included even when empty, such
    as a SavedModel's ``variables``), as the SavedModel weights format wants."""
    import zipfile

    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(folder.rglob("*")):
            archive.write(file, file.relative_to(folder).as_posix())


def _digest(path):
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _model_id(name, digest):
    """A model id as bioimage.io allows it (lowercase letters, digits, ``_-``): the name, and the
    start of the weights' digest, so that exports of different weights under one name differ."""
    allowed = set(string.ascii_lowercase + string.digits + "_")
    slug = "-".join("".join(c if c in allowed else " " for c in name.lower()).split()) or "pn2v_tf"
    return f"{slug}-{digest[:8]}"


def _per_axis_text(sides):
    """'4' for equal sides (4, 4), '(1, 4, 4)' for unequal ones."""
    sides = tuple(int(s) for s in sides)
    return str(sides[0]) if len(set(sides)) == 1 else str(sides)


def _check_test_input(image, block, min_sides, n_channels=1):
    """A finite float32 image (*spatial, C) of the model's dimensions and channels, cropped to
    multiples of ``block`` (per axis), at least ``min_sides`` large. A single-channel model takes
    the image without a channel axis, a multichannel one with C last."""
    n_dim = len(block)
    image = np.asarray(image)
    axes = spatial_axes(n_dim) + ("C" if n_channels > 1 else "")
    if image.ndim != len(axes):
        raise ValueError(f"test_input must be one {n_dim}D image ({axes}), got shape {image.shape}")
    if any(side < low for side, low in zip(image.shape, min_sides)):
        raise ValueError(f"the test input must be at least {' x '.join(str(m) for m in min_sides)} pixels (the "
                         f"network's receptive field around one block), got {' x '.join(str(s) for s in image.shape)}; "
                         "pass a larger raw image as test_input= (pn2v export --test-input)")
    image = image[tuple(slice(0, side // b * b) for side, b in zip(image.shape, block))]
    return as_image_stack(image[np.newaxis], n_dim, "test_input", n_channels=n_channels)[0]


#: Colours of the channels of a multichannel cover (RGB), in channel order, repeated for more channels.
CHANNEL_COLOURS = ((1.0, 0.0, 1.0), (0.0, 1.0, 0.0), (0.0, 1.0, 1.0), (1.0, 1.0, 0.0), (1.0, 0.3, 0.0),
                   (0.3, 0.3, 1.0))


def _write_cover(image, output, path):
    """Input | output (Y, X, C) side by side as a PNG (2:1): one channel in a colour map, several as
    a colour composite; each channel with one intensity scale for input and output."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 4), dpi=100, facecolor="black")
    for index, (title, (shown, style)) in enumerate(zip(("noisy input", "denoised"), _cover_panels(image, output))):
        axis = figure.add_axes([index / 2, 0, 0.5, 1])
        axis.imshow(shown, **style)
        axis.set_axis_off()
        axis.text(0.03, 0.95, title, color="white", transform=axis.transAxes, va="top", fontsize=14)
    figure.savefig(path, facecolor="black")


def _cover_panels(image, output):
    """[(array, imshow keywords)] of input and output (Y, X, C): channel 0 with the magma colour map
    for one channel; an RGB composite (each channel scaled to its 0.5 to 99.5 percentiles in
    :data:`CHANNEL_COLOURS`, added) for several."""
    import matplotlib

    def limits(channel):
        return np.percentile(np.concatenate([image[..., channel].ravel(), output[..., channel].ravel()]), [0.5, 99.5])

    if image.shape[-1] == 1:
        low, high = limits(0)
        style = {"cmap": matplotlib.colormaps["magma"], "vmin": low, "vmax": high}
        return [(image[..., 0], style), (output[..., 0], style)]
    scaled = []
    for panel in (image, output):
        rgb = np.zeros(panel.shape[:-1] + (3,))
        for channel in range(panel.shape[-1]):
            low, high = limits(channel)
            value = np.clip((panel[..., channel] - low) / max(high - low, np.finfo(np.float32).tiny), 0, 1)
            rgb += value[..., np.newaxis] * CHANNEL_COLOURS[channel % len(CHANNEL_COLOURS)]
        scaled.append((np.clip(rgb, 0, 1), {}))
    return scaled
