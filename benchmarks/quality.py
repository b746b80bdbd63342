"""Quality of every method at 2, 5 and 10 % noise (PSNR, SSIM, error %, seconds), from the assessment demos.

    python3 benchmarks/quality.py                                  # --size small: phantom test split, cropped
    python3 benchmarks/quality.py --real-ct ../shared/data/real_ct/series_crlm_abdomen_dicom   # and real CT
    python3 benchmarks/quality.py --size tiny                      # CI smoke run: tiny phantoms, 5 % only
    python3 benchmarks/quality.py --size full                      # whole volumes, 8 slices per volume in 2D

For each dataset (the embedded phantom test split, and the real CT given with ``--real-ct``) the
three assessment demos run as subprocesses, each writing its own folder under ``--work-dir``:

* ``slices``: ``Demo_assess_2D_learning_methods.py`` at each noise level: noisy input, TV and
  BM3D on test slices, and the 2D models in ``trained_models/`` trained at that level;
* ``volumes``: ``Demo_assess_variational_methods.py`` (noisy, TV 3D, SPADE, BM3D slice by slice,
  BM4D) at all levels, and ``Demo_assess_3D_learning_methods.py`` at each level for the models in
  ``trained_models/`` (3D, and 2D slice by slice). Both get the same seed and the same crop of the
  same volumes, so their rows compare directly and no baseline runs twice.

Every demo uses parameters tuned on the validation phantoms (``--tuned-dir``, default
``results/tuned``, tuned on first use there: a one-off cost of minutes). ``--size tiny`` uses the
project's quick phantoms (``data/phantom_quick``) and tunes TV on their validation volume into the
work folder first, in seconds, so it never touches the full embedded dataset.

A demo that fails is recorded with its error and the others go on. Results: the mean and standard
deviation of every metric per (dataset, demo, noise, method), read from each demo's ``metrics.csv``,
in ``benchmarks/results/quality.json`` (atomically), beside the demos' own folders and summaries.
"""

import argparse
import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if __name__ == "__main__" and not __package__:  # run by path: re-run as python3 -m benchmarks.<name>
    os.execv(sys.executable, [sys.executable, "-m", f"benchmarks.{Path(__file__).stem}", *sys.argv[1:]])
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks.common import describe_machine, text_table  # noqa: E402

DEFAULT_OUT = REPO / "benchmarks" / "results" / "quality.json"
DEFAULT_WORK_DIR = REPO / "benchmarks" / "results" / "quality"
DEMO_2D = "Demo_assess_2D_learning_methods.py"
DEMO_3D = "Demo_assess_3D_learning_methods.py"
DEMO_VARIATIONAL = "Demo_assess_variational_methods.py"
DEMO = {"slices": DEMO_2D, "volumes": DEMO_VARIATIONAL, "volume_models": DEMO_3D}


@dataclasses.dataclass(frozen=True)
class Plan:
    noise_levels: tuple
    slice_methods: str  # baselines of the 2D demo
    volume_methods: str  # baselines of the variational demo
    slices_per_volume: int  # 2D demo (0: all)
    max_depth: int  # volume demos (0: all)
    max_size: int  # volume demos (0: whole slices)
    models: bool  # assess the models in trained_models/ (the 3D demo runs only then)
    timeout: float  # seconds per demo


PLANS = {
    "tiny": Plan((0.05,), "noisy,tv", "noisy,tv", 2, 8, 0, False, 300),
    "small": Plan((0.02, 0.05, 0.10), "noisy,tv,bm3d", "noisy,tv,spade,bm3d,bm4d", 2, 8, 128, True, 900),
    "full": Plan((0.02, 0.05, 0.10), "noisy,tv,spade,bm3d", "noisy,tv,spade,bm3d,bm4d", 8, 0, 0, True, 7200),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=tuple(PLANS), default="small")
    parser.add_argument(
        "--real-ct", nargs="+", type=Path, default=[], metavar="PATH", help="real CT (any input read_ct reads)"
    )
    parser.add_argument(
        "--tuned-dir", type=Path, help="tuned baseline parameters (default results/tuned; tiny: in --work-dir)"
    )
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR, help="the demos' output folders")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    plan = PLANS[args.size]
    work = args.work_dir.resolve()

    if args.size == "tiny":
        phantoms, tuned_dir = prepare_tiny(work, plan, args.tuned_dir)
        datasets = {"phantom": [str(p) for p in phantoms]}
    else:
        tuned_dir = args.tuned_dir or REPO / "results" / "tuned"
        datasets = {"phantom": []}  # the demos' default: the embedded phantom test split
    notes = []
    if args.real_ct:
        missing = [str(p) for p in args.real_ct if not p.exists()]
        if missing:
            notes.append(f"real CT not assessed: {', '.join(missing)} not found")
        else:
            datasets["real_ct"] = [str(p.resolve()) for p in args.real_ct]
    else:
        notes.append("real CT not assessed: no --real-ct given")

    started = time.monotonic()
    jobs = []
    for dataset, data in datasets.items():
        for demo, noise, arguments in demo_jobs(plan):
            name = f"{dataset}_{demo}_{noise.replace(',', '_')}"
            out = work / name
            command = [DEMO[demo], "--noise", noise, *arguments, "--tuned-dir", str(tuned_dir), "--out", str(out)]
            if data:
                command += ["--data", *data]
            jobs.append(run_demo(name, dataset, demo, command, out, plan.timeout))

    from utils.base.atomic import write_json

    report = {
        "benchmark": "quality",
        "size": args.size,
        "plan": dataclasses.asdict(plan),
        "datasets": {
            name: data or "embedded phantom test split (data/phantom/test)" for name, data in datasets.items()
        },
        "tuned_dir": str(tuned_dir),
        "notes": notes,
        "jobs": jobs,
        "rows": [row for job in jobs for row in job.pop("rows", [])],
        "seconds": round(time.monotonic() - started, 1),
        "machine": describe_machine(),
    }
    print()
    print(format_rows(report["rows"]))
    for note in notes:
        print(f"note: {note}")
    write_json(args.out, report)
    print(f"wrote {args.out}")
    return 0 if all("error" not in job for job in jobs) else 1


