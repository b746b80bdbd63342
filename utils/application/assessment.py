"""Shared evaluation of denoisers: seeded test samples, methods, the metric loop, tables and summary.

The three ``Demo_assess_*`` scripts are thin articles over this module::

    volumes = load_volumes(paths)                          # clean CT, read_ct's [0, 1] scale
    noisy = add_noise(volumes, noise=0.05, seed=2020)      # whole volumes, seeded
    samples = slice_samples(noisy, slices_per_volume=8)    # or volume_samples(noisy, max_depth=16)
    methods = baseline_methods(["noisy", "tv"], 0.05, sample_ndim=2) + model_methods(paths, allowed_ndims=(2,))
    check_compatible(methods, samples)                     # every mismatch fails here, before any work
    evaluation = evaluate(methods, samples, keep=[samples[0].name])
    write_metrics_csv(out / "metrics.csv", evaluation.records)

Test samples
------------
Noise is added to the WHOLE clean volume with ``numpy.random.default_rng([seed, volume_index])``
(Gaussian, not clipped, ``utils.data.noise``); slices and depth crops are cut afterwards, so a slice's
prior is the neighbour prior (``utils.data.prior.neighbour_prior``) of the whole noisy volume and its
first and last slices have their real neighbours. The same standard-normal field is scaled by each
noise level, so results at different levels are paired. Sample 0 is noisy like every other one
(the reference repository's first test image was clean).

Simulated low-dose test noise (``make_noise_setting("ct_lowdose", dose=D)``, the scripts' ``--noise-model
ct_lowdose --dose D``): each whole clean volume gets the REFERENCE form of ``utils.data.noise.CTLowDoseNoise``
(``sample_numpy``: projection-domain Poisson + electronic noise, ramp FBP, slice by slice, from
``numpy.random.default_rng([seed, volume_index])``) at the volume's own in-plane pixel spacing from the
reader; a volume without a known spacing or HU window is a DataError before anything is simulated.
The ``noise`` column then holds the MEASURED standard deviation of ``noisy - clean`` on the [0, 1] scale
over all body voxels of all test volumes (clean intensity in ``utils.data.noise_level.BODY_RANGE``), one number
per dose; the metrics CSV gains the columns ``noise_model`` and ``dose`` and the summary names the model
and its parameters. TV, SPADE, BM3D and BM4D have no tuned parameters for this noise: each takes the
noise level ESTIMATED from the noisy sample it denoises (``utils.data.noise_level.estimate_scan_sigma``, inside
the body), checked to lie in (0, 1) and handed on as ``Denoise_CT.py`` does (BM3D/BM4D ``sigma_psd``; the
solvers' noise-aware defaults ``sigma=``); the estimates are listed in the summary.

Metrics (``utils.data.metrics``, on the [0, 1] intensity scale, estimates not clipped)
-------------------------------------------------------------------------------
* ``psnr``: ``10 log10(1 / MSE)`` in dB, data range 1, over the whole sample (slice or volume).
* ``ssim``: SSIM with data range 1, Gaussian window 11 with sigma 1.5, K1 0.01, K2 0.03, population
  covariance (``tf.image.ssim``'s definition); for a volume, the mean over its axial slices.
* ``rel_err_percent``: ``100 * ||x_hat - x||_2 / ||x||_2`` over the same sample (for a volume: the
  whole volume in numerator and denominator, not one slice over the volume's norm).
* ``seconds``: wall-clock time of the method on that sample, after untimed warm-up calls of the
  learned models on small crops and of the TensorFlow solvers for one iteration on the first sample
  (graph tracing, and the solvers' XLA compilation for that array shape, are not counted); the
  neighbour prior, input data like the noisy image, is computed before the clock starts.

Baseline parameters
-------------------
TV, SPADE, BM3D and BM4D run with parameters tuned by ``utils.application.tuning`` (maximum mean PSNR on seeded
crops of the embedded validation phantoms), read from ``<tuned_dir>/tuned_2d.json`` (methods applied
to slices) or ``tuned_3d.json`` (applied to volumes). A missing entry is tuned on the spot, cheaply,
and stored, so an untuned default never ends up in a comparison. BM3D is a 2D method (slice by slice)
and BM4D a 3D one, whatever the samples.

Every file is written atomically (``utils.base.atomic``). Problems with data, settings or model files raise
``DataError``, ``ConfigError`` or ``ModelFileError`` before any method runs; :func:`user_errors` turns
them into ``error: ...`` and a non-zero exit in the scripts.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import math
import sys
import time
from pathlib import Path

import numpy as np

from utils.base import defaults
from utils.base.atomic import atomic_open, write_text
from utils.base.errors import ConfigError, DataError, ModelFileError
from utils.data.metrics import all_metrics, psnr
from utils.data.noise import CTLowDoseNoise, GaussianNoise
from utils.data.prior import neighbour_prior
from utils.data.readers import DEFAULT_HU_WINDOW, read_ct

try:  # progress bars are a convenience; their absence must never stop an assessment
    from tqdm.auto import tqdm
except ImportError:  # pragma: no cover
    tqdm = None

DEFAULT_SEED = defaults.ASSESSMENT_SEED
TEST_NOISE_MODELS = ("gaussian", "ct_lowdose")
DEFAULT_DOSE = 0.25  # --noise-model ct_lowdose without --dose: quarter dose
METRIC_COLUMNS = ("method", "sample", "noise", "psnr", "ssim", "rel_err_percent", "seconds")
BASELINES = ("noisy", "tv", "spade", "bm3d", "bm4d")
MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")
DEFAULT_MODELS_DIR = Path(defaults.MODELS_DIR)
DEFAULT_TUNED_DIR = Path(defaults.TUNED_DIR)

# The neighbour prior used by SPADE and by ResPrU-Net models whose config does not say otherwise
# (the defaults of utils.data.prior and of the training configuration).
DEFAULT_PRIOR = dict(defaults.DEFAULT_PRIOR)

# Tuning on the embedded validation phantoms: one seeded noise realisation, small central crops,
# so that a missing entry costs seconds (TV, SPADE) to about a minute (BM3D, BM4D) on 2 cores.
TUNING_SEED = 0
TUNING_CROP_3D = (16, 96, 96)
TUNING_CROP_BM4D = (8, 64, 64)  # BM4D costs ~10 us per voxel; this keeps its 5 trials near a minute
TUNING_CROP_2D = (96, 96)
TUNING_SLICES_PER_VOLUME = 2
# Bookkeeping that utils.application.tuning stores beside the solver arguments.
_TUNING_RECORD_KEYS = {"psnr", "noisy_psnr", "evaluations", "seed", "crop_shape", "sigma_multiplier"}

# ==================================================================================== test samples


@dataclasses.dataclass(eq=False)  # identity, not element-wise array comparison
class NoisyVolume:
    """A clean volume, its seeded noisy copy (whole volume) and priors computed on demand.

    ``clean``/``noisy``: float32 ``(D, H, W)``. ``label``: short unique name used in sample names.
    """

    label: str
    clean: np.ndarray
    noisy: np.ndarray
    noise: float
    source: str
    contiguous: bool
    hu_window: tuple | None
    spacing: tuple | None
    noise_model: str = "gaussian"
    noise_params: dict = dataclasses.field(default_factory=dict)  # {"dose": 0.25} for ct_lowdose
    _priors: dict = dataclasses.field(default_factory=dict, repr=False)

    def prior(self, half_window=defaults.PRIOR_HALF_WINDOW, decay=defaults.PRIOR_DECAY, variant=defaults.PRIOR_VARIANT):
        """Neighbour prior of the whole noisy volume (cached per setting)."""
        if not self.contiguous or self.noisy.shape[0] < 2:
            raise ConfigError(
                f"{self.source}: the neighbour-slice prior needs contiguous slices, but this input is "
                + ("a single slice" if self.noisy.shape[0] < 2 else "a stack of unrelated slices")
            )
        key = (int(half_window), float(decay), str(variant))
        if key not in self._priors:
            self._priors[key] = neighbour_prior(self.noisy, half_window=half_window, decay=decay, variant=variant)
        return self._priors[key]


@dataclasses.dataclass(frozen=True, eq=False)
class Sample:
    """One test item cut from a noisy volume: a slice ``(H, W)`` (``index`` an int) or a sub-volume
    ``(D, H, W)`` (``index`` a tuple of three slices)."""

    name: str
    volume: NoisyVolume
    index: int | tuple

    @property
    def clean(self):
        return self.volume.clean[self.index]

    @property
    def noisy(self):
        return self.volume.noisy[self.index]

    @property
    def noise(self):
        return self.volume.noise

    @property
    def noise_model(self):
        return self.volume.noise_model

    @property
    def noise_params(self):
        return self.volume.noise_params

    @property
    def ndim(self):
        return 2 if isinstance(self.index, (int, np.integer)) else 3

    @property
    def has_prior(self):
        return self.volume.contiguous and self.volume.noisy.shape[0] >= 2

    def prior(self, half_window=defaults.PRIOR_HALF_WINDOW, decay=defaults.PRIOR_DECAY, variant=defaults.PRIOR_VARIANT):
        return self.volume.prior(half_window, decay, variant)[self.index]

    def describe(self):
        if self.ndim == 2:
            return f"{self.volume.source}, slice {self.index}"
        z, y, x = self.index
        return f"{self.volume.source}, slices {z.start}-{z.stop - 1}, rows {y.start}-{y.stop - 1}, columns {x.start}-{x.stop - 1}"


def load_volumes(paths=None, hu_window=DEFAULT_HU_WINDOW):
    """Clean test volumes from ``paths`` (anything ``read_ct`` reads); the embedded phantom test split if empty.

    The embedded split is generated under ``data/phantom/`` on first use (``utils.data.phantom``).
    """
    if not paths:
        from utils.data.phantom import ensure_default_dataset

        paths = ensure_default_dataset()["test"]
    volumes = []
    for path in paths:
        if not Path(path).exists():
            raise DataError(path, "no such file or folder (check --data)")
        volumes.extend(read_ct(path, hu_window=hu_window))
    if not volumes:
        raise DataError(", ".join(map(str, paths)), "no CT volumes found")
    return volumes


def add_noise(volumes, noise, seed=DEFAULT_SEED):
    """Seeded Gaussian noise (``sigma = noise`` on [0, 1]) on each whole volume -> ``list[NoisyVolume]``.

    Volume ``i`` draws from ``numpy.random.default_rng([seed, i])``: its noise does not depend on the
    other volumes, and the same field is scaled for every noise level.
    """
    model = GaussianNoise(float(noise))
    if model.sigma <= 0:
        raise ConfigError(f"--noise must be > 0, got {noise}")
    labels = _volume_labels([v.source for v in volumes])
    noisy_volumes = []
    for i, (volume, label) in enumerate(zip(volumes, labels)):
        clean = np.asarray(volume.array, dtype=np.float32)
        noisy = model.sample_numpy(clean, np.random.default_rng([int(seed), i]))
        noisy_volumes.append(
            NoisyVolume(label, clean, noisy, model.sigma, str(volume.source), bool(volume.contiguous), volume.hu_window, volume.spacing)
        )
    return noisy_volumes


@dataclasses.dataclass(frozen=True)
class NoiseSetting:
    """The test noise of an assessment: Gaussian ``sigma`` (the default) or simulated low dose at ``dose``.

    Build it with :func:`make_noise_setting` (validates the command-line options). ``apply(volumes, seed)``
    gives the ``NoisyVolume`` list (:func:`add_noise` or :func:`add_lowdose_noise`).
    """

    model: str = "gaussian"
    sigma: float | None = None
    dose: float | None = None

    @property
    def params(self):
        """The noise model's parameters as recorded in the results: ``{"sigma": s}`` or ``{"dose": d}``."""
        return {"dose": self.dose} if self.model == "ct_lowdose" else {"sigma": self.sigma}

    @property
    def label(self):
        """``"noise sigma 0.05"`` or ``"ct_lowdose dose 0.25"`` (figure titles)."""
        return f"ct_lowdose dose {self.dose:g}" if self.model == "ct_lowdose" else f"noise sigma {self.sigma:g}"

    @property
    def slug(self):
        """Folder-name part: ``"0.05"`` or ``"lowdose0.25"``."""
        return f"lowdose{self.dose:g}" if self.model == "ct_lowdose" else f"{self.sigma:g}"

    def apply(self, volumes, seed=DEFAULT_SEED):
        if self.model == "ct_lowdose":
            return add_lowdose_noise(volumes, self.dose, seed)
        return add_noise(volumes, self.sigma, seed)


