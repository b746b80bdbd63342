"""Do the learned models beat the classical methods on real CT they never saw? Held-out patients only.

    python3 studies/real_ct.py                      # 2, 5 and 10 % noise, every shipped model (~25 min on 2 cores)
    python3 studies/real_ct.py --levels 0.05        # one level
    python3 studies/real_ct.py --models trained_models/unet2d_blind.keras
    python3 studies/real_ct.py --quick              # smoke run: tiny crops, 5 % only, 2D models only, untuned TV/SPADE

Test data: the TEST patients of the committed patient-level split (``data/real_ct_split.json``,
``utils.data.real_ct_split``) of the clean datasets of the shared real-CT corpus (``--real-ct``, default
``../shared/data/real_ct``); no training patient is read. Models whose embedded configuration lists a
test path (or a folder holding one) among its training or validation data are skipped, with a note.
Each clean test dataset gives:

``<dataset> slices``
    2D samples: central ``--crop`` x ``--crop`` crops (256) of at most ``--slices`` (8) images: for a
    multi-slice series, ``--slices`` evenly spaced slices of it (``utils.application.assessment.evenly_spaced``); for
    single-image files, all of them; then, when more than ``--slices`` are left, ``--slices`` evenly spaced
    ones in split order. The gantry-tilt head series is not contiguous (irregular gaps): it is a slice set.
``<dataset> volume``
    Each contiguous series (the CRLM abdomen, 41 slices 5 mm apart, 0.8 mm pixels): its central
    ``--depth`` (24) slices and central ``--crop`` x ``--crop`` pixels, noise and neighbour prior made on
    the whole series first (the toolkit's convention, ``utils.application.assessment.volume_samples``).
``<dataset> volume 3 mm``
    The same series resampled to 3 mm voxels in every axis: HU (read through a wide window, -1024 to
    4000 HU, then mapped back) smoothed by a Gaussian of ``(zoom^-1 - 1) / 2`` voxels along the axes
    that shrink (anti-aliasing, as ``skimage.transform.rescale``) and resampled by
    ``scipy.ndimage.zoom`` (order 1), then windowed; the central ``--depth`` slices with the whole field
    of view in plane (at most ``--crop``).

Noise: Gaussian, sigma = each ``--levels`` value (0.02, 0.05, 0.10: 2, 5, 10 % of the [-1000, 400] HU
window mapped to [0, 1]), not clipped, drawn once per image with
``numpy.random.default_rng([2020, crc32(set name), i])`` and scaled for each level (results across
levels are paired).

Methods, each on every sample of a set (``utils.application.assessment.evaluate``: untimed warm-up, then wall-clock
seconds per sample; PSNR and SSIM from ``utils.data.metrics`` with data range 1, estimates not clipped, SSIM
of a volume the mean over its slices):
noisy input; TV (split Bregman, ``utils.solvers.variational``) with the toolkit's tuned parameters
(``utils.application.assessment.baseline_methods``: ``results/tuned/tuned_2d.json`` for slices, ``tuned_3d.json``
for volumes, tuned on the embedded validation phantoms on the spot when missing); SPADE likewise, on
volumes only (it needs neighbouring slices for its prior); BM3D slice by slice and BM4D (volumes only),
both given the TRUE sigma; every model file of ``--models`` (default ``trained_models/*.keras``): a
per-level model (config ``noise``) only at its own level, a blind model (config ``noise_range``) at
every level in its range; 2D models on slices and slice by slice on volumes, 3D models on volumes
only with ``tile_shape="auto"``; each in a single pass and with the flip self-ensemble
(``models.predict(..., self_ensemble=True)``, 4 flips in 2D, 8 in 3D), named ``<model>+SE``.

``--quick`` (smoke test): 32 x 32 crops, 2 images per slice set, 8-slice volumes, 5 % noise only, 2D
models only (unless ``--models`` is given), no BM3D on volumes, TV and SPADE with the solvers' default
weights for the true sigma instead of tuned ones.

Reuse: each (set, level, method)'s per-sample results are stored in ``--cache`` (default
``results/real_ct_cache/``, none with ``--quick``) under a hash of everything they depend on (the
set's images, crops and description, seed, level, and the method's solver arguments or the model
file's SHA-256, pass and tiling) and read back by later runs; ``--no-reuse`` (or an empty cache)
recomputes everything, so a run from scratch gives the same numbers (seconds aside).

Results: printed, and written atomically to ``--out`` (default ``studies/RESULTS_real_ct.json``)
and the markdown beside it (same name, ``.md``): protocol, one table per set and level, and a headline
table with the best learned model, single pass and self-ensemble, against BM3D, BM4D and TV.
"""

