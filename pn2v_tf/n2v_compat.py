"""n2v's API on this package, for n2v scripts and notebooks that change their imports only.

::

    from pn2v_tf.n2v_compat import N2VConfig, N2V          # was: from n2v.models import N2VConfig, N2V
    from pn2v_tf.n2v_compat import N2V_DataGenerator       # was: from n2v.internals.N2V_DataGenerator import ...

:class:`N2VConfig` takes n2v's keywords with n2v's defaults and meanings and translates them into a
:class:`~pn2v_tf.PN2VConfig` of mode ``'n2v'`` (or ``'pn2v'`` with ``mode='pn2v'`` and a noise model
given to :class:`N2V`). What differs:

- ``unet_n_depth`` counts poolings in n2v (2 = two poolings) and resolution levels here (3 = two
  poolings): n2v's value is taken as n2v means it and stored plus one.
- The network is this package's U-Net (skip connections added, not concatenated), so weights
  written by n2v cannot be read; a model trained here is saved and loaded as any pn2v_tf model.
- ``unet_last_activation='relu'`` and ``probabilistic=True`` are refused with what to use instead;
  other keywords that n2v does not know either are refused by name.
"""

import glob
import os
from pathlib import Path

import numpy as np

from .arrays import is_chunked
from .config import PN2VConfig
from .model import PN2V

__all__ = ["N2VConfig", "N2V", "N2V_DataGenerator", "n2v_defaults"]

#: n2v keywords that have no attribute here: accepted with n2v's default value (and dropped), refused
#: with any other value, with the message given.
_N2V_ONLY = {
    "unet_last_activation": ("linear", "unet_last_activation must be 'linear' (the only output activation here); "
                                       "leave it out"),
    "probabilistic": (False, "probabilistic=True (n2v's Laplace loss) is not available; for a probabilistic model "
                             "use PN2V: N2VConfig(X, mode='pn2v', ...) and N2V(config, name, basedir, "
                             "noise_model=...)"),
}
#: n2v keywords that follow from the data and are ignored.
_DERIVED = ("n_dim", "unet_input_shape", "n_channel_in", "n_channel_out")


def n2v_defaults(n_dim):
    """n2v's ``N2VConfig`` defaults, in this package's attributes (``unet_n_depth`` counted here)."""
    return dict(unet_n_depth=2 + 1, unet_kern_size=5 if n_dim == 2 else 3, unet_n_first=32, batch_norm=True,
                train_loss="mae", train_epochs=100, train_steps_per_epoch=400, train_learning_rate=4e-4,
                train_batch_size=16, train_tensorboard=True, train_reduce_lr={"factor": 0.5, "patience": 10},
                n2v_perc_pix=1.5, n2v_patch_shape=(64,) * n_dim, n2v_manipulator="uniform_withCP",
                n2v_neighborhood_radius=5, single_net_per_channel=True, blurpool=False, skip_skipone=False,
                structN2Vmask=None)


class N2VConfig(PN2VConfig):
    """n2v's ``N2VConfig(X, **kwargs)``: n2v's keywords, defaults and array layout.

    Parameters
    ----------
    X : numpy.ndarray or None
        Training patches with axes ``SYXC`` or ``SZYXC`` (the channel axis always last, as n2v has
        it); the axes follow from X's number of dimensions unless ``axes`` is given (``'YXC'``,
        ``'ZYXC'``, or without C). ``None`` when a saved configuration is loaded.
    kwargs : dict
        n2v's configuration keywords (see :func:`n2v_defaults` for the defaults), with n2v's
        ``unet_n_depth`` (poolings); ``mode='pn2v'`` and ``n_samples`` for PN2V.

    Raises
    ------
    ValueError
        For a keyword that neither n2v nor this package has, and for n2v's options that are not
        available here (with what to use instead).
    """

    def __init__(self, X=None, **kwargs):
        if X is None or (not is_chunked(X) and np.size(X) == 0):  # a saved configuration: our own attributes
            super().__init__(None, **kwargs)
            return
        X = X if is_chunked(X) else np.asarray(X)
        axes = kwargs.pop("axes", None)
        if axes is None:
            if X.ndim not in (4, 5):
                raise ValueError(f"X has shape {X.shape}: n2v's layout is SYXC or SZYXC (channel last); give "
                                 "axes= for another")
            axes = "YXC" if X.ndim == 4 else "ZYXC"
        axes = axes.upper().replace("S", "")
        n_dim = 3 if "Z" in axes else 2
        mode = kwargs.pop("mode", "n2v")
        settings = {**n2v_defaults(n_dim), **_translate(kwargs, n_dim)}
        super().__init__(X, mode=mode, axes=axes, **settings)


