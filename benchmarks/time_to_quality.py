"""Time to quality: minutes of a 2D training until its validation PSNR passes BM3D's on the same validation data.

    python3 benchmarks/time_to_quality.py --training-run results/<run>        # a run of Train_model_denoising2D.py
    python3 benchmarks/time_to_quality.py --training-run results/<run> --max-samples 32
    python3 benchmarks/time_to_quality.py --train-quick /tmp/quick_run         # smoke run: a --quick training first

The run folder (``utils.learning.training``) holds everything needed:

* ``history.csv``: ``val_psnr`` after every epoch (Keras' mean over validation batches of the
  batch's mean slice PSNR, data range 1);
* ``logs/train/events.*``: TensorBoard's wall-clock time of every epoch's end, one file per process
  (a resumed run has several). Training time up to epoch k is the sum over processes of
  (last epoch end <= k) - (the process's first event, written as ``model.fit`` starts): time in
  ``model.fit``, not start-up or data generation, and not the lost part of an epoch killed
  mid-way. Without event files: ``finished.json``'s minutes spread evenly over the epochs;
* ``config.json``: the settings and the validation files, from which the validation set is rebuilt
  exactly as the run did (``utils.learning.training.training_data``: same crops, noise and seed; relative
  paths are taken from the repository root, where the training scripts run).

BM3D (``utils.solvers.classical.bm3d_denoise``) then denoises every validation sample, at the sigma tuned
for 2D in ``results/tuned/tuned_2d.json`` when that table has one for the run's noise, else at the
noise's sigma; its PSNR is averaged the same way as ``val_psnr``. ``--max-samples`` keeps evenly
spaced whole batches to bound BM3D's cost (about a second per slice on 2 cores); the JSON says how
many were used. The answer is the first epoch whose ``val_psnr`` exceeds BM3D's and the training
minutes until its end. The goal (under 10 minutes) is about CPU minutes, so it is only judged for
runs that saw no GPU.

Results: printed, and written to ``benchmarks/results/time_to_quality.json`` (atomically).
"""

import argparse
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if __name__ == "__main__" and not __package__:  # run by path: re-run as python3 -m benchmarks.<name>
    os.execv(sys.executable, [sys.executable, "-m", f"benchmarks.{Path(__file__).stem}", *sys.argv[1:]])
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks.common import describe_machine, goal  # noqa: E402

DEFAULT_OUT = REPO / "benchmarks" / "results" / "time_to_quality.json"
DEFAULT_TUNED = REPO / "results" / "tuned" / "tuned_2d.json"
GOAL_MINUTES = 10.0
GOAL_TARGET = f"under {GOAL_MINUTES:g} CPU minutes of 2D training to pass BM3D's validation PSNR"
EMBEDDED_VALIDATION = ("data/phantom/val/", "data/phantom_quick/val/")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--training-run", type=Path, help="run folder of Train_model_denoising2D.py")
    source.add_argument(
        "--train-quick", type=Path, metavar="DIR", help="train Train_model_denoising2D.py --quick into DIR first"
    )
    parser.add_argument("--max-samples", type=int, default=0, help="validation samples BM3D denoises (0: all)")
    parser.add_argument("--tuned", type=Path, default=DEFAULT_TUNED, help="tuning table with BM3D's 2D sigma")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)

    from utils.base.atomic import write_json
    from utils.base.errors import DataError

    run = args.training_run or train_quick(args.train_quick)
    try:
        report = measure(run.resolve(), args.max_samples, args.tuned)
    except DataError as error:
        raise SystemExit(f"error: {error}") from None
    report["machine"] = describe_machine()
    print(summary_line(report))
    write_json(args.out, report)
    print(f"wrote {args.out}")


def train_quick(out):
    """A complete --quick run of the default 2D training in ``out`` (replaced if there), for smoke tests."""
    command = [sys.executable, "Train_model_denoising2D.py", "--quick", "--out", str(out), "--overwrite"]
    completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        tail = (completed.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"error: {' '.join(command[1:])} failed with exit code {completed.returncode}: {tail}")
    return out


