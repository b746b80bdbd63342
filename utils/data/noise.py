"""Noise models on the [0, 1] intensity scale.

The paper corrupts windowed CT with additive white Gaussian noise of standard deviation
``sigma`` = 0.02, 0.05 or 0.10 (2, 5, 10 % of the window), without clipping. Each model
offers a numpy sampler (tests, assessment) and a stateless TensorFlow sampler (tf.data
pipelines: the seed pair comes from the pipeline so that training noise is fresh every
epoch and validation noise is fixed). New models register themselves in ``NOISE_MODELS``.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from utils.base.defaults import DEFAULT_HU_WINDOW
from utils.base.errors import ConfigError

NOISE_MODELS = {}


def register(cls):
    NOISE_MODELS[cls.name] = cls
    return cls


@register
@dataclasses.dataclass(frozen=True)
class GaussianNoise:
    """x + sigma * N(0, 1), not clipped."""

    sigma: float
    name = "gaussian"

    def __post_init__(self):
        if not np.isfinite(self.sigma) or self.sigma < 0:
            raise ConfigError(f"noise level must be a finite number >= 0, got {self.sigma}")

    @property
    def effective_sigma(self):
        """Standard deviation to hand to BM3D/BM4D and to the solvers' noise-aware defaults."""
        return float(self.sigma)

    def sample_numpy(self, clean, rng):
        return (clean + self.sigma * rng.standard_normal(clean.shape)).astype(np.float32)

    def sample_tf(self, clean, seed):
        noise = tf.random.stateless_normal(tf.shape(clean), seed=seed, dtype=clean.dtype)
        return clean + tf.cast(self.sigma, clean.dtype) * noise


@dataclasses.dataclass(frozen=True)
class GaussianRangeNoise:
    """Blind training noise: x + s * N(0, 1), not clipped, with s drawn uniformly in [low, high] per sample.

    One ``s`` per call: per sample in the tf.data pipelines, where every sample has its own seed
    pair, so training samples get a new ``s`` every epoch and validation samples (fixed seeds) keep
    theirs. The whole sample (a 2D slab or 3D patch) shares its ``s``. The model is told nothing
    about ``s`` (fully blind: no noise-level input). Selected by ``--noise-range LO HI``, not by
    name (it is not in ``NOISE_MODELS``: ``make_noise`` builds single-level models).
    """

    low: float
    high: float
    name = "gaussian_range"

    def __post_init__(self):
        low, high = float(self.low), float(self.high)
        if not (np.isfinite(low) and np.isfinite(high) and 0 <= low < high <= 1):
            raise ConfigError(f"noise range must satisfy 0 <= LO < HI <= 1 on the [0, 1] scale, got ({low}, {high})")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    @property
    def effective_sigma(self):
        """The middle of the range: the single level handed to BM3D/BM4D and the solvers."""
        return 0.5 * (self.low + self.high)

    def sample_numpy(self, clean, rng):
        sigma = rng.uniform(self.low, self.high)
        return (clean + sigma * rng.standard_normal(clean.shape)).astype(np.float32)

    def sample_tf(self, clean, seed):
        seeds = tf.random.experimental.stateless_split(seed, 2)
        sigma = tf.random.stateless_uniform([], seeds[0], self.low, self.high, dtype=clean.dtype)
        return clean + sigma * tf.random.stateless_normal(tf.shape(clean), seed=seeds[1], dtype=clean.dtype)


@register
@dataclasses.dataclass(frozen=True)
class PoissonGaussianNoise:
    """Signal-dependent noise: x + sqrt(gain * x) * N(0, 1) + sigma * N(0, 1).

    The Gaussian approximation of a Poisson count with mean x / gain, scaled back by gain,
    plus electronic noise ``sigma``. ``gain`` = 1 / photons-per-unit-intensity.
    """

    sigma: float
    gain: float = 1e-3
    name = "poisson_gaussian"

    def __post_init__(self):
        if self.sigma < 0 or self.gain < 0:
            raise ConfigError(f"noise sigma and gain must be >= 0, got sigma={self.sigma}, gain={self.gain}")

    @property
    def effective_sigma(self):
        # Noise level at mid-grey: the usual single number for a signal-dependent model.
        return float(np.sqrt(self.sigma**2 + self.gain * 0.5))

    def sample_numpy(self, clean, rng):
        std = np.sqrt(self.sigma**2 + self.gain * np.clip(clean, 0, None))
        return (clean + std * rng.standard_normal(clean.shape)).astype(np.float32)

    def sample_tf(self, clean, seed):
        std = tf.sqrt(self.sigma**2 + self.gain * tf.maximum(clean, 0.0))
        return clean + std * tf.random.stateless_normal(tf.shape(clean), seed=seed, dtype=clean.dtype)