import argparse
import dataclasses
import hashlib
import json
import math
import os
import sys
import time
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if __name__ == "__main__" and not __package__:  # run by path: re-run as python3 -m studies.<name>
    os.execv(sys.executable, [sys.executable, "-m", f"studies.{Path(__file__).stem}", *sys.argv[1:]])
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks.common import command_line, describe_machine, goal, markdown_table, text_table  # noqa: E402

DEFAULT_OUT = REPO / "studies" / "RESULTS_real_ct.json"
DEFAULT_CACHE = REPO / "results" / "real_ct_cache"
CACHE_VERSION = 1
DEFAULT_LEVELS = (0.02, 0.05, 0.10)
SEED = 2020
FULL = {"crop": 256, "slices": 8, "depth": 24}
QUICK = {"crop": 32, "slices": 2, "depth": 8}  # BM4D costs about 1 s per 10k voxels on 2 loaded cores
RESAMPLED_MM = 3.0
HU_READ_WINDOW = (-1024.0, 4000.0)  # wide enough to keep bone HU through the resampling
CLASSICAL = ("noisy", "tv", "spade", "bm3d", "bm4d")
SE_SUFFIX = "+SE"


@dataclasses.dataclass
class TestSet:
    """One test set: ``samples`` (``utils.application.assessment.Sample``) of one kind, ``slices`` or ``volume``."""

    __test__ = False  # not a pytest class

    name: str
    kind: str
    dataset: str
    description: str
    samples: list


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny crops, one level, few methods")
    parser.add_argument("--levels", default=None, help="noise sigmas, comma separated (default 0.02,0.05,0.1; --quick: 0.05)")
    parser.add_argument("--models", type=Path, nargs="*", default=None, help="model files (default: trained_models/*.keras)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results; the markdown goes beside it (.md)")
    parser.add_argument("--real-ct", type=Path, default=None, help="the shared real_ct folder (default ../shared/data/real_ct)")
    parser.add_argument("--split", type=Path, default=None, help="split file (default data/real_ct_split.json)")
    parser.add_argument("--tuned-dir", type=Path, default=None, help="tuned baseline parameters (default results/tuned)")
    parser.add_argument("--crop", type=int, default=None, help="in-plane crop (default 256; --quick 32)")
    parser.add_argument("--slices", type=int, default=None, help="images per slice set (default 8; --quick 2)")
    parser.add_argument("--depth", type=int, default=None, help="slices per volume (default 24; --quick 8)")
    parser.add_argument("--cache", type=Path, default=None,
                        help="per-sample results of each (set, level, method) to reuse (default results/real_ct_cache; --quick: none)")
    parser.add_argument("--sets", nargs="+", default=None, help="only these test sets, by name (e.g. 'crlm_abdomen volume 3 mm')")
    parser.add_argument("--kinds", nargs="+", default=None, choices=("slices", "volume"), help="only the test sets of these kinds")
    parser.add_argument("--no-reuse", action="store_true", help="recompute everything (the cache is still written)")
    args = parser.parse_args(argv)
    command = command_line("studies/real_ct.py", argv)

    from utils.application import assessment
    from utils.data.real_ct_split import DEFAULT_REAL_CT_ROOT, load_split

    sizes = dict(QUICK if args.quick else FULL)
    for key in sizes:
        if getattr(args, key) is not None:
            sizes[key] = getattr(args, key)
    with assessment.user_errors():
        levels = assessment.parse_noise_list(args.levels) if args.levels else ([0.05] if args.quick else list(DEFAULT_LEVELS))
        root = args.real_ct or DEFAULT_REAL_CT_ROOT
        split = load_split(args.split)
        started, cpu_started = time.monotonic(), time.process_time()
        sets, test_files = build_sets(root, split, **sizes)
        if args.sets:
            unknown = sorted(set(args.sets) - {s.name for s in sets})
            if unknown:
                raise SystemExit(f"error: no test set named {', '.join(map(repr, unknown))}; the sets are {', '.join(repr(s.name) for s in sets)}")
            sets = [s for s in sets if s.name in args.sets]
        if args.kinds:
            sets = [s for s in sets if s.kind in args.kinds]
        models, model_notes = select_models(args.models, test_files, two_d_only=args.quick and args.models is None)
        cache = args.cache if args.cache is not None else (None if args.quick else DEFAULT_CACHE)
        report = run(sets, levels, models, quick=args.quick, tuned_dir=args.tuned_dir or assessment.DEFAULT_TUNED_DIR,
                     cache=cache, reuse=not args.no_reuse)
    report.update(
        benchmark="real_ct",
        command=command,
        split_file=str(args.split or "data/real_ct_split.json"),
        real_ct_root=str(root),
        quick=bool(args.quick),
        sizes=sizes,
        seed=SEED,
        notes=model_notes + report["notes"],
        minutes=round((time.monotonic() - started) / 60, 2),
        cpu_minutes=round((time.process_time() - cpu_started) / 60, 2),
        machine=describe_machine(),
    )
    report["headline"] = headline(report)
    report["goals"] = goals(report)
    print_tables(report)
    from utils.base.atomic import write_json, write_text

    markdown_path = args.out.with_suffix(".md")
    write_json(args.out, report)
    write_text(markdown_path, markdown(report))
    print(f"wrote {args.out} and {markdown_path} ({report['minutes']:.1f} min)")


