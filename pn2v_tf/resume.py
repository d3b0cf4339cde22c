"""Resumable training: after every completed epoch the model folder holds what continuing needs.

:class:`EpochCheckpoint`, a Keras callback given to :meth:`PN2V.train`, writes after each epoch
whose losses and weights are finite three files into the model folder, each to a temporary name
that is renamed when complete, so that a kill at any moment leaves the previous complete version:

- ``weights_last.h5``: the prediction network after the last completed epoch;
- ``training_state.npz``: the training graph's weights (as trained, not averaged), the optimiser's
  variables (Adam's moments, step count, learning rate), the weights' running averages
  (:mod:`pn2v_tf.averaging`), the number of completed epochs, the memory of the model's callbacks
  (ReduceLROnPlateau's counters, the best validation loss so far), the history and the run's
  settings (a JSON-compatible dict of the caller's);
- ``training_log.csv``: one row per completed epoch (:data:`LOG_COLUMNS`).

To continue a training::

    state = load_state(model_folder / STATE_FILE)
    model = PN2V(None, name, basedir)
    model.prepare_for_training()
    restore(model, state)
    model.train(X, X_val, epochs=total, initial_epoch=state.epoch,
                callbacks=[EpochCheckpoint(model, state.settings, state)])

The continued training starts the patch generator's epoch counter at ``state.epoch``, so it draws
new patches rather than those of the first epochs again. (It does not reproduce the uninterrupted
run's losses to the last digit: Keras prefetches batches while the counter advances.)
"""

import csv
import json
import time
from dataclasses import dataclass, field

import keras
import numpy as np

from .averaging import WeightAveraging
from .io import atomic_path
from .model import _all_weights_finite
from .progress import learning_rate

STATE_FILE = "training_state.npz"
LOG_FILE = "training_log.csv"
LOG_COLUMNS = ("epoch", "loss", "val_loss", "learning_rate", "seconds")
FORMAT = 1
#: Attributes of the model's callbacks that carry memory between epochs (ReduceLROnPlateau's
#: counters and best value; the best validation loss of the weight checkpoints).
_CALLBACK_MEMORY = ("best", "wait", "cooldown_counter")


@dataclass
class TrainingState:
    """What :func:`load_state` reads: ``epoch`` is the number of completed epochs."""

    epoch: int
    history: list
    settings: dict
    callbacks: list
    weights: list = field(repr=False)
    optimizer: list = field(repr=False)
    averages: list = field(default_factory=list, repr=False)
    averaging_steps: int = 0


def save_state(path, model, epoch, history, settings):
    """Write the training state of ``model`` (a :class:`PN2V` being trained) atomically."""
    training_model = model._training_model
    averaging = _averaging(model)
    meta = dict(format=FORMAT, epoch=int(epoch), history=history, settings=settings,
                callbacks=_callback_memory(model.callbacks),
                averaging_steps=0 if averaging is None else averaging.steps)
    trained = {} if averaging is None else dict(zip((w.path for w in training_model.trainable_weights),
                                                    averaging.trained_weights()))
    arrays = {f"weight_{i}": trained.get(w.path, w.numpy()) for i, w in enumerate(training_model.weights)}
    arrays.update({f"optimizer_{i}": v.numpy() for i, v in enumerate(training_model.optimizer.variables)})
    if averaging is not None:
        arrays.update({f"average_{i}": a for i, a in enumerate(averaging.averages())})
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, meta=np.array(json.dumps(meta)), **arrays)


