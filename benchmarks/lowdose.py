"""Simulated low-dose CT (``ct_lowdose``): speed of both forms, dose scaling, NPS against real low-dose scans.

    python3 benchmarks/lowdose.py            # about 2-3 minutes on 2 CPU cores
    python3 benchmarks/lowdose.py --quick    # smoke run: small sizes, few repeats

Measured:

* seconds per 512 x 512 slice of the REFERENCE form (``utils.data.lowdose.simulate_lowdose_slice``,
  360 views, radon + ramp FBP) on a synthetic abdomen at 0.7 mm, and the full-dose noise std
  that ``FULL_DOSE_PHOTONS`` gives there (the added noise at dose 0.5 is the full-dose noise);
* total noise std against dose on that slice: ``sqrt(full^2 + added^2) / full`` against
  ``1 / sqrt(dose)`` (goal: within 10 %), and the NPS at zero frequency relative to its peak;
* training-pipeline throughput (``utils.learning.pipeline.make_dataset``, 128 x 128 patches, batch 16, in
  memory, 1024 samples an epoch, a warm-up epoch and then 4 timed epochs of each noise, alternating) with
  the FAST form against Gaussian noise (goal: at least half);
* ``figures/lowdose_nps.png``: the radially averaged NPS (normalised to unit area, cycles/mm) of the
  reference simulation and of the fast form at 0.977 mm, against the NPS measured in flat soft-tissue
  ROIs of the real low-dose volumes of TCIA Soft-tissue-Sarcoma (skipped with a message when the
  read-only shared data are absent).

Writes ``benchmarks/RESULTS_lowdose.md`` and ``benchmarks/RESULTS_lowdose.json`` (atomically).
"""

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if __name__ == "__main__" and not __package__:  # run by path: re-run as python3 -m benchmarks.<name>
    os.execv(sys.executable, [sys.executable, "-m", f"benchmarks.{Path(__file__).stem}", *sys.argv[1:]])
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from benchmarks.common import describe_machine, goal, markdown_table, text_table  # noqa: E402

REAL_LOWDOSE = REPO.parent / "shared" / "data" / "real_ct" / "volumes_sts_lowdose_dicom"
OUT_MD = REPO / "benchmarks" / "RESULTS_lowdose.md"
OUT_JSON = REPO / "benchmarks" / "RESULTS_lowdose.json"
FIGURE = REPO / "figures" / "lowdose_nps.png"
WINDOW = (-1000.0, 400.0)
ROI = 32  # NPS ROIs, pixels


def phantom_slice(size, spacing, seed=3):
    from utils.data.phantom import make_phantom

    return make_phantom(seed, shape=(1, size, size), spacing=(2.5, spacing, spacing))[0].astype(np.float64)


def reference_speed_and_scaling(size, repeats, doses):
    from utils.data.lowdose import radial_nps, simulate_lowdose_slice

    hu = phantom_slice(size, 0.7)
    c, h = size // 2, size // 8
    times, added = [], {}
    for i, dose in enumerate([0.5, *doses]):
        draws = []
        for r in range(repeats if dose == 0.5 else 1):
            start = time.perf_counter()
            draws.append(simulate_lowdose_slice(hu, 0.7, dose, np.random.default_rng([i, r]), return_noise=True))
            times.append(time.perf_counter() - start)
        added[dose] = np.stack(draws)
    full = float(np.std(added[0.5][:, c - h : c + h, c - h : c + h]))
    rows = []
    for dose in doses:
        extra = float(np.std(added[dose][:, c - h : c + h, c - h : c + h]))
        ratio = np.sqrt(full**2 + extra**2) / full
        rows.append({"dose": dose, "added_std_hu": extra, "total_std_ratio": ratio, "expected": 1 / np.sqrt(dose),
                     "error": ratio * np.sqrt(dose) - 1})
    rois = added[0.5][:, c - h : c + h, c - h : c + h]
    _, nps, dc = radial_nps(rois, 0.7, n_bins=8)
    return {"seconds_per_slice": float(np.mean(times)), "slice": [size, size], "pixel_mm": 0.7, "views": 360,
            "full_dose_std_hu_centre": full, "body_std_hu_full_dose": float(np.std(added[0.5][0][hu > -500])),
            "dose_scaling": rows, "nps_zero_over_peak": float(dc / nps.max())}