# ============================================================================================ test sets


def short_name(folder):
    """``series_crlm_abdomen_dicom`` -> ``crlm_abdomen``."""
    name = folder
    for prefix in ("series_", "slices_", "volumes_"):
        name = name.removeprefix(prefix)
    for suffix in ("_dicom", "_nifti", "_png", "_tiff", "_npz"):
        name = name.removesuffix(suffix)
    return name or folder


def noisy_item(label, clean, source, contiguous, spacing, set_name, index):
    """A ``utils.application.assessment.NoisyVolume`` whose unit-variance noise field is seeded by set and index.

    The noise is stored at sigma 1 in ``noisy``; :func:`at_level` scales it for each level.
    """
    import numpy as np

    from utils.application.assessment import NoisyVolume
    from utils.data.readers import DEFAULT_HU_WINDOW

    rng = np.random.default_rng([SEED, zlib.crc32(set_name.encode()), index])
    field = rng.standard_normal(clean.shape).astype(np.float32)
    return NoisyVolume(label, clean.astype(np.float32), field, 1.0, str(source), contiguous, DEFAULT_HU_WINDOW, spacing)


def at_level(test_set, sigma):
    """The set's samples with noise ``sigma``: ``clean + sigma * field`` (paired across levels)."""
    from utils.application.assessment import NoisyVolume, Sample

    volumes = {}
    samples = []
    for sample in test_set.samples:
        base = sample.volume
        if id(base) not in volumes:
            noisy = (base.clean + sigma * base.noisy).astype("float32")
            volumes[id(base)] = NoisyVolume(base.label, base.clean, noisy, float(sigma), base.source, base.contiguous, base.hu_window, base.spacing)
        samples.append(Sample(sample.name, volumes[id(base)], sample.index))
    return samples


def resample_hu(hu, spacing, target_mm=RESAMPLED_MM):
    """HU volume resampled to ``target_mm`` voxels: anti-aliasing Gaussian on shrinking axes, linear zoom.

    Returns ``(volume, spacing)`` with the spacing actually reached (shape rounding).
    """
    import numpy as np
    from scipy.ndimage import gaussian_filter, zoom

    factors = [float(s) / target_mm for s in spacing]
    sigmas = [max(0.0, (1.0 / f - 1.0) / 2.0) for f in factors]
    smoothed = gaussian_filter(hu, sigmas, mode="nearest") if any(sigmas) else hu
    out = zoom(smoothed, factors, order=1, mode="nearest", grid_mode=True).astype(np.float32)
    reached = tuple(float(s) * n / m for s, n, m in zip(spacing, hu.shape, out.shape))
    return out, reached


def image_label(source, dataset_folder, name):
    """A sample label: the source's path inside its dataset folder (``/`` -> ``_``, no file suffix), else ``name``."""
    try:
        rel = Path(source).relative_to(dataset_folder)
    except ValueError:
        rel = Path(Path(source).name)
    text = str(rel)
    for suffix in (".nii.gz", ".nii", ".dcm", ".npz", ".png", ".tif", ".tiff"):
        text = text.removesuffix(suffix)
    return name if text in ("", ".") else text.replace("/", "_")


