"""How close is the synthetic phantom to real CT? Histograms, tissue fractions, texture, z-continuity.

Reads the real DICOM CT beside the checkout (``shared/data/real_ct``): the contiguous
contrast-enhanced abdominal series (CRLM, 41 x 5 mm) and the 20 chest slices (LIDC). The
8-bit PNG slices are left out: they are HU clipped to [0, 255], which discards the lung and
fat range that a [-1000, 400] HU comparison is about. Phantoms are made with
``utils.data.phantom.make_phantom`` from the seeds of the default dataset's training volumes.

Everything is measured in HU clipped to the project window [-1000, 400] inside a body mask
(largest component above -500 HU, holes filled, per slice), the same way for real and phantom:

* Wasserstein-1 distance (HU) between the body-voxel histograms; the distance between the two
  real sets is printed beside it as the scale of patient-to-patient variation;
* fractions of body voxels per slice that are air, lung, fat, soft tissue, enhanced tissue, bone;
* texture: std of the high-pass residual (minus a 1.5 mm Gaussian) inside soft tissue. Real CT
  carries its own quantum noise there, the clean phantom does not, so the phantom is also
  measured with white noise of the real scan's robust noise level added;
* z-continuity: mean absolute difference between slices 5 mm apart inside the body.

Writes ``studies/results/phantom_realism.json`` and ``figures/phantom_vs_real.png``.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from scipy.stats import wasserstein_distance

REPO = Path(__file__).resolve().parents[1]
if __name__ == "__main__" and not __package__:  # run by path: re-run as python3 -m studies.<name>
    os.execv(sys.executable, [sys.executable, "-m", f"studies.{Path(__file__).stem}", *sys.argv[1:]])

from utils.data import phantom  # noqa: E402
from utils.base.atomic import atomic_path, write_json  # noqa: E402

WINDOW = (-1000.0, 400.0)
SOFT_WINDOW = (-160.0, 240.0)
HISTOGRAM_EDGES = np.arange(WINDOW[0], WINDOW[1] + 10, 10.0)
TISSUE_BANDS = {"air": (-1001, -900), "lung": (-900, -500), "fat": (-500, -30), "soft": (-30, 150),
                "enhanced": (150, 300), "bone": (300, 401)}
HIGH_PASS_MM = 1.5


# ----------------------------------------------------------------------------------------------
# Data


def load_dicom_series(folder):
    """HU volume (N, H, W) of a DICOM folder sorted by table position, and its (z, y, x) spacing."""
    import pydicom

    slices = sorted((pydicom.dcmread(path) for path in Path(folder).glob("*.dcm")),
                    key=lambda ds: float(ds.ImagePositionPatient[2]))
    hu = np.stack([ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in slices])
    hu = np.where(hu < -1024, -1024, hu).astype(np.float32)  # -3024 marks padding outside the field of view
    positions = [float(ds.ImagePositionPatient[2]) for ds in slices]
    z_step = float(np.median(np.diff(positions))) if len(positions) > 1 else float(slices[0].SliceThickness)
    row, column = (float(v) for v in slices[0].PixelSpacing)
    return hu, (z_step, row, column)


def load_real(root):
    root = Path(root)
    crlm, crlm_spacing = load_dicom_series(root / "series_crlm_abdomen_dicom")
    lidc, lidc_spacing = load_dicom_series(root / "slices_lidc_chest_dicom")
    return {"crlm_abdomen": (crlm, crlm_spacing, True), "lidc_chest": (lidc, lidc_spacing, False)}


def make_phantoms(count, shape, spacing):
    seeds = phantom.volume_seeds(0, {"train": count, "val": 0, "test": 0})["train"]
    return [phantom.make_labelled_phantom(seed, shape, spacing) for seed in seeds]


# ----------------------------------------------------------------------------------------------
# Measurements


def body_mask(hu):
    """Per slice: the largest connected region above -500 HU with its holes (lungs, gas) filled."""
    masks = np.zeros(hu.shape, bool)
    for index, image in enumerate(hu):
        labelled, count = ndi.label(ndi.binary_opening(image > -500, iterations=2))
        if count:
            largest = np.argmax(np.bincount(labelled.ravel())[1:]) + 1
            masks[index] = ndi.binary_fill_holes(labelled == largest)
    return masks


def windowed(hu):
    return np.clip(hu, *WINDOW)


def histogram(hu, mask):
    counts, _ = np.histogram(windowed(hu[mask]), bins=HISTOGRAM_EDGES)
    return counts / max(counts.sum(), 1)


def histogram_distance(first, second):
    centres = 0.5 * (HISTOGRAM_EDGES[1:] + HISTOGRAM_EDGES[:-1])
    return float(wasserstein_distance(centres, centres, first, second))


def tissue_fractions(hu, mask):
    """Mean and std over slices of the fraction of body voxels in each HU band."""
    per_slice = {name: [] for name in TISSUE_BANDS}
    for image, inside in zip(windowed(hu), mask):
        values = image[inside]
        if values.size < 1000:
            continue
        for name, (low, high) in TISSUE_BANDS.items():
            per_slice[name].append(float(np.mean((values >= low) & (values < high))))
    return {name: {"mean": float(np.mean(v)), "std": float(np.std(v))} for name, v in per_slice.items()}


def high_pass(hu, spacing):
    sigma = (0, HIGH_PASS_MM / spacing[1], HIGH_PASS_MM / spacing[2])
    return hu - ndi.gaussian_filter(hu, sigma)


def soft_tissue_core(hu, mask, spacing):
    """Soft tissue (-30..150 HU after smoothing) at least 2 mm away from any other tissue."""
    smooth = ndi.gaussian_filter(hu, (0, 1.0 / spacing[1], 1.0 / spacing[2]))
    soft = mask & (smooth > -30) & (smooth < 150)
    margin = max(1, int(round(2.0 / spacing[1])))
    return ndi.binary_erosion(soft, ndi.generate_binary_structure(2, 1)[None], iterations=margin)


def texture(hu, mask, spacing):
    """Std and robust std (1.4826 MAD) of the high-pass residual in soft tissue, HU."""
    residual = high_pass(hu, spacing)[soft_tissue_core(hu, mask, spacing)]
    if residual.size == 0:
        return {"std": float("nan"), "robust_std": float("nan")}
    mad = np.median(np.abs(residual - np.median(residual)))
    return {"std": float(residual.std()), "robust_std": float(1.4826 * mad)}


def white_noise_sigma(robust_residual_std, spacing):
    """White-noise std that leaves ``robust_residual_std`` after the high-pass (Gaussian filter) step."""
    sigma = np.array([HIGH_PASS_MM / spacing[1], HIGH_PASS_MM / spacing[2]])
    # For white noise, Var(n - G*n) = Var(n) * (1 - 2 sum g + sum g^2) with sum g = g(0) for a Gaussian.
    impulse = np.zeros((63, 63), np.float32)
    impulse[31, 31] = 1
    kernel = ndi.gaussian_filter(impulse, sigma)
    keep = 1 - 2 * kernel[31, 31] + float((kernel ** 2).sum())
    return robust_residual_std / np.sqrt(keep)


def z_continuity(hu, mask, spacing, step_mm=5.0):
    """Mean |slice(k) - slice(k + n)| in HU inside the body, for slices ``step_mm`` apart."""
    step = max(1, int(round(step_mm / spacing[0])))
    if hu.shape[0] <= step:
        return float("nan")
    both = mask[:-step] & mask[step:]
    return float(np.abs(windowed(hu[step:]) - windowed(hu[:-step]))[both].mean())


def describe(hu, mask, spacing, contiguous):
    result = {"slices": int(hu.shape[0]), "spacing_mm": list(spacing), "body_voxels": int(mask.sum()),
              "fractions": tissue_fractions(hu, mask), "texture": texture(hu, mask, spacing)}
    if contiguous:
        result["z_mean_abs_diff_5mm"] = z_continuity(hu, mask, spacing)
    return result


# ----------------------------------------------------------------------------------------------
# Figure


def body_crop(image, mask, margin=0.06):
    """Square crop around the body so that real and phantom slices show at the same body size."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return image
    centre_r, centre_c = (rows.min() + rows.max()) / 2, (cols.min() + cols.max()) / 2
    half = (1 + margin) * max(rows.max() - rows.min(), cols.max() - cols.min()) / 2
    r0, c0 = int(max(centre_r - half, 0)), int(max(centre_c - half, 0))
    return image[r0:int(centre_r + half) + 1, c0:int(centre_c + half) + 1]