def measure(run, max_samples, tuned_table):
    from utils.base.errors import DataError

    for name in ("config.json", "history.csv"):
        if not (run / name).is_file():
            raise DataError(run / name, "missing: not a run folder of Train_model_denoising2D.py (or not started)")
    record = json.loads((run / "config.json").read_text(encoding="utf-8"))
    settings = record["settings"]
    if settings["ndim"] != 2:
        raise DataError(run / "config.json", f"a {settings['ndim']}D run; time to quality is measured for 2D trainings")
    history = read_history(run / "history.csv")
    epochs = [row["epoch"] for row in history]
    minutes, timing_source = epoch_minutes(run, epochs)
    bm3d = bm3d_on_validation(settings, validation_sources(run, record), max_samples, tuned_table)

    passed = next((row for row in history if row["val_psnr"] > bm3d["psnr"]), None)
    devices = record.get("environment", {}).get("devices", [])
    cpu_only = not any("GPU" in d for d in devices)
    result = {
        "benchmark": "time_to_quality",
        "run": str(run),
        "finished": (run / "finished.json").exists(),
        "settings": {
            k: settings[k]
            for k in ("model", "filters", "patch", "batch_size", "precision", "noise", "epochs", "time_limit_minutes")
        },
        "devices": devices,
        "epochs": [{**row, "training_minutes": minutes[row["epoch"]]} for row in history],
        "timing_source": timing_source,
        "bm3d": bm3d,
        "best_val_psnr": max(row["val_psnr"] for row in history),
        "passed_bm3d_at_epoch": None if passed is None else passed["epoch"],
        "minutes_to_pass_bm3d": None if passed is None else minutes[passed["epoch"]],
        "training_minutes_total": minutes[epochs[-1]],
    }
    if not cpu_only:
        result["goal"] = goal(GOAL_TARGET, None, None, "the run used a GPU")
    elif passed is None:
        result["goal"] = goal(
            GOAL_TARGET,
            f"not passed in {result['training_minutes_total']:.1f} min",
            False,
            f"best val_psnr {result['best_val_psnr']:.2f} dB vs BM3D {bm3d['psnr']:.2f} dB",
        )
    else:
        spent = result["minutes_to_pass_bm3d"]
        result["goal"] = goal(GOAL_TARGET, f"{spent:.1f} min", spent < GOAL_MINUTES)
    return result


def read_history(path):
    with open(path, newline="", encoding="utf-8") as handle:
        rows = [
            {"epoch": int(r["epoch"]), "val_psnr": float(r["val_psnr"])}
            for r in csv.DictReader(handle)
            if r.get("val_psnr")
        ]
    if not rows:
        from utils.base.errors import DataError

        raise DataError(path, "no epoch with a val_psnr yet")
    return rows


def epoch_minutes(run, epochs):
    """``({epoch: training minutes at its end}, where they come from)`` (see the module docstring)."""
    processes = [_epoch_end_times(path) for path in sorted((run / "logs" / "train").glob("events.out.tfevents.*"))]
    processes = [(start, ends) for start, ends in processes if ends]
    if processes:
        minutes = {
            epoch: sum(
                max(t for e, t in ends.items() if e <= epoch) - start for start, ends in processes if min(ends) <= epoch
            )
            / 60
            for epoch in epochs
        }
        return minutes, f"TensorBoard event times of {len(processes)} training process(es)"
    finished = run / "finished.json"
    if not finished.exists():
        from utils.base.errors import DataError

        raise DataError(
            run, "neither TensorBoard event files with epoch times nor finished.json: no training time known"
        )
    total = json.loads(finished.read_text(encoding="utf-8"))["minutes"]
    minutes = {epoch: total * (i + 1) / len(epochs) for i, epoch in enumerate(epochs)}
    return minutes, "finished.json minutes spread evenly over the epochs (no TensorBoard event files)"


