"""Every benchmark in one command, at one size: a JSON per run and a markdown table for the README.

    python3 benchmarks/run_all.py --size small         # about 15 minutes on 2 CPU cores (the README's numbers)
    python3 benchmarks/run_all.py --size full          # the scripts' full sizes: for a GPU machine, hours on a CPU
    python3 benchmarks/run_all.py --size tiny --out-dir /tmp/bench    # smoke run for CI, about 2 minutes
    python3 benchmarks/run_all.py --only variational inference        # some parts only
    python3 benchmarks/run_all.py --training-run results/<run> --real-ct ../shared/data/real_ct/<series>
    KERAS_BACKEND=jax python3 benchmarks/run_all.py --size full --only training inference \
        --options inference=--baselines     # a GPU machine with Keras on JAX and no TensorFlow

Parts (each a script of its own in ``benchmarks/``, run as a subprocess, so that a crash or a
timeout in one is recorded and the others go on):

1. ``pipeline``: input pipeline (``pipeline.py``): images/s of the reference repository's order
   against this project's, and the fraction of a training step spent waiting for input (goal < 5 %).
2. ``training``: training throughput (``training.py``) of the 2D U-Net, 3D U-Net and ResPrU-Net 3D in
   float32, mixed_bfloat16 and mixed_float16, as a fraction of the measured matmul peak (goal >= 50 %
   in the best precision of each model).
3. ``inference``: seconds and peak RSS (``inference.py``) of a 2D U-Net on 512x512 slices and a tiled 3D
   U-Net on 512x512 volumes of 64, 128 and 300 slices, against TV 3D and BM4D on the same volumes
   (goals: peak memory flat in the number of slices, 300 slices under 4 GB).
4. ``variational``: our TV 3D against scikit-image's at each one's best weight, SPADE against TV per
   iteration, BM3D and BM4D (``variational.py``; goals: >= 3x faster at equal or better PSNR, SPADE
   under 1.5x TV per iteration).
5. ``quality``: every method at 2, 5 and 10 % noise on the embedded phantom test set and, with
   ``--real-ct``, on real CT (``quality.py``, which runs the three assessment demos).
6. ``time_to_quality``: training minutes until the validation PSNR of a 2D training (``--training-run``)
   passes BM3D's on the same validation data (``time_to_quality.py``; goal < 10 CPU minutes).
   Not measured without ``--training-run``, except at ``--size tiny``, which trains a ``--quick``
   run to exercise the measurement.

Sizes (``PART_OPTIONS`` lists every option passed):

``tiny``
    Every part at its smallest, about 2 minutes on 2 busy CPU cores: a smoke test of the plumbing
    (``tests/test_benchmarks.py``), whose numbers mean nothing.
``small``
    The README's numbers, about 15 minutes on 2 CPU cores (plus a one-off few minutes when
    ``results/tuned`` has no tuned baselines yet). Reduced where the full size takes hours there:
    training with few timed steps (float16 is emulated on CPUs, so mixed_float16 is slow there);
    inference of the 2D U-Net on 512x512 slices and of the default-width 3D U-Net (f=16) on 512x512
    volumes of 16 to 300 slices, with TV 3D and BM4D on the 16-slice one, within a 12-minute budget;
    variational weight searches and BM3D/BM4D on central crops; quality on cropped volumes and 2
    slices per test volume.
``full``
    The scripts' full sizes (BM4D on the 512x512 volumes of up to 128 slices): for a machine with a
    GPU and many cores; hours on a small CPU.

Outputs go to ``--out-dir`` (default ``benchmarks/results/``, git-ignored): one JSON and one log per
part, and ``suite_<size>_<timestamp>.json`` with the machine, library versions, git commit, every
part's report and its goals. The markdown table goes to ``benchmarks/RESULTS_<size>.md`` (committed,
included by the README), except for ``tiny``, whose table stays in ``--out-dir`` so that CI never
changes the tree. Exit status 1 when a part, or a case inside one, failed (mixed precision without
kernels on a device is a result, not a failure).
"""

import argparse
import dataclasses
import datetime
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if __name__ == "__main__" and not __package__:  # run by path: re-run as python3 -m benchmarks.<name>
    os.execv(sys.executable, [sys.executable, "-m", f"benchmarks.{Path(__file__).stem}", *sys.argv[1:]])
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks.common import describe_machine, goal  # noqa: E402
from benchmarks.time_to_quality import GOAL_TARGET as TIME_TO_QUALITY_TARGET  # noqa: E402
from benchmarks import variational  # noqa: E402