def _translate(kwargs, n_dim):
    """n2v's keywords -> this package's attributes, refusing what is not available."""
    known = set(vars(PN2VConfig(None, mode="n2v", axes="ZYX" if n_dim == 3 else "YX"))) | {"n_samples"}
    translated = {}
    for key, value in kwargs.items():
        if key in _DERIVED:
            continue
        if key in _N2V_ONLY:
            default, message = _N2V_ONLY[key]
            if value != default:
                raise ValueError(message)
            continue
        if key not in known:
            raise ValueError(f"unknown configuration keyword {key!r} (neither n2v's N2VConfig nor pn2v_tf's "
                             "PN2VConfig has it)")
        translated[key] = value
    if "unet_n_depth" in translated:
        translated["unet_n_depth"] = int(translated["unet_n_depth"]) + 1
    if "means" in translated or "stds" in translated:  # n2v writes them as strings
        for key in ("means", "stds"):
            if key in translated:
                translated[key] = [float(v) for v in translated[key]]
    return translated


class N2V(PN2V):
    """n2v's ``N2V(config, name, basedir)``: train, predict and ``export_TF`` as n2v has them.

    A :class:`PN2V` whose configuration is an :class:`N2VConfig`; ``N2V(None, name, basedir)`` loads
    a model saved by it (or by :class:`PN2V`).
    """

    @property
    def _config_class(self):
        return N2VConfig

    def predict(self, img, axes=None, resizer=None, n_tiles=None, tta=False, **kwargs):
        """n2v's ``predict(img, axes, resizer=..., n_tiles=None, tta=False)`` (:meth:`PN2V.predict`)."""
        return super().predict(img, axes=axes, n_tiles=n_tiles, tta=tta, resizer=resizer, **kwargs)

    def export_TF(self, name, description, authors, test_img, axes, patch_shape=None, license="BSD-3-Clause",
                  result_path=None, fname=None, overwrite=True):
        """n2v's ``export_TF``: a bioimage.io package for deepImageJ (:meth:`PN2V.export_bioimageio`).

        Parameters
        ----------
        name, description : str
            The package's name and description.
        authors : list of str or dict
            Author names (or bioimage.io author dicts).
        test_img : numpy.ndarray
            A raw image with axes ``axes`` (e.g. ``'YX'``, ``'YXC'``, ``'ZYX'``): the package's test
            input and cover.
        axes : str
            Axes of ``test_img``.
        patch_shape : tuple or None
            Accepted for n2v's signature; the package tiles by itself.
        license : str
            The package's licence. Default: n2v's ``'BSD-3-Clause'``.
        result_path : str or os.PathLike or None
            Folder of the package. Default: the model folder.
        fname : str or os.PathLike or None
            The zip file itself (overrides ``result_path``); default ``<result_path>/export.bioimage.io.zip``.
        overwrite : bool
            Replace an existing package (as n2v does). Default: True.

        Returns
        -------
        pathlib.Path
        """
        if fname is None:
            if result_path is None and self.basedir is None:
                raise ValueError("export_TF needs result_path= or fname= for a model without a folder (basedir=None)")
            fname = Path(result_path if result_path is not None else self.logdir) / "export.bioimage.io.zip"
        authors = [a if isinstance(a, dict) else {"name": str(a)} for a in authors]
        return self.export_bioimageio(fname, _model_layout(test_img, axes, self.config), overwrite=overwrite,
                                      name=name, description=description, authors=authors, license=license)


def _model_layout(image, axes, config):
    """An image with axes ``axes`` as the model's spatial axes, plus C for a multichannel model."""
    from .arrays import spatial_axes

    axes = axes.upper()
    image = np.asarray(image)
    if len(axes) != image.ndim:
        raise ValueError(f"test_img has {image.ndim} dimensions but axes {axes!r} name {len(axes)}")
    wanted = spatial_axes(config.n_dim) + ("C" if config.n_channels > 1 else "")
    if "C" in axes and "C" not in wanted:
        if image.shape[axes.index("C")] != 1:
            raise ValueError(f"test_img has {image.shape[axes.index('C')]} channels; the model has 1")
        image, axes = np.take(image, 0, axis=axes.index("C")), axes.replace("C", "")
    if sorted(axes) != sorted(wanted):
        raise ValueError(f"test_img must have the axes {wanted} (in any order), got {axes!r}")
    return np.moveaxis(image, [axes.index(a) for a in wanted], range(len(wanted)))


