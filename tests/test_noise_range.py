"""utils.data.noise.GaussianRangeNoise: the blind-training sampler (one sigma per sample, drawn in a range)."""

import numpy as np
import pytest
import tensorflow as tf

from utils.base.errors import ConfigError
from utils.data.noise import NOISE_MODELS, GaussianRangeNoise, make_noise


@pytest.mark.bad_input
@pytest.mark.parametrize("low, high", [(0.1, 0.1), (0.2, 0.1), (-0.01, 0.1), (0.0, 1.01), (0.0, float("nan"))])
def test_bad_ranges_are_refused(low, high):
    with pytest.raises(ConfigError, match="0 <= LO < HI <= 1"):
        GaussianRangeNoise(low, high)


def test_tf_sampler_draws_one_sigma_per_seed_inside_the_range():
    noise = GaussianRangeNoise(0.02, 0.12)
    clean = tf.zeros((64, 64))
    stds = [float(tf.math.reduce_std(noise.sample_tf(clean, tf.constant([k, 3], tf.int64)))) for k in range(40)]
    assert 0.02 * 0.95 < min(stds) < 0.04 and 0.10 < max(stds) < 0.12 * 1.05
    again = noise.sample_tf(clean, tf.constant([7, 3], tf.int64))
    np.testing.assert_array_equal(again.numpy(), noise.sample_tf(clean, tf.constant([7, 3], tf.int64)).numpy())
    assert noise.effective_sigma == pytest.approx(0.07)


def test_numpy_sampler_and_make_noise_unchanged():
    noise = GaussianRangeNoise(0.0, 0.5)
    rng = np.random.default_rng(0)
    stds = [np.std(noise.sample_numpy(np.zeros((32, 32), np.float32), rng)) for _ in range(30)]
    assert min(stds) < 0.1 and max(stds) > 0.4 and max(stds) < 0.55
    assert "gaussian_range" not in NOISE_MODELS  # chosen by --noise-range, not by --noise-model
    assert make_noise(0.05).sigma == 0.05
