"""tf.data pipelines that turn clean CT volumes into (noisy[, prior], clean) training batches.

Stage order, chosen so that it is both correct and fast::

    decode -> cache (clean volumes only) -> shuffle -> per-sample seeds -> crop/zoom/flip
           -> intensity window -> noise -> prior -> batch -> prefetch

* Only the clean, decoded volumes are cached, so crops, flips and noise are drawn again
  every epoch (the reference repository cached after adding noise and froze them).
* Samples are shuffled before batching (the reference shuffled whole batches).
* Every random draw is stateless and keyed by a per-sample seed taken from
  ``tf.data.Dataset.random``: training seeds change every epoch, validation seeds do not,
  so validation metrics are comparable across epochs and runs.
* The prior is computed from the *noisy* neighbouring slices after noise is added, with a
  slab margin around the patch so that it equals :func:`utils.data.prior.neighbour_prior` of the
  whole noisy volume at the sampled slices.

Memory is bounded by the clean volumes (or by a few volumes when streaming from disk):
patches are cut on the fly and never materialised as a set.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from utils.base.defaults import DEFAULT_HU_WINDOW, PRIOR_DECAY, PRIOR_HALF_WINDOW, PRIOR_VARIANT
from utils.base.errors import ConfigError
from utils.data.noise import GaussianNoise
from utils.data.prior import neighbour_prior_tf, prior_offsets_and_weights

AUTOTUNE = tf.data.AUTOTUNE


@dataclasses.dataclass(frozen=True)
class PatchSampling:
    """How training samples are cut from volumes.

    Attributes:
        patch: ``(H, W)`` for 2D samples or ``(D, H, W)`` for 3D patches.
        use_prior: also return the neighbour-slice prior of the noisy sample.
        prior_half_window, prior_decay, prior_variant: see :mod:`utils.data.prior`.
        central_fraction: crops are drawn inside the central fraction of each slice (the
            reference used 0.7 in 2D and 0.8 in 3D to avoid empty corners); 1.0 uses it all.
        flips: random up/down and left/right flips (in-plane only, so the prior window keeps
            its orientation along z).
        window_augmentation: probability of showing a sample through another intensity
            window, drawn from ``augmentation_windows`` (HU, inside ``base_hu_window``) and
            quantised to 8 bits, as narrow-window 8-bit exports are.
        zoom_range: ``()`` for none, or ``(lo, hi)`` scale factors: each training sample draws
            one in-plane factor ``z`` log-uniformly in [lo, hi] (z = exp(U(log lo, log hi))),
            cuts a region of ``round(patch / z)`` pixels and resizes it to the patch (bilinear,
            antialiased when shrinking), so the sample shows pixels ``1 / z`` times the source's
            size (z = 0.5: twice as large). Both in-plane axes use the same factor and the slice
            axis of 3D patches is not resampled. The region is capped at the usable part of the
            slice (a smaller zoom-out on small slices). Resampling happens before the noise is
            added, so the noise stays white at the output pixel scale. Validation samples are
            never zoomed.
    """

    patch: tuple
    use_prior: bool = False
    prior_half_window: int = PRIOR_HALF_WINDOW
    prior_decay: float = PRIOR_DECAY
    prior_variant: str = PRIOR_VARIANT
    central_fraction: float = 1.0
    flips: bool = True
    window_augmentation: float = 0.0
    augmentation_windows: tuple = ((-160.0, 240.0), (-1000.0, 400.0), (-135.0, 215.0), (-1024.0, -769.0))
    base_hu_window: tuple = DEFAULT_HU_WINDOW
    zoom_range: tuple = ()

    def __post_init__(self):
        if self.zoom_range:
            try:
                lo, hi = (float(z) for z in self.zoom_range)
            except (TypeError, ValueError):
                raise ConfigError(f"zoom range must be two numbers (lo, hi), got {self.zoom_range!r}") from None
            if not (np.isfinite(lo) and np.isfinite(hi) and 0 < lo <= hi):
                raise ConfigError(f"zoom range must be two positive finite numbers with lo <= hi, got ({lo}, {hi})")
            object.__setattr__(self, "zoom_range", (lo, hi))

    @property
    def zooms(self):
        """True when samples are resampled (a zoom range other than none or exactly (1, 1))."""
        return bool(self.zoom_range) and tuple(self.zoom_range) != (1.0, 1.0)

    @property
    def ndim(self):
        return len(self.patch)

    @property
    def slab_margins(self):
        """Slices needed below and above a patch to compute its prior exactly."""
        if not self.use_prior:
            return 0, 0
        offsets, _ = prior_offsets_and_weights(self.prior_half_window, self.prior_decay, self.prior_variant)
        return int(max(0, -offsets.min())), int(max(0, offsets.max()))


def check_patch_fits(volume_shapes, sampling):
    """Raise ConfigError before training when a patch cannot be cut from some volume."""
    for index, shape in enumerate(volume_shapes):
        depth, height, width = shape
        needed = ((1,) if sampling.ndim == 2 else (sampling.patch[0],)) + tuple(sampling.patch[-2:])
        usable = (depth,) + tuple(int(round(s * sampling.central_fraction)) for s in (height, width))
        if any(n > u for n, u in zip(needed, usable)):
            raise ConfigError(
                f"patch {tuple(sampling.patch)} is larger than volume {index} of shape {tuple(shape)} "
                f"(usable {usable} with central fraction {sampling.central_fraction}); choose a smaller --patch"
            )


def _volume_source(volumes):
    """Dataset of clean (D, H, W) float32 volumes from arrays in memory or from files on disk."""
    spec = tf.TensorSpec((None, None, None), tf.float32)
    if all(isinstance(v, np.ndarray) for v in volumes):
        arrays = [np.asarray(v, np.float32) for v in volumes]
        return tf.data.Dataset.from_generator(lambda: iter(arrays), output_signature=spec)
    from utils.data.readers import read_ct

    def read(path):
        for volume in read_ct(path.decode()):
            yield volume.array

    # Several volumes are read in parallel; each file yields all the volumes it holds.
    paths = tf.data.Dataset.from_tensor_slices([str(p) for p in volumes])
    return paths.interleave(
        lambda p: tf.data.Dataset.from_generator(read, args=(p,), output_signature=spec),
        cycle_length=2,
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    )


def _samples_in_volume(volume, sampling, samples_per_volume):
    """Samples cut from one volume per epoch: one per slice in 2D, one per patch depth in 3D."""
    if samples_per_volume:
        return tf.constant(samples_per_volume, tf.int64)
    depth = tf.cast(tf.shape(volume)[0], tf.int64)
    patch_depth = 1 if sampling.ndim == 2 else sampling.patch[0]
    return (depth + patch_depth - 1) // patch_depth


def _random_offset(seed, size, patch):
    return tf.random.stateless_uniform([], seed, 0, size - patch + 1, dtype=tf.int32)


def _cut_sample(volume, seed, sampling):
    """Cut one clean sample (with the slab margin needed by the prior) at a seeded position."""
    seeds = tf.random.experimental.stateless_split(seed, 6)
    depth, height, width = tf.unstack(tf.shape(volume))
    patch_depth = 1 if sampling.ndim == 2 else sampling.patch[0]
    patch_h, patch_w = sampling.patch[-2:]
    # Central region of each slice, then a random crop inside it.
    region_h = tf.cast(tf.round(tf.cast(height, tf.float32) * sampling.central_fraction), tf.int32)
    region_w = tf.cast(tf.round(tf.cast(width, tf.float32) * sampling.central_fraction), tf.int32)
    crop_h, crop_w = patch_h, patch_w
    if sampling.zooms:
        # Its own seed, folded from the sample's, so the other draws are those of an unzoomed run.
        crop_h, crop_w = _zoomed_crop(tf.random.experimental.stateless_fold_in(seed, 7), sampling, region_h, region_w)
    y0 = (height - region_h) // 2 + _random_offset(seeds[0], region_h, crop_h)
    x0 = (width - region_w) // 2 + _random_offset(seeds[1], region_w, crop_w)
    z0 = _random_offset(seeds[2], depth, patch_depth)
    below, above = sampling.slab_margins
    z_lo = tf.maximum(z0 - below, 0)
    z_hi = tf.minimum(z0 + patch_depth + above, depth)
    slab = volume[z_lo:z_hi, y0 : y0 + crop_h, x0 : x0 + crop_w]
    if sampling.zooms:
        # Each slice of the slab resized in-plane to the patch; the slice axis is the batch axis here.
        slab = tf.image.resize(slab[..., None], (patch_h, patch_w), method="bilinear", antialias=True)[..., 0]
    if sampling.flips:
        flip_ud = tf.random.stateless_uniform([], seeds[3]) < 0.5
        flip_lr = tf.random.stateless_uniform([], seeds[4]) < 0.5
        slab = tf.cond(flip_ud, lambda: tf.reverse(slab, [1]), lambda: slab)
        slab = tf.cond(flip_lr, lambda: tf.reverse(slab, [2]), lambda: slab)
    # The in-plane size is the patch's (cut or resized to it); saying so statically lets the noise
    # models' spectral filters be built once, as constants, instead of per sample.
    slab = tf.ensure_shape(slab, [None, patch_h, patch_w])
    return slab, z0 - z_lo, patch_depth, seeds[5]


def _zoomed_crop(seed, sampling, region_h, region_w):
    """Region ``(h, w)`` to cut for a log-uniform zoom factor, capped at the usable region."""
    patch_h, patch_w = sampling.patch[-2:]
    lo, hi = sampling.zoom_range
    if lo == hi:
        zoom = tf.constant(lo, tf.float32)
    else:
        zoom = tf.exp(tf.random.stateless_uniform([], seed, float(np.log(lo)), float(np.log(hi))))
    # One factor for both axes, raised where the region would not fit, so the zoom stays isotropic.
    zoom = tf.maximum(zoom, tf.maximum(patch_h / tf.cast(region_h, tf.float32), patch_w / tf.cast(region_w, tf.float32)))
    crop_h = tf.clip_by_value(tf.cast(tf.round(patch_h / zoom), tf.int32), 1, region_h)
    crop_w = tf.clip_by_value(tf.cast(tf.round(patch_w / zoom), tf.int32), 1, region_w)
    return crop_h, crop_w


def _rewindow(clean, seed, sampling):
    """Show the sample through a randomly chosen narrower window, quantised to 8 bits."""
    lo_base, hi_base = sampling.base_hu_window
    windows = tf.constant(sampling.augmentation_windows, tf.float32)
    seeds = tf.random.experimental.stateless_split(seed, 2)
    choice = tf.random.stateless_uniform([], seeds[0], 0, len(sampling.augmentation_windows), dtype=tf.int32)
    lo, hi = windows[choice, 0], windows[choice, 1]
    hu = clean * (hi_base - lo_base) + lo_base
    narrow = tf.round(tf.clip_by_value((hu - lo) / (hi - lo), 0.0, 1.0) * 255.0) / 255.0
    apply = tf.random.stateless_uniform([], seeds[1]) < sampling.window_augmentation
    return tf.cond(apply, lambda: narrow, lambda: clean)


def _make_sample(volume, seed, sampling, noise):
    slab, start, patch_depth, noise_seed = _cut_sample(volume, seed, sampling)
    seeds = tf.random.experimental.stateless_split(noise_seed, 2)
    if sampling.window_augmentation > 0:
        slab = _rewindow(slab, seeds[0], sampling)
    noisy_slab = noise.sample_tf(slab, seeds[1])
    clean = tf.ensure_shape(slab[start : start + patch_depth], (patch_depth,) + sampling.patch[-2:])
    noisy = tf.ensure_shape(noisy_slab[start : start + patch_depth], (patch_depth,) + sampling.patch[-2:])
    if sampling.ndim == 2:
        clean, noisy = clean[0], noisy[0]
    clean, noisy = clean[..., None], noisy[..., None]
    if not sampling.use_prior:
        return noisy, clean
    prior = neighbour_prior_tf(noisy_slab, sampling.prior_half_window, sampling.prior_decay, sampling.prior_variant)
    prior = tf.ensure_shape(prior[start : start + patch_depth], (patch_depth,) + sampling.patch[-2:])
    if sampling.ndim == 2:
        prior = prior[0]
    return {"noisy": noisy, "prior": prior[..., None]}, clean


def make_dataset(
    volumes,
    sampling,
    noise=GaussianNoise(0.05),
    batch_size=8,
    samples_per_volume=None,
    training=True,
    seed=0,
    cache=True,
    prefetch=True,
):
    """Build a batched tf.data pipeline of denoising samples.

    Args:
        volumes: list of clean float32 arrays ``(D, H, W)`` in [0, 1], or of file paths readable
            by :func:`utils.data.readers.read_ct` (decoded in parallel, interleaved).
        sampling: :class:`PatchSampling` (2D slices or 3D patches, prior or not, augmentation).
        noise: a noise model from :mod:`utils.data.noise`, applied to each sample with the sample's own
            seed (so :class:`utils.data.noise.GaussianRangeNoise` gives every sample its own sigma:
            new ones every training epoch, the same ones in every validation pass).
        samples_per_volume: samples cut from each volume per epoch; default: its number of
            slices for 2D, ``ceil(D / patch_depth)`` for 3D. A list gives one count per volume
            (volumes in memory only; see :func:`balanced_samples_per_volume`).
        training: shuffle, flip and draw new crops and noise every epoch. When False, samples,
            crops and noise are the same in every epoch (seeded by ``seed``) and no flips.
        seed: seeds the shuffle and every crop and noise draw.
        cache: keep the decoded clean volumes in memory after the first epoch. Turn it off
            for file sources that do not fit in memory: they are then streamed every epoch.
        prefetch: overlap the pipeline with the training step (off only for benchmarks).

    Returns:
        A dataset of ``(noisy, clean)`` or ``({"noisy", "prior"}, clean)`` batches, channels-last:
        ``(B, H, W, 1)`` in 2D and ``(B, D, H, W, 1)`` in 3D, float32.
    """
    if sampling.ndim not in (2, 3):
        raise ConfigError(f"patch must have 2 (H, W) or 3 (D, H, W) sizes, got {sampling.patch}")
    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}")
    if not training:
        sampling = dataclasses.replace(sampling, flips=False, window_augmentation=0.0, zoom_range=())
    in_memory = all(isinstance(v, np.ndarray) for v in volumes)
    if in_memory:
        check_patch_fits([v.shape for v in volumes], sampling)
    source = _volume_source(volumes)
    if cache:
        source = source.cache()
    if isinstance(samples_per_volume, (list, tuple)):
        if not in_memory or len(samples_per_volume) != len(volumes):
            raise ConfigError("one sample count per volume needs the volumes in memory, one count each")
        counts = tf.data.Dataset.from_tensor_slices(tf.constant(samples_per_volume, tf.int64))
        samples = tf.data.Dataset.zip(source, counts).flat_map(lambda v, n: tf.data.Dataset.from_tensors(v).repeat(n))
        n_samples = int(sum(samples_per_volume))
    else:
        samples = source.flat_map(
            lambda v: tf.data.Dataset.from_tensors(v).repeat(_samples_in_volume(v, sampling, samples_per_volume))
        )
        n_samples = None
        if in_memory:
            n_samples = int(sum(samples_per_volume or _default_samples(v.shape[0], sampling) for v in volumes))
    if training:
        # Volumes are held by reference, so a buffer of a whole epoch costs no copies.
        samples = samples.shuffle(n_samples or 1024, seed=seed, reshuffle_each_iteration=True)
    seeds = tf.data.Dataset.random(seed=seed + 1, rerandomize_each_iteration=training).batch(2)
    samples = tf.data.Dataset.zip(samples, seeds).map(
        lambda v, s: _make_sample(v, s, sampling, noise), num_parallel_calls=AUTOTUNE, deterministic=True
    )
    if n_samples is not None:
        samples = samples.apply(tf.data.experimental.assert_cardinality(n_samples))
    batches = samples.batch(batch_size)
    return batches.prefetch(AUTOTUNE) if prefetch else batches


def balanced_samples_per_volume(volumes, sources, sampling, samples_per_volume=None):
    """Samples per volume that give every source the same share of an epoch of about the same size.

    ``sources`` names where each volume came from (one entry per volume). Without balancing, a
    source counts with its number of slices (2D) or patch depths (3D), so 20 real slices mixed with
    512 phantom slices are 4 % of the samples; balanced, each of the two sources is half. Inside a
    source, volumes keep their natural proportions. Counts are rounded per volume, at least one each.
    """
    natural = [samples_per_volume or _default_samples(v.shape[0], sampling) for v in volumes]
    members = {}
    for index, source in enumerate(sources):
        members.setdefault(source, []).append(index)
    share = sum(natural) / len(members)
    counts = [0] * len(volumes)
    for indices in members.values():
        total = sum(natural[i] for i in indices)
        for i in indices:
            counts[i] = max(1, round(share * natural[i] / total))
    return counts


def _default_samples(depth, sampling):
    if sampling.ndim == 2:
        return int(depth)
    return int(np.ceil(depth / sampling.patch[0]))
