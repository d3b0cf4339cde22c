"""The weights' exponential moving average during training (pn2v_tf.averaging, ``train_ema_momentum``)."""

import json
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from pn2v_tf import PN2V, PN2VConfig  # noqa: E402
from pn2v_tf.averaging import WeightAveraging  # noqa: E402
from pn2v_tf.resume import EpochCheckpoint, load_state, restore  # noqa: E402
from conftest import SMALL_NET, noisy, small_histogram, tiny  # noqa: E402


class _Recorder(keras.callbacks.Callback):
    """The trainable weights after every step, in the order Keras calls the callbacks (after the average's update)."""

    def __init__(self):
        super().__init__()
        self.steps, self.epoch_starts = [], []

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append([w.numpy().copy() for w in self.model.trainable_weights])

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_starts.append([w.numpy().copy() for w in self.model.trainable_weights])


def _dense(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    return model


def _by_hand(steps, momentum):
    """The average of ``steps`` (the initial weights, then the weights after each step) as the module defines it."""
    average = [w.copy() for w in steps[0]]
    for t, weights in enumerate(steps[1:], start=1):
        m = min(momentum, t / (t + 9.0))
        average = [m * a + (1 - m) * w for a, w in zip(average, weights)]
    return average


def test_training_ends_with_the_average_of_the_weights_after_each_step():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 3)).astype(np.float32), rng.normal(size=(64, 2)).astype(np.float32)
    model, recorder = _dense(), _Recorder()
    initial = [w.numpy().copy() for w in model.trainable_weights]
    model.fit(x, y, batch_size=8, epochs=3, callbacks=[WeightAveraging(0.9), recorder], verbose=0)
    for weight, value in zip(model.trainable_weights, _by_hand([initial] + recorder.steps, 0.9)):
        np.testing.assert_allclose(weight.numpy(), value, rtol=1e-5, atol=1e-6)
    assert not np.allclose(model.trainable_weights[0].numpy(), recorder.steps[-1][0])  # not the last weights


def test_validation_sees_the_average_and_training_continues_from_the_trained_weights():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(64, 3)).astype(np.float32), rng.normal(size=(64, 2)).astype(np.float32)
    model, recorder = _dense(1), _Recorder()
    averaging = WeightAveraging(0.9)
    history = model.fit(x, y, batch_size=8, epochs=2, validation_data=(x[:16], y[:16]),
                        callbacks=[averaging, recorder], verbose=0)
    # after the last epoch the average is in place: validating it again gives the logged loss
    assert model.evaluate(x[:16], y[:16], verbose=0) == pytest.approx(history.history["val_loss"][-1], rel=1e-5)
    # the second epoch started from the weights the first epoch trained (its 8th step), not from their average
    np.testing.assert_array_equal(recorder.epoch_starts[1][0], recorder.steps[7][0])
    assert not np.allclose(recorder.steps[7][0], _by_hand([recorder.epoch_starts[0]] + recorder.steps[:8], 0.9)[0])


def test_momentum_outside_0_1_is_refused():
    with pytest.raises(ValueError, match="momentum must be in"):
        WeightAveraging(1.0)


def test_the_default_averages_pn2v_only_and_old_configs_load_without_it(tmp_path):
    X = noisy(np.random.default_rng(0), (2, 32, 32))
    assert PN2VConfig(X, mode="pn2v").train_ema_momentum == 0.99
    assert PN2VConfig(X, mode="n2v").train_ema_momentum == 0.0
    assert PN2VConfig(X, train_ema_momentum=1.0).is_valid(return_invalid=True)[1] == ("train_ema_momentum",)
    model = PN2V(PN2VConfig(X, mode="pn2v", n_samples=4, **SMALL_NET), "old", basedir=tmp_path,
                 noise_model=small_histogram())
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    del config["train_ema_momentum"]
    (tmp_path / "old" / "config.json").write_text(json.dumps(config))
    assert PN2V(None, "old", basedir=tmp_path).config.train_ema_momentum == 0.0
    model.prepare_for_training()
    assert isinstance(model.callbacks[0], WeightAveraging)


def test_the_training_state_keeps_trained_weights_and_averages_and_restores_both(tmp_path):
    X = noisy(np.random.default_rng(2), (3, 32, 32))
    config = PN2VConfig(X[:2], mode="pn2v", n_samples=4, **tiny(SMALL_NET, train_epochs=2, train_steps_per_epoch=3))
    model = PN2V(config, "m", basedir=tmp_path, noise_model=small_histogram())
    model.prepare_for_training()
    assert isinstance(model.callbacks[0], WeightAveraging)
    recorder = _EpochEnds()
    model.train(X[:2], X[2:], callbacks=[EpochCheckpoint(model), recorder], verbose=0)
    state = load_state(tmp_path / "m" / "training_state.npz")
    saved = dict(zip((w.path for w in model._training_model.weights), state.weights))
    trainable = [w.path for w in model._training_model.trainable_weights]
    assert state.averaging_steps == 6
    # the state holds the weights as trained, and their averages, which the epoch's callbacks saw
    for path, trained, average, seen in zip(trainable, recorder.last_step, state.averages, recorder.epoch_end):
        np.testing.assert_array_equal(saved[path], trained)
        np.testing.assert_array_equal(average, seen)
    assert any(not np.array_equal(a, t) for a, t in zip(state.averages, recorder.last_step))

    again = PN2V(None, "m", basedir=tmp_path)
    again.prepare_for_training()
    restore(again, state)
    for weight, trained in zip(again._training_model.trainable_weights, recorder.last_step):
        np.testing.assert_array_equal(weight.numpy(), trained)
    resumed = again.callbacks[0]
    assert resumed.steps == 6
    resumed.set_model(again._training_model)
    resumed.on_train_begin()
    for average, expected in zip(resumed.averages(), state.averages):
        np.testing.assert_array_equal(average, expected)


class _EpochEnds(keras.callbacks.Callback):
    """The trainable weights after the last step and at the end of the last epoch (as the checkpoints see them)."""

    def on_train_batch_end(self, batch, logs=None):
        self.last_step = [w.numpy().copy() for w in self.model.trainable_weights]

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_end = [w.numpy().copy() for w in self.model.trainable_weights]
