"""The U-Net, its K-sample head, and the two graphs built from them.

One set of layers makes two Keras models that share all weights:

- the *prediction* network: raw image (B, *spatial, 1) -> K samples per pixel (B, *spatial, K), raw
  units, where the spatial axes are (Y, X) for a 2-D model and (Z, Y, X) for a 3-D one;
- the *masked training* network: raw patches and blind-spot coordinates (B, M, n_dim) -> K samples
  at the masked pixels only (B, M, K). The U-Net body runs on the whole patch, but the head and everything
  after it (noise model, loss) run at the M masked pixels, which is what makes PN2V train at the
  cost of N2V.

The U-Net follows the PN2V reference: ``n_depth`` resolution levels with two convolutions each,
max pooling down (by ``pool`` per axis, 2 by default), transposed convolutions up by the same
factors, skip connections merged by addition. 2-D and 3-D differ only in the layer classes
(:data:`LAYERS`). The head is a
``Dense`` layer (a 1x1 convolution when applied to an image) whose K outputs start close together
(:class:`SampleHeadInitializer`).
"""

import keras
import numpy as np
from keras import layers, ops


@keras.saving.register_keras_serializable(package="pn2v_tf")
class Standardize(layers.Layer):
    """``(x - mean) / std``, or its inverse ``x * std + mean`` with ``inverse=True``.

    The one place where raw intensities and the network's normalised units meet.
    """

    def __init__(self, mean=0.0, std=1.0, **kwargs):
        super().__init__(**kwargs)
        self.mean = float(mean)
        self.std = float(std)

    def call(self, inputs, inverse=False):
        if inverse:
            return inputs * self.std + self.mean
        return (inputs - self.mean) / self.std

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "std": self.std}


@keras.saving.register_keras_serializable(package="pn2v_tf")
class GatherPixels(layers.Layer):
    """Feature vectors (B, *spatial, F) at integer coordinates (B, M, n_dim) -> (B, M, F)."""

    def call(self, features, coords):
        shape = ops.shape(features)
        n_dim = len(features.shape) - 2
        flat = ops.reshape(features, (shape[0], -1, shape[-1]))
        coords = ops.cast(coords, "int32")
        index = coords[..., 0]
        for axis in range(1, n_dim):
            index = index * shape[axis + 1] + coords[..., axis]
        return ops.take_along_axis(flat, ops.expand_dims(index, -1), axis=1)

    def compute_output_shape(self, features_shape, coords_shape):
        return (features_shape[0], coords_shape[1], features_shape[-1])


@keras.saving.register_keras_serializable(package="pn2v_tf")
class SampleHeadInitializer(keras.initializers.Initializer):
    """Kernel (F, K) of the K-sample head: one shared Glorot-uniform column, as a one-output head
    would get, plus ``spread`` times an independent Glorot-uniform kernel.

    The K prior samples then start as near copies of one prediction and spread out as training
    asks for it. With independent columns (Glorot over (F, K)) they start as K unrelated
    functions of the features, most of them far from the data; the PN2V loss gives a sample a
    gradient only where its likelihood is not negligible, so such samples stay wrong for long and
    make the prior too wide (on FMD data this cost histogram-PN2V 0.63 to 1.02 dB at the quick budget
    of ``benchmarks/fmd_table1.py``; BENCHMARKS.md).

    Parameters
    ----------
    spread : float
        Scale of the per-sample part, > 0 (0 would keep all samples equal forever). Default: 0.01.
    seed : int or None
        Seed of both parts.
    """

    def __init__(self, spread=0.01, seed=None):
        self.spread = float(spread)
        self.seed = seed

    def __call__(self, shape, dtype=None):
        shared_seed = None if self.seed is None else self.seed + 1
        shared = keras.initializers.GlorotUniform(seed=shared_seed)((shape[0], 1), dtype=dtype)
        per_sample = keras.initializers.GlorotUniform(seed=self.seed)(shape, dtype=dtype)
        return shared + self.spread * per_sample

    def get_config(self):
        return {"spread": self.spread, "seed": self.seed}


#: Convolution, pooling and transposed-convolution layer classes per number of spatial axes.
LAYERS = {2: (layers.Conv2D, layers.MaxPooling2D, layers.Conv2DTranspose),
          3: (layers.Conv3D, layers.MaxPooling3D, layers.Conv3DTranspose)}


def block_size(n_depth, pool=2):
    """Image sides must be multiples of this (one pixel at the coarsest level): ``pool**(n_depth-1)``,
    per axis when ``pool`` is a tuple."""
    if isinstance(pool, (tuple, list)):
        return tuple(block_size(n_depth, p) for p in pool)
    return int(pool) ** (n_depth - 1)