def build_sets(root, split, crop, slices, depth):
    """The test sets (module notes) of the clean datasets' test patients, and every test path read."""
    import numpy as np

    from utils.application.samples import Sample, central_crop_index, evenly_spaced
    from utils.base.errors import DataError
    from utils.data.readers import DEFAULT_HU_WINDOW, read_ct, window_hu
    from utils.data.real_ct_split import test_paths

    root = Path(root)
    paths = test_paths(root, kinds=("clean",), split=split)
    by_dataset = {}
    for path in paths:
        dataset = path.relative_to(root).parts[0]
        by_dataset.setdefault(dataset, []).append(path)
    lo, hi = HU_READ_WINDOW
    sets = []
    for dataset, files in by_dataset.items():
        name = short_name(dataset)
        candidates, series = [], []  # (label, HU-windowed 2D image, source); (label, HU volume, spacing, source)
        for path in files:
            for volume in read_ct(path, hu_window=HU_READ_WINDOW):
                hu = lo + volume.array * np.float32(hi - lo)
                label = image_label(volume.source, root / dataset, name)
                if volume.contiguous and volume.array.shape[0] >= 2:
                    series.append((label, hu, volume.spacing, volume.source))
                picks = range(1) if volume.array.shape[0] == 1 else evenly_spaced(volume.array.shape[0], slices)
                for z in picks:
                    tag = f"{label}_z{z:03d}" if volume.array.shape[0] > 1 else label
                    candidates.append((tag, window_hu(hu[z], DEFAULT_HU_WINDOW), volume.source))
        if not candidates:
            raise DataError(root / dataset, "no test images")
        # Several single-image series can share a file stem (two axial series in one COVID folder): number them.
        seen = {}
        for i, (tag, image, source) in enumerate(candidates):
            seen[tag] = seen.get(tag, 0) + 1
            if seen[tag] > 1:
                candidates[i] = (f"{tag}_{seen[tag] - 1}", image, source)
        chosen = [candidates[k] for k in evenly_spaced(len(candidates), slices)]
        set_name = f"{name} slices"
        samples = []
        for i, (tag, image, source) in enumerate(chosen):
            cropped = image[central_crop_index(image.shape, (crop, crop))]
            item = noisy_item(tag, cropped[None], source, False, None, set_name, i)
            samples.append(Sample(tag, item, 0))
        shapes = sorted({"x".join(map(str, s.clean.shape)) for s in samples})
        sets.append(TestSet(set_name, "slices", dataset, f"{len(samples)} of {len(candidates)} test images, central crops of {', '.join(shapes)} pixels", samples))

        for k, (label, hu, spacing, source) in enumerate(series):
            suffix = "" if len(series) == 1 else f" {k}"
            variants = [(f"{name} volume{suffix}", hu, spacing, (depth, crop, crop), "")]
            if spacing is not None:
                resampled, reached = resample_hu(hu, spacing)
                what = f"resampled from {'x'.join(f'{s:.3g}' for s in spacing)} mm to {'x'.join(f'{s:.3g}' for s in reached)} mm voxels, "
                variants.append((f"{name} volume{suffix} {RESAMPLED_MM:g} mm", resampled, reached, (depth, crop, crop), what))
            for set_name, volume_hu, vox, want, what in variants:
                clean = window_hu(volume_hu, DEFAULT_HU_WINDOW)
                item = noisy_item(label, clean, source, True, vox, set_name, 0)
                index = central_crop_index(clean.shape, (max(2, want[0]), max(2, want[1]), max(2, want[2])))
                shape = "x".join(str(s.stop - s.start) for s in index)
                sample = Sample(f"{label}_{shape}", item, index)
                description = (
                    f"{what}{clean.shape[0]} slices of {clean.shape[1]}x{clean.shape[2]}; central crop {shape} (DxHxW), "
                    "noise and prior on the whole series"
                )
                sets.append(TestSet(set_name, "volume", dataset, description, [sample]))
    return sets, paths


# =============================================================================================== models


def model_levels(config):
    """``("blind", (lo, hi))`` or ``("level", noise)`` from a model's embedded config."""
    noise_range = config.get("noise_range")
    if noise_range:
        return "blind", (float(noise_range[0]), float(noise_range[1]))
    return "level", (None if config.get("noise") is None else float(config["noise"]))


def applies_at(config, sigma):
    if (config.get("noise_model") or "gaussian") != "gaussian":
        return False  # trained for another noise (simulated low dose): studies/lowdose_quality.py scores it
    kind, value = model_levels(config)
    if kind == "blind":
        return value[0] - 1e-9 <= sigma <= value[1] + 1e-9
    return value is not None and math.isclose(value, sigma, rel_tol=1e-6)


