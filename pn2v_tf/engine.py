"""The prediction engine: U-Net features of a tile, then the K-sample head and the estimator in
chunks of pixels.

Only the K samples per pixel (and channel) are large; the network's last features (``unet_n_first`` channels)
are not. The engine therefore runs the U-Net body on a whole tile (whose size is bounded by the
features it holds, not by K), keeps the features of the part of the tile whose result is kept, and
passes them through the head (F -> C * K, or per channel F -> K for independent per-channel networks)
and the estimator a fixed number of pixels at a time, so that the samples of one chunk exist at a
time. Each channel's samples are weighted by its own noise model. Chunks have one shape, so a chunk's
head and estimator (compiled together by XLA in :meth:`PN2V.predict`) compile once per estimator, and
the body is traced once for every tile shape (its spatial sides are dynamic).

:meth:`pn2v_tf.PN2V.predict`, :meth:`~pn2v_tf.PN2V.sample_posterior` and the exported SavedModel
(:mod:`pn2v_tf.export`) all build their graphs with :meth:`PredictionEngine.estimate_kept`.
"""

import logging

import keras
import numpy as np
import tensorflow as tf

from ._checks import DTYPE_POLICIES
from .inference import ESTIMATORS, mmse, posterior_samples, prior_mean

#: Default bound on the elements (pixels x K) of the samples of one chunk: 8 MB of float32 (2621
#: pixels at K = 800). Much larger chunks leave the processor's caches; much smaller ones pay the
#: loop's overhead more often.
DEFAULT_CHUNK_ELEMENTS = 2 ** 21


class _EngineRetracingFilter(logging.Filter):
    """Drops TensorFlow's warning that tf.functions of one Python function were traced often when it is
    about the engine's tile functions: every engine (every model) makes its own, traced once per tile
    shape by design, so a process with several models would otherwise be told of "retracing"."""

    def filter(self, record):
        return "PredictionEngine._tile_function" not in record.getMessage()


tf.get_logger().addFilter(_EngineRetracingFilter())


#: Layers of a prediction network that are not part of the U-Net body: they stay float32.
_NOT_BODY = ("image", "standardize", "features")


def _features_model(features, dtype_policy=None):
    """``features`` (the network from its input to the head's input) with the body's layers in
    ``dtype_policy`` (None: ``features`` itself): a copy whose weights are set from ``features``."""
    if dtype_policy not in (None,) + DTYPE_POLICIES:
        raise ValueError(f"dtype_policy must be one of {DTYPE_POLICIES}, got {dtype_policy!r}")
    body = [layer for layer in features.layers if layer.name not in _NOT_BODY]
    if dtype_policy is None or all(layer.dtype_policy.name == dtype_policy for layer in body):
        return features

    def with_policy(layer):
        config = layer.get_config()
        if layer.name not in _NOT_BODY:
            config["dtype"] = dtype_policy
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(features, clone_function=with_policy)
    copy.set_weights(features.get_weights())
    return copy


