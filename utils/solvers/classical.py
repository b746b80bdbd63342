"""BM3D and BM4D wrappers with lazy imports.

The ``bm3d`` (4.0.3) and ``bm4d`` (4.2.5) packages wrap closed, non-commercial binaries
(Tampere University) that need OpenBLAS on Linux. They are imported only when a function here is
called, so the rest of the toolkit installs and runs without them.

``sigma`` is the noise standard deviation on the *data's own scale*: 0.05 for 5 % noise on [0, 1]
intensities (never 0.05 × 255). The packages take it as ``sigma_psd`` on the same scale as the
array, so it is passed through unchanged. Both run on CPU only.

References
----------
Y. Mäkinen, L. Azzari, A. Foi, "Collaborative filtering of correlated noise: exact transform-domain
variance for improved shrinkage and patch matching", IEEE TIP 29, 2020 (BM3D 4.x). M. Maggioni et
al., "Nonlocal transform-domain filter for volumetric data denoising and reconstruction", IEEE TIP
22(1), 2013 (BM4D).
"""

import importlib

import numpy as np
from tqdm.auto import tqdm

from utils.base.errors import ConfigError, DataError

PACKAGE_VERSIONS = {"bm3d": "4.0.3", "bm4d": "4.2.5"}

# A progress bar over slices is worth it from this many slices on (about 1 s per 256x256 slice).
PROGRESS_MIN_SLICES = 8


def bm3d_denoise(noisy, sigma, *, progress=None):
    """BM3D of a 2D image, or of every slice of a stack independently.

    :param numpy.ndarray noisy: image ``(H, W)`` or stack ``(N, H, W)`` (slice by slice along axis 0).
    :param float sigma: noise standard deviation on the data's own scale (0.05 for 5 % on [0, 1]).
    :param progress: show a progress bar over slices; ``None`` shows it for
        ``PROGRESS_MIN_SLICES`` slices or more.
    :return: float32 array of the input's shape.
    :raises ImportError: if ``bm3d`` is not installed or its binary cannot load.
    """
    noisy = _as_array(noisy, (2, 3))
    sigma = _check_sigma(sigma, noisy)
    bm3d = _import_optional("bm3d")
    if noisy.ndim == 2:
        return np.asarray(bm3d.bm3d(noisy, sigma_psd=sigma), dtype=np.float32)
    show = len(noisy) >= PROGRESS_MIN_SLICES if progress is None else progress
    slices = tqdm(noisy, desc="BM3D", unit="slice", disable=not show, leave=False)
    return np.stack([np.asarray(bm3d.bm3d(s, sigma_psd=sigma), dtype=np.float32) for s in slices])


def bm4d_denoise(volume, sigma):
    """BM4D of a volume ``(D, H, W)``; ``sigma`` on the data's own scale.

    :return: float32 array of the input's shape.
    :raises ImportError: if ``bm4d`` is not installed or its binary cannot load.
    """
    volume = _as_array(volume, (3,))
    sigma = _check_sigma(sigma, volume)
    bm4d = _import_optional("bm4d")
    return np.asarray(bm4d.bm4d(volume, sigma_psd=sigma), dtype=np.float32)


def is_available(package):
    """Whether ``package`` (``"bm3d"`` or ``"bm4d"``) imports, without raising."""
    try:
        _import_optional(package)
    except ImportError:
        return False
    return True


def _import_optional(package):
    try:
        return importlib.import_module(package)
    except ModuleNotFoundError as error:
        if error.name != package:
            raise
        raise ImportError(
            f"{package} is not installed; it is a non-commercial binary, "
            f"install with pip install {package}=={PACKAGE_VERSIONS[package]}"
        ) from error
    except OSError as error:  # the shared library is there but its dependencies are not
        raise ImportError(
            f"{package} is installed but its binary failed to load ({error}); "
            "on Linux it needs OpenBLAS (e.g. apt-get install libopenblas0)"
        ) from error


def _as_array(array, ranks):
    array = np.asarray(array, dtype=np.float32)
    if array.ndim not in ranks:
        expected = " or ".join({2: "(H, W)", 3: "(D, H, W)"}[r] for r in ranks)
        raise DataError("noisy", f"expected shape {expected}, got {array.shape}")
    if not np.all(np.isfinite(array)):
        raise DataError("noisy", "contains NaN or infinite values")
    return array


def _check_sigma(sigma, array):
    sigma = float(sigma)
    if not np.isfinite(sigma) or sigma <= 0:
        raise ConfigError(f"sigma must be a finite number > 0 on the data's scale, got {sigma}")
    data_range = float(np.ptp(array))
    if sigma > 1 and sigma > data_range:
        # Almost always a 0-255 sigma handed to [0, 1] data, the most common BM3D mistake.
        raise ConfigError(
            f"sigma {sigma} exceeds the data's whole range {data_range:.3g}: give it on the data's own scale "
            "(0.05 for 5 % noise on [0, 1] intensities, not 12.75)"
        )
    return sigma
