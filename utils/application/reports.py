"""Assessment results: the metrics CSV, mean ± std tables and the summary markdown, written atomically."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np

from utils.application.samples import lowdose_spacing
from utils.base.atomic import atomic_open, write_text

METRIC_COLUMNS = ("method", "sample", "noise", "psnr", "ssim", "rel_err_percent", "seconds")


NOISE_MODEL_COLUMNS = ("noise_model", "dose")  # appended to METRIC_COLUMNS when the test noise is not Gaussian


def write_metrics_csv(path, records):
    """``metrics.csv`` (atomic): exactly ``METRIC_COLUMNS`` for Gaussian test noise; with ``ct_lowdose`` records
    also ``noise_model`` and ``dose`` (``noise`` is then the measured std of the added noise, see the module notes)."""
    columns = METRIC_COLUMNS + (NOISE_MODEL_COLUMNS if any("noise_model" in r for r in records) else ())
    with atomic_open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for record in records:
            row = {key: record.get(key, "") for key in columns}
            for key in ("psnr", "ssim", "rel_err_percent", "seconds"):
                row[key] = f"{float(row[key]):.8g}"
            row["noise"] = f"{float(row['noise']):g}"
            if "noise_model" in columns:
                row["noise_model"] = record.get("noise_model", "gaussian")
                row["dose"] = "" if record.get("dose") is None else f"{float(record['dose']):g}"
            writer.writerow(row)
    return Path(path)


def read_metrics_csv(path):
    """The rows of a ``metrics.csv`` with numbers as floats (``dose`` too, when present and not empty)."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        for key in ("noise", "psnr", "ssim", "rel_err_percent", "seconds"):
            row[key] = float(row[key])
        if row.get("dose"):
            row["dose"] = float(row["dose"])
    return rows


def summarise(records):
    """``{noise: {method: {metric: (mean, std)}}}`` in the order methods first appear (std: population)."""
    table = {}
    for record in records:
        table.setdefault(float(record["noise"]), {}).setdefault(record["method"], []).append(record)
    summary = {}
    for noise, by_method in table.items():
        summary[noise] = {}
        for method, rows in by_method.items():
            stats = {key: (float(np.mean([r[key] for r in rows])), float(np.std([r[key] for r in rows]))) for key in METRIC_COLUMNS[3:]}
            stats["n"] = len(rows)
            summary[noise][method] = stats
    return summary


_HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "rel_err_percent": False}


_COLUMN_TITLES = {"psnr": "PSNR (dB)", "ssim": "SSIM", "rel_err_percent": "rel. error (%)", "seconds": "time (s / sample)"}


_DECIMALS = {"psnr": 2, "ssim": 4, "rel_err_percent": 2, "seconds": 2}


def summary_table(stats_by_method):
    """Markdown table, mean ± std per method; the best mean of each quality metric in bold."""
    methods = list(stats_by_method)
    best = {}
    for key, higher in _HIGHER_IS_BETTER.items():
        means = [stats_by_method[m][key][0] for m in methods]
        best[key] = max(means) if higher else min(means)
    lines = ["| method | " + " | ".join(_COLUMN_TITLES[k] for k in METRIC_COLUMNS[3:]) + " |", "|---|" + "---:|" * 4]
    for method in methods:
        cells = []
        for key in METRIC_COLUMNS[3:]:
            mean, std = stats_by_method[method][key]
            cell = f"{mean:.{_DECIMALS[key]}f} ± {std:.{_DECIMALS[key]}f}"
            if key in best and len(methods) > 1 and round(mean, _DECIMALS[key]) == round(best[key], _DECIMALS[key]):
                cell = f"**{cell}**"
            cells.append(cell)
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def describe_data(volumes, data_paths, samples):
    """One paragraph of settings text about the test data."""
    where = ", ".join(f"`{p}`" for p in data_paths) if data_paths else "the embedded phantom test split (`data/phantom/test`)"
    shapes = sorted({"x".join(map(str, v.array.shape)) for v in volumes})
    return f"{where}: {len(volumes)} volume(s) of {', '.join(shapes)} voxels; {len(samples)} samples ({samples[0].describe()}, ...)"


def describe_hu_window(volumes):
    windows = sorted({tuple(v.hu_window) if v.hu_window is not None else None for v in volumes}, key=str)
    parts = [f"[{w[0]:g}, {w[1]:g}] HU -> [0, 1]" if w else "none (intensities scaled by bit depth or already in [0, 1])" for w in windows]
    return "; ".join(parts)