def demo_jobs(plan):
    """``(demo, noise levels, other arguments)`` of every demo run of a plan, for one dataset."""
    models = [] if plan.models else ["--models"]  # "--models" with no file: baselines only
    crop = ["--max-depth", str(plan.max_depth), "--max-size", str(plan.max_size)]
    levels = [f"{noise:g}" for noise in plan.noise_levels]
    jobs = [
        (
            "slices",
            level,
            ["--methods", plan.slice_methods, "--slices-per-volume", str(plan.slices_per_volume), *models],
        )
        for level in levels
    ]
    jobs.append(("volumes", ",".join(levels), ["--methods", plan.volume_methods, *crop]))
    if plan.models:
        # Models only: the baselines of these very volumes come from the variational demo above.
        jobs += [("volume_models", level, ["--methods", "noisy", *crop]) for level in levels]
    return jobs


def run_demo(name, dataset, demo, command, out, timeout):
    """Run one demo writing to ``out``; return its record with one row per (noise, method) of its metrics.csv."""
    from utils.application.assessment import read_metrics_csv, summarise

    record = {"name": name, "dataset": dataset, "demo": demo, "command": " ".join(command), "out": str(out)}
    metrics = out / "metrics.csv"  # written last by every demo: it marks a complete run
    metrics.unlink(missing_ok=True)  # so that one left by an earlier run cannot pass for this one
    print(f"{name}: running ...", flush=True)
    started = time.monotonic()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    try:
        completed = subprocess.run(
            [sys.executable, *command], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        record.update(error=f"timeout: killed after {timeout:.0f} s", seconds=round(time.monotonic() - started, 1))
        print(f"{name}: FAILED: {record['error']}", flush=True)
        return record
    record["seconds"] = round(time.monotonic() - started, 1)
    if completed.returncode != 0 or not metrics.exists():
        tail = (completed.stderr.strip().splitlines() or completed.stdout.strip().splitlines() or ["no output"])[-1]
        record["error"] = f"exit code {completed.returncode}: {tail}"[:1000]
        print(f"{name}: FAILED: {record['error']}", flush=True)
        return record
    record["rows"] = []
    for noise, by_method in summarise(read_metrics_csv(metrics)).items():
        for method, stats in by_method.items():
            row = {"dataset": dataset, "demo": demo, "noise": noise, "method": method, "n": stats["n"]}
            for key in ("psnr", "ssim", "rel_err_percent", "seconds"):
                row[key], row[f"{key}_std"] = stats[key]
            record["rows"].append(row)
    print(f"{name}: {len(record['rows'])} rows in {record['seconds']:.0f} s", flush=True)
    return record


def prepare_tiny(work, plan, tuned_dir):
    """The quick phantoms' test volumes, and a tuning table made on their validation volume (seconds)."""
    from utils.application import assessment
    from utils.data.phantom import ensure_default_dataset
    from utils.data.readers import read_ct
    from utils.learning.training import QUICK_PHANTOMS

    splits = ensure_default_dataset(**QUICK_PHANTOMS, progress=False)
    tuned_dir = tuned_dir or work / "tuned"
    validation = [v.array for path in splits["val"] for v in read_ct(path)]
    # (method, dimensionality it is applied in): slices for the 2D demo, volumes for the variational one.
    needed = {(m, assessment.tuning_ndim(m, 2)) for m in plan.slice_methods.split(",")}
    needed |= {(m, assessment.tuning_ndim(m, 3)) for m in plan.volume_methods.split(",")}
    for noise in plan.noise_levels:
        for method, ndim in sorted(needed - {("noisy", 2), ("noisy", 3)}):
            assessment.tuned_parameters(method, noise, ndim, tuned_dir, validation, progress=False)
    return splits["test"], tuned_dir


def format_rows(rows):
    header = ("dataset", "demo", "noise", "method", "n", "PSNR (dB)", "SSIM", "error (%)", "s / sample")
    table = [
        (
            r["dataset"],
            r["demo"],
            f"{r['noise']:g}",
            r["method"],
            str(r["n"]),
            f"{r['psnr']:.2f}",
            f"{r['ssim']:.4f}",
            f"{r['rel_err_percent']:.2f}",
            f"{r['seconds']:.3g}",
        )
        for r in rows
    ]
    return text_table(header, table)


if __name__ == "__main__":
    sys.exit(main())
