"""Denoising simulated and real low-dose CT: BM3D against the Gaussian-trained and the ct_lowdose-trained 2D U-Nets.

    python3 -m studies.lowdose_quality                 # about 10 minutes on 2 CPU cores
    python3 -m studies.lowdose_quality --quick --out /tmp/x   # smoke run: 1 small crop, 1 real slice

Part A, simulated low dose with a clean reference. Clean TEST slices of the committed patient split
(``data/real_ct_split.json``, ``utils.data.real_ct_split.test_paths``): ``CRLM_SLICES`` evenly spaced slices of
the middle half of the TCIA Colorectal-Liver-Metastases series and every axial slice of the TCIA
COVID-19-NY-SBU test patients. Each whole 512 x 512 slice (HU, its own pixel spacing from the DICOM
header) gets the REFERENCE low-dose form (``utils.data.noise.CTLowDoseNoise.sample_numpy``: radon over 360
views, Poisson + electronic noise, ramp FBP) at each dose of ``DOSES`` from
``numpy.random.default_rng([SEED, slice_index, dose_index])``; the central ``CROP`` x ``CROP`` pixels of
the clean and noisy slice (window [-1000, 400] HU -> [0, 1], not clipped after the noise) are scored
with ``utils.data.metrics`` (PSNR with data range 1, SSIM with data range 1, Gaussian window 11). Methods:

* ``noisy``: the input;
* ``bm3d_est``: BM3D with sigma = ``utils.data.noise_level.estimate_scan_sigma`` of the noisy crop;
* ``bm3d_tuned``: BM3D with sigma = m x that estimate, m the value of ``MULTIPLIERS`` with the highest mean
  PSNR over this dose's crops (``utils.application.tuning.grid_search``, as ``utils.application.tuning._multiplier_search`` does,
  with a grid reaching higher because the white-noise estimate under-reads correlated noise). m is chosen
  on the test crops themselves: an oracle, an upper bound for BM3D;
* the shipped 2D models ``unet2d_noise0.02``, ``unet2d_noise0.05`` (Gaussian-trained), ``unet2d_blind``
  (Gaussian, blind range) and ``unet2d_lowdose`` (trained with ``--noise-model ct_lowdose``), each if its
  file exists in ``--models-dir``, applied to the crop whole (``models.inference.predict``).

Part B, REAL low-dose scans without a reference: the TEST volumes of kind "lowdose" of the split (TCIA
Soft-tissue-Sarcoma PET/CT attenuation CT, 10-18 mAs). Per volume, ``REAL_SLICES`` evenly spaced slices of
its middle half are denoised slice by slice by the same methods (BM3D: sigma estimated on the whole noisy
volume; ``bm3d_tuned`` uses the multiplier tuned at dose 0.25 in part A). Measured on the slices:

* noise std (HU): regions of ``ROI`` x ``ROI`` pixels on a grid of stride ``ROI // 2`` that are flat soft tissue
  in the NOISY image smoothed by a Gaussian of ``SMOOTH_SIGMA`` pixels (smoothed mean in [-150, 100] HU,
  smoothed range < 40 HU, in-body: no pixel of the smoothed image below -300 HU); the std of each method's
  pixels in the SAME regions, median over regions;
* edge 10-90 % rise width (pixels): edges found on the smoothed noisy image where the gradient magnitude
  (above its 80th percentile) is a local maximum along its direction and the step across +-``EDGE_CLASSIFY``
  pixels is air/skin (low side < -700 HU, high side in [-250, 250] HU), fat/muscle (low side in [-150, -50] HU,
  high side in [0, 100] HU) or soft tissue/bone (low side in [-150, 150] HU, high side > 250 HU); per slice up
  to ``EDGES_PER_KIND`` of each kind, at least ``EDGE_SPACING`` pixels from any other, strongest first. The
  profile across each edge, bilinear on every method's image along the gradient direction over
  +-``EDGE_HALF`` pixels at 0.25-pixel steps, averaged over 5 parallel lines -2..2 pixels along the edge,
  is normalised between its end plateaus (mean of the first and last 2 pixels); the width is the distance
  from its first 10 % crossing to its first 90 % crossing (linear interpolation). The median over edges of
  each kind is reported, and as a ratio to BM3D's median (< 1: sharper than BM3D);
* ``figures/lowdose_real_before_after.png``: one real slice, noisy | BM3D | Gaussian model | ct_lowdose model.

Writes ``studies/RESULTS_lowdose_quality.md`` and ``.json`` (atomically; with ``--out DIR`` all three
files go to DIR).
"""

