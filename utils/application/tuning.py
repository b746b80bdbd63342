"""Choose the parameters of the classical denoisers on validation data.

The tuner corrupts clean validation volumes with one seeded noise realisation, runs a method on
a central crop of each, and maximises the mean PSNR (``skimage.metrics.peak_signal_noise_ratio``
with ``data_range=1``) over that method's parameters:

========  =====================================================  ==========================
method    searched                                               search
========  =====================================================  ==========================
``tv``    ``weight`` (``n_outer`` fixed, default 2)              golden section on log(weight)
``spade`` ``tv_weight`` β, then ``prior_weight`` α, then β        coordinate golden section
``bm3d``  ``sigma`` = multiplier × the noise's sigma             grid of multipliers
``bm4d``  ``sigma`` = multiplier × the noise's sigma             grid of multipliers
========  =====================================================  ==========================

A search costs a few dozen solver calls on the crop. Results go to a JSON file keyed by method and
noise level, merged with what the file already holds and written atomically::

    {"tv": {"0.05": {"weight": 0.09, "n_outer": 2, "psnr": 38.1, "evaluations": 12, ...}}}

The assessment's baselines (:func:`tuned_parameters`) run with parameters tuned here on seeded crops of
the embedded validation phantoms, read from ``<tuned_dir>/tuned_2d.json`` (methods applied to slices) or
``tuned_3d.json`` (applied to volumes). A missing entry is tuned on the spot, cheaply, and stored, so an
untuned default never ends up in a comparison. BM3D is a 2D method (slice by slice) and BM4D a 3D one,
whatever the samples. Every method runs through ``utils.solvers.methods.run_classical``, as in the
assessment and in ``Denoise_CT.py``.

Demos read them back with :func:`load_tuned`; :func:`solver_parameters` strips the bookkeeping::

    tune("tv", [clean_volume], 0.05, results_path="results/tuned.json")
    entry = load_tuned("results/tuned.json", "tv", 0.05)      # {"weight": ..., "psnr": ..., ...}
    denoised = tv_denoise(noisy, **solver_parameters(entry))
"""

import dataclasses
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from skimage.metrics import peak_signal_noise_ratio
from tqdm.auto import tqdm

from utils.application.samples import central_crop_index, evenly_spaced
from utils.base import defaults
from utils.base.atomic import write_json
from utils.base.errors import ConfigError, DataError
from utils.data.noise import GaussianNoise
from utils.data.prior import neighbour_prior
from utils.data.readers import read_ct
from utils.solvers import variational
from utils.solvers.methods import run_classical

GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0

# Bookkeeping that :func:`tune` stores beside the solver arguments in a tuned entry.
RECORD_KEYS = frozenset({"psnr", "noisy_psnr", "evaluations", "seed", "crop_shape", "sigma_multiplier"})


# ----------------------------------------------------------------------------------------------
# One-dimensional searches (maximisation), independent of any denoiser


def golden_section_log(objective, low, high, n_evals=10):
    """Maximise ``objective(x)`` over ``x`` in ``[low, high]`` by golden section on ``log x``.

    Suited to weights whose useful range spans a factor of 10 or more and whose score is unimodal.
    Returns ``(best_x, best_score)`` over every point evaluated (``n_evals >= 2`` calls). When the
    best point is at an end of the bracket, the true optimum may lie outside it.
    """
    if not 0 < low < high:
        raise ConfigError(f"search bracket must satisfy 0 < low < high, got [{low}, {high}]")
    if n_evals < 2:
        raise ConfigError(f"golden-section search needs at least 2 evaluations, got {n_evals}")
    seen = {}

    def score(log_x):
        x = float(math.exp(log_x))
        if x not in seen:
            seen[x] = float(objective(x))
        return seen[x]

    a, b = math.log(low), math.log(high)
    c, d = b - GOLDEN * (b - a), a + GOLDEN * (b - a)
    score_c, score_d = score(c), score(d)
    for _ in range(n_evals - 2):
        if score_c >= score_d:  # the maximum lies in [a, d]
            b, d, score_d = d, c, score_c
            c = b - GOLDEN * (b - a)
            score_c = score(c)
        else:  # the maximum lies in [c, b]
            a, c, score_c = c, d, score_d
            d = a + GOLDEN * (b - a)
            score_d = score(d)
    best = max(seen, key=seen.get)
    return best, seen[best]


def grid_search(objective, grid):
    """Maximise ``objective`` over the values in ``grid``; returns ``(best_x, best_score)`` (first on ties)."""
    grid = list(grid)
    if not grid:
        raise ConfigError("grid search needs at least one value")
    scores = [float(objective(x)) for x in grid]
    best = int(np.argmax(scores))
    return grid[best], scores[best]


