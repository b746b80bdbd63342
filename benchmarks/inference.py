"""Inference throughput and peak memory of tiled 3D U-Net and 2D U-Net prediction.

    python3 benchmarks/inference.py                   # 512x512 volumes of 64, 128, 300 slices + a 2D slice
    python3 benchmarks/inference.py --slices 64       # one volume size
    python3 benchmarks/inference.py --quick           # smoke test in seconds (tiny sizes)
    python3 benchmarks/inference.py --budget-minutes 10   # skip cases estimated to overrun

Each case runs in a fresh subprocess so that peak resident memory (RSS) is that case's alone. Peak RSS
is the larger of a psutil sampler (every 20 ms) and the kernel's ``ru_maxrss``; ``baseline_rss_mb`` is the
RSS after TensorFlow, the model and the input volume are in memory, so ``peak - baseline`` is what
tiling costs. Weights are random (seeded): speed does not depend on them. Throughput counts input voxels
(``voxels/s``); ``processed_voxels`` adds the tile overlaps that buy exact, seam-free output.

Results: printed, and written to ``benchmarks/results/inference.json`` (atomically).
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

DEFAULT_OUT = REPO / "benchmarks" / "results" / "inference.json"
DEFAULT_TILE = (96, 256, 256)  # ~4 M voxels per tile: about 4 GB RSS for the f=32 3D U-Net in float32


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, nargs="+", default=[64, 128, 300], help="volume depths (512x512 slices)")
    parser.add_argument("--size", type=int, default=512, help="in-plane size of volumes and of the 2D slice")
    parser.add_argument("--tile", type=int, nargs=3, default=list(DEFAULT_TILE), metavar=("D", "H", "W"))
    parser.add_argument("--filters", type=int, default=32)
    parser.add_argument("--slices-2d", type=int, default=8, help="2D slices timed after a warm-up slice")
    parser.add_argument("--no-2d", action="store_true", help="skip the 2D U-Net case")
    parser.add_argument("--quick", action="store_true", help="smoke run in seconds: 80x80 in-plane, 16 and 40 slices")
    parser.add_argument(
        "--budget-minutes", type=float, default=None, help="skip cases estimated to exceed the time left"
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case in this process
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return

    if args.quick:
        # Still tiled in-plane (2 x 2 tiles of 68x68), so the quick run exercises the blending path.
        args.size, args.slices, args.tile, args.slices_2d = 80, [16, 40], [64, 72, 72], 2
    cases = [] if args.no_2d else [{"kind": "2d", "size": args.size, "slices": args.slices_2d, "filters": args.filters}]
    cases += [
        {"kind": "3d", "size": args.size, "slices": n, "tile": args.tile, "filters": args.filters} for n in args.slices
    ]

    started, results, rate = time.monotonic(), [], None
    for case in cases:
        estimate = _estimate_seconds(case, rate)
        label = _label(case)
        left = None if args.budget_minutes is None else args.budget_minutes * 60 - (time.monotonic() - started)
        if estimate is not None:
            print(f"{label}: estimated {estimate:.0f} s", flush=True)
        if left is not None and estimate is not None and estimate > left:
            print(f"{label}: skipped (estimate exceeds the {left:.0f} s left of the budget)", flush=True)
            results.append({**case, "skipped": True, "estimated_seconds": round(estimate, 1)})
            continue
        result = _run_in_subprocess(case)
        results.append(result)
        if "error" in result:
            print(f"{label}: FAILED: {result['error']}", flush=True)
            continue
        if case["kind"] == "3d":
            rate = result["processed_voxels"] / result["seconds"]
        print(
            f"{label}: {result['seconds']:.1f} s, {result['voxels_per_s'] / 1e6:.3f} Mvoxel/s, "
            f"peak RSS {result['peak_rss_mb']:.0f} MB (baseline {result['baseline_rss_mb']:.0f} MB)"
            + (f", {result['n_tiles']} tiles of {result['tile_shape']}" if case["kind"] == "3d" else ""),
            flush=True,
        )

    import tensorflow as tf  # only for the report header; the cases ran in their own processes

    from utils.atomic import write_json

    report = {
        "benchmark": "inference",
        "quick": args.quick,
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
        },
        "cases": results,
    }
    write_json(args.out, report)
    print(f"wrote {args.out}")


def run_case(case):
    """Build the model, predict once (timed) and report speed and memory. Runs inside the subprocess."""
    import resource

    import keras
    import numpy as np
    import psutil

    from models import build_model, predict, tiling_summary

    process = psutil.Process()
    peak = [process.memory_info().rss]
    stop = threading.Event()

    def sample():
        while not stop.wait(0.02):
            peak[0] = max(peak[0], process.memory_info().rss)

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    ndim = 3 if case["kind"] == "3d" else 2
    model = build_model("unet", ndim=ndim, filters=case["filters"])
    size, slices = case["size"], case["slices"]
    if ndim == 3:
        data = rng.random((slices, size, size), dtype=np.float32)
        kwargs = {"tile_shape": tuple(case["tile"])}
        tiling = tiling_summary(model, data.shape, **kwargs)
    else:
        data = rng.random((slices, size, size), dtype=np.float32)
        kwargs = {"batch_size": 1}
        predict(model, data[:1], progress=False)  # trace the predict function once, as a long run would
        tiling = {"n_tiles": slices, "tile_shape": [size, size], "processed_voxels": data.size}
    baseline = process.memory_info().rss
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    out = predict(model, data, progress=False, **kwargs)
    seconds = time.perf_counter() - start
    stop.set()
    sampler.join()
    assert out.shape == data.shape and np.isfinite(out).all()
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux
    return {
        **case,
        "model": f"unet_{ndim}d",
        "params": model.count_params(),
        "shape": list(data.shape),
        "voxels": int(data.size),
        "seconds": round(seconds, 3),
        "voxels_per_s": round(data.size / seconds, 1),
        "seconds_per_slice": round(seconds / slices, 4),
        "peak_rss_mb": round(max(peak[0], max_rss) / 2**20, 1),
        "baseline_rss_mb": round(baseline / 2**20, 1),
        "n_tiles": tiling["n_tiles"],
        "tile_shape": tiling["tile_shape"],
        "processed_voxels": int(tiling["processed_voxels"]),
    }


def _run_in_subprocess(case):
    command = [sys.executable, str(Path(__file__).resolve()), "--case", json.dumps(case)]
    completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if completed.returncode != 0 or not lines:
        return {**case, "error": (completed.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(lines[-1])


def _estimate_seconds(case, rate):
    """Seconds predicted from the previous 3D case's processed-voxel rate (None before the first 3D case)."""
    if case["kind"] != "3d" or rate is None:
        return None
    from models import build_model, tiling_summary

    model = build_model("unet", ndim=3, filters=case["filters"])
    summary = tiling_summary(model, (case["slices"], case["size"], case["size"]), tuple(case["tile"]))
    return summary["processed_voxels"] / rate


def _label(case):
    if case["kind"] == "2d":
        return f"2D U-Net f={case['filters']}, {case['slices']} x {case['size']}x{case['size']} slices"
    return f"3D U-Net f={case['filters']}, {case['slices']}x{case['size']}x{case['size']} volume"


if __name__ == "__main__":
    main()