def make_noise_setting(model="gaussian", sigma=None, dose=None):
    """Validated :class:`NoiseSetting` from the scripts' ``--noise-model``, ``--noise`` and ``--dose``.

    ``dose`` is for ``ct_lowdose`` only (ConfigError otherwise); it defaults to ``DEFAULT_DOSE`` and must
    lie in (0, 1) (dose 1 adds no noise). ``sigma`` is ignored by ``ct_lowdose``.
    """
    if model not in TEST_NOISE_MODELS:
        raise ConfigError(f"unknown --noise-model {model!r}; choose one of {', '.join(TEST_NOISE_MODELS)}")
    if model != "ct_lowdose":
        if dose is not None:
            raise ConfigError(f"--dose applies to --noise-model ct_lowdose only, not {model!r}")
        return NoiseSetting(model, sigma=float(sigma))
    from utils.data.lowdose import check_dose

    dose = check_dose(DEFAULT_DOSE if dose is None else dose)
    if dose >= 1:
        raise ConfigError("--dose 1 keeps the full dose and adds no noise; give a fraction below 1 (0.25 = quarter dose)")
    return NoiseSetting(model, dose=dose)


def lowdose_spacing(volume):
    """In-plane pixel spacing (mm) of a ``CTVolume`` for the low-dose simulation; DataError naming the
    file when the reader found none (8-bit PNG exports, bare NIfTI slices without a header spacing) or
    when the volume has no HU window."""
    from utils.data.lowdose import check_spacing

    if volume.hu_window is None:
        raise DataError(volume.source, "has no HU window (8-bit or [0, 1] images): --noise-model ct_lowdose needs CT in HU")
    if volume.spacing is None:
        raise DataError(
            volume.source,
            "pixel spacing unknown: --noise-model ct_lowdose simulates the scan's projections and needs the in-plane "
            "spacing in mm (use DICOM or NIfTI with a spacing, or Gaussian --noise)",
        )
    return check_spacing(tuple(volume.spacing)[-2:], str(volume.source))