# ----------------------------------------------------------------------------------------------
# Tunable methods


@dataclasses.dataclass(frozen=True)
class TunableMethod:
    """A denoiser and the search that tunes it.

    ``run(noisy, prior, sigma, params) -> denoised`` denoises one crop (``prior`` is the neighbour
    prior of the crop, or ``None`` when ``needs_prior`` is false). ``search(score, sigma) -> params``
    maximises ``score(params) -> mean PSNR`` and returns the best parameter dict.
    """

    name: str
    run: Callable
    search: Callable
    needs_prior: bool = False
    budget: int = 12  # solver calls the search makes, for the progress bar


TUNABLE_METHODS = {}


def register_method(method):
    TUNABLE_METHODS[method.name] = method
    return method


def _tv_search(score, sigma, n_outer=2, n_evals=10, **fixed):
    # Bracket measured on a CT-like phantom: the optimum sits near 0.5 sigma (n_outer=1) to
    # 3 sigma (n_outer=3).
    weight, _ = golden_section_log(lambda w: score(dict(fixed, weight=w, n_outer=n_outer)), 0.1 * sigma, 5.0 * sigma, n_evals)
    return dict(fixed, weight=weight, n_outer=n_outer)


def _spade_search(score, sigma, n_outer=2, n_evals=8, **fixed):
    # Coordinate ascent: β with α at its default, then α, then β again around the new α.
    params = dict(
        fixed,
        tv_weight=variational.SPADE_TV_WEIGHT_PER_SIGMA * sigma,
        prior_weight=variational.SPADE_PRIOR_WEIGHT_PER_SIGMA * sigma,
        n_outer=n_outer,
    )
    for key in ("tv_weight", "prior_weight", "tv_weight"):
        params[key], _ = golden_section_log(lambda v, key=key: score(dict(params, **{key: v})), 0.05 * sigma, 5.0 * sigma, n_evals)
    return params


def _multiplier_search(score, sigma, multipliers=(0.6, 0.8, 1.0, 1.2, 1.5)):
    multiplier, _ = grid_search(lambda m: score({"sigma": m * sigma}), multipliers)
    return {"sigma": multiplier * sigma, "sigma_multiplier": multiplier}


def _classical_runner(name):
    def run(noisy, prior, sigma, params):
        return run_classical(name, noisy, prior, **params)

    return run


register_method(TunableMethod("tv", _classical_runner("tv"), _tv_search, budget=10))
register_method(TunableMethod("spade", _classical_runner("spade"), _spade_search, needs_prior=True, budget=24))
register_method(TunableMethod("bm3d", _classical_runner("bm3d"), _multiplier_search, budget=5))
register_method(TunableMethod("bm4d", _classical_runner("bm4d"), _multiplier_search, budget=5))


# ----------------------------------------------------------------------------------------------
# Validation data and the tuning loop


def noise_key(noise):
    """JSON key of a noise level: ``"0.05"`` for Gaussian sigma 0.05, else the model's fields."""
    if isinstance(noise, (int, float, np.floating)):
        return f"{float(noise):g}"
    if isinstance(noise, GaussianNoise):
        return f"{noise.sigma:g}"
    fields = ",".join(f"{k}={v:g}" for k, v in sorted(dataclasses.asdict(noise).items()))
    return f"{noise.name}({fields})"


def central_crop(array, crop_shape):
    """Central crop of ``array`` to ``crop_shape`` (clipped to the array's own size)."""
    if len(crop_shape) != array.ndim:
        raise ConfigError(f"crop shape {tuple(crop_shape)} has {len(crop_shape)} axes, the data have {array.ndim}")
    return array[central_crop_index(array.shape, [int(c) for c in crop_shape])]


