"""Prediction of arrays larger than memory: block by block into zarr, scheduled by Dask.

An array (zarr, a Dask array, a memory-mapped array, a TIFF through tifffile's zarr interface, an
HDF5 dataset: anything with ``shape`` and slicing) is cut into *blocks*: groups of whole chunks of
the output, so that each output chunk is written once, by the task of one block. A task reads its
block from the source together with the network's context (the receptive field rounded up to the
network's block size, per spatial axis, starting on the network's pooling grid), denoises it with
:meth:`pn2v_tf.PN2V.predict` (which tiles it as it tiles any image) and writes the block's part of
the result. Memory therefore depends on the block size and K only, not on the array. The result
equals ``model.predict`` of the whole array (up to float rounding).

The tasks form a Dask graph: they run on Dask's threaded scheduler by default, or on any
``dask.distributed`` cluster. Workers load the model from its folder once per process (the model
travels as its folder's path); the source must be readable by the workers (a zarr array on a shared
file system, or a Dask array).

Resuming: the output is created with fill value NaN, which a prediction never writes (images with
NaN are refused). A block whose output reads back without NaN is complete and is skipped when the
same prediction is started again; zarr's local store writes each chunk to a temporary file that is
then renamed, so an interrupted write leaves the chunk missing (NaN), not half written.
"""

import math
import os
import threading
import weakref
from pathlib import Path

import numpy as np

from .arrays import spatial_axes

#: Default bound on the values (pixels x channels, context included) of one block's input: 32 MB
#: of float32. ``predict`` tiles a block as it tiles any image, so this bounds only the block's
#: input and output arrays; larger blocks waste less on context.
DEFAULT_BLOCK_ELEMENTS = 2 ** 23

#: Attribute of the output array that names the prediction it holds (checked before resuming).
PREDICTION_ATTRIBUTE = "pn2v_tf_prediction"

CHUNKED_ESTIMATORS = ("mmse", "prior_mean")


# -- geometry ------------------------------------------------------------------------------------

def array_chunks(array):
    """The chunk shape of an array: zarr's and h5py's ``chunks``, the first chunk of each axis of
    a Dask array, ``None`` for arrays without chunks (memory maps)."""
    chunks = getattr(array, "chunks", None)
    if chunks is None:
        return None
    return tuple(int(c[0]) if isinstance(c, tuple) else int(c) for c in chunks)


def default_chunks(shape, axes, spatial):
    """Chunks for an array without its own: one image along batch axes, all channels, and up to
    1024 (Y, X) and 64 (Z, when spatial) pixels."""
    sides = {"Z": 64, "Y": 1024, "X": 1024}
    return tuple(n if a == "C" else min(n, sides[a]) if a in spatial else 1 for a, n in zip(axes, shape))


