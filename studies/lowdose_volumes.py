"""Simulated low dose on a real test VOLUME: the 2D and 3D ct_lowdose models against BM3D and BM4D.

    python3 -m studies.lowdose_volumes                  # about 27 minutes on 2 CPU cores
    python3 -m studies.lowdose_volumes --quick --out /tmp/x   # smoke run: an 8 x 48 x 48 block, dose 0.25

Data: the contiguous clean TEST series of the committed patient split (``data/real_ct_split.json``; the TCIA
Colorectal-Liver-Metastases series: 41 slices of 512 x 512, 0.8 x 0.8 x 5 mm). Every whole slice gets the
REFERENCE low-dose form at each dose of ``DOSES`` (``utils.application.samples.add_lowdose_noise``: radon
over 360 views, Poisson + electronic noise, ramp FBP, at the slice's own spacing; seeded by ``SEED``), the
neighbour prior is made on the whole noisy series, and the central ``DEPTH`` x ``CROP`` x ``CROP`` block is
scored (``utils.application.samples.volume_samples``; PSNR and SSIM of ``utils.application.scoring``, data
range 1 on the [-1000, 400] HU window; seconds per block after untimed warm-up calls).

Methods:

* ``noisy``: the input;
* ``bm3d_est`` (slice by slice) and ``bm4d_est``: sigma = ``utils.data.noise_level.estimate_scan_sigma``
  of the noisy block, as ``Denoise_CT.py --noise auto`` does;
* ``bm3d_tuned`` and ``bm4d_tuned``: sigma = m x that estimate, m the value of ``MULTIPLIERS`` with the
  highest PSNR on this block (chosen on the test block itself: an oracle, an upper bound for BM3D/BM4D; the
  white-noise estimate under-reads the correlated low-dose noise);
* the shipped models of ``MODEL_STEMS`` found in ``--models-dir``: the Gaussian blind ones (``unet2d_blind``,
  ``resprunet3d_blind``) and the ones trained with ``--noise-model ct_lowdose`` (``unet2d_lowdose``,
  ``resprunet3d_lowdose``); 2D models slice by slice, 3D models tile by tile (``tile_shape="auto"``); ``+SE``:
  the flip self-ensemble of the ct_lowdose models.

Writes ``studies/RESULTS_lowdose_volumes.md`` and ``.json`` (atomically; with ``--out DIR`` both go to DIR).
"""

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if __name__ == "__main__" and not __package__:  # run by path: re-run as python3 -m studies.<name>
    os.execv(sys.executable, [sys.executable, "-m", f"studies.{Path(__file__).stem}", *sys.argv[1:]])
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from benchmarks.common import describe_machine, markdown_table  # noqa: E402
from studies.lowdose_quality import DOSES, SEED, WINDOW  # noqa: E402  (the slice study's doses and noise seed)

DEPTH, CROP = 24, 256
QUICK_DEPTH, QUICK_CROP = 8, 48  # BM4D needs at least 8 slices (its block)
MULTIPLIERS = (1.0, 1.5, 2.0, 2.5)
MODEL_STEMS = ("unet2d_blind", "unet2d_lowdose", "resprunet3d_blind", "resprunet3d_lowdose")
SELF_ENSEMBLE_STEMS = ("unet2d_lowdose", "resprunet3d_lowdose")
OUT_MD = REPO / "studies" / "RESULTS_lowdose_volumes.md"
OUT_JSON = REPO / "studies" / "RESULTS_lowdose_volumes.json"


def clean_test_volumes(root, quick):
    """The contiguous clean test series of the split (windowed ``CTVolume``s of at least 2 slices).

    ``quick``: the first one only, cut to its central slices and twice the quick crop in plane before any
    simulation (the reference form takes seconds per whole slice).
    """
    import dataclasses

    from utils.application.samples import central_crop_index
    from utils.data.readers import read_ct
    from utils.data.real_ct_split import test_paths

    volumes = []
    for path in test_paths(root, kinds=("clean",)):
        volumes += [v for v in read_ct(path, WINDOW) if v.contiguous and v.array.shape[0] >= 2]
    if quick and volumes:
        index = central_crop_index(volumes[0].array.shape, (QUICK_DEPTH, 2 * QUICK_CROP, 2 * QUICK_CROP))
        volumes = [dataclasses.replace(volumes[0], array=volumes[0].array[index])]
    return volumes