SIZES = ("tiny", "small", "full")
DEFAULT_OUT_DIR = REPO / "benchmarks" / "results"
INPUT_WAIT_GOAL = 0.05
PEAK_FRACTION_GOAL = 0.5
FLAT_MEMORY_GOAL = 1.5  # peak RSS of the deepest volume over that of the shallowest
MEMORY_GOAL_MB = 4096
MEMORY_GOAL_SLICES = 300

# Options of every part's script per size, split at spaces; "{dir}" is the output folder.
PART_OPTIONS = {
    "pipeline": {
        "tiny": "--quick --epochs 2",
        "small": "--epochs 2 --steps 4",
        "full": "",
    },
    "training": {
        "tiny": "--quick --models unet2d --precisions float32 --matmul-size 256 --case-timeout 120",
        # float16 is emulated on CPUs (about 13x slower than bfloat16): two timed steps are enough to show it.
        "small": "--size small --precisions float32 mixed_bfloat16 mixed_float16 --warmup 1 --min-steps 2 --min-seconds 0 "
        "--matmul-size 2048 --case-timeout 150",
        "full": "--size full",
    },
    "inference": {
        # Two depths and 2 x 2 tiles in-plane (a tile must exceed the 3D U-Net's 56-voxel overlap):
        # the smallest run that still exercises blending and the flatness measure.
        "tiny": "--size 64 --slices 8 16 --tile 16 60 60 --filters 8 --slices-2d 2",
        # On 2 cores the f=32 model takes minutes per 64 slices of 512x512 and BM4D about 15 minutes
        # per 64x512x512: the default 3D width (f=16) on the 512x512 volumes, tiles at most
        # 128 slices deep (a 64-slice tile would spend 7/8 of its depth on the 56-slice overlap), the
        # baselines on the 16-slice volume.
        "small": "--size 512 --size-2d 512 --slices-2d 2 --filters 16 --slices 16 64 128 300 --tile 128 256 256 "
        "--baseline-max-slices 16 --budget-minutes 12",
        # BM4D needs about 1 KB of memory per voxel: 300x512x512 would take 80 GB.
        "full": "--baseline-max-slices 128",
    },
    "variational": {"tiny": "--size tiny", "small": "--size small", "full": "--size full"},
    "quality": {
        "tiny": "--size tiny --work-dir {dir}/quality",
        "small": "--size small --work-dir {dir}/quality",
        "full": "--size full --work-dir {dir}/quality",
    },
    # The run measured is --training-run, or at tiny size a --quick training made for the purpose.
    "time_to_quality": {"tiny": "", "small": "--max-samples 32", "full": ""},
}
# Hard limits per part in seconds: a part past it is killed (with its subprocesses) and recorded.
TIMEOUTS = {"tiny": 240, "small": 1200, "full": 6 * 3600}


@dataclasses.dataclass(frozen=True)
class Part:
    title: str
    script: str


