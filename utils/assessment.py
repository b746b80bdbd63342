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
(Gaussian, not clipped, ``utils.noise``); slices and depth crops are cut afterwards, so a slice's
prior is the neighbour prior (``utils.prior.neighbour_prior``) of the whole noisy volume and its
first and last slices have their real neighbours. The same standard-normal field is scaled by each
noise level, so results at different levels are paired. Sample 0 is noisy like every other one
(the reference repository's first test image was clean).

Metrics (``utils.metrics``, on the [0, 1] intensity scale, estimates not clipped)
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
TV, SPADE, BM3D and BM4D run with parameters tuned by ``utils.tuning`` (maximum mean PSNR on seeded
crops of the embedded validation phantoms), read from ``<tuned_dir>/tuned_2d.json`` (methods applied
to slices) or ``tuned_3d.json`` (applied to volumes). A missing entry is tuned on the spot, cheaply,
and stored, so an untuned default never ends up in a comparison. BM3D is a 2D method (slice by slice)
and BM4D a 3D one, whatever the samples.

Every file is written atomically (``utils.atomic``). Problems with data, settings or model files raise
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

from utils import defaults
from utils.atomic import atomic_open, write_text
from utils.errors import ConfigError, DataError, ModelFileError
from utils.metrics import all_metrics, psnr
from utils.noise import GaussianNoise
from utils.prior import neighbour_prior
from utils.readers import DEFAULT_HU_WINDOW, read_ct

try:  # progress bars are a convenience; their absence must never stop an assessment
    from tqdm.auto import tqdm
except ImportError:  # pragma: no cover
    tqdm = None

DEFAULT_SEED = defaults.ASSESSMENT_SEED
METRIC_COLUMNS = ("method", "sample", "noise", "psnr", "ssim", "rel_err_percent", "seconds")
BASELINES = ("noisy", "tv", "spade", "bm3d", "bm4d")
MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")
DEFAULT_MODELS_DIR = Path(defaults.MODELS_DIR)
DEFAULT_TUNED_DIR = Path(defaults.TUNED_DIR)

# The neighbour prior used by SPADE and by ResPrU-Net models whose config does not say otherwise
# (the defaults of utils.prior and of the training configuration).
DEFAULT_PRIOR = dict(defaults.DEFAULT_PRIOR)

# Tuning on the embedded validation phantoms: one seeded noise realisation, small central crops,
# so that a missing entry costs seconds (TV, SPADE) to about a minute (BM3D, BM4D) on 2 cores.
TUNING_SEED = 0
TUNING_CROP_3D = (16, 96, 96)
TUNING_CROP_BM4D = (8, 64, 64)  # BM4D costs ~10 us per voxel; this keeps its 5 trials near a minute
TUNING_CROP_2D = (96, 96)
TUNING_SLICES_PER_VOLUME = 2
# Bookkeeping that utils.tuning stores beside the solver arguments.
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

    The embedded split is generated under ``data/phantom/`` on first use (``utils.phantom``).
    """
    if not paths:
        from utils.phantom import ensure_default_dataset

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
    """``noisy`` (identity), ``tv``, ``spade``, ``bm3d`` (2D, slice by slice) or ``bm4d`` (3D)."""

    kind = "baseline"

    def __init__(self, name, params=None, provenance=""):
        if name not in BASELINES:
            raise ConfigError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")
        self.name = name
        self.params = dict(params or {})
        self.provenance = provenance
        self.prior_settings = dict(DEFAULT_PRIOR) if name == "spade" else None

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
        return self._run(sample.noisy, sample.prior(**self.prior_settings) if self.prior_settings else None)

    def _run(self, noisy, prior, **overrides):
        from utils import variational

        if self.name == "noisy":
            return np.array(noisy, dtype=np.float32)
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
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(self.params.items()))
        return f"{params} ({self.provenance})" if self.provenance else params


def _classical(package=None):
    """``utils.classical``, after checking that the ``package`` binary (bm3d or bm4d) loads."""
    from utils import classical

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


# ------------------------------------------------------------------------------- learned models


def model_dims(path):
    """``(ndim, noise)`` recorded in a model file's embedded config, without building it (None when absent)."""
    path = Path(path)
    if path.suffix.lower() == ".keras":
        from models.storage import read_config

        config = read_config(path)
    else:
        from models.reference_h5 import describe_reference_h5

        config = describe_reference_h5(path)
    return config.get("ndim"), config.get("noise")


def discover_models(folder=DEFAULT_MODELS_DIR, noise=None, ndims=(2,)):
    """Model files in ``folder`` whose embedded config has this ``noise`` and an ``ndim`` in ``ndims``.

    Returns ``(paths, notes)``: ``notes`` says what was skipped and why (for the script to print).
    A missing or empty folder gives no paths and a note; an unreadable model file is an error.
    """
    folder = Path(folder)
    files = sorted(p for p in folder.glob("*") if p.suffix.lower() in MODEL_SUFFIXES) if folder.is_dir() else []
    if not files:
        where = "does not exist" if not folder.exists() else "holds no .keras or .h5 model files"
        return [], [f"note: {folder}/ {where}; assessing the baselines only (give models with --models FILE ...)"]
    chosen, notes = [], []
    for path in files:
        ndim, model_noise = model_dims(path)
        if ndim is None:
            notes.append(f"note: skipping {path} (no embedded configuration says its ndim and noise; pass it with --models)")
        elif ndim not in ndims:
            notes.append(f"note: skipping {path} (ndim {ndim}, this demo takes {' or '.join(map(str, ndims))}D models)")
        elif model_noise is None or noise is None or not math.isclose(float(model_noise), float(noise), rel_tol=1e-6):
            notes.append(f"note: skipping {path} (trained at noise {model_noise}, assessing {noise})")
        else:
            chosen.append(path)
    if not chosen:
        notes.append(f"note: no model in {folder}/ matches noise {noise} and ndim {ndims}; assessing the baselines only")
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


def noise_notes(methods, noise):
    """Notes for models trained at another noise level than the one assessed."""
    notes = []
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

    Read from ``tuned_path(tuned_dir, ndim)`` (``utils.tuning.load_tuned``); when absent, tuned now on
    ``validation_volumes`` (clean ``(D, H, W)`` arrays; default the embedded validation phantoms) and
    stored there. Returns ``(params, provenance)``.
    """
    from utils import tuning

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

    3D: ``utils.tuning.tune`` on central ``TUNING_CROP_3D`` crops (``TUNING_CROP_BM4D`` for BM4D).
    2D: the same searches (``utils.tuning.TUNABLE_METHODS``) on ``TUNING_SLICES_PER_VOLUME`` slices of
    each volume, cropped to ``TUNING_CROP_2D``, with the priors of the whole noisy volumes; ``tune`` itself
    builds priors for volumes only, and SPADE on slices needs the slices' neighbour priors.
    """
    from utils import tuning

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
    from utils.phantom import ensure_default_dataset

    return [v.array for path in ensure_default_dataset()["val"] for v in read_ct(path)]


def baseline_methods(names, noise, sample_ndim, tuned_dir=DEFAULT_TUNED_DIR, validation_volumes=None, progress=True):
    """:class:`BaselineMethod` objects for ``names`` at ``noise``, each with tuned parameters."""
    methods = []
    for name in names:
        if name == "noisy":
            methods.append(BaselineMethod("noisy"))
            continue
        if name == "bm4d" and sample_ndim == 2:
            raise ConfigError("bm4d denoises volumes; on 2D slices use bm3d (or run the 3D / variational demo)")
        if name in ("bm3d", "bm4d"):
            _classical(name)  # before tuning: a missing binary must not cost a tuning run first
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
            records.append({"method": method.name, "sample": sample.name, "noise": sample.noise, **all_metrics(sample.clean, estimate), "seconds": seconds})
            if sample.name in keep:
                outputs[(method.name, sample.name)] = estimate
    return Evaluation(records, outputs)


def convergence_histories(sample, methods):
    """Relative error (%) after every solver iteration of the ``tv`` and ``spade`` methods on ``sample``.

    Re-runs each with the same parameters and ``reference=sample.clean`` (the solvers' history
    option). Returns ``{method name: 1-D array}``.
    """
    from utils import variational

    histories = {}
    for method in methods:
        if method.name == "tv":
            traced = variational.tv_denoise(sample.noisy, **method.params, reference=sample.clean)
        elif method.name == "spade":
            traced = variational.spade_denoise(sample.noisy, sample.prior(**method.prior_settings), **method.params, reference=sample.clean)
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


def write_metrics_csv(path, records):
    """``metrics.csv`` with exactly ``METRIC_COLUMNS`` (atomic)."""
    with atomic_open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=METRIC_COLUMNS)
        writer.writeheader()
        for record in records:
            row = {key: record[key] for key in METRIC_COLUMNS}
            for key in ("psnr", "ssim", "rel_err_percent", "seconds"):
                row[key] = f"{float(row[key]):.8g}"
            row["noise"] = f"{float(row['noise']):g}"
            writer.writerow(row)
    return Path(path)


def read_metrics_csv(path):
    """The rows of a ``metrics.csv`` with numbers as floats."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        for key in ("noise", "psnr", "ssim", "rel_err_percent", "seconds"):
            row[key] = float(row[key])
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


def describe_settings(data_paths, volumes, samples, noise_levels, seed, sampling):
    """The settings block of ``summary.md``: data, sampling, noise, seed, HU window and prior."""
    levels = ", ".join(f"{n:g}" for n in noise_levels)
    return {
        "data": describe_data(volumes, data_paths, samples),
        "samples": sampling,
        "noise": f"additive Gaussian, sigma = {levels} on the [0, 1] scale (not clipped), added to each whole volume "
        "before slices or crops are cut",
        "seed": f"{seed}: volume i draws its noise from numpy.random.default_rng([{seed}, i])",
        "HU window": describe_hu_window(volumes),
        "prior": "neighbour prior of the whole noisy volume (utils.prior: centred window of ±4 slices, weights exp(-0.04|k|)); "
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
        out.write(f"## Noise sigma = {noise:g} ({100 * noise:g} % of the window), {n_samples} samples\n\n")
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
            out.write(f"### Noise sigma = {noise:g}\n\n")
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
