"""Bootstrapped noise models: p(x|s) from the noisy images alone (Prakash et al. 2020).

N2V, trained on the noisy images, predicts a pseudo-clean signal for every pixel; a noise model
fitted to the (prediction, noisy image) pairs then stands in for one from calibration data.
"""

import numpy as np

from ._checks import is_int
from .arrays import as_image_stack, spatial_dims
from .config import PN2VConfig
from .data import split_validation
from .model import PN2V
from .noise_models import GMMNoiseModel, HistogramNoiseModel

KINDS = ("gmm", "histogram")


def bootstrap_noise_model(images, kind="gmm", n2v_model=None, config_kwargs=None, epochs=None,
                          steps_per_epoch=None, return_n2v=False, **fit_kwargs):
    """Fit a noise model to N2V predictions and the noisy images they came from.

    Parameters
    ----------
    images : numpy.ndarray
        Noisy images, raw camera units: axes SYX (or one image YX), or SZYX (or one volume ZYX) for a
        3-D N2V model (``n2v_model`` of 3 dimensions, or ``config_kwargs={'axes': 'ZYX', ...}``).
    kind : str
        ``'gmm'`` (:meth:`GMMNoiseModel.fit`) or ``'histogram'``
        (:meth:`HistogramNoiseModel.from_pairs`).
    n2v_model : PN2V or None
        A trained model of mode ``'n2v'`` (or ``'care'``) whose predictions are the pseudo-signal;
        ``None`` trains one on ``images`` (in memory; validation data are held out as
        :func:`pn2v_tf.data.split_validation` does: the last image, or the last rows of a single one).
    config_kwargs : dict or None
        Options of :class:`PN2VConfig` for that N2V model (e.g. ``unet_n_first``,
        ``n2v_patch_shape``, ``train_epochs``); ``mode`` is always ``'n2v'``.
    epochs, steps_per_epoch : int or None
        Training schedule of that model; default: the config's.
    return_n2v : bool
        Also return the N2V model (a denoiser in its own right).
    **fit_kwargs
        Passed to the noise model's constructor method (e.g. ``n_gaussians``, ``n_coeff``,
        ``saturation`` for a GMM; ``bins``, ``value_range`` for a histogram).

    Returns
    -------
    NoiseModel or (NoiseModel, PN2V)
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if n2v_model is not None and (not isinstance(n2v_model, PN2V) or n2v_model.config.mode == "pn2v"):
        raise ValueError("n2v_model must be a PN2V model of mode 'n2v' or 'care' (its predictions are the signal)")
    n_dim = n2v_model.config.n_dim if n2v_model is not None else spatial_dims((config_kwargs or {}).get("axes", "YX"))
    images = _as_stack(images, n_dim)
    if n2v_model is None:
        n2v_model = train_n2v(images, config_kwargs, epochs, steps_per_epoch)
    signal = n2v_model.predict(images, axes="S" + "ZYX"[-n_dim:])
    if kind == "gmm":
        noise_model = GMMNoiseModel.fit(signal, images, **fit_kwargs)
    else:
        noise_model = HistogramNoiseModel.from_pairs(signal, images, **fit_kwargs)
    return (noise_model, n2v_model) if return_n2v else noise_model


def train_n2v(images, config_kwargs=None, epochs=None, steps_per_epoch=None):
    """Train an in-memory N2V model on noisy images (SYX, or SZYX with ``axes='ZYX'`` in ``config_kwargs``),
    holding out validation data with :func:`pn2v_tf.data.split_validation`."""
    config_kwargs = dict(config_kwargs or {})
    if config_kwargs.pop("mode", "n2v") != "n2v":
        raise ValueError("the bootstrap trains mode 'n2v'; leave 'mode' out of config_kwargs")
    for name, value in (("epochs", epochs), ("steps_per_epoch", steps_per_epoch)):
        if value is not None and not is_int(value, 1):
            raise ValueError(f"{name} must be an integer >= 1 or None, got {value!r}")
    config = PN2VConfig(images, mode="n2v", **config_kwargs)
    invalid = config.is_valid(return_invalid=True)[1]
    if invalid:
        raise ValueError(f"invalid N2V configuration for the bootstrap: {', '.join(invalid)}")
    train, validation = split_validation(images, min_rows=config.n2v_patch_shape[-2])
    config = PN2VConfig(train, mode="n2v", **config_kwargs)
    model = PN2V(config, name="bootstrap_n2v", basedir=None)
    model.train(train, validation, epochs=epochs, steps_per_epoch=steps_per_epoch)
    return model


def _as_stack(images, n_dim):
    images = np.asarray(images)
    return as_image_stack(images[np.newaxis] if images.ndim == n_dim else images, n_dim, "images")
