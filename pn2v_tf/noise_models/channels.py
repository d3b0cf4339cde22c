"""One noise model per channel of a multichannel image, as one noise model.

Each fluorescence channel has its own brightness and often its own detector, so its own p(x|s).
:class:`ChannelNoiseModels` holds one model per channel (any kinds, mixed) and evaluates channel c's
model on channel c's values. In likelihood computations (training loss, estimators) the channel
axis is the second-to-last one: observations (..., C, 1) and signals (..., C, K); in
:meth:`ChannelNoiseModels.check_range`, which sees images, it is the last one.
"""

import numpy as np
import tensorflow as tf

from .base import NoiseModel, register_kind

_CHANNEL_AXIS = -2


@register_kind("per_channel")
class ChannelNoiseModels(NoiseModel):
    """One noise model per channel, channel c's model for channel c's values.

    Parameters
    ----------
    models : list of NoiseModel
        One per channel, in channel order (two or more; kinds may differ).
    """

    def __init__(self, models, **kwargs):
        super().__init__(**kwargs)
        models = list(models)
        if len(models) < 2:
            raise ValueError(f"ChannelNoiseModels takes one noise model per channel, two or more; got {len(models)}")
        for index, model in enumerate(models):
            if not isinstance(model, NoiseModel) or isinstance(model, ChannelNoiseModels):
                raise ValueError(f"noise model {index} must be a single-channel pn2v_tf noise model, "
                                 f"got {type(model).__name__}")
        self.models = models

    @property
    def n_channels(self):
        return len(self.models)

    def __getitem__(self, channel):
        return self.models[channel]

    # -- the likelihood, channel by channel along axis -2 ------------------------------------
    def _per_channel(self, function, observation, signal, *per_model):
        """``function(model, observation_c, signal_c, *[values[c] for values in per_model])`` for each
        channel, joined along axis -2."""
        outs = [function(model, _channel(observation, c), _channel(signal, c), *(values[c] for values in per_model))
                for c, model in enumerate(self.models)]
        if isinstance(outs[0], np.ndarray):
            return np.concatenate(outs, axis=_CHANNEL_AXIS)
        return tf.concat(outs, axis=_CHANNEL_AXIS)

    def _check_channels(self, *values):
        for value in values:
            shape = np.shape(value) if isinstance(value, np.ndarray) else tuple(value.shape)
            if len(shape) < 2 or shape[_CHANNEL_AXIS] not in (1, self.n_channels):
                raise ValueError(f"per-channel noise models need values with the {self.n_channels} channels on the "
                                 f"second-to-last axis, got shape {shape}")

    def log_likelihood(self, observation, signal):
        """``log p(x|s)`` of each channel's model: observations (..., C, 1), signals (..., C, K)."""
        if isinstance(observation, np.ndarray) or isinstance(signal, np.ndarray):
            observation = np.asarray(observation, dtype=np.float32)
            signal = np.asarray(signal, dtype=np.float32)
        self._check_channels(observation, signal)
        return self._per_channel(lambda model, x, s: model.log_likelihood(x, s), observation, signal)

    def _log_likelihood(self, observation, signal):
        return self._per_channel(lambda model, x, s: model._log_likelihood(x, s), observation, signal)

    def weight_tables(self, packed=False):
        return tuple(model.weight_tables(packed) for model in self.models)

    def likelihood_weights(self, observation, signal, tables=None):
        tables = self.weight_tables() if tables is None else tables
        return self._per_channel(lambda model, x, s, t: model.likelihood_weights(x, s, t), observation, signal, tables)

    def clip_signal(self, signal):
        clipped = [model.clip_signal(_channel(signal, c)) for c, model in enumerate(self.models)]
        return tf.concat(clipped, axis=_CHANNEL_AXIS)

    # -- ranges --------------------------------------------------------------------------------
    @property
    def value_range(self):
        """(low, high) covering every channel's range (each channel's: ``self[c].value_range``)."""
        ranges = np.array([model.value_range for model in self.models], dtype=np.float64)
        return float(ranges[:, 0].min()), float(ranges[:, 1].max())

    @property
    def signal_range(self):
        ranges = np.array([model.signal_range for model in self.models], dtype=np.float64)
        return float(ranges[:, 0].min()), float(ranges[:, 1].max())

    def check_range(self, values, name="data", error_margin=None):
        """:meth:`NoiseModel.check_range` of each channel's model on that channel: ``values`` have
        the channels on their last axis (images)."""
        values = np.asarray(values)
        if values.ndim < 1 or values.shape[-1] != self.n_channels:
            raise ValueError(f"{name} must have {self.n_channels} channels on its last axis (one per noise model), "
                             f"got shape {values.shape}")
        for channel, model in enumerate(self.models):
            model.check_range(values[..., channel], f"{name} (channel {channel})", error_margin)

    # -- files -----------------------------------------------------------------------------------
    def _arrays(self):
        arrays = {"n_channels": np.array(self.n_channels)}
        for channel, model in enumerate(self.models):
            arrays[f"c{channel}_kind"] = np.array(model.kind)
            arrays.update({f"c{channel}_{key}": value for key, value in model._arrays().items()})
        return arrays

    @classmethod
    def _from_arrays(cls, arrays):
        from .base import _KINDS

        models = []
        for channel in range(int(arrays["n_channels"])):
            prefix = f"c{channel}_"
            kind = str(arrays[prefix + "kind"])
            if kind not in _KINDS or kind == cls.kind:
                raise ValueError(f"channel {channel} has an unknown noise model kind {kind!r}")
            own = {key[len(prefix):]: value for key, value in arrays.items()
                   if key.startswith(prefix) and key != prefix + "kind"}
            models.append(_KINDS[kind]._from_arrays(own))
        return cls(models)

    def plot(self, path, signal=None, observation=None, **kwargs):
        """One PNG per channel, ``<path>_c<channel>.png``, against that channel's pairs if given
        (``signal``, ``observation`` with the channels on their last axis); returns their paths."""
        stem = str(path)[:-4] if str(path).endswith(".png") else str(path)
        written = []
        for channel, model in enumerate(self.models):
            pairs = {} if signal is None else dict(signal=np.asarray(signal)[..., channel],
                                                    observation=np.asarray(observation)[..., channel])
            written.append(model.plot(f"{stem}_c{channel}.png", **pairs, **kwargs))
        return written


def _channel(values, channel):
    """Channel ``channel`` of values whose axis -2 holds the channels (or has size 1: shared by all)."""
    if values.shape[_CHANNEL_AXIS] == 1:
        return values
    return values[..., channel:channel + 1, :]


def per_channel_noise_model(noise_model, n_channels):
    """The noise model of a model with ``n_channels`` channels.

    Parameters
    ----------
    noise_model : NoiseModel or list of NoiseModel or None
        One model (applied to every channel), or a list of one per channel (a list of one is that
        model).

    Returns
    -------
    NoiseModel or None
        A :class:`ChannelNoiseModels` for a list of several, else the one model.
    """
    if noise_model is None or isinstance(noise_model, NoiseModel):
        if isinstance(noise_model, ChannelNoiseModels) and noise_model.n_channels != n_channels:
            raise ValueError(f"the noise model has {noise_model.n_channels} channels, the model {n_channels}")
        return noise_model
    models = list(noise_model)
    if len(models) == 1:
        return per_channel_noise_model(models[0], n_channels)
    if len(models) != n_channels:
        raise ValueError(f"noise_model has {len(models)} noise models for {n_channels} channel"
                         f"{'s' * (n_channels > 1)}: give one per channel, or one for all")
    return ChannelNoiseModels(models)
