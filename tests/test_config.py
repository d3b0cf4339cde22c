"""Tests of pn2v_tf.config.PN2VConfig: defaults, validation, normalisation and the JSON round trip."""

import json
import math
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from pn2v_tf.config import PN2VConfig  # noqa: E402


@pytest.fixture(scope="module")
def X():
    """(S, Y, X) images whose mean and standard deviation are known in closed form."""
    # values 0..2*8*8-1: mean (n-1)/2, variance (n^2-1)/12 for n consecutive integers
    return np.arange(2 * 8 * 8, dtype=np.float32).reshape(2, 8, 8)


# -- defaults ----------------------------------------------------------------------------------------

def test_defaults_follow_the_docstring(X):
    config = PN2VConfig(X)
    n = X.size
    assert config.mode == "pn2v"
    assert config.n_samples == 800
    assert config.n_outputs == 800
    assert config.samples_init_spread == pytest.approx(0.01)
    assert config.samples_output_scale == pytest.approx(1.0)
    assert config.train_mean_weight == 1.0
    assert config.train_decouple_mean is True
    assert config.unet_n_depth == 3
    assert config.unet_n_first == 64
    assert config.unet_kern_size == 3
    assert config.n2v_patch_shape == (64, 64)
    assert config.n2v_perc_pix == pytest.approx(3.0)
    assert config.n2v_neighborhood_radius == 2
    assert config.means == [pytest.approx((n - 1) / 2)]
    assert config.stds == [pytest.approx(math.sqrt((n ** 2 - 1) / 12), rel=1e-6)]
    assert config.train_epochs == 200
    assert config.train_steps_per_epoch == 100
    assert config.train_batch_size == 16
    assert config.train_learning_rate == pytest.approx(4e-4)
    assert config.train_reduce_lr == {"factor": 0.5, "patience": 10}
    assert config.train_tensorboard is True
    assert config.train_n_val_patches == 64
    assert config.seed is None
    assert config.axes == "YXC" and config.n_dim == 2
    assert config.n_channel_in == 1 and config.n_channel_out == 1
    assert (config.train_checkpoint, config.train_checkpoint_last, config.train_checkpoint_epoch) == (
        "weights_best.h5", "weights_last.h5", "weights_now.h5")
    assert config.is_valid()
    assert config.is_valid(True) == (True, ())


def test_means_and_stds_are_plain_floats_from_X():
    rng = np.random.default_rng(0)
    X = rng.normal(250.0, 7.0, (3, 16, 16)).astype(np.float32)
    config = PN2VConfig(X)
    assert all(type(v) is float for v in config.means + config.stds)  # JSON-serialisable
    assert config.means[0] == pytest.approx(float(np.mean(X)), rel=1e-6)
    assert config.stds[0] == pytest.approx(float(np.std(X)), rel=1e-5)


def test_without_X_the_normalisation_is_the_identity():
    config = PN2VConfig(None)
    assert config.means == [0.0] and config.stds == [1.0]
    assert config.is_valid()


@pytest.mark.parametrize("mode", ["n2v", "care"])
def test_single_output_modes(X, mode):
    config = PN2VConfig(X, mode=mode, n_samples=32)
    assert config.is_valid()
    assert config.n_outputs == 1


def test_keywords_overwrite_defaults(X):
    config = PN2VConfig(X, n_samples=16, unet_n_depth=2, n2v_patch_shape=[32, 48], seed=5)
    assert (config.n_samples, config.unet_n_depth, config.seed) == (16, 2, 5)
    assert config.n2v_patch_shape == (32, 48)  # a list becomes a tuple
    assert config.n_outputs == 16


# -- the images X --------------------------------------------------------------------------------------

def test_X_with_a_channel_axis_gives_the_same_config(X):
    assert vars(PN2VConfig(X[..., np.newaxis])) == vars(PN2VConfig(X))


@pytest.mark.parametrize("shape", [(8, 8), (8,), (2, 8, 8, 2), (1, 2, 8, 8, 1), (2, 8, 8, 1, 1)])
def test_X_of_other_shapes_is_rejected(shape):
    with pytest.raises(ValueError, match="SYX"):
        PN2VConfig(np.ones(shape, dtype=np.float32))


# -- is_valid --------------------------------------------------------------------------------------

def test_is_valid_names_every_invalid_field_at_once():
    constant = np.full((2, 16, 16), 7.0, dtype=np.float32)  # standard deviation 0
    config = PN2VConfig(constant, mode="foo", unet_kern_size=4, n2v_patch_shape=(34, 34))  # 34 % 4 != 0
    assert config.stds == [0.0]
    assert config.is_valid() is False
    assert config.is_valid(True) == (False, ("mode", "unet_kern_size", "n2v_patch_shape", "stds"))


