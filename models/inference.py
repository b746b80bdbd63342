"""Prediction on arrays of any size: reflect-pad to the pooling grid, crop back, optionally in tiles.

Examples::

    out = predict(unet2d, image)                       # (H, W) -> (H, W) float32
    out = predict(unet2d, stack, batch_size=8)         # (N, H, W): a 2D model, slice by slice
    out = predict(unet3d, volume, tile_shape=(96, 256, 256))      # (D, H, W), tiled with smooth blending
    out = predict(resprunet3d, volume, prior=prior_volume)        # the prior is tiled with the input

Contract
- Arrays come WITHOUT batch and channel axes (a trailing channel axis of size 1 is tolerated and kept).
  2D models take ``(H, W)`` or a stack ``(N, H, W)``; 3D models take ``(D, H, W)``.
- Every spatial axis is reflect-padded (symmetrically) to a multiple of ``2**depth`` and cropped back,
  so any size works; the result is float32 with the input's shape.
- What ``predict`` needs to know about a model (ndim, prior input, poolings, receptive field) is read
  from the model itself by ``model_info``: its inputs and its layers. This works for our builders, for
  reloaded ``.keras`` files and for the reference repository's models loaded by Keras directly.

Tiling (for images and volumes larger than memory)
- ``tile_shape`` is the largest tile allowed; each axis is split into the fewest tiles of at most that
  size, balanced to equal sizes on the pooling grid (as CSBDeep's ``n_tiles``, but given by size).
- Neighbouring tiles overlap by ``overlap`` voxels (default: twice the receptive-field halo plus one
  pooling cell). Inside the overlap each tile's weight is zero within ``halo`` voxels of its cut edge
  (where its prediction lacks context), then rises as a raised cosine to 1; facing ramps sum to 1.
  With an overlap covering the receptive field, tiled output equals untiled output (up to float
  rounding); a smaller overlap is allowed (warning) and still blends without seams.
- Windows are separable and tiles form a grid, so each axis' windows are divided by their 1-D sum
  beforehand: memory stays at input + float32 output + one batch of tiles, with no full-size weight buffer.

Automatic tiles (``tile_shape="auto"``)
- ``auto_tiling`` picks the largest tiles whose estimated activation memory fits a budget (a quarter of
  the available memory, at most ``AUTO_TILE_BUDGET_BYTES``) and an overlap of one halo rounded up to the
  pooling grid (at least ``2 * divisor``), so that tiles stay several times larger than their overlap
  for deep U-Nets whose full receptive-field overlap (128 voxels at depth 3) would leave tiny strides.
  Output then differs from untiled prediction by far less than the noise (tested), and no warning is given.

Self-ensemble (``self_ensemble=True``)
- The prediction is the mean over every flip of the model's spatial axes (4 for 2D, 8 for 3D models),
  each flipped back: the geometric self-ensemble of Timofte et al. (CVPR 2016), as EDSR+ uses it.
  It costs that many passes and needs no extra memory (tiles are added through flipped views).
"""

import dataclasses
import itertools
import math
import sys
import warnings

import numpy as np

from utils.base.errors import ConfigError

try:  # tqdm is a listed dependency, but progress bars must never be what breaks inference.
    from tqdm.auto import tqdm
except ImportError:  # pragma: no cover
    tqdm = None

_PROGRESS_MIN_STEPS = 20

