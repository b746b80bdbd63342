"""Validated training configuration, saved as ``config.json`` beside the trained model.

Every result can be traced back to the settings that produced it: the assessment demos
rebuild the model, the noise level, the HU window and the prior from this file alone.
Validation happens before any data is read or any model is built, so a bad setting fails
in a second with a message that names it, not an hour into training.
"""

import dataclasses
import json
import math
import platform
import subprocess
import sys
from pathlib import Path

from utils.base.defaults import (
    DEFAULT_FILTERS,
    DEFAULT_HU_WINDOW,
    MODEL_NAMES,
    MULTISCALE_MODELS,
    PRIOR_DECAY,
    PRIOR_HALF_WINDOW,
    PRIOR_VARIANT,
    PRIOR_VARIANTS,
)
from utils.base.errors import ConfigError, ModelFileError

# Layout version of the configuration saved with every model (TrainingConfig.config_version). Raise it
# when a setting changes meaning or is removed, and teach TrainingConfig.from_embedded the older layouts.
CONFIG_VERSION = 1

# "auto" is resolved on the machine that trains (models.precision.resolve_precision).
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
STRATEGIES = ("none", "mirrored", "multiworker")
LR_SCHEDULES = ("constant", "cosine")


def _setting(default, help, valid=""):
    """A configuration field with its command-line help and, as text, its valid values (checked in ``validate``)."""
    return dataclasses.field(default=default, metadata={"help": help, "valid": valid})