class N2V_DataGenerator:
    """n2v's ``N2V_DataGenerator``: images from files, and patches from images, in n2v's layout.

    Images come back as ``SYXC`` / ``SZYXC`` arrays (S and C added when the files lack them), patches
    as one ``(N, *shape, C)`` array.
    """

    def __init__(self, seed=None):
        self.rng = np.random.default_rng(seed)

    def load_imgs(self, files, dims="YX"):
        """Read image files (TIFF, PNG) with axes ``dims`` (from ``TZYXC``) as float32 SYXC / SZYXC arrays."""
        dims = dims.upper()
        if "Y" not in dims or "X" not in dims or any(dims.count(a) > 1 for a in dims) or set(dims) - set("TZYXC"):
            raise ValueError(f"dims must name Y and X and at most once each of T, Z, C, got {dims!r}")
        target = ("T" if "T" in dims else "") + ("Z" if "Z" in dims else "") + "YX" + ("C" if "C" in dims else "")
        images = []
        for path in files:
            image = _read(path)
            if image.ndim != len(dims):
                raise ValueError(f"{path}: {image.ndim} dimensions, but dims {dims!r} name {len(dims)}")
            image = np.moveaxis(image, [dims.index(a) for a in target], range(len(target)))
            image = image if "T" in dims else image[np.newaxis]
            images.append(image if "C" in dims else image[..., np.newaxis])
        return images

    def load_imgs_from_directory(self, directory, filter="*.tif", dims="YX"):
        """:meth:`load_imgs` of the files in ``directory`` that match ``filter``, in sorted order."""
        files = sorted(glob.glob(os.path.join(str(directory), filter)))
        if not files:
            raise FileNotFoundError(f"no files match {filter!r} in {directory}")
        return self.load_imgs(files, dims=dims)

    def generate_patches_from_list(self, data, num_patches_per_img=None, shape=(256, 256), augment=True,
                                   shuffle=False):
        """Patches of every image (and every S) of the list ``data``, concatenated (:meth:`generate_patches`)."""
        patches = np.concatenate([self.generate_patches(image[s:s + 1], num_patches_per_img, shape, augment)
                                  for image in data for s in range(image.shape[0])])
        if shuffle:
            patches = patches[self.rng.permutation(len(patches))]
        return patches

    def generate_patches(self, data, num_patches=None, shape=(256, 256), augment=True):
        """Patches of ``shape`` from SYXC / SZYXC ``data``: the grid of non-overlapping ones, or
        ``num_patches`` at random positions; with ``augment`` (square YX only) each also rotated by
        90, 180 and 270 degrees in YX and flipped along X (8 times as many). Shuffled."""
        from .data import _DIHEDRAL, _dihedral

        data = np.asarray(data, dtype=np.float32)
        shape = tuple(int(s) for s in shape)
        spatial = data.shape[1:-1]
        if len(shape) != len(spatial) or any(s > n for s, n in zip(shape, spatial)):
            raise ValueError(f"patch shape {shape} does not fit into images of shape {spatial}")
        if num_patches is None:
            starts = np.stack(np.meshgrid(*[np.arange(0, n - s + 1, s) for s, n in zip(shape, spatial)],
                                          indexing="ij"), axis=-1).reshape(-1, len(shape))
        else:
            starts = np.stack([self.rng.integers(0, n - s + 1, size=num_patches) for s, n in zip(shape, spatial)],
                              axis=-1)
        patches = np.concatenate([data[(slice(None),) + tuple(slice(a, a + s) for a, s in zip(start, shape))]
                                  for start in starts])
        if augment and shape[-1] == shape[-2]:
            n_dim = len(shape)
            patches = np.concatenate([_dihedral(patches, t, n_dim) for t in range(len(_DIHEDRAL))])
        return patches[self.rng.permutation(len(patches))]


def _read(path):
    path = str(path)
    if path.lower().endswith((".tif", ".tiff")):
        import tifffile

        return tifffile.imread(path).astype(np.float32)
    if path.lower().endswith(".png"):
        from PIL import Image

        return np.asarray(Image.open(path), dtype=np.float32)
    raise ValueError(f"{path}: only TIFF and PNG files are read (JPEG is lossy and breaks the pixel-wise "
                     "independence of the noise)")