def trained_on(config, test_files):
    """The test paths that the model's training or validation data name (themselves or a folder above)."""
    leaks = []
    tests = [Path(p).resolve() for p in test_files]
    for entry in list(config.get("data") or []) + list(config.get("validation_data") or []):
        used = (REPO / entry).resolve() if not Path(entry).is_absolute() else Path(entry).resolve()
        leaks += [str(t) for t in tests if t == used or used in t.parents or t in used.parents]
    return sorted(set(leaks))


def select_models(paths, test_files, two_d_only=False):
    """``[(path, config)]`` of the models to assess, and notes on those skipped."""
    from models.storage import read_config

    if paths is None:
        paths = sorted((REPO / "trained_models").glob("*.keras"))
    chosen, notes = [], []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise SystemExit(f"error: {path}: no such model file")
        config = read_config(path)
        leaks = trained_on(config, test_files)
        if leaks:
            notes.append(f"{path.name} skipped: trained or validated on test data ({leaks[0]}{', ...' if len(leaks) > 1 else ''})")
        elif config.get("ndim") not in (2, 3):
            notes.append(f"{path.name} skipped: its config records no ndim")
        elif (config.get("noise_model") or "gaussian") != "gaussian":
            notes.append(f"{path.name} skipped: trained on {config['noise_model']} noise, not Gaussian (studies/lowdose_quality.py scores it)")
        elif two_d_only and config.get("ndim") != 2:
            notes.append(f"{path.name} skipped: --quick assesses 2D models only")
        elif model_levels(config)[1] is None:
            notes.append(f"{path.name} skipped: its config records neither noise nor noise_range")
        else:
            chosen.append((path, config))
    return chosen, notes


# ============================================================================================== scoring


def file_sha256(path, _memo={}):
    path = Path(path).resolve()
    if path not in _memo:
        _memo[path] = hashlib.sha256(path.read_bytes()).hexdigest()
    return _memo[path]


def cache_key(test_set, samples, sigma, method):
    """What a (set, level, method) result depends on, and its hash: data, crops, seed, level, method settings.

    Baselines are named by their solver arguments, models by their file's SHA-256, pass, tiling and the
    precision they ran in (a mixed-precision file runs in float32 where bfloat16 is not native,
    ``models.precision``, and its outputs differ by up to about 0.1 dB).
    """
    from models.precision import is_mixed
    from utils.application.assessment import ModelMethod

    record = {
        "version": CACHE_VERSION,
        "set": test_set.name,
        "description": test_set.description,
        "samples": [[s.name, list(s.clean.shape), round(float(s.clean.sum(dtype="float64")), 3)] for s in samples],
        "seed": SEED,
        "sigma": round(float(sigma), 6),
        "method": method.name,
    }
    if isinstance(method, ModelMethod):
        record.update(model_sha256=file_sha256(method.path), self_ensemble=method.self_ensemble, tile_shape=method.tile_shape,
                      compute_dtype="mixed_bfloat16" if is_mixed(method.model) else "float32")
    else:
        record["params"] = {k: (round(v, 8) if isinstance(v, float) else v) for k, v in sorted(method.params.items())}
    text = json.dumps(record, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32], record


