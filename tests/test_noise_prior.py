"""Noise models and the neighbour-slice prior against plain numpy references."""

import numpy as np
import pytest
import tensorflow as tf

from utils.base.errors import ConfigError
from utils.data.noise import GaussianNoise, PoissonGaussianNoise, make_noise
from utils.data.prior import neighbour_prior, neighbour_prior_tf, prior_offsets_and_weights


@pytest.mark.parametrize("sigma", [0.02, 0.05, 0.10])
def test_gaussian_noise_std_within_two_percent(sigma, rng):
    clean = np.full((64, 128, 128), 0.4, np.float32)
    noisy_np = GaussianNoise(sigma).sample_numpy(clean, rng)
    noisy_tf = GaussianNoise(sigma).sample_tf(tf.constant(clean), tf.constant([3, 4], tf.int64)).numpy()
    for noisy in (noisy_np, noisy_tf):
        assert abs(np.std(noisy - clean) / sigma - 1) < 0.02
        assert abs(np.mean(noisy - clean)) < sigma * 0.01


def test_noise_is_not_clipped(rng):
    clean = np.zeros((256, 256), np.float32)
    assert (GaussianNoise(0.1).sample_numpy(clean, rng) < 0).mean() > 0.4


def test_poisson_gaussian_grows_with_intensity(rng):
    model = PoissonGaussianNoise(sigma=0.01, gain=0.01)
    dark = model.sample_numpy(np.full((200, 200), 0.05, np.float32), rng) - 0.05
    bright = model.sample_numpy(np.full((200, 200), 0.9, np.float32), rng) - 0.9
    assert np.std(bright) > 2 * np.std(dark)
    assert np.std(bright) == pytest.approx(np.sqrt(0.01**2 + 0.01 * 0.9), rel=0.03)


@pytest.mark.parametrize("bad", [-0.01, float("nan")])
@pytest.mark.bad_input
def test_bad_noise_level_is_refused(bad):
    with pytest.raises(ConfigError, match="noise"):
        make_noise(bad)


@pytest.mark.bad_input
def test_unknown_noise_model_lists_the_known_ones():
    with pytest.raises(ConfigError, match="gaussian"):
        make_noise(0.05, "speckle")


def _prior_by_loops(noisy, offsets, weights):
    """Slice-by-slice reference written independently of utils.data.prior."""
    out = np.zeros_like(noisy, dtype=np.float64)
    for i in range(noisy.shape[0]):
        total, norm = 0.0, 0.0
        for k, w in zip(offsets, weights):
            if 0 <= i + k < noisy.shape[0]:
                total = total + w * noisy[i + k].astype(np.float64)
                norm += w
        out[i] = total / norm
    return out


@pytest.mark.parametrize("depth", [1, 3, 9, 13])
@pytest.mark.parametrize("variant", ["centred", "reference"])
def test_prior_equals_numpy_reference(depth, variant, rng):
    noisy = rng.random((depth, 5, 7)).astype(np.float32)
    offsets, weights = prior_offsets_and_weights(variant=variant)
    expected = _prior_by_loops(noisy, offsets, weights)
    np.testing.assert_allclose(neighbour_prior(noisy, variant=variant), expected, atol=1e-6)
    np.testing.assert_allclose(neighbour_prior_tf(tf.constant(noisy), variant=variant).numpy(), expected, atol=1e-6)


def test_prior_weights_match_the_paper_description():
    offsets, weights = prior_offsets_and_weights(half_window=4, decay=0.04)
    np.testing.assert_array_equal(offsets, np.arange(-4, 5))
    np.testing.assert_allclose(weights, np.exp(-0.04 * np.abs(np.arange(-4, 5))))
    ref_offsets, ref_weights = prior_offsets_and_weights(variant="reference")
    np.testing.assert_array_equal(ref_offsets, np.arange(-5, 4))
    assert ref_offsets[np.argmax(ref_weights)] == -1  # the reference's off-by-one, kept on purpose
    np.testing.assert_allclose(ref_weights, np.exp(-0.04 * np.array([5, 4, 3, 2, 1, 2, 3, 4, 5])))


def test_prior_of_a_linear_ramp_is_exact_inside_and_biased_at_the_ends():
    ramp = np.arange(12, dtype=np.float32)[:, None, None] * np.ones((1, 2, 2), np.float32)
    prior = neighbour_prior(ramp, half_window=2, decay=0.0)[:, 0, 0]
    np.testing.assert_allclose(prior[2:-2], np.arange(2, 10))
    assert prior[0] == pytest.approx(1.0)  # mean of slices 0, 1, 2


def test_prior_along_another_axis(rng):
    noisy = rng.random((4, 6, 5)).astype(np.float32)
    np.testing.assert_allclose(
        neighbour_prior(noisy, axis=1), np.moveaxis(neighbour_prior(np.moveaxis(noisy, 1, 0)), 0, 1), atol=1e-6
    )


@pytest.mark.parametrize("shape", [(96, 80), (5, 96, 80)])
@pytest.mark.parametrize("sigma", [0.01, 0.04])
def test_noise_estimate_recovers_the_noise_added_to_a_smooth_image(shape, sigma, rng):
    from utils.data.noise import estimate_noise_sigma

    yy, xx = np.mgrid[: shape[-2], : shape[-1]]
    smooth = 0.4 + 0.3 * np.sin(yy / 15.0) * np.cos(xx / 11.0)
    clean = np.broadcast_to(smooth, shape)
    assert estimate_noise_sigma(clean) < 0.002
    assert estimate_noise_sigma(clean + sigma * rng.standard_normal(shape)) == pytest.approx(sigma, rel=0.1)


def test_only_targets_with_noise_near_the_training_noise_are_flagged():
    from utils.learning.training import noisy_target_warnings

    description = [
        {"source": "phantoms/a.nii.gz", "noise_sigma_estimate": 0.002},
        {"source": "exports/lung_png", "noise_sigma_estimate": 0.043},
        {"source": "old/run", "shape": [4, 8, 8]},  # described before estimates existed
    ]
    assert noisy_target_warnings(description, 0.10) == []
    messages = noisy_target_warnings(description, 0.05)
    assert len(messages) == 1 and messages[0].startswith("exports/lung_png:") and "0.043" in messages[0]