class BlockPlan:
    """Blocks of whole output chunks and the source region each one reads.

    Parameters
    ----------
    shape : tuple of int
        The array's shape.
    axes : str
        Its axes (normalised CSBDeep letters).
    chunks : tuple of int
        The output's chunk shape; blocks are multiples of it (except at the array's end).
    n_dim : int
        Spatial axes of the model (2: Y, X; 3: Z, Y, X); other axes are batch axes or C.
    grid : tuple of int
        The network's block size per spatial axis (its pooling grid).
    context : tuple of int
        Context per spatial axis, a multiple of ``grid``.
    max_elements : int
        Bound on a block's input values (context included); a block holds at least one chunk
        along every axis (and all channels).
    """

    def __init__(self, shape, axes, chunks, n_dim, grid, context, max_elements=DEFAULT_BLOCK_ELEMENTS):
        self.shape, self.axes, self.chunks = tuple(shape), axes, tuple(chunks)
        spatial = spatial_axes(n_dim)
        self.spatial = [axes.index(a) for a in spatial]
        self.grid = dict(zip(self.spatial, grid))
        self.context = dict(zip(self.spatial, context))
        steps = [n if a == "C" else c for a, n, c in zip(axes, shape, chunks)]
        self.steps = self._grow(steps, max_elements)
        self.counts = tuple(math.ceil(n / s) for n, s in zip(self.shape, self.steps))

    def _elements(self, steps):
        return math.prod(min(s, n) + (2 * self.context[i] if i in self.context and s < n else 0)
                         for i, (s, n) in enumerate(zip(steps, self.shape)))

    def _grow(self, steps, max_elements):
        """Double the block along the spatial axis that is shortest (in pixels) while it fits."""
        steps = list(steps)
        while True:
            growable = [i for i in self.spatial if steps[i] < self.shape[i]]
            if not growable:
                return tuple(steps)
            axis = min(growable, key=lambda i: steps[i])
            trial = list(steps)
            trial[axis] = min(2 * steps[axis], self.shape[axis] + (-self.shape[axis]) % self.chunks[axis])
            if self._elements(trial) > max_elements:
                return tuple(steps)
            steps = trial

    def __len__(self):
        return math.prod(self.counts)

    def __iter__(self):
        return iter(range(len(self)))

    def block_index(self, number):
        """The block's position in the grid of blocks."""
        return np.unravel_index(number, self.counts)

    def output_slices(self, number):
        """Where block ``number`` lies in the output."""
        return tuple(slice(i * s, min((i + 1) * s, n)) for i, s, n in zip(self.block_index(number), self.steps,
                                                                         self.shape))

    def read(self, number):
        """(source slices, slices of the block within them): the block with its context, which starts
        on the network's pooling grid and ends on it or at the array's end."""
        source, keep = [], []
        for axis, out in enumerate(self.output_slices(number)):
            if axis not in self.context:
                source.append(out)
                keep.append(slice(None))
                continue
            grid, context, n = self.grid[axis], self.context[axis], self.shape[axis]
            low = max(0, (out.start - context) // grid * grid)
            high = min(n, -(-(out.stop + context) // grid) * grid)
            source.append(slice(low, high))
            keep.append(slice(out.start - low, out.stop - low))
        return tuple(source), tuple(keep)

    def block_shape(self, number):
        return tuple(s.stop - s.start for s in self.output_slices(number))


# -- the model on workers ------------------------------------------------------------------------

_MODELS = {}
_MODELS_LOCK = threading.Lock()
#: Models loaded from folders by this process (counted for the tests of "once per worker").
MODEL_LOADS = 0


def load_model_once(basedir, name):
    """``PN2V(None, name, basedir)``, loaded once per process (per folder and weights files)."""
    global MODEL_LOADS
    folder = Path(basedir) / name
    stamps = tuple(p.stat().st_mtime_ns for p in sorted(folder.glob("*.h5")))
    key = (str(folder.resolve()), stamps)
    with _MODELS_LOCK:
        if key not in _MODELS:
            from .model import PN2V

            _MODELS[key] = PN2V(None, name, basedir=str(basedir))
            MODEL_LOADS += 1
        return _MODELS[key]


#: Models of this process that handles refer to, by (process id, object id).
_LOCAL_MODELS = weakref.WeakValueDictionary()


class ModelHandle:
    """A model as Dask tasks carry it: a reference to the object within this process; on other
    processes (``dask.distributed`` workers), the model loaded from its folder by
    :func:`load_model_once`. The handle holds no reference to the network itself, so that nothing
    tries to serialise it."""

    def __init__(self, model):
        self.key = (os.getpid(), id(model))
        _LOCAL_MODELS[self.key] = model
        basedir = getattr(model, "basedir", None)
        self.folder = None if basedir is None else (str(basedir), model.name)

    def get(self):
        """The model: this process's object, or the one loaded from the folder."""
        if self.key in _LOCAL_MODELS:
            return _LOCAL_MODELS[self.key]
        return load_model_once(*self.folder)

    def __reduce__(self):
        if self.folder is None:
            raise ValueError("prediction on other processes (a dask.distributed cluster) needs a model with a folder, "
                             "PN2V(config, name, basedir), which the workers load")
        return _handle, (self.key, self.folder)

    def __dask_tokenize__(self):
        return ("pn2v_tf.ModelHandle", self.key)


def _handle(key, folder):
    handle = ModelHandle.__new__(ModelHandle)
    handle.key, handle.folder = key, folder
    return handle


def _model(handle):
    return handle.get() if isinstance(handle, ModelHandle) else handle


# -- tasks ---------------------------------------------------------------------------------------

def predict_region(model, region, axes, keep, estimator, tta=False, dtype_policy=None):
    """Denoise a region read with context and return the block's part of it (float32); ``model`` is
    a PN2V model or a :class:`ModelHandle`."""
    result = _model(model).predict(np.asarray(region), axes=axes, estimator=estimator, tta=tta,
                                   dtype_policy=dtype_policy)
    return result[keep]


def _is_complete(target, where):
    try:
        return not np.isnan(np.asarray(target[where])).any()
    except Exception:  # a chunk that cannot be decoded is not complete
        return False


def _write_block(handle, data, target, plan, number, estimator, progress=None, region_given=False, tta=False,
                 dtype_policy=None):
    """Predict block ``number`` and write it: ``data`` is the source, or (``region_given``) the block's
    region already read (a Dask source's region, computed by Dask as the task's input)."""
    read, keep = plan.read(number)
    region = data if region_given else data[read]
    target[plan.output_slices(number)] = predict_region(handle, region, plan.axes, keep, estimator, tta, dtype_policy)
    if progress is not None:
        progress()
    return 1


# -- public interface ----------------------------------------------------------------------------

def _is_dask(array):
    return type(array).__module__.startswith("dask.")


def _check_model(model, estimator):
    if not hasattr(model, "config") or not hasattr(model, "engine"):
        raise ValueError("out-of-core prediction needs a pn2v_tf.PN2V model (a model folder); a bioimage.io package "
                         "predicts in memory only")
    if estimator not in CHUNKED_ESTIMATORS:
        raise ValueError(f"estimator must be one of {CHUNKED_ESTIMATORS} for out-of-core prediction, got "
                         f"{estimator!r} (posterior samples: sample_posterior on arrays that fit in memory)")


def _axes(model, source, axes):
    from csbdeep.utils import axes_check_and_normalize

    cfg = model.config
    if axes is None:
        axes = spatial_axes(cfg.n_dim) + ("C" if cfg.n_channels > 1 else "")
    try:
        axes = axes_check_and_normalize(axes, len(source.shape))
    except ValueError as error:
        raise ValueError(f"axes {axes!r} do not fit the array of shape {tuple(source.shape)}: {error}") from None
    missing = [a for a in spatial_axes(cfg.n_dim) if a not in axes]
    if missing:
        raise ValueError(f"axes must include {spatial_axes(cfg.n_dim)} (the model is {cfg.n_dim}-D), got {axes!r}")
    channels = source.shape[axes.index("C")] if "C" in axes else 1
    if channels != cfg.n_channels:
        raise ValueError(f"the model takes {cfg.n_channels} channel{'s' * (cfg.n_channels > 1)}; the array has "
                         f"{channels} (axes {axes!r}, shape {tuple(source.shape)})")
    return axes


def plan_blocks(model, source, axes=None, chunks=None, max_block_elements=DEFAULT_BLOCK_ELEMENTS):
    """The :class:`BlockPlan` of ``model`` for an array ``source`` with ``axes`` and output ``chunks``
    (default: the source's chunks, or :func:`default_chunks`)."""
    from .inference import tile_context
    from .nets import network_geometry

    axes = _axes(model, source, axes)
    cfg = model.config
    chunks = chunks or array_chunks(source) or default_chunks(source.shape, axes, spatial_axes(cfg.n_dim))
    if len(chunks) != len(source.shape) or not all(int(c) >= 1 for c in chunks):
        raise ValueError(f"chunks must be {len(source.shape)} positive integers (one per axis of {axes!r}), "
                         f"got {chunks!r}")
    grid, radius = network_geometry(cfg)
    return BlockPlan(source.shape, axes, tuple(int(c) for c in chunks), cfg.n_dim, grid,
                     tile_context(radius, grid), max_block_elements)


def check_values(model, source, axes, estimator, name="array", error_margin=None):
    """One pass over ``source`` (through Dask): refuse NaN and infinite values, and check each channel's
    range against the noise model (:meth:`NoiseModel.check_range` on the channel's minimum and maximum)."""
    import dask.array as da

    array = source if _is_dask(source) else da.from_array(source, chunks=array_chunks(source) or "auto")
    other = tuple(i for i, a in enumerate(axes) if a != "C")
    low, high = da.compute(da.min(array, axis=other), da.max(array, axis=other))
    extremes = np.stack([np.atleast_1d(low), np.atleast_1d(high)]).astype(np.float64)
    if not np.isfinite(extremes).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    if model.noise_model is not None and estimator != "prior_mean":
        values = extremes if model.config.n_channels > 1 else extremes[:, 0]
        model.noise_model.check_range(values, name, error_margin=error_margin)


def predict_dask(model, source, axes=None, estimator="mmse", chunks=None, max_block_elements=DEFAULT_BLOCK_ELEMENTS,
                 tta=False, dtype_policy=None):
    """The prediction of ``source`` as a lazy Dask array (float32, the source's shape and axes).

    Its chunks are the blocks (whole chunks of ``chunks``, default the source's); computing it, or
    storing it with ``.to_zarr``, runs one task per block on whatever scheduler Dask uses.

    Parameters
    ----------
    model : pn2v_tf.PN2V
    source : array-like
        zarr array, Dask array, memory map, or any array with ``shape`` and slicing.
    axes : str or None
        Axes of ``source`` (as in :meth:`PN2V.predict`); default the model's spatial axes (and C).
    estimator : str
        'mmse' or 'prior_mean'.
    chunks : tuple of int or None
        The chunk grid the blocks align with.
    max_block_elements : int
        Bound on a block's input values, context included.
    tta : bool
        Test-time augmentation (:meth:`PN2V.predict`), about 8 times the cost.
    dtype_policy : str or None
        The U-Net body's dtype policy (:meth:`PN2V.predict`); default the model's.
    """
    import dask
    import dask.array as da

    _check_model(model, estimator)
    plan = plan_blocks(model, source, axes, chunks, max_block_elements)
    handle = ModelHandle(model)
    pieces = np.empty(plan.counts, dtype=object)
    for number in plan:
        read, keep = plan.read(number)
        region = source[read] if _is_dask(source) else dask.delayed(_slice, pure=True)(source, read)
        result = dask.delayed(predict_region, pure=True)(handle, region, plan.axes, keep, estimator, tta, dtype_policy)
        pieces[plan.block_index(number)] = da.from_delayed(result, plan.block_shape(number), dtype=np.float32)
    return da.block(pieces.tolist())


def _slice(source, where):
    return np.asarray(source[where])


def predict_to_zarr(model, source, target, axes=None, estimator="mmse", chunks=None, scheduler=None, workers=1,
                    max_block_elements=DEFAULT_BLOCK_ELEMENTS, overwrite=False, progress=None, check=True,
                    error_margin=None, zarr_format=None, tta=False, dtype_policy=None):
    """Predict ``source`` block by block into the zarr array ``target``; return the zarr array.

    Parameters
    ----------
    model : pn2v_tf.PN2V
    source : array-like
        zarr array, Dask array, memory map, tifffile's zarr store opened with zarr, or any array with
        ``shape`` and slicing; read one block (with context) at a time.
    target : str, os.PathLike or zarr.Array
        The output: a path where a zarr array is created (float32, the source's shape and chunks),
        or a zarr array of that shape (written whole, unless it holds an unfinished prediction of
        the same model, estimator and source shape). An existing path holding an unfinished prediction
        of the same model, estimator and source shape is resumed (its complete blocks are
        skipped); anything else there is refused unless ``overwrite``.
    axes, estimator, chunks, max_block_elements, tta, dtype_policy
        As in :func:`predict_dask`; ``chunks`` default to the source's (the output gets the same).
    scheduler : str, dask.distributed.Client or None
        Dask's scheduler (``'threads'``, ``'synchronous'``, a client); default: Dask's current one
        (threads, or the active ``dask.distributed`` client).
    workers : int
        Blocks in flight on the threaded scheduler (default 1: TensorFlow already spreads one block
        over all cores, and each block in flight holds its own network activations). Ignored by
        other schedulers, whose workers set it.
    overwrite : bool
        Replace whatever is at ``target``.
    progress : callable or None
        Called as ``progress(done, total)`` after each block (tasks in this process only).
    check : bool
        First check the whole source's values (NaN, infinities, noise-model range) in one pass.
    error_margin : float or None
        As in :meth:`NoiseModel.check_range`: values further beyond the noise model's range than this
        fraction of it raise ``ValueError``.
    zarr_format : int or None
        2 or 3 for a new output (default: zarr's).
    """
    import dask

    _check_model(model, estimator)
    if not (isinstance(workers, int) and workers >= 1):
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    plan = plan_blocks(model, source, axes, chunks, max_block_elements)
    if check:
        check_values(model, source, plan.axes, estimator, error_margin=error_margin)
    target, resume = _output_array(model, target, plan, estimator, overwrite, zarr_format, tta, dtype_policy)
    todo = [number for number in plan if not (resume and _is_complete(target, plan.output_slices(number)))]
    done, total = len(plan) - len(todo), len(plan)
    lock = threading.Lock()

    def advance():
        nonlocal done
        with lock:
            done += 1
            progress(done, total)

    client = _client(scheduler)
    in_process = client is None and scheduler in (None, "threads", "synchronous")
    report = advance if progress is not None and in_process else None
    handle = ModelHandle(model)
    tasks = []
    for number in todo:
        region_given = _is_dask(source)
        data = source[plan.read(number)[0]] if region_given else source
        tasks.append(dask.delayed(_write_block, pure=False)(handle, data, target, plan, number, estimator, report,
                                                             region_given, tta, dtype_policy))
    if client is not None:
        _run_on_cluster(client, tasks, advance if progress is not None else None)
    elif scheduler in (None, "threads"):
        dask.compute(*tasks, scheduler="threads", num_workers=workers)
    else:
        dask.compute(*tasks, scheduler=scheduler)
    return target


def _client(scheduler):
    """The dask.distributed client that runs the tasks: ``scheduler`` itself, or the active default
    client when no scheduler is named; None for Dask's local schedulers."""
    try:
        from distributed import Client, default_client
    except ImportError:
        return None
    if isinstance(scheduler, Client):
        return scheduler
    if scheduler is None:
        try:
            return default_client()
        except ValueError:
            return None
    return None


def _run_on_cluster(client, tasks, advance):
    """Run the tasks on a cluster; ``advance()`` in this process as each one completes."""
    from distributed import as_completed

    for future in as_completed(client.compute(tasks)):
        future.result()  # raises a task's error here
        if advance is not None:
            advance()


def _prediction_record(model, estimator, shape, tta, dtype_policy=None):
    folder = None if getattr(model, "basedir", None) is None else str(Path(model.basedir, model.name).resolve())
    record = {"model": folder, "estimator": estimator, "tta": bool(tta), "source_shape": list(shape)}
    return record if dtype_policy is None else {**record, "dtype_policy": dtype_policy}


def _output_array(model, target, plan, estimator, overwrite, zarr_format, tta, dtype_policy=None):
    import zarr

    record = _prediction_record(model, estimator, plan.shape, tta, dtype_policy)
    if not isinstance(target, (str, os.PathLike)):
        if tuple(target.shape) != plan.shape:
            raise ValueError(f"the output array has shape {tuple(target.shape)}, the source {plan.shape}")
        resumable = dict(target.attrs).get(PREDICTION_ATTRIBUTE) == record
        if not resumable and np.isnan(target.fill_value):
            target.attrs[PREDICTION_ATTRIBUTE] = record  # its missing chunks read as NaN: it can be resumed
        return target, resumable
    path = Path(target)
    if path.exists() and not overwrite:
        try:
            existing = zarr.open_array(str(path), mode="r+")
        except Exception:
            existing = None
        if existing is None or dict(existing.attrs).get(PREDICTION_ATTRIBUTE) != record:
            raise FileExistsError(f"{path} exists and is not an unfinished prediction of this model, estimator and "
                                  "source shape; choose another output or pass overwrite=True (--overwrite)")
        if tuple(existing.chunks) != plan.chunks:
            raise FileExistsError(f"{path} has chunks {tuple(existing.chunks)}, this prediction writes {plan.chunks}")
        return existing, True
    options = {} if zarr_format is None else {"zarr_format": zarr_format}
    array = zarr.open_array(str(path), mode="w", shape=plan.shape, chunks=plan.chunks, dtype="float32",
                            fill_value=np.nan, **options)
    array.attrs[PREDICTION_ATTRIBUTE] = record
    return array, False