def scaled_estimate_method(solver, multiplier):
    """BM3D or BM4D given ``multiplier`` times the noise sigma estimated on each noisy sample, named ``bm3d_x1.5``."""
    from utils.application.methods import BaselineMethod
    from utils.solvers.methods import run_classical

    class ScaledEstimate(BaselineMethod):
        def _estimate(self, sample):
            return multiplier * super()._estimate(sample)

        def _run(self, noisy, prior, sigma=None, **overrides):
            return run_classical(solver, noisy, prior, sigma=sigma)

    method = ScaledEstimate(solver, estimate_sigma=True)
    method.name = f"{solver}_x{multiplier:g}"
    return method


def model_methods(folder):
    """``ModelMethod``s of the ``MODEL_STEMS`` found in ``folder`` (and ``+SE`` ones), and notes on the absent."""
    from utils.application.methods import load_model_method

    methods, notes = [], []
    for stem in MODEL_STEMS:
        path = Path(folder) / f"{stem}.keras"
        if not path.is_file():
            notes.append(f"{path} is absent: {stem} is not in the comparison")
            continue
        passes = (False, True) if stem in SELF_ENSEMBLE_STEMS else (False,)
        for ensemble in passes:
            method = load_model_method(path, allowed_ndims=(2, 3), name=stem + ("+SE" if ensemble else ""), self_ensemble=ensemble)
            method.tile_shape = "auto" if method.ndim == 3 else None
            methods.append(method)
    return methods, notes


def study_dose(volumes, dose, models, quick):
    """Every method on the central blocks of ``volumes`` at ``dose``: ``{method: {psnr, ssim, seconds}}`` and the tuning."""
    from utils.application.methods import BaselineMethod
    from utils.application.samples import add_lowdose_noise, volume_samples
    from utils.application.scoring import evaluate

    started = time.perf_counter()
    noisy = add_lowdose_noise(volumes, dose, seed=SEED)
    print(f"dose {dose:g}: simulated {len(noisy)} volume(s) in {time.perf_counter() - started:.0f} s", flush=True)
    depth, crop = (QUICK_DEPTH, QUICK_CROP) if quick else (DEPTH, CROP)
    samples = volume_samples(noisy, max_depth=depth, max_size=crop)
    multipliers = MULTIPLIERS[:2] if quick else MULTIPLIERS
    classical = [scaled_estimate_method(name, m) for name in ("bm3d", "bm4d") for m in multipliers]
    records = evaluate([BaselineMethod("noisy")] + classical + models, samples).records

    def mean(method, key):
        return float(np.mean([r[key] for r in records if r["method"] == method]))

    table = {"noisy": {}}
    tuning = {}
    for name in ("bm3d", "bm4d"):
        scores = {m: mean(f"{name}_x{m:g}", "psnr") for m in multipliers}
        best = max(scores, key=scores.get)
        tuning[name] = {"best_multiplier": best, "psnr_by_multiplier": {f"{m:g}": scores[m] for m in multipliers}}
        table[f"{name}_est"], table[f"{name}_tuned"] = {"source": f"{name}_x1"}, {"source": f"{name}_x{best:g}"}
    for method in models:
        table[method.name] = {}
    for name, entry in table.items():
        source = entry.pop("source", name)
        entry.update(psnr=mean(source, "psnr"), ssim=mean(source, "ssim"), seconds=mean(source, "seconds"))
    return {
        "dose": dose, "samples": [s.name for s in samples], "methods": table, "tuning": tuning,
        "added_std_window": float(noisy[0].noise), "added_std_hu": float(noisy[0].noise) * (WINDOW[1] - WINDOW[0]),
        "sigma_estimates": [float(v) for v in classical[0].estimated_sigmas], "records": records,
    }