def make_validation_set(
    clean_volumes, noise, seed=0, crop_shape=(16, 96, 96), with_prior=False, prior_from=None, slices_per_volume=None
):
    """Seeded noisy/clean (and prior) crops for tuning.

    Noise is drawn on each whole volume (one ``numpy.random.default_rng(seed)`` stream in order) and
    the prior is built from the whole noisy volume before cropping, so the crop's end slices have
    their real neighbours. With ``slices_per_volume`` (tuning for slices) each volume gives that many
    evenly spaced slices instead, each cropped to the 2D ``crop_shape``, with their slices of the
    whole volume's prior.

    :param clean_volumes: sequence of clean arrays ``(D, H, W)`` (or ``(H, W)`` without prior) on [0, 1].
    :param noise: sigma on the [0, 1] scale, or a model from :mod:`utils.data.noise`.
    :param prior_from: ``prior_from(noisy_volume, clean_volume) -> prior volume``, to study other
        priors; ``None``: ``utils.data.prior.neighbour_prior(noisy_volume)``, the demos' prior.
    :return: list of ``(clean_crop, noisy_crop, prior_crop_or_None)``.
    """
    noise = GaussianNoise(float(noise)) if isinstance(noise, (int, float, np.floating)) else noise
    rng = np.random.default_rng(seed)
    crops = []
    for i, clean in enumerate(clean_volumes):
        clean = np.asarray(clean, dtype=np.float32)
        if with_prior and clean.ndim != 3:
            raise DataError(f"validation volume {i}", f"the neighbour prior needs a volume (D, H, W), got shape {clean.shape}")
        noisy = noise.sample_numpy(clean, rng)
        prior = None
        if with_prior:
            prior = neighbour_prior(noisy) if prior_from is None else prior_from(noisy, clean)
        if slices_per_volume:
            picks = [tuple(a[z] for a in (clean, noisy)) + ((None if prior is None else prior[z]),)
                     for z in evenly_spaced(clean.shape[0], slices_per_volume)]
        else:
            picks = [(clean, noisy, prior)]
        for arrays in picks:
            shape = crop_shape[-arrays[0].ndim :]
            crops.append(tuple(None if a is None else central_crop(a, shape) for a in arrays))
    if not crops:
        raise DataError("validation set", "no clean volumes given")
    return crops


def tune(
    method,
    clean_volumes,
    noise,
    *,
    seed=0,
    crop_shape=(16, 96, 96),
    results_path=None,
    progress=True,
    prior_from=None,
    slices_per_volume=None,
    **search_options,
):
    """Tune ``method`` on validation volumes and optionally record the result.

    :param str method: one of ``TUNABLE_METHODS`` (``"tv"``, ``"spade"``, ``"bm3d"``, ``"bm4d"``).
    :param clean_volumes: sequence of clean validation arrays ``(D, H, W)`` on the [0, 1] scale.
    :param noise: Gaussian sigma on the [0, 1] scale, or a noise model from :mod:`utils.data.noise`
        (its ``effective_sigma`` scales the search brackets).
    :param int seed: seed of the noise realisation (the same for every candidate parameter).
    :param tuple crop_shape: central crop tuned on, clipped to each volume's size.
    :param results_path: JSON file to merge the result into (atomically); ``None`` to skip.
    :param bool progress: show a progress bar over solver calls.
    :param prior_from: how methods that take a prior get it (see :func:`make_validation_set`).
    :param slices_per_volume: tune for slices: this many evenly spaced slices of each volume, with
        ``crop_shape`` 2D (see :func:`make_validation_set`); ``None`` tunes on volume crops.
    :param search_options: passed to the method's search, e.g. ``n_outer=1`` or ``n_evals=8`` for
        TV, ``multipliers=(...)`` for BM3D/BM4D, or fixed solver options such as ``isotropic=True``.
    :return: dict with the best parameters, ``psnr`` (mean over volumes at those parameters),
        ``noisy_psnr``, ``evaluations``, ``seed`` and ``crop_shape``.
    """
    if method not in TUNABLE_METHODS:
        raise ConfigError(f"unknown method {method!r} to tune; choose one of {sorted(TUNABLE_METHODS)}")
    spec = TUNABLE_METHODS[method]
    noise_model = GaussianNoise(float(noise)) if isinstance(noise, (int, float, np.floating)) else noise
    sigma = noise_model.effective_sigma
    crops = make_validation_set(clean_volumes, noise_model, seed, crop_shape, spec.needs_prior, prior_from, slices_per_volume)

    scores = {}
    bar = tqdm(total=spec.budget, desc=f"tuning {method} at {noise_key(noise_model)}", disable=not progress, leave=False)

    def score(params):
        key = json.dumps(params, sort_keys=True, default=float)
        if key not in scores:  # golden section and coordinate ascent revisit points
            psnrs = [
                peak_signal_noise_ratio(clean, np.asarray(spec.run(noisy, prior, sigma, params), np.float32), data_range=1.0)
                for clean, noisy, prior in crops
            ]
            scores[key] = float(np.mean(psnrs))
            bar.update(1)
            bar.set_postfix_str(f"psnr {scores[key]:.2f}")
        return scores[key]

    try:
        best = spec.search(score, sigma, **search_options)
    finally:
        bar.close()
    result = dict(
        best,
        psnr=score(solver_parameters(best)),  # cached: the point the search scored
        noisy_psnr=float(np.mean([peak_signal_noise_ratio(c, n, data_range=1.0) for c, n, _ in crops])),
        evaluations=len(scores),
        seed=int(seed),
        crop_shape=[int(s) for s in crops[0][0].shape],
    )
    if results_path is not None:
        record_tuned(results_path, method, noise_model, result)
    return result


# ----------------------------------------------------------------------------------------------
# Results file


