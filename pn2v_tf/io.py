"""Image files: TIFFs from files, folders and glob patterns, with their axes; atomic TIFF writing.

Reading names the file in every error (:class:`InputError`); a file whose reading makes tifffile
log a warning (a damaged or truncated file it would otherwise read partly) counts as corrupt.

Axes use CSBDeep's letters: ``Y`` and ``X``, ``Z`` (depth), ``S`` (a stack of images), ``T``
(time), and an optional channel axis ``C``. Without ``axes`` they come from the file's metadata:
tifffile's generic axes (``I`` image sequence, ``Q`` unknown) read as ``S``, its ``T``, ``Z`` and
``C`` (an ImageJ hyperstack's channels) as they are. Its ``S`` (samples per pixel, e.g. RGB colour)
is refused when it has more than one sample, since colour TIFFs are rarely raw camera data (give
``axes`` with ``C`` to read the samples as channels). Images are read for a 2-D model (Z, S and T
hold images one by one) or a 3-D one (volumes ZYX; S and T hold volumes), with one channel (a
channel axis of size 1 is removed) or several (kept as the stack's last axis).

Written TIFFs are ImageJ hyperstacks (uint8, uint16 or float32), written to ``<name>.tmp`` and
renamed when complete, so an interruption never leaves a truncated file under the final name.
"""

import glob
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
from csbdeep.utils import axes_check_and_normalize

from .arrays import squeeze_channel, stack_from_axes

TIFF_SUFFIXES = (".tif", ".tiff")
IMAGEJ_DTYPES = ("uint8", "uint16", "float32")
_FROM_TIFFFILE = {"I": "S", "Q": "S", "T": "T", "Z": "Z", "C": "C", "Y": "Y", "X": "X"}
_IMAGEJ_ORDER = "TZCYX"


class InputError(ValueError):
    """A problem with an input file or folder; ``str(error)`` is ``'<path>: <problem>'``."""

    def __init__(self, path, problem):
        self.path, self.problem = str(path), problem
        super().__init__(f"{self.path}: {problem}")


# -- finding and reading -------------------------------------------------------------------------

def find_tiffs(inputs):
    """Files, folders (their ``*.tif``/``*.tiff``, not recursive) and glob patterns -> list of paths.

    Each input must yield at least one file; a file named twice is listed once.
    """
    files = []
    for item in inputs:
        text = os.fspath(item)
        path = Path(text)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in TIFF_SUFFIXES)
            if not found:
                raise InputError(path, "no TIFF files (*.tif, *.tiff) in this folder")
        elif path.is_file():
            found = [path]
        elif glob.has_magic(text):
            found = sorted(Path(p) for p in glob.glob(text)
                           if Path(p).is_file() and Path(p).suffix.lower() in TIFF_SUFFIXES)
            if not found:
                raise InputError(text, "no TIFF files match this pattern")
        else:
            raise InputError(path, "no such file or folder")
        files += [p for p in found if p not in files]
    if not files:
        raise InputError("(no input)", "give at least one TIFF file, folder or pattern")
    return files


@dataclass
class Image:
    """One TIFF file: ``data`` as stored (a channel axis of size 1 removed), its ``axes``, and the
    same pixels as a finite float32 ``stack`` (N, Y, X), or (N, Z, Y, X) when read as volumes; a
    multichannel image's stack has its channels last, (N, Y, X, C) or (N, Z, Y, X, C)."""

    path: Path
    data: np.ndarray
    axes: str
    stack: np.ndarray

    @property
    def n_channels(self):
        """Number of channels: the size of axis C (1 when there is none)."""
        return self.data.shape[self.axes.index("C")] if "C" in self.axes else 1


def read_image(path, axes=None, n_dim=2, n_channels=1):
    """Read a TIFF file as an :class:`Image`; ``axes`` overrides the file's metadata.

    ``n_dim`` is the model's: 2 (the stack holds 2-D images) or 3 (it holds ZYX volumes); ``None``
    takes 3 when the image has a Z axis, else 2. ``n_channels`` is the number of channels the model
    takes: the image's axis C must have that size (or be missing for 1); ``None`` takes the image's.

    Raises :class:`InputError` (naming the file) for an unreadable or corrupt file, axes that do
    not fit the data or that PN2V cannot take, another number of channels than ``n_channels``, and
    NaN or infinite pixels.
    """
    path = Path(path)
    data, file_axes = _read_tiff(path)
    if axes is None:
        data, axes = _axes_from_metadata(path, file_axes, data)
    try:
        data, axes = _check_channels(data, axes, n_channels)
        n_dim = (3 if "Z" in axes else 2) if n_dim is None else n_dim
        found = data.shape[axes.index("C")] if "C" in axes else None
        stack, _ = stack_from_axes(data, axes, n_dim, n_channels=found)
    except ValueError as error:
        raise InputError(path, f"{error} (shape {data.shape}; give --axes if the axes are others)") from None
    return Image(path, data, axes, stack)


