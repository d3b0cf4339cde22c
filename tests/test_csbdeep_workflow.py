"""CSBDeep's CARE workflow with mode 'care': patches from csbdeep.data.create_patches, read back with
csbdeep.io.load_training_data, train(X, Y, validation_data=...), predict with CSBDeep's normalizer and
resizer, plot_history on the history."""

import numpy as np
import pytest

from conftest import tiny

from pn2v_tf import PN2V, PN2VConfig


@pytest.fixture(scope="module")
def care_data(tmp_path_factory):
    from csbdeep.data import RawData, create_patches
    from csbdeep.io import load_training_data

    rng = np.random.default_rng(0)
    clean = rng.uniform(10, 100, (4, 64, 64)).astype(np.float32)
    noisy = rng.poisson(clean).astype(np.float32)
    raw = RawData.from_arrays(noisy, clean, axes="YX")
    path = tmp_path_factory.mktemp("care") / "patches.npz"
    create_patches(raw, patch_size=(32, 32), n_patches_per_image=4, save_file=str(path), verbose=False)
    (X, Y), (X_val, Y_val), axes = load_training_data(str(path), validation_split=0.25, verbose=False)
    return X, Y, X_val, Y_val, axes, noisy


def test_care_trains_on_csbdeep_patches_and_predicts_with_its_normalizer_and_resizer(care_data):
    from csbdeep.data import NoNormalizer, PadAndCropResizer, PercentileNormalizer
    from csbdeep.utils import plot_history

    X, Y, X_val, Y_val, axes, noisy = care_data
    assert axes == "SYXC" and X.shape[1:] == (32, 32, 1)
    config = PN2VConfig(X, mode="care", axes="YXC", train_batch_size=4, train_n_val_patches=4, seed=0,
                        **tiny(n2v_patch_shape=(16, 16)))
    model = PN2V(config, None, basedir=None)
    history = model.train(X, Y, validation_data=(X_val, Y_val), epochs=2, steps_per_epoch=2, verbose=0)
    assert len(history.history["val_loss"]) == 2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plot_history(history, ["loss", "val_loss"])
    assert len(plt.gcf().axes) == 1 and plt.gcf().axes[0].get_legend() is not None
    plt.close("all")

    image = noisy[0, :45, :38]
    normalizer = PercentileNormalizer(1, 99.8)
    with_csbdeep = model.predict(image, axes="YX", normalizer=normalizer, resizer=PadAndCropResizer())
    assert with_csbdeep.shape == image.shape
    # by hand: CSBDeep's percentile normalisation, prediction, and its inverse (do_after)
    low, high = np.percentile(image, (1, 99.8))
    pad = [(0, -side % block) for side, block in zip(image.shape, model.config.block_shape)]
    assert any(after for _, after in pad)
    padded = np.pad((image - low) / (high - low + 1e-20), pad, mode="reflect")
    by_hand_padded = model.predict(padded)[:45, :38] * (high - low) + low
    np.testing.assert_allclose(with_csbdeep, by_hand_padded, rtol=1e-4, atol=1e-4 * np.abs(by_hand_padded).max())
    kept = model.predict(image[..., None], axes="YXC", normalizer=NoNormalizer())
    assert kept.shape == image.shape + (1,)  # a channel axis given is a channel axis returned
    np.testing.assert_allclose(kept[..., 0], model.predict(image), rtol=1e-6)


def test_validation_data_errors_name_the_csbdeep_call(care_data):
    X, Y, X_val, Y_val, _, _ = care_data
    model = PN2V(PN2VConfig(X, mode="care", axes="YXC", **tiny(n2v_patch_shape=(16, 16))), None, basedir=None)
    with pytest.raises(ValueError, match=r"validation_data must be \(X_val, Y_val\)"):
        model.train(X, Y, validation_data=X_val, epochs=1, steps_per_epoch=1, verbose=0)
    n2v = PN2V(PN2VConfig(X, mode="n2v", axes="YXC", **tiny(n2v_patch_shape=(16, 16))), None, basedir=None)
    with pytest.raises(ValueError, match="validation_data must be X_val"):
        n2v.train(X, validation_data=(X_val, Y_val, Y_val), epochs=1, steps_per_epoch=1, verbose=0)
    with pytest.raises(ValueError, match="train needs validation images"):
        n2v.train(X, epochs=1, steps_per_epoch=1, verbose=0)
    history = n2v.train(X, validation_data=X_val, epochs=1, steps_per_epoch=1, verbose=0)
    assert "val_loss" in history.history
