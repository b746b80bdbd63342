"""BM3D / BM4D wrappers (utils/solvers/classical.py): sigma on the [0, 1] scale, shapes, lazy imports."""

import importlib

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio

from utils.solvers import classical
from utils.base.errors import ConfigError, DataError

needs_bm3d = pytest.mark.skipif(
    not classical.is_available("bm3d"), reason="bm3d is not installed or its binary cannot load (pip install bm3d==4.0.3; needs OpenBLAS)"
)
needs_bm4d = pytest.mark.skipif(
    not classical.is_available("bm4d"), reason="bm4d is not installed or its binary cannot load (pip install bm4d==4.2.5; needs OpenBLAS)"
)


def phantom_like(shape):
    """Smooth piecewise-constant [0, 1] image/volume: nested ellipses, a bright insert, a bar."""
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    y, x = grids[-2], grids[-1]
    image = np.where((y / 0.8) ** 2 + (x / 0.7) ** 2 < 1, 0.7, 0.0)
    image = np.where(((y - 0.2) / 0.25) ** 2 + ((x + 0.2) / 0.3) ** 2 < 1, 0.95, image)
    image = np.where((np.abs(x - 0.35) < 0.08) & (np.abs(y) < 0.5), 0.4, image)
    return image.astype(np.float32)


def psnr(clean, estimate):
    return peak_signal_noise_ratio(clean, estimate, data_range=1.0)


@needs_bm3d
def test_bm3d_reduces_error_with_sigma_on_unit_scale(rng):
    clean = phantom_like((33, 45))
    noisy = (clean + 0.05 * rng.standard_normal(clean.shape)).astype(np.float32)
    denoised = classical.bm3d_denoise(noisy, 0.05)
    assert denoised.shape == clean.shape and denoised.dtype == np.float32
    assert psnr(clean, denoised) > psnr(clean, noisy) + 5
    # A sigma 10x too small barely denoises: the wrapper does not rescale sigma behind the user's back.
    assert psnr(clean, classical.bm3d_denoise(noisy, 0.005)) < psnr(clean, denoised) - 3


@needs_bm3d
def test_bm3d_stack_is_slice_by_slice(rng):
    clean = np.stack([phantom_like((33, 45))] * 3)
    noisy = (clean + 0.05 * rng.standard_normal(clean.shape)).astype(np.float32)
    stack = classical.bm3d_denoise(noisy, 0.05, progress=False)
    assert stack.shape == noisy.shape
    np.testing.assert_allclose(stack[1], classical.bm3d_denoise(noisy[1], 0.05), atol=1e-6)


@needs_bm4d
def test_bm4d_reduces_error(rng):
    clean = phantom_like((7, 33, 45))
    noisy = (clean + 0.05 * rng.standard_normal(clean.shape)).astype(np.float32)
    denoised = classical.bm4d_denoise(noisy, 0.05)
    assert denoised.shape == clean.shape and denoised.dtype == np.float32
    assert psnr(clean, denoised) > psnr(clean, noisy) + 5


@pytest.mark.bad_input
def test_sigma_on_the_wrong_scale_is_refused(rng):
    noisy = rng.uniform(0, 1, (33, 45)).astype(np.float32)
    with pytest.raises(ConfigError, match="own scale"):
        classical.bm3d_denoise(noisy, 12.75)  # 5 % of 255 handed to [0, 1] data
    with pytest.raises(ConfigError, match="> 0"):
        classical.bm4d_denoise(noisy[None].repeat(3, 0), 0.0)
    with pytest.raises(DataError, match="D, H, W"):
        classical.bm4d_denoise(noisy, 0.05)
    with pytest.raises(DataError, match="NaN"):
        classical.bm3d_denoise(np.full((8, 8), np.nan, np.float32), 0.05)


@pytest.mark.bad_input
def test_missing_package_gives_install_hint(monkeypatch):
    real_import = importlib.import_module

    def fake_import(name, *args):
        if name in ("bm3d", "bm4d"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args)

    monkeypatch.setattr(classical.importlib, "import_module", fake_import)
    with pytest.raises(ImportError, match=r"bm3d is not installed; it is a non-commercial binary, install with pip install bm3d==4\.0\.3"):
        classical.bm3d_denoise(np.zeros((8, 8), np.float32), 0.05)
    with pytest.raises(ImportError, match=r"pip install bm4d==4\.2\.5"):
        classical.bm4d_denoise(np.zeros((4, 8, 8), np.float32), 0.05)
    assert not classical.is_available("bm3d")


@pytest.mark.bad_input
def test_broken_binary_mentions_openblas(monkeypatch):
    def fake_import(name, *args):
        raise OSError("libopenblas.so.0: cannot open shared object file")

    monkeypatch.setattr(classical.importlib, "import_module", fake_import)
    with pytest.raises(ImportError, match="OpenBLAS"):
        classical.bm3d_denoise(np.zeros((8, 8), np.float32), 0.05)