def describe_settings(data_paths, volumes, samples, noise_levels, seed, sampling, noise_text=None):
    """The settings block of ``summary.md``: data, sampling, noise, seed, HU window and prior.

    ``noise_text`` replaces the Gaussian noise line (``describe_lowdose_noise`` for ct_lowdose).
    """
    levels = ", ".join(f"{n:g}" for n in noise_levels)
    return {
        "data": describe_data(volumes, data_paths, samples),
        "samples": sampling,
        "noise": noise_text or f"additive Gaussian, sigma = {levels} on the [0, 1] scale (not clipped), added to each whole volume "
        "before slices or crops are cut",
        "seed": f"{seed}: volume i draws its noise from numpy.random.default_rng([{seed}, i])",
        "HU window": describe_hu_window(volumes),
        "prior": "neighbour prior of the whole noisy volume (utils.data.prior: centred window of ±4 slices, weights exp(-0.04|k|)); "
        "ResPrU-Net models use the prior settings of their own configuration",
    }


def summary_markdown(title, records, settings, methods, figures=(), notes=()):
    """The ``summary.md`` text: one results table per noise level, then the settings and methods.

    ``methods``: a list of :class:`Method`, or ``{noise: [Method, ...]}`` when each level has its own
    (tuned) parameters.
    """
    out = io.StringIO()
    out.write(f"# {title}\n\n")
    for noise, stats in summarise(records).items():
        n_samples = max(s["n"] for s in stats.values())
        out.write(f"## {_noise_heading(noise, records)}, {n_samples} samples\n\n")
        out.write(summary_table(stats) + "\n\n")
    out.write("Mean ± standard deviation over samples; best mean in bold. Metrics on the [0, 1] scale, estimates not clipped: "
              "PSNR with data range 1; SSIM with data range 1, Gaussian window 11, sigma 1.5 (mean over slices for volumes); "
              "rel. error = 100·‖x̂ − x‖/‖x‖ over the same slice or volume; time = wall clock per sample after untimed warm-up calls, "
              "neighbour prior excluded.\n\n")
    out.write("## Settings\n\n")
    for key, value in settings.items():
        out.write(f"- **{key}**: {value}\n")
    out.write("\n## Methods\n\n")
    groups = methods.items() if isinstance(methods, dict) else [(None, methods)]
    for noise, group in groups:
        if noise is not None:
            out.write(f"### {_noise_heading(noise, records)}\n\n")
        for method in group:
            out.write(f"- **{method.name}**: {method.describe()}\n")
        if noise is not None:
            out.write("\n")
    if figures:
        out.write("\n## Figures\n\n")
        for figure in figures:
            out.write(f"- `{Path(figure).name}`\n")
    if notes:
        out.write("\n## Notes\n\n")
        for note in notes:
            out.write(f"- {note.removeprefix('note: ')}\n")
    return out.getvalue()


def _noise_heading(noise, records):
    """``Noise sigma = 0.05 (5 % of the window)``, or for ct_lowdose records at this ``noise`` value
    ``Noise model ct_lowdose, dose = 0.25 (added noise std 0.0123 in the body, measured)``."""
    lowdose = [r for r in records if r.get("noise_model") == "ct_lowdose" and math.isclose(float(r["noise"]), float(noise), rel_tol=1e-9)]
    if lowdose:
        return (f"Noise model ct_lowdose, dose = {float(lowdose[0]['dose']):g} "
                f"(added noise std {float(noise):.4g} on the [0, 1] scale in the body, measured)")
    return f"Noise sigma = {noise:g} ({100 * noise:g} % of the window)"


def describe_lowdose_noise(doses, volumes=()):
    """The ``noise`` line of the settings for ct_lowdose test noise at ``doses``."""
    from utils.data.lowdose import DEFAULT_VIEWS

    spacings = sorted({f"{lowdose_spacing(v):.3g}" for v in volumes})
    where = f" at each volume's own pixel spacing ({', '.join(spacings)} mm)" if spacings else " at each volume's own pixel spacing"
    return (
        f"noise model ct_lowdose, dose = {', '.join(f'{d:g}' for d in doses)} of the scan's dose: the reference form "
        f"(utils.data.noise.CTLowDoseNoise.sample_numpy: radon over {DEFAULT_VIEWS} views, Poisson + electronic noise at the added-noise "
        f"count, ramp FBP, slice by slice){where}, added to each whole clean volume in HU and windowed again (not clipped); "
        "the noise column is the measured std of noisy - clean over the body voxels of all volumes"
    )


def write_summary(path, text):
    write_text(path, text)
    return Path(path)
