"""Prior image from neighbouring slices, shared by ResPrU-Net and SPADE.

The prior of slice ``i`` is a weighted mean of the *noisy* slices ``i + k``::

    prior[i] = sum_k w_k * noisy[i + k] / sum_k w_k,     w_k = exp(-decay * d_k)

over the offsets ``k`` that fall inside the volume (the window is truncated and
renormalised at both ends). Two windows are offered:

``"centred"`` (default)
    k = -half_window .. +half_window and d_k = |k|: symmetric around the slice.
``"reference"``
    The reference repository's coded window, kept to reproduce its numbers: k = -5 .. +3
    and d_k = |k + 1| + 1, so the heaviest weight falls on slice i - 1 (an off-by-one in
    the original, documented in shared/reference). ``half_window`` is ignored.

The paper's exact kernel is not published; both are documented reconstructions.
"""

import numpy as np
import tensorflow as tf

from utils.base.defaults import PRIOR_DECAY, PRIOR_HALF_WINDOW, PRIOR_VARIANT, PRIOR_VARIANTS
from utils.base.errors import ConfigError


def prior_offsets_and_weights(half_window=PRIOR_HALF_WINDOW, decay=PRIOR_DECAY, variant=PRIOR_VARIANT):
    """Return integer offsets ``k`` and unnormalised weights ``w_k`` of the slice window."""
    if variant == "centred":
        if half_window < 0:
            raise ConfigError(f"prior half window must be >= 0, got {half_window}")
        offsets = np.arange(-half_window, half_window + 1)
        distances = np.abs(offsets)
    elif variant == "reference":
        offsets = np.arange(-5, 4)
        distances = np.abs(offsets + 1) + 1
    else:
        raise ConfigError(f"unknown prior variant {variant!r}; choose one of {PRIOR_VARIANTS}")
    if decay < 0:
        raise ConfigError(f"prior decay must be >= 0, got {decay}")
    return offsets, np.exp(-decay * distances)


def neighbour_prior(noisy, half_window=PRIOR_HALF_WINDOW, decay=PRIOR_DECAY, variant=PRIOR_VARIANT, axis=0):
    """Prior of every slice of ``noisy`` along ``axis`` (numpy; any number of dimensions)."""
    noisy = np.asarray(noisy, dtype=np.float32)
    offsets, weights = prior_offsets_and_weights(half_window, decay, variant)
    moved = np.moveaxis(noisy, axis, 0)
    depth = moved.shape[0]
    total = np.zeros_like(moved)
    norm = np.zeros(depth, dtype=np.float64)
    for k, w in zip(offsets, weights):
        lo, hi = max(0, -k), min(depth, depth - k)  # slices i with 0 <= i + k < depth
        if lo >= hi:
            continue
        total[lo:hi] += w * moved[lo + k : hi + k]
        norm[lo:hi] += w
    shape = (depth,) + (1,) * (moved.ndim - 1)
    return np.moveaxis(total / norm.reshape(shape).astype(np.float32), 0, axis)


def neighbour_prior_tf(noisy, half_window=PRIOR_HALF_WINDOW, decay=PRIOR_DECAY, variant=PRIOR_VARIANT):
    """TensorFlow twin of :func:`neighbour_prior` along axis 0, for use inside tf.data maps."""
    offsets, weights = prior_offsets_and_weights(half_window, decay, variant)
    depth = tf.shape(noisy)[0]
    index = tf.range(depth)
    total = tf.zeros_like(noisy)
    norm = tf.zeros([depth], dtype=noisy.dtype)
    for k, w in zip(offsets.tolist(), weights.tolist()):
        source = index + k
        valid = tf.logical_and(source >= 0, source < depth)
        gathered = tf.gather(noisy, tf.clip_by_value(source, 0, depth - 1))
        mask = tf.cast(valid, noisy.dtype) * w
        total += gathered * tf.reshape(mask, tf.concat([[depth], tf.ones([tf.rank(noisy) - 1], tf.int32)], 0))
        norm += mask
    return total / tf.reshape(norm, tf.concat([[depth], tf.ones([tf.rank(noisy) - 1], tf.int32)], 0))