def receptive_radius(n_depth, kern_size, pool=2):
    """Upper bound of how far (pixels) an output pixel sees in each direction; per axis when
    ``pool`` is a tuple.

    With pooling factor p, level l works at scale p**l. Down level l: two convolutions and a
    pooling window of p at that scale; bottom: two convolutions; up level l: a transposed
    convolution of kernel p and two convolutions at that scale.
    """
    if isinstance(pool, (tuple, list)):
        return tuple(receptive_radius(n_depth, kern_size, p) for p in pool)
    conv = 2 * (kern_size // 2)
    down = sum((conv + pool - 1) * pool ** level for level in range(n_depth - 1))
    bottom = conv * pool ** (n_depth - 1)
    return 2 * down + bottom


def network_geometry(config):
    """(block, radius) per spatial axis of a configuration's network: image sides are multiples of
    ``block``; an output pixel sees input pixels up to ``radius`` away."""
    return (block_size(config.unet_n_depth, tuple(config.unet_pool)),
            receptive_radius(config.unet_n_depth, config.unet_kern_size, tuple(config.unet_pool)))


class UNetLayers:
    """The layers of the U-Net body and the head; calling it applies them to a tensor."""

    def __init__(self, n_depth, n_first, kern_size, n_outputs, mean, std, samples_init_spread=0.01, pool=(2, 2)):
        pool = tuple(int(p) for p in pool)
        conv_class, pool_class, transpose_class = LAYERS[len(pool)]
        conv = dict(kernel_size=kern_size, padding="same", activation="relu")
        self.standardize = Standardize(mean, std, name="standardize")
        self.down = [
            [conv_class(n_first * 2 ** level, name=f"down{level}_conv{i}", **conv) for i in (1, 2)]
            for level in range(n_depth)
        ]
        self.pool = [pool_class(pool, name=f"down{level}_pool") for level in range(n_depth - 1)]
        self.up = [
            transpose_class(n_first * 2 ** level, pool, strides=pool, name=f"up{level}_transpose")
            for level in range(n_depth - 1)
        ]
        self.up_convs = [
            [conv_class(n_first * 2 ** level, name=f"up{level}_conv{i}", **conv) for i in (1, 2)]
            for level in range(n_depth - 1)
        ]
        self.merge = [layers.Add(name=f"up{level}_merge") for level in range(n_depth - 1)]
        head_init = SampleHeadInitializer(samples_init_spread) if n_outputs > 1 else "glorot_uniform"
        self.head = layers.Dense(n_outputs, kernel_initializer=head_init, name="head")

    def features(self, image):
        """Raw image (B, *spatial, 1) -> last-level features (B, *spatial, n_first)."""
        x = self.standardize(image)
        skips = []
        for level, (conv1, conv2) in enumerate(self.down):
            x = conv2(conv1(x))
            if level < len(self.pool):
                skips.append(x)
                x = self.pool[level](x)
        for level in reversed(range(len(self.up))):
            x = self.merge[level]([self.up[level](x), skips[level]])
            conv1, conv2 = self.up_convs[level]
            x = conv2(conv1(x))
        return x

    def samples(self, features):
        """Features (..., F) -> outputs (..., K) in raw intensity units."""
        return self.standardize(self.head(features), inverse=True)


def build_networks(config):
    """Prediction and masked-training Keras models for a :class:`PN2VConfig` (2-D or 3-D).

    Returns
    -------
    prediction : keras.Model
        ``image`` (B, *spatial, 1) -> (B, *spatial, K) samples (K = 1 for modes 'n2v' and 'care').
    masked : keras.Model
        ``{'image': (B, *spatial, 1), 'coords': (B, M, n_dim)}`` -> (B, M, K), the same outputs at the
        coordinates.
    """
    n_dim = config.n_dim
    net = UNetLayers(config.unet_n_depth, config.unet_n_first, config.unet_kern_size,
                     config.n_outputs, config.means[0], config.stds[0], config.samples_init_spread,
                     pool=config.unet_pool)
    image = keras.Input((None,) * n_dim + (1,), name="image")
    features = net.features(image)
    prediction = keras.Model(image, net.samples(features), name="pn2v_prediction")

    patches = keras.Input((None,) * n_dim + (1,), name="image")
    coords = keras.Input((None, n_dim), dtype="int32", name="coords")
    gathered = GatherPixels(name="gather")(net.features(patches), coords)
    masked = keras.Model({"image": patches, "coords": coords}, net.samples(gathered), name="pn2v_masked")
    return prediction, masked


def count_forward_flops_per_pixel(config):
    """Multiply-adds x 2 of one forward pass per input pixel (convolutions and head)."""
    kernel = config.unet_kern_size ** config.n_dim
    shrink = int(np.prod(config.unet_pool))  # pixels per pixel of the next level
    flops, c_in = 0.0, 1
    for level in range(config.unet_n_depth):
        c = config.unet_n_first * 2 ** level
        flops += 2 * kernel * (c_in * c + c * c) / shrink ** level
        c_in = c
    for level in range(config.unet_n_depth - 1):
        c = config.unet_n_first * 2 ** level
        flops += 2 * (2 * c * c) / shrink ** level + 2 * kernel * 2 * c * c / shrink ** level
    flops += 2 * config.unet_n_first * config.n_outputs
    return float(np.round(flops))