def run(sets, levels, models, quick=False, tuned_dir="results/tuned", cache=None, reuse=True):
    """Every applicable method on every set and level -> the report's ``sets``, ``rows``, ``methods``, ``notes``.

    With ``cache`` (a folder), each (set, level, method)'s per-sample records are stored there under
    :func:`cache_key`; with ``reuse`` they are read back instead of recomputed when the key matches.
    """
    import numpy as np

    from utils.base.atomic import write_json

    from models.storage import load_model
    from utils.application import assessment

    loaded = {}
    rows, methods_used, notes, timings = [], {}, [], []

    def model_method(path, config, ndim, self_ensemble):
        if path not in loaded:
            loaded[path] = load_model(path)[0]
        name = path.stem + (SE_SUFFIX if self_ensemble else "")
        return assessment.ModelMethod(path, loaded[path], config, name=name, tile_shape="auto" if ndim == 3 else None, self_ensemble=self_ensemble)

    for sigma in levels:
        for test_set in sets:
            ndim = 2 if test_set.kind == "slices" else 3
            # --quick leaves BM3D off volumes: the bm3d package costs about a second per call whatever the size.
            names = ["noisy", "tv"] + (["bm3d"] if ndim == 2 or not quick else []) + (["spade", "bm4d"] if ndim == 3 else [])
            methods = []
            for name in names:
                if name == "noisy":
                    methods.append(assessment.BaselineMethod("noisy"))
                elif name in ("bm3d", "bm4d"):
                    methods.append(assessment.BaselineMethod(name, {"sigma": float(sigma)}, "true sigma"))
                elif quick:
                    methods.append(assessment.BaselineMethod(name, {"sigma": float(sigma)}, "solver defaults for the true sigma (--quick)"))
                else:
                    methods += assessment.baseline_methods([name], sigma, sample_ndim=ndim, tuned_dir=tuned_dir, progress=False)
            for path, config in models:
                model_ndim = int(config["ndim"])
                # ResPrU-Net's prior is made of neighbouring slices: it runs on the volume sets only.
                needs_neighbours = config.get("model") == "resprunet" and ndim == 2
                if model_ndim <= ndim and applies_at(config, sigma) and not needs_neighbours:
                    methods += [model_method(path, config, model_ndim, se) for se in (False, True)]
            samples = at_level(test_set, sigma)
            keys = {method.name: cache_key(test_set, samples, sigma, method) for method in methods}
            found = {}
            for method in methods:
                entry = Path(cache) / f"{keys[method.name][0]}.json" if cache is not None else None
                if reuse and entry is not None and entry.is_file():
                    stored = json.loads(entry.read_text())
                    if stored.get("key") == keys[method.name][1]:
                        found[method.name] = stored["records"]
            to_run = [m for m in methods if m.name not in found]
            begun = time.monotonic()
            evaluation = assessment.evaluate(to_run, samples, progress=False) if to_run else None
            timings.append({"set": test_set.name, "noise": sigma, "seconds": round(time.monotonic() - begun, 1),
                            "computed": len(to_run), "reused": len(found)})
            for method in methods:
                reused = method.name in found
                records = found[method.name] if reused else [r for r in evaluation.records if r["method"] == method.name]
                if cache is not None and not reused:
                    write_json(Path(cache) / f"{keys[method.name][0]}.json",
                               {"key": keys[method.name][1], "records": records, "describe": method.describe(),
                                "computed_at": time.strftime("%Y-%m-%d %H:%M:%S"), "load_average": list(os.getloadavg())})
                is_model = isinstance(method, assessment.ModelMethod)
                rows.append({
                    "set": test_set.name,
                    "kind": test_set.kind,
                    "noise": float(sigma),
                    "method": method.name,
                    "learned": is_model,
                    "self_ensemble": bool(getattr(method, "self_ensemble", False)),
                    "psnr": round(float(np.mean([r["psnr"] for r in records])), 4),
                    "ssim": round(float(np.mean([r["ssim"] for r in records])), 5),
                    "seconds": round(float(np.mean([r["seconds"] for r in records])), 4),
                    "n": len(records),
                    "reused": reused,
                    "samples": {r["sample"]: {"psnr": round(r["psnr"], 4), "ssim": round(r["ssim"], 5), "seconds": round(r["seconds"], 4)} for r in records},
                })
                key = f"{method.name} @ {sigma:g} ({test_set.kind})"
                methods_used.setdefault(key, method.describe())
            print(f"  {test_set.name}, sigma {sigma:g}: {len(to_run)} methods run, {len(found)} reused, {timings[-1]['seconds']:.0f} s", flush=True)
    described = [{"name": s.name, "kind": s.kind, "dataset": s.dataset, "description": s.description, "samples": [x.name for x in s.samples]} for s in sets]
    return {"levels": [float(s) for s in levels], "sets": described, "rows": rows, "methods": methods_used,
            "models": [{"file": str(p.relative_to(REPO) if p.is_relative_to(REPO) else p), "ndim": c.get("ndim"),
                        "levels": describe_levels(c)} for p, c in models],
            "timings": timings, "notes": notes, "cache": None if cache is None else str(cache), "reuse": bool(reuse)}


def describe_levels(config):
    kind, value = model_levels(config)
    return f"blind, sigma {value[0]:g}-{value[1]:g}" if kind == "blind" else f"sigma {value:g} only"