def record_tuned(path, method, noise, entry):
    """Merge ``entry`` under ``[method][noise_key(noise)]`` of the JSON file at ``path`` (atomic write)."""
    path = Path(path)
    table = _read_table(path) if path.exists() else {}
    table.setdefault(method, {})[noise_key(noise)] = entry
    write_json(path, table)
    return table


def load_tuned(path, method, noise):
    """Tuned parameters of ``method`` at ``noise`` from the JSON file at ``path``, or ``None``.

    ``None`` when the file, the method or the noise level is absent, so that demos can fall back to
    the noise-aware defaults. A file that exists but is not a tuning table raises :class:`DataError`.
    """
    path = Path(path)
    if not path.exists():
        return None
    return _read_table(path).get(method, {}).get(noise_key(noise))


def solver_parameters(entry):
    """The arguments of the method's solver in a tuned ``entry`` (drops :data:`RECORD_KEYS`)."""
    return {key: value for key, value in entry.items() if key not in RECORD_KEYS}


def _read_table(path):
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(path, f"cannot read the tuning table: {error}") from error
    if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
        raise DataError(path, "not a tuning table: expected {method: {noise: {parameter: value}}}")
    return table


# ----------------------------------------------------------------------------------------------
# The assessment's baselines: tuned parameters read back, or tuned on the spot


DEFAULT_TUNED_DIR = Path(defaults.TUNED_DIR)
# On the embedded validation phantoms: one seeded noise realisation, small central crops, so that a
# missing entry costs seconds (TV, SPADE) to about a minute (BM3D, BM4D) on 2 cores.
TUNING_SEED = 0
TUNING_CROP_3D = (16, 96, 96)
TUNING_CROP_BM4D = (8, 64, 64)  # BM4D costs ~10 us per voxel; this keeps its 5 trials near a minute
TUNING_CROP_2D = (96, 96)
TUNING_SLICES_PER_VOLUME = 2


def tuning_ndim(method, sample_ndim):
    """Dimensionality a baseline is applied (and tuned) in: BM3D always 2D, BM4D always 3D."""
    return {"bm3d": 2, "bm4d": 3}.get(method, sample_ndim)


def tuned_path(tuned_dir, ndim):
    return Path(tuned_dir) / f"tuned_{ndim}d.json"


def tuned_parameters(method, noise, ndim, tuned_dir=DEFAULT_TUNED_DIR, validation_volumes=None, progress=True):
    """Solver arguments of ``method`` at ``noise`` applied in ``ndim`` D, and where they come from.

    Read from ``tuned_path(tuned_dir, ndim)`` (:func:`load_tuned`); when absent, tuned now by
    :func:`tune_baseline` on ``validation_volumes`` (clean ``(D, H, W)`` arrays; default the embedded
    validation phantoms) and stored there. Returns ``(params, provenance)``.
    """
    path = tuned_path(tuned_dir, ndim)
    entry = load_tuned(path, method, noise)
    if entry is None:
        volumes = validation_volumes if validation_volumes is not None else _embedded_validation_volumes()
        print(f"note: no tuned {method} parameters for noise {noise:g} ({ndim}D) in {path}; tuning on the validation phantoms", file=sys.stderr)
        entry = tune_baseline(method, noise, ndim, volumes, path, progress=progress)
        origin = "tuned now"
    else:
        origin = "tuned"
    crop = "x".join(str(s) for s in entry.get("crop_shape", []))
    provenance = f"{origin}: validation PSNR {entry.get('psnr', float('nan')):.2f} dB on {crop} crops, stored in `{path}`"
    return solver_parameters(entry), provenance


def tune_baseline(method, noise, ndim, clean_volumes, results_path, progress=True):
    """Tune ``method`` for use in ``ndim`` D on seeded central crops of ``clean_volumes``; store and return the entry.

    :func:`tune` with seed ``TUNING_SEED``: in 3D on ``TUNING_CROP_3D`` crops (``TUNING_CROP_BM4D`` for
    BM4D); in 2D on ``TUNING_SLICES_PER_VOLUME`` slices of each volume cropped to ``TUNING_CROP_2D``,
    with the priors of the whole noisy volumes.
    """
    if ndim == 3:
        crop, slices = (TUNING_CROP_BM4D if method == "bm4d" else TUNING_CROP_3D), None
    else:
        crop, slices = TUNING_CROP_2D, TUNING_SLICES_PER_VOLUME
    return tune(method, clean_volumes, noise, seed=TUNING_SEED, crop_shape=crop, slices_per_volume=slices,
                results_path=results_path, progress=progress)


def _embedded_validation_volumes():
    from utils.data.phantom import ensure_default_dataset

    return [v.array for path in ensure_default_dataset()["val"] for v in read_ct(path)]
