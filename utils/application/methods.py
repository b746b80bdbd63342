"""The denoisers under assessment: learned models from files and the classical baselines, behind one interface.

A :class:`Method` has a ``name`` (the ``method`` column of the results), ``check(sample)`` (raise before
any work if it cannot denoise the sample), an untimed ``warm_up(sample)`` and ``denoise(sample)``.
:class:`ModelMethod` wraps a ``.keras`` or reference ``.h5`` model (:func:`discover_models` finds the
shipped ones that fit the test noise); :class:`BaselineMethod` runs a classical method through
``utils.solvers.methods.run_classical`` with the parameters of ``utils.application.tuning``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from utils.application.samples import central_crop_index
from utils.application.tuning import DEFAULT_TUNED_DIR, tuned_parameters, tuning_ndim
from utils.base import defaults
from utils.base.errors import ConfigError, DataError, ModelFileError

BASELINES = ("noisy", "tv", "spade", "bm3d", "bm4d")


MODEL_SUFFIXES = defaults.MODEL_SUFFIXES


DEFAULT_MODELS_DIR = Path(defaults.MODELS_DIR)


# The neighbour prior used by SPADE and by ResPrU-Net models whose config does not say otherwise
# (the defaults of utils.data.prior and of the training configuration).
DEFAULT_PRIOR = dict(defaults.DEFAULT_PRIOR)


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
            crop = central_crop_index(sample.noisy.shape, (size, size) if sample.ndim == 2 else (depth, size, size))
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
            require_classical(self.name)  # fail now, not after the other methods have run, if the binary is missing

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
        from utils.solvers.methods import run_classical

        if self.name == "noisy":
            return np.array(noisy, dtype=np.float32)
        if not self.estimate_sigma:
            return run_classical(self.name, noisy, prior, **{**self.params, **overrides})
        if sigma is None:  # warm-up call
            from utils.data.noise_level import estimate_scan_sigma

            sigma = min(max(estimate_scan_sigma(noisy), 1e-3), 0.5)
        return run_classical(self.name, noisy, prior, sigma=sigma, **overrides)

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


def require_classical(package):
    """Raise ConfigError now unless the ``package`` binary (bm3d or bm4d) loads."""
    from utils.solvers import classical

    if not classical.is_available(package):
        raise ConfigError(
            f"{package} is not installed or its binary cannot load (pip install {package}=={classical.PACKAGE_VERSIONS[package]}; "
            f"on Linux it needs OpenBLAS); or drop {package} from --methods"
        )


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


def _model_config(path):
    from utils.learning.config import read_model_config

    return read_model_config(path)


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
    from utils.learning.config import validated_model_config

    path = Path(path)
    model, config = load_model(path)
    config = validated_model_config(path, config)
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
            require_classical(name)  # before tuning: a missing binary must not cost a tuning run first
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