def to_unit(image, window):
    return np.clip((image - window[0]) / (window[1] - window[0]), 0, 1)


def pick_phantom_slices(phantoms):
    """Three phantom slices like the real ones: kidneys, liver under a lung crescent, mid chest."""
    T = phantom.Tissue

    def score(predicate):
        best = max(((predicate(p.labels[k]), i, k) for i, p in enumerate(phantoms) for k in range(p.labels.shape[0])))
        return best[1], best[2]

    def fraction(labels, *tissues):
        return np.isin(labels, [int(t) for t in tissues]).mean()

    kidneys = score(lambda labels: fraction(labels, T.KIDNEY_CORTEX, T.KIDNEY_MEDULLA))
    transition = score(lambda labels: min(fraction(labels, T.LIVER), 3 * fraction(labels, T.LUNG)))
    chest = score(lambda labels: fraction(labels, T.LUNG) + 0.5 * fraction(labels, T.MYOCARDIUM, T.ARTERIAL_BLOOD))
    return [kidneys, transition, chest]


def save_figure(path, real, phantoms, real_histograms, phantom_histogram):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    crlm, lidc = real["crlm_abdomen"][0], real["lidc_chest"][0]
    real_slices = [("real CRLM abdomen, kidneys", crlm[8]), ("real CRLM, liver dome", crlm[27]),
                   ("real LIDC chest", lidc[10])]
    phantom_slices = [(f"phantom train/phantom_{i:03d}, slice {k}", phantoms[i].hu[k])
                      for i, k in pick_phantom_slices(phantoms)]
    panels = real_slices + phantom_slices
    figure = plt.figure(figsize=(24, 12.5))
    grid = figure.add_gridspec(3, 6, height_ratios=[1, 1, 0.8])
    for column, (title, image) in enumerate(panels):
        mask = body_mask(image[None])[0]
        for row, window in enumerate((WINDOW, SOFT_WINDOW)):
            axes = figure.add_subplot(grid[row, column])
            axes.imshow(to_unit(body_crop(image, mask), window), cmap="gray", vmin=0, vmax=1, interpolation="bilinear")
            axes.set_axis_off()
            label = f"[{window[0]:.0f}, {window[1]:.0f}] HU"
            axes.set_title(f"{title}\n{label}" if row == 0 else label, fontsize=10)
    axes = figure.add_subplot(grid[2, :])
    centres = 0.5 * (HISTOGRAM_EDGES[1:] + HISTOGRAM_EDGES[:-1])
    for name, values in real_histograms.items():
        axes.plot(centres, values, label=f"real {name}", lw=1.6)
    axes.plot(centres, phantom_histogram["clean"], label="phantom (clean)", lw=1.6, color="k")
    axes.plot(centres, phantom_histogram["noisy"], label="phantom + real-level noise", lw=1.2, color="k", ls="--")
    axes.set_yscale("log")
    axes.set_ylim(1e-5, 0.3)
    axes.set_xlabel("HU (clipped to [-1000, 400]); body voxels")
    axes.set_ylabel("fraction per 10 HU bin")
    axes.legend(loc="upper center", ncol=4, fontsize=9)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=80)
    plt.close(figure)


