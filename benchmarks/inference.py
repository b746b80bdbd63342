"""Inference throughput and peak memory of tiled 3D U-Net and 2D U-Net prediction, against TV 3D and BM4D.

    python3 benchmarks/inference.py                   # 512x512 volumes of 64, 128, 300 slices + a 2D slice
    python3 benchmarks/inference.py --slices 64       # one volume size
    python3 benchmarks/inference.py --quick           # smoke test in seconds (tiny sizes)
    python3 benchmarks/inference.py --budget-minutes 10   # skip cases estimated to overrun
    python3 benchmarks/inference.py --baselines       # U-Nets only, no TV 3D / BM4D
    python3 benchmarks/inference.py --baseline-max-slices 64   # TV 3D and BM4D on the 64-slice volume only

Each case runs in a fresh subprocess so that peak resident memory (RSS) is that case's alone. Peak RSS
is the larger of a psutil sampler (every 20 ms) and the kernel's high-water mark for the case's own process
(``benchmarks.common.peak_rss_bytes``; not ``ru_maxrss``, which a subprocess inherits from the parent that
built the phantom volumes and which once made a 3.3 GB case read 6.4 GB); ``baseline_rss_mb`` is the
RSS after TensorFlow, the model and the input volume are in memory, so ``peak - baseline`` is what
tiling costs. Weights are random (seeded): speed does not depend on them. Throughput counts input voxels
(``voxels/s``); ``processed_voxels`` adds the tile overlaps that buy exact, seam-free output. The model
is called once on one tile (or slice) before the clock starts, so tracing and XLA compilation, paid
once per tile shape, are not timed. On a GPU, ``gpu_peak_memory_mb`` is the backend allocator's peak.

The volumes are seeded phantoms (``benchmarks.common.windowed_phantom``: the default anatomy at
any size, on [0, 1]) plus Gaussian noise of sigma 0.05, made once per depth by this process and
read by every case of that depth, so the baselines denoise the very volume the 3D U-Net does:
``tv3d`` is ``utils.solvers.variational.tv_denoise`` with its defaults (weight from sigma, stopping at its
tolerance; traced on a small crop before the clock starts), ``bm4d`` is
``utils.solvers.classical.bm4d_denoise`` at the true sigma. BM4D is the expensive one: about 50 us and 1 KB
of memory per voxel on 2 busy CPU cores (measured on 32x128x128; so roughly 15 minutes and 17 GB
for 64x512x512), hence ``--baseline-max-slices``. The 2D U-Net case predicts random slices.

Results: printed, and written to ``benchmarks/results/inference.json`` (atomically).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if __name__ == "__main__" and not __package__:  # run by path: re-run as python3 -m benchmarks.<name>
    os.execv(sys.executable, [sys.executable, "-m", f"benchmarks.{Path(__file__).stem}", *sys.argv[1:]])
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks.common import (  # noqa: E402
    accelerator_peak_memory,
    describe_machine,
    peak_rss_bytes,
    windowed_phantom,
)

DEFAULT_OUT = REPO / "benchmarks" / "results" / "inference.json"
DEFAULT_TILE = (96, 256, 256)  # ~4 M voxels per tile: about 4 GB RSS for the f=32 3D U-Net in float32
BASELINES = ("tv3d", "bm4d")
NOISE_SIGMA = 0.05
PHANTOM_SEED = 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, nargs="+", default=[64, 128, 300], help="volume depths (512x512 slices)")
    parser.add_argument("--size", type=int, default=512, help="in-plane size of volumes and of the 2D slices")
    parser.add_argument("--size-2d", type=int, help="in-plane size of the 2D slices (default --size)")
    parser.add_argument("--tile", type=int, nargs=3, default=list(DEFAULT_TILE), metavar=("D", "H", "W"))
    parser.add_argument("--filters", type=int, default=32)
    parser.add_argument("--slices-2d", type=int, default=8, help="2D slices timed after a warm-up slice")
    parser.add_argument("--no-2d", action="store_true", help="skip the 2D U-Net case")
    parser.add_argument(
        "--baselines",
        nargs="*",
        choices=BASELINES,
        default=list(BASELINES),
        help="classical denoisers timed on the same volumes (none: U-Nets only)",
    )
    parser.add_argument(
        "--baseline-max-slices", type=int, help="run the baselines on volumes of at most this many slices"
    )
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
    size_2d = args.size_2d or args.size
    cases = [] if args.no_2d else [{"kind": "2d", "size": size_2d, "slices": args.slices_2d, "filters": args.filters}]
    for n in args.slices:
        cases.append({"kind": "3d", "size": args.size, "slices": n, "tile": args.tile, "filters": args.filters})
        if args.baseline_max_slices is None or n <= args.baseline_max_slices:
            cases += [{"kind": kind, "size": args.size, "slices": n, "sigma": NOISE_SIGMA} for kind in args.baselines]

    started, results, rates = time.monotonic(), [], {}
    with tempfile.TemporaryDirectory(prefix="inference_volumes_") as folder:
        for case in cases:
            if case["kind"] != "2d":
                case["volume"] = str(_phantom_volume(Path(folder), case["slices"], case["size"]))
            estimate = _estimate_seconds(case, rates.get(case["kind"]))
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
            rates[case["kind"]] = result["processed_voxels"] / result["seconds"]
            print(
                f"{label}: {result['seconds']:.1f} s, {result['voxels_per_s'] / 1e6:.3f} Mvoxel/s, "
                f"peak RSS {result['peak_rss_mb']:.0f} MB (baseline {result['baseline_rss_mb']:.0f} MB)"
                + (f", {result['n_tiles']} tiles of {result['tile_shape']}" if case["kind"] == "3d" else ""),
                flush=True,
            )

    from utils.base.atomic import write_json

    for result in results:
        result.pop("volume", None)  # a temporary file, gone now
    report = {
        "benchmark": "inference",
        "quick": args.quick,
        "volumes": f"phantom seed {PHANTOM_SEED} windowed to [0, 1] plus Gaussian noise sigma {NOISE_SIGMA}",
        "machine": describe_machine(),
        "cases": results,
    }
    write_json(args.out, report)
    print(f"wrote {args.out}")


def run_case(case):
    """Prepare the method, denoise once (timed) and report speed and memory. Runs inside the subprocess."""
    import numpy as np
    import psutil

    process = psutil.Process()
    peak = [process.memory_info().rss]
    stop = threading.Event()

    def sample():
        while not stop.wait(0.02):
            peak[0] = max(peak[0], process.memory_info().rss)

    if case["kind"] == "2d":
        data = np.random.default_rng(0).random((case["slices"], case["size"], case["size"]), dtype=np.float32)
    else:
        data = np.load(case["volume"], allow_pickle=False)
    denoise, record = _prepare_method(case, data)
    baseline = process.memory_info().rss
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    out = denoise(data)
    seconds = time.perf_counter() - start
    stop.set()
    sampler.join()
    assert out.shape == data.shape and np.isfinite(out).all()
    max_rss = peak_rss_bytes()
    gpu_peak = accelerator_peak_memory() if case["kind"] in ("2d", "3d") else None
    if gpu_peak is not None:
        record["gpu_peak_memory_mb"] = round(gpu_peak / 2**20, 1)
    return {
        **case,
        **record,
        "shape": list(data.shape),
        "voxels": int(data.size),
        "seconds": round(seconds, 3),
        "voxels_per_s": round(data.size / seconds, 1),
        "seconds_per_slice": round(seconds / case["slices"], 4),
        "peak_rss_mb": round(max(peak[0], max_rss) / 2**20, 1),
        "baseline_rss_mb": round(baseline / 2**20, 1),
    }


def _prepare_method(case, data):
    """``(denoise(array) -> array, record)`` for a case, with tracing and model building done."""
    if case["kind"] == "tv3d":
        from utils.solvers.variational import tv_denoise

        # Traces the solver (one trace serves every volume size), so the clock sees iterations only.
        tv_denoise(data[:4, :16, :16], sigma=case["sigma"])
        return (lambda volume: tv_denoise(volume, sigma=case["sigma"])), _whole_volume_record("tv3d", data)
    if case["kind"] == "bm4d":
        from utils.solvers.classical import bm4d_denoise

        return (lambda volume: bm4d_denoise(volume, case["sigma"])), _whole_volume_record("bm4d", data)

    import keras

    import numpy as np

    from models import build_model, model_info, predict, tiling_summary

    keras.utils.set_random_seed(0)
    ndim = 3 if case["kind"] == "3d" else 2
    model = build_model("unet", ndim=ndim, filters=case["filters"])
    record = {"model": f"unet_{ndim}d", "params": model.count_params()}
    if ndim == 3:
        kwargs = {"tile_shape": tuple(case["tile"])}
        tiling = tiling_summary(model, data.shape, **kwargs)
        # Every tile has the same shape: one call compiles for it (XLA on JAX and GPUs), as a long run would once.
        fed_shape = [tile + 2 * model_info(model).shrink for tile in tiling["tile_shape"]]
        model.predict_on_batch(np.zeros((1, *fed_shape, 1), np.float32))
    else:
        kwargs = {"batch_size": 1}
        predict(model, data[:1], progress=False)  # trace the predict function once, as a long run would
        tiling = {"n_tiles": len(data), "tile_shape": list(data.shape[1:]), "processed_voxels": data.size}
    record.update(
        n_tiles=tiling["n_tiles"], tile_shape=tiling["tile_shape"], processed_voxels=int(tiling["processed_voxels"])
    )
    return (lambda array: predict(model, array, progress=False, **kwargs)), record


def _whole_volume_record(model, data):
    return {"model": model, "n_tiles": 1, "tile_shape": list(data.shape), "processed_voxels": int(data.size)}


def _phantom_volume(folder, slices, size):
    """Path of the noisy [0, 1] phantom volume of this depth and size, written on first request."""
    path = folder / f"phantom_{slices}x{size}x{size}.npy"
    if not path.exists():
        import numpy as np

        clean = windowed_phantom((slices, size, size), PHANTOM_SEED)
        noise = np.random.default_rng(PHANTOM_SEED).standard_normal(clean.shape, dtype=np.float32)
        np.save(path, clean + np.float32(NOISE_SIGMA) * noise, allow_pickle=False)
    return path


def _run_in_subprocess(case):
    command = [sys.executable, "-m", "benchmarks.inference", "--case", json.dumps(case)]
    completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if completed.returncode != 0 or not lines:
        return {**case, "error": (completed.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(lines[-1])


def _estimate_seconds(case, rate):
    """Seconds predicted from the previous case of the same kind's processed-voxel rate (None before it)."""
    if case["kind"] == "2d" or rate is None:
        return None
    shape = (case["slices"], case["size"], case["size"])
    if case["kind"] != "3d":
        return shape[0] * shape[1] * shape[2] / rate
    from models import build_model, tiling_summary

    model = build_model("unet", ndim=3, filters=case["filters"])
    summary = tiling_summary(model, shape, tuple(case["tile"]))
    return summary["processed_voxels"] / rate


def _label(case):
    volume = f"{case['slices']}x{case['size']}x{case['size']} volume"
    if case["kind"] == "2d":
        return f"2D U-Net f={case['filters']}, {case['slices']} x {case['size']}x{case['size']} slices"
    if case["kind"] == "3d":
        return f"3D U-Net f={case['filters']}, {volume}"
    return f"{'TV 3D' if case['kind'] == 'tv3d' else 'BM4D'}, {volume}"


if __name__ == "__main__":
    main()
