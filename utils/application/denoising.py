"""Denoise one real scan end to end: pick the method, run it inside the HU window, merge back to HU.

The pieces behind ``Denoise_CT.py``; each can be used alone::

    scan = read_scan("patient/series")                          # utils.data.scans
    sigma = estimate_scan_sigma(scan.model_input)               # utils.data.noise_level
    method = make_method("model", None, scan, sigma)             # the shipped model that fits
    denoised = method.run(scan.model_input)                     # [0, 1], the window's scale
    hu = merge_into_scan(scan, denoised, sigma)                 # back to the scan's units

Outside the HU window
    The denoisers see ``clip((HU - lo) / (hi - lo), 0, 1)``, so they know nothing of voxels beyond the
    window (bone above ``hi``, air and FOV padding below ``lo``). Such voxels are returned with their
    input value. Near the window edges the output blends linearly from the denoised value (inside the
    window) to the input value (``OUTSIDE_MARGIN_SIGMAS`` noise sigmas beyond it)::

        t   = distance of the input HU outside [lo, hi], in units of sigma * (hi - lo)
        w   = clip(1 - t / OUTSIDE_MARGIN_SIGMAS, 0, 1)
        out = w * (lo + denoised * (hi - lo)) + (1 - w) * HU_in

    Inside the window (t = 0) the output is exactly the method's prediction in HU; padding such as
    -3024 HU, metal and dense bone come back untouched. Images without HU (8/16-bit PNG/TIFF) are
    denoised on their whole [0, 1] range.
"""

import dataclasses
import math
from pathlib import Path

import numpy as np

from utils.base.defaults import MODELS_DIR, PRIOR_DECAY, PRIOR_HALF_WINDOW, PRIOR_VARIANT, REPO_ROOT
from utils.base.errors import ConfigError, ModelFileError
from utils.data.prior import neighbour_prior

METHODS = ("model", "bm3d", "bm4d", "tv", "spade")
OUTSIDE_MARGIN_SIGMAS = 3.0
DEFAULT_MODELS_DIR = REPO_ROOT / MODELS_DIR
# Shipped models, best first, for a contiguous volume and for separate slices. On the real CRLM test
# volume (5 mm slices, studies/RESULTS_real_ct.md) the blind 2D U-Net slice by slice scored above the
# shipped 3D models and the same-size 2D ResPrU-Net; ResPrU-Net led only after resampling to 3 mm.
PREFERENCE = {
    "volume": (("unet", 2), ("resprunet", 3), ("unet", 3), ("resprunet", 2), ("convnet", 2)),
    "slices": (("unet", 2), ("convnet", 2)),  # ResPrU-Net needs neighbouring slices for its prior
}


@dataclasses.dataclass
class Method:
    """A denoiser of windowed ``(D, H, W)`` arrays: ``run(x) -> float32`` of the same shape."""

    name: str  # "model" or a classical method
    description: str  # what the report and the DICOM SeriesDescription say
    run: object
    model_path: str | None = None


def is_volume(scan):
    return bool(scan.volume.contiguous) and scan.model_input.shape[0] > 1


def shipped_models(folder=DEFAULT_MODELS_DIR):
    """``[(path, config)]`` of the model files in ``folder`` with an embedded configuration."""
    from utils.learning.config import read_model_config

    folder = Path(folder)
    found = []
    for path in sorted(folder.glob("*.keras")) if folder.is_dir() else []:
        config = read_model_config(path)
        if config.get("ndim") in (2, 3) and config.get("noise") is not None:
            found.append((path, config))
    return found


def choose_model(scan, sigma, folder=DEFAULT_MODELS_DIR):
    """The shipped model that fits ``scan`` (volume or slices) and the noise ``sigma`` best.

    A model trained on a noise range (``noise_range``) that holds ``sigma`` fits exactly; otherwise the
    model whose training noise is nearest to ``sigma`` (ratio on a log scale), then ``PREFERENCE``.
    """
    kind = "volume" if is_volume(scan) else "slices"
    ranking = PREFERENCE[kind]
    candidates = []
    for path, config in shipped_models(folder):
        key = (config.get("model"), config.get("ndim"))
        if key not in ranking or (config.get("noise_model") or "gaussian") != "gaussian":
            continue  # a model for simulated low-dose noise is chosen only by --model
        low, high = (config.get("noise_range") or (config["noise"], config["noise"]))[:2]
        mismatch = 0.0 if low <= sigma <= high else min(abs(math.log(max(sigma, 1e-4) / max(v, 1e-4))) for v in (low, high))
        blind = config.get("noise_range") is not None and len(config.get("noise_range")) == 2
        # A blind model is preferred to a per-level one that fits as well: it was trained on every level.
        candidates.append((round(mismatch, 1), ranking.index(key), not blind, str(path)))
    if not candidates:
        raise ConfigError(f"no shipped model in {folder} fits a {kind} input; pass --model FILE or --method bm3d")
    return Path(min(candidates)[-1])