def pipeline_throughput(shape, n_volumes, patch, batch, epochs, samples_per_volume):
    """Samples per second of the training pipeline with each noise: one warm-up epoch each, then
    ``epochs`` timed epochs of each, alternating (so that a change of the machine's load hits both)."""
    import tensorflow as tf  # noqa: F401

    from utils.data.noise import GaussianNoise, make_noise
    from utils.data.phantom import make_phantom
    from utils.learning.pipeline import PatchSampling, make_dataset

    volumes = [((np.clip(make_phantom(s, shape=shape), *WINDOW) - WINDOW[0]) / (WINDOW[1] - WINDOW[0])).astype(np.float32) for s in range(n_volumes)]
    sampling = PatchSampling(patch)
    noises = {"gaussian": GaussianNoise(0.05), "ct_lowdose": make_noise(0.05, "ct_lowdose", dose=0.25, hu_window=WINDOW)}
    datasets = {name: make_dataset(volumes, sampling, noise, batch, samples_per_volume=samples_per_volume, seed=0) for name, noise in noises.items()}

    def epoch(dataset):
        start, count = time.perf_counter(), 0
        for _, clean in dataset:
            count += int(clean.shape[0])
        return count, time.perf_counter() - start

    for dataset in datasets.values():
        epoch(dataset)
    timings = {name: [] for name in datasets}
    for _ in range(epochs):
        for name, dataset in datasets.items():
            timings[name].append(epoch(dataset))
    rates = {name: sum(n for n, _ in t) / sum(s for _, s in t) for name, t in timings.items()}
    return {"samples_per_s": rates, "ratio": rates["ct_lowdose"] / rates["gaussian"],
            "settings": {"volumes": n_volumes, "shape": list(shape), "patch": list(patch), "batch": batch, "epochs": epochs,
                         "samples_per_epoch": n_volumes * samples_per_volume}}