PARTS = {
    "pipeline": Part("1. Input pipeline", "pipeline.py"),
    "training": Part("2. Training throughput", "training.py"),
    "inference": Part("3. Inference: speed and peak memory", "inference.py"),
    "variational": Part("4. Variational and classical solvers", "variational.py"),
    "quality": Part("5. Quality at 2, 5 and 10 % noise", "quality.py"),
    "time_to_quality": Part("6. Time to quality", "time_to_quality.py"),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=SIZES, default="small")
    parser.add_argument("--only", nargs="+", choices=tuple(PARTS), help="run these parts only")
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR, help="JSON files and logs")
    parser.add_argument(
        "--markdown", type=Path, help="markdown table (default benchmarks/RESULTS_<size>.md; tiny: in --out-dir)"
    )
    parser.add_argument(
        "--training-run", type=Path, help="run folder of Train_model_denoising2D.py for time to quality"
    )
    parser.add_argument(
        "--real-ct", nargs="+", type=Path, default=[], metavar="PATH", help="real CT for the quality part"
    )
    parser.add_argument(
        "--options",
        nargs="+",
        default=[],
        metavar="PART=OPTIONS",
        help="more options for a part's script, after the size's own (a repeated option takes the later value), "
        'e.g. "inference=--baselines" (no TV 3D or BM4D) "training=--precisions float32"',
    )
    args = parser.parse_args(argv)
    args.extra_options = _extra_options(parser, args.options)
    out_dir = args.out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    default_markdown = (out_dir if args.size == "tiny" else REPO / "benchmarks") / f"RESULTS_{args.size}.md"
    markdown_path = args.markdown or default_markdown

    started = time.monotonic()
    machine = describe_machine()
    parts = {}
    for name in PARTS:
        if args.only and name not in args.only:
            parts[name] = {"title": PARTS[name].title, "status": "not run", "note": "not selected with --only"}
            continue
        parts[name] = run_part(name, args, out_dir)
    suite = {
        "suite": "ctden benchmarks",
        "size": args.size,
        "command": " ".join(["python3", "benchmarks/run_all.py", *(argv if argv is not None else sys.argv[1:])]),
        "started": stamp,
        "minutes": round((time.monotonic() - started) / 60, 2),
        "machine": {**machine, "load_average_end": [round(x, 2) for x in os.getloadavg()]},
        "parts": parts,
    }
    from utils.base.atomic import write_json, write_text

    suite_path = out_dir / f"suite_{args.size}_{stamp}.json"
    write_json(suite_path, suite)
    write_text(markdown_path, markdown(suite))
    print(f"wrote {suite_path} and {markdown_path}")
    return 1 if any(p["status"] in ("failed", "partly failed") for p in parts.values()) else 0


def _extra_options(parser, items):
    """``{part: [option, ...]}`` from ``--options`` items ``PART=OPTIONS``; a bad item stops with a usage error."""
    extra = {}
    for item in items:
        name, separator, options = item.partition("=")
        if not separator or name not in PARTS:
            parser.error(f"--options {item!r}: expected PART=OPTIONS with PART one of {', '.join(PARTS)}")
        extra.setdefault(name, []).extend(options.split())
    return extra


# ----------------------------------------------------------------------------- running the parts
def run_part(name, args, out_dir):
    """Run one part's script; return its record: status, report, figures and goals."""
    part = PARTS[name]
    record = {"title": part.title}
    json_path = out_dir / f"{name}.json"
    options = [option.format(dir=out_dir) for option in PART_OPTIONS[name][args.size].split()]
    options += args.extra_options.get(name, [])
    if name == "quality" and args.real_ct:
        options += ["--real-ct", *map(str, args.real_ct)]
    if name == "time_to_quality":
        if args.training_run is not None:
            options += ["--training-run", str(args.training_run)]
        elif args.size == "tiny":
            options += ["--train-quick", str(out_dir / "time_to_quality_run")]
        else:
            print(f"{name}: not measured (no --training-run)", flush=True)
            return {
                **record,
                "status": "not measured",
                "note": "no --training-run given",
                "goals": {"minutes_to_pass_bm3d": goal(TIME_TO_QUALITY_TARGET, None, None, "no --training-run given")},
            }
    command = [*part_command(part.script), *options, "--out", str(json_path)]
    log_path = out_dir / "logs" / f"{name}.log"
    shown = " ".join(["python3", *command[1:]])
    record.update(command=shown, log=str(log_path), json=str(json_path))
    json_path.unlink(missing_ok=True)  # a report left by an earlier run must not pass for this one

    print(f"{name}: running {shown}", flush=True)
    started = time.monotonic()
    returncode, error = _run(command, log_path, TIMEOUTS[args.size])
    record["seconds"] = round(time.monotonic() - started, 1)
    if error is None and not json_path.exists():
        error = f"exit code {returncode} and no {json_path.name}: {_last_line(log_path)}"
    if error is None and returncode != 0 and name != "quality":
        error = f"exit code {returncode}: {_last_line(log_path)}"
    if error is not None:
        print(f"{name}: FAILED after {record['seconds']:.0f} s: {error}", flush=True)
        return {**record, "status": "failed", "error": error}

    report = json.loads(json_path.read_text(encoding="utf-8"))
    figures, goals, table, problems = SUMMARISERS[name](report)
    if returncode != 0 and not problems:
        problems = [f"exit code {returncode}: {_last_line(log_path)}"]
    status = "partly failed" if problems else "ok"
    print(f"{name}: {status} in {record['seconds']:.0f} s" + "".join(f"\n  {p}" for p in problems), flush=True)
    record.update(status=status, report=report, figures=figures, goals=goals, table=table)
    return {**record, "problems": problems} if problems else record