import argparse
import math
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

WINDOW = (-1000.0, 400.0)
DOSES = (0.25, 0.1)
SEED = 2026
CROP = 256
QUICK_CROP = 96  # --quick: one clean slice, simulated and scored on its central 96 x 96 pixels only
CRLM_SLICES = 4
MULTIPLIERS = (0.8, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0)
MODEL_STEMS = ("unet2d_noise0.02", "unet2d_noise0.05", "unet2d_blind", "unet2d_lowdose")
LOWDOSE_STEM = "unet2d_lowdose"
REAL_SLICES = 5
ROI = 16
SMOOTH_SIGMA = 3.0
EDGE_HALF = 6
EDGE_CLASSIFY = 4  # pixels either side at which an edge's two tissues are read
EDGES_PER_KIND = 4  # per slice
EDGE_KINDS = ("air/skin", "fat/muscle", "soft tissue/bone")
EDGE_SPACING = 10
OUT_MD = REPO / "studies" / "RESULTS_lowdose_quality.md"
OUT_JSON = REPO / "studies" / "RESULTS_lowdose_quality.json"
FIGURE = REPO / "figures" / "lowdose_real_before_after.png"


def to_hu(x):
    return np.asarray(x, np.float64) * (WINDOW[1] - WINDOW[0]) + WINDOW[0]


def middle_indices(depth, count):
    """``count`` evenly spaced indices of the middle half of ``range(depth)`` (all when it is shorter)."""
    lo, hi = depth // 4, max(depth // 4 + 1, (3 * depth) // 4)
    if hi - lo <= count:
        return list(range(lo, hi))
    return sorted({int(lo + (k + 0.5) * (hi - lo) / count) for k in range(count)})


def central_crop(image, size):
    h, w = image.shape[-2:]
    size_y, size_x = min(size, h), min(size, w)
    top, left = (h - size_y) // 2, (w - size_x) // 2
    return image[..., top : top + size_y, left : left + size_x]


# ============================================================================== data
def clean_test_slices(root, quick):
    """``[(name, windowed (H, W) slice, in-plane spacing mm)]``: CRLM middle slices and COVID axial test slices."""
    from utils.data.readers import read_ct
    from utils.data.real_ct_split import test_paths

    out = []
    for path in test_paths(root, kinds=("clean",)):
        text = str(path)
        if "series_crlm" in text:
            (volume,) = read_ct(path, WINDOW)
            for z in middle_indices(volume.array.shape[0], 1 if quick else CRLM_SLICES):
                out.append((f"CRLM_z{z:02d}", volume.array[z], float(volume.spacing[-1])))
        elif "covid19" in text and path.name == "axial":
            for k, volume in enumerate(read_ct(path, WINDOW)):
                out.append((f"COVID_{path.parent.name}_{k}", volume.array[0], float(volume.spacing[-1])))
    if quick:
        out = out[:1]
    return out


def real_lowdose_volumes(root, quick):
    from utils.data.readers import read_ct
    from utils.data.real_ct_split import test_paths

    paths = test_paths(root, kinds=("lowdose",))[: 1 if quick else None]
    return [(Path(p).name, read_ct(p, WINDOW)[0]) for p in paths]


def load_models(folder):
    """``{stem: keras model}`` of the ``MODEL_STEMS`` found in ``folder``, and the notes on the absent ones."""
    from models.storage import load_model

    models, notes = {}, []
    for stem in MODEL_STEMS:
        path = Path(folder) / f"{stem}.keras"
        if path.is_file():
            models[stem] = load_model(path)[0]
        else:
            notes.append(f"{path} is absent: {stem} is not in the comparison")
    return models, notes