@register
@dataclasses.dataclass(frozen=True)
class CTLowDoseNoise:
    """Simulated low-dose CT: the extra noise of a scan at ``dose`` times the clean scan's dose.

    See :mod:`utils.data.lowdose` for the exact model. ``sample_numpy`` is the REFERENCE form
    (projection-domain Poisson + electronic noise, radon / ramp-filtered FBP with scikit-image,
    slice by slice; about 1.5 s per 512 x 512 slice); ``sample_tf`` is the FAST form (stationary noise
    with the reference's NPS, by random-phase synthesis, times a std map from the patch's line
    integrals; stateless).
    Both work on the window's [0, 1] scale (``hu_window``) and add noise only, not clipped.
    ``sigma`` is accepted for :func:`make_noise`'s signature and not used: ``dose`` sets the level.
    Arrays carry no pixel spacing here, so ``pixel_spacing_mm`` (default 0.7) is assumed.
    """

    sigma: float = 0.0
    dose: float = 1.0
    hu_lo: float = DEFAULT_HU_WINDOW[0]
    hu_hi: float = DEFAULT_HU_WINDOW[1]
    pixel_spacing_mm: float = 0.7
    body_mm: float = 250.0
    n_views: int = 360
    hu_window: dataclasses.InitVar = None
    name = "ct_lowdose"

    def __post_init__(self, hu_window):
        from utils.data.lowdose import check_dose, check_spacing

        object.__setattr__(self, "dose", check_dose(self.dose))
        if hu_window is not None:
            if len(hu_window) != 2:
                raise ConfigError(f"hu_window must be (lo, hi), got {hu_window!r}")
            object.__setattr__(self, "hu_lo", float(hu_window[0]))
            object.__setattr__(self, "hu_hi", float(hu_window[1]))
        if not self.hu_lo < self.hu_hi:
            raise ConfigError(f"hu_window must have lo < hi, got ({self.hu_lo}, {self.hu_hi})")
        try:
            check_spacing(self.pixel_spacing_mm, "ct_lowdose noise")
        except ValueError as error:
            raise ConfigError(str(error)) from None
        if not self.body_mm >= 0 or int(self.n_views) < 2:
            raise ConfigError(f"ct_lowdose needs body_mm >= 0 and n_views >= 2, got {self.body_mm}, {self.n_views}")

    @property
    def window(self):
        return (self.hu_lo, self.hu_hi)

    @property
    def effective_sigma(self):
        """Std on the [0, 1] scale at the centre of a water body of ``body_mm`` (fast-form formula)."""
        from utils.data.lowdose import MU_WATER, expected_std_hu

        std = expected_std_hu(MU_WATER * self.body_mm, self.dose, self.pixel_spacing_mm, self.n_views)
        return float(std) / (self.hu_hi - self.hu_lo)

    def sample_numpy(self, clean, rng):
        """Reference form on every slice of ``(H, W)`` or ``(D, H, W)`` windowed data."""
        from utils.data.lowdose import simulate_lowdose_volume

        lo, hi = self.window
        hu = np.asarray(clean, np.float64) * (hi - lo) + lo
        noisy = simulate_lowdose_volume(hu, self.pixel_spacing_mm, self.dose, rng, n_views=self.n_views)
        return ((noisy - lo) / (hi - lo)).astype(np.float32)

    def sample_tf(self, clean, seed):
        """Fast form: ``clean + noise`` for ``(..., H, W)`` windowed tensors, stateless in ``seed``."""
        from utils.data.lowdose import fast_lowdose_noise_tf

        noise = fast_lowdose_noise_tf(
            clean, seed, self.dose, self.window, pixel_spacing_mm=self.pixel_spacing_mm, body_mm=self.body_mm, n_views=self.n_views
        )
        return clean + tf.cast(noise, clean.dtype)