def part_command(script):
    """A part's script of this package runs as ``python -m benchmarks.<name>``; any other file by its path."""
    path = REPO / "benchmarks" / script  # an absolute path stays as it is
    if path.parent == REPO / "benchmarks" and path.is_file():
        return [sys.executable, "-m", f"benchmarks.{path.stem}"]
    return [sys.executable, str(path)]


def _run(command, log_path, timeout):
    """Run ``command`` with its output in ``log_path``; ``(returncode, error or None)``.

    The command runs in a session of its own so that a timeout kills the subprocesses it started too
    (training and inference run each case in one).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    with open(log_path, "w", encoding="utf-8") as log:
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            return process.wait(timeout=timeout), None
        except subprocess.TimeoutExpired:
            _kill_session(process)
            return process.returncode, f"timeout: killed after {timeout} s"
        except BaseException:  # Ctrl-C: the part is in a session of its own, so it would not see it
            _kill_session(process)
            raise


def _kill_session(process):
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _last_line(path):
    lines = [line for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    return (lines or ["no output"])[-1][:500]


# ----------------------------------------------------------------------------- summaries per part
# Each returns (figures, goals, table, problems): figures are the headline numbers, all positive by
# nature (rates, seconds, memory, PSNR); goals are benchmarks.common.goal records; table is markdown
# lines; problems name the cases inside the part's report that failed (the part is then "partly failed").


def summarise_pipeline(report):
    variants = report["variants"]
    reference = variants["reference_order"]["images_per_s"]
    labels = {
        "stream_no_cache": "decode every epoch, no cache, no prefetch",
        "reference_order": "reference repository's order (replays epoch 1's crops and noise)",
        "this_project": "this project (cache clean volumes, fresh crops and noise)",
    }
    table = [
        _row("input", "images/s after epoch 1", "images/s in epoch 1", "vs reference order"),
        "|---|---:|---:|---:|",
    ]
    for name, label in labels.items():
        rate, first = variants[name]["images_per_s"], variants[name]["first_epoch_images_per_s"]
        table.append(_row(label, f"{rate:.1f}", f"{first:.1f}", f"{rate / reference:.2f}x"))
    constant, real = report["training_images_per_s_constant_input"], report["training_images_per_s_real_pipeline"]
    table += [
        "",
        f"Training step of the 2D U-Net: {constant:.1f} images/s on a constant batch, "
        f"{real:.1f} on this project's pipeline.",
    ]
    wait = report["input_wait_fraction"]
    target = f"under {INPUT_WAIT_GOAL:.0%} of a training step waiting for input"
    figures = {f"{name}_images_per_s": v["images_per_s"] for name, v in variants.items()}
    figures.update(training_images_per_s_constant=constant, training_images_per_s_pipeline=real)
    return figures, {"input_wait": goal(target, f"{wait:.1%}", wait < INPUT_WAIT_GOAL)}, table, []


def summarise_training(report):
    cases = report["cases"]
    float32 = {c["name"]: c["samples_per_s"] for c in cases if c["precision"] == "float32" and "samples_per_s" in c}
    table = [
        _row("model", "precision", "batch x patch", "samples/s", "vs float32", "GFLOP/s", "% of matmul peak"),
        "|---|---|---|---:|---:|---:|---:|",
    ]
    figures, best = {}, {}
    for c in cases:
        shape = f"{c['batch']} x {'x'.join(map(str, c['patch']))}"
        if "samples_per_s" not in c:
            table.append(
                _row(c["name"], c["precision"], shape, f"failed: {_cell(c.get('error', 'no result'))}", "", "", "")
            )
            continue
        ratio = f"{c['samples_per_s'] / float32[c['name']]:.2f}x" if c["name"] in float32 else "-"
        fraction = c.get("fraction_of_peak")
        percent = "-" if fraction is None else f"{fraction:.1%}"
        table.append(
            _row(
                c["name"],
                c["precision"],
                shape,
                f"{c['samples_per_s']:.2f}",
                ratio,
                f"{c['achieved_gflops']:.1f}",
                percent,
            )
        )
        figures[f"{c['name']}_{c['precision']}_samples_per_s"] = c["samples_per_s"]
        if fraction is not None and fraction > best.get(c["name"], (-1, ""))[0]:
            best[c["name"]] = (fraction, c["precision"])
    peaks = {dtype: p["gflops"] for dtype, p in report.get("peak", {}).get("dtypes", {}).items() if "gflops" in p}
    peak_text = ", ".join(f"{dtype} {gflops:.0f}" for dtype, gflops in peaks.items())
    table += ["", f"Matmul peak (GFLOP/s): {peak_text or 'not measured'}."]
    figures.update({f"matmul_peak_{dtype}_gflops": gflops for dtype, gflops in peaks.items()})
    goals = {}
    for name in dict.fromkeys(c["name"] for c in cases):
        target = f"{name}: at least {PEAK_FRACTION_GOAL:.0%} of the matmul peak in the best precision"
        if name in best:
            fraction, precision = best[name]
            goals[f"peak_fraction_{name}"] = goal(
                target, f"{fraction:.1%} ({precision})", fraction >= PEAK_FRACTION_GOAL
            )
        else:
            goals[f"peak_fraction_{name}"] = goal(target, None, None, "no case of this model succeeded")
    # Mixed precision without kernels on a device is a finding; float32 must always run.
    problems = [f"{c['name']} float32: {c['error']}" for c in cases if c["precision"] == "float32" and "error" in c]
    return figures, goals, table, problems


def summarise_inference(report):
    done = [c for c in report["cases"] if not c.get("skipped") and "error" not in c]
    by_kind = {}
    for c in done:
        by_kind.setdefault(c["kind"], {})[c["slices"]] = c
    table = []
    for c in by_kind.get("2d", {}).values():
        table += [
            f"2D U-Net (f={c['filters']}): {c['seconds_per_slice']:.3f} s per {c['size']}x{c['size']} slice, "
            f"peak RSS {_memory_text(c)}.",
            "",
        ]
    table += [
        _row(
            "volume",
            "3D U-Net s",
            "peak RSS MB",
            "TV 3D s (vs U-Net)",
            "peak RSS MB",
            "BM4D s (vs U-Net)",
            "peak RSS MB",
        ),
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    volumes = {c["slices"]: c["size"] for c in report["cases"] if c["kind"] != "2d"}
    for depth, size in sorted(volumes.items()):
        unet = by_kind.get("3d", {}).get(depth)
        cells = []
        for kind in ("3d", "tv3d", "bm4d"):
            c = by_kind.get(kind, {}).get(depth)
            if c is None:
                cells += [_case_outcome(report, kind, depth), "-"]
                continue
            ratio = f" ({c['seconds'] / unet['seconds']:.1f}x)" if unet and kind != "3d" else ""
            cells += [f"{c['seconds']:.1f}{ratio}", _memory_text(c, unit="")]
        table.append(_row(f"{depth}x{size}x{size}", *cells))
    figures = {f"{c['kind']}_{c['slices']}_seconds": c["seconds"] for c in done}
    figures.update({f"{c['kind']}_{c['slices']}_peak_rss_mb": c["peak_rss_mb"] for c in done})
    for c in done:
        if "gpu_peak_memory_mb" in c:
            figures[f"{c['kind']}_{c['slices']}_gpu_peak_memory_mb"] = c["gpu_peak_memory_mb"]
    goals = {"memory_flat": _flat_memory_goal(by_kind.get("3d", {})), "memory_300_slices": _memory_goal(by_kind)}
    failed = [f"{c['kind']} {c['slices']} slices: {c['error']}" for c in report["cases"] if "error" in c]
    return figures, goals, table, failed


def _memory_text(case, unit=" MB"):
    """Peak RSS, and the GPU allocator's peak where the case ran on a GPU."""
    gpu = case.get("gpu_peak_memory_mb")
    return f"{case['peak_rss_mb']:.0f}{unit}" + ("" if gpu is None else f" (GPU {gpu:.0f}{unit})")


