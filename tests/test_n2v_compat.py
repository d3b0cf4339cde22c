"""n2v scripts with their imports changed to pn2v_tf.n2v_compat: n2v's 2-D, 3-D, RGB and structN2V
examples and its functional tests, shrunk to synthetic data and a few steps (their keywords and calls
as n2v's examples write them)."""

import numpy as np
import pytest
import tifffile

from conftest import noisy as _noisy

from pn2v_tf.n2v_compat import N2V, N2V_DataGenerator, N2VConfig


def _close(actual, expected):
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_n2v_2d_sem_example(tmp_path):
    """n2v's examples/2D/denoising2D_SEM and tests/functional/test_training2D_SEM.py."""
    rng = np.random.default_rng(0)
    (tmp_path / "data").mkdir()
    for i in range(2):
        tifffile.imwrite(tmp_path / "data" / f"img{i}.tif", _noisy(rng, (80, 72)))
    datagen = N2V_DataGenerator()
    imgs = datagen.load_imgs_from_directory(directory=str(tmp_path / "data"))
    assert imgs[0].shape == (1, 80, 72, 1)
    X = datagen.generate_patches_from_list(imgs[:1], shape=(32, 32))
    X_val = datagen.generate_patches_from_list(imgs[1:], shape=(32, 32))
    assert X.shape == (2 * 2 * 8, 32, 32, 1)  # the 2x2 grid of whole patches, 8 rotations and flips
    config = N2VConfig(X, unet_kern_size=3, train_steps_per_epoch=2, train_epochs=1, train_loss='mse',
                       batch_norm=True, train_batch_size=4, n2v_perc_pix=0.198, n2v_patch_shape=(32, 32),
                       n2v_manipulator='uniform_withCP', n2v_neighborhood_radius=5)
    assert config.is_valid() and config.mode == "n2v"
    assert (config.unet_n_depth, config.unet_n_first, config.batch_norm) == (3, 32, True)  # n2v's depth 2
    model = N2V(config, 'n2v_2D', basedir=str(tmp_path / "models"))
    history = model.train(X, X_val)
    assert "val_loss" in history.history
    img = imgs[1][0, ..., 0]
    pred = model.predict(img, axes='YX', n_tiles=(2, 1))
    assert pred.shape == img.shape
    _close(model.predict(img, axes='YX'), pred)
    again = N2V(config=None, name='n2v_2D', basedir=str(tmp_path / "models"))
    _close(again.predict(img, axes='YX'), pred)
    assert again.config.unet_n_depth == 3  # not counted up a second time
    zip_path = model.export_TF(name='Noise2Void - 2D SEM Example', description='synthetic test',
                               authors=["A. Author"], test_img=imgs[1][0], axes='YXC', patch_shape=(32, 32))
    assert zip_path.name == "export.bioimage.io.zip" and zip_path.parent == model.logdir and zip_path.is_file()


def test_n2v_3d_example(tmp_path):
    """n2v's examples/3D and tests/functional/test_training3D.py."""
    rng = np.random.default_rng(1)
    tifffile.imwrite(tmp_path / "stack.tif", _noisy(rng, (16, 48, 48)))
    datagen = N2V_DataGenerator()
    imgs = datagen.load_imgs([str(tmp_path / "stack.tif")], dims='ZYX')
    assert imgs[0].shape == (1, 16, 48, 48, 1)
    patches = datagen.generate_patches_from_list(imgs, shape=(16, 16, 16))
    X, X_val = patches[:-8], patches[-8:]
    config = N2VConfig(X, unet_kern_size=3, train_steps_per_epoch=2, train_epochs=1, train_loss='mse',
                       batch_norm=True, train_batch_size=2, n2v_perc_pix=0.198, n2v_patch_shape=(16, 16, 16),
                       n2v_manipulator='uniform_withCP', n2v_neighborhood_radius=5, unet_n_first=8)
    assert config.n_dim == 3 and config.axes == "ZYXC"
    model = N2V(config, 'n2v_3D', basedir=str(tmp_path / "models"))
    model.train(X, X_val)
    volume = imgs[0][0, ..., 0]
    pred = model.predict(volume, axes='ZYX', n_tiles=(1, 2, 2))
    assert pred.shape == volume.shape
    _close(model.predict(volume, axes='ZYX'), pred)


@pytest.mark.parametrize("single_net_per_channel", [False, True])
def test_n2v_rgb_example(tmp_path, single_net_per_channel):
    """n2v's examples/2D/denoising2D_RGB and tests/functional/test_training2D_RGB*.py: channels last,
    kept by predict."""
    rng = np.random.default_rng(2)
    image = _noisy(rng, (64, 64, 3)) * np.float32([1, 2, 0.5])
    imageio_png = tmp_path / "rgb.tif"
    tifffile.imwrite(imageio_png, image)
    datagen = N2V_DataGenerator()
    imgs = datagen.load_imgs([str(imageio_png)], dims='YXC')
    assert imgs[0].shape == (1, 64, 64, 3)
    X = datagen.generate_patches_from_list(imgs, shape=(32, 32))
    config = N2VConfig(X, unet_kern_size=3, unet_n_first=8, train_steps_per_epoch=2, train_epochs=1,
                       train_loss='mae', batch_norm=True, train_batch_size=4, n2v_perc_pix=0.198,
                       n2v_patch_shape=(32, 32), n2v_manipulator='uniform_withCP', n2v_neighborhood_radius=5,
                       single_net_per_channel=single_net_per_channel)
    assert config.n_channel_in == 3 and config.train_loss == "mae"
    model = N2V(config, 'n2v_rgb', basedir=str(tmp_path / "models"))
    model.train(X[:-4], X[-4:])
    pred = model.predict(image, axes='YXC')
    assert pred.shape == image.shape


