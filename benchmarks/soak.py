"""Soak test of interrupted training: kill runs with SIGKILL at random moments, resume, check nothing is lost.

Each cycle starts ``Train_model_denoising2D.py --quick --epochs E --out DIR``, kills it after a
random delay (before the first checkpoint, mid-epoch, or while a checkpoint is being written,
whatever the clock hits), and starts the same command again until the run reports it finished.
A cycle counts as "nothing lost" when

* ``history.csv`` holds epochs 0 .. E-1, each exactly once,
* ``model_best.keras`` and ``model_final.keras`` load with ``safe_mode=True``,
* no temporary file is left in the run folder.

Usage: python benchmarks/soak.py [--cycles 5] [--epochs 4] [--max-kills 3] [--seed 0]
Writes benchmarks/results/soak.json.
"""

import argparse
import csv
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if __name__ == "__main__" and not __package__:  # run by path: re-run as python3 -m benchmarks.<name>
    os.execv(sys.executable, [sys.executable, "-m", f"benchmarks.{Path(__file__).stem}", *sys.argv[1:]])

from utils.base.atomic import write_json  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "soak.json"
SCRIPT = REPO / "Train_model_denoising2D.py"


def run_until_finished(out, epochs, max_kills, rng, kill_window):
    """Start, kill at random moments up to ``max_kills`` times, then let the last start finish."""
    command = [sys.executable, str(SCRIPT), "--quick", "--epochs", str(epochs), "--out", str(out)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    kills = []
    for attempt in range(max_kills + 1):
        if (out / "finished.json").exists():
            # The last kill landed after the run had finished (during interpreter shutdown): the same
            # command would now rightly refuse to touch a finished run, so there is nothing to restart.
            return kills, None
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if attempt < max_kills:
            delay = rng.uniform(*kill_window)
            try:
                process.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGKILL)
                process.wait()
                kills.append(round(delay, 2))
                continue
        else:
            process.wait(timeout=900)
        if process.returncode != 0:
            return kills, f"exit {process.returncode}: {process.stderr.read()[-500:]}"
        if (out / "finished.json").exists():
            return kills, None
    return kills, "never finished"


def history_epochs(out):
    with open(out / "history.csv", newline="") as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


def check_nothing_lost(out, epochs):
    from models.storage import load_model

    problems = []
    if history_epochs(out) != list(range(epochs)):
        problems.append(f"history epochs {history_epochs(out)}")
    for name in ("model_best.keras", "model_final.keras"):
        try:
            load_model(out / name)
        except Exception as error:  # noqa: BLE001 - any failure to load is a loss
            problems.append(f"{name}: {error}")
    leftovers = [p.name for p in out.rglob("*") if ".tmp" in p.name]
    if leftovers:
        problems.append(f"temporary files left: {leftovers}")
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--max-kills", type=int, default=3, help="kills per cycle before letting the run finish")
    parser.add_argument("--kill-window", type=float, nargs=2, default=(3.0, 25.0), help="random kill delay range, seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    cycles = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as folder:
        for cycle in range(args.cycles):
            out = Path(folder) / f"cycle{cycle}"
            kills, failure = run_until_finished(out, args.epochs, args.max_kills, rng, args.kill_window)
            problems = [failure] if failure else check_nothing_lost(out, args.epochs)
            cycles.append({"cycle": cycle, "kills_after_s": kills, "problems": problems})
            status = "nothing lost" if not problems else "; ".join(problems)
            print(f"cycle {cycle}: killed {len(kills)}x at {kills} s -> {status}", flush=True)
    intact = sum(not c["problems"] for c in cycles)
    total_kills = sum(len(c["kills_after_s"]) for c in cycles)
    print(f"{intact}/{len(cycles)} cycles finished with nothing lost ({total_kills} kills)")
    write_json(args.out, {"cycles": cycles, "intact": intact, "total": len(cycles), "kills": total_kills,
                          "epochs": args.epochs, "minutes": (time.monotonic() - started) / 60})
    print(f"wrote {args.out}")
    return 0 if intact == len(cycles) else 1


if __name__ == "__main__":
    sys.exit(main())
