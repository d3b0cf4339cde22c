"""Configuration of a PN2V model: network, prior samples, masking and training schedule."""

import numpy as np
from csbdeep.models import BaseConfig

from ._checks import DTYPE_POLICIES
from ._checks import is_int as _is_int
from ._checks import is_number as _is_number
from .arrays import SPATIAL_AXES, as_image_stack, is_chunked, spatial_dims
from .masking import MANIPULATORS, check_struct_mask

MODES = ("pn2v", "n2v", "care")


class PN2VConfig(BaseConfig):
    """Configuration of a :class:`pn2v_tf.PN2V` model.

    Parameter names follow n2v's ``N2VConfig`` where the two overlap.

    Parameters
    ----------
    X : numpy.ndarray or None
        Training images, axes ``S`` + ``axes``: ``SYX`` for a 2-D model or ``SZYX`` for a 3-D one,
        each optionally with a last channel axis of size 1; ``SYXC`` or ``SZYXC`` (channel last) for
        a multichannel model (``axes`` with ``C``), whose number of channels is X's last axis. The
        mean and standard deviation of each channel become the model's normalisation (``means``,
        ``stds``). ``None`` when a configuration is loaded from ``config.json`` (then ``means``,
        ``stds`` and ``n_channel_in`` must be given as keywords).
    mode : str
        Training objective: ``'pn2v'`` (the paper's Eq. 7, needs a noise model), ``'n2v'`` (masked
        MSE with one output, the paper's "U-Net (N2V)") or ``'care'`` (supervised MSE against clean
        targets, the paper's "U-Net (trad.)"). All three use the same network and pipeline.
    kwargs : dict
        Overwrite any attribute listed below.

    Attributes
    ----------
    axes : str
        Axes of one image, as in CSBDeep: ``'YX'`` (default) makes a 2-D model, ``'ZYX'`` a 3-D one
        (a U-Net of 3-D convolutions on z-stacks); ``'YXC'`` and ``'ZYXC'`` make multichannel models
        (``n_channel_in`` channels, from X). ``n_dim`` (2 or 3) follows from it; ``'C'`` is appended
        when it is missing (one channel).
    n_channel_in, n_channel_out : int
        Number of channels (both equal). Each channel is denoised with its own noise model and
        normalisation; blind spots are drawn per channel.
    single_net_per_channel : bool
        ``True``: an independent U-Net per channel (n2v's option of this name and its default), C
        times the cost of one channel's network. ``False``: one U-Net sees all channels and its head
        predicts K samples of each, at little more than one channel's cost. Default: True (on
        channels with different structures it denoised better at equal training time; BENCHMARKS.md).
        A config.json without the key loads with False.
    n_samples : int
        Number K of prior samples the network predicts per pixel in mode ``'pn2v'``. Default: 800.
        Modes ``'n2v'`` and ``'care'`` predict one value.
    samples_init_spread : float or None
        How the K samples start. A number > 0: one shared Glorot-uniform column plus this times an
        independent Glorot-uniform kernel, so that the samples start as near copies of one
        prediction (:class:`pn2v_tf.nets.SampleHeadInitializer`). ``None``: the head's K columns are
        independent (Glorot-uniform over all of them), as in the PN2V reference. Default: 0.01.
    samples_output_scale : float
        Mode ``'pn2v'``: the head's outputs are multiplied by this (> 0) before they are taken out
        of the network's normalised units; the PN2V reference uses 10 (with independent columns),
        so that the samples start spread over the data and the optimiser moves them ten times
        faster. Default: 1.0.
    unet_n_depth : int
        Number of resolution levels of the U-Net, as in the PN2V reference (3 = two 2x
        downsamplings). Default: 3.
    unet_n_first : int
        Feature channels of the first level, doubled at each level below. Default: 64.
    unet_kern_size : int
        Convolution kernel size (odd), the same along every axis. Default: 3.
    unet_pool : tuple of int
        Pooling factor per axis (Y, X) or (Z, Y, X), each >= 1; e.g. ``(1, 2, 2)`` keeps the full
        z resolution at every level, for thin stacks or a z step several times the pixel size.
        Default: 2 along every axis.
    blurpool : bool
        N2V2's max-blur pooling (:class:`pn2v_tf.nets.MaxBlurPool`) instead of max pooling, in 2-D
        and 3-D. With ``skip_skipone`` and ``n2v_manipulator='median'`` it removes the checkerboard
        artefacts of blind-spot networks. Default: False.
    skip_skipone : bool
        N2V2: no skip connection at the top (full-resolution) level of the U-Net. Default: False.
    unet_upsampling : str
        How the U-Net goes up a level: ``'transpose'``, a transposed convolution (the PN2V
        reference's), or ``'nearest'``, a copy of each pixel into ``unet_pool`` pixels and a
        convolution (CSBDeep's and n2v's U-Net). Default: ``'nearest'`` with ``skip_skipone`` (a
        transposed convolution gives each pixel of a p x p block its own weights, a period-p pattern
        that the top level's skip connection no longer offsets), else ``'transpose'``.
    batch_norm : bool
        Batch normalisation between each convolution and its ReLU (n2v's default). Default: False.
    unet_dtype_policy : str
        Keras dtype policy of the U-Net body's layers: ``'float32'`` (default) or ``'mixed_bfloat16'``,
        which computes the body's convolutions in bfloat16 with float32 weights (several times faster
        on GPUs and on CPUs with bfloat16 matrix units, e.g. Intel AMX). The normalisation, the head,
        the noise model and the loss stay float32 in either case. Prediction may use another policy
        (``predict(..., dtype_policy=...)``).
    unet_residual : bool
        Modes ``'n2v'`` and ``'care'``: the network predicts the difference to its input (in normalised
        units), as n2v's and CSBDeep's option of this name. Default: False.
    n2v_patch_shape : tuple of int
        Training patch shape (Y, X) or (Z, Y, X); each side a multiple of
        ``unet_pool**(unet_n_depth-1)`` along its axis (the network's block) and larger than
        ``n2v_neighborhood_radius``. Default: (64, 64) in 2-D, (16, 64, 64) in 3-D.
    n2v_perc_pix : float
        Percentage of pixels (voxels) masked per patch, placed on a stratified grid. Default: 3.0.
    n2v_neighborhood_radius : int
        Masked pixels take their replacement from the other pixels within this Chebyshev radius along
        every axis (2 = 5x5 neighbourhood, 5x5x5 in 3-D). Default: 2.
    n2v_manipulator : str
        The replacement: ``'uniform_withoutCP'``, the value of a random other pixel (Noise2Void,
        default), or ``'median'``, the median of the neighbourhood without the pixel itself (N2V2).
    structN2Vmask : list or None
        structN2V's structuring element: a nested list of 0 and 1, 2-D (or 3-D for a 3-D model) with
        odd sides, centred on each blind spot; the pixels marked 1 are hidden with it (they get the
        values of random pixels of the patch, and the blind spot's replacement comes from outside
        it), so that noise correlated along rows or columns (sCMOS, line scanning) cannot be
        learned. E.g. ``[[0, 1, 1, 1, 1, 1, 0]]`` for noise correlated along X. Flips and rotations
        that change the element are left out of the augmentation. Modes ``'n2v'`` and ``'pn2v'``;
        for PN2V the noise model still describes each pixel's own noise, p(x_i | s_i), and the
        loss assumes that, given the signal, a pixel's noise is independent of the pixels the
        network sees, i.e. that the element covers the whole correlation. Default: None.
    means, stds : list of float
        Normalisation of the network input, per channel (mean and standard deviation of ``X``).
    train_epochs : int
        Default: 200.
    train_steps_per_epoch : int
        Default: 100.
    train_batch_size : int
        Default: 16.
    train_learning_rate : float
        Adam learning rate. Default: 4e-4.
    train_loss : str
        Modes ``'n2v'`` and ``'care'``: ``'mse'`` (default) or ``'mae'``, in normalised units. Mode
        ``'pn2v'`` trains on its likelihood.
    train_mean_weight : float
        Mode ``'pn2v'``: weight (>= 0) of N2V's squared error of the samples' mean, added to the
        likelihood loss (:class:`pn2v_tf.losses.PN2VLoss`): it moves every sample, also those the
        likelihood does not see yet, towards the prior mean, which the true prior also has. 0: the
        paper's loss alone. Default: 1 (with ``train_decouple_mean``, the error is in units of the
        noise's variance: weight 0.5 would pull the mean at the likelihood's own scale, 1 twice as hard).
    train_decouple_mean : bool
        Mode ``'pn2v'`` with ``train_mean_weight > 0``: the samples' mean learns from that squared
        error alone, as N2V's output does, and the likelihood only shapes the samples about their
        mean (``PN2VLoss(decouple_mean=True)``; the error is then in units of the noise's
        variance, which gives it the likelihood's scale). The prior mean then keeps up with
        N2V's output; the likelihood's weighting of pixels by their noise, which some images reward
        with a better mean, is given up (README, "Details worth knowing"). Default: True.
    train_calibrate_spread : bool
        Mode ``'pn2v'``: after training, move each channel's prior samples towards their mean by the
        smallest factor (1 to 1/16) under which the validation images, predicted as ``predict`` sees
        them, are as likely as under the likeliest factor within one standard error (the evidence
        read under a histogram noise model smoothed by one bin along lines of constant x - s;
        :mod:`pn2v_tf.calibration`, :meth:`pn2v_tf.PN2V.calibrate_spread`).
        Default: True.
    train_ema_momentum : float
        In [0, 1): validation, the checkpoints and the trained model use an exponential moving average
        of the weights over the optimiser's steps with this momentum (:mod:`pn2v_tf.averaging`;
        0.99 averages about the last 100 steps); 0 uses the weights as they are. Default: 0.99 in
        mode ``'pn2v'``, whose validation loss hardly sees the steps' noise in the samples' mean, and
        0 in modes ``'n2v'`` and ``'care'``, whose validation loss (the squared error) picks a good
        epoch without it.
    train_reduce_lr : dict or None
        Arguments of ``keras.callbacks.ReduceLROnPlateau`` on the validation loss; ``None`` disables it.
        Default: ``{'factor': 0.5, 'patience': 10}``.
    train_tensorboard : bool
        Write TensorBoard logs to ``<model folder>/logs`` when the ``tensorboard`` package is
        installed. Default: True.
    train_n_val_patches : int
        Number of fixed validation patches. Default: 64.
    seed : int or None
        Seed of patch sampling and masking. Default: None.

    Example
    -------
    >>> config = PN2VConfig(X, mode='pn2v', n_samples=800, n2v_patch_shape=(64, 64))
    >>> config_3d = PN2VConfig(X_zyx, axes='ZYX', n2v_patch_shape=(16, 64, 64), unet_pool=(1, 2, 2))
    >>> config_rgb = PN2VConfig(X_yxc, axes='YXC')  # X_yxc: (S, Y, X, C)
    """

    def __init__(self, X=None, mode="pn2v", **kwargs):
        axes = kwargs.pop("axes", "YX")
        n_dim = spatial_dims(axes)
        base = _pop_base_keys(kwargs)
        if X is not None:
            X = _training_images(X, axes, n_dim if n_dim in SPATIAL_AXES else 2)
            base["n_channel_in"] = X.shape[-1]
            means, stds = ([float(v) for v in values] for values in _channel_moments(X))
        else:
            n_channels = base.get("n_channel_in", 1)
            means, stds = [0.0] * n_channels, [1.0] * n_channels
        base.setdefault("n_channel_in", 1)
        base["n_channel_out"] = base["n_channel_in"]
        super().__init__(axes=axes, allow_new_parameters=False, **base)

        self.mode = mode
        self.n_samples = 800
        self.samples_init_spread = 0.01
        self.samples_output_scale = 1.0
        self.unet_n_depth = 3
        self.unet_n_first = 64
        self.unet_kern_size = 3
        self.unet_pool = (2,) * n_dim
        self.n2v_patch_shape = (64, 64) if n_dim == 2 else (16,) + (64,) * (n_dim - 1)
        self.n2v_perc_pix = 3.0
        self.n2v_neighborhood_radius = 2
        self.n2v_manipulator = "uniform_withoutCP"
        self.structN2Vmask = None
        self.blurpool = False
        self.skip_skipone = False
        self.batch_norm = False
        self.unet_residual = False
        self.unet_upsampling = None
        self.unet_dtype_policy = "float32"
        self.means = means
        self.stds = stds
        self.train_epochs = 200
        self.train_steps_per_epoch = 100
        self.train_batch_size = 16
        self.train_learning_rate = 4e-4
        self.train_loss = "mse"
        self.train_mean_weight = 1.0
        self.train_decouple_mean = True
        self.train_calibrate_spread = True
        self.train_ema_momentum = None
        self.train_reduce_lr = {"factor": 0.5, "patience": 10}
        self.train_tensorboard = True
        self.train_n_val_patches = 64
        self.seed = None
        self.single_net_per_channel = True
        self.update_parameters(False, **kwargs)
        for name in ("n2v_patch_shape", "unet_pool"):
            if isinstance(getattr(self, name), list):
                setattr(self, name, tuple(getattr(self, name)))
        if self.train_ema_momentum is None:
            self.train_ema_momentum = 0.99 if self.mode == "pn2v" else 0.0
        if self.unet_upsampling is None:
            self.unet_upsampling = "nearest" if self.skip_skipone is True else "transpose"
        if isinstance(self.structN2Vmask, np.ndarray):
            self.structN2Vmask = self.structN2Vmask.tolist()

    @classmethod
    def update_loaded_config(cls, config):
        """A loaded config.json with the keys it lacks (written before they existed) set to the values
        its model was trained with, where those differ from today's defaults (``train_mean_weight=0``,
        ``train_decouple_mean=False``, ``train_ema_momentum=0``, ``single_net_per_channel=False``)."""
        return {**_LEGACY_VALUES, **super().update_loaded_config(config)}

    @property
    def n_outputs(self):
        """Number of network outputs per pixel and channel: K for ``'pn2v'``, 1 otherwise."""
        return self.n_samples if self.mode == "pn2v" else 1

    @property
    def n_channels(self):
        """Number of image channels (``n_channel_in``)."""
        return int(self.n_channel_in)

    def is_valid(self, return_invalid=False):
        """Check every attribute; with ``return_invalid`` also return the names of invalid ones."""
        checks = {
            "mode": self.mode in MODES,
            "n_dim": self.n_dim in SPATIAL_AXES,
            "axes": self.axes in ("YXC", "ZYXC"),
            "n_samples": _is_int(self.n_samples, 1),
            "samples_init_spread": self.samples_init_spread is None or _is_number(self.samples_init_spread, 0,
                                                                                  low_inclusive=False),
            "samples_output_scale": _is_number(self.samples_output_scale, 0, low_inclusive=False),
            "unet_n_depth": _is_int(self.unet_n_depth, 1),
            "unet_n_first": _is_int(self.unet_n_first, 1),
            "unet_kern_size": _is_int(self.unet_kern_size, 1) and self.unet_kern_size % 2 == 1,
            "unet_pool": self._per_axis(self.unet_pool),
            "n2v_patch_shape": self._patch_shape_ok(),
            "n2v_perc_pix": _is_number(self.n2v_perc_pix, 0, low_inclusive=False) and self.n2v_perc_pix <= 100,
            "n2v_neighborhood_radius": _is_int(self.n2v_neighborhood_radius, 1),
            "n2v_manipulator": self.n2v_manipulator in MANIPULATORS,
            "structN2Vmask": self._struct_mask_ok(),
            "blurpool": isinstance(self.blurpool, bool),
            "skip_skipone": isinstance(self.skip_skipone, bool),
            "batch_norm": isinstance(self.batch_norm, bool),
            "unet_residual": isinstance(self.unet_residual, bool) and not (self.unet_residual and self.mode == "pn2v"),
            "unet_upsampling": self.unet_upsampling in ("transpose", "nearest"),
            "unet_dtype_policy": self.unet_dtype_policy in DTYPE_POLICIES,
            "train_loss": self.train_loss in ("mse", "mae"),
            "train_mean_weight": _is_number(self.train_mean_weight, 0),
            "train_decouple_mean": isinstance(self.train_decouple_mean, bool),
            "train_calibrate_spread": isinstance(self.train_calibrate_spread, bool),
            "train_ema_momentum": _is_number(self.train_ema_momentum, 0) and self.train_ema_momentum < 1,
            "n_channel_in": _is_int(self.n_channel_in, 1),
            "n_channel_out": self.n_channel_out == self.n_channel_in,
            "single_net_per_channel": isinstance(self.single_net_per_channel, bool),
            "means": _numbers_list(self.means, self.n_channel_in),
            "stds": _numbers_list(self.stds, self.n_channel_in) and all(s > 0 for s in self.stds),
            "train_epochs": _is_int(self.train_epochs, 1),
            "train_steps_per_epoch": _is_int(self.train_steps_per_epoch, 1),
            "train_batch_size": _is_int(self.train_batch_size, 1),
            "train_learning_rate": _is_number(self.train_learning_rate, 0, low_inclusive=False),
            "train_reduce_lr": self.train_reduce_lr is None or isinstance(self.train_reduce_lr, dict),
            "train_tensorboard": isinstance(self.train_tensorboard, bool),
            "train_n_val_patches": _is_int(self.train_n_val_patches, 1),
            "seed": self.seed is None or _is_int(self.seed, 0),
        }
        invalid = tuple(name for name, ok in checks.items() if not ok)
        return (len(invalid) == 0, invalid) if return_invalid else len(invalid) == 0

    @property
    def block_shape(self):
        """Image sides must be multiples of this along each axis (one pixel at the coarsest level)."""
        return tuple(int(p) ** (self.unet_n_depth - 1) for p in self.unet_pool)

    def _per_axis(self, values):
        return isinstance(values, (tuple, list)) and len(values) == self.n_dim and all(_is_int(v, 1) for v in values)

    def _struct_mask_ok(self):
        if self.structN2Vmask is None:
            return True
        try:
            mask = check_struct_mask(self.structN2Vmask, self.n_dim)
        except ValueError:
            return False
        return self.mode != "care" and (not self._per_axis(self.n2v_patch_shape)
                                        or all(m <= s for m, s in zip(mask.shape, self.n2v_patch_shape)))

    def _patch_shape_ok(self):
        shape = self.n2v_patch_shape
        if not self._per_axis(shape):
            return False
        if not (_is_int(self.unet_n_depth, 1) and _is_int(self.n2v_neighborhood_radius, 1)
                and self._per_axis(self.unet_pool)):
            return True  # reported under those names
        return all(s % b == 0 and s > self.n2v_neighborhood_radius for s, b in zip(shape, self.block_shape))


