"""Run a bioimage.io package made by pn2v_tf through its SavedModel, without the model folder.

A package from a colleague or a model zoo holds everything prediction needs: the SavedModel does
padding, normalisation, network, noise model and estimator in one graph, and the noise model file
comes along as an attachment (for the range check that ``PN2V.predict`` also does). Packages that
pn2v_tf did not make are refused: their graphs take other inputs (normalised, other axes), which
only their rdf describes; bioimageio.core or deepImageJ run them.
"""

import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np

from .arrays import spatial_axes, stack_from_axes
from .export import INPUT_KEY, OUTPUT_KEY, PACKAGE_CONFIG_KEY, _per_axis_text
from .model import NOISE_MODEL_FILE

RDF_FILE = "rdf.yaml"


def load_bioimageio(path):
    """Open a bioimage.io package written by :meth:`pn2v_tf.PN2V.export_bioimageio`.

    Parameters
    ----------
    path : str or os.PathLike
        The package's ``.zip`` file, or a folder holding its unpacked files (``rdf.yaml`` and the
        weights zip).

    Returns
    -------
    PackagedModel

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If ``path`` is not a bioimage.io package, not one made by pn2v_tf, or its SavedModel does not
        load.
    """
    return PackagedModel(path)


class PackagedModel:
    """A pn2v_tf bioimage.io package, ready to predict with its SavedModel.

    Use :func:`load_bioimageio` to make one. The SavedModel is unpacked into a temporary folder that
    :meth:`close` (or leaving a ``with`` block) removes.

    Attributes
    ----------
    path : pathlib.Path
        The package.
    rdf : dict
        Its description (``rdf.yaml``).
    name, mode : str
        The package's name and the model's mode ('pn2v', 'n2v' or 'care').
    noise_model : NoiseModel or None
        The attached noise model (mode 'pn2v').
    n_dim : int
        2 for a package of a 2-D model, 3 for a 3-D one (volumes, axes ZYX).
    n_channels : int
        The channels of the model's images (the size of the input's channel axis).
    channel_names : list of str
        The names of the input's channels, as the rdf lists them.
    block : tuple of int
        Per spatial axis: sides are processed in multiples of this; images must be at least this large.
    """

    def __init__(self, path):
        self.path = Path(path)
        self._tmp = tempfile.TemporaryDirectory(prefix="pn2v_tf-package-")
        try:
            self._open(Path(self._tmp.name))
        except BaseException:
            self.close()
            raise

    def _open(self, tmp):
        with _PackageFiles(self.path) as files:
            self._unpack(files, tmp)
        import tensorflow as tf

        try:
            self._saved_model = tf.saved_model.load(str(tmp / "saved_model"))
        except Exception as error:  # OSError, protobuf's DecodeError, TensorFlow's errors: all say the same
            raise ValueError(f"{self.path}: its weights do not load as a TensorFlow SavedModel "
                             f"(saved_model.pb must be at the root of the weights zip): {error}") from None
        self._signatures = dict(self._saved_model.signatures)

    def _unpack(self, files, tmp):
        self.rdf = _our_rdf(self.path, files.read(RDF_FILE))
        info = self.rdf["config"][PACKAGE_CONFIG_KEY]
        self.name, self.mode = str(self.rdf.get("name")), str(info.get("mode"))
        self.block = _input_block(self.path, self.rdf)
        self.n_dim = len(self.block)
        self.channel_names = _input_channel_names(self.path, self.rdf)
        self.n_channels = len(self.channel_names)
        source = _weights_source(self.path, self.rdf)
        try:
            with zipfile.ZipFile(files.open(source)) as archive:
                archive.extractall(tmp / "saved_model")
        except zipfile.BadZipFile:
            raise ValueError(f"{self.path}: its weights {source} are not a zip file") from None
        self.noise_model = None
        if info.get("noise_model") is not None:
            if not files.has(NOISE_MODEL_FILE):
                warnings.warn(f"{self.path}: no {NOISE_MODEL_FILE} attached (exported by an older pn2v_tf); "
                              "pixel values are not checked against the noise model's range")
                return
            from .noise_models import load_noise_model

            (tmp / NOISE_MODEL_FILE).write_bytes(files.read(NOISE_MODEL_FILE))
            self.noise_model = load_noise_model(tmp / NOISE_MODEL_FILE)

    def close(self):
        """Remove the unpacked SavedModel."""
        self._tmp.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __repr__(self):
        return f"PackagedModel({self.name!r}, mode={self.mode!r}, path={str(self.path)!r})"

    def predict(self, img, axes=None, estimator="mmse", progress=None):
        """Denoise an image with the package's SavedModel, as :meth:`pn2v_tf.PN2V.predict` does.

        Parameters
        ----------
        img : numpy.ndarray
            Raw noisy image with axes ``axes``.
        axes : str or None
            Must contain the model's spatial axes (YX, or ZYX for a 3-D model); other axes (S, T,
            and Z for a 2-D model) hold images processed one by one; a channel axis C must have the
            model's number of channels (it may be left out for a single-channel model). Default:
            the model's spatial axes, plus C for a multichannel model.
        estimator : str
            ``'mmse'`` or ``'prior_mean'``; packages of modes 'n2v' and 'care' have one output,
            which both return.
        progress : callable or None
            Called as ``progress(done, total)`` after each image.

        Returns
        -------
        numpy.ndarray
            float32, the shape and axes of ``img``, as :meth:`pn2v_tf.PN2V.predict` returns them.
        """
        if estimator not in ("mmse", "prior_mean"):
            raise ValueError(f"estimator must be 'mmse' or 'prior_mean', got {estimator!r} (a package has no "
                             "posterior samples: use the model folder's PN2V.sample_posterior)")
        if axes is None:
            axes = spatial_axes(self.n_dim) + ("C" if self.n_channels > 1 else "")
        images, restore = stack_from_axes(img, axes, self.n_dim, n_channels=self.n_channels)
        sides = images.shape[1:-1]
        if any(side < low for side, low in zip(sides, self.block)):
            raise ValueError(f"image sides must be at least {_per_axis_text(self.block)} pixels, got "
                             f"{' x '.join(str(side) for side in sides)}")
        if self.noise_model is not None and estimator != "prior_mean":
            self.noise_model.check_range(images, "image")
        # packages of modes 'n2v' and 'care' have no prior_mean signature: their one output serves both
        name = "prior_mean" if estimator == "prior_mean" and "prior_mean" in self._signatures else "serving_default"
        signature = self._signatures[name]
        results = []
        for index, image in enumerate(images):
            out = signature(**{INPUT_KEY: image[np.newaxis]})[OUTPUT_KEY]
            results.append(np.asarray(out)[0])
            if progress is not None:
                progress(index + 1, len(images))
        return restore(np.stack(results))