def _flat_memory_goal(unets):
    # Volumes thinner than a tile are one tile deep, so their memory grows with depth by design.
    tiled = {depth: c for depth, c in unets.items() if depth >= c["tile"][0]}
    target = (
        "3D U-Net peak RSS flat in slices "
        f"(deepest / shallowest volume at least a tile deep under {FLAT_MEMORY_GOAL:g}x)"
    )
    if len(tiled) < 2:
        return goal(target, None, None, "fewer than two volumes at least a tile deep")
    low, high = tiled[min(tiled)], tiled[max(tiled)]
    ratio = high["peak_rss_mb"] / low["peak_rss_mb"]
    value = (
        f"{ratio:.2f}x from {min(tiled)} to {max(tiled)} slices "
        f"({low['peak_rss_mb']:.0f} -> {high['peak_rss_mb']:.0f} MB)"
    )
    return goal(target, value, ratio < FLAT_MEMORY_GOAL)


def _memory_goal(by_kind):
    volume = f"{MEMORY_GOAL_SLICES}x512x512"
    target = f"3D U-Net on {volume} under {MEMORY_GOAL_MB / 1024:g} GB peak RSS"
    case = by_kind.get("3d", {}).get(MEMORY_GOAL_SLICES)
    if case is None or case["size"] != 512:
        return goal(target, None, None, f"no {volume} case in this run")
    return goal(target, f"{case['peak_rss_mb']:.0f} MB", case["peak_rss_mb"] < MEMORY_GOAL_MB)


