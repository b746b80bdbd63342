"""Metrics agree with scikit-image / numpy and with TensorFlow's SSIM convention."""

import numpy as np
import pytest
import tensorflow as tf
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from utils.data.metrics import all_metrics, psnr, psnr_metric, rel_err_percent, ssim, ssim_metric


@pytest.fixture
def pair(rng):
    clean = rng.random((6, 33, 40)).astype(np.float32)
    return clean, (clean + 0.05 * rng.standard_normal(clean.shape)).astype(np.float32)


def test_psnr_matches_the_definition(pair):
    clean, noisy = pair
    mse = np.mean((clean.astype(np.float64) - noisy) ** 2)
    assert psnr(clean, noisy) == pytest.approx(10 * np.log10(1 / mse), abs=1e-9)
    assert psnr(clean, noisy) == pytest.approx(peak_signal_noise_ratio(clean, noisy, data_range=1))


def test_ssim_of_a_volume_is_the_mean_over_slices(pair):
    clean, noisy = pair
    expected = np.mean(
        [
            structural_similarity(c, n, data_range=1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
            for c, n in zip(clean.astype(np.float64), noisy.astype(np.float64))
        ]
    )
    assert ssim(clean, noisy) == pytest.approx(expected)


def test_ssim_follows_tf_image_ssim(pair):
    clean, noisy = pair
    tf_value = tf.reduce_mean(tf.image.ssim(clean[..., None], noisy[..., None], max_val=1.0)).numpy()
    # TF uses a 'valid' window, skimage crops the border: close but not identical.
    assert ssim(clean, noisy) == pytest.approx(float(tf_value), abs=0.02)


def test_relative_error_percent(pair):
    clean, noisy = pair
    expected = 100 * np.sqrt(np.sum((noisy.astype(np.float64) - clean) ** 2) / np.sum(clean.astype(np.float64) ** 2))
    assert rel_err_percent(clean, noisy) == pytest.approx(expected)
    assert rel_err_percent(clean, clean) == 0
    assert set(all_metrics(clean, noisy)) == {"psnr", "ssim", "rel_err_percent"}


def test_keras_metrics_fold_volumes_into_slices(pair):
    clean, noisy = pair
    batch_3d = (tf.constant(clean[None, ..., None]), tf.constant(noisy[None, ..., None]))
    batch_2d = (tf.constant(clean[..., None]), tf.constant(noisy[..., None]))
    assert float(psnr_metric(*batch_3d)) == pytest.approx(float(psnr_metric(*batch_2d)), rel=1e-6)
    assert float(ssim_metric(*batch_3d)) == pytest.approx(float(ssim_metric(*batch_2d)), rel=1e-6)
    per_slice = np.mean([psnr(c, n) for c, n in zip(clean, noisy)])
    assert float(psnr_metric(*batch_2d)) == pytest.approx(per_slice, abs=1e-3)