class _PackageFiles:
    """Files of a package, zipped or unpacked into a folder, by their names in the package."""

    def __init__(self, path):
        self.path = path
        if path.is_dir():
            self.zip = None
        elif path.is_file() and zipfile.is_zipfile(path):
            self.zip = zipfile.ZipFile(path)
        elif path.exists():
            raise ValueError(f"{path}: not a bioimage.io package (neither a zip file nor a folder)")
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.zip is not None:
            self.zip.close()
        return False

    def has(self, name):
        return name in self.zip.namelist() if self.zip is not None else (self.path / name).is_file()

    def read(self, name):
        try:
            if self.zip is not None:
                return self.zip.read(name)
            return (self.path / name).read_bytes()
        except (KeyError, FileNotFoundError, IsADirectoryError):
            raise ValueError(f"{self.path}: the package has no file {name}") from None

    def open(self, name):
        import io

        return io.BytesIO(self.read(name))


def _our_rdf(path, text):
    """The rdf as a dict if pn2v_tf wrote it; otherwise a ValueError that says what to use instead."""
    import yaml

    try:
        rdf = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: {RDF_FILE} is not valid YAML ({error})") from None
    if not isinstance(rdf, dict) or rdf.get("type") != "model":
        raise ValueError(f"{path}: not a bioimage.io model package ({RDF_FILE} does not describe a model)")
    if not isinstance((rdf.get("config") or {}).get(PACKAGE_CONFIG_KEY), dict):
        raise ValueError(f"{path}: this bioimage.io model was not made by pn2v_tf (its {RDF_FILE} has no "
                         f"config.{PACKAGE_CONFIG_KEY}); run it with bioimageio.core or deepImageJ instead")
    return rdf


def _weights_source(path, rdf):
    bundle = (rdf.get("weights") or {}).get("tensorflow_saved_model_bundle") or {}
    if not bundle.get("source"):
        raise ValueError(f"{path}: {RDF_FILE} lists no tensorflow_saved_model_bundle weights")
    return str(bundle["source"])


def _input_channel_names(path, rdf):
    """The channel names of the input's channel axis: one per channel of the SavedModel's input
    (``['raw']`` for a single-channel package)."""
    channels = [axis for axis in rdf["inputs"][0]["axes"] if axis.get("type") == "channel"]
    names = channels[0].get("channel_names") if len(channels) == 1 else None
    if not isinstance(names, list) or not names:
        raise ValueError(f"{path}: {RDF_FILE} has no input channel axis with channel names, as pn2v_tf writes it")
    return [str(name) for name in names]


def _input_block(path, rdf):
    """The steps of the input's space axes (the network's block per axis), as the export wrote them."""
    try:
        axes = rdf["inputs"][0]["axes"]
        block = tuple(int(axis["size"]["step"]) for axis in axes if axis.get("type") == "space")
    except (KeyError, IndexError, TypeError):
        block = ()
    if len(block) not in (2, 3):
        raise ValueError(f"{path}: {RDF_FILE} has no input space axes (y, x or z, y, x) with a size step, as "
                         "pn2v_tf writes them")
    return block