def headline(report):
    """Per set, level and pass (single / self-ensemble): the best learned model against the classical methods."""
    out = []
    for test_set in report["sets"]:
        for sigma in report["levels"]:
            rows = [r for r in report["rows"] if r["set"] == test_set["name"] and r["noise"] == sigma]
            classical = {r["method"]: r["psnr"] for r in rows if not r["learned"]}
            for self_ensemble in (False, True):
                learned = [r for r in rows if r["learned"] and r["self_ensemble"] == self_ensemble]
                best = max(learned, key=lambda r: r["psnr"]) if learned else None
                entry = {"set": test_set["name"], "noise": sigma, "pass": "self-ensemble" if self_ensemble else "single",
                         "best": best["method"] if best else None, "psnr": best["psnr"] if best else None,
                         "ssim": best["ssim"] if best else None}
                for method in ("bm3d", "bm4d", "tv", "spade"):
                    entry[f"{method}_psnr"] = classical.get(method)
                    entry[f"minus_{method}"] = round(best["psnr"] - classical[method], 3) if best and method in classical else None
                out.append(entry)
    return out


def goals(report):
    lines = headline(report)
    single = [h for h in lines if h["pass"] == "single" and h["best"]]
    missing = [f"{h['set']} at {h['noise']:g}" for h in lines if h["pass"] == "single" and not h["best"]]
    note = f"no learned model at: {', '.join(missing)}" if missing else ""

    def least(key, entries):
        values = [h[key] for h in entries if h[key] is not None]
        return round(min(values), 3) if values else None

    bm3d = least("minus_bm3d", single)
    volumes = [h for h in single if h["bm4d_psnr"] is not None]
    bm4d = least("minus_bm4d", volumes)
    resampled = [r for r in report["rows"] if r["set"].endswith(f"{RESAMPLED_MM:g} mm")]
    tv = {(r["set"], r["noise"]): r["psnr"] for r in resampled if r["method"] == "tv"}
    below = [round(r["psnr"] - tv[(r["set"], r["noise"])], 3) for r in resampled if r["learned"] and not r["self_ensemble"]]
    worst = min(below) if below else None
    best_3mm = least("minus_tv", [h for h in single if h["set"].endswith(f"{RESAMPLED_MM:g} mm")])
    return {
        "beats_bm3d": goal("best learned model (single pass) above BM3D with the true sigma on every set and level", bm3d,
                           None if bm3d is None else (bm3d > 0 and not missing), note),
        "beats_bm4d": goal("best learned model (single pass) above BM4D with the true sigma on every volume and level", bm4d,
                           None if bm4d is None else (bm4d > 0 and not missing), note),
        "none_below_tv_3mm": goal(f"no learned model (single pass) below TV on the {RESAMPLED_MM:g} mm volume, any level", worst,
                                  None if worst is None else worst >= 0),
        "best_above_tv_3mm": goal(f"best learned model (single pass) above TV on the {RESAMPLED_MM:g} mm volume at every level", best_3mm,
                                  None if best_3mm is None else (best_3mm > 0 and not missing), note),
    }


# ============================================================================================== output


def _f(value, digits=2, sign=False):
    if value is None:
        return "-"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def headline_rows(report):
    return [
        [h["set"], f"{h['noise']:g}", h["pass"], h["best"] or "(none)", _f(h["psnr"]), _f(h["minus_bm3d"], sign=True),
         _f(h["minus_bm4d"], sign=True), _f(h["minus_tv"], sign=True)]
        for h in headline(report)
    ]


HEADLINE_HEADER = ["set", "sigma", "pass", "best learned model", "PSNR dB", "vs BM3D", "vs BM4D", "vs TV"]


def set_rows(report, set_name, sigma):
    return [
        [r["method"], _f(r["psnr"]), _f(r["ssim"], 4), _f(r["seconds"], 2)]
        for r in report["rows"] if r["set"] == set_name and r["noise"] == sigma
    ]


def print_tables(report):
    rows = [[r["set"], f"{r['noise']:g}", r["method"], _f(r["psnr"]), _f(r["ssim"], 4), _f(r["seconds"], 2)] for r in report["rows"]]
    print(text_table(["set", "sigma", "method", "PSNR dB", "SSIM", "s/sample"], rows))
    print()
    print(text_table(HEADLINE_HEADER, headline_rows(report)))
    for name, record in report["goals"].items():
        print(f"goal {name}: {record['status']} ({record['value']}) - {record['target']}")