def _check_channels(data, axes, n_channels):
    """Check the axes against the data and the channels against ``n_channels``; a channel axis of
    size 1 is removed: (data, axes)."""
    axes = axes_check_and_normalize(axes, data.ndim)
    found = data.shape[axes.index("C")] if "C" in axes else 1
    if n_channels is not None and found != n_channels:
        raise ValueError(f"the image has {channels_text(found)} (axes {axes!r}), the model takes "
                         f"{channels_text(n_channels)}")
    return squeeze_channel(data, axes) if found == 1 else (data, axes)


def channels_text(n_channels):
    """'1 channel', '2 channels', ... for messages."""
    return f"{n_channels} channel{'s' * (n_channels != 1)}"


def _read_tiff(path):
    """(array, tifffile axes) of the file's first series; tifffile's logged warnings mean corrupt."""
    messages = []
    handler = _ListHandler(messages)
    logger = logging.getLogger("tifffile")
    propagate, logger.propagate = logger.propagate, False
    logger.addHandler(handler)
    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise ValueError("it holds no image")
            series = tif.series[0]
            data, axes = series.asarray(), series.axes
    except Exception as error:  # any failure to decode a user's file is a problem of that file
        raise InputError(path, f"cannot read it as a TIFF file: {error}") from None
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
    if messages:
        raise InputError(path, f"corrupt TIFF file: {messages[0]}")
    if data.size == 0:
        raise InputError(path, "the TIFF file holds no pixels")
    return data, axes


class _ListHandler(logging.Handler):
    def __init__(self, messages):
        super().__init__(level=logging.WARNING)
        self.messages = messages

    def emit(self, record):
        self.messages.append(record.getMessage())


def _axes_from_metadata(path, file_axes, data):
    """(data, axes) in our letters; axes of size 1 that tifffile calls channels or samples removed."""
    shape = data.shape
    unknown = sorted(set(file_axes) - set(_FROM_TIFFFILE) - {"S"})
    if unknown:
        raise InputError(path, f"the file's axes {file_axes!r} (shape {shape}) include {''.join(unknown)!r}, "
                               "which PN2V does not take; give --axes")
    keep = [i for i, letter in enumerate(file_axes) if letter not in "CS" or shape[i] != 1]
    samples = [shape[i] for i in keep if file_axes[i] == "S"]
    if samples:
        raise InputError(path, f"the image has {samples[0]} channels as samples per pixel (tifffile's axis S, e.g. "
                               f"RGB colour; axes {file_axes!r}, shape {shape}); PN2V denoises raw intensities: "
                               "give --axes with C (e.g. YXC) to denoise them as channels, or with S if that "
                               "axis is a stack")
    axes = "".join(_FROM_TIFFFILE[file_axes[i]] for i in keep)
    return data.reshape([shape[i] for i in keep]), axes


# -- writing -------------------------------------------------------------------------------------

@contextmanager
def atomic_path(path):
    """Yield ``<path>.tmp`` to write to; it becomes ``path`` if the block completes and is removed
    if it does not (an exception, KeyboardInterrupt included)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def as_dtype(image, dtype):
    """``image`` as ``dtype`` (one of :data:`IMAGEJ_DTYPES`); integers are rounded and clipped to
    the type's range. Returns (array, number of clipped pixels)."""
    if dtype not in IMAGEJ_DTYPES:
        raise ValueError(f"output dtype must be one of {IMAGEJ_DTYPES}, got {dtype!r}")
    image = np.asarray(image, dtype=np.float32)
    if dtype == "float32":
        return image, 0
    info = np.iinfo(dtype)
    rounded = np.rint(image)
    clipped = int(np.count_nonzero((rounded < info.min) | (rounded > info.max)))
    return np.clip(rounded, info.min, info.max).astype(dtype), clipped


def imagej_axes(axes):
    """Our axes as ImageJ's: a stack S is written as slices Z."""
    axes = axes.replace("S", "Z") if "Z" not in axes else axes
    if any(a not in _IMAGEJ_ORDER for a in axes) or len(set(axes)) != len(axes):
        raise ValueError(f"axes {axes!r} cannot be written as an ImageJ hyperstack ({_IMAGEJ_ORDER})")
    return axes


def write_tiff(path, image, axes, overwrite=False):
    """Write an ImageJ-compatible TIFF atomically (see the module docstring).

    Parameters
    ----------
    path : str or os.PathLike
    image : numpy.ndarray
        uint8, uint16 or float32 (ImageJ's types).
    axes : str
        Axes of ``image`` (S, T, Z, C, Y, X); reordered to ImageJ's TZCYX order.
    overwrite : bool
        Replace an existing file; otherwise an existing ``path`` raises ``FileExistsError``.
    """
    path = Path(path)
    image = np.asarray(image)
    if image.dtype.name not in IMAGEJ_DTYPES:
        raise ValueError(f"ImageJ TIFFs hold {', '.join(IMAGEJ_DTYPES)}, not {image.dtype.name}")
    if len(axes) != image.ndim:
        raise ValueError(f"axes {axes!r} do not fit an image of shape {image.shape}")
    ij_axes = imagej_axes(axes)
    ordered = "".join(a for a in _IMAGEJ_ORDER if a in ij_axes)
    image = np.transpose(image, [ij_axes.index(a) for a in ordered])
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        tifffile.imwrite(handle, image, imagej=True, metadata={"axes": ordered})
    return path