# ----------------------------------------------------------------------------------------------
# Main


def run(real_root, count, shape, spacing, seed):
    """Measure the real sets and ``count`` phantoms (clean and with the real scan's noise level)."""
    started = time.perf_counter()
    real = load_real(real_root)
    phantoms = make_phantoms(count, shape, spacing)
    generation_seconds = time.perf_counter() - started
    report = {"window_hu": list(WINDOW), "real": {}, "phantom": {}, "distances": {}}
    real_histograms = {}
    for name, (hu, real_spacing, contiguous) in real.items():
        mask = body_mask(hu)
        report["real"][name] = describe(hu, mask, real_spacing, contiguous)
        real_histograms[name] = histogram(hu, mask)
    masks = [body_mask(p.hu) for p in phantoms]
    clean, mask = np.concatenate([p.hu for p in phantoms]), np.concatenate(masks)
    noise_sigma = white_noise_sigma(report["real"]["crlm_abdomen"]["texture"]["robust_std"], spacing)
    noisy = clean + np.random.default_rng(seed).normal(0, noise_sigma, clean.shape).astype(np.float32)
    report["phantom"]["clean"] = describe(clean, mask, spacing, contiguous=False)
    # Slices of different volumes are not neighbours: z-continuity is measured per volume.
    report["phantom"]["clean"]["z_mean_abs_diff_5mm"] = float(np.mean(
        [z_continuity(p.hu, m, spacing) for p, m in zip(phantoms, masks)]))
    report["phantom"]["with_real_noise"] = dict(describe(noisy, mask, spacing, contiguous=False),
                                                added_noise_sigma_hu=float(noise_sigma))
    phantom_histogram = {"clean": histogram(clean, mask), "noisy": histogram(noisy, mask)}
    distances = report["distances"]
    for name, values in real_histograms.items():
        distances[f"wasserstein_hu_phantom_vs_{name}"] = histogram_distance(phantom_histogram["clean"], values)
        distances[f"wasserstein_hu_noisy_phantom_vs_{name}"] = histogram_distance(phantom_histogram["noisy"], values)
    distances["wasserstein_hu_crlm_vs_lidc"] = histogram_distance(*real_histograms.values())
    report["settings"] = {"phantom_count": count, "shape": list(shape), "spacing": list(spacing),
                          "phantom_seconds": round(generation_seconds, 2),
                          "generator_version": phantom.GENERATOR_VERSION}
    return report, real, phantoms, real_histograms, phantom_histogram


