"""From prior samples to estimates (MMSE, prior mean, posterior samples), tile by tile.

The estimators are the paper's formulas on tensors; :class:`TilePredictor` runs the network on one
tile (a ``tf.function``) and the estimator, compiled by XLA, on the part of it that is kept, so
memory grows with the tile, not with image x K; :func:`predict_tiled` cuts a 2-D or 3-D image into
overlapping tiles and stitches the results with CSBDeep's tile iterator.
"""

import warnings

import numpy as np
import tensorflow as tf
from csbdeep.internals.predict import tile_iterator

ESTIMATORS = ("mmse", "prior_mean", "posterior")

#: Default bound on tile pixels x K of the largest temporary tensor (float32 elements).
DEFAULT_MAX_TILE_ELEMENTS = 2 ** 26


def mmse(observation, samples, noise_model):
    """Paper Eq. 10: ``sum_k p(x|s_k) s_k / sum_k p(x|s_k)``, as a softmax over log-likelihoods
    (reading a histogram's probabilities directly and dividing two sums was slower under XLA on
    CPU), of the samples as the likelihood sees them (``noise_model.clip_signal``).

    Parameters
    ----------
    observation : tensor (..., 1)
        Noisy values x, raw units.
    samples : tensor (..., K)
        Prior samples s_k, raw units.
    noise_model : pn2v_tf.noise_models.NoiseModel
    """
    samples = noise_model.clip_signal(samples)
    weights = tf.nn.softmax(noise_model.log_likelihood(observation, samples), axis=-1)
    return tf.reduce_sum(weights * samples, axis=-1, keepdims=True)


def prior_mean(samples, noise_model=None):
    """Mean of the prior samples, ``(1/K) sum_k s_k``; with a noise model, of the samples as its
    likelihood sees them (``noise_model.clip_signal``), as in :func:`mmse`."""
    if noise_model is not None:
        samples = noise_model.clip_signal(samples)
    return tf.reduce_mean(samples, axis=-1, keepdims=True)


def posterior_samples(observation, samples, noise_model, n, seed):
    """``n`` draws per pixel from the posterior: prior samples resampled with weights p(x|s_k).

    Returns a tensor (..., n).
    """
    samples = noise_model.clip_signal(samples)
    log_weights = noise_model.log_likelihood(observation, samples)
    shape = tf.shape(samples)
    flat = tf.reshape(log_weights, (-1, shape[-1]))
    picks = tf.random.stateless_categorical(flat, n, seed=seed, dtype=tf.int32)
    drawn = tf.gather(tf.reshape(samples, (-1, shape[-1])), picks, batch_dims=1)
    return tf.reshape(drawn, tf.concat([shape[:-1], [n]], axis=0))


class TilePredictor:
    """Network plus estimator for one tile: the network traced per tile shape, the estimator per
    shape of the kept part.

    Parameters
    ----------
    network : keras.Model
        Raw image (B, *spatial, 1) -> samples (B, *spatial, K), spatial (Y, X) or (Z, Y, X).
    noise_model : NoiseModel or None
        Needed for 'mmse' and 'posterior' when K > 1.
    estimator : str
        'mmse', 'prior_mean' or 'posterior'.
    n_posterior : int
        Draws per pixel for 'posterior'.
    seed : int
        Seed of the posterior draws.
    jit_compile : bool
        Compile the estimator (likelihood lookup, weights, sum) with XLA.
    """

    def __init__(self, network, noise_model=None, estimator="mmse", n_posterior=1, seed=0, jit_compile=True):
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
        self.n_outputs = network.output_shape[-1]
        self.n_dim = len(network.output_shape) - 2
        if self.n_outputs > 1 and estimator != "prior_mean" and noise_model is None:
            raise ValueError(f"estimator {estimator!r} needs a noise model")
        self.network = network
        self.noise_model = noise_model
        self.estimator = estimator
        self.n_posterior = int(n_posterior)
        self.seed = int(seed)
        self.n_channels_out = self.n_posterior if estimator == "posterior" else 1
        self._network = tf.function(self._network_eager, reduce_retracing=True)
        self._estimate = tf.function(self._estimate_eager, jit_compile=jit_compile)

    def _network_eager(self, tile):
        return self.network(tile, training=False)

    def _estimate_eager(self, observation, samples, seed, start, size):
        # The estimate only where the result is kept (a tile's context is there for the network).
        # ``size`` holds Python ints, so XLA slices without copying the samples and compiles once
        # per crop shape (a tiling has at most 3**n_dim); ``start`` is a tensor.
        begin = tf.concat([[0], start, [0]], axis=0)
        observation, samples = (tf.slice(t, begin, [-1, *size, -1]) for t in (observation, samples))
        if self.n_outputs == 1:
            return tf.repeat(samples, self.n_channels_out, axis=-1)
        if self.estimator == "mmse":
            return mmse(observation, samples, self.noise_model)
        if self.estimator == "prior_mean":
            return prior_mean(samples, self.noise_model)
        return posterior_samples(observation, samples, self.noise_model, self.n_posterior, seed)

    def __call__(self, tile, tile_index=0, crop=None):
        """Estimate for a tile (*spatial) or (B, *spatial, 1) -> (*spatial, C) / (B, *spatial, C) as NumPy.

        With ``crop`` (one slice per spatial axis, as a tile iterator gives them) the estimate is
        computed and returned for that part of the tile only.
        """
        tile = np.asarray(tile, dtype=np.float32)
        batched = tile.ndim == self.n_dim + 2
        x = tf.constant(tile if batched else tile[np.newaxis, ..., np.newaxis])
        crop = (slice(None),) * self.n_dim if crop is None else crop
        bounds = [c.indices(n)[:2] for c, n in zip(crop, x.shape[1:-1])]
        start = tf.constant([low for low, _ in bounds], dtype=tf.int32)
        size = tuple(int(high - low) for low, high in bounds)
        seed = tf.constant([self.seed, tile_index], dtype=tf.int32)
        out = self._estimate(x, self._network(x), seed, start, size).numpy()
        return out if batched else out[0]