def add_lowdose_noise(volumes, dose, seed=DEFAULT_SEED):
    """Reference-form low-dose noise (``CTLowDoseNoise.sample_numpy``) on each whole volume -> ``list[NoisyVolume]``.

    Volume ``i`` is simulated at its own in-plane spacing and HU window from
    ``numpy.random.default_rng([seed, i])``; every volume's spacing is checked before any simulation.
    Each ``NoisyVolume.noise`` is the same number: the standard deviation of ``noisy - clean`` over the
    body voxels (clean intensity in ``utils.data.noise_level.BODY_RANGE``) of all volumes pooled (of all
    voxels when none is body).
    """
    from utils.data.noise_level import BODY_RANGE

    dose = make_noise_setting("ct_lowdose", dose=dose).dose
    spacings = [lowdose_spacing(v) for v in volumes]
    labels = _volume_labels([v.source for v in volumes])
    pairs, body_noise, all_noise = [], [], []
    for i, (volume, spacing) in enumerate(zip(volumes, spacings)):
        clean = np.asarray(volume.array, dtype=np.float32)
        model = CTLowDoseNoise(dose=dose, hu_window=tuple(volume.hu_window), pixel_spacing_mm=spacing)
        noisy = model.sample_numpy(clean, np.random.default_rng([int(seed), i]))
        added = (noisy - clean).astype(np.float64)
        body_noise.append(added[(clean > BODY_RANGE[0]) & (clean < BODY_RANGE[1])])
        all_noise.append(added.ravel())
        pairs.append((clean, noisy))
    pooled = np.concatenate(body_noise)
    level = float(np.std(pooled if pooled.size else np.concatenate(all_noise)))
    return [
        NoisyVolume(label, clean, noisy, level, str(volume.source), bool(volume.contiguous), volume.hu_window, volume.spacing,
                    noise_model="ct_lowdose", noise_params={"dose": dose})
        for (clean, noisy), volume, label in zip(pairs, volumes, labels)
    ]


def evenly_spaced(depth, count):
    """``count`` slice indices spread over ``range(depth)``, centred in equal bins (all when count <= 0)."""
    if count <= 0 or count >= depth:
        return list(range(depth))
    return sorted({int((k + 0.5) * depth / count) for k in range(count)})


def slice_samples(noisy_volumes, slices_per_volume=8):
    """2D samples: ``slices_per_volume`` evenly spaced slices of every volume (0: all slices)."""
    if slices_per_volume < 0:
        raise ConfigError(f"--slices-per-volume must be >= 0, got {slices_per_volume}")
    return [
        Sample(f"{volume.label}_z{z:03d}", volume, z)
        for volume in noisy_volumes
        for z in evenly_spaced(volume.noisy.shape[0], slices_per_volume)
    ]


def volume_samples(noisy_volumes, max_depth=None, max_size=None):
    """3D samples: each volume, cropped to its central ``max_depth`` slices and, in plane, to its central
    ``max_size`` x ``max_size`` pixels (None or 0: no crop). Cropping happens after the noise and the prior.

    Raises DataError for a single slice or a stack of unrelated slices: neither is a volume.
    """
    for label, value in (("--max-depth", max_depth), ("--max-size", max_size)):
        if value is not None and value < 0:
            raise ConfigError(f"{label} must be >= 0, got {value}")
    samples = []
    for volume in noisy_volumes:
        depth, height, width = volume.noisy.shape
        if depth < 2:
            raise DataError(volume.source, f"is a 2D image (shape {volume.noisy.shape}); 3D methods need volumes, use the 2D demo")
        if not volume.contiguous:
            raise DataError(volume.source, "is a stack of unrelated slices, not a volume; use the 2D demo")
        index = _central_crop_index(
            (depth, height, width), (max(2, max_depth or depth), max(2, max_size or height), max(2, max_size or width))
        )
        cropped = [f"{axis}{s.start:03d}-{s.stop - 1:03d}" for axis, s, n in zip("zyx", index, (depth, height, width)) if s.stop - s.start < n]
        samples.append(Sample("_".join([volume.label] + cropped), volume, index))
    return samples


def _volume_labels(sources):
    """Short unique labels: the file stem, or ``parent_stem`` for generic names (kits19 ``imaging``)."""

    def stem(path):
        name = Path(path).name
        for suffix in (".nii.gz", ".nii", ".npz", ".dcm"):
            if name.lower().endswith(suffix):
                return name[: -len(suffix)]
        return name

    labels = [stem(s) for s in sources]
    for i, source in enumerate(sources):
        if labels.count(labels[i]) > 1 and Path(source).parent.name:
            labels[i] = f"{Path(source).parent.name}_{labels[i]}"
    counts = {}
    unique = []
    for label in labels:  # several volumes from one file (a 3D npz set): number them
        counts[label] = counts.get(label, 0) + 1
        unique.append(label if labels.count(label) == 1 else f"{label}_{counts[label] - 1}")
    return unique


# ========================================================================================= methods


class Method:
    """A denoiser under assessment: ``name`` (the ``method`` column), ``denoise(sample) -> array``."""

    name = ""
    kind = ""
    prior_settings = None  # the neighbour-prior settings it takes as input, or None


    def check(self, sample):
        """Raise ConfigError/ModelFileError if this method cannot denoise ``sample`` (no computation)."""

    def warm_up(self, sample):
        """One untimed call on a small crop, so that graph tracing is not counted in ``seconds``."""

    def denoise(self, sample):
        raise NotImplementedError

    def describe(self):
        return self.name