def load_state(path):
    """Read a file written by :func:`save_state` as a :class:`TrainingState`."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            weights = _numbered(data, "weight_")
            optimizer = _numbered(data, "optimizer_")
            averages = _numbered(data, "average_")
        if meta.get("format") != FORMAT:
            raise ValueError(f"unknown format {meta.get('format')!r}")
        return TrainingState(int(meta["epoch"]), meta["history"], meta["settings"], meta["callbacks"],
                             weights, optimizer, averages, int(meta.get("averaging_steps", 0)))
    except (OSError, ValueError, KeyError, EOFError) as error:
        raise ValueError(f"cannot read the training state {path}: {error}") from None


def _numbered(data, prefix):
    names = sorted((name for name in data.files if name.startswith(prefix)), key=lambda n: int(n[len(prefix):]))
    return [data[name] for name in names]


def restore(model, state):
    """Put the weights and optimiser variables of ``state`` into ``model``, which must be prepared
    for training (compiled); :class:`EpochCheckpoint` restores the callbacks' memory when training
    begins (Keras resets it then)."""
    training_model = model._training_model
    _assign(training_model.weights, state.weights, "weights")
    optimizer = training_model.optimizer
    if not optimizer.built:
        optimizer.build(training_model.trainable_variables)
    _assign(optimizer.variables, state.optimizer, "optimiser variables")
    averaging = _averaging(model)
    if averaging is not None and state.averages:
        averaging.restore(state.averages, state.averaging_steps)


def _averaging(model):
    """The model's :class:`~pn2v_tf.averaging.WeightAveraging` callback, or None."""
    return next((c for c in model.callbacks if isinstance(c, WeightAveraging)), None)


def _assign(variables, values, what):
    shapes = [tuple(v.shape) for v in variables]
    if shapes != [tuple(np.shape(a)) for a in values]:
        raise ValueError(f"the training state's {what} do not fit this model ({len(values)} arrays for "
                         f"{len(variables)} variables, or other shapes)")
    for variable, value in zip(variables, values):
        variable.assign(value)


def _callback_memory(callbacks):
    return [{"class": type(c).__name__, **{name: _plain(getattr(c, name)) for name in _CALLBACK_MEMORY
                                           if hasattr(c, name)}} for c in callbacks]


def _plain(value):
    if value is None:
        return None
    return int(value) if isinstance(value, (int, np.integer)) else float(value)


def _set_callback_memory(callbacks, memory):
    if [type(c).__name__ for c in callbacks] != [m["class"] for m in memory]:
        raise ValueError("the training state was written with other training callbacks "
                         f"({[m['class'] for m in memory]}) than this model has")
    for callback, values in zip(callbacks, memory):
        for name, value in values.items():
            if name != "class":
                setattr(callback, name, value)


def remove_training_files(logdir):
    """Remove the state and log of an earlier training (when a model folder is overwritten)."""
    for name in (STATE_FILE, LOG_FILE):
        (logdir / name).unlink(missing_ok=True)


def write_log(path, history):
    """``training_log.csv``: one row per completed epoch, written atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=LOG_COLUMNS)
        writer.writeheader()
        writer.writerows(history)


def read_log(path):
    """The rows of ``training_log.csv`` as dicts of numbers."""
    with open(path, newline="") as handle:
        return [{key: (int(value) if key == "epoch" else float(value)) for key, value in row.items()}
                for row in csv.DictReader(handle)]


class EpochCheckpoint(keras.callbacks.Callback):
    """After each finite epoch: ``weights_last.h5``, the training state and the log (see the module
    docstring). ``state`` (from :func:`load_state`) continues that training's history and restores
    its callbacks' memory when training begins."""

    def __init__(self, model, settings=None, state=None):
        super().__init__()
        if model.basedir is None:
            raise ValueError("an EpochCheckpoint needs a model with a folder (basedir)")
        self.pn2v, self.state = model, state
        self.settings = dict(settings if settings is not None else (state.settings if state else {}))
        self.history = list(state.history) if state is not None else []

    def on_train_begin(self, logs=None):
        if self.state is not None:
            _set_callback_memory(self.pn2v.callbacks, self.state.callbacks)

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.time()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        losses = [float(logs.get(name, np.nan)) for name in ("loss", "val_loss")]
        if not np.all(np.isfinite(losses)) or not _all_weights_finite(self.pn2v.keras_model):
            return
        self.history.append(dict(zip(LOG_COLUMNS, (epoch + 1, *losses, learning_rate(self.model),
                                                   round(time.time() - self.started, 3)))))
        logdir, last = self.pn2v.logdir, self.pn2v.config.train_checkpoint_last
        if last is not None:
            with atomic_path(logdir / last) as tmp:
                self.pn2v.keras_model.save_weights(str(tmp))
        save_state(logdir / STATE_FILE, self.pn2v, epoch + 1, self.history, self.settings)
        write_log(logdir / LOG_FILE, self.history)