# Activation memory budget of one model call in automatic tiling, and the bytes per input voxel per
# first-level channel that the estimate assumes: float32 activations of a U-Net's encoder, decoder and
# skips held at once (calibrated on the 16-filter 3D U-Net: about 300 bytes per voxel measured in
# benchmarks/inference.py, i.e. about 19 per channel; 24 leaves a margin).
AUTO_TILE_BUDGET_BYTES = 2 * 1024**3
_BYTES_PER_VOXEL_PER_CHANNEL = 24


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What inference needs to know about a model, discovered from its inputs and layers.

    ndim: spatial rank (2 or 3). needs_prior: the model has a second (``prior``) input.
    depth: number of down-samplings; divisor: spatial sizes must be multiples of it (``2**depth``).
    receptive_field: full width in voxels (conservative: pooling/upsampling offsets counted on one side).
    halo: voxels of context needed on each side of an output voxel. shrink: voxels lost per side by
    'valid' convolutions. fixed_shape: the model's fixed spatial input shape, or None.
    noisy_index/prior_index: positions of the inputs in ``model.inputs``.
    """

    ndim: int
    needs_prior: bool
    depth: int
    divisor: int
    receptive_field: int
    halo: int
    shrink: int
    channels: int
    fixed_shape: tuple | None
    noisy_index: int = 0
    prior_index: int | None = None

    @property
    def default_overlap(self):
        """Overlap that covers the receptive field on both sides plus one pooling cell of blending."""
        return _round_up(2 * self.halo + self.divisor, self.divisor)


def model_info(model):
    """Inspect ``model`` (inputs and layers, in topological order) and return its ``ModelInfo``."""
    inputs = list(model.inputs)
    if not 1 <= len(inputs) <= 2:
        raise ConfigError(f"model {model.name!r} has {len(inputs)} inputs; denoisers take noisy (and prior)")
    shape = tuple(inputs[0].shape)
    ndim = len(shape) - 2
    if ndim not in (2, 3):
        raise ConfigError(f"model {model.name!r} input shape {shape} is neither 2D (B,H,W,C) nor 3D (B,D,H,W,C)")
    names = [str(getattr(t, "name", "")).split(":")[0] for t in inputs]
    prior_index = None
    if len(inputs) == 2:
        # Our models name it 'prior'; the reference ResPr model called it 'input_pr' and put it second.
        prior_index = next((i for i, n in enumerate(names) if n in ("prior", "input_pr")), 1)
    fixed = shape[1:-1]
    fixed_shape = None if all(d is None for d in fixed) else fixed
    if fixed_shape is not None and any(d is None for d in fixed_shape):
        raise ConfigError(f"model {model.name!r} mixes fixed and free spatial input dims {fixed}")

    conv_span = grid_span = shrink = 0
    jump = divisor = 1
    depth = 0
    for layer in model.layers:
        kind = type(layer).__name__
        if hasattr(layer, "kernel_size") and "Transpose" in kind:  # learned up-sampling, like UpSampling
            factor = max(layer.strides)
            jump = max(jump // factor, 1)
            grid_span += (max(layer.kernel_size) - 1) * jump
        elif hasattr(layer, "kernel_size") and max(layer.strides) > 1 and tuple(layer.kernel_size) == tuple(layer.strides):
            # Learned down-sampling (kernel = stride, non-overlapping cells): a grid step, like pooling.
            stride = max(layer.strides)
            grid_span += (stride - 1) * jump
            jump, divisor, depth = jump * stride, divisor * stride, depth + 1
        elif hasattr(layer, "kernel_size") and hasattr(layer, "dilation_rate"):
            reach = (max(layer.kernel_size) - 1) * max(layer.dilation_rate)
            conv_span += reach * jump
            if layer.padding == "valid":
                shrink += reach * jump // 2
            stride = max(layer.strides)
            if stride > 1:
                grid_span += (stride - 1) * jump
                jump, divisor, depth = jump * stride, divisor * stride, depth + 1
        elif "Pooling" in kind and hasattr(layer, "pool_size") and "Global" not in kind:
            stride = max(layer.strides or layer.pool_size)
            grid_span += (max(layer.pool_size) - 1) * jump
            jump, divisor, depth = jump * stride, divisor * stride, depth + 1
        elif kind.startswith("UpSampling"):
            factor = int(max(np.atleast_1d(layer.size)))
            jump = max(jump // factor, 1)
            grid_span += (factor - 1) * jump
    return ModelInfo(
        ndim=ndim,
        needs_prior=prior_index is not None,
        depth=depth,
        divisor=divisor,
        receptive_field=1 + conv_span + grid_span,
        # Convolutions reach symmetrically; grid offsets of pooling/upsampling may all fall on one side.
        halo=math.ceil(conv_span / 2) + grid_span,
        shrink=shrink,
        channels=int(shape[-1]),
        fixed_shape=fixed_shape,
        noisy_index=1 - prior_index if prior_index is not None else 0,
        prior_index=prior_index,
    )


def predict(
    model, noisy, prior=None, tile_shape=None, overlap=None, batch_size=1, progress=None, self_ensemble=False
):
    """Denoise a 2D image, a stack of 2D slices or a 3D volume; returns float32 of the input's shape.

    Args:
        model: a denoiser built by ``models.build_model`` (or any 1-channel fully convolutional Keras model).
        noisy: ``(H, W)`` or ``(N, H, W)`` for a 2D model, ``(D, H, W)`` for a 3D model.
        prior: array of the same shape as ``noisy``; required by ``resprunet`` models, refused otherwise.
        tile_shape: largest spatial tile (2 or 3 ints, one per model axis); None predicts each image whole;
            ``"auto"`` lets :func:`auto_tiling` choose tile and overlap from the memory available.
        overlap: voxels shared by neighbouring tiles (int or one per axis);
            default ``model_info(model).default_overlap``.
        batch_size: slices or tiles per model call.
        progress: show a tqdm bar; None shows one when there are many steps.
        self_ensemble: average the predictions for every flip of the model's spatial axes (4 for a 2D
            model, 8 for a 3D one; each flipped back first), at that many times the cost. The prior is
            flipped with the image, which is the prior of the flipped image for a symmetric slice
            window (the default ``centred`` one).

    Raises:
        ConfigError: wrong dimensionality or channel count, missing or mismatched prior, bad tile settings.
    """
    info = model_info(model)
    noisy, restore_channel = _as_spatial(noisy, info, "noisy")
    if info.needs_prior and prior is None:
        raise ConfigError(f"model {model.name!r} takes a prior image (input 'prior'), but prior=None")
    if not info.needs_prior and prior is not None:
        raise ConfigError(f"model {model.name!r} has no prior input; pass prior=None")
    if prior is not None:
        prior, _ = _as_spatial(prior, info, "prior")
        if prior.shape != noisy.shape:
            raise ConfigError(f"prior shape {prior.shape} differs from noisy shape {noisy.shape}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")

    # A 2D model on (N, H, W) sees N independent items; a 2D image or a 3D volume is one item.
    items = noisy if noisy.ndim > info.ndim else noisy[None]
    prior_items = None if prior is None else (prior if prior.ndim > info.ndim else prior[None])
    automatic = isinstance(tile_shape, str)
    if automatic:
        if tile_shape != "auto":
            raise ConfigError(f"tile_shape must be None, 'auto' or {info.ndim} integers, got {tile_shape!r}")
        tile_shape, auto_overlap = auto_tiling(model, items.shape[1:], batch_size=batch_size)
        overlap = auto_overlap if overlap is None else overlap
    plans = _plan_tiles(items.shape[1:], info, tile_shape, overlap, warn=not automatic)
    out = np.zeros(items.shape, dtype=np.float32)

    # Axes of `items` to flip, one tuple per pass: spatial axis k of the model is axis k + 1 of `items`.
    passes = [()]
    if self_ensemble:
        spatial_axes = range(1, info.ndim + 1)
        passes = [axes for n in range(info.ndim + 1) for axes in itertools.combinations(spatial_axes, n)]
    jobs = [(item, tile) for item in range(len(items)) for tile in np.ndindex(*[len(p.starts) for p in plans])]
    steps = math.ceil(len(jobs) / batch_size) * len(passes)
    show = steps >= _PROGRESS_MIN_STEPS if progress is None else bool(progress)
    unit = "tile" if any(len(p.starts) > 1 for p in plans) else "slice" if len(items) > 1 else "image"
    bar = tqdm(total=steps, desc="predict", unit=f"{unit} batch", disable=not show, file=sys.stderr) if tqdm else None
    for axes in passes:
        # Flipped views: tiles are cut from the flipped input and added into the flipped output, which
        # flips each prediction back in place, with no copy of the volume.
        flipped_items, flipped_out = np.flip(items, axes), np.flip(out, axes)
        flipped_prior = None if prior_items is None else np.flip(prior_items, axes)
        for first in range(0, len(jobs), batch_size):
            batch = jobs[first : first + batch_size]
            inputs = [np.stack([_extract(flipped_items[i], plans, tile, info.shrink) for i, tile in batch])[..., None]]
            if flipped_prior is not None:
                prior_batch = np.stack([_extract(flipped_prior[i], plans, tile, info.shrink) for i, tile in batch])
                inputs.insert(info.prior_index, prior_batch[..., None])
            predicted = model.predict_on_batch(inputs if len(inputs) > 1 else inputs[0])
            predicted = np.asarray(predicted, dtype=np.float32)[..., 0]
            for (i, tile), tile_out in zip(batch, predicted):
                _accumulate(flipped_out[i], tile_out, plans, tile)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()

    if len(passes) > 1:
        out /= len(passes)
    out = out if noisy.ndim > info.ndim else out[0]
    return out[..., None] if restore_channel else out


def auto_tiling(model, spatial_shape, memory_bytes=None, batch_size=1):
    """Tile shape and overlap for ``predict`` on an item of ``spatial_shape`` within a memory budget.

    The activation memory of one call is estimated as ``batch_size * voxels * first-level channels *
    _BYTES_PER_VOXEL_PER_CHANNEL``; ``memory_bytes`` defaults to a quarter of the available memory,
    capped at ``AUTO_TILE_BUDGET_BYTES``. Axes are shrunk, largest first, until the estimate fits, never
    below three overlaps. Returns ``(tile_shape or None when the whole item fits, overlap)``.
    """
    info = model_info(model)
    overlap = max(_round_up(info.halo, info.divisor), 2 * info.divisor)
    if info.fixed_shape is not None:
        return tuple(info.fixed_shape), overlap
    if memory_bytes is None:
        memory_bytes = min(AUTO_TILE_BUDGET_BYTES, _available_memory() // 4)
    per_voxel = batch_size * _first_level_channels(model) * _BYTES_PER_VOXEL_PER_CHANNEL
    frame = [_round_up(n, info.divisor) for n in spatial_shape]
    tile = list(frame)
    smallest = 3 * overlap
    while math.prod(tile) * per_voxel > memory_bytes:
        axis = max(range(len(tile)), key=lambda a: tile[a])
        if tile[axis] <= smallest:
            break
        tile[axis] = max(smallest, _round_up(int(tile[axis] * 0.75), info.divisor))
    return (None if tile == frame else tuple(tile)), overlap


def _first_level_channels(model):
    for layer in model.layers:
        if hasattr(layer, "kernel_size") and hasattr(layer, "filters"):
            return int(layer.filters)
    return 1


def _available_memory():
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:  # pragma: no cover - psutil is a listed dependency
        return 8 * 1024**3


def tiling_summary(model, spatial_shape, tile_shape=None, overlap=None):
    """How ``predict`` would tile an image or volume of ``spatial_shape`` (without running the model).

    Returns a dict: ``tile_shape`` (actual, balanced), ``tiles_per_axis``, ``n_tiles``, ``overlap``,
    ``processed_voxels`` (voxels fed to the network, counting overlaps) and ``overhead`` (processed / input).
    Use it to pick a ``tile_shape`` that fits memory without wasting compute on overlaps.
    """
    info = model_info(model)
    if isinstance(tile_shape, str):
        tile_shape, auto_overlap = auto_tiling(model, spatial_shape)
        overlap = auto_overlap if overlap is None else overlap
    plans = _plan_tiles(tuple(spatial_shape), info, tile_shape, overlap)
    n_tiles = math.prod(len(p.starts) for p in plans)
    processed = n_tiles * math.prod(p.tile + 2 * info.shrink for p in plans)
    return {
        "tile_shape": [p.tile for p in plans],
        "tiles_per_axis": [len(p.starts) for p in plans],
        "n_tiles": n_tiles,
        "overlap": _per_axis(info.default_overlap if overlap is None else overlap, info.ndim, "overlap", minimum=0),
        "processed_voxels": processed,
        "overhead": processed / math.prod(spatial_shape),
    }


@dataclasses.dataclass
class _AxisPlan:
    size: int  # original length
    frame: int  # padded length, a multiple of the divisor
    pad_before: int
    tile: int
    starts: list
    windows: list  # one weight vector of length `tile` per start, normalised: they sum to 1 at every voxel
    norm: np.ndarray  # sum of the windows before normalisation, over the original extent


def _plan_tiles(spatial_shape, info, tile_shape, overlap, warn=True):
    n_axes = info.ndim
    if tile_shape is None:
        tiles = info.fixed_shape or (None,) * n_axes
    else:
        tiles = _per_axis(tile_shape, n_axes, "tile_shape")
        if info.fixed_shape is not None and tuple(tiles) != tuple(info.fixed_shape):
            raise ConfigError(
                f"this model only accepts tiles of shape {info.fixed_shape}; got tile_shape={tuple(tiles)}"
            )
    overlaps = _per_axis(info.default_overlap if overlap is None else overlap, n_axes, "overlap", minimum=0)
    if warn and overlap is not None and min(overlaps) < 2 * info.halo + 1 and tile_shape is not None:
        warnings.warn(
            f"overlap {overlaps} is below 2 x halo + 1 = {2 * info.halo + 1} voxels (the receptive field on both "
            "sides of a cut): tiles are blended but will differ slightly from whole-image prediction",
            stacklevel=3,
        )
    return [
        _plan_axis(n, info.divisor, t, o, info.halo, fixed=info.fixed_shape is not None)
        for n, t, o in zip(spatial_shape, tiles, overlaps)
    ]


def _plan_axis(size, divisor, tile_max, overlap, halo, fixed=False):
    frame = _round_up(size, divisor)
    if fixed:
        if tile_max % divisor:
            raise ConfigError(f"the model's fixed input size {tile_max} is not a multiple of {divisor}")
        frame = max(frame, tile_max)
        tile = tile_max
    elif tile_max is None or tile_max >= frame:
        tile = frame
    else:
        tile_max -= tile_max % divisor
        if tile_max <= overlap:
            raise ConfigError(
                f"tile size {tile_max} (rounded to a multiple of {divisor}) must exceed the overlap {overlap}; "
                "use larger tiles or a smaller overlap"
            )
        count = math.ceil((frame - overlap) / (tile_max - overlap))
        tile = min(frame, _round_up(math.ceil((frame + (count - 1) * overlap) / count), divisor))
    if tile == frame:
        starts = [0]
    else:
        stride = max(divisor, (tile - overlap) // divisor * divisor)
        starts = list(range(0, frame - tile, stride)) + [frame - tile]
    # Uniform zero margin for every cut edge; with actual overlaps >= `overlap` every voxel keeps a tile
    # whose weight is positive there (the last tile's overlap can only be larger than the nominal one).
    margin = min(halo, max(overlap - 1, 0) // 2)
    windows = []
    for k, start in enumerate(starts):
        window = np.ones(tile, dtype=np.float32)
        if k > 0:  # shared with the previous tile: the first `shared` voxels
            shared = starts[k - 1] + tile - start
            window[:shared] *= _ramp(shared, margin)
        if k < len(starts) - 1:  # shared with the next tile: the last `shared` voxels
            shared = start + tile - starts[k + 1]
            window[tile - shared :] *= _ramp(shared, margin)[::-1]
        windows.append(window)
    pad_before = (frame - size) // 2
    norm = np.zeros(frame, dtype=np.float32)
    for start, window in zip(starts, windows):
        norm[start : start + tile] += window
    # Divided by their sum, the weights of one pass over the tiles add up to 1 at every voxel, so passes
    # over flipped inputs (whose tiles lie mirrored in the original frame) can simply be added.
    safe_norm = np.where(norm > 0, norm, 1.0)
    windows = [window / safe_norm[start : start + tile] for start, window in zip(starts, windows)]
    return _AxisPlan(size, frame, pad_before, tile, starts, windows, norm[pad_before : pad_before + size])


def _ramp(length, margin):
    """Weights over an overlap of ``length`` at a tile's cut edge (edge at index 0): ``margin`` zeros,
    a raised-cosine rise, then ones. The mirrored ramp of the neighbour sums with it to exactly 1."""
    margin = min(margin, (length - 1) // 2)
    band = length - 2 * margin
    rise = np.sin(0.5 * np.pi * (np.arange(band) + 0.5) / band) ** 2
    return np.concatenate([np.zeros(margin), rise, np.ones(margin)]).astype(np.float32)


def _extract(item, plans, tile, shrink):
    """One input tile (plus the 'valid'-conv margin) read through the virtual reflect padding."""
    index = []
    for plan, k in zip(plans, tile):
        frame_positions = np.arange(plan.starts[k] - shrink, plan.starts[k] + plan.tile + shrink)
        index.append(_reflect(frame_positions - plan.pad_before, plan.size))
    return item[np.ix_(*index)]


def _accumulate(out_item, tile_out, plans, tile):
    """Add the weighted tile prediction to the part of ``out_item`` (original coordinates) it covers."""
    target, source, weights = [], [], []
    for plan, k in zip(plans, tile):
        first = plan.starts[k] - plan.pad_before  # tile origin in original coordinates
        lo, hi = max(first, 0), min(first + plan.tile, plan.size)
        target.append(slice(lo, hi))
        source.append(slice(lo - first, hi - first))
        weights.append(plan.windows[k][lo - first : hi - first])
    contribution = tile_out[tuple(source)]
    if any(len(p.starts) > 1 for p in plans):  # a single tile per axis has weight 1 everywhere
        for axis, w in enumerate(weights):
            contribution = contribution * w.reshape((-1,) + (1,) * (len(weights) - axis - 1))
    out_item[tuple(target)] += contribution


def _reflect(positions, size):
    """numpy 'reflect' padding indices (edge not repeated), valid for pads of any length."""
    if size == 1:
        return np.zeros_like(positions)
    period = 2 * (size - 1)
    positions = np.mod(positions, period)
    return np.where(positions >= size, period - positions, positions)


def _as_spatial(array, info, label):
    """Validate dimensionality and channels; return (float32 array without channel axis, had_channel_axis)."""
    array = np.asarray(array)
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ConfigError(f"{label} must be a real numeric array, got dtype {array.dtype}")
    restore_channel = False
    if array.ndim == info.ndim + 1 and array.shape[-1] <= 4 and min(array.shape[:-1]) > 4:
        # A last axis of 1-4 entries is a channel axis, not an image axis.
        if array.shape[-1] != info.channels:
            raise ConfigError(
                f"{label} has {array.shape[-1]} channels (shape {array.shape}); the model takes {info.channels}. "
                "Pass arrays without a channel axis: (H, W), (N, H, W) or (D, H, W)"
            )
        array, restore_channel = array[..., 0], True
    if info.ndim == 3 and array.ndim != 3:
        raise ConfigError(f"a 3D model needs a (D, H, W) volume; {label} has shape {array.shape}")
    if info.ndim == 2 and array.ndim not in (2, 3):
        raise ConfigError(f"a 2D model needs an (H, W) image or an (N, H, W) stack; {label} has shape {array.shape}")
    if 0 in array.shape:
        raise ConfigError(f"{label} is empty (shape {array.shape})")
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        raise ConfigError(f"{label} contains NaN or infinite values")
    return array, restore_channel


def _per_axis(value, n_axes, label, minimum=1):
    values = [value] * n_axes if np.isscalar(value) else list(value)
    if len(values) != n_axes or any(isinstance(v, bool) or int(v) != v or v < minimum for v in values):
        raise ConfigError(f"{label} must be an integer >= {minimum} or {n_axes} of them, got {value!r}")
    return [int(v) for v in values]


def _round_up(value, multiple):
    return -(-value // multiple) * multiple


__all__ = ["ModelInfo", "auto_tiling", "model_info", "predict", "tiling_summary"]
