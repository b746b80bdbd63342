"""Image-quality metrics on the [0, 1] intensity scale.

* PSNR with data range 1 (the windowed intensity range), in dB.
* SSIM as the reference repository computed it with ``tf.image.ssim(max_val=1)``: Gaussian
  window 11 with sigma 1.5, K1 0.01, K2 0.03, population covariance. For volumes it is the
  mean over axial slices, so 2D and 3D methods are scored alike.
* Relative error in percent, 100 * ||x_hat - x|| / ||x||, the reference's "err" / "Perc. MSE".

The numpy functions (for assessment) use scikit-image; the Keras twins (for training logs)
use ``tf.image`` on channels-last batches, folding a 3D batch into slices.
"""

import numpy as np
import tensorflow as tf
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

DATA_RANGE = 1.0


def psnr(clean, estimate, data_range=DATA_RANGE):
    return float(peak_signal_noise_ratio(np.asarray(clean, np.float64), np.asarray(estimate, np.float64), data_range=data_range))


def ssim(clean, estimate, data_range=DATA_RANGE):
    """SSIM of a 2D image, or the mean SSIM over the slices (axis 0) of a volume."""
    clean = np.asarray(clean, np.float64)
    estimate = np.asarray(estimate, np.float64)
    if clean.ndim == 2:
        return float(
            structural_similarity(
                clean, estimate, data_range=data_range, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
            )
        )
    return float(np.mean([ssim(c, e, data_range) for c, e in zip(clean, estimate)]))


def rel_err_percent(clean, estimate):
    clean = np.asarray(clean, np.float64)
    return float(100.0 * np.linalg.norm(np.asarray(estimate, np.float64) - clean) / np.linalg.norm(clean))


def all_metrics(clean, estimate):
    return {"psnr": psnr(clean, estimate), "ssim": ssim(clean, estimate), "rel_err_percent": rel_err_percent(clean, estimate)}


def _as_slices(tensor):
    """(B, H, W, C) stays; (B, D, H, W, C) becomes (B * D, H, W, C)."""
    tensor = tf.cast(tensor, tf.float32)
    if tensor.shape.rank == 5:
        shape = tf.shape(tensor)
        tensor = tf.reshape(tensor, tf.concat([[-1], shape[2:]], 0))
    return tensor


def psnr_metric(y_true, y_pred):
    """Keras metric: mean PSNR (dB, data range 1) over the slices of the batch."""
    return tf.reduce_mean(tf.image.psnr(_as_slices(y_true), _as_slices(y_pred), max_val=DATA_RANGE))


def ssim_metric(y_true, y_pred):
    """Keras metric: mean SSIM (data range 1) over the slices of the batch."""
    return tf.reduce_mean(tf.image.ssim(_as_slices(y_true), _as_slices(y_pred), max_val=DATA_RANGE))


psnr_metric.__name__ = "psnr"
ssim_metric.__name__ = "ssim"
