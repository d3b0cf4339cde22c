"""The U-Net, its K-sample head, and the two graphs built from them.

One set of layers makes two Keras models that share all weights:

- the *prediction* network: raw image (B, *spatial, C) -> K samples per pixel and channel
  (B, *spatial, C * K), raw units, channel-major (channel c's samples are outputs c*K .. c*K + K - 1),
  where the spatial axes are (Y, X) for a 2-D model and (Z, Y, X) for a 3-D one;
- the *masked training* network: raw patches and each channel's blind-spot coordinates
  (B, M, C, n_dim) -> K samples of each channel at its masked pixels only (B, M, C * K). The U-Net
  body runs on the whole patch, but the head and everything after it (noise model, loss) run at
  the M masked pixels of each channel, which is what makes PN2V train at the cost of N2V.

The U-Net follows the PN2V reference: ``n_depth`` resolution levels with two convolutions each,
max pooling down (by ``pool`` per axis, 2 by default), transposed convolutions up by the same
factors, skip connections merged by addition. N2V2's options: max-blur pooling instead of max
pooling (``blurpool``, :class:`MaxBlurPool`) and no skip connection at the top level
(``skip_skipone``). 2-D and 3-D differ only in the layer classes
(:data:`LAYERS`). The head is a ``Dense`` layer (a 1x1 convolution when applied to an image) whose K
outputs start close together (:class:`SampleHeadInitializer`). With several channels one U-Net sees
them all and the head predicts C * K values; with ``single_net_per_channel`` each channel has its own
U-Net and head (:class:`GroupedDense`), whose features are concatenated.
"""

import functools

import keras
import numpy as np
from keras import layers, ops


@keras.saving.register_keras_serializable(package="pn2v_tf")
class Standardize(layers.Layer):
    """``(x - mean) / std`` per channel, or its inverse ``x * output_scale * std + mean`` with
    ``inverse=True``.

    The one place where raw intensities and the network's normalised units meet. ``mean`` and
    ``std`` are one number or one per channel; the input's last axis holds the channels, the
    inverse's last axis C * K values, K per channel (channel-major). ``output_scale`` multiplies
    the network's outputs before they leave its units (the PN2V reference scales its samples by 10,
    so that the prior's samples start wide and move ten times faster under the same optimiser).
    """

    def __init__(self, mean=0.0, std=1.0, output_scale=1.0, **kwargs):
        super().__init__(**kwargs)
        self.mean = [float(m) for m in np.ravel(mean)]
        self.std = [float(s) for s in np.ravel(std)]
        self.output_scale = float(output_scale)

    def per_value(self, n_values, inverse=False):
        """(mean, std) as float32 arrays for a last axis of ``n_values`` (channel-major values); with
        ``inverse`` the std of the inverse, ``output_scale * std``."""
        repeats = n_values // len(self.mean)
        scale = self.output_scale if inverse else 1.0
        return (np.repeat(np.float32(self.mean), repeats), np.repeat(np.float32(self.std) * np.float32(scale), repeats))

    def call(self, inputs, inverse=False):
        mean, std = self.per_value(inputs.shape[-1] or len(self.mean), inverse)
        if inverse:
            return inputs * std + mean
        return (inputs - mean) / std

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "std": self.std, "output_scale": self.output_scale}


@keras.saving.register_keras_serializable(package="pn2v_tf")
class GatherPixels(layers.Layer):
    """Feature vectors (B, *spatial, F) at integer coordinates (B, ..., n_dim) -> (B, ..., F)."""

    def call(self, features, coords):
        shape = ops.shape(features)
        n_dim = len(features.shape) - 2
        flat = ops.reshape(features, (shape[0], -1, shape[-1]))
        coords = ops.cast(coords, "int32")
        index = coords[..., 0]
        for axis in range(1, n_dim):
            index = index * shape[axis + 1] + coords[..., axis]
        points = ops.shape(index)
        gathered = ops.take_along_axis(flat, ops.reshape(index, (shape[0], -1, 1)), axis=1)
        return ops.reshape(gathered, tuple(points[i] for i in range(len(index.shape))) + (shape[-1],))

    def compute_output_shape(self, features_shape, coords_shape):
        return tuple(coords_shape[:-1]) + (features_shape[-1],)