def print_summary(report):
    print("Wasserstein-1 distance between body HU histograms (HU):")
    for name, value in report["distances"].items():
        print(f"  {name:45s} {value:7.1f}")
    rows = [("real CRLM", report["real"]["crlm_abdomen"]), ("real LIDC", report["real"]["lidc_chest"]),
            ("phantom", report["phantom"]["clean"]), ("phantom+noise", report["phantom"]["with_real_noise"])]
    bands = "".join(f"{name:>10s}" for name in TISSUE_BANDS)
    print(f"\n{'tissue fractions':16s}{bands}   texture std/robust   z |diff| 5mm")
    for label, entry in rows:
        fractions = "".join(f"{entry['fractions'][name]['mean']:10.3f}" for name in TISSUE_BANDS)
        tex = entry["texture"]
        z = entry.get("z_mean_abs_diff_5mm", float("nan"))
        print(f"{label:16s}{fractions}   {tex['std']:6.1f} / {tex['robust_std']:5.1f}      {z:6.1f}")
    added = report["phantom"]["with_real_noise"]["added_noise_sigma_hu"]
    print(f"\n(white noise added to the phantom: {added:.1f} HU)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=Path, default=REPO.parent / "shared" / "data" / "real_ct", help="real CT folder")
    parser.add_argument("--phantoms", type=int, default=8, help="number of phantom volumes (the default training set)")
    parser.add_argument("--shape", type=int, nargs=3, default=list(phantom.DEFAULT_SHAPE))
    parser.add_argument("--spacing", type=float, nargs=3, default=list(phantom.DEFAULT_SPACING))
    parser.add_argument("--seed", type=int, default=0, help="seed of the added comparison noise")
    parser.add_argument("--json", type=Path, default=REPO / "studies" / "results" / "phantom_realism.json")
    parser.add_argument("--figure", type=Path, default=REPO / "figures" / "phantom_vs_real.png")
    args = parser.parse_args(argv)
    if not args.real.is_dir():
        print(f"error: {args.real} is absent: this benchmark needs the real CT folder", file=sys.stderr)
        return 2
    report, real, phantoms, real_histograms, phantom_histogram = run(args.real, args.phantoms, tuple(args.shape),
                                                                     tuple(args.spacing), args.seed)
    write_json(args.json, report)
    save_figure(args.figure, real, phantoms, real_histograms, phantom_histogram)
    print_summary(report)
    print(f"\nwrote {args.json} and {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