def _numbers_list(values, length):
    return isinstance(values, (list, tuple)) and len(values) == length and all(_is_number(v) for v in values)


def _channel_moments(X):
    """Mean and standard deviation of each channel of (S, *spatial, C) images, in one pass over the
    chunks of a chunked array."""
    axes = tuple(range(X.ndim - 1))
    if is_chunked(X):
        import dask

        return dask.compute(X.mean(axis=axes), X.std(axis=axes))
    return np.mean(X, axis=axes), np.std(X, axis=axes)


def _training_images(X, axes, n_dim):
    """X as (S, *spatial, C): channels from its last axis when ``axes`` has C, else one."""
    X = X if is_chunked(X) else np.asarray(X)
    if isinstance(axes, str) and "C" in axes.upper():
        n_channels = X.shape[-1] if X.ndim == n_dim + 2 else 1
        return as_image_stack(X, n_dim, "X", n_channels=n_channels)
    if X.ndim == n_dim + 2 and X.shape[-1] > 1:
        spatial = SPATIAL_AXES[n_dim]
        raise ValueError(f"X has shape {X.shape}: {X.shape[-1]} channels need axes='{spatial}C' "
                         f"(X with axes S{spatial}C)")
    return as_image_stack(X, n_dim, "X")[..., np.newaxis]


#: Values a config.json written before the key existed was trained with (its defaults then differ from today's).
_LEGACY_VALUES = {"train_mean_weight": 0.0, "train_decouple_mean": False, "train_ema_momentum": 0.0,
                  "single_net_per_channel": False}


def _pop_base_keys(kwargs):
    """Attributes that BaseConfig sets itself (present in a loaded config.json)."""
    base = {}
    for key in ("n_dim", "n_channel_in", "n_channel_out", "train_checkpoint",
                "train_checkpoint_last", "train_checkpoint_epoch"):
        if key in kwargs:
            base[key] = kwargs.pop(key)
    return base
