"""Regenerate every assessment figure in figures/ and the results tables of docs/results.md with one command.

    python3 figures/make_figures.py --real-ct path/to/real_ct        # phantoms and real CT
    python3 figures/make_figures.py                                 # embedded phantoms only

Runs the three assessment demos with their default settings, as a user would, on the embedded
phantom test set and (with ``--real-ct``) on the held-out real CT series, copies their figures here
and writes the tables of every run into ``figures/RESULTS.md`` and between the ``results`` markers
of ``docs/results.md`` (with the table of shipped models, from their records in ``trained_models/``). ``--real-ct`` is a folder holding ``series_crlm_abdomen_dicom`` (the TCIA
Colorectal-Liver-Metastases series, see ``trained_models/README.md``) and, for the realism figure,
``slices_lidc_chest_dicom`` and ``slices_msd_lung_png``.

Each demo runs in its own process; run folders go to ``results/figures/<run>/``. On 2 CPU cores
the whole set takes about 16 minutes (BM3D, BM4D and, on a first run, the baseline tuning dominate).
``--only`` with no name runs nothing and refreshes the shipped-models table alone (after a new model
is shipped); the assessment tables are only rewritten from run folders that exist.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if __name__ == "__main__" and not __package__:  # run by path: re-run as python3 -m figures.<name>
    os.execv(sys.executable, [sys.executable, "-m", f"figures.{Path(__file__).stem}", *sys.argv[1:]])

from utils.application.assessment import read_metrics_csv, summarise, summary_table  # noqa: E402
from utils.base.atomic import write_text  # noqa: E402
from utils.base.defaults import MULTISCALE_MODELS  # noqa: E402

FIGURES = REPO / "figures"
RESULTS_SECTION = "results"
MODELS_SECTION = "shipped-models"
MODELS_DIR = REPO / "trained_models"
REAL_SERIES = "series_crlm_abdomen_dicom"


def runs(real_ct):
    """(name, title, command arguments, {demo figure: figure name here}) of every assessment run."""
    datasets = [("phantom", "embedded phantom test set", [])]
    if real_ct:
        datasets.append(("real", "real CT not seen in training (TCIA CRLM series)", ["--data", str(Path(real_ct) / REAL_SERIES)]))
    planned = []
    for data_name, data_title, data_args in datasets:
        for noise in (0.02, 0.05):
            planned.append((
                f"assess2d_{data_name}_noise{noise:g}",
                f"2D models on slices, {data_title}, {noise * 100:g} % noise",
                ["Demo_assess_2D_learning_methods.py", "--noise", f"{noise:g}", *data_args],
                {"comparison.png": f"assess2d_{data_name}_noise{noise:g}.png"},
            ))
        planned.append((
            f"assess3d_{data_name}_noise0.05",
            f"3D and 2D models on volumes, {data_title}, 5 % noise",
            ["Demo_assess_3D_learning_methods.py", "--noise", "0.05", *data_args],
            {"views.png": f"assess3d_{data_name}_noise0.05.png"},
        ))
        # The same models at 5 % with the flip self-ensemble, against BM3D on the very same slices.
        ensembles = (
            ("assess2d", "2D models on slices with the flip self-ensemble (4 flips)", "Demo_assess_2D_learning_methods.py"),
            ("assess3d", "3D and 2D models on volumes with the flip self-ensemble (8 and 4 flips)", "Demo_assess_3D_learning_methods.py"),
        )
        for prefix, what, demo in ensembles:
            planned.append((
                f"{prefix}_{data_name}_noise0.05_self_ensemble",
                f"{what} against BM3D, {data_title}, 5 % noise",
                [demo, "--noise", "0.05", "--self-ensemble", "--methods", "noisy,bm3d", *data_args],
                {},
            ))
    planned.append((
        "assess_variational_phantom",
        "Variational and classical methods on volumes, embedded phantom test set",
        ["Demo_assess_variational_methods.py"],
        {f"comparison_noise{n:g}.png": f"variational_phantom_noise{n:g}.png" for n in (0.02, 0.05, 0.1)}
        | {"convergence.png": "variational_convergence.png"},
    ))
    return planned


def run_demo(arguments, out):
    started = time.monotonic()
    command = [sys.executable, *arguments, "--out", str(out)]
    print("==", " ".join(command), flush=True)
    subprocess.run(command, cwd=REPO, check=True)
    return time.monotonic() - started


def results_markdown(sections, figures_prefix):
    """One block per run: its table per noise level, where it came from, and its figures."""
    lines = []
    for title, metrics_path, minutes, figure_names in sections:
        for noise, stats in summarise(read_metrics_csv(metrics_path)).items():
            heading = title if "% noise" in title else f"{title}, {noise * 100:g} % noise"
            lines += [f"#### {heading}", "", summary_table(stats), ""]
        lines += [f"<sub>`{metrics_path.relative_to(REPO)}`; the demo took {minutes:.1f} min on this machine</sub>", ""]
        lines += [f"![{title}]({figures_prefix}{name})" for name in figure_names] + [""]
    return "\n".join(lines)


def shipped_models_markdown():
    """A row per shipped model: what, at which noise, on what data, how long, how good on validation."""
    lines = ["| model file | architecture | noise | trained on | minutes | epochs | best validation PSNR / SSIM |", "|---|---|---:|---|---:|---:|---:|"]
    for record_path in sorted(MODELS_DIR.glob("*.run.json")):
        stem = record_path.name[: -len(".run.json")]
        record = json.loads(record_path.read_text())
        settings = json.loads((MODELS_DIR / f"{stem}.config.json").read_text())["settings"]
        summary = record["summary"]
        architecture = f"{settings['ndim']}D {settings['model']}, {settings['filters']} filters"
        if settings["model"] in MULTISCALE_MODELS:
            architecture += f", depth {settings['depth']}"
        lines.append(
            f"| `{stem}.keras` | {architecture} | {_noise_description(settings)} | {_data_description(settings)} | "
            f"{summary['minutes']:.1f} | {summary['epochs_completed']} | {summary['val_psnr']:.2f} dB / {summary['val_ssim']:.3f} |"
        )
    return "\n".join(lines)


def _noise_description(settings):
    if settings.get("noise_model") == "ct_lowdose":
        doses = settings.get("dose_range") or [settings["dose"]]
        return "low-dose CT, dose " + "-".join(f"{d:g}" for d in doses)
    if settings.get("noise_range"):
        low, high = settings["noise_range"]
        return f"blind, {low * 100:g}-{high * 100:g} %"
    return f"{settings['noise'] * 100:g} %"


def _data_description(settings):
    real = [path for path in settings["data"] if not Path(path).as_posix().startswith("data/phantom")]
    data = f"phantoms + {len(real)} real data path{'s' if len(real) > 1 else ''}" if real else "phantoms"
    if real and settings.get("balance_data"):
        data += " (balanced)"
    if settings.get("zoom_range"):
        data += ", zoom {:g}-{:g}".format(*settings["zoom_range"])
    if settings.get("window_augmentation"):
        data += ", window augmentation"
    if settings.get("init_model"):
        data += f"; fine-tuned from `{Path(settings['init_model']).name}`"
    return data


def replace_between_markers(text, section, body):
    start, end = f"<!-- {section}:start -->", f"<!-- {section}:end -->"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise SystemExit(f"error: docs/results.md has no {start} ... {end} section to fill")
    return pattern.sub(lambda _: f"{start}\n{body}\n{end}", text)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real-ct", type=Path, help="folder with the public real CT (see trained_models/README.md); omitted: phantoms only")
    parser.add_argument("--runs-dir", type=Path, default=REPO / "results" / "figures", help="where the demos write their run folders")
    parser.add_argument("--only", nargs="*", help="run only these runs (names as in the printed list)")
    args = parser.parse_args()
    if args.real_ct and not (args.real_ct / REAL_SERIES).is_dir():
        raise SystemExit(f"error: {args.real_ct} has no {REAL_SERIES} folder")

    planned = runs(args.real_ct)
    known = [name for name, *_ in planned] + (["phantom_realism"] if args.real_ct else [])
    unknown = sorted(set(args.only or ()) - set(known))
    if unknown:
        raise SystemExit(f"error: --only {' '.join(unknown)}: no such run; choose from {', '.join(known)}")

    sections = []
    for name, title, arguments, figure_map in planned:
        out = args.runs_dir / name
        if args.only is None or name in args.only:
            minutes = run_demo(arguments, out) / 60
            (out / "minutes.txt").write_text(f"{minutes:.2f}\n")
            for produced, kept in figure_map.items():
                shutil.copyfile(out / produced, FIGURES / kept)
        if (out / "metrics.csv").exists():
            minutes = float((out / "minutes.txt").read_text()) if (out / "minutes.txt").exists() else float("nan")
            kept = [name for name in figure_map.values() if (FIGURES / name).exists()]
            sections.append((title, out / "metrics.csv", minutes, kept))

    if args.real_ct and (args.only is None or "phantom_realism" in args.only):
        subprocess.run([sys.executable, "-m", "studies.phantom_realism", "--real", str(args.real_ct)], cwd=REPO, check=True)

    results_page = REPO / "docs" / "results.md"
    text = results_page.read_text(encoding="utf-8")
    if sections:
        header = "# Assessment results\n\nMade by `python3 figures/make_figures.py`.\n\n"
        write_text(FIGURES / "RESULTS.md", header + results_markdown(sections, figures_prefix=""))
        text = replace_between_markers(text, RESULTS_SECTION, results_markdown(sections, "../figures/"))
        print(f"wrote {FIGURES / 'RESULTS.md'}")
    else:  # `--only` with no run, or no run folders on this machine: keep the results as they are
        print(f"no demo results under {args.runs_dir}: {FIGURES / 'RESULTS.md'} and the assessment section are kept")
    write_text(results_page, replace_between_markers(text, MODELS_SECTION, shipped_models_markdown()))
    print(f"wrote the shipped-models table of {results_page}")


if __name__ == "__main__":
    main()