def _epoch_end_times(path):
    """``(first event's wall time, {epoch: wall time of its epoch_loss summary})`` of one event file."""
    import tensorflow as tf

    start, ends = None, {}
    for raw in tf.data.TFRecordDataset(str(path)):
        event = tf.compat.v1.Event.FromString(raw.numpy())
        start = event.wall_time if start is None else start
        if any(value.tag == "epoch_loss" for value in event.summary.value):
            ends[int(event.step)] = event.wall_time
    return start, ends


def validation_sources(run, record):
    """The validation files of the run, in order, relative paths taken from the repository root."""
    from utils.base.errors import DataError

    described = record.get("data", {}).get("validation")
    if not isinstance(described, list) or not described:
        raise DataError(
            run / "config.json", f"validation data {described!r}: not a list of files that can be read again"
        )
    sources = list(dict.fromkeys(item["source"] for item in described))
    return [path if Path(path).is_absolute() else str(REPO / path) for path in sources]


def bm3d_on_validation(settings, sources, max_samples, tuned_table):
    """BM3D's mean validation PSNR (mean over batches of the batch's mean), as Keras computes val_psnr."""
    import numpy as np

    from utils.solvers.classical import bm3d_denoise
    from utils.learning.config import TrainingConfig
    from utils.data.metrics import psnr
    from utils.data.noise import make_noise
    from utils.learning.training import load_volumes, training_data
    from utils.application.tuning import load_tuned

    config = TrainingConfig.from_dict(settings)
    volumes, _ = load_volumes(sources, config.hu_window)
    _, validation, _ = training_data(config, volumes, volumes)
    batches = [(inputs["noisy"] if isinstance(inputs, dict) else inputs, clean) for inputs, clean in validation]
    n_samples = sum(len(clean) for _, clean in batches)
    if max_samples and n_samples > max_samples:
        keep = max(1, round(len(batches) * max_samples / n_samples))
        # The centres of `keep` equal runs of batches: spread over the volumes, not their first slices.
        batches = [batches[int((i + 0.5) * len(batches) / keep)] for i in range(keep)]

    noise = make_noise(config.noise, config.noise_model)
    tuned = load_tuned(tuned_table, "bm3d", noise) if config.noise_model == "gaussian" else None
    sigma = tuned["sigma"] if tuned else noise.effective_sigma
    batch_means = []
    for noisy, clean in batches:
        denoised = bm3d_denoise(noisy.numpy()[..., 0], sigma, progress=False)
        batch_means.append(np.mean([psnr(c, d) for c, d in zip(clean.numpy()[..., 0], denoised)]))
    return {
        "psnr": float(np.mean(batch_means)),
        "sigma": sigma,
        "sigma_source": f"tuned, {tuned_table}" if tuned else "the noise's sigma (no tuned BM3D entry)",
        "samples": int(sum(len(clean) for _, clean in batches)),
        "validation_samples": n_samples,
        "validation_files": sources,
        "embedded_validation_set": all(any(e in Path(s).as_posix() for e in EMBEDDED_VALIDATION) for s in sources),
    }


def summary_line(report):
    bm3d = report["bm3d"]
    head = f"BM3D {bm3d['psnr']:.2f} dB on {bm3d['samples']}/{bm3d['validation_samples']} validation samples; "
    if report["passed_bm3d_at_epoch"] is None:
        best, total = report["best_val_psnr"], report["training_minutes_total"]
        return head + f"the run never passed it (best val_psnr {best:.2f} dB, {total:.1f} min)"
    epoch, minutes = report["passed_bm3d_at_epoch"] + 1, report["minutes_to_pass_bm3d"]
    return head + f"passed at epoch {epoch} after {minutes:.1f} training minutes"


if __name__ == "__main__":
    main()