def run_model(model, images):
    from models.inference import predict

    return predict(model, np.asarray(images, np.float32), batch_size=4, progress=False)


def bm3d(image, sigma):
    from utils.solvers.classical import bm3d_denoise

    return bm3d_denoise(np.asarray(image, np.float32), float(sigma), progress=False)


# ============================================================================== part A
def simulated_study(slices, models, quick):
    """PSNR/SSIM per method and dose on the central crops; the tuned BM3D multiplier per dose."""
    from utils.data.metrics import psnr, ssim
    from utils.data.noise import CTLowDoseNoise
    from utils.data.noise_level import estimate_scan_sigma
    from utils.application.tuning import grid_search

    crop = QUICK_CROP if quick else CROP
    multipliers = (1.0, 2.0) if quick else MULTIPLIERS
    results = {}
    for d, dose in enumerate(DOSES[:1] if quick else DOSES):
        clean, noisy = [], []
        for i, (name, image, spacing) in enumerate(slices):
            source = central_crop(image, crop) if quick else image  # quick: simulate the crop only (less body, less noise)
            model = CTLowDoseNoise(dose=dose, hu_window=WINDOW, pixel_spacing_mm=spacing)
            started = time.perf_counter()
            sim = model.sample_numpy(source, np.random.default_rng([SEED, i, d]))
            print(f"  dose {dose:g}: {name} simulated in {time.perf_counter() - started:.1f} s", flush=True)
            clean.append(central_crop(image, crop))
            noisy.append(central_crop(sim, crop))
        clean, noisy = np.stack(clean), np.stack(noisy)
        estimates = [estimate_scan_sigma(n) for n in noisy]
        bm3d_runs = {}

        def mean_psnr(m):
            bm3d_runs[m] = [bm3d(n, m * s) for n, s in zip(noisy, estimates)]
            return float(np.mean([psnr(c, e) for c, e in zip(clean, bm3d_runs[m])]))

        best, _ = grid_search(mean_psnr, multipliers)
        outputs = {"noisy": noisy, "bm3d_est": np.stack(bm3d_runs[1.0]), "bm3d_tuned": np.stack(bm3d_runs[best])}
        for stem, net in models.items():
            outputs[stem] = run_model(net, noisy)
        table = {}
        for method, estimate in outputs.items():
            p = [psnr(c, e) for c, e in zip(clean, estimate)]
            s = [ssim(c, e) for c, e in zip(clean, estimate)]
            table[method] = {"psnr": float(np.mean(p)), "psnr_std": float(np.std(p)), "ssim": float(np.mean(s)),
                             "ssim_std": float(np.std(s)), "per_slice_psnr": [float(v) for v in p]}
        added = (noisy - clean) * (WINDOW[1] - WINDOW[0])
        body = to_hu(clean) > -500
        results[f"{dose:g}"] = {
            "dose": dose, "methods": table, "bm3d_multiplier": best,
            "bm3d_multiplier_psnr": {f"{m:g}": float(np.mean([psnr(c, e) for c, e in zip(clean, bm3d_runs[m])])) for m in multipliers},
            "sigma_estimates": [float(v) for v in estimates],
            "added_std_hu_body": float(np.std(added[body])) if body.any() else float(np.std(added)),
        }
        print(f"dose {dose:g}: " + ", ".join(f"{k} {v['psnr']:.2f} dB" for k, v in table.items()) + f" (BM3D multiplier {best:g})", flush=True)
    return results


