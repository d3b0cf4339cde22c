"""The PN2V model: a CSBDeep ``BaseModel`` that trains and predicts with one of three objectives."""

import importlib.util
import os
import warnings
from pathlib import Path

import keras
import numpy as np
from csbdeep.models import BaseModel

from ._checks import is_int
from .arrays import as_image_stack, channel_extremes, is_chunked, spatial_axes, stack_from_axes
from .calibration import (EVIDENCE_SMOOTHING_BINS, SPREAD_FACTORS, SpreadEvidence, SpreadRisk, best_spread_factors,
                          calibration_message, evidence_noise_model, scale_head_spread)
from .config import PN2VConfig
from .data import _DIHEDRAL, MaskedPatches, SupervisedPatches, _dihedral, random_patches, undo_dihedral
from .averaging import WeightAveraging
from .engine import PredictionEngine
from .inference import DEFAULT_MAX_TILE_ELEMENTS, auto_n_tiles, count_tiles, predict_tiled, tile_context
from .io import atomic_path
from .losses import PN2VLoss, ScaledMAE, ScaledMSE
from .nets import build_networks, network_geometry
from .noise_models import ChannelNoiseModels, NoiseModel, load_noise_model, per_channel_noise_model

NOISE_MODEL_FILE = "noise_model.npz"
#: A crop of the first validation image, written by ``train``: the default test input of ``export_TF``
#: (this many pixels a side, or the smallest size a package takes if that is larger).
EXAMPLE_INPUT_FILE = "example_input.tif"
EXAMPLE_INPUT_SIDE = 256
#: Validation pixels at most whose likelihood calibrates the prior's spread after training.
CALIBRATION_PIXELS = 2 ** 17
#: Samples (patch pixels x K) the network returns per call while calibrating.
CALIBRATION_BATCH_ELEMENTS = 2 ** 24
_NEEDS_NOISE_MODEL = ("mode 'pn2v' needs a noise model: pass noise_model=... "
                      "(e.g. HistogramNoiseModel.from_calibration_stack(stack))")