class PredictionEngine:
    """U-Net body per tile, head and estimator per chunk of pixels, for 2-D and 3-D networks.

    Parameters
    ----------
    network : keras.Model
        A prediction network of :func:`pn2v_tf.nets.build_networks`: raw image (B, *spatial, C) ->
        samples (B, *spatial, C * K); it must have the layers ``head`` and ``standardize``.
    noise_model : NoiseModel or None
        Needed for 'mmse' and 'posterior' when K > 1; for several channels one model for all, or a
        :class:`~pn2v_tf.noise_models.ChannelNoiseModels`.
    chunk_elements : int
        Bound on chunk pixels x C x K; a chunk holds at least one pixel.
    jit_compile : bool
        Compile the per-chunk head (its matrix product included) and estimator with XLA, as one
        function per chunk shape. The exported graph does so only when asked
        (:func:`pn2v_tf.export.export_saved_model`): TensorFlow Java on a GPU cannot run XLA.
    dtype_policy : str or None
        Keras dtype policy of the U-Net body for this engine (``'float32'`` or ``'mixed_bfloat16'``,
        ``pn2v_tf._checks.DTYPE_POLICIES``); None: the network's own. Another policy runs a copy of
        the body with the same weights. The features enter the head as float32 either way.
    """

    def __init__(self, network, noise_model=None, chunk_elements=DEFAULT_CHUNK_ELEMENTS, jit_compile=True,
                 dtype_policy=None):
        try:
            self.head = network.get_layer("head")
            standardize = network.get_layer("standardize")
        except ValueError as error:
            raise ValueError("the network must come from pn2v_tf.nets.build_networks "
                             "(layers 'head' and 'standardize')") from error
        self.network = network
        self.noise_model = noise_model
        self.n_dim = len(network.output_shape) - 2
        self.n_channels = int(network.input_shape[-1])
        self.n_outputs = int(network.output_shape[-1]) // self.n_channels
        self.n_features = int(self.head.input.shape[-1])
        self.groups = int(getattr(self.head, "groups", 1))
        self.mean, self.std = standardize.per_value(self.n_channels * self.n_outputs, inverse=True)
        self._network_features = keras.Model(network.input, self.head.input, name="pn2v_features")
        self.features = _features_model(self._network_features, dtype_policy)
        residual = [layer for layer in network.layers if layer.name == "residual"]
        self.residual_mean = np.float32(residual[0].mean).reshape(-1, 1) if residual else None
        self.chunk_pixels = max(1, int(chunk_elements) // (self.n_channels * self.n_outputs))
        self.jit_compile = bool(jit_compile)
        self._chunk_functions = {}
        self._tile_functions = {}

    def sync_weights(self):
        """Copy the network's current weights into the body of another dtype policy (after training)."""
        if self.features is not self._network_features:
            self.features.set_weights(self._network_features.get_weights())

    # -- graph building ------------------------------------------------------------------------
    def check_estimator(self, estimator):
        """Raise ``ValueError`` for an unknown estimator or one that needs the missing noise model."""
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
        if self.n_outputs > 1 and estimator != "prior_mean" and self.noise_model is None:
            raise ValueError(f"estimator {estimator!r} needs a noise model")

    def estimate_kept(self, tile, begin, size, estimator="mmse", n_posterior=1, seed=None, chunk_pixels=None):
        """Graph of the estimate for the part of ``tile`` (B, *spatial, 1) that is kept.

        Parameters
        ----------
        tile : tensor (B, *spatial, C)
            Raw intensities; the body sees all of it (the context).
        begin, size : int32 tensors (n_dim,)
            First pixel and extent of the kept part along each spatial axis.
        estimator : str
            'mmse', 'prior_mean' or 'posterior'.
        n_posterior : int
            Draws per pixel for 'posterior'.
        seed : int32 tensor (2,) or None
            Seed of the posterior draws (each chunk folds in its index).
        chunk_pixels : int or None
            Pixels per chunk, at most ``self.chunk_pixels`` (the default); smaller for tiles whose
            kept part is smaller than a chunk, which would otherwise be padded to a whole one.

        Returns
        -------
        tensor (B, *size, C * n), n = ``n_posterior`` for 'posterior', else 1 (channel-major).
        """
        self.check_estimator(estimator)
        n_out = int(n_posterior) if estimator == "posterior" else 1
        full_begin = tf.concat([[0], begin, [0]], axis=0)
        full_size = tf.concat([[-1], size, [-1]], axis=0)
        features = tf.slice(tf.cast(self.features(tile, training=False), tf.float32), full_begin, full_size)
        observation = tf.slice(tile, full_begin, full_size)
        out_shape = tf.concat([tf.shape(observation)[:-1], [self.n_channels * n_out]], axis=0)
        flat_features = tf.reshape(features, (-1, self.n_features))
        flat_observation = tf.reshape(observation, (-1, self.n_channels, 1))
        if self.n_outputs == 1:  # N2V / CARE: the head's one output is the result (no chunks needed)
            out = self._samples(self._product(flat_features))
            if self.residual_mean is not None:  # unet_residual: the network predicts the change of its input
                out = out + flat_observation - self.residual_mean
            out = tf.repeat(out, n_out, axis=-1)
        else:
            out = self._in_chunks(flat_observation, flat_features, estimator, n_out, seed,
                                  min(chunk_pixels or self.chunk_pixels, self.chunk_pixels))
        return tf.reshape(out, out_shape)

    def samples(self, image):
        """Graph of the K samples of every pixel of ``image`` (B, *spatial, C) at once: (B, *spatial, C * K)
        in raw units, channel-major, as the network gives them (its body in this engine's policy)."""
        features = tf.cast(self.features(image, training=False), tf.float32)
        samples = self._samples(self._product(tf.reshape(features, (-1, self.n_features))))
        return tf.reshape(samples, tf.concat([tf.shape(features)[:-1], [self.n_channels * self.n_outputs]], axis=0))

    def _kernel(self):
        """The head's kernel (G, F, C * K / G) with the output normalisation folded in: ``kernel * std``."""
        kernel = tf.convert_to_tensor(self.head.kernel.value)
        kernel = tf.reshape(kernel, (self.groups, -1, kernel.shape[-1]))
        return kernel * tf.reshape(self.std, (self.groups, 1, -1))

    def _product(self, features):
        """Features (N, G * F) -> ``features @ _kernel()`` per group, (N, C * K)."""
        kernel = self._kernel()
        if self.groups == 1:
            return tf.matmul(features, kernel[0])
        grouped = tf.transpose(tf.reshape(features, (-1, self.groups, kernel.shape[1])), (1, 0, 2))
        return tf.reshape(tf.transpose(tf.matmul(grouped, kernel), (1, 0, 2)), (-1, self.n_channels * self.n_outputs))

    def _samples(self, product):
        """``_product`` (pixels, C * K) -> samples (pixels, C, K) in raw units: the network's
        ``(features @ kernel + bias) * std + mean`` with one addition per sample."""
        offset = tf.convert_to_tensor(self.head.bias.value) * self.std + self.mean
        return tf.reshape(product + offset, (-1, self.n_channels, self.n_outputs))

    def _chunk_function(self, estimator, n_out):
        key = (estimator, n_out)
        if key not in self._chunk_functions:
            def estimate_channel(observation, samples, noise_model, seed, tables):
                if estimator == "mmse":
                    return mmse(observation, samples, noise_model, tables)
                if estimator == "prior_mean":
                    return prior_mean(samples, noise_model)
                return posterior_samples(observation, samples, noise_model, n_out, seed)

            def estimate_chunk(observation, features, seed, tables):
                # channel by channel on (pixels, K) tensors: XLA compiles the histogram's lookups of
                # a 2-D index tensor much faster than of (pixels, C, K)
                samples = self._samples(self._product(features))
                per_channel = [estimate_channel(observation[:, c], samples[:, c], self._channel_noise_model(c),
                                                seed if c == 0 else tf.random.experimental.stateless_fold_in(seed, c),
                                                tables[c])
                               for c in range(self.n_channels)]
                return tf.stack(per_channel, axis=1)

            self._chunk_functions[key] = (tf.function(estimate_chunk, jit_compile=True, autograph=False)
                                          if self.jit_compile else estimate_chunk)
        return self._chunk_functions[key]

    def _channel_noise_model(self, channel):
        models = getattr(self.noise_model, "models", None)
        return self.noise_model if models is None else models[channel]

    def _in_chunks(self, observation, features, estimator, n_out, seed, chunk):
        """(N, C, 1) observations and (N, G * F) features -> (N, C * n_out), ``chunk`` pixels at a time."""
        n = tf.shape(features)[0]
        n_chunks = (n + chunk - 1) // chunk
        features = tf.pad(features, [[0, n_chunks * chunk - n], [0, 0]])
        observation = tf.pad(observation, [[0, n_chunks * chunk - n], [0, 0], [0, 0]])
        estimate_chunk = self._chunk_function(estimator, n_out)
        seed = tf.zeros([2], tf.int32) if seed is None else seed
        # derived once for all chunks: inside the compiled chunk XLA would derive them per weight
        tables = tuple(self._channel_noise_model(c).weight_tables(packed=not self.jit_compile)
                       if estimator == "mmse" else ()
                       for c in range(self.n_channels))
        n_values = self.n_channels * n_out
        results = tf.TensorArray(tf.float32, size=n_chunks, element_shape=(chunk, n_values))

        def body(index, results):
            chunk_features = tf.slice(features, tf.stack([index * chunk, 0]), [chunk, -1])
            chunk_observation = tf.slice(observation, tf.stack([index * chunk, 0, 0]), [chunk, -1, -1])
            chunk_seed = tf.random.experimental.stateless_fold_in(seed, index)
            estimate = estimate_chunk(chunk_observation, chunk_features, chunk_seed, tables)
            return index + 1, results.write(index, tf.reshape(estimate, (chunk, n_values)))

        # one chunk at a time: that is the memory bound
        _, results = tf.while_loop(lambda index, _: index < n_chunks, body, (tf.constant(0), results),
                                   parallel_iterations=1)
        return results.concat()[:n]

    # -- NumPy interface -------------------------------------------------------------------------
    def chunk_for(self, n_pixels):
        """Pixels per chunk for ``n_pixels`` kept pixels: ``chunk_pixels``, or the power of two (at
        least 64) that holds them when they are fewer, so that few chunk shapes are compiled."""
        return min(self.chunk_pixels, max(64, 1 << (max(int(n_pixels), 1) - 1).bit_length()))

    def _tile_function(self, estimator, n_posterior, chunk_pixels):
        key = (estimator, int(n_posterior), int(chunk_pixels))
        if key not in self._tile_functions:
            spec = tf.TensorSpec((None,) * (self.n_dim + 1) + (self.n_channels,), tf.float32)
            index_spec = tf.TensorSpec((self.n_dim,), tf.int32)

            def estimate(tile, begin, size, seed):
                return self.estimate_kept(tile, begin, size, estimator, n_posterior, seed, chunk_pixels)

            self._tile_functions[key] = tf.function(
                estimate, input_signature=[spec, index_spec, index_spec, tf.TensorSpec((2,), tf.int32)])
        return self._tile_functions[key]

    def __call__(self, tile, crop=None, estimator="mmse", n_posterior=1, seed=(0, 0)):
        """Estimate for a tile -> NumPy: (*spatial) or (*spatial, C) -> (*spatial, C * n);
        (B, *spatial, C) -> (B, *spatial, C * n), channel-major, n = ``n_posterior`` or 1.

        With ``crop`` (one slice per spatial axis, as a tile iterator gives them; more are
        ignored) the estimate is computed and returned for that part of the tile only. ``seed``
        (two ints) seeds the posterior draws.
        """
        self.check_estimator(estimator)
        tile = np.asarray(tile, dtype=np.float32)
        batched = tile.ndim == self.n_dim + 2
        x = tile if batched else tile.reshape((1,) + tile.shape[:self.n_dim] + (self.n_channels,))
        crop = (slice(None),) * self.n_dim if crop is None else tuple(crop)[:self.n_dim]
        bounds = [c.indices(n)[:2] for c, n in zip(crop, x.shape[1:-1])]
        begin = np.array([low for low, _ in bounds], dtype=np.int32)
        size = np.array([high - low for low, high in bounds], dtype=np.int32)
        function = self._tile_function(estimator, n_posterior, self.chunk_for(x.shape[0] * int(np.prod(size))))
        out = function(tf.constant(x), tf.constant(begin), tf.constant(size),
                       tf.constant(np.asarray(seed, dtype=np.int32))).numpy()
        return out if batched else out[0]