@pytest.mark.parametrize("key, value", [
    ("mode", "foo"),
    ("mode", None),
    ("n_samples", 0),
    ("n_samples", 2.5),
    ("n_samples", True),
    ("train_decouple_mean", "yes"),
    ("samples_init_spread", 0.0),   # the samples would never separate
    ("samples_init_spread", -0.1),
    ("samples_init_spread", float("nan")),
    ("samples_output_scale", 0.0),
    ("samples_output_scale", "10"),
    ("unet_n_depth", 0),
    ("unet_n_first", 0),
    ("unet_kern_size", 4),
    ("unet_kern_size", 0),
    ("n2v_patch_shape", (64, 66)),  # not a multiple of 2**(3-1)
    ("n2v_patch_shape", (64,)),
    ("n2v_patch_shape", (64, 64, 64)),
    ("n2v_patch_shape", (64.0, 64.0)),
    ("n2v_perc_pix", 0),
    ("n2v_perc_pix", 100.5),
    ("n2v_perc_pix", float("nan")),
    ("n2v_neighborhood_radius", 0),
    ("means", [float("nan")]),
    ("means", [1.0, 2.0]),
    ("means", 1.0),
    ("stds", [0.0]),
    ("stds", [-1.0]),
    ("stds", [float("inf")]),
    ("train_epochs", 0),
    ("train_steps_per_epoch", 0),
    ("train_batch_size", 0),
    ("train_learning_rate", 0.0),
    ("train_learning_rate", -1e-3),
    ("train_learning_rate", float("inf")),
    ("train_reduce_lr", "yes"),
    ("train_tensorboard", 1),
    ("train_n_val_patches", 0),
    ("seed", -1),
    ("seed", 1.5),
])
def test_is_valid_names_the_one_invalid_field(X, key, value):
    config = PN2VConfig(X, **{key: value})
    assert config.is_valid(True) == (False, (key,))


def test_patch_side_must_exceed_the_neighbourhood_radius(X):
    # depth 1: every side is a multiple of 1, but a side of 2 leaves no neighbour within radius 2
    assert PN2VConfig(X, unet_n_depth=1, n2v_patch_shape=(2, 8)).is_valid(True) == (False, ("n2v_patch_shape",))
    assert PN2VConfig(X, unet_n_depth=1, n2v_patch_shape=(3, 8)).is_valid()


def test_invalid_depth_is_not_also_blamed_on_the_patch_shape(X):
    assert PN2VConfig(X, unet_n_depth=0).is_valid(True) == (False, ("unet_n_depth",))
    assert PN2VConfig(X, n2v_neighborhood_radius=0).is_valid(True) == (False, ("n2v_neighborhood_radius",))


@pytest.mark.parametrize("key, value", [
    ("n2v_patch_shape", (8, 8)), ("n2v_perc_pix", 100), ("n2v_perc_pix", 0.1), ("unet_n_depth", 1),
    ("train_reduce_lr", None), ("seed", 0), ("unet_kern_size", 5), ("train_tensorboard", False),
])
def test_boundary_values_are_valid(X, key, value):
    assert PN2VConfig(X, **{key: value}).is_valid(True) == (True, ())


def test_a_model_refuses_an_invalid_config(X):
    from pn2v_tf.model import PN2V

    config = PN2VConfig(X, mode="foo", unet_kern_size=4)
    with pytest.raises(ValueError, match="mode, unet_kern_size"):
        PN2V(config, "invalid", basedir=None)


def test_unknown_keyword_raises_and_names_it(X):
    with pytest.raises((AttributeError, ValueError, TypeError), match="unet_n_frist"):
        PN2VConfig(X, unet_n_frist=32)


# -- config.json round trip --------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", [
    {},
    dict(mode="n2v", n_samples=16, unet_n_depth=2, unet_n_first=8, n2v_patch_shape=(32, 48),
         n2v_perc_pix=1.5, train_reduce_lr=None, train_tensorboard=False, seed=3, train_learning_rate=3e-3),
    dict(mode="care", train_checkpoint=None, train_reduce_lr={"factor": 0.2, "patience": 2, "min_lr": 1e-6}),
])
def test_json_round_trip_gives_equal_attributes(X, kwargs):
    config = PN2VConfig(X, **kwargs)
    loaded = json.loads(json.dumps(vars(config)))
    restored = PN2VConfig(**loaded)
    assert vars(restored) == vars(config)
    assert restored.is_valid(True) == (True, ())
    assert type(restored.n2v_patch_shape) is tuple
    assert restored.n_outputs == config.n_outputs


def test_loaded_config_without_the_mean_term_keeps_the_loss_it_was_trained_with(X):
    """config.json files written before ``train_mean_weight`` existed trained on the likelihood alone,
    those written before ``train_decouple_mean`` existed with the likelihood pulling the mean too."""
    stored = vars(PN2VConfig(X))
    old = {key: value for key, value in stored.items() if key not in ("train_mean_weight", "train_decouple_mean")}
    loaded = PN2VConfig(**PN2VConfig.update_loaded_config(old))
    assert (loaded.train_mean_weight, loaded.train_decouple_mean) == (0.0, False)
    coupled = dict(old, train_mean_weight=0.3)
    loaded = PN2VConfig(**PN2VConfig.update_loaded_config(coupled))
    assert (loaded.train_mean_weight, loaded.train_decouple_mean) == (0.3, False)
    assert PN2VConfig(**PN2VConfig.update_loaded_config(stored)).train_decouple_mean is True
    assert (PN2VConfig(X).train_mean_weight, PN2VConfig(X).train_decouple_mean) == (1.0, True)


def test_independent_networks_per_channel_by_default_and_shared_for_older_config_files():
    """n2v's default; a config.json without the key (none of them was multichannel with another value)
    loads with the shared U-Net it would have been trained with."""
    X = np.zeros((2, 32, 32, 3), np.float32)
    stored = vars(PN2VConfig(X, axes="YXC"))
    assert stored["single_net_per_channel"] is True
    old = {key: value for key, value in stored.items() if key != "single_net_per_channel"}
    assert PN2VConfig(**PN2VConfig.update_loaded_config(old)).single_net_per_channel is False
    assert PN2VConfig(**PN2VConfig.update_loaded_config(stored)).single_net_per_channel is True