def tile_context(overlap, block):
    """Context (pixels) a tile gets on each side: ``overlap`` rounded up to whole blocks (per axis
    when both are tuples)."""
    if isinstance(block, (tuple, list)):
        return tuple(tile_context(o, b) for o, b in zip(overlap, block))
    return -(-int(overlap) // block) * block


def auto_n_tiles(shape, n_outputs, max_elements=DEFAULT_MAX_TILE_ELEMENTS, context=0):
    """Fewest tiles per axis so that a tile, with ``context`` pixels on each side (an int, or one
    per axis), times ``n_outputs`` stays below ``max_elements`` (as far as tiles can shrink).

    The axis whose tiles are longest is split next (doubling its tiles)."""
    contexts = context if isinstance(context, (tuple, list)) else (context,) * len(shape)
    n_tiles = [1] * len(shape)

    def tile_elements():
        return np.prod([np.ceil(s / n) + 2 * c * (n > 1) for s, n, c in zip(shape, n_tiles, contexts)]) * n_outputs

    while tile_elements() > max_elements:
        splittable = [n * 2 <= s / max(c, 1) for s, n, c in zip(shape, n_tiles, contexts)]
        if not any(splittable):
            break
        lengths = [s / n if ok else -1 for s, n, ok in zip(shape, n_tiles, splittable)]
        n_tiles[int(np.argmax(lengths))] *= 2
    return tuple(n_tiles)


def _per_axis(value, n_dim):
    return tuple(int(v) for v in value) if isinstance(value, (tuple, list)) else (int(value),) * n_dim


def pad_to_blocks(image, block):
    """Pad at the end of each axis to multiples of ``block`` (an int or one per axis): reflection,
    or symmetric padding where the image is too small to reflect (the exported graph does the same)."""
    block = _per_axis(block, image.ndim)
    padding = [(0, (-s) % b) for s, b in zip(image.shape, block)]
    mode = "reflect" if max(max(p) for p in padding) < min(image.shape) else "symmetric"
    return np.pad(image, padding, mode=mode)


def predict_tiled(predict_tile, image, n_tiles, block, overlap, n_channels_out=1, first_index=0):
    """Apply ``predict_tile`` to overlapping tiles of a 2-D or 3-D image and stitch the results.

    Parameters
    ----------
    predict_tile : callable
        ``(tile, tile_index, crop) -> (*crop shape, C)``, the result for the part ``crop`` (one slice
        per axis) of the tile; its output at a pixel may depend on pixels up to ``overlap`` away.
    image : numpy.ndarray (Y, X) or (Z, Y, X)
    n_tiles : tuple of int
        Tiles along each axis.
    block : int or tuple of int
        Tile borders and image sides are multiples of this (per axis); the image is reflect-padded
        to it.
    overlap : int or tuple of int
        Context (pixels, per axis) each tile gets beyond the part of it that is kept.
    n_channels_out : int
        C.
    first_index : int
        Index passed with the first tile (tiles are numbered on from it).

    Returns
    -------
    numpy.ndarray (*image.shape, C)
    """
    n_dim = image.ndim
    block, overlap = _per_axis(block, n_dim), _per_axis(overlap, n_dim)
    padded = pad_to_blocks(image, block)
    n_tiles = tuple(int(n) for n in n_tiles)
    if all(n == 1 for n in n_tiles):
        result = predict_tile(padded, first_index, (slice(None),) * n_dim)
    else:
        result = np.empty(padded.shape + (n_channels_out,), dtype=np.float32)
        n_overlap = tuple(c // b for c, b in zip(tile_context(overlap, block), block))
        tiles = tile_iterator(padded, n_tiles=n_tiles, block_sizes=block, n_block_overlaps=n_overlap)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="invalid value .* for 'n_tiles'")
            for index, (tile, crop, target) in enumerate(tiles):
                result[target] = predict_tile(tile, first_index + index, crop)
    return result[tuple(slice(0, s) for s in image.shape)]
