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

from utils.errors import ConfigError

MODEL_NAMES = ("convnet", "cnn2", "cnn7", "resnet", "dncnn", "unet", "resprunet")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
STRATEGIES = ("none", "mirrored", "multiworker")
PRIOR_VARIANTS = ("centred", "reference")
LR_SCHEDULES = ("constant", "cosine")


@dataclasses.dataclass
class TrainingConfig:
    """All settings of a training run (the top-of-script constants, overridable from the CLI)."""

    ndim: int = 2
    model: str = "unet"
    filters: int = 32
    depth: int = 2
    kernel_size: int = 3
    residual: bool = False
    prior: bool = False
    prior_half_window: int = 4
    prior_decay: float = 0.04
    prior_variant: str = "centred"
    noise: float = 0.05
    noise_model: str = "gaussian"
    dose: float = 1.0
    noise_range: tuple = ()
    patch: tuple = (128, 128)
    central_fraction: float = 1.0
    window_augmentation: float = 0.0
    zoom_range: tuple = ()
    batch_size: int = 16
    samples_per_volume: int = 0
    validation_samples_per_volume: int = 0
    balance_data: bool = False
    epochs: int = 30
    learning_rate: float = 1e-3
    lr_schedule: str = "constant"
    data: tuple = ()
    validation_data: tuple = ()
    hu_window: tuple = (-1000.0, 400.0)
    precision: str = "float32"
    distribute: str = "none"
    out: str = ""
    seed: int = 0
    patience: int = 0
    reduce_lr_patience: int = 0
    time_limit_minutes: float = 0.0
    init_model: str = ""
    tensorboard_update_freq: str = "epoch"
    histogram_freq: int = 1
    image_freq: int = 1
    profile_batch: tuple = ()

    def __post_init__(self):
        self.patch = tuple(int(p) for p in self.patch)
        self.data = tuple(str(d) for d in self.data)
        self.validation_data = tuple(str(d) for d in self.validation_data)
        self.hu_window = tuple(float(h) for h in self.hu_window)
        self.zoom_range = tuple(float(z) for z in self.zoom_range)
        self.noise_range = tuple(float(n) for n in self.noise_range)
        self.profile_batch = tuple(int(b) for b in self.profile_batch)
        if self.model == "resprunet":
            self.prior = True

    def validate(self):
        """Raise ConfigError naming the first bad setting; return self for chaining."""
        checks = [
            (self.ndim in (2, 3), f"ndim must be 2 or 3, got {self.ndim}"),
            (self.model in MODEL_NAMES, f"unknown model {self.model!r}; choose one of {', '.join(MODEL_NAMES)}"),
            (self.filters >= 1, f"--filters must be >= 1, got {self.filters}"),
            (self.depth >= 0, f"--depth must be >= 0, got {self.depth}"),
            (self.kernel_size >= 1 and self.kernel_size % 2 == 1, f"--kernel-size must be odd and >= 1, got {self.kernel_size}"),
            (math.isfinite(self.noise) and self.noise >= 0, f"--noise must be a finite number >= 0 (fraction of the [0, 1] range), got {self.noise}"),
            (self.noise <= 1, f"--noise is a fraction of the [0, 1] range (0.05 = 5 %), got {self.noise}"),
            (math.isfinite(self.dose) and 0 < self.dose <= 1, f"--dose is the fraction of the scan's dose kept, in (0, 1], got {self.dose}"),
            (self.dose == 1 or self.noise_model == "ct_lowdose", f"--dose applies to --noise-model ct_lowdose only, not {self.noise_model!r}"),
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
        multiple = 2**self.depth if self.model in ("unet", "resprunet") else 1
        if any(p % multiple for p in self.patch):
            raise ConfigError(f"--patch sizes {self.patch} must be multiples of {multiple} for a {self.model} of depth {self.depth}")
        return self

    @property
    def model_options(self):
        """Keyword arguments for :func:`models.build_model`."""
        options = {"ndim": self.ndim, "filters": self.filters, "kernel_size": self.kernel_size}
        if self.model in ("unet", "resprunet"):
            options["depth"] = self.depth
        if self.model == "unet":
            options["residual"] = self.residual
        return options

    def to_dict(self):
        return dataclasses.asdict(self)

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
    }
    repo = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True, timeout=10).stdout
        record["git_commit"] = commit + ("+uncommitted" if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        record["git_commit"] = "unknown"
    return record