@dataclasses.dataclass
class TrainingConfig:
    """All settings of a training run (the top-of-script constants, overridable from the CLI).

    Each field carries its help text and valid values (``dataclasses.fields(TrainingConfig)[i].metadata``);
    ``utils.learning.cli`` turns them into the ``--dashed-name`` options.
    """

    config_version: int = _setting(
        CONFIG_VERSION, "layout version of this configuration, saved with every model (0: written before versions)",
        f"0 to {CONFIG_VERSION}",
    )
    ndim: int = _setting(2, "2 for slice models, 3 for volume models", "2 or 3")
    model: str = _setting("unet", "architecture", ", ".join(MODEL_NAMES))
    filters: int = _setting(
        0,
        "filters of the first level (0: the model family's default, "
        + ", ".join(f"{name} {n}" for name, n in DEFAULT_FILTERS.items())
        + ")",
        ">= 1, or 0",
    )
    depth: int = _setting(2, "number of poolings of the U-Nets", ">= 0; patch sizes multiples of 2**depth")
    kernel_size: int = _setting(3, "convolution kernel size", "odd, >= 1")
    residual: bool = _setting(False, "U-Net or DRUNet learns the correction to its input")
    prior: bool = _setting(False, "feed the neighbour-slice prior (derived: set by --model resprunet)")
    prior_half_window: int = _setting(PRIOR_HALF_WINDOW, "prior window: slices on each side of the centre", ">= 0")
    prior_decay: float = _setting(PRIOR_DECAY, "prior weights exp(-decay * distance)", ">= 0")
    prior_variant: str = _setting(
        PRIOR_VARIANT, "centred, or the reference repository's off-centre window", ", ".join(PRIOR_VARIANTS)
    )
    noise: float = _setting(0.05, "noise standard deviation on the [0, 1] scale (0.05 = 5 %)", "[0, 1]")
    noise_model: str = _setting(
        "gaussian",
        "gaussian, poisson_gaussian, or ct_lowdose (simulated low-dose CT; its level is set by --dose, not --noise)",
        "a name in utils.data.noise.NOISE_MODELS",
    )
    dose: float = _setting(
        1.0, "with --noise-model ct_lowdose: fraction of the scan's dose kept (0.25 = quarter dose)", "(0, 1]"
    )
    dose_range: tuple = _setting(
        (),
        "blind low-dose training (with --noise-model ct_lowdose): each training sample's dose is drawn "
        "log-uniformly in LO HI (validation samples keep fixed doses from the seed; --dose is the nominal level)",
        "empty, or LO HI with 0 < LO < HI <= 1 and LO <= --dose <= HI",
    )
    noise_range: tuple = _setting(
        (),
        "blind training: each training sample's Gaussian sigma is drawn uniformly in LO HI "
        "(validation samples keep fixed sigmas from the seed; the model gets no noise level; "
        "--noise is then the nominal level for the run name, image panels and assessment)",
        "empty, or LO HI with 0 <= LO < HI <= 1 and LO <= --noise <= HI; gaussian noise only",
    )
    patch: tuple = _setting((128, 128), "patch size: H W in 2D, D H W in 3D", "ndim positive sizes")
    central_fraction: float = _setting(1.0, "crops are drawn inside this central fraction of each slice", "(0, 1]")
    window_augmentation: float = _setting(
        0.0, "probability of re-windowing a sample to a narrow 8-bit window", "[0, 1]"
    )
    zoom_range: tuple = _setting(
        (),
        "random in-plane zoom LO HI per training sample, log-uniform scale factors "
        "(0.5 = pixels twice as large, 2 = half as large; resampled before the noise is added; none when empty)",
        "empty, or LO HI with 0 < LO <= HI",
    )
    batch_size: int = _setting(16, "samples per batch", ">= 1")
    samples_per_volume: int = _setting(
        0, "samples per volume per epoch (0: one per slice in 2D, one per patch depth in 3D)", ">= 0"
    )
    validation_samples_per_volume: int = _setting(
        0, "fixed validation samples per volume (0: one per slice in 2D, one per patch depth in 3D)", ">= 0"
    )
    balance_data: bool = _setting(
        False, "every --data path gets the same share of each epoch's samples (else each its number of slices or patches)"
    )
    epochs: int = _setting(30, "training epochs", ">= 1")
    learning_rate: float = _setting(1e-3, "Adam learning rate (the start value with --lr-schedule cosine)", "> 0")
    lr_schedule: str = _setting(
        "constant", "constant, or cosine decay to 1 % over the planned epochs", ", ".join(LR_SCHEDULES)
    )
    data: tuple = _setting(
        (),
        "training data: any number of paths (PNG/TIFF folders, npz, NIfTI, DICOM); default: the embedded phantoms",
        "existing paths",
    )
    validation_data: tuple = _setting(
        (),
        "validation data paths; default: the embedded validation phantoms, or volumes held out of --data",
        "existing paths",
    )
    hu_window: tuple = _setting(DEFAULT_HU_WINDOW, "HU window mapped to [0, 1]", "LO HI with LO < HI")
    precision: str = _setting("float32", "mixed precision policy", ", ".join(PRECISIONS))
    distribute: str = _setting("none", "distribution strategy", ", ".join(STRATEGIES))
    out: str = _setting("", "run folder (default results/<model>_<noise>_<time>)")
    seed: int = _setting(0, "seed of shuffles, crops and noise")
    patience: int = _setting(0, "early-stopping patience in epochs (0: off)", ">= 0")
    reduce_lr_patience: int = _setting(
        0, "halve the learning rate after this many epochs without progress (0: off)", ">= 0; not with --lr-schedule cosine"
    )
    time_limit_minutes: float = _setting(0.0, "stop before an epoch that would end after this many minutes (0: off)")
    init_model: str = _setting("", "continue training from this model (.keras, or a reference repository .h5)", "an existing file")
    tensorboard_update_freq: str = _setting("epoch", "TensorBoard scalars every 'epoch', 'batch', or N batches")
    histogram_freq: int = _setting(1, "weight histograms every N epochs (0: off)")
    image_freq: int = _setting(1, "validation image panel every N epochs (0: off)")
    profile_batch: tuple = _setting((), "profile batches START STOP with the TensorFlow profiler", "empty, or START STOP")

    def __post_init__(self):
        self.patch = tuple(int(p) for p in self.patch)
        self.data = tuple(str(d) for d in self.data)
        self.validation_data = tuple(str(d) for d in self.validation_data)
        self.hu_window = tuple(float(h) for h in self.hu_window)
        self.zoom_range = tuple(float(z) for z in self.zoom_range)
        self.noise_range = tuple(float(n) for n in self.noise_range)
        self.dose_range = tuple(float(d) for d in self.dose_range)
        self.profile_batch = tuple(int(b) for b in self.profile_batch)
        if self.model == "resprunet":
            self.prior = True
        if self.filters == 0:  # the family default (an unknown model keeps 0 and fails validation on its name)
            self.filters = DEFAULT_FILTERS.get(self.model, 0)

    def validate(self):
        """Raise ConfigError naming the first bad setting; return self for chaining."""
        checks = [
            (self.ndim in (2, 3), f"ndim must be 2 or 3, got {self.ndim}"),
            (self.model in MODEL_NAMES, f"unknown model {self.model!r}; choose one of {', '.join(MODEL_NAMES)}"),
            (self.filters >= 1, f"--filters must be >= 1 (0: the family default), got {self.filters}"),
            (self.depth >= 0, f"--depth must be >= 0, got {self.depth}"),
            (self.kernel_size >= 1 and self.kernel_size % 2 == 1, f"--kernel-size must be odd and >= 1, got {self.kernel_size}"),
            (math.isfinite(self.noise) and self.noise >= 0, f"--noise must be a finite number >= 0 (fraction of the [0, 1] range), got {self.noise}"),
            (self.noise <= 1, f"--noise is a fraction of the [0, 1] range (0.05 = 5 %), got {self.noise}"),
            (math.isfinite(self.dose) and 0 < self.dose <= 1, f"--dose is the fraction of the scan's dose kept, in (0, 1], got {self.dose}"),
            (self.dose == 1 or self.noise_model == "ct_lowdose", f"--dose applies to --noise-model ct_lowdose only, not {self.noise_model!r}"),
            (
                not self.dose_range
                or (len(self.dose_range) == 2 and all(math.isfinite(d) for d in self.dose_range)
                    and 0 < self.dose_range[0] < self.dose_range[1] <= 1),
                f"--dose-range takes LO HI with 0 < LO < HI <= 1 (fractions of the scan's dose, e.g. 0.05 0.5), got {self.dose_range}",
            ),
            (
                not self.dose_range or self.noise_model == "ct_lowdose",
                f"--dose-range draws low-dose levels; it needs --noise-model ct_lowdose, not {self.noise_model!r}",
            ),
            (
                not self.dose_range or self.dose_range[0] <= self.dose <= self.dose_range[1],
                f"--dose {self.dose} must lie inside --dose-range {self.dose_range}: with a range it is the nominal level",
            ),
            (
                not self.noise_range
                or (len(self.noise_range) == 2 and all(math.isfinite(n) for n in self.noise_range)
                    and 0 <= self.noise_range[0] < self.noise_range[1] <= 1),
                f"--noise-range takes LO HI with 0 <= LO < HI <= 1 on the [0, 1] scale (e.g. 0 0.1), got {self.noise_range}",
            ),
            (
                not self.noise_range or self.noise_model == "gaussian",
                f"--noise-range draws Gaussian levels; it cannot be combined with --noise-model {self.noise_model}",
            ),
            (
                not self.noise_range or self.noise_range[0] <= self.noise <= self.noise_range[1],
                f"--noise {self.noise} must lie inside --noise-range {self.noise_range}: with a range it is the nominal "
                "level of the blind model (run name, image panels, assessment)",
            ),
            (len(self.patch) == self.ndim, f"--patch needs {self.ndim} sizes for a {self.ndim}D model, got {self.patch}"),
            (all(p >= 1 for p in self.patch), f"--patch sizes must be positive, got {self.patch}"),
            (0 < self.central_fraction <= 1, f"--central-fraction must be in (0, 1], got {self.central_fraction}"),
            (0 <= self.window_augmentation <= 1, f"--window-augmentation is a probability in [0, 1], got {self.window_augmentation}"),
            (
                not self.zoom_range
                or (len(self.zoom_range) == 2 and all(math.isfinite(z) and z > 0 for z in self.zoom_range)
                    and self.zoom_range[0] <= self.zoom_range[1]),
                f"--zoom-range takes LO HI, two positive scale factors with LO <= HI (e.g. 0.5 2), got {self.zoom_range}",
            ),
            (self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}"),
            (self.samples_per_volume >= 0, f"--samples-per-volume must be >= 0, got {self.samples_per_volume}"),
            (
                self.validation_samples_per_volume >= 0,
                f"--validation-samples-per-volume must be >= 0, got {self.validation_samples_per_volume}",
            ),
            (self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}"),
            (self.learning_rate > 0, f"--learning-rate must be > 0, got {self.learning_rate}"),
            (self.lr_schedule in LR_SCHEDULES, f"--lr-schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}"),
            (
                not (self.lr_schedule == "cosine" and self.reduce_lr_patience),
                "--reduce-lr-patience and --lr-schedule cosine both drive the learning rate; choose one",
            ),
            (len(self.hu_window) == 2 and self.hu_window[0] < self.hu_window[1], f"--hu-window must be LO HI with LO < HI, got {self.hu_window}"),
            (self.precision in PRECISIONS, f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"),
            (self.distribute in STRATEGIES, f"--distribute must be one of {', '.join(STRATEGIES)}, got {self.distribute!r}"),
            (self.prior_variant in PRIOR_VARIANTS, f"--prior-variant must be one of {', '.join(PRIOR_VARIANTS)}, got {self.prior_variant!r}"),
            (self.prior_half_window >= 0, f"--prior-half-window must be >= 0, got {self.prior_half_window}"),
            (not self.prior or self.model == "resprunet", f"--prior feeds ResPrU-Net only; model {self.model!r} takes no prior"),
            (self.patience >= 0 and self.reduce_lr_patience >= 0, "patience values must be >= 0"),
            (len(self.profile_batch) in (0, 2), f"--profile-batch takes START STOP, got {self.profile_batch}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        multiple = 2**self.depth if self.model in MULTISCALE_MODELS else 1
        if any(p % multiple for p in self.patch):
            raise ConfigError(f"--patch sizes {self.patch} must be multiples of {multiple} for a {self.model} of depth {self.depth}")
        return self

    @property
    def model_options(self):
        """Keyword arguments for :func:`models.build_model`."""
        options = {"ndim": self.ndim, "filters": self.filters, "kernel_size": self.kernel_size}
        if self.model in MULTISCALE_MODELS:
            options["depth"] = self.depth
        if self.model in ("unet", "drunet"):
            options["residual"] = self.residual
        return options

    def to_dict(self):
        """The settings as saved beside the weights and inside every model file, ``config_version`` included."""
        return dataclasses.asdict(self)

    @classmethod
    def from_embedded(cls, values, source):
        """The validated configuration embedded in the model file ``source`` (``models.read_config``).

        Files without ``config_version`` (version 0, before it was recorded) are read as they are. The
        settings a file lacks take their defaults (those of later versions mean "not used": no dose, no
        noise range), the patch with the model's own number of axes. A newer version than
        :data:`CONFIG_VERSION`, unknown keys or invalid settings raise ModelFileError naming the file.
        """
        version = values.get("config_version", 0)
        if not isinstance(version, int) or not 0 <= version <= CONFIG_VERSION:
            raise ModelFileError(source, f"its embedded configuration has version {version!r}; this toolkit reads versions 0 to "
                                         f"{CONFIG_VERSION} (a newer toolkit wrote it: update this one)")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ModelFileError(source, f"its embedded configuration has unknown keys: {', '.join(unknown)}")
        try:
            ndim = int(values.get("ndim", 2))
            patch = values.get("patch", cls.__dataclass_fields__["patch"].default[:1] * ndim)
            return cls(**{**values, "patch": patch, "config_version": version}).validate()
        except (ConfigError, TypeError, ValueError) as error:
            raise ModelFileError(source, f"its embedded configuration is invalid: {error}") from None

    @classmethod
    def from_dict(cls, values):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown configuration keys: {', '.join(unknown)}")
        return cls(**values)

    @classmethod
    def from_json(cls, path):
        with open(path, encoding="utf-8") as handle:
            return cls.from_dict(json.load(handle))


def resolve_filters(model, given=0, script_model="", script_filters=0, quick=False):
    """First-level filters of a run, resolved in this one place.

    ``given`` (``--filters``, 0 when absent) wins; else a script's own ``script_filters`` apply to
    its default ``script_model`` (the 2D script's 24-filter U-Net), or to every model with ``--quick``
    (which shrinks the network); else the family default of ``utils.base.defaults.DEFAULT_FILTERS``
    (convnet 64, unet 32, ...). An unknown model resolves to 0, refused by ``validate`` by its name.
    """
    if given:
        return int(given)
    if script_filters and (quick or model == script_model):
        return int(script_filters)
    return DEFAULT_FILTERS.get(model, 0)


def environment_record():
    """Library versions, machine and git commit, stored with every run for traceability."""
    import keras
    import numpy
    import tensorflow as tf

    record = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": numpy.__version__,
        "devices": [d.name for d in tf.config.list_logical_devices()],
        "precision_policy": keras.mixed_precision.global_policy().name,
    }
    from utils.base.defaults import REPO_ROOT as repo
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True, timeout=10).stdout
        record["git_commit"] = commit + ("+uncommitted" if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        record["git_commit"] = "unknown"
    return record


def validated_model_config(path, values):
    """The configuration of the model file ``path`` as a dict, checked by :meth:`TrainingConfig.from_embedded`.

    ``values`` is what the file holds (``models.read_config``, or the second item of ``models.load_model``):
    a ``.keras`` file's embedded configuration is validated, and returned as the file holds it (what it
    does not say stays unsaid: model choice reads absent keys as unknown); a ``.keras`` without one
    gives ``{}``; a reference ``.h5``'s recognised build settings are returned as they are (they are
    not a run configuration).
    """
    if Path(path).suffix.lower() == ".keras" and values:
        TrainingConfig.from_embedded(values, path)
    return dict(values)


def read_model_config(path):
    """:func:`validated_model_config` of a model file, without building the model."""
    if Path(path).suffix.lower() == ".keras":
        from models.storage import read_config

        return validated_model_config(path, read_config(path))
    from models.reference_h5 import describe_reference_h5

    return describe_reference_h5(path)