def _case_outcome(report, kind, depth):
    """Table cell of a case that has no result: not run, skipped by the time budget, or failed."""
    case = next((c for c in report["cases"] if c["kind"] == kind and c["slices"] == depth), None)
    if case is None:
        return "not run"
    if case.get("skipped"):
        return f"skipped (estimated {case['estimated_seconds']:.0f} s)"
    return f"failed: {_cell(case['error'])}" if "error" in case else "-"


def summarise_variational(report):
    tv, spade = report["tv"], report["spade_vs_tv"]
    rows = [_row(*(_cell(cell) for cell in row)) for row in variational.result_rows(report)]
    table = [variational.heading(report), "", _row(*variational.RESULT_HEADER), "|---|---:|---:|---:|---|", *rows]
    table += ["", *variational.comparison_lines(report)]
    figures = {
        f"tv_{name}_{key}": tv[name][key] for name in ("ours", "ours_exact_step", "skimage") if name in tv for key in ("seconds", "psnr")
    }
    figures.update(
        {f"{name}_seconds_per_iteration": spade[name]["seconds_per_iteration"] for name in ("spade", "spade_identity", "tv")}
    )
    classical = {name: report[name] for name in ("bm3d", "bm4d") if name in report}
    figures.update(
        {f"{name}_{key}": r[key] for name, r in classical.items() if "error" not in r for key in ("seconds", "psnr")}
    )
    goals = {key: report["goals"][key] for key in VARIATIONAL_GOAL_ORDER if key in report["goals"]}
    failed = [f"{name}: {r['error']}" for name, r in classical.items() if "error" in r]
    if "error" in report.get("tv_iteration_profile", {}):
        failed.append(f"TV iteration profile: {report['tv_iteration_profile']['error']}")
    return figures, goals, table, failed


# The variational report's goals in reading order (its JSON keys come back sorted).
VARIATIONAL_GOAL_ORDER = ("tv_faster_than_skimage", "tv_3x_faster_than_skimage", "spade_per_iteration")


