"""Large images on disk for :mod:`pn2v_tf.chunked`: zarr arrays, OME-Zarr images and TIFFs read
through tifffile's zarr interface, opened as Dask arrays (nothing is read until a block needs it),
and the outputs written beside them (the same shape, chunks and, for OME-Zarr, multiscale metadata).

OME-Zarr images (versions 0.4 with zarr format 2, and 0.5 with format 3) are predicted at their
full resolution (the first dataset of the first multiscale); the output's lower resolutions are
averages of the denoised full resolution over blocks of the input's own scale factors.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .io import InputError

#: OME-Zarr axis names -> CSBDeep letters.
OME_AXES = {"t": "T", "c": "C", "z": "Z", "y": "Y", "x": "X"}

ZARR_SUFFIXES = (".zarr", ".ome.zarr")
TIFF_SUFFIXES = (".tif", ".tiff")


@dataclass
class LargeImage:
    """A lazily read image: ``data`` a Dask array, ``axes`` CSBDeep letters (or None when unknown),
    ``multiscales`` the OME-Zarr metadata (or None), ``zarr_format`` of a zarr input."""

    path: Path
    data: object
    axes: str
    chunks: tuple
    multiscales: dict = None
    zarr_format: int = None


def is_zarr(path):
    """A zarr array or group: a folder with zarr metadata."""
    path = Path(path)
    return path.is_dir() and any((path / name).is_file() for name in ("zarr.json", ".zarray", ".zgroup"))


def open_large_image(path, axes=None, default_axes=None):
    """Open a zarr array, an OME-Zarr image or a TIFF lazily as a :class:`LargeImage`; ``axes``
    overrides the axes of the metadata, ``default_axes`` are taken when there are none and they fit
    the array's dimensions. Raises :class:`~pn2v_tf.io.InputError` naming the file."""
    path = Path(path)
    if is_zarr(path):
        image = _open_zarr(path)
    elif path.is_file() and path.suffix.lower() in TIFF_SUFFIXES:
        image = _open_tiff(path)
    else:
        raise InputError(path, "not a zarr array, OME-Zarr image or TIFF file")
    if axes is not None:
        from csbdeep.utils import axes_check_and_normalize

        try:
            image.axes = axes_check_and_normalize(axes, image.data.ndim)
        except ValueError as error:
            raise InputError(path, f"{error} (shape {image.data.shape})") from None
    if image.axes is None and default_axes is not None and len(default_axes) == image.data.ndim:
        image.axes = default_axes
    if image.axes is None:
        raise InputError(path, f"its axes are unknown (shape {image.data.shape}; the model's are "
                               f"{default_axes}); give --axes")
    return image


def _open_zarr(path):
    import dask.array as da
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as error:
        raise InputError(path, f"cannot open it as zarr: {error}") from None
    multiscales = None
    if isinstance(node, zarr.Group):
        multiscales = _multiscales(dict(node.attrs))
        if multiscales is None:
            raise InputError(path, "a zarr group without OME-Zarr multiscales metadata; give the path of an array")
        array = node[multiscales["datasets"][0]["path"]]
        axes = "".join(OME_AXES.get(axis["name"].lower(), "?") for axis in multiscales["axes"])
        if "?" in axes:
            raise InputError(path, f"OME-Zarr axes {[a['name'] for a in multiscales['axes']]} include some that "
                                   "PN2V does not take (t, c, z, y, x)")
    else:
        array = node
        names = getattr(array.metadata, "dimension_names", None) or dict(array.attrs).get("_ARRAY_DIMENSIONS")
        axes = "".join(OME_AXES.get(str(n).lower(), "?") for n in names) if names else None
        axes = None if axes is None or "?" in axes else axes
    data = da.from_zarr(array)
    return LargeImage(path, data, axes, tuple(array.chunks), multiscales, array.metadata.zarr_format)


def _multiscales(attrs):
    """The first multiscale of OME-Zarr 0.4 (``multiscales``) or 0.5 (``ome.multiscales``) metadata."""
    found = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    return found[0] if found else None


def _open_tiff(path):
    import dask.array as da
    import tifffile
    import zarr

    from .io import _axes_from_metadata

    try:
        with tifffile.TiffFile(path) as tif:
            file_axes = tif.series[0].axes
        store = tifffile.imread(path, aszarr=True, series=0, level=0)
        array = zarr.open(store, mode="r")
    except Exception as error:
        raise InputError(path, f"cannot read it as a TIFF file: {error}") from None
    data = da.from_zarr(array)
    squeezed, axes = _axes_from_metadata(path, file_axes, data)
    # the axes _axes_from_metadata keeps: all but channels and samples of size 1
    chunks = tuple(c for c, n, letter in zip(array.chunks, array.shape, file_axes) if letter not in "CS" or n != 1)
    return LargeImage(path, squeezed.rechunk(chunks), axes, chunks)


def output_path(image, outdir):
    """``outdir`` / the input's name for zarr inputs, ``outdir/<name>.zarr`` for TIFFs."""
    name = image.path.name
    if image.zarr_format is None:
        for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif"):
            if name.lower().endswith(suffix):
                name = name[:-len(suffix)] + ".zarr"
                break
    return Path(outdir) / name


def full_resolution_path(image, output):
    """Where the full-resolution result of ``image`` goes: ``output`` itself for arrays and TIFFs,
    the first dataset inside it for OME-Zarr."""
    if image.multiscales is None:
        return Path(output)
    return Path(output) / image.multiscales["datasets"][0]["path"]


def start_ome_zarr(image, output):
    """Create the OME-Zarr group of the result (the input's metadata, zarr format and dataset paths)
    unless it exists (a resumed run)."""
    import zarr

    output = Path(output)
    if is_zarr(output):
        return
    group = zarr.open_group(str(output), mode="w", zarr_format=image.zarr_format)
    source = zarr.open_group(str(image.path), mode="r")
    attrs = json.loads(json.dumps(dict(source.attrs)))
    group.attrs.update(attrs)


def finish_ome_zarr(image, output):
    """Write the lower resolutions of an OME-Zarr result: the denoised full resolution averaged over
    blocks of each level's scale factors (from the input's level shapes)."""
    import dask.array as da
    import zarr

    output = Path(output)
    datasets = image.multiscales["datasets"]
    full = da.from_zarr(zarr.open_array(str(output / datasets[0]["path"]), mode="r"))
    source = zarr.open_group(str(image.path), mode="r")
    for dataset in datasets[1:]:
        level = source[dataset["path"]]
        factors = {axis: max(1, int(round(n / m))) for axis, (n, m) in enumerate(zip(full.shape, level.shape))}
        averaged = da.coarsen(np.mean, full, factors, trim_excess=True).astype(np.float32)
        averaged = _fit_shape(averaged, level.shape)
        target = zarr.open_array(str(output / dataset["path"]), mode="w", shape=level.shape, chunks=level.chunks,
                                 dtype="float32", zarr_format=image.zarr_format)
        da.store(averaged.rechunk(level.chunks), target, lock=False)


def _fit_shape(array, shape):
    """Crop, or pad by repeating the edge, to ``shape`` (levels whose sides were rounded up)."""
    import dask.array as da

    array = array[tuple(slice(0, n) for n in shape)]
    padding = [(0, n - m) for n, m in zip(shape, array.shape)]
    return da.pad(array, padding, mode="edge") if any(p for _, p in padding) else array
