"""Multichannel images: per-channel normalisation, blind spots, noise models, loss and estimators."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from pn2v_tf import PN2V, PN2VConfig
from pn2v_tf.data import MaskedPatches, mask_channels
from pn2v_tf.inference import mmse
from pn2v_tf.losses import PN2VLoss, pn2v_negative_log_likelihood
from pn2v_tf.nets import build_networks
from pn2v_tf.noise_models import (ChannelNoiseModels, GMMNoiseModel, HistogramNoiseModel, load_noise_model,
                                  per_channel_noise_model)

K = 6
BRIGHTNESS = (40.0, 120.0)  # channel means: the channels differ in brightness and in their noise


@pytest.fixture(scope="module")
def data():
    """Two channels of one scene with different brightness, structure and camera noise."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32]
    scene0 = BRIGHTNESS[0] + 20 * np.sin(xx / 3.0)
    scene1 = BRIGHTNESS[1] + 60 * (((yy // 8) + (xx // 8)) % 2)
    clean = np.stack([scene0, scene1], axis=-1)[np.newaxis].repeat(6, axis=0)
    noisy = np.stack([rng.poisson(clean[..., 0]) + rng.normal(0, 2, clean.shape[:-1]),
                      4 * rng.poisson(clean[..., 1] / 4)], axis=-1).astype(np.float32)
    return clean, noisy


@pytest.fixture(scope="module")
def noise_models():
    rng = np.random.default_rng(1)
    signal = rng.uniform(0, 260, 200_000)
    histogram = HistogramNoiseModel.from_pairs(signal, rng.poisson(signal) + rng.normal(0, 2, signal.size),
                                               bins=64, value_range=(-20, 320))
    gmm = GMMNoiseModel.fit(signal, 4 * rng.poisson(signal / 4), n_gaussians=2, n_coeff=2, steps=50)
    return histogram, gmm


def _config(noisy, **kwargs):
    return PN2VConfig(noisy, axes="YXC", n_samples=K, unet_n_depth=2, unet_n_first=4, n2v_patch_shape=(16, 16),
                      train_batch_size=2, train_epochs=1, train_steps_per_epoch=2, train_n_val_patches=2,
                      train_tensorboard=False, seed=0, **kwargs)


def _randomise(network, seed=0):
    rng = np.random.default_rng(seed)
    network.set_weights([rng.normal(0, 0.5 / np.sqrt(np.prod(w.shape[:-1])), w.shape).astype(np.float32)
                         if w.ndim > 1 else rng.normal(0, 0.3, w.shape).astype(np.float32)
                         for w in network.get_weights()])


# -- configuration -----------------------------------------------------------------------------

def test_config_takes_channels_from_X_and_normalises_each(data):
    _, noisy = data
    config = _config(noisy)
    assert config.is_valid() and config.n_channel_in == config.n_channel_out == 2 and config.axes == "YXC"
    np.testing.assert_allclose(config.means, noisy.mean(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(config.stds, noisy.std(axis=(0, 1, 2)), rtol=1e-4)


def test_config_refuses_channels_without_C_and_mismatched_normalisation(data):
    _, noisy = data
    with pytest.raises(ValueError, match="2 channels need axes='YXC'"):
        PN2VConfig(noisy)
    config = _config(noisy)
    config.means = [0.0]
    assert config.is_valid(return_invalid=True)[1] == ("means",)


# -- masking ---------------------------------------------------------------------------------------

def test_blind_spots_are_drawn_per_channel_and_mask_only_their_channel():
    rng = np.random.default_rng(3)
    patches = rng.uniform(0, 1, (4, 16, 16, 3)).astype(np.float32)
    inputs, values = mask_channels(np.random.default_rng(4), patches, 5.0, 2)
    masked, coords = inputs["image"], inputs["coords"]
    assert coords.shape[:1] + coords.shape[2:] == (4, 3, 2) and values.shape == coords.shape[:3]
    batch = np.arange(4)[:, None]
    for channel in range(3):
        at = coords[:, :, channel]
        np.testing.assert_array_equal(values[:, :, channel], patches[batch, at[..., 0], at[..., 1], channel])
        restored = masked[..., channel].copy()
        restored[batch, at[..., 0], at[..., 1]] = values[:, :, channel]
        np.testing.assert_array_equal(restored, patches[..., channel])   # only its own blind spots changed
    # independent draws: the channels' blind spots are not the same pixels
    assert not np.array_equal(coords[:, :, 0], coords[:, :, 1])


def test_masked_patches_of_multichannel_images(data):
    _, noisy = data
    inputs, values = MaskedPatches(noisy, (16, 16), batch_size=3, steps_per_epoch=1, seed=0)[0]
    assert inputs["image"].shape == (3, 16, 16, 2) and inputs["coords"].shape[2:] == (2, 2)
    assert values.shape == inputs["coords"].shape[:3]


# -- network ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("single_net", [False, True])
def test_masked_network_gives_each_channel_its_outputs_at_its_coordinates(data, single_net):
    _, noisy = data
    prediction, masked = build_networks(_config(noisy, single_net_per_channel=single_net))
    _randomise(prediction)
    images = noisy[:2, :16, :16]
    inputs, _ = mask_channels(np.random.default_rng(0), images, 10.0, 2)
    out = keras.ops.convert_to_numpy(masked(inputs))                      # (B, M, C * K)
    full = keras.ops.convert_to_numpy(prediction(inputs["image"]))         # (B, Y, X, C * K)
    batch = np.arange(2)[:, None]
    for channel in range(2):
        at = inputs["coords"][:, :, channel]
        expected = full[batch, at[..., 0], at[..., 1], channel * K:(channel + 1) * K]
        np.testing.assert_allclose(out[..., channel * K:(channel + 1) * K], expected, rtol=1e-5, atol=1e-4)


def test_independent_networks_do_not_see_the_other_channels(data):
    _, noisy = data
    prediction, _ = build_networks(_config(noisy, single_net_per_channel=True))
    _randomise(prediction)
    image = noisy[:1]
    changed = image.copy()
    changed[..., 1] += 50.0
    before, after = (keras.ops.convert_to_numpy(prediction(x)) for x in (image, changed))
    np.testing.assert_array_equal(before[..., :K], after[..., :K])
    assert not np.allclose(before[..., K:], after[..., K:])
    shared, _ = build_networks(_config(noisy, single_net_per_channel=False))
    assert len(prediction.weights) == 2 * (len(shared.weights) - 2) + 2   # two bodies, one grouped head


# -- noise models ------------------------------------------------------------------------------------

def test_channel_noise_models_apply_each_channel_its_own_model(noise_models):
    histogram, gmm = noise_models
    both = ChannelNoiseModels([histogram, gmm])
    rng = np.random.default_rng(5)
    observation = rng.uniform(10, 200, (7, 2, 1)).astype(np.float32)
    signal = rng.uniform(10, 200, (7, 2, 5)).astype(np.float32)
    log_p = both.log_likelihood(observation, signal)
    np.testing.assert_allclose(log_p[:, :1], histogram.log_likelihood(observation[:, :1], signal[:, :1]), rtol=1e-6)
    np.testing.assert_allclose(log_p[:, 1:], gmm.log_likelihood(observation[:, 1:], signal[:, 1:]), rtol=1e-6)
    weights = both.likelihood_weights(tf.constant(observation), tf.constant(signal)).numpy()
    ratio = weights / np.exp(log_p - log_p.max(axis=-1, keepdims=True))
    np.testing.assert_allclose(ratio / ratio[..., :1], 1.0, rtol=1e-3)   # proportional per pixel and channel
    tables = both.weight_tables()
    assert len(tables) == 2 and len(tables[1]) == 0      # the histogram's tables, none for the GMM
    shared = both.likelihood_weights(tf.constant(observation), tf.constant(signal), tables).numpy()
    np.testing.assert_array_equal(shared, weights)
    packed = both.weight_tables(packed=True)
    assert len(packed[0]) == 1 and len(packed[1]) == 0   # each channel's model packs its own tables
    from_packed = both.likelihood_weights(tf.constant(observation), tf.constant(signal), packed).numpy()
    np.testing.assert_array_equal(from_packed, weights)


def test_channel_noise_models_file_round_trip_with_mixed_kinds(tmp_path, noise_models):
    histogram, gmm = noise_models
    both = ChannelNoiseModels([histogram, gmm])
    loaded = load_noise_model(both.save(tmp_path / "nm.npz"))
    assert isinstance(loaded, ChannelNoiseModels) and [m.kind for m in loaded.models] == ["histogram", "gmm"]
    x = np.full((3, 2, 1), 100.0, np.float32)
    s = np.linspace(50, 150, 12, dtype=np.float32).reshape(3, 2, 2)
    np.testing.assert_allclose(loaded.log_likelihood(x, s), both.log_likelihood(x, s), rtol=1e-6)
    assert ChannelNoiseModels.from_dict(both.to_dict()).models[1].kind == "gmm"


def test_channel_noise_models_check_each_channels_range(noise_models):
    histogram, gmm = noise_models
    both = ChannelNoiseModels([histogram, gmm])
    values = np.full((4, 4, 2), 100.0, np.float32)
    values[0, 0, 0] = 1000.0                                   # beyond channel 0's histogram
    with pytest.warns(UserWarning, match=r"image \(channel 0\) values"):
        both.check_range(values, "image")
    with pytest.raises(ValueError, match="2 channels on its last axis"):
        both.check_range(values[..., :1], "image")


def test_per_channel_noise_model_counts_models(noise_models):
    histogram, gmm = noise_models
    assert per_channel_noise_model([histogram], 3) is histogram
    assert per_channel_noise_model(histogram, 3) is histogram
    with pytest.raises(ValueError, match="2 noise models for 3 channels"):
        per_channel_noise_model([histogram, gmm], 3)
    with pytest.raises(ValueError, match="one noise model per channel, two or more"):
        ChannelNoiseModels([histogram])


# -- loss ------------------------------------------------------------------------------------------

def test_pn2v_loss_uses_each_channels_noise_model(noise_models):
    """The loss's per-pixel values and gradient (its XLA-compiled function, run eagerly here) equal
    the paper's formula with each channel's own noise model, computed channel by channel."""
    histogram, gmm = noise_models
    rng = np.random.default_rng(6)
    y_true = tf.constant(rng.uniform(20, 200, (3, 5, 2)).astype(np.float32))
    samples = tf.constant((y_true.numpy()[..., None] + rng.normal(0, 8, (3, 5, 2, K))).astype(np.float32))
    loss = PN2VLoss(ChannelNoiseModels([histogram, gmm]))
    per_pixel, gradient = loss._per_pixel_loss_and_gradient(y_true, tf.reshape(samples, (3, 5, 2 * K)))
    for channel, model in enumerate((histogram, gmm)):
        own = samples[:, :, channel]
        with tf.GradientTape() as tape:
            tape.watch(own)
            expected = pn2v_negative_log_likelihood(model.log_likelihood(y_true[..., channel:channel + 1], own))
        np.testing.assert_allclose(per_pixel.numpy()[..., channel], expected.numpy(), rtol=1e-5)
        np.testing.assert_allclose(gradient.numpy()[..., channel * K:(channel + 1) * K],
                                   tape.gradient(expected, own).numpy(), rtol=1e-4, atol=1e-8)


def test_pn2v_loss_gradient_weights_each_channels_pixels_by_their_own_upstream(noise_models):
    """The fused loss's custom gradient passes each pixel's and channel's upstream weight to that
    channel's K samples only."""
    histogram, _ = noise_models
    rng = np.random.default_rng(9)
    y_true = tf.constant(rng.uniform(20, 200, (2, 4, 2)).astype(np.float32))
    y_pred = tf.Variable((np.repeat(y_true.numpy(), K, axis=-1) + rng.normal(0, 8, (2, 4, 2 * K))).astype(np.float32))
    weights = tf.constant(rng.uniform(0.5, 2.0, (2, 4, 2)).astype(np.float32))
    loss = PN2VLoss(ChannelNoiseModels([histogram, histogram]))
    with tf.GradientTape() as tape:
        value = tf.reduce_sum(weights * loss.call(y_true, y_pred))
    _, per_pixel_gradient = loss._per_pixel_loss_and_gradient(y_true, tf.convert_to_tensor(y_pred))
    expected = np.repeat(weights.numpy(), K, axis=-1) * per_pixel_gradient.numpy()
    np.testing.assert_allclose(tape.gradient(value, y_pred).numpy(), expected, rtol=1e-5, atol=1e-8)


# -- the model: training, estimators, files ----------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory, data, noise_models):
    _, noisy = data
    basedir = tmp_path_factory.mktemp("models")
    model = PN2V(_config(noisy), "two_channels", basedir=str(basedir), noise_model=list(noise_models))
    model.train(noisy[:5], noisy[5:], verbose=0)
    return model, basedir


def test_mmse_of_each_channel_uses_its_noise_model(trained, data, noise_models):
    model, _ = trained
    _, noisy = data
    image = noisy[0]
    samples = keras.ops.convert_to_numpy(model.keras_model(image[np.newaxis]))[0].reshape(32, 32, 2, K)
    expected = np.stack([mmse(image[..., c:c + 1], samples[:, :, c], nm).numpy()[..., 0]
                         for c, nm in enumerate(noise_models)], axis=-1)
    np.testing.assert_allclose(model.predict(image, axes="YXC"), expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(model.predict(image, axes="YXC", n_tiles=(2, 2)), expected, rtol=1e-5, atol=1e-4)
    prior = model.predict(image, axes="YXC", estimator="prior_mean")
    clipped = np.stack([np.clip(samples[:, :, 0], *noise_models[0].signal_range), samples[:, :, 1]], axis=2)
    np.testing.assert_allclose(prior, clipped.mean(axis=-1), rtol=1e-5, atol=1e-4)


def test_predict_keeps_the_layout_of_the_image(trained, data):
    model, _ = trained
    _, noisy = data
    expected = model.predict(noisy[:2], axes="SYXC")
    assert expected.shape == (2, 32, 32, 2)
    channels_first = np.moveaxis(noisy[:2], -1, 1)                        # SCYX
    np.testing.assert_allclose(model.predict(channels_first, axes="SCYX"), np.moveaxis(expected, -1, 1),
                               rtol=1e-6, atol=1e-5)
    draws = model.sample_posterior(channels_first[0], n_samples=3, axes="CYX")
    assert draws.shape == (3, 2, 32, 32)
    with pytest.raises(ValueError, match="the model takes 2 channels: axes must include C"):
        model.predict(noisy[0, ..., 0], axes="YX")
    with pytest.raises(ValueError, match="axis C of the image has size 3"):
        model.predict(np.concatenate([noisy[0], noisy[0, ..., :1]], axis=-1), axes="YXC")


def test_model_folder_keeps_channels_noise_models_and_normalisation(trained, data):
    model, basedir = trained
    _, noisy = data
    loaded = PN2V(None, "two_channels", basedir=str(basedir))
    assert loaded.config.n_channel_in == 2 and loaded.config.means == model.config.means
    assert isinstance(loaded.noise_model, ChannelNoiseModels)
    np.testing.assert_array_equal(loaded.predict(noisy[0], axes="YXC"), model.predict(noisy[0], axes="YXC"))


def test_one_noise_model_for_several_channels_is_applied_to_each(data, noise_models):
    _, noisy = data
    with pytest.warns(UserWarning, match="one noise model for 2 channels: it is applied to each channel"):
        model = PN2V(_config(noisy), "shared", basedir=None, noise_model=noise_models[0])
    assert model.noise_model is noise_models[0]
    with pytest.raises(ValueError, match="3 noise models for 2 channels"):
        PN2V(_config(noisy), "three", basedir=None, noise_model=[noise_models[0]] * 3)


def test_single_channel_model_keeps_a_given_channel_axis(data):
    _, noisy = data
    config = PN2VConfig(noisy[..., 0], mode="n2v", unet_n_depth=2, unet_n_first=4, n2v_patch_shape=(16, 16))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = PN2V(config, "one", basedir=None)
    plain = model.predict(noisy[0, ..., 0], axes="YX")
    assert plain.shape == (32, 32)
    np.testing.assert_array_equal(model.predict(noisy[0, ..., :1], axes="YXC")[..., 0], plain)


def test_volumes_with_channels_train_and_predict_in_tiles(noise_models):
    rng = np.random.default_rng(8)
    clean = np.stack([rng.uniform(20, 60, (3, 8, 16, 16)), rng.uniform(100, 200, (3, 8, 16, 16))], axis=-1)
    noisy = rng.poisson(clean).astype(np.float32)
    config = PN2VConfig(noisy, axes="ZYXC", n_samples=K, unet_n_depth=2, unet_n_first=4, unet_pool=(1, 2, 2),
                        n2v_patch_shape=(8, 16, 16), train_batch_size=2, train_epochs=1, train_steps_per_epoch=1,
                        train_n_val_patches=2, train_tensorboard=False, seed=0)
    assert config.n_dim == 3 and config.n_channels == 2
    model = PN2V(config, "volume", basedir=None, noise_model=list(noise_models))
    model.train(noisy[:2], noisy[2:], verbose=0)
    whole = model.predict(noisy[0], axes="ZYXC")
    assert whole.shape == (8, 16, 16, 2)
    np.testing.assert_allclose(model.predict(noisy[0], axes="ZYXC", n_tiles=(2, 2, 1)), whole, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("mode", ["n2v", "care"])
def test_one_output_modes_train_and_predict_every_channel(data, mode):
    clean, noisy = data
    config = _config(noisy, mode=mode)
    model = PN2V(config, mode, basedir=None)
    targets = dict(Y=clean[:5].astype(np.float32), validation_Y=clean[5:].astype(np.float32)) if mode == "care" else {}
    history = model.train(noisy[:5], noisy[5:], verbose=0, **targets)
    assert np.isfinite(history.history["loss"][0])
    out = model.predict(noisy[0], axes="YXC")
    network = keras.ops.convert_to_numpy(model.keras_model(noisy[:1]))[0]
    np.testing.assert_allclose(out, network, rtol=1e-5, atol=1e-4)   # one output per channel, raw units


def test_split_validation_of_one_multichannel_image_cuts_rows_not_columns():
    from pn2v_tf.data import split_validation

    image = np.arange(1 * 20 * 12 * 3, dtype=np.float32).reshape(1, 20, 12, 3)
    train, validation = split_validation(image, fraction=0.25, min_rows=4, n_channels=3)
    assert train.shape == (1, 15, 12, 3) and validation.shape == (1, 5, 12, 3)
    np.testing.assert_array_equal(np.concatenate([train, validation], axis=1), image)
    with pytest.raises(ValueError, match="one image of 20 x 12 pixels cannot be split"):
        split_validation(image, fraction=0.25, min_rows=16, n_channels=3)