def markdown(report):
    machine = report["machine"]
    lines = [
        "# Real CT: learned models against classical methods on held-out patients",
        "",
        f"`{report['command'].strip()}`: {report['minutes']:.1f} min wall clock, {report['cpu_minutes']:.1f} CPU minutes, on {machine.get('cpu_model')}, "
        f"{machine.get('usable_cpus')} usable CPUs, commit {machine.get('git_commit')}"
        + (" (**--quick smoke run: tiny crops, untuned TV/SPADE; not results**)" if report["quick"] else "") + ".",
        "",
        "## Protocol",
        "",
        f"- **Test data**: the TEST patients of the clean datasets in the patient-level split `{report['split_file']}` "
        "(`utils.data.real_ct_split`); no training patient is read. Models trained or validated on a test path are skipped.",
        f"- **Noise**: Gaussian, sigma {', '.join(f'{s:g}' for s in report['levels'])} on the [0, 1] scale of the "
        f"[-1000, 400] HU window, not clipped; one standard-normal field per image from "
        f"`numpy.random.default_rng([{report['seed']}, crc32(set name), i])`, scaled for each level.",
        "- **Metrics**: `utils.data.metrics` PSNR and SSIM, data range 1, estimates not clipped (SSIM of a volume: mean over "
        "its slices); seconds: wall clock per sample (per image, or per volume) after untimed warm-up calls "
        "(`utils.application.assessment.evaluate`), neighbour prior excluded.",
        "- **Classical methods**: TV (and SPADE, volumes only: its prior needs neighbouring slices) with the toolkit's "
        "parameters for each level (`utils.application.assessment.baseline_methods`, provenance below); BM3D slice by slice and "
        "BM4D (volumes only), both given the true sigma.",
        "- **Learned models**: a per-level model only at its own level, a blind model (config `noise_range`) at every "
        "level in its range; 2D models on slices and slice by slice on volumes, 3D models on volumes only "
        "(`tile_shape=\"auto\"`); `+SE`: the flip self-ensemble (`models.predict(..., self_ensemble=True)`, "
        "4 flips in 2D, 8 in 3D).",
        "- **Sets** (a series that is not contiguous, like the gantry-tilt head series with its irregular gaps, is "
        "scored as slices, not as a volume):",
    ]
    for s in report["sets"]:
        lines.append(f"  - `{s['name']}` ({s['dataset']}): {s['description']}.")
    lines.append("- **Models**: " + "; ".join(f"`{m['file']}` ({m['ndim']}D, {m['levels']})" for m in report["models"]) + ".")
    reused = sum(r["reused"] for r in report["rows"])
    method_minutes = sum(r["seconds"] * r["n"] for r in report["rows"]) / 60
    lines.append(f"- **Method time**: {method_minutes:.1f} min of wall clock summed over every (set, level, method) result, "
                 "reused ones included (tuning, warm-up calls and data loading not counted).")
    if reused:
        lines.append(f"- **Reused**: {reused} of {len(report['rows'])} (set, level, method) results, seconds included, were read from "
                     f"`{Path(report['cache']).name}/` (`--cache`), written by an earlier run of this script with the same data, "
                     "crops, seed, level and method settings (models by file SHA-256); `--no-reuse` recomputes them.")
    for note in report["notes"]:
        lines.append(f"- Note: {note}")
    lines += ["", "## Headline", "",
              "Best learned model per set, level and pass, and its PSNR margin (dB) over BM3D, BM4D and TV "
              "(positive: the learned model is better).", "",
              *markdown_table(HEADLINE_HEADER, headline_rows(report), "lrllrrrr"), "", "## Goals", ""]
    for record in report["goals"].values():
        lines.append(f"- {record['target']}: **{record['status']}** (value {record['value']}){' - ' + record['note'] if record.get('note') else ''}")
    lines += ["", "## Results per set and level", ""]
    for s in report["sets"]:
        for sigma in report["levels"]:
            n = next((r["n"] for r in report["rows"] if r["set"] == s["name"] and r["noise"] == sigma), 0)
            lines += [f"### {s['name']}, sigma {sigma:g} ({n} {'images' if s['kind'] == 'slices' else 'volume'})", "",
                      *markdown_table(["method", "PSNR dB", "SSIM", "s/sample"], set_rows(report, s["name"], sigma), "lrrr"), ""]
    lines += ["## Method parameters", ""]
    for key, text in report["methods"].items():
        lines.append(f"- **{key}**: {text}")
    lines += ["", "## Time per set and level", "",
              "Wall-clock seconds of this run per set and level (methods computed now; reused ones cost nothing here).", "",
              *markdown_table(["set", "sigma", "seconds", "methods computed", "reused"],
                              [[t["set"], f"{t['noise']:g}", f"{t['seconds']:.0f}", t["computed"], t["reused"]] for t in report["timings"]], "lrrrr"), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