# ============================================================================== part B
def flat_regions(smooth_hu, size=ROI, stride=ROI // 2):
    """``(y, x)`` corners of ``size`` x ``size`` flat soft-tissue regions of a smoothed slice (see the module notes)."""
    found = []
    h, w = smooth_hu.shape
    for y in range(0, h - size + 1, stride):
        for x in range(0, w - size + 1, stride):
            s = smooth_hu[y : y + size, x : x + size]
            if -150 < s.mean() < 100 and np.ptp(s) < 40 and s.min() > -300:
                found.append((y, x))
    return found


def find_edges(smooth_hu, per_kind=EDGES_PER_KIND):
    """Edge points ``(y, x, gy, gx, kind)`` of a smoothed slice: gradient-magnitude maxima along the gradient
    whose step is air/skin or soft tissue/bone (see the module notes); strongest first, spaced apart."""
    from scipy import ndimage

    gy, gx = np.gradient(smooth_hu)
    mag = np.hypot(gy, gx)
    h, w = smooth_hu.shape
    margin = EDGE_HALF + 3
    candidates = []
    threshold = np.percentile(mag, 80)
    ys, xs = np.nonzero(mag > threshold)
    for y, x in zip(ys, xs):
        if not (margin <= y < h - margin and margin <= x < w - margin):
            continue
        uy, ux = gy[y, x] / mag[y, x], gx[y, x] / mag[y, x]
        ahead = ndimage.map_coordinates(mag, [[y + uy, y - uy], [x + ux, x - ux]], order=1)
        if mag[y, x] < ahead.max():
            continue
        d = EDGE_CLASSIFY
        low, high = ndimage.map_coordinates(smooth_hu, [[y - d * uy, y + d * uy], [x - d * ux, x + d * ux]], order=1)
        if low < -700 and -250 < high < 250:
            kind = "air/skin"
        elif -150 < low < -50 and 0 < high < 100:
            kind = "fat/muscle"
        elif -150 < low < 150 and high > 250:
            kind = "soft tissue/bone"
        else:
            continue
        candidates.append((mag[y, x], y, x, uy, ux, kind))
    chosen = []
    for strength, y, x, uy, ux, kind in sorted(candidates, reverse=True):
        if sum(1 for c in chosen if c[4] == kind) >= per_kind:
            continue
        if all((y - c[0]) ** 2 + (x - c[1]) ** 2 >= EDGE_SPACING**2 for c in chosen):
            chosen.append((y, x, uy, ux, kind))
    return chosen


def rise_width(image_hu, edge, step=0.25):
    """10-90 % rise width in pixels of the averaged profile across ``edge`` (see the module notes); nan when flat."""
    from scipy import ndimage

    y, x, uy, ux, _ = edge
    t = np.arange(-EDGE_HALF, EDGE_HALF + step / 2, step)
    profiles = []
    for offset in (-2, -1, 0, 1, 2):  # parallel lines along the edge (tangent = (-ux, uy))
        cy, cx = y - offset * ux, x + offset * uy
        profiles.append(ndimage.map_coordinates(image_hu, [cy + t * uy, cx + t * ux], order=1, mode="nearest"))
    profile = np.mean(profiles, axis=0)
    n_end = int(round(2 / step))
    low, high = profile[:n_end].mean(), profile[-n_end:].mean()
    if not high - low > 50:  # HU: no step left
        return float("nan")
    norm = (profile - low) / (high - low)

    def crossing(level):
        above = np.nonzero(norm >= level)[0]
        if above.size == 0 or above[0] == 0:
            return float("nan")
        k = above[0]
        frac = (level - norm[k - 1]) / (norm[k] - norm[k - 1])
        return float(t[k - 1] + frac * step)

    return crossing(0.9) - crossing(0.1)


def real_study(volumes, models, bm3d_multiplier, quick):
    """Noise std in flat regions and edge widths on real low-dose slices, per method; the figure's images."""
    from scipy import ndimage

    from utils.data.noise_level import estimate_scan_sigma

    per_method = {}
    figure = None
    details = []
    for v, (name, volume) in enumerate(volumes):
        sigma = estimate_scan_sigma(volume.array)
        zs = middle_indices(volume.array.shape[0], 1 if quick else REAL_SLICES)
        noisy = volume.array[zs]
        outputs = {"noisy": noisy, "bm3d_est": np.stack([bm3d(s, sigma) for s in noisy]),
                   "bm3d_tuned": np.stack([bm3d(s, bm3d_multiplier * sigma) for s in noisy])}
        for stem, net in models.items():
            outputs[stem] = run_model(net, noisy)
        n_regions = n_edges = 0
        for k, z in enumerate(zs):
            smooth = ndimage.gaussian_filter(to_hu(noisy[k]), SMOOTH_SIGMA)
            regions = flat_regions(smooth)
            edges = find_edges(smooth)
            n_regions += len(regions)
            n_edges += len(edges)
            for method, images in outputs.items():
                hu = to_hu(images[k])
                entry = per_method.setdefault(method, {"noise_std_hu": [], "edge_width": {kind: [] for kind in EDGE_KINDS}})
                entry["noise_std_hu"] += [float(np.std(hu[y : y + ROI, x : x + ROI])) for y, x in regions]
                for edge in edges:
                    entry["edge_width"][edge[4]].append(rise_width(hu, edge))
        details.append({"volume": name, "shape": list(volume.array.shape), "spacing_mm": [float(s) for s in volume.spacing],
                        "slices": [int(z) for z in zs], "sigma_estimate": float(sigma), "flat_regions": n_regions, "edges": n_edges})
        if v == 0:
            k = len(zs) // 2
            figure = {"volume": name, "slice": int(zs[k]), "sigma": float(sigma), "images": {m: images[k] for m, images in outputs.items()}}
        print(f"  real {name}: sigma estimate {sigma:.4f}, {n_regions} flat regions, {n_edges} edges", flush=True)
    summary = {}
    for method, entry in per_method.items():
        widths = {kind: [w for w in values if math.isfinite(w)] for kind, values in entry["edge_width"].items()}
        pooled = [w for values in widths.values() for w in values]
        summary[method] = {
            "noise_std_hu_median": float(np.median(entry["noise_std_hu"])) if entry["noise_std_hu"] else None,
            "regions": len(entry["noise_std_hu"]),
            "edge_width_px_median": {kind: (float(np.median(w)) if w else None) for kind, w in widths.items()},
            "edges_measured": {kind: len(w) for kind, w in widths.items()},
            "edge_width_px_median_all": float(np.median(pooled)) if pooled else None,
        }
    reference = summary.get("bm3d_est", {})
    for method, entry in summary.items():
        value, ref = entry["edge_width_px_median_all"], reference.get("edge_width_px_median_all")
        entry["edge_width_vs_bm3d"] = None if (value is None or not ref) else value / ref
        entry["edge_width_vs_bm3d_by_kind"] = {
            kind: (None if (w is None or not reference["edge_width_px_median"].get(kind)) else w / reference["edge_width_px_median"][kind])
            for kind, w in entry["edge_width_px_median"].items()
        }
    return summary, details, figure


# ============================================================================== figure
def before_after_figure(figure, gaussian_stem, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from utils.base.atomic import atomic_path

    images = figure["images"]
    panels = [("noisy (real low dose)", images["noisy"]), (f"BM3D, sigma {figure['sigma']:.3f} (estimated)", images["bm3d_est"])]
    panels.append((gaussian_stem or "Gaussian model (absent)", images.get(gaussian_stem)))
    panels.append((LOWDOSE_STEM if LOWDOSE_STEM in images else f"{LOWDOSE_STEM} (absent)", images.get(LOWDOSE_STEM)))
    fig, axes = plt.subplots(1, 4, figsize=(12.0, 3.4), dpi=100)
    for ax, (title, image) in zip(axes, panels):
        if image is None:
            ax.text(0.5, 0.5, "not available", ha="center", va="center", transform=ax.transAxes)
        else:
            # A soft-tissue display window (-160, 240 HU) shows the noise; metrics are on the [0, 1] window.
            ax.imshow(to_hu(image), cmap="gray", vmin=-160, vmax=240, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle(f"Real low-dose CT (TCIA Soft-tissue-Sarcoma {figure['volume']}, slice {figure['slice']}), display [-160, 240] HU", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


# ============================================================================== report
def fmt(value, digits=2):
    return "-" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.{digits}f}"


def markdown(report, figure_name):
    lines = [
        "# Low-dose CT: BM3D against Gaussian-trained and ct_lowdose-trained 2D U-Nets",
        "",
        f"`python3 -m studies.lowdose_quality{' --quick' if report['quick'] else ''}`; machine: {report['machine']['cpu_model']}, "
        f"{report['machine']['usable_cpus']} usable CPUs; commit {report['machine']['git_commit']}; {report['seconds']:.0f} s.",
        "",
    ]
    lines += [f"- note: {n}" for n in report["notes"]] + ([""] if report["notes"] else [])
    sim = report["simulated"]
    lines += [
        "## A. Simulated low dose on real clean test slices (reference form)",
        "",
        f"{len(report['clean_slices'])} clean test slices of the split ({', '.join(report['clean_slices'])}), whole slices simulated at "
        f"their own spacing, scored on the central {report['crop']}x{report['crop']} crops ([-1000, 400] HU -> [0, 1]). "
        "`bm3d_est`: sigma estimated on the noisy crop; `bm3d_tuned`: that estimate times the multiplier with the best mean PSNR "
        "on these crops (an oracle upper bound for BM3D).",
        "",
    ]
    methods = list(next(iter(sim.values()))["methods"])
    header = ["method"] + [f"{h} at dose {d}" for d in sim for h in ("PSNR (dB)", "SSIM")]
    rows = []
    for method in methods:
        cells = [method]
        for entry in sim.values():
            m = entry["methods"][method]
            cells += [f"{m['psnr']:.2f} ± {m['psnr_std']:.2f}", f"{m['ssim']:.4f}"]
        rows.append(cells)
    lines += markdown_table(header, rows, "l" + "rr" * len(sim)) + [""]
    for dose, entry in sim.items():
        est = entry["sigma_estimates"]
        lines.append(f"- dose {dose}: added noise {entry['added_std_hu_body']:.1f} HU (std in the body); estimated sigma "
                     f"{np.median(est):.4f} (median, [0, 1] scale = {np.median(est) * 1400:.1f} HU); best BM3D multiplier "
                     f"{entry['bm3d_multiplier']:g} (mean PSNR per multiplier: "
                     + ", ".join(f"{m}: {p:.2f}" for m, p in entry["bm3d_multiplier_psnr"].items()) + ")")
    real = report["real"]
    lines += [
        "",
        "## B. Real low-dose test volumes (no reference)",
        "",
        f"{len(report['real_volumes'])} test volumes of kind \"lowdose\" (TCIA Soft-tissue-Sarcoma, "
        f"{', '.join(d['volume'] for d in report['real_volumes'])}), {report['real_slices_per_volume']} middle slices each, "
        f"denoised slice by slice; BM3D sigma estimated per volume; `bm3d_tuned` uses part A's multiplier at dose "
        f"{report['real_multiplier_from_dose']} ({report['real_multiplier']:g}). Noise: std in {ROI}x{ROI} flat soft-tissue regions "
        f"chosen on the smoothed noisy slice (the same regions for every method), median over regions. Edges: 10-90 % rise width "
        "of profiles across automatically found edges (found on the smoothed noisy slice, the same for every method), median; "
        "ratio to `bm3d_est` over all edges (< 1 sharper).",
        "",
    ]
    header = ["method", "noise std (HU)"] + [f"{kind} width (px)" for kind in EDGE_KINDS] + ["all edges (px)", "all / BM3D", "fat/muscle / BM3D"]
    rows = []
    for method, entry in real.items():
        widths = entry["edge_width_px_median"]
        rows.append([method, fmt(entry["noise_std_hu_median"], 1)] + [fmt(widths[kind]) for kind in EDGE_KINDS]
                    + [fmt(entry["edge_width_px_median_all"]), fmt(entry["edge_width_vs_bm3d"], 3), fmt(entry["edge_width_vs_bm3d_by_kind"]["fat/muscle"], 3)])
    lines += markdown_table(header, rows, "l" + "r" * (len(header) - 1)) + [""]
    any_entry = real["noisy"]
    lines += [f"Regions: {any_entry['regions']}; edges measured on the noisy input: "
              + ", ".join(f"{kind} {any_entry['edges_measured'][kind]}" for kind in EDGE_KINDS)
              + " (an edge whose step falls below 50 HU in an output is left out for that output).",
              "", f"Figure: `{figure_name}` ({report['figure']['volume']}, slice {report['figure']['slice']}): noisy | BM3D | "
              f"{report['figure']['gaussian_model'] or 'Gaussian model (absent)'} | {report['figure']['lowdose_model'] or 'ct_lowdose model (absent)'}.", ""]
    return "\n".join(lines)


def main(argv=None):
    from utils.data.real_ct_split import DEFAULT_REAL_CT_ROOT

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 clean slice cropped to 96, dose 0.25, 2 BM3D multipliers, 1 real slice")
    parser.add_argument("--out", default="", help="folder for the RESULTS files and the figure (default: studies/ and figures/)")
    parser.add_argument("--models-dir", default=str(REPO / "trained_models"), help="where the shipped models are")
    parser.add_argument("--real-ct-root", default=str(DEFAULT_REAL_CT_ROOT), help="the shared real_ct folder")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    out_md, out_json, figure_path = OUT_MD, OUT_JSON, FIGURE
    if args.out:
        out_dir = Path(args.out)
        out_md, out_json, figure_path = out_dir / OUT_MD.name, out_dir / OUT_JSON.name, out_dir / FIGURE.name
    root = Path(args.real_ct_root)
    if not root.is_dir():
        raise SystemExit(f"error: {root} is absent: this study needs the shared real CT (clean and low-dose test patients)")
    models, notes = load_models(args.models_dir)
    slices = clean_test_slices(root, args.quick)
    print(f"{len(slices)} clean test slices; models: {', '.join(models) or 'none'}", flush=True)
    simulated = simulated_study(slices, models, args.quick)
    from_dose = "0.25"
    multiplier = simulated[from_dose]["bm3d_multiplier"]
    volumes = real_lowdose_volumes(root, args.quick)
    real, details, figure = real_study(volumes, models, multiplier, args.quick)
    gaussian = [s for s in ("unet2d_noise0.02", "unet2d_noise0.05") if s in models]
    # The Gaussian model shown: the one trained nearest (log ratio) to the figure slice's estimated sigma.
    gaussian_stem = min(gaussian, key=lambda s: abs(math.log(float(s.rsplit("noise", 1)[1]) / figure["sigma"]))) if gaussian else None
    before_after_figure(figure, gaussian_stem, figure_path)
    report = {
        "quick": args.quick, "seconds": time.perf_counter() - started, "notes": notes, "doses": list(DOSES[:1] if args.quick else DOSES),
        "crop": QUICK_CROP if args.quick else CROP, "clean_slices": [s[0] for s in slices], "simulated": simulated,
        "real": real, "real_volumes": details, "real_slices_per_volume": 1 if args.quick else REAL_SLICES,
        "real_multiplier": multiplier, "real_multiplier_from_dose": from_dose,
        "figure": {"path": str(figure_path.name), "volume": figure["volume"], "slice": figure["slice"], "gaussian_model": gaussian_stem,
                   "lowdose_model": LOWDOSE_STEM if LOWDOSE_STEM in models else None},
        "settings": {"window": list(WINDOW), "seed": SEED, "multipliers": list(MULTIPLIERS), "roi": ROI, "smooth_sigma": SMOOTH_SIGMA,
                     "edge_half": EDGE_HALF, "edge_classify": EDGE_CLASSIFY, "edges_per_kind": EDGES_PER_KIND, "models_dir": str(args.models_dir)},
        "machine": describe_machine(),
    }
    from utils.base.atomic import write_json, write_text

    write_text(out_md, markdown(report, figure_path.name))
    write_json(out_json, report)
    print(markdown(report, figure_path.name))
    print(f"wrote {out_md}, {out_json} and {figure_path}")


if __name__ == "__main__":
    main()
