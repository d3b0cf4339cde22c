"""Bootstrapped noise models: p(x|s) from the noisy images alone (Prakash et al. 2020).

N2V, trained on the noisy images, predicts a pseudo-clean signal for every pixel; a noise model
fitted to the (prediction, noisy image) pairs then stands in for one from calibration data.
"""

import numpy as np
from csbdeep.utils import axes_check_and_normalize

from ._checks import is_int
from .arrays import as_image_stack, spatial_axes, spatial_dims, stack_from_axes
from .config import PN2VConfig
from .data import split_validation
from .model import PN2V
from .noise_models import ChannelNoiseModels, GMMNoiseModel, HistogramNoiseModel

KINDS = ("gmm", "histogram")


def bootstrap_noise_model(images, kind="gmm", n2v_model=None, config_kwargs=None, epochs=None,
                          steps_per_epoch=None, return_n2v=False, axes=None, **fit_kwargs):
    """Fit a noise model to N2V predictions and the noisy images they came from.

    Multichannel images get one noise model per channel, each fitted to its channel's pairs, from
    one multichannel N2V model.

    Parameters
    ----------
    images : numpy.ndarray
        Noisy images, raw camera units: axes SYX (or one image YX), or SZYX (or one volume ZYX) for a
        3-D N2V model (``n2v_model`` of 3 dimensions, or ``config_kwargs={'axes': 'ZYX', ...}``).
        Multichannel images have their channels last, SYXC or SZYXC (or without S), with an
        ``n2v_model`` of that many channels or ``config_kwargs={'axes': 'YXC'}`` (``'ZYXC'``); or
        give their ``axes``.
    kind : str
        ``'gmm'`` (:meth:`GMMNoiseModel.fit`) or ``'histogram'``
        (:meth:`HistogramNoiseModel.from_pairs`).
    n2v_model : PN2V or None
        A trained model of mode ``'n2v'`` (or ``'care'``) whose predictions are the pseudo-signal;
        ``None`` trains one on ``images`` (in memory; validation data are held out as
        :func:`pn2v_tf.data.split_validation` does: the last image, or the last rows of a single one).
    config_kwargs : dict or None
        Options of :class:`PN2VConfig` for that N2V model (e.g. ``unet_n_first``,
        ``n2v_patch_shape``, ``train_epochs``, ``single_net_per_channel``); ``mode`` is always
        ``'n2v'``, and its ``axes`` follow from the images' dimensions and channels.
    epochs, steps_per_epoch : int or None
        Training schedule of that model; default: the config's.
    return_n2v : bool
        Also return the N2V model (a denoiser in its own right).
    axes : str or None
        Axes of ``images`` in any order, e.g. ``'SYXC'``, ``'CYX'``, ``'SZCYX'``: the spatial axes
        of the model (of ``n2v_model``, or of ``config_kwargs['axes']``; else 3-D when ``axes``
        has Z), batch axes S or T (and Z of a 2-D model), and a channel axis C. Default: the layouts
        above.
    **fit_kwargs
        Passed to the noise model's constructor method (e.g. ``n_gaussians``, ``n_coeff``,
        ``saturation`` for a GMM; ``bins``, ``value_range`` for a histogram), for every channel.

    Returns
    -------
    NoiseModel or (NoiseModel, PN2V)
        A :class:`ChannelNoiseModels` of one model per channel for multichannel images.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if n2v_model is not None and (not isinstance(n2v_model, PN2V) or n2v_model.config.mode == "pn2v"):
        raise ValueError("n2v_model must be a PN2V model of mode 'n2v' or 'care' (its predictions are the signal)")
    n_dim, n_channels = _layout(images, n2v_model, config_kwargs, axes)
    images, n_channels = _as_stack(images, n_dim, axes, n_channels)
    model_axes = spatial_axes(n_dim) + ("C" if n_channels > 1 else "")
    if n2v_model is None:
        n2v_model = train_n2v(images, {**(config_kwargs or {}), "axes": model_axes}, epochs, steps_per_epoch)
    signal = n2v_model.predict(images, axes="S" + model_axes)
    if n_channels == 1:
        noise_model = _fit(kind, signal, images, fit_kwargs)
    else:
        noise_model = ChannelNoiseModels([_fit(kind, signal[..., c], images[..., c], fit_kwargs)
                                          for c in range(n_channels)])
    return (noise_model, n2v_model) if return_n2v else noise_model


def _fit(kind, signal, observation, fit_kwargs):
    if kind == "gmm":
        return GMMNoiseModel.fit(signal, observation, **fit_kwargs)
    return HistogramNoiseModel.from_pairs(signal, observation, **fit_kwargs)


def train_n2v(images, config_kwargs=None, epochs=None, steps_per_epoch=None):
    """Train an in-memory N2V model on noisy images (SYX, or SZYX with ``axes='ZYX'`` in ``config_kwargs``;
    SYXC or SZYXC with ``'YXC'`` or ``'ZYXC'``), holding out validation data with
    :func:`pn2v_tf.data.split_validation`."""
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
    train, validation = split_validation(images, min_rows=config.n2v_patch_shape[-2], n_channels=config.n_channels)
    config = PN2VConfig(train, mode="n2v", **config_kwargs)
    model = PN2V(config, name="bootstrap_n2v", basedir=None)
    model.train(train, validation, epochs=epochs, steps_per_epoch=steps_per_epoch)
    return model


def _layout(images, n2v_model, config_kwargs, axes):
    """(n_dim, n_channels) of the N2V model. Both are ``n2v_model``'s when it is given. Otherwise
    n_dim follows from ``config_kwargs['axes']`` (else from ``axes``: 3 with Z), and n_channels is
    the images' last axis when the config's axes have C and ``axes`` is None; ``None`` means: from
    ``axes`` when given, else one."""
    if n2v_model is not None:
        return n2v_model.config.n_dim, n2v_model.config.n_channels
    config_axes = (config_kwargs or {}).get("axes")
    if config_axes is not None:
        channels_last = axes is None and "C" in str(config_axes).upper()
        return spatial_dims(config_axes), (np.shape(images)[-1] if channels_last and np.ndim(images) else None)
    return (3 if axes is not None and "Z" in axes.upper() else 2), None


def _as_stack(images, n_dim, axes=None, n_channels=None):
    """(stack, n_channels): the images as a float32 stack (S, *spatial), or (S, *spatial, C) when they
    have several channels; with ``axes`` from any layout, else S + spatial (S may be missing) with C
    last when ``n_channels`` is more than 1."""
    images = np.asarray(images)
    if axes is not None:
        return _stack_from_axes(images, axes, n_dim, n_channels)
    if n_channels is None or n_channels == 1:
        return as_image_stack(images[np.newaxis] if images.ndim == n_dim else images, n_dim, "images"), 1
    single = images.ndim == n_dim + 1
    return as_image_stack(images[np.newaxis] if single else images, n_dim, "images", n_channels=n_channels), n_channels


def _stack_from_axes(images, axes, n_dim, n_channels):
    """(stack, channels) of images with ``axes``; ``n_channels`` (``n2v_model``'s, or None) must match."""
    axes = axes_check_and_normalize(axes, images.ndim)
    found = images.shape[axes.index("C")] if "C" in axes else 1
    if n_channels is not None and found != n_channels:
        raise ValueError(f"images have {found} channel{'s' * (found != 1)} (axes {axes!r}), n2v_model takes "
                         f"{n_channels}")
    stack, _ = stack_from_axes(images, axes, n_dim, n_channels=found if found > 1 else None)
    return stack, found
