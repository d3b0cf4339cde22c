"""An exponential moving average of the weights during training (Polyak averaging), which is what
validation sees, the checkpoints keep and training returns.

Each optimiser step moves the average ``a`` of every trainable weight ``w`` by ``a <- m a + (1 - m) w``
with ``m = min(momentum, (1 + t) / (10 + t))`` at step t, so that the first steps are not averaged
with the initial weights for long. At the end of each epoch the averaged weights replace the
trained ones for validation and the epoch's callbacks (learning-rate schedule, checkpoints), and the
trained ones come back when the next epoch begins; after the last epoch the averaged weights stay.

Why PN2V needs it: the mean of its samples moves from step to step as much as N2V's output does, but
its validation loss (the likelihood, which the samples' spread dominates) barely sees those moves, so
picking the epoch with the lowest validation loss does not filter them out as it does for N2V's
squared error; the average does.
"""

import keras
import numpy as np
import tensorflow as tf


class WeightAveraging(keras.callbacks.Callback):
    """Keep the exponential moving average of the training model's trainable weights (see the module).

    Parameters
    ----------
    momentum : float
        In (0, 1): the weight of the average so far at each step (0.99 averages about the last 100 steps).
    """

    def __init__(self, momentum):
        super().__init__()
        if not 0 < momentum < 1:
            raise ValueError(f"momentum must be in (0, 1), got {momentum!r}")
        self.momentum = float(momentum)
        self.steps = 0
        self._averages = None
        self._trained = None  # the trained weights while the averages stand in for them
        self._restored = None

    # -- state (resumable training) ------------------------------------------------------------
    def averages(self):
        """The averages as NumPy arrays (None before training began)."""
        return None if self._averages is None else [a.numpy() for a in self._averages]

    def trained_weights(self):
        """The trained (not averaged) values of the trainable weights, as NumPy arrays."""
        if self._trained is not None:
            return [np.array(w) for w in self._trained]
        return [w.numpy() for w in self._weights()]

    def restore(self, averages, steps):
        """Continue from averages of an earlier training (applied when training begins)."""
        self._restored = [np.asarray(a) for a in averages]
        self.steps = int(steps)

    # -- Keras hooks ------------------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        weights = self._weights()
        if self._averages is None:
            self._averages = [tf.Variable(w, trainable=False, name="weight_average") for w in weights]
            self._update = tf.function(self._update_averages, autograph=False)
        initial = self._restored if self._restored is not None else [w.numpy() for w in weights]
        if [tuple(np.shape(a)) for a in initial] != [tuple(w.shape) for w in weights]:
            raise ValueError("the weight averages do not fit this model")
        for average, value in zip(self._averages, initial):
            average.assign(value)
        self._restored = None
        self._trained = None

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        momentum = min(self.momentum, self.steps / (self.steps + 9.0))
        self._update(tf.constant(momentum, tf.float32))

    def on_test_begin(self, logs=None):
        self._use_averages()

    def on_epoch_end(self, epoch, logs=None):
        self._use_averages()

    def on_epoch_begin(self, epoch, logs=None):
        self._use_trained()

    def on_train_end(self, logs=None):
        self._use_averages()
        self._trained = None

    # -- helpers ----------------------------------------------------------------------------------
    def _weights(self):
        return self.model.trainable_weights

    def _update_averages(self, momentum):
        for average, weight in zip(self._averages, self._weights()):
            average.assign(momentum * average + (1 - momentum) * tf.cast(weight, average.dtype))

    def _use_averages(self):
        if self._trained is None and self._averages is not None:
            weights = self._weights()
            self._trained = [w.numpy() for w in weights]
            for weight, average in zip(weights, self._averages):
                weight.assign(average)

    def _use_trained(self):
        if self._trained is not None:
            for weight, value in zip(self._weights(), self._trained):
                weight.assign(value)
            self._trained = None