def make_method(name, model_path, scan, sigma, self_ensemble=False, models_dir=DEFAULT_MODELS_DIR):
    """Build the denoiser ``name`` (one of ``METHODS``) for ``scan`` at noise ``sigma``.

    For ``name == "model"``, ``model_path`` None picks :func:`choose_model`. Raises ModelFileError for a
    model that cannot serve the scan (a 3D model on slices), ConfigError for a method that cannot.
    """
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    volume = is_volume(scan)
    if name == "model":
        return _model_method(Path(model_path) if model_path else choose_model(scan, sigma, models_dir), scan, self_ensemble)
    if name in ("bm4d", "spade") and not volume:
        raise ConfigError(f"{name} needs a contiguous volume; {scan.source} holds {len(scan.model_input)} separate slice(s): use bm3d or tv")
    from utils.solvers.methods import run_classical

    def run(x):
        if name == "tv" and not volume:  # separate slices: 2D TV on each
            return np.stack([run_classical("tv", s, sigma=sigma) for s in x])
        return run_classical(name, x, neighbour_prior(x) if name == "spade" else None, sigma=sigma, progress=True)

    return Method(name, f"{name.upper()} sigma {sigma:.4f}", run)


def _model_method(path, scan, self_ensemble):
    from models import load_model, model_info, predict

    from utils.learning.config import validated_model_config

    model, config = load_model(path)
    config = validated_model_config(path, config)
    info = model_info(model)
    if info.ndim == 3 and not is_volume(scan):
        raise ModelFileError(
            path, f"is a 3D model, but {scan.source} holds {len(scan.model_input)} separate slice(s), not a contiguous volume; use a 2D model"
        )
    if info.needs_prior and not is_volume(scan):
        raise ModelFileError(
            path, f"takes a prior made of neighbouring slices, but {scan.source} holds {len(scan.model_input)} separate slice(s); use a model without a prior"
        )
    prior_settings = {
        "half_window": int(config.get("prior_half_window", PRIOR_HALF_WINDOW)),
        "decay": float(config.get("prior_decay", PRIOR_DECAY)),
        "variant": config.get("prior_variant", PRIOR_VARIANT),
    }

    def run(x):
        prior = neighbour_prior(x, **prior_settings) if info.needs_prior else None
        tile = "auto" if info.ndim == 3 else None
        return predict(model, x, prior=prior, tile_shape=tile, batch_size=1 if info.ndim == 3 else 4, progress=True, self_ensemble=self_ensemble)

    family = f"{config.get('model', 'model')} {info.ndim}D"
    suffix = " self-ensemble" if self_ensemble else ""
    return Method("model", f"{family} {path.stem}{suffix}", run, model_path=str(path))


def merge_into_scan(scan, denoised, sigma):
    """The denoised ``[0, 1]`` array in the scan's units, input values kept outside the window (module notes)."""
    denoised = np.asarray(denoised, dtype=np.float32)
    if not scan.is_hu:
        return np.clip(denoised, 0.0, 1.0)
    lo, hi = scan.hu_window
    width = hi - lo
    values = scan.values
    outside = np.maximum(np.maximum(lo - values, values - hi), 0.0)
    margin = OUTSIDE_MARGIN_SIGMAS * max(float(sigma), 1e-3) * width
    weight = np.clip(1.0 - outside / np.float32(margin), 0.0, 1.0)
    return (weight * (np.float32(lo) + denoised * np.float32(width)) + (1.0 - weight) * values).astype(np.float32)


def flat_region_std(values, region=None, size=15):
    """Std of ``values`` in the flattest soft-tissue ``size`` x ``size`` patch of the middle slice.

    Candidates keep ``size`` pixels from the image border and have a mean between fat and enhanced
    organs (-150 to 150 HU, or 0.3 to 0.95 for images without HU). ``region`` ``(slice, row, column)``
    reuses a patch's top-left corner, to measure before and after at the same place; pick it on the
    denoised image, so that the noise of the input does not choose where its own noise is measured.
    Returns ``(std, region)``.
    """
    if region is None:
        from scipy import ndimage

        middle = values[len(values) // 2].astype(np.float64)
        mean = ndimage.uniform_filter(middle, size)
        std = np.sqrt(np.maximum(ndimage.uniform_filter(middle**2, size) - mean**2, 0.0))
        soft = (np.abs(mean) < 150) if np.abs(values).max() > 2 else (mean > 0.3) & (mean < 0.95)
        border = np.zeros_like(soft)
        border[size:-size, size:-size] = True
        soft &= border
        if not soft.any():
            soft = border if border.any() else np.ones_like(soft)
        row, column = np.unravel_index(np.argmin(np.where(soft, std, np.inf)), std.shape)
        half = size // 2
        region = (len(values) // 2, max(int(row) - half, 0), max(int(column) - half, 0))
    z, r, c = region
    return float(values[z, r : r + size, c : c + size].std()), region