def flat_rois(hu, size=ROI, stride=ROI // 2):
    """Soft-tissue ROIs whose smoothed content is flat: mean in [-150, 100] HU, smoothed range < 40 HU."""
    from scipy.ndimage import gaussian_filter

    smooth = gaussian_filter(hu, (0, 3, 3))
    found = []
    for z in range(hu.shape[0]):
        for y in range(0, hu.shape[1] - size + 1, stride):
            for x in range(0, hu.shape[2] - size + 1, stride):
                roi, s = hu[z, y : y + size, x : x + size], smooth[z, y : y + size, x : x + size]
                if -150 < roi.mean() < 100 and np.ptp(s) < 40 and roi.min() > -400 and roi.max() < 300:
                    found.append(roi - s)  # the smooth trend out: noise (plus fine texture) left
    return found


def real_nps(folder, max_volumes):
    from utils.data.lowdose import radial_nps
    from utils.data.readers import read_ct

    rois, spacings = [], []
    for path in sorted(p for p in folder.iterdir() if p.is_dir())[:max_volumes]:
        for volume in read_ct(path, WINDOW):
            hu = volume.array.astype(np.float64) * (WINDOW[1] - WINDOW[0]) + WINDOW[0]
            found = flat_rois(hu)
            rois += found
            spacings += [float(volume.spacing[-1])] * len(found)
    if not rois:
        return None
    spacing = float(np.median(spacings))
    f, nps, _ = radial_nps(np.stack(rois), spacing, n_bins=ROI // 2)
    return {"f_per_mm": f / spacing, "nps": nps, "rois": len(rois), "spacing": spacing, "std_hu": float(np.std(np.stack(rois)))}


def simulated_nps(spacing, repeats):
    import tensorflow as tf

    from utils.data.lowdose import fast_lowdose_noise_tf, radial_nps, simulate_lowdose_slice

    size = 256
    hu = phantom_slice(size, spacing, seed=5)
    ref = np.stack([simulate_lowdose_slice(hu, spacing, 0.25, np.random.default_rng(r), return_noise=True) for r in range(repeats)])
    clean = tf.constant(((np.clip(hu, *WINDOW) - WINDOW[0]) / (WINDOW[1] - WINDOW[0])).astype(np.float32))
    fast = np.stack([fast_lowdose_noise_tf(clean, tf.constant([r, 1], tf.int64), 0.25, WINDOW, pixel_spacing_mm=spacing).numpy() for r in range(repeats)])
    fast *= WINDOW[1] - WINDOW[0]
    out = {}
    for name, noise in (("reference", ref), ("fast", fast)):
        rois = [noise[r, y : y + ROI, x : x + ROI] for r in range(repeats) for y in range(0, size - ROI + 1, ROI) for x in range(0, size - ROI + 1, ROI)
                if np.all(hu[y : y + ROI, x : x + ROI] > -200)]
        f, nps, _ = radial_nps(np.stack(rois), spacing, n_bins=ROI // 2)
        out[name] = {"f_per_mm": f / spacing, "nps": nps, "rois": len(rois)}
    return out


def nps_figure(sim, real, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for name, style in (("reference", "-"), ("fast", "--")):
        curve = sim[name]
        area = np.trapezoid(curve["nps"], curve["f_per_mm"])
        ax.plot(curve["f_per_mm"], curve["nps"] / area, style, label=f"simulation, {name} form (ramp FBP)")
    if real is not None:
        area = np.trapezoid(real["nps"], real["f_per_mm"])
        ax.plot(real["f_per_mm"], real["nps"] / area, "k-o", ms=3, label=f"real low-dose CT, STS ({real['rois']} flat ROIs)")
    ax.set_xlabel("radial frequency (cycles/mm)")
    ax.set_ylabel("NPS / its area")
    ax.set_title(f"Noise power spectra, {ROI}x{ROI} ROIs at about 0.98 mm")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    from utils.base.atomic import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    size, repeats = (128, 2) if args.quick else (512, 3)
    doses = (0.5, 0.25, 0.1)
    ref = reference_speed_and_scaling(size, repeats, doses[1:])
    ref["dose_scaling"].insert(0, {"dose": 0.5, "added_std_hu": ref["full_dose_std_hu_centre"], "total_std_ratio": np.sqrt(2.0),
                                   "expected": np.sqrt(2.0), "error": 0.0})
    print(f"reference: {ref['seconds_per_slice']:.2f} s per {size}x{size} slice; full-dose std at the centre {ref['full_dose_std_hu_centre']:.1f} HU")
    pipe = pipeline_throughput((8, 128, 128) if args.quick else (32, 256, 256), 2, (64, 64) if args.quick else (128, 128), 16,
                               epochs=1 if args.quick else 4, samples_per_volume=16 if args.quick else 512)
    print(f"pipeline: gaussian {pipe['samples_per_s']['gaussian']:.0f}, ct_lowdose {pipe['samples_per_s']['ct_lowdose']:.0f} samples/s (ratio {pipe['ratio']:.2f})")
    spacing = 0.977
    sim = simulated_nps(spacing, 2 if args.quick else 4)
    real = None
    if REAL_LOWDOSE.is_dir():
        real = real_nps(REAL_LOWDOSE, 3 if args.quick else 8)
    else:
        print(f"{REAL_LOWDOSE} is absent: the real low-dose NPS is skipped")
    nps_figure(sim, real, FIGURE)
    scaling_error = max(abs(r["error"]) for r in ref["dose_scaling"])
    peak = lambda c: float(c["f_per_mm"][int(np.argmax(c["nps"]))])  # noqa: E731
    goals = {
        "dose_scaling": goal("total std x sqrt(dose) within 10 % of 1", scaling_error, scaling_error <= 0.10),
        "nps_zero": goal("NPS(0) < 10 % of the peak", ref["nps_zero_over_peak"], ref["nps_zero_over_peak"] < 0.10),
        "throughput": goal("fast form >= 0.5x Gaussian samples/s", pipe["ratio"], pipe["ratio"] >= 0.5),
    }
    report = {"quick": args.quick, "reference": ref, "pipeline": pipe, "goals": goals,
              "nps_peak_per_mm": {"reference": peak(sim["reference"]), "fast": peak(sim["fast"]), "real": None if real is None else peak(real)},
              "real_lowdose": None if real is None else {"rois": real["rois"], "spacing_mm": real["spacing"], "roi_std_hu": real["std_hu"]},
              "machine": describe_machine()}
    rows = [[f"{r['dose']:g}", f"{r['added_std_hu']:.1f}", f"{r['total_std_ratio']:.3f}", f"{r['expected']:.3f}", f"{100 * r['error']:+.1f} %"] for r in ref["dose_scaling"]]
    header = ["dose", "added std (HU)", "total / full std", "1/sqrt(dose)", "error"]
    print(text_table(header, rows))
    lines = [
        "# Simulated low-dose CT (`ct_lowdose`)",
        "",
        f"`python3 benchmarks/lowdose.py{' --quick' if args.quick else ''}`; machine: {report['machine']['cpu_model']}, "
        f"{report['machine']['usable_cpus']} usable CPUs; commit {report['machine']['git_commit']}; "
        f"load average before it ran {report['machine']['load_average'][0]:.2f}.",
        "",
        f"- Reference form (radon, Poisson + electronic noise, ramp FBP, 360 views): **{ref['seconds_per_slice']:.2f} s per {size}x{size} slice**.",
        f"- Full-dose noise that `FULL_DOSE_PHOTONS` gives on the synthetic abdomen at 0.7 mm: {ref['full_dose_std_hu_centre']:.1f} HU at the centre, "
        f"{ref['body_std_hu_full_dose']:.1f} HU over the body.",
        f"- NPS at zero frequency / NPS peak: {ref['nps_zero_over_peak']:.3f}.",
        f"- Training pipeline ({pipe['settings']['patch'][0]}x{pipe['settings']['patch'][1]} patches, batch {pipe['settings']['batch']}, "
        f"{pipe['settings']['samples_per_epoch']} samples an epoch, {pipe['settings']['epochs']} timed epochs of each noise, alternating): Gaussian "
        f"{pipe['samples_per_s']['gaussian']:.0f} samples/s, fast `ct_lowdose` {pipe['samples_per_s']['ct_lowdose']:.0f} samples/s: **ratio {pipe['ratio']:.2f}**.",
        "",
        "## Total noise against dose (centre of the slice)",
        "",
        "The added noise at dose 0.5 is the full-dose noise by construction (the reference row); the others are measured against it.",
        "",
        *markdown_table(header, rows, "rrrrr"),
        "",
        "## NPS (figures/lowdose_nps.png)",
        "",
        f"Peak of the radially averaged NPS: reference {report['nps_peak_per_mm']['reference']:.3f}, fast {report['nps_peak_per_mm']['fast']:.3f} cycles/mm"
        + ("" if real is None else f", real low-dose STS volumes {report['nps_peak_per_mm']['real']:.3f} cycles/mm ({real['rois']} flat soft-tissue ROIs, "
           f"residual std {real['std_hu']:.1f} HU)") + ".",
        "The simulation reconstructs with the plain ramp filter; clinical scanners use smoother kernels, so real noise "
        "has its power at lower frequencies. The fast form follows the reference, not the scanner.",
        "",
        "## Goals",
        "",
        *markdown_table(["goal", "value", "status"], [[g["target"], f"{g['value']:.3f}", g["status"]] for g in goals.values()], "lrl"),
        "",
    ]
    from utils.base.atomic import write_json, write_text

    write_text(OUT_MD, "\n".join(lines))
    write_json(OUT_JSON, report)
    print(f"wrote {OUT_MD}, {OUT_JSON} and {FIGURE}")


if __name__ == "__main__":
    main()