@dataclasses.dataclass(frozen=True)
class CTLowDoseRangeNoise(CTLowDoseNoise):
    """Blind low-dose training: :class:`CTLowDoseNoise` with the dose drawn log-uniformly in ``dose_range``
    per sample (one dose for the whole sample, as :class:`GaussianRangeNoise` draws its sigma).

    Log-uniform, because the noise std goes like ``1 / sqrt(dose)``: every octave of dose gets the same
    share of samples. ``dose`` is the nominal level (validation panels, ``effective_sigma``) and must lie
    in the range. Doses are kept below 0.999 (at dose 1 nothing is added). Selected by ``--dose-range LO HI``.
    """

    dose_range: tuple = (0.05, 0.5)
    name = "ct_lowdose_range"

    def __post_init__(self, hu_window):
        super().__post_init__(hu_window)
        from utils.data.lowdose import check_dose

        if len(self.dose_range) != 2:
            raise ConfigError(f"dose range must be (LO, HI), got {self.dose_range!r}")
        low, high = (check_dose(d) for d in self.dose_range)
        if not low < high:
            raise ConfigError(f"dose range must have LO < HI, got ({low}, {high})")
        if not low <= self.dose <= high:
            raise ConfigError(f"the nominal dose {self.dose} must lie inside the dose range ({low}, {high})")
        object.__setattr__(self, "dose_range", (low, high))

    def _bounds(self):
        return np.log(self.dose_range[0]), np.log(min(self.dose_range[1], 0.999))

    def at_dose(self, dose):
        """The fixed-dose model with this range's other settings."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(CTLowDoseNoise)}
        return CTLowDoseNoise(**{**fields, "dose": dose})

    def sample_numpy(self, clean, rng):
        return self.at_dose(float(np.exp(rng.uniform(*self._bounds())))).sample_numpy(clean, rng)

    def sample_tf(self, clean, seed):
        from utils.data.lowdose import fast_lowdose_noise_tf

        seeds = tf.random.experimental.stateless_split(seed, 2)
        low, high = self._bounds()
        dose = tf.exp(tf.random.stateless_uniform([], seeds[0], low, high, dtype=tf.float32))
        noise = fast_lowdose_noise_tf(
            clean, seeds[1], dose, self.window, pixel_spacing_mm=self.pixel_spacing_mm, body_mm=self.body_mm, n_views=self.n_views
        )
        return clean + tf.cast(noise, clean.dtype)


def make_noise(sigma, model="gaussian", **options):
    """Build a noise model by name; ``sigma`` is on the [0, 1] scale."""
    if model not in NOISE_MODELS:
        raise ConfigError(f"unknown noise model {model!r}; choose one of {sorted(NOISE_MODELS)}")
    return NOISE_MODELS[model](float(sigma), **options)


def estimate_noise_sigma(volume, max_slices=4):
    """Standard deviation of the white noise already present in an image or volume, same scale.

    scikit-image's ``estimate_sigma`` (the median absolute deviation of the finest diagonal wavelet
    coefficients, Donoho & Johnstone 1994) on up to ``max_slices`` evenly spaced slices of a
    ``(D, H, W)`` volume (or on an ``(H, W)`` image); the median of the slice estimates. Used to check
    that "clean" training targets are clean: a target with noise comparable to the noise added in
    training teaches the model to keep that noise.
    """
    from skimage.restoration import estimate_sigma

    volume = np.asarray(volume, dtype=np.float32)
    slices = volume[None] if volume.ndim == 2 else volume
    picks = np.unique(np.linspace(0, len(slices) - 1, min(max_slices, len(slices))).round().astype(int))
    return float(np.median([estimate_sigma(slices[i]) for i in picks]))
