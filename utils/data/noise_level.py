"""Estimate the noise level of a scan from the scan itself, inside the body.

``estimate_scan_sigma(image)`` returns sigma on the image's own scale (the HU window's [0, 1] for
windowed CT). It is the robust median-absolute-deviation estimate of Donoho & Johnstone (1994) on the
finest diagonal Haar wavelet coefficients,

    d = (x[2i, 2j] - x[2i, 2j+1] - x[2i+1, 2j] + x[2i+1, 2j+1]) / 2,   sigma = median(|d|) / 0.6745,

which equals sigma for white noise and is barely moved by edges and texture (they touch few
coefficients). Unlike scikit-image's ``estimate_sigma`` on the whole image, only 2 x 2 blocks inside
the body are used: those whose smoothed intensity lies in ``BODY_RANGE`` of the window, eroded by
``EDGE_MARGIN`` pixels. That leaves out air (clipped at the window's floor: no noise there), field-of-view
padding, bone and contrast clipped at the window's ceiling, and the body outline, all of which would bias
the estimate low or high. Correlated noise (real low-dose CT) is under-estimated by this white-noise
measure; the number is then the std of its finest-scale part.
"""

import numpy as np
from scipy import ndimage

# Smoothed window intensities counted as body: above lung and air, below the window's top.
# On [-1000, 400] HU: -720 to 260 HU (fat, soft tissue, organs).
BODY_RANGE = (0.2, 0.9)
SMOOTHING_SIGMA = 2.0  # pixels, for deciding what is body (the noise must not decide it)
EDGE_MARGIN = 2  # pixels eroded from the body mask
MIN_BLOCKS = 200  # fewer body blocks than this on every slice: fall back to the whole image
MAX_SLICES = 16


def estimate_scan_sigma(image, max_slices=MAX_SLICES, body_range=BODY_RANGE):
    """Noise standard deviation of an ``(H, W)`` image or ``(D, H, W)`` volume, same scale.

    Uses up to ``max_slices`` evenly spaced slices and pools their body blocks. Returns a float >= 0.
    """
    image = np.asarray(image, dtype=np.float32)
    slices = image[None] if image.ndim == 2 else image
    picks = np.unique(np.linspace(0, len(slices) - 1, min(max_slices, len(slices))).round().astype(int))
    body, everywhere = [], []
    for index in picks:
        coefficients, mask = _diagonal_coefficients(slices[index], body_range)
        body.append(coefficients[mask])
        everywhere.append(coefficients.ravel())
    pooled = np.concatenate(body)
    if pooled.size < MIN_BLOCKS:
        pooled = np.concatenate(everywhere)
    if pooled.size == 0:
        return 0.0
    return float(np.median(np.abs(pooled)) / 0.6745)


def _diagonal_coefficients(image, body_range):
    """Finest diagonal Haar coefficients of ``image`` and the mask of blocks inside the body."""
    height, width = (image.shape[0] // 2) * 2, (image.shape[1] // 2) * 2
    x = image[:height, :width]
    d = (x[0::2, 0::2] - x[0::2, 1::2] - x[1::2, 0::2] + x[1::2, 1::2]) / 2.0
    smooth = ndimage.gaussian_filter(x, SMOOTHING_SIGMA)
    body = (smooth > body_range[0]) & (smooth < body_range[1])
    if EDGE_MARGIN:
        body = ndimage.binary_erosion(body, iterations=EDGE_MARGIN)
    mask = body[0::2, 0::2] & body[0::2, 1::2] & body[1::2, 0::2] & body[1::2, 1::2]
    return d, mask