def test_structn2v_example(tmp_path):
    """n2v's examples/2D/structN2V_2D_convallaria: a horizontal structuring element."""
    rng = np.random.default_rng(3)
    X = _noisy(rng, (8, 32, 32, 1))
    config = N2VConfig(X, unet_n_first=8, train_steps_per_epoch=2, train_epochs=1, train_batch_size=4,
                       n2v_patch_shape=(32, 32), n2v_perc_pix=1.6, train_loss='mse',
                       structN2Vmask=[[0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0]])
    model = N2V(config, 'structn2v', basedir=str(tmp_path / "models"))
    model.train(X[:6], X[6:])
    assert N2V(None, 'structn2v', basedir=str(tmp_path / "models")).config.structN2Vmask == \
        [[0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0]]


def test_unet_residual_predicts_the_change_of_the_input(tmp_path):
    """A residual network whose head outputs zeros returns its input; trained, the prediction network, the
    masked training graph and the engine agree."""
    rng = np.random.default_rng(8)
    X = _noisy(rng, (6, 32, 32, 2))
    config = N2VConfig(X, unet_residual=True, unet_n_first=4, unet_kern_size=3, n2v_patch_shape=(32, 32),
                       train_steps_per_epoch=2, train_epochs=1, train_batch_size=2, single_net_per_channel=False)
    model = N2V(config, "residual", basedir=str(tmp_path))
    head = model.keras_model.get_layer("head")
    saved = [w.copy() for w in head.get_weights()]
    head.set_weights([np.zeros_like(w) for w in saved])
    image = _noisy(rng, (40, 36, 2))
    _close(model.predict(image, axes="YXC"), image)
    head.set_weights(saved)
    model.train(X[:4], X[4:])
    whole = np.asarray(model.keras_model(image[None]))[0]
    _close(model.predict(image, axes="YXC", n_tiles=(2, 2)), whole)
    coords = np.stack(np.meshgrid(np.arange(0, 40, 7), np.arange(0, 36, 5), indexing="ij"), -1).reshape(1, -1, 1, 2)
    coords = np.repeat(coords, 2, axis=2).astype(np.int32)
    masked = np.asarray(model.keras_model_masked({"image": image[None], "coords": coords}))[0]
    _close(masked, whole[coords[0, :, 0, 0], coords[0, :, 0, 1]])
    reloaded = N2V(None, "residual", basedir=str(tmp_path))
    assert reloaded.config.unet_residual is True
    _close(reloaded.predict(image, axes="YXC"), whole)
    import tensorflow as tf

    exported = tf.saved_model.load(str(model.export_SavedModel(tmp_path / "export")))
    _close(exported.signatures["serving_default"](input=tf.constant(image[None]))["output"].numpy()[0], whole)


def test_n2v2_keywords():
    X = _noisy(np.random.default_rng(4), (2, 32, 32, 1))
    config = N2VConfig(X, blurpool=True, skip_skipone=True, n2v_manipulator='median', n2v_patch_shape=(32, 32))
    assert (config.blurpool, config.skip_skipone, config.n2v_manipulator) == (True, True, "median")
    for manipulator in ('normal_withoutCP', 'uniform_withCP', 'uniform_withoutCP', 'normal_additive',
                        'normal_fitted', 'identity', 'mean', 'median'):
        assert N2VConfig(X, n2v_manipulator=manipulator, n2v_patch_shape=(32, 32)).is_valid()


@pytest.mark.parametrize("keywords, message", [
    (dict(unet_last_activation="relu"), "unet_last_activation must be 'linear'"),
    (dict(probabilistic=True), "use PN2V: N2VConfig\\(X, mode='pn2v'"),
    (dict(train_loss_weights=[1]), "unknown configuration keyword 'train_loss_weights'"),
])
def test_what_is_not_available_is_refused_with_what_to_use(keywords, message):
    with pytest.raises(ValueError, match=message):
        N2VConfig(_noisy(np.random.default_rng(5), (2, 32, 32, 1)), **keywords)


def test_n2v_defaults_and_accepted_n2v_only_keywords():
    X = _noisy(np.random.default_rng(6), (2, 64, 64, 1))
    config = N2VConfig(X, unet_residual=False, unet_last_activation='linear', probabilistic=False,
                       unet_input_shape=(None, None, 1))
    assert (config.unet_kern_size, config.n2v_neighborhood_radius, config.n2v_perc_pix, config.train_loss,
            config.n2v_manipulator, config.train_steps_per_epoch) == (5, 5, 1.5, "mae", "uniform_withCP", 400)
    with pytest.raises(ValueError, match="SYXC or SZYXC"):
        N2VConfig(X[..., 0][0])


def test_generate_patches_at_random_positions_and_without_augmentation():
    data = np.random.default_rng(7).normal(size=(1, 40, 50, 1)).astype(np.float32)
    generator = N2V_DataGenerator(seed=0)
    patches = generator.generate_patches(data[:1], num_patches=5, shape=(16, 16), augment=False)
    assert patches.shape == (5, 16, 16, 1)
    for patch in patches:  # each is a window of the image
        hits = [(y, x) for y in range(25) for x in range(35) if np.array_equal(data[0, y:y + 16, x:x + 16], patch)]
        assert hits
    with pytest.raises(ValueError, match="does not fit"):
        generator.generate_patches(data, shape=(64, 16))