class ModelMethod(Method):
    """A learned model from a file; 2D models denoise volumes slice by slice, 3D models tile by tile."""

    kind = "model"

    def __init__(self, path, model, config, name=None, tile_shape=None, batch_size=4, self_ensemble=False):
        from models.inference import model_info

        self.path = Path(path)
        self.model = model
        self.config = dict(config)
        self.info = model_info(model)
        self.name = name or self.path.stem
        self.tile_shape = tile_shape
        self.batch_size = batch_size
        self.self_ensemble = bool(self_ensemble)
        self.prior_settings = None
        if self.info.needs_prior:
            self.prior_settings = {
                "half_window": int(self.config.get("prior_half_window", DEFAULT_PRIOR["half_window"])),
                "decay": float(self.config.get("prior_decay", DEFAULT_PRIOR["decay"])),
                "variant": str(self.config.get("prior_variant", DEFAULT_PRIOR["variant"])),
            }

    @property
    def ndim(self):
        return self.info.ndim

    def check(self, sample):
        if self.ndim == 3 and sample.ndim == 2:
            raise ModelFileError(
                self.path, f"is a 3D model (input (batch, D, H, W, 1)) but sample {sample.name} is a 2D slice; 3D models need volumes"
            )
        if self.info.needs_prior and not sample.has_prior:
            raise ConfigError(
                f"{self.path}: the model takes a neighbour-slice prior, but {sample.volume.source} has no neighbouring slices"
            )

    def _run(self, noisy, prior):
        from models.inference import predict

        tile = self.tile_shape if (self.ndim == 3 and not self.info.fixed_shape) else None
        return predict(
            self.model,
            noisy,
            prior=prior,
            tile_shape=tile,
            batch_size=self.batch_size,
            progress=False,
            self_ensemble=self.self_ensemble,
        )

    def warm_up(self, sample):
        # Keras traces predict once for the first input shape, then once more for a shape with free
        # dimensions (reduce_retracing): two small crops differing in every axis leave a trace that
        # serves every later sample, so no sample's time includes tracing.
        for count, size in ((2, 32), (3, 40)):
            depth = 4 * count if self.ndim == 3 else count
            crop = _central_crop_index(sample.noisy.shape, (size, size) if sample.ndim == 2 else (depth, size, size))
            prior = sample.prior(**self.prior_settings)[crop] if self.prior_settings else None
            self._run(sample.noisy[crop], prior)

    def denoise(self, sample):
        prior = sample.prior(**self.prior_settings) if self.prior_settings else None
        return self._run(sample.noisy, prior)

    def describe(self):
        keys = ("model", "ndim", "filters", "depth", "noise", "prior", "hu_window", "source")
        settings = ", ".join(f"{k}={self.config[k]}" for k in keys if k in self.config)
        prior = f"; prior {self.prior_settings}" if self.prior_settings else ""
        ensemble = f"; self-ensemble of {2**self.ndim} flips" if self.self_ensemble else ""
        return f"`{self.path}` ({self.model.count_params():,} parameters; {settings}{prior}{ensemble})"


class BaselineMethod(Method):
    """``noisy`` (identity), ``tv``, ``spade``, ``bm3d`` (2D, slice by slice) or ``bm4d`` (3D).

    With ``estimate_sigma`` (non-Gaussian test noise, which has no tuned parameters) every call
    estimates the noise level of the noisy sample it is given, ``utils.data.noise_level.estimate_scan_sigma``
    (inside the body), requires it in (0, 1), and hands it to BM3D/BM4D as ``sigma_psd`` and to TV/SPADE as
    ``sigma=`` (their noise-aware default weights), as ``Denoise_CT.py`` does; ``params`` is then unused.
    The estimates of the timed calls are kept in ``estimated_sigmas`` (the estimate is timed too).
    """

    kind = "baseline"

    def __init__(self, name, params=None, provenance="", estimate_sigma=False):
        if name not in BASELINES:
            raise ConfigError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")
        self.name = name
        self.params = dict(params or {})
        self.provenance = provenance
        self.prior_settings = dict(DEFAULT_PRIOR) if name == "spade" else None
        self.estimate_sigma = bool(estimate_sigma) and name != "noisy"
        self.estimated_sigmas = []

    def check(self, sample):
        if self.name == "spade" and not sample.has_prior:
            raise ConfigError(f"spade needs neighbouring slices for its prior, but {sample.volume.source} has none")
        if self.name == "bm4d" and sample.ndim == 2:
            raise ConfigError("bm4d denoises volumes; on 2D slices use bm3d (or run the 3D / variational demo)")
        if self.name in ("tv", "spade") and min(sample.noisy.shape) < 2:
            raise ConfigError(f"{self.name} needs at least 2 pixels along every axis, sample {sample.name} has {sample.noisy.shape}")
        if self.name in ("bm3d", "bm4d"):
            _classical(self.name)  # fail now, not after the other methods have run, if the binary is missing

    def warm_up(self, sample):
        # The solvers trace once per rank and compile their loop with XLA once per array shape:
        # one iteration on the first sample does both.
        if self.name in ("tv", "spade"):
            self._run(sample.noisy, sample.prior(**self.prior_settings) if self.prior_settings else None, n_iter=1, n_outer=1)

    def denoise(self, sample):
        prior = sample.prior(**self.prior_settings) if self.prior_settings else None
        if not self.estimate_sigma:
            return self._run(sample.noisy, prior)
        sigma = self._estimate(sample)
        self.estimated_sigmas.append(sigma)
        return self._run(sample.noisy, prior, sigma=sigma)

    def solver_arguments(self, sample):
        """The keyword arguments this method gives its solver on ``sample``: the tuned ``params``, or
        ``{"sigma": estimate}`` with ``estimate_sigma``."""
        return {"sigma": self._estimate(sample)} if self.estimate_sigma else dict(self.params)

    def _estimate(self, sample):
        from utils.data.noise_level import estimate_scan_sigma

        sigma = estimate_scan_sigma(sample.noisy)
        if not 0 < sigma < 1:
            raise ConfigError(f"{self.name}: the noise sigma estimated from sample {sample.name} is {sigma:g}, outside (0, 1)")
        return sigma

    def _run(self, noisy, prior, sigma=None, **overrides):
        from utils.solvers import variational

        if self.name == "noisy":
            return np.array(noisy, dtype=np.float32)
        if self.estimate_sigma:
            if sigma is None:  # warm-up call
                from utils.data.noise_level import estimate_scan_sigma

                sigma = min(max(estimate_scan_sigma(noisy), 1e-3), 0.5)
            if self.name == "tv":
                return variational.tv_denoise(noisy, sigma=sigma, **overrides)
            if self.name == "spade":
                return variational.spade_denoise(noisy, prior, sigma=sigma, **overrides)
            classical = _classical()
            if self.name == "bm3d":
                return classical.bm3d_denoise(noisy, sigma, progress=False)
            return classical.bm4d_denoise(noisy, sigma)
        if self.name == "tv":
            return variational.tv_denoise(noisy, **{**self.params, **overrides})
        if self.name == "spade":
            return variational.spade_denoise(noisy, prior, **{**self.params, **overrides})
        classical = _classical()
        if self.name == "bm3d":
            return classical.bm3d_denoise(noisy, self.params["sigma"], progress=False)
        return classical.bm4d_denoise(noisy, self.params["sigma"])

    def describe(self):
        if self.name == "noisy":
            return "noisy input (no denoising)"
        if self.estimate_sigma:
            sigmas = np.asarray(self.estimated_sigmas, dtype=np.float64)
            found = (f"; estimates: median {np.median(sigmas):.4f}, range {sigmas.min():.4f}-{sigmas.max():.4f} over {sigmas.size} samples"
                     if sigmas.size else "")
            return f"sigma estimated from each noisy sample (utils.data.noise_level.estimate_scan_sigma, inside the body){found}"
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(self.params.items()))
        return f"{params} ({self.provenance})" if self.provenance else params


