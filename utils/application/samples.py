"""Test samples for the assessment: clean volumes, seeded noise on whole volumes, slices and crops.

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
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from utils.base import defaults
from utils.base.errors import ConfigError, DataError
from utils.data.noise import CTLowDoseNoise, GaussianNoise
from utils.data.prior import neighbour_prior
from utils.data.readers import DEFAULT_HU_WINDOW, read_ct

DEFAULT_SEED = defaults.ASSESSMENT_SEED


TEST_NOISE_MODELS = ("gaussian", "ct_lowdose")


DEFAULT_DOSE = 0.25  # --noise-model ct_lowdose without --dose: quarter dose


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
        index = central_crop_index(
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


def central_crop_index(shape, crop):
    """Index of the central ``crop`` (one size per axis, clipped to ``shape``)."""
    index = []
    for size, want in zip(shape, crop):
        want = min(size, want)
        start = (size - want) // 2
        index.append(slice(start, start + want))
    return tuple(index)


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