@keras.saving.register_keras_serializable(package="pn2v_tf")
class AddInput(layers.Layer):
    """A residual network's output (n2v's ``unet_residual``): ``outputs + image - mean`` in raw units,
    i.e. the network predicts the difference to its input in normalised units (one output per channel).

    ``call(outputs, values)``: ``values`` is the image (B, *spatial, C), or, with ``own_channel``, the
    image's values gathered at each channel's coordinates (B, M, C, C), of which channel c's own are
    taken.
    """

    def __init__(self, mean=0.0, own_channel=False, **kwargs):
        super().__init__(**kwargs)
        self.mean = [float(m) for m in np.ravel(mean)]
        self.own_channel = bool(own_channel)

    def call(self, outputs, values):
        if self.own_channel:
            n_channels = values.shape[-1]
            values = ops.sum(values * np.eye(n_channels, dtype="float32"), axis=-1)
        return outputs + values - np.float32(self.mean)

    def compute_output_shape(self, outputs_shape, values_shape):
        return outputs_shape

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "own_channel": self.own_channel}


@keras.saving.register_keras_serializable(package="pn2v_tf")
class GroupedDense(layers.Layer):
    """``groups`` independent ``Dense`` layers side by side: input (..., groups * F) -> (..., groups * units),
    group g's outputs from group g's features only (the heads of independent per-channel networks).

    Weights: ``kernel`` (groups, F, units), ``bias`` (groups * units).
    """

    def __init__(self, groups, units, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.groups, self.units = int(groups), int(units)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        n_features = int(input_shape[-1]) // self.groups
        self.kernel = self.add_weight(shape=(self.groups, n_features, self.units), name="kernel",
                                      initializer=_per_group(self.kernel_initializer))
        self.bias = self.add_weight(shape=(self.groups * self.units,), name="bias", initializer="zeros")

    def call(self, inputs):
        shape = ops.shape(inputs)
        leading = tuple(shape[i] for i in range(len(inputs.shape) - 1))
        grouped = ops.reshape(inputs, leading + (self.groups, self.kernel.shape[1]))
        out = ops.einsum("...gf,gfk->...gk", grouped, self.kernel)
        return ops.reshape(out, leading + (self.groups * self.units,)) + self.bias

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.groups * self.units,)

    def get_config(self):
        return {**super().get_config(), "groups": self.groups, "units": self.units,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer)}


def _per_group(initializer):
    """An initializer of (groups, F, units) kernels that initialises each group as a (F, units) kernel."""
    def initialize(shape, dtype=None):
        return ops.stack([initializer(tuple(shape[1:]), dtype=dtype) for _ in range(shape[0])])
    return initialize


@keras.saving.register_keras_serializable(package="pn2v_tf")
class ChannelSamples(layers.Layer):
    """The head at gathered features of each channel's own masked pixels: (B, M, C, F') -> (B, M, C * K).

    Channel c's K outputs come from its own columns of the head's kernel (a ``Dense`` with C * K
    outputs), or, for a :class:`GroupedDense` head (one network per channel), from its own group of
    features and kernel; other channels' outputs at these pixels are never computed.
    """

    def __init__(self, head, n_channels, **kwargs):
        super().__init__(**kwargs)
        self.head, self.n_channels = head, int(n_channels)

    def call(self, gathered):
        shape = ops.shape(gathered)
        if self.n_channels == 1:
            out = self.head(gathered)  # (B, M, 1, K)
            return ops.reshape(out, (shape[0], shape[1], out.shape[-1]))
        n_channels, kernel = self.n_channels, self.head.kernel
        if isinstance(self.head, GroupedDense):  # kernel (C, F, K); channel c reads group c's features
            n_features, n_outputs = kernel.shape[1], kernel.shape[2]
            grouped = ops.reshape(gathered, (shape[0], shape[1], n_channels, n_channels, n_features))
            own = ops.sum(grouped * np.eye(n_channels, dtype="float32")[:, :, None], axis=3)
            out = ops.einsum("bmcf,cfk->bmck", own, kernel)
        else:  # kernel (F, C * K), channel-major columns
            n_features, n_outputs = kernel.shape[0], kernel.shape[1] // n_channels
            out = ops.einsum("bmcf,fck->bmck", gathered, ops.reshape(kernel, (n_features, n_channels, n_outputs)))
        out = out + ops.reshape(self.head.bias, (n_channels, n_outputs))
        return ops.reshape(out, (shape[0], shape[1], n_channels * n_outputs))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1], self.head.compute_output_shape(input_shape)[-1])


