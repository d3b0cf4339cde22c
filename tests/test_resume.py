"""Tests of pn2v_tf.resume and the hooks it uses in PN2V: train(initial_epoch, callbacks), predict(progress)."""

import json
import os
import shutil
import warnings

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from pn2v_tf import PN2V, PN2VConfig  # noqa: E402
from pn2v_tf import resume  # noqa: E402
from conftest import SMALL_NET, tiny  # noqa: E402

TINY = tiny(SMALL_NET, train_learning_rate=1e-3, train_reduce_lr={"factor": 0.5, "patience": 1})


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    clean = np.repeat(np.linspace(10, 90, 32)[None, :], 32, axis=0)
    return (clean[None] + rng.normal(0, 5, (3, 32, 32))).astype(np.float32)


def _numpy(variables):
    return [v.numpy() for v in variables]


def _train(model, images, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.train(images[:2], images[2:], steps_per_epoch=2, verbose=0, **kwargs)


@pytest.fixture(scope="module")
def checkpointed(images, tmp_path_factory):
    """A model trained 3 epochs with an EpochCheckpoint: (model, basedir)."""
    basedir = tmp_path_factory.mktemp("models")
    keras.utils.set_random_seed(0)
    model = PN2V(PN2VConfig(images, mode="n2v", **TINY), "m", basedir=str(basedir))
    _train(model, images, epochs=3, callbacks=[resume.EpochCheckpoint(model, {"note": "x"})])
    return model, basedir


def test_checkpoint_writes_state_log_and_last_weights_after_every_epoch(checkpointed):
    model, basedir = checkpointed
    state = resume.load_state(basedir / "m" / resume.STATE_FILE)
    log = resume.read_log(basedir / "m" / resume.LOG_FILE)
    assert state.epoch == 3 and state.settings == {"note": "x"} and state.history == log
    assert [row["epoch"] for row in log] == [1, 2, 3] and set(log[0]) == set(resume.LOG_COLUMNS)
    assert [c["class"] for c in state.callbacks] == [type(c).__name__ for c in model.callbacks]
    np.testing.assert_array_equal(state.weights[0], _numpy(model._training_model.weights)[0])
    assert sorted(p.name for p in (basedir / "m").iterdir()) == [
        "config.json", "example_input.tif", "training_log.csv", "training_state.npz", "weights_best.h5",
        "weights_last.h5"]


def _restored(basedir):
    """The model of ``basedir/m`` loaded, prepared and restored from its state: (model, state)."""
    state = resume.load_state(basedir / "m" / resume.STATE_FILE)
    model = PN2V(None, "m", basedir=str(basedir))
    model.prepare_for_training()
    resume.restore(model, state)
    return model, state


def test_restore_puts_back_weights_optimiser_and_callback_memory(checkpointed, images):
    trained, basedir = checkpointed
    model, state = _restored(basedir)
    for restored, saved in zip(_numpy(model._training_model.weights), state.weights):
        np.testing.assert_array_equal(restored, saved)
    for restored, saved in zip(_numpy(model._training_model.optimizer.variables), state.optimizer):
        np.testing.assert_array_equal(restored, saved)
    assert int(state.optimizer[0]) == 3 * 2  # Adam's step count: 3 epochs of 2 steps

    checkpoint = resume.EpochCheckpoint(model, state=state)
    checkpoint.on_train_begin()  # after ReduceLROnPlateau's own reset, as in fit
    reduce_lr = model.callbacks[0]
    assert isinstance(reduce_lr, keras.callbacks.ReduceLROnPlateau)
    assert reduce_lr.best == state.callbacks[0]["best"] and reduce_lr.wait == state.callbacks[0]["wait"]
    assert model.callbacks[2].best == trained.callbacks[2].best  # weights_best's record stays


def test_continued_training_counts_epochs_on(checkpointed, images):
    model, state = _restored(checkpointed[1])
    basedir = checkpointed[1]
    history = _train(model, images, epochs=5, initial_epoch=state.epoch,
                     callbacks=[resume.EpochCheckpoint(model, state=state)])
    assert len(history.history["loss"]) == 2
    log = resume.read_log(basedir / "m" / resume.LOG_FILE)
    assert [row["epoch"] for row in log] == [1, 2, 3, 4, 5] and log[:3] == state.history
    assert resume.load_state(basedir / "m" / resume.STATE_FILE).epoch == 5


def test_a_state_of_another_network_is_refused(checkpointed, images, tmp_path):
    _, basedir = checkpointed
    state = resume.load_state(basedir / "m" / resume.STATE_FILE)
    other = PN2V(PN2VConfig(images, mode="n2v", **{**TINY, "unet_n_first": 8}), "o", basedir=str(tmp_path))
    other.prepare_for_training()
    with pytest.raises(ValueError, match="do not fit"):
        resume.restore(other, state)


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.mark.filterwarnings("ignore:output path for model already exists")
def test_a_replaced_model_leaves_no_training_state_or_log(checkpointed, images, tmp_path):
    """overwrite=True removes what a later resume would pick up; without it nothing is touched."""
    folder = tmp_path / "m"
    shutil.copytree(checkpointed[1] / "m", folder)
    assert {resume.STATE_FILE, resume.LOG_FILE, "weights_last.h5", "example_input.tif"} <= set(_snapshot(folder))
    before = _snapshot(folder)
    config = PN2VConfig(images, mode="n2v", **{**TINY, "unet_n_first": 8})
    with pytest.raises(FileExistsError, match="overwrite=True"):
        PN2V(config, "m", basedir=str(tmp_path))
    assert _snapshot(folder) == before

    PN2V(config, "m", basedir=str(tmp_path), overwrite=True)
    assert sorted(_snapshot(folder)) == ["config.json"]
    assert json.loads((folder / "config.json").read_text())["unet_n_first"] == 8


def test_an_unreadable_state_file_is_a_value_error(tmp_path):
    (tmp_path / resume.STATE_FILE).write_bytes(b"not a state")
    with pytest.raises(ValueError, match="cannot read the training state"):
        resume.load_state(tmp_path / resume.STATE_FILE)


@pytest.mark.parametrize("initial_epoch", [-1, 3, 4, 1.5])
def test_initial_epoch_must_lie_before_the_last_epoch(images, initial_epoch):
    model = PN2V(PN2VConfig(images, mode="n2v", **TINY), "m", basedir=None)
    with pytest.raises(ValueError, match="initial_epoch"):
        _train(model, images, epochs=3, initial_epoch=initial_epoch)


def test_predict_reports_progress_over_all_tiles(images):
    model = PN2V(PN2VConfig(images, mode="n2v", **TINY), "m", basedir=None)
    calls = []
    model.predict(images, axes="SYX", n_tiles=(2, 1), progress=lambda done, total: calls.append((done, total)))
    assert calls == [(i, 6) for i in range(1, 7)]  # 3 images x 2 tiles

    calls.clear()   # CSBDeep's iterator cuts 5 tiles where 4 were asked for: the total says 5
    model.predict(images[0, :30, :16], n_tiles=(4, 1), progress=lambda done, total: calls.append((done, total)))
    assert calls == [(i, 5) for i in range(1, 6)]