def summarise_quality(report):
    table = [
        _row("data", "demo", "noise", "method", "n", "PSNR (dB)", "SSIM", "error (%)", "s / sample"),
        "|---|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        psnr = f"{r['psnr']:.2f} ± {r['psnr_std']:.2f}"
        cells = (f"{r['noise']:g}", r["method"], r["n"], psnr, f"{r['ssim']:.4f}", f"{r['rel_err_percent']:.2f}")
        table.append(_row(r["dataset"], r["demo"], *cells, f"{r['seconds']:.3g}"))
    failed = [job for job in report["jobs"] if "error" in job]
    notes = report["notes"] + [f"{job['name']} failed: {_cell(job['error'])}" for job in failed]
    if notes:
        table += [""] + [f"Note: {note}." for note in notes]
    figures = {f"{r['dataset']}_{r['demo']}_{r['noise']:g}_{r['method']}_psnr": r["psnr"] for r in report["rows"]}
    return figures, {}, table, [f"{job['name']}: {job['error']}" for job in failed]


def summarise_time_to_quality(report):
    bm3d, s = report["bm3d"], report["settings"]
    passed, minutes = report["passed_bm3d_at_epoch"], report["minutes_to_pass_bm3d"]
    devices = ", ".join(report["devices"]) or "unknown devices"
    table = [
        f"Run `{report['run']}`: {s['model']} f={s['filters']}, patch {_shape(s['patch'])}, batch {s['batch_size']}, "
        f"{s['precision']}, noise {s['noise']:g}, on {devices}; timing from {report['timing_source']}.",
        "",
        _row("", "value"),
        "|---|---:|",
        _row(
            f"BM3D validation PSNR (sigma {bm3d['sigma']:g}, "
            f"{bm3d['samples']} of {bm3d['validation_samples']} samples)",
            f"{bm3d['psnr']:.2f} dB",
        ),
        _row("best validation PSNR of the run", f"{report['best_val_psnr']:.2f} dB"),
        _row("first epoch above BM3D", "-" if passed is None else passed + 1),
        _row("training minutes to pass BM3D", "-" if minutes is None else f"{minutes:.1f}"),
        _row("training minutes in all", f"{report['training_minutes_total']:.1f}"),
    ]
    if not bm3d["embedded_validation_set"]:
        table += ["", "Note: the run's validation files are not the embedded phantom validation set."]
    figures = {key: report[key] for key in ("best_val_psnr", "training_minutes_total")}
    figures["bm3d_psnr"] = bm3d["psnr"]
    return figures, {"minutes_to_pass_bm3d": report["goal"]}, table, []


SUMMARISERS = {
    "pipeline": summarise_pipeline,
    "training": summarise_training,
    "inference": summarise_inference,
    "variational": summarise_variational,
    "quality": summarise_quality,
    "time_to_quality": summarise_time_to_quality,
}


def _row(*cells):
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def _shape(sizes):
    return "x".join(map(str, sizes))


def _cell(text):
    """Text safe inside a markdown table cell, on one line and short."""
    return " ".join(str(text).replace("|", "/").split())[:120]


def _measured(record):
    """A goal's measured value with its note, or why it has none."""
    if record["value"] is None:
        return record.get("note", "-")
    return f"{record['value']} ({record['note']})" if record.get("note") else record["value"]


# ----------------------------------------------------------------------------- markdown
def _framework(machine):
    """'TensorFlow 2.21.0, Keras 3.15.1', or Keras on its other backend with that backend's version."""
    backend = machine.get("keras_backend", "tensorflow")
    if backend == "tensorflow":
        return f"TensorFlow {machine['tensorflow']}, Keras {machine['keras']}"
    version = machine.get("libraries", {}).get(backend) or "(version not recorded)"
    return f"Keras {machine['keras']} on {backend} {version}"


def markdown(suite):
    m = suite["machine"]
    gpus = ", ".join(m["gpus"]) or "none"
    lines = [
        f"# Benchmark results: `--size {suite['size']}`",
        "",
        f"`{suite['command']}`, started {suite['started']}, took {suite['minutes']:.1f} minutes. "
        f"{m['cpu_model']}, {m['usable_cpus']} usable CPUs, {m['memory_gb']} GB, GPUs: {gpus}; "
        f"{_framework(m)}; git {m['git_commit']}; "
        f"load average {m['load_average'][0]:.1f} at the start, {m['load_average_end'][0]:.1f} at the end.",
        "",
        "## Goals",
        "",
        "| part | goal | measured | status |",
        "|---|---|---|---|",
    ]
    for part in suite["parts"].values():
        for g in part.get("goals", {}).values():
            lines.append(_row(part["title"], _cell(g["target"]), _cell(_measured(g)), g["status"]))
    for part in suite["parts"].values():
        lines += ["", f"## {part['title']}", ""]
        if part["status"] in ("not run", "not measured"):
            lines.append(f"{part['status'].capitalize()}: {part['note']}.")
            continue
        if part["status"] == "failed":
            lines.append(
                f"Failed after {part['seconds']:.0f} s: {_cell(part['error'])} (log: `{Path(part['log']).name}`)."
            )
            continue
        lines += part["table"]
        if part.get("problems"):
            lines += ["", "Failed inside this part: " + "; ".join(_cell(problem) for problem in part["problems"]) + "."]
        lines += [""] + [f"- Goal {g['status']}: {g['target']} ({_measured(g)})" for g in part["goals"].values()]
        lines.append(f"- `{part['command'].replace(str(REPO) + '/', '')}`, {part['seconds']:.0f} s")
    return "\n".join(lines).replace("\n\n\n", "\n\n") + "\n"


if __name__ == "__main__":
    sys.exit(main())
