"""From prior samples to estimates (MMSE, prior mean, posterior samples), and the tiling of images.

The estimators are the paper's formulas on tensors (:mod:`pn2v_tf.engine` applies them chunk by
chunk); :func:`predict_tiled` cuts a 2-D or 3-D image into overlapping tiles and stitches the
results with CSBDeep's tile iterator; :func:`auto_n_tiles` picks the fewest tiles whose network
features stay within a bound.
"""

import warnings

import numpy as np
import tensorflow as tf
from csbdeep.internals.predict import tile_iterator

ESTIMATORS = ("mmse", "prior_mean", "posterior")

#: Default bound on the features of one tile: tile pixels (context included) x the network's
#: full-resolution feature channels (``unet_n_first``), in float32 elements (128 MB). The network's
#: largest activations are of this size; the K samples are bounded separately, per chunk of pixels
#: (:data:`pn2v_tf.engine.DEFAULT_CHUNK_ELEMENTS`).
DEFAULT_MAX_TILE_ELEMENTS = 2 ** 25


def mmse(observation, samples, noise_model, tables=None):
    """Paper Eq. 10: ``sum_k p(x|s_k) s_k / sum_k p(x|s_k)`` of the samples as the likelihood sees
    them (``noise_model.clip_signal``), with the noise model's ``likelihood_weights`` as p(x|s_k).

    Numerator and denominator are the real and imaginary parts of one complex sum,
    ``sum_k w_k (s_k + i)``: XLA computes the weights once and reduces both in one pass over the samples
    (with two real sums it computes the weights for each, or writes them out and reads them back).

    Parameters
    ----------
    observation : tensor (..., 1)
        Noisy values x, raw units.
    samples : tensor (..., K)
        Prior samples s_k, raw units.
    noise_model : pn2v_tf.noise_models.NoiseModel
    tables : tuple or None
        The noise model's ``weight_tables()``, when computed once for many calls.
    """
    samples = noise_model.clip_signal(samples)
    weights = noise_model.likelihood_weights(observation, samples, tables)
    sums = tf.reduce_sum(tf.complex(weights * samples, weights), axis=-1, keepdims=True)
    return tf.math.real(sums) / tf.math.imag(sums)


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


def tile_context(overlap, block):
    """Context (pixels) a tile gets on each side: ``overlap`` rounded up to whole blocks (per axis
    when both are tuples)."""
    if isinstance(block, (tuple, list)):
        return tuple(tile_context(o, b) for o, b in zip(overlap, block))
    return -(-int(overlap) // block) * block


def auto_n_tiles(shape, n_channels, max_elements=DEFAULT_MAX_TILE_ELEMENTS, context=0):
    """Fewest tiles per axis so that a tile, with ``context`` pixels on each side (an int, or one
    per axis), times ``n_channels`` stays below ``max_elements`` (as far as tiles can shrink).

    The axis whose tiles are longest is split next (doubling its tiles)."""
    contexts = context if isinstance(context, (tuple, list)) else (context,) * len(shape)
    n_tiles = [1] * len(shape)

    def tile_elements():
        return np.prod([np.ceil(s / n) + 2 * c * (n > 1) for s, n, c in zip(shape, n_tiles, contexts)]) * n_channels

    while tile_elements() > max_elements:
        splittable = [n * 2 <= s / max(c, 1) for s, n, c in zip(shape, n_tiles, contexts)]
        if not any(splittable):
            break
        lengths = [s / n if ok else -1 for s, n, ok in zip(shape, n_tiles, splittable)]
        n_tiles[int(np.argmax(lengths))] *= 2
    return tuple(n_tiles)


def _per_axis(value, n_dim):
    return tuple(int(v) for v in value) if isinstance(value, (tuple, list)) else (int(value),) * n_dim


def pad_to_blocks(image, block, n_dim=None):
    """Pad at the end of each spatial axis (the first ``n_dim``, default all) to multiples of
    ``block`` (an int or one per spatial axis): reflection, or symmetric padding where the image is
    too small to reflect (the exported graph does the same)."""
    n_dim = image.ndim if n_dim is None else n_dim
    block = _per_axis(block, n_dim)
    padding = [(0, (-s) % b) for s, b in zip(image.shape, block)] + [(0, 0)] * (image.ndim - n_dim)
    mode = "reflect" if max(max(p) for p in padding) < min(image.shape[:n_dim]) else "symmetric"
    return np.pad(image, padding, mode=mode)


def _tiles(image, n_tiles, block, overlap):
    """CSBDeep's tiles (tile, crop, target) of an image padded to ``block``, with ``overlap`` context."""
    n_overlap = tuple(c // b for c, b in zip(tile_context(overlap, block), block))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="invalid value .* for 'n_tiles'")
        yield from tile_iterator(image, n_tiles=n_tiles, block_sizes=block, n_block_overlaps=n_overlap)


def count_tiles(shape, n_tiles, block, overlap):
    """How many tiles :func:`predict_tiled` cuts from an image of ``shape``, which can differ from
    ``prod(n_tiles)`` both ways (CSBDeep's iterator fits whole blocks and the context to the image)."""
    n_dim = len(shape)
    block, overlap, n_tiles = _per_axis(block, n_dim), _per_axis(overlap, n_dim), _per_axis(n_tiles, n_dim)
    if all(n == 1 for n in n_tiles):
        return 1
    padded = np.broadcast_to(np.float32(0), tuple(s + (-s) % b for s, b in zip(shape, block)))  # no memory
    return sum(1 for _ in _tiles(padded, n_tiles, block, overlap))


def predict_tiled(predict_tile, image, n_tiles, block, overlap, n_channels_out=1, first_index=0, n_dim=None):
    """Apply ``predict_tile`` to overlapping tiles of a 2-D or 3-D image and stitch the results.

    Parameters
    ----------
    predict_tile : callable
        ``(tile, tile_index, crop) -> (*crop shape, C)``, the result for the part ``crop`` (one slice
        per spatial axis) of the tile; its output at a pixel may depend on pixels up to ``overlap`` away.
    image : numpy.ndarray (Y, X) or (Z, Y, X), optionally with a last channel axis
        Tiles are cut along the spatial axes only; each tile has all channels.
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
    n_dim : int or None
        Number of spatial axes; a further last axis of ``image`` is its channel axis. Default:
        ``image.ndim`` (no channel axis).

    Returns
    -------
    numpy.ndarray (*spatial shape, C)
    """
    n_dim = image.ndim if n_dim is None else int(n_dim)
    extra = image.ndim - n_dim
    block, overlap = _per_axis(block, n_dim), _per_axis(overlap, n_dim)
    padded = pad_to_blocks(image, block, n_dim)
    n_tiles = tuple(int(n) for n in n_tiles)
    if all(n == 1 for n in n_tiles):
        result = predict_tile(padded, first_index, (slice(None),) * n_dim)
    else:
        result = np.empty(padded.shape[:n_dim] + (n_channels_out,), dtype=np.float32)
        pieces = _tiles(padded, n_tiles + (1,) * extra, block + (1,) * extra, overlap + (0,) * extra)
        for index, (tile, crop, target) in enumerate(pieces):
            result[target[:n_dim]] = predict_tile(tile, first_index + index, crop[:n_dim])
    return result[tuple(slice(0, s) for s in image.shape[:n_dim])]