def _classical(package=None):
    """``utils.solvers.classical``, after checking that the ``package`` binary (bm3d or bm4d) loads."""
    from utils.solvers import classical

    if package is not None and not classical.is_available(package):
        raise ConfigError(
            f"{package} is not installed or its binary cannot load (pip install {package}=={classical.PACKAGE_VERSIONS[package]}; "
            f"on Linux it needs OpenBLAS); or drop {package} from --methods"
        )
    return classical


def _fmt(value):
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def parse_method_list(text, allowed=BASELINES):
    """``"noisy,tv"`` -> ``["noisy", "tv"]``; ``"none"`` or ``""`` -> ``[]``; unknown names -> ConfigError."""
    names = [n.strip().lower() for n in str(text).split(",") if n.strip()]
    if names in ([], ["none"]):
        return []
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise ConfigError(f"unknown method(s) {', '.join(unknown)} in --methods; choose from {', '.join(allowed)} (or none)")
    return list(dict.fromkeys(names))


def parse_noise_list(text):
    """``"0.02,0.05"`` -> ``[0.02, 0.05]`` (each > 0 and < 1)."""
    try:
        levels = [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--noise must be a number or a comma list of numbers, got {text!r}") from None
    if not levels or any(not (0 < v < 1) for v in levels):
        raise ConfigError(f"noise levels are standard deviations on the [0, 1] scale, 0 < sigma < 1; got {text!r}")
    return list(dict.fromkeys(levels))


def parse_dose_list(text):
    """``"0.25,0.1"`` -> ``[0.25, 0.1]`` (each in (0, 1): dose fractions for ct_lowdose)."""
    try:
        doses = [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--dose must be a number or a comma list of numbers, got {text!r}") from None
    if not doses or any(not (0 < d < 1) for d in doses):
        raise ConfigError(f"--dose values are fractions of the scan's dose kept, 0 < dose < 1; got {text!r}")
    return list(dict.fromkeys(doses))


# ------------------------------------------------------------------------------- learned models


def _model_config(path):
    path = Path(path)
    if path.suffix.lower() == ".keras":
        from models.storage import read_config

        return read_config(path)
    from models.reference_h5 import describe_reference_h5

    return describe_reference_h5(path)


def model_dims(path):
    """``(ndim, noise)`` recorded in a model file's embedded config, without building it (None when absent)."""
    config = _model_config(path)
    return config.get("ndim"), config.get("noise")


def trained_noise(config):
    """``(noise_model, level)`` a model was trained on, from its config: ``("gaussian", sigma)``,
    ``("gaussian_range", (lo, hi))``, ``("ct_lowdose", dose)`` or ``("ct_lowdose_range", (lo, hi))``; a config without ``noise_model`` is Gaussian."""
    model = config.get("noise_model") or "gaussian"
    if model == "ct_lowdose" and config.get("dose_range"):
        return "ct_lowdose_range", tuple(config["dose_range"])
    if model == "ct_lowdose":
        return model, config.get("dose")
    if config.get("noise_range"):
        return "gaussian_range", tuple(config["noise_range"])
    return model, config.get("noise")


def discover_models(folder=DEFAULT_MODELS_DIR, noise=None, ndims=(2,), noise_model="gaussian", dose=None):
    """Model files in ``folder`` whose embedded config has this ``noise`` (or a blind ``noise_range``
    holding it) and an ``ndim`` in ``ndims``.

    With ``noise_model="ct_lowdose"``: the models trained with ``--noise-model ct_lowdose`` at this
    ``dose`` instead (``noise`` unused). Returns ``(paths, notes)``: ``notes`` says what was skipped and
    why (for the script to print). A missing or empty folder gives no paths and a note; an unreadable
    model file is an error.
    """
    if noise_model == "ct_lowdose":
        return _discover_lowdose_models(folder, dose, ndims)
    folder = Path(folder)
    files = sorted(p for p in folder.glob("*") if p.suffix.lower() in MODEL_SUFFIXES) if folder.is_dir() else []
    if not files:
        where = "does not exist" if not folder.exists() else "holds no .keras or .h5 model files"
        return [], [f"note: {folder}/ {where}; assessing the baselines only (give models with --models FILE ...)"]
    chosen, notes = [], []
    for path in files:
        ndim, model_noise = model_dims(path)
        config = _model_config(path)
        low, high = (config.get("noise_range") or (None, None))[:2]
        blind_fit = low is not None and noise is not None and low <= float(noise) <= high
        if ndim is None:
            notes.append(f"note: skipping {path} (no embedded configuration says its ndim and noise; pass it with --models)")
        elif (config.get("noise_model") or "gaussian") != "gaussian":
            notes.append(f"note: skipping {path} (trained on {config['noise_model']} noise; assess it with --noise-model {config['noise_model']})")
        elif ndim not in ndims:
            notes.append(f"note: skipping {path} (ndim {ndim}, this demo takes {' or '.join(map(str, ndims))}D models)")
        elif not blind_fit and (model_noise is None or noise is None or not math.isclose(float(model_noise), float(noise), rel_tol=1e-6)):
            trained = f"noise {low}-{high} (blind)" if low is not None else f"noise {model_noise}"
            notes.append(f"note: skipping {path} (trained at {trained}, assessing {noise})")
        else:
            chosen.append(path)
    if not chosen:
        notes.append(f"note: no model in {folder}/ matches noise {noise} and ndim {ndims}; assessing the baselines only")
    return chosen, notes


def _discover_lowdose_models(folder, dose, ndims):
    folder = Path(folder)
    files = sorted(p for p in folder.glob("*") if p.suffix.lower() in MODEL_SUFFIXES) if folder.is_dir() else []
    chosen, notes = [], []
    for path in files:
        config = _model_config(path)
        model, level = trained_noise(config)
        if config.get("ndim") not in ndims:
            continue
        if model == "ct_lowdose" and level is not None and math.isclose(float(level), float(dose), rel_tol=1e-6):
            chosen.append(path)
        elif model == "ct_lowdose_range" and level[0] <= float(dose) <= level[1]:
            chosen.append(path)
        elif model == "ct_lowdose_range":
            notes.append(f"note: skipping {path} (trained on ct_lowdose doses {level[0]:g}-{level[1]:g}, assessing dose {dose:g})")
        elif model == "ct_lowdose":
            notes.append(f"note: skipping {path} (trained on ct_lowdose at dose {level}, assessing dose {dose:g})")
    if not chosen:
        notes.append(f"note: no model in {folder}/ was trained on ct_lowdose noise at dose {dose:g} (ndim {ndims}); "
                     "assessing the baselines only (give Gaussian-trained models with --models)")
    return chosen, notes


def load_model_method(path, allowed_ndims=(2,), name=None, tile_shape=None, demo_hint="", self_ensemble=False):
    """Load ``path`` (``.keras`` or reference ``.h5``) as a :class:`ModelMethod`.

    Raises ModelFileError for unreadable files, and for models whose dimensionality is not in
    ``allowed_ndims`` (the message names the file, both dimensionalities and ``demo_hint``).
    """
    from models.storage import load_model

    path = Path(path)
    model, config = load_model(path)
    method = ModelMethod(path, model, config, name=name, tile_shape=tile_shape, self_ensemble=self_ensemble)
    if method.ndim not in allowed_ndims:
        wanted = " or ".join(f"{d}D" for d in allowed_ndims)
        raise ModelFileError(path, f"is a {method.ndim}D model, but this assessment takes {wanted} models{demo_hint}")
    return method


def model_methods(paths, allowed_ndims=(2,), tile_shape=None, demo_hint="", self_ensemble=False):
    """Load every model file; method names are the file stems (``<parent>/<stem>`` when stems repeat).

    ``self_ensemble``: each model predicts the mean over the flips of its axes (``models.predict``).
    """
    paths = [Path(p) for p in paths]
    stems = [p.stem for p in paths]
    names = [f"{p.parent.name}/{p.stem}" if stems.count(p.stem) > 1 else p.stem for p in paths]
    if len(set(names)) != len(names):
        raise ConfigError(f"two --models files would share a name: {', '.join(map(str, paths))}")
    return [load_model_method(p, allowed_ndims, n, tile_shape, demo_hint, self_ensemble) for p, n in zip(paths, names)]


def noise_notes(methods, noise, setting=None):
    """Notes for models trained at another noise level (or, with a ct_lowdose ``setting``, on another
    noise model or dose) than the one assessed."""
    notes = []
    if setting is not None and setting.model == "ct_lowdose":
        for method in methods:
            if isinstance(method, ModelMethod):
                model, level = trained_noise(method.config)
                fits = (model == "ct_lowdose" and level is not None and math.isclose(float(level), setting.dose, rel_tol=1e-6)) or (
                    model == "ct_lowdose_range" and level[0] <= setting.dose <= level[1])
                if not fits:
                    notes.append(f"note: {method.name} was trained on {model} noise at {level}; assessing it on ct_lowdose at dose {setting.dose:g}")
        return notes
    for method in methods:
        trained = method.config.get("noise") if isinstance(method, ModelMethod) else None
        if trained is not None and not math.isclose(float(trained), float(noise), rel_tol=1e-6):
            notes.append(f"note: {method.name} was trained at noise {trained}; assessing it at {noise}")
    return notes


# ---------------------------------------------------------------------------- tuned baselines


def tuning_ndim(method, sample_ndim):
    """Dimensionality a baseline is applied (and tuned) in: BM3D always 2D, BM4D always 3D."""
    return {"bm3d": 2, "bm4d": 3}.get(method, sample_ndim)


def tuned_path(tuned_dir, ndim):
    return Path(tuned_dir) / f"tuned_{ndim}d.json"


def tuned_parameters(method, noise, ndim, tuned_dir=DEFAULT_TUNED_DIR, validation_volumes=None, progress=True):
    """Solver arguments of ``method`` at ``noise`` applied in ``ndim`` D, and where they come from.

    Read from ``tuned_path(tuned_dir, ndim)`` (``utils.application.tuning.load_tuned``); when absent, tuned now on
    ``validation_volumes`` (clean ``(D, H, W)`` arrays; default the embedded validation phantoms) and
    stored there. Returns ``(params, provenance)``.
    """
    from utils.application import tuning

    path = tuned_path(tuned_dir, ndim)
    entry = tuning.load_tuned(path, method, noise)
    if entry is None:
        volumes = validation_volumes if validation_volumes is not None else _embedded_validation_volumes()
        print(f"note: no tuned {method} parameters for noise {noise:g} ({ndim}D) in {path}; tuning on the validation phantoms", file=sys.stderr)
        entry = tune_baseline(method, noise, ndim, volumes, path, progress=progress)
        origin = "tuned now"
    else:
        origin = "tuned"
    params = {k: v for k, v in entry.items() if k not in _TUNING_RECORD_KEYS}
    crop = "x".join(str(s) for s in entry.get("crop_shape", []))
    provenance = f"{origin}: validation PSNR {entry.get('psnr', float('nan')):.2f} dB on {crop} crops, stored in `{path}`"
    return params, provenance


def tune_baseline(method, noise, ndim, clean_volumes, results_path, progress=True):
    """Tune ``method`` for use in ``ndim`` D on seeded central crops of ``clean_volumes``; store and return the entry.

    3D: ``utils.application.tuning.tune`` on central ``TUNING_CROP_3D`` crops (``TUNING_CROP_BM4D`` for BM4D).
    2D: the same searches (``utils.application.tuning.TUNABLE_METHODS``) on ``TUNING_SLICES_PER_VOLUME`` slices of
    each volume, cropped to ``TUNING_CROP_2D``, with the priors of the whole noisy volumes; ``tune`` itself
    builds priors for volumes only, and SPADE on slices needs the slices' neighbour priors.
    """
    from utils.application import tuning

    if ndim == 3:
        crop = TUNING_CROP_BM4D if method == "bm4d" else TUNING_CROP_3D
        return tuning.tune(method, clean_volumes, noise, seed=TUNING_SEED, crop_shape=crop, results_path=results_path, progress=progress)

    spec = tuning.TUNABLE_METHODS[method]
    noise_model = GaussianNoise(float(noise))
    rng = np.random.default_rng(TUNING_SEED)
    crops = []
    for clean in clean_volumes:
        clean = np.asarray(clean, np.float32)
        noisy = noise_model.sample_numpy(clean, rng)
        prior = neighbour_prior(noisy) if spec.needs_prior else None
        for z in evenly_spaced(clean.shape[0], TUNING_SLICES_PER_VOLUME):
            crops.append(
                tuple(
                    None if a is None else tuning.central_crop(a[z], TUNING_CROP_2D)
                    for a in (clean, noisy, prior)
                )
            )
    scores = {}
    bar = tqdm(total=spec.budget, desc=f"tuning {method} (2D) at {noise:g}", disable=not progress, leave=False, file=sys.stderr) if tqdm else None

    def score(params):
        key = repr(sorted(params.items()))
        if key not in scores:
            estimates = [spec.run(noisy, prior, noise_model.sigma, params) for _, noisy, prior in crops]
            scores[key] = float(np.mean([psnr(c, e) for (c, _, _), e in zip(crops, estimates)]))
            if bar is not None:
                bar.update(1)
        return scores[key]

    try:
        best = spec.search(score, noise_model.sigma)
    finally:
        if bar is not None:
            bar.close()
    entry = dict(
        best,
        psnr=score({k: v for k, v in best.items() if k not in _TUNING_RECORD_KEYS}),  # the key scored in the search
        noisy_psnr=float(np.mean([psnr(c, n) for c, n, _ in crops])),
        evaluations=len(scores),
        seed=TUNING_SEED,
        crop_shape=[int(s) for s in crops[0][0].shape],
    )
    tuning.record_tuned(results_path, method, noise_model, entry)
    return entry


def _embedded_validation_volumes():
    from utils.data.phantom import ensure_default_dataset

    return [v.array for path in ensure_default_dataset()["val"] for v in read_ct(path)]


def baseline_methods(names, noise, sample_ndim, tuned_dir=DEFAULT_TUNED_DIR, validation_volumes=None, progress=True, estimate_sigma=False):
    """:class:`BaselineMethod` objects for ``names`` at ``noise``, each with tuned parameters.

    ``estimate_sigma`` (non-Gaussian test noise): no tuned parameters; each method estimates the noise
    level of every sample it denoises (see :class:`BaselineMethod`), and ``noise`` is not used.
    """
    methods = []
    for name in names:
        if name == "noisy":
            methods.append(BaselineMethod("noisy"))
            continue
        if name == "bm4d" and sample_ndim == 2:
            raise ConfigError("bm4d denoises volumes; on 2D slices use bm3d (or run the 3D / variational demo)")
        if name in ("bm3d", "bm4d"):
            _classical(name)  # before tuning: a missing binary must not cost a tuning run first
        if estimate_sigma:
            methods.append(BaselineMethod(name, estimate_sigma=True))
            continue
        params, provenance = tuned_parameters(name, noise, tuning_ndim(name, sample_ndim), tuned_dir, validation_volumes, progress)
        methods.append(BaselineMethod(name, params, provenance))
    return methods


def check_compatible(methods, samples):
    """Every method can denoise every sample, else the first mismatch raises (before any computation)."""
    if not samples:
        raise DataError("test data", "no samples to assess")
    if not methods:
        raise ConfigError("nothing to assess: no models and no baseline methods (--methods none without --models)")
    for method in methods:
        for sample in samples:
            method.check(sample)


# ====================================================================================== evaluation


@dataclasses.dataclass
class Evaluation:
    """``records``: one dict per (method, sample) with ``METRIC_COLUMNS``; ``outputs[(method, sample)]``
    holds the estimates of the samples asked for in ``keep`` (for the figures)."""

    records: list
    outputs: dict


def evaluate(methods, samples, keep=(), progress=True):
    """Run every method on every sample, timing each call, and score it (see the module notes).

    Methods run one after another over all samples (a tqdm bar per method), after untimed warm-up
    calls on small crops of the first sample. The neighbour prior is input data, like the noisy
    image: it is computed once per volume before the clock starts.
    """
    check_compatible(methods, samples)
    keep = set(keep)
    records, outputs = [], {}
    for method in methods:
        method.warm_up(samples[0])
        bar = tqdm(samples, desc=f"{method.name:>12}", unit="sample", file=sys.stderr, disable=not progress) if tqdm else samples
        for sample in bar:
            if method.prior_settings is not None:
                sample.prior(**method.prior_settings)  # cached on the volume: outside the timing
            started = time.perf_counter()
            estimate = np.asarray(method.denoise(sample), dtype=np.float32)
            seconds = time.perf_counter() - started
            if estimate.shape != sample.clean.shape:
                raise ConfigError(f"{method.name} returned shape {estimate.shape} for sample {sample.name} of shape {sample.clean.shape}")
            record = {"method": method.name, "sample": sample.name, "noise": sample.noise, **all_metrics(sample.clean, estimate), "seconds": seconds}
            if sample.noise_model != "gaussian":
                record.update(noise_model=sample.noise_model, **sample.noise_params)
            records.append(record)
            if sample.name in keep:
                outputs[(method.name, sample.name)] = estimate
    return Evaluation(records, outputs)


def convergence_histories(sample, methods):
    """Relative error (%) after every solver iteration of the ``tv`` and ``spade`` methods on ``sample``.

    Re-runs each with the same parameters (the same estimated sigma with ``estimate_sigma``) and ``reference=sample.clean`` (the solvers' history
    option). Returns ``{method name: 1-D array}``.
    """
    from utils.solvers import variational

    histories = {}
    for method in methods:
        arguments = method.solver_arguments(sample) if isinstance(method, BaselineMethod) else {}
        if method.name == "tv":
            traced = variational.tv_denoise(sample.noisy, **arguments, reference=sample.clean)
        elif method.name == "spade":
            traced = variational.spade_denoise(sample.noisy, sample.prior(**method.prior_settings), **arguments, reference=sample.clean)
        else:
            continue
        histories[method.name] = 100.0 * np.asarray(traced.rel_err_history, dtype=np.float64)
    return histories


def _central_crop_index(shape, crop):
    """Index of the central ``crop`` (one size per axis, clipped to ``shape``)."""
    index = []
    for size, want in zip(shape, crop):
        want = min(size, want)
        start = (size - want) // 2
        index.append(slice(start, start + want))
    return tuple(index)


# ========================================================================================= results


NOISE_MODEL_COLUMNS = ("noise_model", "dose")  # appended to METRIC_COLUMNS when the test noise is not Gaussian


def write_metrics_csv(path, records):
    """``metrics.csv`` (atomic): exactly ``METRIC_COLUMNS`` for Gaussian test noise; with ``ct_lowdose`` records
    also ``noise_model`` and ``dose`` (``noise`` is then the measured std of the added noise, see the module notes)."""
    columns = METRIC_COLUMNS + (NOISE_MODEL_COLUMNS if any("noise_model" in r for r in records) else ())
    with atomic_open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for record in records:
            row = {key: record.get(key, "") for key in columns}
            for key in ("psnr", "ssim", "rel_err_percent", "seconds"):
                row[key] = f"{float(row[key]):.8g}"
            row["noise"] = f"{float(row['noise']):g}"
            if "noise_model" in columns:
                row["noise_model"] = record.get("noise_model", "gaussian")
                row["dose"] = "" if record.get("dose") is None else f"{float(record['dose']):g}"
            writer.writerow(row)
    return Path(path)


def read_metrics_csv(path):
    """The rows of a ``metrics.csv`` with numbers as floats (``dose`` too, when present and not empty)."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        for key in ("noise", "psnr", "ssim", "rel_err_percent", "seconds"):
            row[key] = float(row[key])
        if row.get("dose"):
            row["dose"] = float(row["dose"])
    return rows


def summarise(records):
    """``{noise: {method: {metric: (mean, std)}}}`` in the order methods first appear (std: population)."""
    table = {}
    for record in records:
        table.setdefault(float(record["noise"]), {}).setdefault(record["method"], []).append(record)
    summary = {}
    for noise, by_method in table.items():
        summary[noise] = {}
        for method, rows in by_method.items():
            stats = {key: (float(np.mean([r[key] for r in rows])), float(np.std([r[key] for r in rows]))) for key in METRIC_COLUMNS[3:]}
            stats["n"] = len(rows)
            summary[noise][method] = stats
    return summary


_HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "rel_err_percent": False}
_COLUMN_TITLES = {"psnr": "PSNR (dB)", "ssim": "SSIM", "rel_err_percent": "rel. error (%)", "seconds": "time (s / sample)"}
_DECIMALS = {"psnr": 2, "ssim": 4, "rel_err_percent": 2, "seconds": 2}


def summary_table(stats_by_method):
    """Markdown table, mean ± std per method; the best mean of each quality metric in bold."""
    methods = list(stats_by_method)
    best = {}
    for key, higher in _HIGHER_IS_BETTER.items():
        means = [stats_by_method[m][key][0] for m in methods]
        best[key] = max(means) if higher else min(means)
    lines = ["| method | " + " | ".join(_COLUMN_TITLES[k] for k in METRIC_COLUMNS[3:]) + " |", "|---|" + "---:|" * 4]
    for method in methods:
        cells = []
        for key in METRIC_COLUMNS[3:]:
            mean, std = stats_by_method[method][key]
            cell = f"{mean:.{_DECIMALS[key]}f} ± {std:.{_DECIMALS[key]}f}"
            if key in best and len(methods) > 1 and round(mean, _DECIMALS[key]) == round(best[key], _DECIMALS[key]):
                cell = f"**{cell}**"
            cells.append(cell)
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def describe_data(volumes, data_paths, samples):
    """One paragraph of settings text about the test data."""
    where = ", ".join(f"`{p}`" for p in data_paths) if data_paths else "the embedded phantom test split (`data/phantom/test`)"
    shapes = sorted({"x".join(map(str, v.array.shape)) for v in volumes})
    return f"{where}: {len(volumes)} volume(s) of {', '.join(shapes)} voxels; {len(samples)} samples ({samples[0].describe()}, ...)"


def describe_hu_window(volumes):
    windows = sorted({tuple(v.hu_window) if v.hu_window is not None else None for v in volumes}, key=str)
    parts = [f"[{w[0]:g}, {w[1]:g}] HU -> [0, 1]" if w else "none (intensities scaled by bit depth or already in [0, 1])" for w in windows]
    return "; ".join(parts)


def describe_settings(data_paths, volumes, samples, noise_levels, seed, sampling, noise_text=None):
    """The settings block of ``summary.md``: data, sampling, noise, seed, HU window and prior.

    ``noise_text`` replaces the Gaussian noise line (``describe_lowdose_noise`` for ct_lowdose).
    """
    levels = ", ".join(f"{n:g}" for n in noise_levels)
    return {
        "data": describe_data(volumes, data_paths, samples),
        "samples": sampling,
        "noise": noise_text or f"additive Gaussian, sigma = {levels} on the [0, 1] scale (not clipped), added to each whole volume "
        "before slices or crops are cut",
        "seed": f"{seed}: volume i draws its noise from numpy.random.default_rng([{seed}, i])",
        "HU window": describe_hu_window(volumes),
        "prior": "neighbour prior of the whole noisy volume (utils.data.prior: centred window of ±4 slices, weights exp(-0.04|k|)); "
        "ResPrU-Net models use the prior settings of their own configuration",
    }


def summary_markdown(title, records, settings, methods, figures=(), notes=()):
    """The ``summary.md`` text: one results table per noise level, then the settings and methods.

    ``methods``: a list of :class:`Method`, or ``{noise: [Method, ...]}`` when each level has its own
    (tuned) parameters.
    """
    out = io.StringIO()
    out.write(f"# {title}\n\n")
    for noise, stats in summarise(records).items():
        n_samples = max(s["n"] for s in stats.values())
        out.write(f"## {_noise_heading(noise, records)}, {n_samples} samples\n\n")
        out.write(summary_table(stats) + "\n\n")
    out.write("Mean ± standard deviation over samples; best mean in bold. Metrics on the [0, 1] scale, estimates not clipped: "
              "PSNR with data range 1; SSIM with data range 1, Gaussian window 11, sigma 1.5 (mean over slices for volumes); "
              "rel. error = 100·‖x̂ − x‖/‖x‖ over the same slice or volume; time = wall clock per sample after untimed warm-up calls, "
              "neighbour prior excluded.\n\n")
    out.write("## Settings\n\n")
    for key, value in settings.items():
        out.write(f"- **{key}**: {value}\n")
    out.write("\n## Methods\n\n")
    groups = methods.items() if isinstance(methods, dict) else [(None, methods)]
    for noise, group in groups:
        if noise is not None:
            out.write(f"### {_noise_heading(noise, records)}\n\n")
        for method in group:
            out.write(f"- **{method.name}**: {method.describe()}\n")
        if noise is not None:
            out.write("\n")
    if figures:
        out.write("\n## Figures\n\n")
        for figure in figures:
            out.write(f"- `{Path(figure).name}`\n")
    if notes:
        out.write("\n## Notes\n\n")
        for note in notes:
            out.write(f"- {note.removeprefix('note: ')}\n")
    return out.getvalue()


def _noise_heading(noise, records):
    """``Noise sigma = 0.05 (5 % of the window)``, or for ct_lowdose records at this ``noise`` value
    ``Noise model ct_lowdose, dose = 0.25 (added noise std 0.0123 in the body, measured)``."""
    lowdose = [r for r in records if r.get("noise_model") == "ct_lowdose" and math.isclose(float(r["noise"]), float(noise), rel_tol=1e-9)]
    if lowdose:
        return (f"Noise model ct_lowdose, dose = {float(lowdose[0]['dose']):g} "
                f"(added noise std {float(noise):.4g} on the [0, 1] scale in the body, measured)")
    return f"Noise sigma = {noise:g} ({100 * noise:g} % of the window)"


def describe_lowdose_noise(doses, volumes=()):
    """The ``noise`` line of the settings for ct_lowdose test noise at ``doses``."""
    from utils.data.lowdose import DEFAULT_VIEWS

    spacings = sorted({f"{lowdose_spacing(v):.3g}" for v in volumes})
    where = f" at each volume's own pixel spacing ({', '.join(spacings)} mm)" if spacings else " at each volume's own pixel spacing"
    return (
        f"noise model ct_lowdose, dose = {', '.join(f'{d:g}' for d in doses)} of the scan's dose: the reference form "
        f"(utils.data.noise.CTLowDoseNoise.sample_numpy: radon over {DEFAULT_VIEWS} views, Poisson + electronic noise at the added-noise "
        f"count, ramp FBP, slice by slice){where}, added to each whole clean volume in HU and windowed again (not clipped); "
        "the noise column is the measured std of noisy - clean over the body voxels of all volumes"
    )


def write_summary(path, text):
    write_text(path, text)
    return Path(path)


@contextlib.contextmanager
def user_errors():
    """Turn bad data, settings or model files into ``error: <message>`` and exit status 1 (scripts only)."""
    try:
        yield
    except (ConfigError, DataError, ModelFileError) as error:
        raise SystemExit(f"error: {error}") from None