def fmt(value, digits=2, sign=False):
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def markdown(report):
    doses = [r["dose"] for r in report["results"]]
    lines = [
        "# Low-dose CT on a real test volume: 2D and 3D models against BM3D and BM4D",
        "",
        f"`python3 -m studies.lowdose_volumes{' --quick' if report['quick'] else ''}`; machine: {report['machine']['cpu_model']}, "
        f"{report['machine']['usable_cpus']} usable CPUs; commit {report['machine']['git_commit']}; "
        f"{report['seconds'] / 60:.1f} min. Protocol: `studies/lowdose_volumes.py`'s docstring.",
        "",
        f"Volume(s): {', '.join(report['volumes'])}; scored block: {', '.join(report['results'][0]['samples'])}. "
        "`_est`: sigma estimated on the noisy block; `_tuned`: that estimate times the best multiplier on this block (an oracle).",
        "",
    ]
    methods = list(report["results"][0]["methods"])
    header = ["method"] + [f"{label} at dose {d:g}" for d in doses for label in ("PSNR dB", "SSIM", "s")]
    header += [f"vs BM3D tuned, dose {d:g}" for d in doses] + [f"vs BM4D tuned, dose {d:g}" for d in doses]
    rows = []
    for method in methods:
        row = [method]
        for result in report["results"]:
            entry = result["methods"][method]
            row += [fmt(entry["psnr"]), fmt(entry["ssim"], 4), fmt(entry["seconds"], 1)]
        for reference in ("bm3d_tuned", "bm4d_tuned"):
            row += [fmt(r["methods"][method]["psnr"] - r["methods"][reference]["psnr"], sign=True) for r in report["results"]]
        rows.append(row)
    lines += markdown_table(header, rows, "l" + "r" * (len(header) - 1)) + [""]
    for result in report["results"]:
        tuning = "; ".join(
            f"{name.upper()} multiplier {t['best_multiplier']:g} (PSNR per multiplier: "
            + ", ".join(f"{m}: {p:.2f}" for m, p in t["psnr_by_multiplier"].items()) + ")"
            for name, t in result["tuning"].items()
        )
        lines.append(f"- dose {result['dose']:g}: added noise {result['added_std_hu']:.1f} HU (std in the body); {tuning}")
    lines += [""] + [f"- {note}" for note in report["notes"]] + ([""] if report["notes"] else [])
    return "\n".join(lines)


def main(argv=None):
    from utils.data.real_ct_split import DEFAULT_REAL_CT_ROOT

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"smoke run: a {QUICK_DEPTH} x {QUICK_CROP} x {QUICK_CROP} block, dose 0.25, 2 multipliers")
    parser.add_argument("--out", default="", help="folder for the RESULTS files (default: studies/)")
    parser.add_argument("--models-dir", default=str(REPO / "trained_models"), help="where the shipped models are")
    parser.add_argument("--real-ct-root", default=str(DEFAULT_REAL_CT_ROOT), help="the shared real_ct folder")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    out_md, out_json = (Path(args.out) / OUT_MD.name, Path(args.out) / OUT_JSON.name) if args.out else (OUT_MD, OUT_JSON)
    root = Path(args.real_ct_root)
    if not root.is_dir():
        raise SystemExit(f"error: {root} is absent: this study needs the shared real CT (its clean test series)")
    volumes = clean_test_volumes(root, args.quick)
    if not volumes:
        raise SystemExit(f"error: no contiguous clean test series under {root}")
    models, notes = model_methods(args.models_dir)
    print(f"{len(volumes)} test volume(s); methods: {', '.join(m.name for m in models) or 'no models'}", flush=True)
    results = [study_dose(volumes, dose, models, args.quick) for dose in (DOSES[:1] if args.quick else DOSES)]
    report = {
        "quick": args.quick, "seconds": time.perf_counter() - started, "notes": notes,
        "volumes": [Path(v.source).relative_to(root).as_posix() if Path(v.source).is_relative_to(root) else str(v.source) for v in volumes],
        "results": results,
        "settings": {"window": list(WINDOW), "seed": SEED, "multipliers": list(MULTIPLIERS), "depth": DEPTH, "crop": CROP,
                     "models_dir": str(args.models_dir)},
        "machine": describe_machine(),
    }
    from utils.base.atomic import write_json, write_text

    write_text(out_md, markdown(report))
    write_json(out_json, report)
    print(markdown(report))
    print(f"wrote {out_md} and {out_json}")


if __name__ == "__main__":
    main()