@keras.saving.register_keras_serializable(package="pn2v_tf")
class SampleHeadInitializer(keras.initializers.Initializer):
    """Kernel (F, K) of the K-sample head: one shared Glorot-uniform column, as a one-output head
    would get, plus ``spread`` times an independent Glorot-uniform kernel.

    The K prior samples then start as near copies of one prediction and spread out as training
    asks for it (``samples_init_spread``, the default head). With ``samples_init_spread=None`` the
    head has independent Glorot-uniform columns instead, as the PN2V reference has, whose samples
    start as K unrelated functions of the features.

    Parameters
    ----------
    spread : float
        Scale of the per-sample part, > 0 (0 would keep all samples equal forever). Default: 0.01.
    seed : int or None
        Seed of both parts.
    n_channels : int
        The kernel's columns are the K samples of each of this many channels (channel-major); each
        channel gets its own shared column.
    """

    def __init__(self, spread=0.01, seed=None, n_channels=1):
        self.spread = float(spread)
        self.seed = seed
        self.n_channels = int(n_channels)

    def __call__(self, shape, dtype=None):
        shared_seed = None if self.seed is None else self.seed + 1
        shared = keras.initializers.GlorotUniform(seed=shared_seed)((shape[0], self.n_channels), dtype=dtype)
        per_sample = keras.initializers.GlorotUniform(seed=self.seed)(shape, dtype=dtype)
        if self.n_channels > 1:
            shared = ops.repeat(shared, shape[-1] // self.n_channels, axis=1)
        return shared + self.spread * per_sample

    def get_config(self):
        return {"spread": self.spread, "seed": self.seed, "n_channels": self.n_channels}


@keras.saving.register_keras_serializable(package="pn2v_tf")
class MaxBlurPool(layers.Layer):
    """Max-blur pooling (N2V2, after Zhang 2019) by ``pool`` per axis, in 2-D and 3-D.

    A maximum over windows of ``pool`` at stride 1, then, along each axis with a factor p > 1, a
    binomial blur of length p + 1 (``[1, 2, 1] / 4`` for p = 2) taken at every p-th position: for
    p = 2, ``out[i] = (m[2i] + 2 m[2i+1] + m[2i+2]) / 4``. Both run as pooling operations ("same"
    padding): the blur is p - 1 averages of pairs at stride 1 and one at stride p, so at the last
    position, whose pair lacks its second pixel, the average is of the one there is. Axes with p = 1
    are left alone. The sides must be multiples of the factors (the network's block shape ensures it).
    """

    def __init__(self, pool, **kwargs):
        super().__init__(**kwargs)
        self.pool = tuple(int(p) for p in pool)

    def call(self, x):
        x = ops.max_pool(x, pool_size=self.pool, strides=1, padding="same")
        for step in range(1, max(self.pool)):
            window = tuple(2 if p > step else 1 for p in self.pool)
            x = ops.average_pool(x, pool_size=window, strides=1, padding="same")
        window = tuple(2 if p > 1 else 1 for p in self.pool)
        return ops.average_pool(x, pool_size=window, strides=self.pool, padding="same")

    def compute_output_shape(self, input_shape):
        spatial = [None if s is None else s // p for s, p in zip(input_shape[1:-1], self.pool)]
        return (input_shape[0], *spatial, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "pool": list(self.pool)}


#: Convolution, pooling and transposed-convolution layer classes per number of spatial axes.
LAYERS = {2: (layers.Conv2D, layers.MaxPooling2D, layers.Conv2DTranspose),
          3: (layers.Conv3D, layers.MaxPooling3D, layers.Conv3DTranspose)}
#: Nearest-neighbour upsampling per number of spatial axes.
UPSAMPLING = {2: layers.UpSampling2D, 3: layers.UpSampling3D}


def block_size(n_depth, pool=2):
    """Image sides must be multiples of this (one pixel at the coarsest level): ``pool**(n_depth-1)``,
    per axis when ``pool`` is a tuple."""
    if isinstance(pool, (tuple, list)):
        return tuple(block_size(n_depth, p) for p in pool)
    return int(pool) ** (n_depth - 1)


def receptive_radius(n_depth, kern_size, pool=2, blurpool=False, upsampling="transpose"):
    """Upper bound of how far (pixels) an output pixel sees in each direction; per axis when
    ``pool`` is a tuple.

    With pooling factor p, level l works at scale p**l. Down level l: two convolutions and a
    pooling window of p at that scale (with ``blurpool``: a max over p at stride 1 and a blur of
    p + 1, 2p in all); bottom: two convolutions; up level l: a transposed convolution of kernel p
    (or, with ``upsampling='nearest'``, a copy into p pixels and a convolution) and two convolutions
    at that scale.
    """
    if isinstance(pool, (tuple, list)):
        return tuple(receptive_radius(n_depth, kern_size, p, blurpool, upsampling) for p in pool)
    conv = 2 * (kern_size // 2)
    window = 2 * pool if blurpool and pool > 1 else pool
    up_conv = kern_size // 2 if upsampling == "nearest" else 0
    down = sum((conv + window - 1) * pool ** level for level in range(n_depth - 1))
    up = sum((conv + up_conv + pool - 1) * pool ** level for level in range(n_depth - 1))
    bottom = conv * pool ** (n_depth - 1)
    return down + up + bottom


def network_geometry(config):
    """(block, radius) per spatial axis of a configuration's network: image sides are multiples of
    ``block``; an output pixel sees input pixels up to ``radius`` away."""
    return (block_size(config.unet_n_depth, tuple(config.unet_pool)),
            receptive_radius(config.unet_n_depth, config.unet_kern_size, tuple(config.unet_pool),
                             getattr(config, "blurpool", False), getattr(config, "unet_upsampling", "transpose")))


class UNetLayers:
    """The layers of one U-Net body; calling :meth:`features` applies them to a normalised tensor.

    ``prefix`` starts every layer name (the per-channel bodies of ``single_net_per_channel``).
    ``blurpool`` downsamples with :class:`MaxBlurPool`; ``skip_skipone`` leaves out the skip
    connection of the top level; ``batch_norm`` puts a batch normalisation between each convolution
    and its ReLU; ``upsampling='nearest'`` goes up by copying each pixel into p per axis and a
    (linear) convolution instead of a transposed convolution. ``dtype`` is every layer's Keras dtype
    policy (None: the global one).
    """

    def __init__(self, n_depth, n_first, kern_size, pool=(2, 2), prefix="", blurpool=False, skip_skipone=False,
                 batch_norm=False, upsampling="transpose", dtype=None):
        pool = tuple(int(p) for p in pool)
        conv_class, pool_class, transpose_class = (functools.partial(cls, dtype=dtype) for cls in LAYERS[len(pool)])
        if blurpool:
            pool_class = functools.partial(MaxBlurPool, dtype=dtype)
        self.skip_skipone = skip_skipone

        def conv_block(n_features, name):
            if not batch_norm:
                return [conv_class(n_features, kern_size, padding="same", activation="relu", name=name)]
            return [conv_class(n_features, kern_size, padding="same", name=name),
                    layers.BatchNormalization(name=f"{name}_bn", dtype=dtype),
                    layers.Activation("relu", name=f"{name}_relu", dtype=dtype)]

        self.down = [
            [conv_block(n_first * 2 ** level, f"{prefix}down{level}_conv{i}") for i in (1, 2)]
            for level in range(n_depth)
        ]
        self.pool = [pool_class(pool, name=f"{prefix}down{level}_pool") for level in range(n_depth - 1)]
        if upsampling == "nearest":
            upsample_class = functools.partial(UPSAMPLING[len(pool)], dtype=dtype)
            self.up = [[upsample_class(pool, name=f"{prefix}up{level}_upsample"),
                        conv_class(n_first * 2 ** level, kern_size, padding="same", name=f"{prefix}up{level}_upconv")]
                       for level in range(n_depth - 1)]
        else:
            self.up = [[transpose_class(n_first * 2 ** level, pool, strides=pool, name=f"{prefix}up{level}_transpose")]
                       for level in range(n_depth - 1)]
        self.up_convs = [
            [conv_block(n_first * 2 ** level, f"{prefix}up{level}_conv{i}") for i in (1, 2)]
            for level in range(n_depth - 1)
        ]
        self.merge = [layers.Add(name=f"{prefix}up{level}_merge", dtype=dtype) for level in range(n_depth - 1)]

    def features(self, x):
        """Normalised image (B, *spatial, C) -> last-level features (B, *spatial, n_first)."""
        skips = []
        for level, blocks in enumerate(self.down):
            x = _apply(blocks, x)
            if level < len(self.pool):
                skips.append(x)
                x = self.pool[level](x)
        for level in reversed(range(len(self.up))):
            x = _apply([self.up[level]], x)
            if not (level == 0 and self.skip_skipone):
                x = self.merge[level]([x, skips[level]])
            x = _apply(self.up_convs[level], x)
        return x


def _apply(blocks, x):
    """Apply a list of blocks, each a list of layers, in order."""
    for block in blocks:
        for layer in block:
            x = layer(x)
    return x


class PN2VNetwork:
    """Normalisation, U-Net body (one, or one per channel) and head of a configuration.

    :meth:`features` maps a raw image (B, *spatial, C) to features (B, *spatial, G * F) (G = 1, or C
    with ``single_net_per_channel``); the head maps features to C * K outputs (channel-major) and
    :meth:`samples` returns them in raw units.
    """

    def __init__(self, config):
        n_channels, n_outputs = config.n_channels, config.n_outputs
        self.n_channels = n_channels
        output_scale = config.samples_output_scale if n_outputs > 1 else 1.0
        self.standardize = Standardize(config.means, config.stds, output_scale, name="standardize")
        self.means = config.means
        self.residual = bool(getattr(config, "unet_residual", False))
        self.groups = n_channels if config.single_net_per_channel and n_channels > 1 else 1
        geometry = (config.unet_n_depth, config.unet_n_first, config.unet_kern_size, config.unet_pool)
        n2v2 = dict(blurpool=config.blurpool, skip_skipone=config.skip_skipone, batch_norm=config.batch_norm,
                    upsampling=config.unet_upsampling)
        policy = getattr(config, "unet_dtype_policy", "float32")
        self.bodies = [UNetLayers(*geometry, prefix="" if self.groups == 1 else f"c{g}_", dtype=policy, **n2v2)
                       for g in range(self.groups)]
        if n_outputs == 1 or config.samples_init_spread is None:
            init = "glorot_uniform"
        else:
            init = SampleHeadInitializer(config.samples_init_spread, n_channels=n_channels // self.groups)
        if self.groups == 1:
            self.head = layers.Dense(n_channels * n_outputs, kernel_initializer=init, name="head")
        else:
            self.head = GroupedDense(self.groups, n_outputs, kernel_initializer=init, name="head")

    def features(self, image):
        x = self.standardize(image)
        if self.groups == 1:
            return self.bodies[0].features(x)
        per_channel = [body.features(x[..., g:g + 1]) for g, body in enumerate(self.bodies)]
        return layers.Concatenate(name="features")(per_channel)

    def samples(self, features, image):
        """Features (..., G * F) -> outputs (..., C * K) in raw intensity units (plus the image for a
        residual network)."""
        out = self.standardize(self.head(features), inverse=True)
        return AddInput(self.means, name="residual")(out, image) if self.residual else out

    def masked_samples(self, features, coords, image):
        """Features (B, *spatial, G * F) and coordinates (B, M, C, n_dim) -> each channel's outputs at
        its own coordinates, (B, M, C * K), raw units."""
        gathered = GatherPixels(name="gather")(features, coords)
        own = self.standardize(ChannelSamples(self.head, self.n_channels, name="channel_samples")(gathered),
                               inverse=True)
        if not self.residual:
            return own
        values = GatherPixels(name="gather_input")(image, coords)
        return AddInput(self.means, own_channel=True, name="residual")(own, values)


def build_networks(config):
    """Prediction and masked-training Keras models for a :class:`PN2VConfig` (2-D or 3-D, C channels).

    Returns
    -------
    prediction : keras.Model
        ``image`` (B, *spatial, C) -> (B, *spatial, C * K) samples, channel-major (K = 1 for modes
        'n2v' and 'care').
    masked : keras.Model
        ``{'image': (B, *spatial, C), 'coords': (B, M, C, n_dim)}`` -> (B, M, C * K), channel c's
        outputs at its coordinates ``coords[:, :, c]``.
    """
    n_dim, n_channels = config.n_dim, config.n_channels
    net = PN2VNetwork(config)
    image = keras.Input((None,) * n_dim + (n_channels,), name="image")
    prediction = keras.Model(image, net.samples(net.features(image), image), name="pn2v_prediction")

    patches = keras.Input((None,) * n_dim + (n_channels,), name="image")
    coords = keras.Input((None, n_channels, n_dim), dtype="int32", name="coords")
    masked = keras.Model({"image": patches, "coords": coords},
                         net.masked_samples(net.features(patches), coords, patches),
                         name="pn2v_masked")
    return prediction, masked


def count_forward_flops_per_pixel(config):
    """Multiply-adds x 2 of one forward pass per input pixel (convolutions and head), all channels."""
    kernel = config.unet_kern_size ** config.n_dim
    n_channels = config.n_channels
    n_nets = n_channels if config.single_net_per_channel and n_channels > 1 else 1
    shrink = int(np.prod(config.unet_pool))  # pixels per pixel of the next level
    flops, c_in = 0.0, n_channels // n_nets
    for level in range(config.unet_n_depth):
        c = config.unet_n_first * 2 ** level
        flops += 2 * kernel * (c_in * c + c * c) / shrink ** level
        c_in = c
    for level in range(config.unet_n_depth - 1):
        c = config.unet_n_first * 2 ** level
        flops += 2 * (2 * c * c) / shrink ** level + 2 * kernel * 2 * c * c / shrink ** level
    flops += 2 * config.unet_n_first * config.n_outputs * n_channels // n_nets
    return float(np.round(flops * n_nets))
