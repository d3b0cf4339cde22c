"""Progress for the ``pn2v`` command: tqdm bars for epochs, steps, files and tiles, and one summary
line per epoch.

Bars go to stderr, summary lines to stdout. Where stderr is not a terminal (a log file), bars are
redrawn at most every :data:`LOG_INTERVAL` seconds, so logs stay short.
"""

import sys
import time

import keras
from tqdm import tqdm

LOG_INTERVAL = 30.0


def bar(quiet=False, **kwargs):
    """A tqdm bar on stderr (disabled if ``quiet``)."""
    interactive = sys.stderr.isatty()
    return tqdm(disable=quiet, file=sys.stderr, dynamic_ncols=interactive,
                mininterval=0.1 if interactive else LOG_INTERVAL, **kwargs)


def say(text, quiet=False):
    """Print a line to stdout without breaking the bars."""
    if not quiet:
        tqdm.write(text, file=sys.stdout)
        sys.stdout.flush()


class TileProgress:
    """``progress(done, total)`` for :meth:`PN2V.predict`: a bar over the tiles of one file."""

    def __init__(self, description, quiet=False):
        self.bar = bar(quiet, desc=description, unit="tile", leave=False)

    def __call__(self, done, total):
        if self.bar.total != total:
            self.bar.total = total
        self.bar.update(done - self.bar.n)

    def close(self):
        self.bar.close()


class TrainingProgress(keras.callbacks.Callback):
    """Keras callback: a bar over epochs, one over the steps of the current epoch, and a line
    ``epoch 3/10: loss ... val_loss ... lr ... (12.3 s)`` after each epoch."""

    def __init__(self, epochs, steps_per_epoch, initial_epoch=0, quiet=False, description="training"):
        super().__init__()
        self.epochs, self.steps, self.initial_epoch = epochs, steps_per_epoch, initial_epoch
        self.quiet, self.description = quiet, description
        self.epoch_bar = self.step_bar = None

    def on_train_begin(self, logs=None):
        self.epoch_bar = bar(self.quiet, total=self.epochs, initial=self.initial_epoch, desc=self.description,
                             unit="epoch")

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.time()
        self.step_bar = bar(self.quiet, total=self.steps, desc=f"epoch {epoch + 1}/{self.epochs}", unit="step",
                            leave=False)

    def on_train_batch_end(self, batch, logs=None):
        self.step_bar.update(1)
        loss = (logs or {}).get("loss")
        if loss is not None:
            self.step_bar.set_postfix(loss=f"{float(loss):.4g}", refresh=False)

    def on_epoch_end(self, epoch, logs=None):
        self.step_bar.close()
        self.epoch_bar.update(1)
        say(epoch_summary(epoch, self.epochs, logs or {}, self.model, time.time() - self.started), self.quiet)

    def on_train_end(self, logs=None):
        if self.step_bar is not None:
            self.step_bar.close()
        self.epoch_bar.close()


def learning_rate(keras_model):
    """The current learning rate of a compiled Keras model's optimiser, as a float."""
    return float(keras.ops.convert_to_numpy(keras_model.optimizer.learning_rate))


def epoch_summary(epoch, epochs, logs, keras_model, seconds):
    values = [f"{name} {float(logs[name]):.4f}" for name in ("loss", "val_loss") if name in logs]
    return f"epoch {epoch + 1}/{epochs}: {'  '.join(values)}  lr {learning_rate(keras_model):.3g}  ({seconds:.1f} s)"