class PN2V(BaseModel):
    """Probabilistic Noise2Void (and its N2V and CARE baselines) in CSBDeep style.

    Parameters
    ----------
    config : PN2VConfig or None
        Configuration of a new model, or ``None`` to load the model ``basedir/name``.
    name : str or None
        Model name; a timestamp if ``None``.
    basedir : str or None
        Folder holding the model folder ``name``; ``None`` keeps everything in memory.
    noise_model : NoiseModel or str or list or None
        Noise model p(x|s) (or a path to its file) for mode ``'pn2v'``. For a multichannel model,
        a list of one per channel (histogram, GMM, or a mix), or one that is applied to every
        channel. It is saved into the model folder and loaded from there with the model.
    overwrite : bool
        Allow a new model to replace an existing model folder's configuration and weights.

    Examples
    --------
    >>> model = PN2V(PN2VConfig(X), 'my_model', basedir='models', noise_model=nm)
    >>> model.train(X, X_val)
    >>> denoised = PN2V(None, 'my_model', basedir='models').predict(img, axes='YX')
    """

    def __init__(self, config, name=None, basedir=".", noise_model=None, overwrite=False):
        if config is not None and basedir is not None and name is not None and not overwrite:
            existing = Path(basedir) / name / "config.json"
            if existing.exists():
                raise FileExistsError(
                    f"a model exists in {existing.parent}; choose another name or pass overwrite=True")
        noise_model = _read_noise_models(noise_model)
        if config is not None and getattr(config, "mode", None) == "pn2v" and noise_model is None:
            raise ValueError(_NEEDS_NOISE_MODEL)
        self._loading = config is None
        self._engines = {}
        self._noise_model = noise_model
        #: The factors of the last calibration of the prior's spread in this session (``None``: none).
        self.spread_factors = None
        if (isinstance(config, PN2VConfig) and config.is_valid() and basedir is not None and name is not None
                and overwrite):
            _remove_model_files(Path(basedir) / name)
        with warnings.catch_warnings():
            if overwrite:  # asked for: CSBDeep's warning that files may be overwritten says nothing new
                warnings.filterwarnings("ignore", message="output path for model already exists")
            super().__init__(config, name=name, basedir=basedir)

    @property
    def noise_model(self):
        """The noise model p(x|s) used by the loss and the MMSE (``None`` for modes 'n2v', 'care')."""
        return self._noise_model

    @noise_model.setter
    def noise_model(self, noise_model):
        self._noise_model = per_channel_noise_model(_read_noise_models(noise_model), self.config.n_channels)
        self._engines = {}
        self._model_prepared = False

    @property
    def _config_class(self):
        return PN2VConfig

    # -- building ----------------------------------------------------------------------------
    def _build(self):
        self._attach_noise_model()
        self.keras_model_masked = None
        prediction, masked = build_networks(self.config)
        if self.config.mode != "care":
            self.keras_model_masked = masked
        return prediction

    def _attach_noise_model(self):
        """Save the given noise model with a new model; load the stored one with a loaded model."""
        self._noise_model = per_channel_noise_model(self._noise_model, self.config.n_channels)
        if (not self._loading and self.config.n_channels > 1 and self._noise_model is not None
                and not isinstance(self._noise_model, ChannelNoiseModels)):
            warnings.warn(f"one noise model for {self.config.n_channels} channels: it is applied to each channel "
                          "(give a list of one per channel if their noise differs)")
        stored = None if self.basedir is None else self.logdir / NOISE_MODEL_FILE
        if stored is None:
            pass
        elif not self._loading and self._noise_model is not None:
            self._noise_model.save(stored)
        elif self._loading and self._noise_model is not None:
            warnings.warn(f"using the given noise model instead of the one stored in {self.logdir} "
                          "(the stored file is left as it is)")
        elif self._loading and stored.exists():
            self._noise_model = load_noise_model(stored)
        if self.config.mode == "pn2v" and self.noise_model is None:
            raise ValueError(_NEEDS_NOISE_MODEL if not self._loading else
                             f"the model in {self.logdir} has mode 'pn2v' but no {NOISE_MODEL_FILE}")

    @property
    def _training_model(self):
        return self.keras_model if self.config.mode == "care" else self.keras_model_masked

    def _loss(self):
        if self.config.mode == "pn2v":
            return PN2VLoss(self.noise_model, self.config.train_mean_weight, self.config.stds,
                            decouple_mean=self.config.train_decouple_mean)
        return (ScaledMAE if self.config.train_loss == "mae" else ScaledMSE)(self.config.stds)

    # -- training ----------------------------------------------------------------------------
    def prepare_for_training(self, optimizer=None):
        """Compile the training graph and set up the callbacks.

        Parameters
        ----------
        optimizer : keras.optimizers.Optimizer or None
            Default: Adam with ``config.train_learning_rate``.
        """
        if optimizer is None:
            optimizer = keras.optimizers.Adam(learning_rate=self.config.train_learning_rate)
        self._training_model.compile(optimizer=optimizer, loss=self._loss())
        self.callbacks = [keras.callbacks.TerminateOnNaN()]
        if self.config.train_reduce_lr is not None:
            self.callbacks.insert(0, keras.callbacks.ReduceLROnPlateau(
                **{"monitor": "val_loss", "verbose": 1, **self.config.train_reduce_lr}))
        if self.config.train_ema_momentum > 0:  # first: the callbacks after it see the averaged weights
            self.callbacks.insert(0, WeightAveraging(self.config.train_ema_momentum))
        if self.basedir is not None:
            self.callbacks += self._checkpoint_callbacks()
            if self.config.train_tensorboard:
                self.callbacks += _tensorboard_callbacks(self.logdir / "logs")
        self._model_prepared = True

    def _checkpoint_callbacks(self):
        save = self.keras_model.save_weights
        callbacks = []
        if self.config.train_checkpoint is not None:
            callbacks.append(_SaveWeights(save, self.logdir / self.config.train_checkpoint, best_only=True))
        if self.config.train_checkpoint_epoch is not None:
            callbacks.append(_SaveWeights(save, self.logdir / self.config.train_checkpoint_epoch, best_only=False))
        return callbacks

    def train(self, X, validation_X=None, Y=None, validation_Y=None, epochs=None, steps_per_epoch=None,
              initial_epoch=0, callbacks=None, verbose=1, validation_data=None):
        """Train the network.

        Parameters
        ----------
        X : numpy.ndarray or chunked array
            Noisy training images, axes SYX for a 2-D model, SZYX for a 3-D one (each optionally
            with a last channel axis of size 1); SYXC or SZYXC for a multichannel model. A zarr or
            Dask array (or an HDF5 dataset, a memory map) is not loaded: its values are checked in
            one pass over its chunks, and each batch reads the chunks its patches touch.
        validation_X : numpy.ndarray or chunked array
            Noisy validation images, same axes; a fixed set of masked patches is drawn from them.
        Y, validation_Y : numpy.ndarray or None
            Clean targets of the same shapes, for mode ``'care'`` only.
        epochs, steps_per_epoch : int or None
            Default: ``config.train_epochs`` and ``config.train_steps_per_epoch``.
        initial_epoch : int
            Epochs already done, to continue a training (:mod:`pn2v_tf.resume` restores the rest of
            its state): epochs ``initial_epoch`` to ``epochs - 1`` run, and the patch generator's
            epoch counter starts there. Default: 0.
        callbacks : list of keras.callbacks.Callback or None
            Run after the model's own (learning-rate schedule, NaN check, checkpoints).
        verbose : int
            Keras' progress output: 0 none, 1 a progress bar, 2 one line per epoch. Default: 1.
        validation_data : tuple or numpy.ndarray or None
            CSBDeep's way of giving the validation data: ``train(X, Y, validation_data=(X_val,
            Y_val))`` for mode ``'care'`` (the second argument is then the targets),
            ``train(X, validation_data=X_val)`` for the others.

        Returns
        -------
        keras.callbacks.History

        Notes
        -----
        As in CSBDeep, ``weights_best.h5`` keeps the lowest validation loss this model object has
        seen, also across several ``train`` calls, and those weights are loaded after training;
        ``weights_last.h5`` holds the weights of the last epoch.
        """
        cfg = self.config
        if validation_data is not None:
            X, validation_X, Y, validation_Y = _csbdeep_arguments(cfg.mode, X, validation_X, Y, validation_Y,
                                                                  validation_data)
        if validation_X is None:
            raise ValueError("train needs validation images: train(X, X_val), or train(X, Y, validation_data=(X_val, "
                             "Y_val)) for mode 'care'")
        X, validation_X = (as_image_stack(images, cfg.n_dim, name, n_channels=cfg.n_channels) for images, name in
                           ((X, "X"), (validation_X, "validation_X")))
        if cfg.mode == "care":
            if Y is None or validation_Y is None:
                raise ValueError("mode 'care' needs clean targets Y and validation_Y")
            Y, validation_Y = (as_image_stack(images, cfg.n_dim, name, n_channels=cfg.n_channels)
                               for images, name in ((Y, "Y"), (validation_Y, "validation_Y")))
            _check_same_shape(X, Y, "X", "Y")
            _check_same_shape(validation_X, validation_Y, "validation_X", "validation_Y")
        elif Y is not None or validation_Y is not None:
            raise ValueError(f"mode {cfg.mode!r} trains on noisy images only; Y is for mode 'care'")
        if self.noise_model is not None and cfg.mode == "pn2v":
            for images, name in ((X, "training data"), (validation_X, "validation data")):
                self.noise_model.check_range(_range_values(images, cfg.n_channels), name)
        epochs = cfg.train_epochs if epochs is None else epochs
        steps_per_epoch = cfg.train_steps_per_epoch if steps_per_epoch is None else steps_per_epoch
        if not is_int(initial_epoch, 0) or not is_int(epochs, 1) or initial_epoch >= epochs:
            raise ValueError(f"initial_epoch must be an integer in [0, epochs={epochs!r}), got {initial_epoch!r}")
        train_data, validation_data = self._datasets(X, validation_X, Y, validation_Y, steps_per_epoch)
        train_data.epoch = initial_epoch
        self._save_example_input(validation_X[0])
        if not self._model_prepared:
            self.prepare_for_training()
        history = self._training_model.fit(train_data, validation_data=validation_data, epochs=epochs,
                                           initial_epoch=initial_epoch,
                                           callbacks=self.callbacks + list(callbacks or []), verbose=verbose)
        if not _all_weights_finite(self.keras_model) or not np.isfinite(history.history["loss"][-1]):
            self._training_diverged()
        self._training_finished()
        if cfg.mode == "pn2v" and cfg.train_calibrate_spread:
            factors = self._calibrate_spread(validation_X)
            if verbose:
                print(calibration_message(factors))
        return history

    def calibrate_spread(self, validation_X):
        """Move each channel's prior samples towards their mean by the smallest factor (1 to 1/16)
        under which ``validation_X``, as ``predict`` sees it, is within one standard error as likely as
        under the likeliest factor, the evidence read under a histogram noise model smoothed by one bin
        along lines of constant ``x - s`` (:mod:`pn2v_tf.calibration`).

        The factor multiplies every sample's distance from the samples' mean, so the prior mean stays
        as it is and the MMSE moves towards it. The head's weights change; with a model folder the
        weights a reload reads (``weights_best.h5``, else ``weights_last.h5``) are rewritten with
        them. ``train`` does this itself when ``config.train_calibrate_spread`` is set (the default),
        and a later ``train`` call continues from the calibrated weights. Each call applies the rule to
        the spread as it is, so a second call on the same images can shrink it once more.

        Parameters
        ----------
        validation_X : numpy.ndarray
            Noisy validation images with the model's axes (as for ``train``); the likelihood is read
            at the central pixels of ``config.train_n_val_patches`` random patches of them.

        Returns
        -------
        numpy.ndarray (C,)
            The factor of each channel (1: the spread was already the likeliest).
        """
        cfg = self.config
        validation_X = self._calibration_images(validation_X, "calibrate_spread")
        self.noise_model.check_range(_range_values(validation_X, cfg.n_channels), "validation data")
        return self._calibrate_spread(validation_X)

    def spread_evidence(self, validation_X, factors=None, smoothing_bins=EVIDENCE_SMOOTHING_BINS):
        """The summed log evidence of the pixels that :meth:`calibrate_spread` reads, for each of
        ``factors`` (default: ``pn2v_tf.calibration.SPREAD_FACTORS``), without changing the model;
        under the noise model with a histogram smoothed by ``smoothing_bins`` bins along lines of
        constant ``x - s``, as the calibration sees it (``0``: the noise model itself).

        Returns
        -------
        pn2v_tf.calibration.SpreadEvidence
            ``totals`` (len(factors), C) and ``factors``.
        """
        images = self._calibration_images(validation_X, "spread_evidence")
        return self._spread_statistics(images, factors, smoothing_bins=smoothing_bins)[0]

    def spread_risk(self, validation_X, factors=None):
        """Stein's unbiased estimate of the MMSE's squared error, up to a constant, on the pixels that
        :meth:`calibrate_spread` reads, for each of ``factors`` (default:
        ``pn2v_tf.calibration.SPREAD_FACTORS``), without changing the model.

        Returns
        -------
        pn2v_tf.calibration.SpreadRisk
            ``totals`` (len(factors), C) and ``factors``.
        """
        images = self._calibration_images(validation_X, "spread_risk")
        return self._spread_statistics(images, factors, with_risk=True)[1]

    def _calibration_images(self, validation_X, method):
        cfg = self.config
        if cfg.mode != "pn2v":
            raise ValueError(f"{method} needs a model of mode 'pn2v', this one has mode {cfg.mode!r}")
        return as_image_stack(validation_X, cfg.n_dim, "validation_X", n_channels=cfg.n_channels)

    def _spread_statistics(self, validation_X, factors=None, with_risk=False, smoothing_bins=EVIDENCE_SMOOTHING_BINS):
        """(SpreadEvidence, SpreadRisk or None) of the same validation pixels: the central pixels of
        random patches, :func:`calibration_patches` of them, at most :data:`CALIBRATION_PIXELS` in all.
        The risk needs a second prediction of the patches (``with_risk``)."""
        cfg = self.config
        rng = np.random.default_rng(0 if cfg.seed is None else cfg.seed + 2)
        sign_rng = np.random.default_rng(0 if cfg.seed is None else cfg.seed + 3)
        patches = random_patches(rng, validation_X, cfg.n2v_patch_shape, calibration_patches(cfg))
        patches = patches.reshape(patches.shape[:1 + cfg.n_dim] + (cfg.n_channels,))
        centre = (slice(None),) + tuple(slice(size // 4, size - size // 4) for size in cfg.n2v_patch_shape)
        per_patch = -(-CALIBRATION_PIXELS // len(patches))
        factors = SPREAD_FACTORS if factors is None else factors
        evidence = SpreadEvidence(evidence_noise_model(self.noise_model, smoothing_bins), factors)
        risk = SpreadRisk(self.noise_model, factors) if with_risk else None
        signs = sign_rng.choice(np.array([-1.0, 1.0], np.float32), size=patches.shape) if with_risk else None
        by_pixel = (-1, cfg.n_channels, cfg.n_samples)
        # a few patches per network call, their samples added before the next call: memory stays bounded
        per_call = max(1, CALIBRATION_BATCH_ELEMENTS // (int(np.prod(patches.shape[1:])) * cfg.n_samples))
        for start in range(0, len(patches), per_call):
            group = patches[start:start + per_call]
            samples = self._central_samples(group, centre)
            if with_risk:
                moved_samples = self._central_samples(group + risk.steps * signs[start:start + per_call], centre)
            for index in range(len(group)):
                patch_samples = samples[index].reshape(by_pixel)
                observations = group[index][centre[1:]].reshape(-1, cfg.n_channels)
                keep = rng.permutation(len(patch_samples))[:per_patch]
                evidence.add(patch_samples[keep], observations[keep])
                if with_risk:
                    patch_signs = signs[start + index][centre[1:]].reshape(-1, cfg.n_channels)
                    risk.add(patch_samples[keep], moved_samples[index].reshape(by_pixel)[keep], observations[keep],
                             patch_signs[keep])
        return evidence, risk

    def _central_samples(self, patches, centre):
        """The network's samples of ``patches`` at ``centre`` (one call)."""
        return keras.ops.convert_to_numpy(self.keras_model(patches, training=False))[centre]

    def _calibrate_spread(self, validation_X):
        factors = best_spread_factors(self._spread_statistics(validation_X)[0])
        scale_head_spread(self.keras_model.get_layer("head"), factors)
        self.spread_factors = factors
        self._save_calibrated_weights()
        return factors

    def _save_calibrated_weights(self):
        if self.basedir is None:
            return
        for name in (self.config.train_checkpoint, self.config.train_checkpoint_last):
            if name is not None and (self.logdir / name).exists():
                _save_atomically(self.keras_model.save_weights, self.logdir / name)
                return

    def _save_example_input(self, image):
        """Keep a central crop of a raw validation image (*spatial, C), large enough for a package's
        test input (ImageJ axes: the spatial ones, with C before Y and X for several channels)."""
        if self.basedir is None:
            return
        import tifffile

        from .export import block_and_context

        block, context = block_and_context(self.config)
        sizes = [max(EXAMPLE_INPUT_SIDE, 2 * c + b) for c, b in zip(context, block)]
        crop = np.asarray(image[tuple(slice(max(0, (side - size) // 2), max(0, (side - size) // 2) + size)
                                      for side, size in zip(image.shape, sizes))])
        crop, axes = _imagej_layout(crop, self.config.n_dim)
        with atomic_path(self.logdir / EXAMPLE_INPUT_FILE) as tmp:
            tifffile.imwrite(tmp, crop, imagej=True, metadata={"axes": axes})

    def _training_diverged(self):
        """Restore the best saved weights (if any) and stop with a clear message."""
        best = None if self.basedir is None or self.config.train_checkpoint is None else \
            self.logdir / self.config.train_checkpoint
        if best is not None and best.exists():
            self.load_weights(self.config.train_checkpoint)
            kept = f"the best weights so far ({best}) are loaded"
        else:
            kept = "no finite weights were saved, so this model is unusable"
        if self.basedir is not None and self.config.train_checkpoint_epoch is not None:
            (self.logdir / self.config.train_checkpoint_epoch).unlink(missing_ok=True)
        raise FloatingPointError(f"training diverged: the loss became NaN or infinite; {kept}. "
                                 "Try a lower train_learning_rate.")

    def _datasets(self, X, validation_X, Y, validation_Y, steps_per_epoch):
        cfg = self.config
        n_val_steps = max(1, int(np.ceil(cfg.train_n_val_patches / cfg.train_batch_size)))
        shared = dict(patch_shape=cfg.n2v_patch_shape, batch_size=cfg.train_batch_size)
        val_seed = 0 if cfg.seed is None else cfg.seed + 1
        if cfg.mode == "care":
            return (SupervisedPatches(X, Y, steps_per_epoch=steps_per_epoch, seed=cfg.seed, **shared),
                    SupervisedPatches(validation_X, validation_Y, steps_per_epoch=n_val_steps,
                                      augment=False, seed=val_seed, fixed=True, **shared))
        masking = dict(perc_pix=cfg.n2v_perc_pix, radius=cfg.n2v_neighborhood_radius,
                       manipulator=cfg.n2v_manipulator, struct_mask=cfg.structN2Vmask)
        return (MaskedPatches(X, steps_per_epoch=steps_per_epoch, seed=cfg.seed, **shared, **masking),
                MaskedPatches(validation_X, steps_per_epoch=n_val_steps, augment=False, seed=val_seed,
                              fixed=True, **shared, **masking))

    def _training_finished(self):
        if self.basedir is None:
            return
        if self.config.train_checkpoint_last is not None:
            _save_atomically(self.keras_model.save_weights, self.logdir / self.config.train_checkpoint_last)
        if self.config.train_checkpoint is not None and (self.logdir / self.config.train_checkpoint).exists():
            self.load_weights(self.config.train_checkpoint)
        if self.config.train_checkpoint_epoch is not None:
            (self.logdir / self.config.train_checkpoint_epoch).unlink(missing_ok=True)

    def _find_and_load_weights(self, prefer="best"):
        if self.basedir is None:
            return
        for name in (self.config.train_checkpoint, self.config.train_checkpoint_last):
            if name is not None and (self.logdir / name).exists():
                self.load_weights(name)
                return
        warnings.warn(f"no trained weights in {self.logdir}; the network is untrained")

    # -- prediction --------------------------------------------------------------------------
    def predict(self, img, axes=None, n_tiles=None, estimator="mmse", progress=None, tta=False, normalizer=None,
                resizer=None, dtype_policy=None):
        """Denoise an image (2-D model) or a volume (3-D model).

        Parameters
        ----------
        img : numpy.ndarray
            Raw noisy image with axes ``axes``.
        axes : str or None
            Must contain the model's spatial axes (YX, or ZYX for a 3-D model); other axes (S, T,
            and Z for a 2-D model, which then denoises slice by slice) hold images processed one by
            one. A channel axis C must have the model's number of channels (it may be left out for a
            single-channel model). Default: the model's spatial axes, plus C for a multichannel model.
        n_tiles : tuple of int or None
            Tiles along the spatial axes, (Y, X) or (Z, Y, X). ``None`` picks the fewest tiles that
            keep a tile's pixels x ``unet_n_first`` (the network's largest activations) within
            ``DEFAULT_MAX_TILE_ELEMENTS``; all ones process the image in one piece. Whatever the
            tiles, the K samples exist for one chunk of pixels at a time (see
            :mod:`pn2v_tf.engine`), and the result does not depend on them.
        estimator : str
            ``'mmse'`` (paper Eq. 10) or ``'prior_mean'`` (mean of the K samples). Models trained
            with mode 'n2v' or 'care' have one output, which both return.
        progress : callable or None
            Called as ``progress(done, total)`` after each tile, with the tiles of this call done
            so far and in all.
        tta : bool
            Test-time augmentation: predict under the 8 rotations and flips in YX (volumes are never
            rotated into Z) and average the results, each mapped back (for PN2V the average of the
            8 MMSEs). Costs about 8 times a plain prediction.
        normalizer : csbdeep.data.Normalizer or None
            CSBDeep's normaliser (e.g. ``PercentileNormalizer``) of the input, for a model trained on
            data normalised this way (CARE workflows); its ``after`` is applied to the result when
            its ``do_after`` says so.
        resizer : csbdeep.data.Resizer or None
            CSBDeep's resizer (e.g. ``PadAndCropResizer``): the image is padded to multiples of the
            network's block before and cropped after. Without one, images of any size are padded
            and cropped inside.
        dtype_policy : str or None
            Keras dtype policy of the U-Net body for this prediction: ``'float32'`` or
            ``'mixed_bfloat16'`` (faster on GPUs and CPUs with bfloat16 units; the head and the
            estimator stay float32). Default: the model's ``unet_dtype_policy``.

        Returns
        -------
        numpy.ndarray
            float32, the shape and axes of ``img`` (each channel denoised with its own noise model).
        """
        if estimator not in ("mmse", "prior_mean"):
            raise ValueError(f"estimator must be 'mmse' or 'prior_mean', got {estimator!r} "
                             "(posterior samples: use sample_posterior)")
        if normalizer is None and resizer is None:
            return self._predict_with(img, axes, n_tiles, progress, estimator, tta=bool(tta),
                                      dtype_policy=dtype_policy)[0]
        axes = self._default_axes() if axes is None else axes.upper()
        if normalizer is not None:
            img = normalizer.before(img, axes)
        if resizer is not None:
            img = resizer.before(img, axes, self._axes_div_by(axes))
        result = self._predict_with(img, axes, n_tiles, progress, estimator, tta=bool(tta),
                                    dtype_policy=dtype_policy)[0]
        if resizer is not None:
            result = resizer.after(result, axes)
        if normalizer is not None and normalizer.do_after:
            result = normalizer.after(result, None, axes)[0]
        return np.asarray(result, dtype=np.float32)

    def _default_axes(self):
        return spatial_axes(self.config.n_dim) + ("C" if self.config.n_channels > 1 else "")

    def _axes_div_by(self, axes):
        """Per axis of ``axes``: the network's block along its spatial axes, 1 along the others."""
        block = dict(zip(spatial_axes(self.config.n_dim), self.config.block_shape))
        return tuple(block.get(axis, 1) for axis in axes)

    def sample_posterior(self, img, n_samples=10, axes=None, n_tiles=None, seed=0, progress=None, dtype_policy=None):
        """Draw samples of the clean image from the posterior p(s|x), for uncertainty.

        Each pixel's K prior samples are resampled with weights p(x|s_k) (mode 'pn2v' only).
        ``seed`` (int, or ``None`` for a random one) makes the draws reproducible; ``progress`` and
        ``dtype_policy`` as in :meth:`predict`.

        Returns
        -------
        numpy.ndarray
            ``(n_samples,) + shape of img``, float32.
        """
        if self.config.mode != "pn2v":
            raise ValueError(f"posterior samples need a mode 'pn2v' model, this one is {self.config.mode!r}")
        if not is_int(n_samples, 1):
            raise ValueError(f"n_samples must be an integer >= 1, got {n_samples!r}")
        if seed is None:
            seed = int(np.random.default_rng().integers(2 ** 31))
        if not is_int(seed, 0) or seed >= 2 ** 31:
            raise ValueError(f"seed must be an integer in [0, 2**31) or None, got {seed!r}")
        return np.stack(self._predict_with(img, axes, n_tiles, progress, "posterior", n_posterior=n_samples, seed=seed,
                                           dtype_policy=dtype_policy))

    @property
    def engine(self):
        """The :class:`~pn2v_tf.engine.PredictionEngine` of this model's network and noise model."""
        return self._engine_for(None)

    def _engine_for(self, dtype_policy):
        """The engine whose U-Net body runs in ``dtype_policy`` (None: the model's), with the network's
        current weights."""
        if dtype_policy == self.config.unet_dtype_policy:
            dtype_policy = None
        engine = self._engines.get(dtype_policy)
        if engine is None or engine.network is not self.keras_model:
            engine = PredictionEngine(self.keras_model, self.noise_model, dtype_policy=dtype_policy)
            self._engines = {key: e for key, e in self._engines.items() if e.network is self.keras_model}
            self._engines[dtype_policy] = engine
        engine.sync_weights()
        return engine

    def _predict_with(self, img, axes, n_tiles, progress, estimator, n_posterior=1, seed=0, tta=False,
                      dtype_policy=None):
        """The estimate in the layout of ``img``: a list of ``n_posterior`` (posterior) or one array."""
        cfg = self.config
        engine = self._engine_for(dtype_policy)
        engine.check_estimator(estimator)
        if axes is None:
            axes = self._default_axes()
        images, restore = stack_from_axes(img, axes, cfg.n_dim, n_channels=cfg.n_channels)
        if self.noise_model is not None and estimator != "prior_mean":
            self.noise_model.check_range(images, "image")
        if n_tiles is not None:
            _check_n_tiles(n_tiles, cfg.n_dim)
        n_out = n_posterior if estimator == "posterior" else 1
        views = tuple(range(8)) if tta else (None,)
        counted = None if progress is None else _counter(progress, len(images) * sum(
            self._count_tiles(_view_shape(images, view, cfg.n_dim), _view_tiles(n_tiles, view)) for view in views))
        total = None
        for view in views:  # a running sum: one result in memory besides the total
            estimate = self._estimate_view(engine, images, view, n_tiles, counted, estimator, n_posterior, seed)
            total = estimate if total is None else total + estimate
        per_draw = (total / len(views)).reshape(images.shape + (n_out,))
        return [restore(per_draw[..., draw]) for draw in range(n_out)]

    def _tiles_for(self, spatial_shape, n_tiles):
        block, overlap = network_geometry(self.config)
        return n_tiles or auto_n_tiles(spatial_shape, self.engine.n_features, DEFAULT_MAX_TILE_ELEMENTS,
                                       tile_context(overlap, block))

    def _count_tiles(self, spatial_shape, n_tiles):
        block, overlap = network_geometry(self.config)
        return count_tiles(spatial_shape, self._tiles_for(spatial_shape, n_tiles), block, overlap)

    def _estimate_view(self, engine, images, view, n_tiles, counted, estimator, n_posterior, seed):
        """The estimate (N, *spatial, C * n) of ``images`` seen under the dihedral transform ``view``
        (None: as they are), mapped back to the images' orientation."""
        cfg = self.config
        if view is not None:
            images = _dihedral(images, view, cfg.n_dim)
        spatial_shape = images.shape[1:1 + cfg.n_dim]
        tiles = self._tiles_for(spatial_shape, _view_tiles(n_tiles, view))
        block, overlap = network_geometry(cfg)
        n_values = cfg.n_channels * (n_posterior if estimator == "posterior" else 1)

        def predict_tile(tile, tile_index, crop):
            out = engine(tile, crop, estimator, n_posterior, seed=(seed, tile_index))
            if counted is not None:
                counted()
            return out

        results = np.stack([predict_tiled(predict_tile, image, tiles, block, overlap, n_values,
                                          first_index=index * _MAX_TILES_PER_IMAGE, n_dim=cfg.n_dim)
                            for index, image in enumerate(images)])
        return results if view is None else undo_dihedral(results, view, cfg.n_dim)

    def _repr_extra(self):
        return f"├─ Noise model: {self.noise_model.kind if self.noise_model is not None else None}\n"

    # -- export ------------------------------------------------------------------------------
    def export_SavedModel(self, path, overwrite=False, **kwargs):
        """Write a TensorFlow SavedModel: raw image in, MMSE image out (see :mod:`pn2v_tf.export`).

        Parameters
        ----------
        path : str or os.PathLike
            Folder to create; an existing one raises ``FileExistsError`` unless ``overwrite``.
        kwargs : dict
            ``max_tile_elements``, ``jit_compile`` (XLA in the graph, for TensorFlow in Python) and
            ``dtype_policy`` (of the U-Net body; float32 by default) of
            :func:`pn2v_tf.export.export_saved_model`.

        Returns
        -------
        pathlib.Path
        """
        from .export import export_saved_model
        return export_saved_model(self, path, overwrite=overwrite, **kwargs)

    def export_bioimageio(self, path, test_input, overwrite=False, **kwargs):
        """Write a bioimage.io model package (zip) for deepImageJ in Fiji (see :mod:`pn2v_tf.export`).

        Parameters
        ----------
        path : str or os.PathLike
            The zip file; an existing one raises ``FileExistsError`` unless ``overwrite``.
        test_input : numpy.ndarray
            A raw noisy image (Y, X), or volume (Z, Y, X) for a 3-D model, with a last channel axis
            for a multichannel model, of the kind the model is for (test tensor and cover image).
        kwargs : dict
            ``name``, ``description``, ``authors``, ``license``, ``tags``, ``max_tile_elements`` of
            :func:`pn2v_tf.export.export_bioimageio`.

        Returns
        -------
        pathlib.Path
        """
        from .export import export_bioimageio
        return export_bioimageio(self, path, test_input, overwrite=overwrite, **kwargs)

    def export_TF(self, fname=None, test_input=None, overwrite=False, **kwargs):
        """Export for Fiji under CSBDeep's name: the bioimage.io package of :meth:`export_bioimageio`.

        Parameters
        ----------
        fname : str or os.PathLike or None
            The zip file. Default: ``<name>.bioimage.io.zip`` in the model folder.
        test_input : numpy.ndarray or None
            A raw noisy image (Y, X), or volume (Z, Y, X) for a 3-D model, for the package's test and
            cover. Default: the crop of the first validation image that ``train`` keeps in the model
            folder (``example_input.tif``).
        overwrite : bool
            Replace an existing file.
        kwargs : dict
            The other options of :meth:`export_bioimageio` (``name``, ``authors``, ...).

        Returns
        -------
        pathlib.Path
            The zip file.
        """
        if fname is None:
            if self.basedir is None:
                raise ValueError("export_TF needs fname= for a model without a folder (basedir=None)")
            fname = self.logdir / f"{self.name}.bioimage.io.zip"
        if test_input is None:
            test_input = self._example_input()
        return self.export_bioimageio(fname, test_input, overwrite=overwrite, **kwargs)

    def _example_input(self):
        example = None if self.basedir is None else self.logdir / EXAMPLE_INPUT_FILE
        if example is None or not example.exists():
            where = "this model has no folder" if example is None else f"{example} does not exist (trained before " \
                "pn2v_tf kept one, or not trained)"
            raise ValueError(f"export_TF needs test_input=: a raw noisy image ({spatial_axes(self.config.n_dim)}) like "
                             f"the data the model is for, which the package uses as its test input and cover; {where}")
        import tifffile

        with tifffile.TiffFile(example) as tif:
            image, axes = tif.asarray(), tif.series[0].axes
        return np.moveaxis(image, axes.index("C"), -1) if "C" in axes else image


def calibration_patches(config):
    """How many random validation patches the spread's calibration reads: ``train_n_val_patches``, or
    more, up to 4 times as many, until their central halves (per axis) hold :data:`CALIBRATION_PIXELS`."""
    central = int(np.prod([size - 2 * (size // 4) for size in config.n2v_patch_shape]))
    needed = -(-CALIBRATION_PIXELS // central)
    return min(4 * config.train_n_val_patches, max(config.train_n_val_patches, needed))


def _range_values(images, n_channels):
    """What ``check_range`` needs of a stack (S, *spatial, C): the stack itself, or for a chunked one
    each channel's minimum and maximum (one pass)."""
    if not is_chunked(images):
        return images
    extremes = channel_extremes(images)
    return extremes if n_channels > 1 else extremes[:, 0]


def _imagej_layout(image, n_dim):
    """An image (*spatial, C) as ImageJ stores it: (array, axes), C before Y and X when C > 1."""
    spatial = spatial_axes(n_dim)
    if image.shape[-1] == 1:
        return image[..., 0], spatial
    return np.moveaxis(image, -1, n_dim - 2), spatial[:-2] + "C" + spatial[-2:]


def _read_noise_models(noise_model):
    """A noise model, a path to one, or a list of those -> NoiseModel or list of NoiseModel (or None)."""
    if isinstance(noise_model, (list, tuple)):
        if len(noise_model) == 0:
            raise ValueError("noise_model is an empty list: give one noise model per channel")
        return [_read_noise_models(one) for one in noise_model]
    if isinstance(noise_model, (str, os.PathLike)):
        return load_noise_model(noise_model)
    if noise_model is not None and not isinstance(noise_model, NoiseModel):
        raise ValueError(f"noise_model must be a pn2v_tf noise model or a path to one (or a list of them, one per "
                         f"channel), got {type(noise_model).__name__}")
    return noise_model


_MAX_TILES_PER_IMAGE = 2 ** 16  # tile indices (posterior seeds) of different images never meet


class _SaveWeights(keras.callbacks.Callback):
    """Save the prediction network's weights after each epoch (or when val_loss improves)."""

    def __init__(self, save, path, best_only, monitor="val_loss"):
        super().__init__()
        self.save, self.path, self.best_only, self.monitor = save, Path(path), best_only, monitor
        self.best = np.inf

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor, np.nan)
        if not np.isfinite(value):
            return
        if self.best_only and value >= self.best:
            return
        self.best = min(self.best, value)
        _save_atomically(self.save, self.path)


def _counter(progress, total):
    """A function to call after each tile: it reports ``progress(done, total)``."""
    done = 0

    def count():
        nonlocal done
        done += 1
        progress(done, total)

    return count


def _view_shape(images, view, n_dim):
    """Spatial shape of ``images`` (N, *spatial, C) under dihedral transform ``view``."""
    shape = list(images.shape[1:1 + n_dim])
    if view is not None and _DIHEDRAL[view][0] % 2:
        shape[-2:] = shape[-1], shape[-2]
    return tuple(shape)


def _view_tiles(n_tiles, view):
    """Tiles per axis for the transformed image: Y and X swap under 90-degree rotations."""
    if n_tiles is None or view is None or _DIHEDRAL[view][0] % 2 == 0:
        return n_tiles
    return tuple(n_tiles[:-2]) + (n_tiles[-1], n_tiles[-2])


def _remove_model_files(logdir):
    """Before a model is replaced (``overwrite=True``): its weights, noise model, example input, and
    the state and log of its training (which a later resume must not pick up) go."""
    from .resume import remove_training_files

    for pattern in ("weights_*.h5", "weights_*.h5.tmp", NOISE_MODEL_FILE, EXAMPLE_INPUT_FILE):
        for path in logdir.glob(pattern):
            path.unlink()
    remove_training_files(logdir)


def _all_weights_finite(model):
    return all(np.all(np.isfinite(keras.ops.convert_to_numpy(w))) for w in model.weights)


def _save_atomically(save, path):
    with atomic_path(path) as tmp:
        save(str(tmp))


def _tensorboard_callbacks(log_dir):
    if importlib.util.find_spec("tensorboard") is None:
        warnings.warn("package 'tensorboard' is not installed: no TensorBoard logs are written "
                      "(pip install tensorboard)")
        return []
    return [keras.callbacks.TensorBoard(log_dir=str(log_dir), write_graph=False, profile_batch=0)]


def _csbdeep_arguments(mode, X, second, Y, validation_Y, validation_data):
    """(X, validation_X, Y, validation_Y) from CSBDeep's ``train(X, Y, validation_data=...)`` call."""
    if mode == "care":
        if not (isinstance(validation_data, (tuple, list)) and len(validation_data) == 2):
            raise ValueError("mode 'care': validation_data must be (X_val, Y_val)")
        if Y is not None or validation_Y is not None:
            raise ValueError("give the targets as train(X, Y, validation_data=(X_val, Y_val)) or as Y= and "
                             "validation_Y=, not both")
        return (X, validation_data[0], second, validation_data[1])
    if second is not None:
        raise ValueError(f"mode {mode!r}: give validation images as validation_X or validation_data, not both")
    if isinstance(validation_data, (tuple, list)):
        if len(validation_data) != 1 and not (len(validation_data) == 2 and validation_data[1] is None):
            raise ValueError(f"mode {mode!r} trains on noisy images only: validation_data must be X_val")
        validation_data = validation_data[0]
    return X, validation_data, Y, validation_Y


def _check_same_shape(a, b, name_a, name_b):
    if a.shape != b.shape:
        raise ValueError(f"{name_a} {a.shape} and {name_b} {b.shape} must have the same shape")


def _check_n_tiles(n_tiles, n_dim):
    if not isinstance(n_tiles, (tuple, list)) or len(n_tiles) != n_dim or not all(is_int(n, 1) for n in n_tiles):
        raise ValueError(f"n_tiles must be {n_dim} positive integers ({', '.join(spatial_axes(n_dim))}), "
                         f"got {n_tiles!r}")
