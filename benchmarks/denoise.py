"""Seconds and peak memory of ``Denoise_CT.py`` on a large volume, per method.

    python3 -m benchmarks.denoise            # 300x512x512 (about 15 minutes on 2 CPU cores)
    python3 -m benchmarks.denoise --quick    # 24x64x64 smoke run

The test volume is a seeded phantom in HU (``utils.data.phantom``, 0.8 mm pixels, 1 mm slices) with 5 %
Gaussian noise on the [-1000, 400] HU window, stored as int16 NIfTI. Each method runs as a user runs
it, ``Denoise_CT.py VOLUME --out OUT --no-figure`` in its own process; wall seconds include reading
and writing, and peak memory is the process's highest resident set size (polled every 0.1 s). BM4D
on the whole volume would take about a quarter of an hour here; it runs on a central crop and its time is
extrapolated in proportion to the voxel count (BM4D's cost is linear in the voxels for a fixed
search window), which the table says: the crop's wall time plus its denoising time (the report's
``denoise_seconds``) times the voxel ratio less one.

Writes ``benchmarks/RESULTS_denoise.md`` and ``.json`` (``--out`` for another stem).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__" and not __package__:  # run by path: re-run as python3 -m benchmarks.<name>
    os.execv(sys.executable, [sys.executable, "-m", f"benchmarks.{Path(__file__).stem}", *sys.argv[1:]])

import numpy as np

from benchmarks.common import REPO, describe_machine, goal, markdown_table, text_table
from utils.base.atomic import write_json, write_text

SHAPE = (300, 512, 512)
QUICK_SHAPE = (24, 64, 64)
BM4D_CROP = (48, 128, 128)
QUICK_BM4D_CROP = (8, 32, 32)
NOISE = 0.05
HU_WINDOW = (-1000.0, 400.0)
MEMORY_GOAL_GB = 8.0  # a 300x512x512 volume must denoise on an ordinary 16 GB workstation

# (label, Denoise_CT.py arguments): the default model choice, the shipped volume model, BM4D.
CASES = (
    ("default model (2D, slice by slice)", []),
    ("ResPrU-Net 3D (tiled)", ["--model", "trained_models/resprunet3d_noise0.05.keras"]),
    ("BM4D", ["--method", "bm4d"]),
)


def write_volume(path, shape, seed=0):
    """A noisy phantom volume in HU as int16 NIfTI, axial slices along the third NIfTI axis."""
    import nibabel

    from utils.data.phantom import make_phantom

    hu = make_phantom(seed, shape, (1.0, 0.8, 0.8))
    rng = np.random.default_rng(seed)
    width = HU_WINDOW[1] - HU_WINDOW[0]
    for index in range(shape[0]):  # slice by slice: no second full-size float64 copy
        hu[index] += np.float32(NOISE * width) * rng.standard_normal(shape[1:], dtype=np.float32)
    data = np.clip(np.rint(hu), -32768, 32767).astype(np.int16).transpose(2, 1, 0)
    nibabel.save(nibabel.Nifti1Image(data, np.diag([0.8, 0.8, 1.0, 1.0])), path)
    return path


def central_crop(source, target, crop):
    import nibabel

    image = nibabel.load(source)
    data = np.asarray(image.dataobj)
    box = tuple(slice((n - c) // 2, (n - c) // 2 + c) for n, c in zip(data.shape, crop[::-1]))
    nibabel.save(nibabel.Nifti1Image(data[box], image.affine), target)
    return target


def run_case(volume, out, arguments):
    """Run Denoise_CT.py; return (wall seconds, peak RSS bytes, its JSON report)."""
    import psutil

    command = [sys.executable, "Denoise_CT.py", str(volume), "--out", str(out), "--no-figure", "--noise", str(NOISE), *arguments]
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    watched, peak = psutil.Process(process.pid), 0
    while process.poll() is None:
        try:
            peak = max(peak, watched.memory_info().rss + sum(c.memory_info().rss for c in watched.children(recursive=True)))
        except psutil.Error:
            pass
        time.sleep(0.1)
    seconds = time.perf_counter() - started
    output = process.stdout.read()
    if process.returncode != 0:
        raise SystemExit(f"error: {' '.join(command)} failed with status {process.returncode}")
    return seconds, peak, json.loads(output.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small volume (smoke test)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "RESULTS_denoise", help="results stem (.md and .json)")
    args = parser.parse_args()
    shape, crop = (QUICK_SHAPE, QUICK_BM4D_CROP) if args.quick else (SHAPE, BM4D_CROP)

    rows, records = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print(f"writing a {shape} test volume ...", flush=True)
        volume = write_volume(tmp / "volume.nii.gz", shape)
        for label, arguments in CASES:
            source, scale, note = volume, 1.0, ""
            if "bm4d" in arguments:
                source = central_crop(volume, tmp / "crop.nii.gz", crop)
                scale = float(np.prod(shape)) / float(np.prod(crop))
                note = f"measured on a {'x'.join(map(str, crop))} crop, denoising time x {scale:.0f} (voxels)"
            print(f"{label} ...", flush=True)
            seconds, peak, report = run_case(source, tmp / f"out_{len(records)}.nii.gz", arguments)
            record = {
                "method": label,
                "model": report["model"],
                "seconds": round(seconds + report["denoise_seconds"] * (scale - 1.0), 1),
                "denoise_seconds": round(report["denoise_seconds"] * scale, 1),
                "peak_memory_gb": round(peak / 2**30, 2),
                "extrapolated": scale != 1.0,
                "note": note,
            }
            records.append(record)
            rows.append([label, f"{record['seconds']:.1f}", f"{record['denoise_seconds']:.1f}", f"{record['peak_memory_gb']:.2f}", note or "whole volume"])
    print(text_table(["method", "seconds", "denoising s", "peak GB", "how"], rows))

    bounded = [r["peak_memory_gb"] for r in records if not r["extrapolated"]]
    goals = {"memory": goal(f"peak memory under {MEMORY_GOAL_GB:g} GB on {shape}", max(bounded), max(bounded) < MEMORY_GOAL_GB)}
    machine = describe_machine()  # its load average shows whether other jobs shared the CPU
    write_json(args.out.with_suffix(".json"), {"shape": list(shape), "noise": NOISE, "cases": records, "goals": goals, "machine": machine})
    lines = [
        "# Denoise_CT.py on a large volume",
        "",
        f"Made by `python3 -m benchmarks.denoise{' --quick' if args.quick else ''}`: a {'x'.join(map(str, shape))} noisy phantom "
        f"({NOISE:g} sigma on the [-1000, 400] HU window, int16 NIfTI) denoised by `Denoise_CT.py --noise {NOISE:g} --no-figure`, "
        "one process per method; seconds are wall time including reading and writing, peak memory the highest resident set size.",
        "",
        *markdown_table(["method", "seconds", "of which denoising", "peak memory (GB)", "how"], rows, "lrrrl"),
        "",
        f"Goal: {goals['memory']['target']}: {goals['memory']['status']} ({goals['memory']['value']:.2f} GB).",
        "",
        f"Machine: {machine['cpu_model']}, {machine['usable_cpus']} CPUs, {machine['memory_gb']} GB; commit {machine['git_commit']}; "
        f"load average at the end {machine['load_average'][0]} (above {machine['usable_cpus']}: other jobs shared the CPU and the times are inflated).",
    ]
    write_text(args.out.with_suffix(".md"), "\n".join(lines) + "\n")
    print(f"wrote {args.out.with_suffix('.md')} and .json")


if __name__ == "__main__":
    main()
