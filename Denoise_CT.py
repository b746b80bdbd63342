"""Denoise your own CT scan and write the result in HU, as DICOM, NIfTI, PNG/TIFF or npz.

    python3 Denoise_CT.py patient/series --out patient/series_denoised          # DICOM in, DICOM out
    python3 Denoise_CT.py scan.nii.gz --out scan_denoised.nii.gz --self-ensemble
    python3 Denoise_CT.py scan.nii.gz --out scan_bm4d.nii.gz --method bm4d --noise 0.03

The scan is windowed to ``--hu-window`` (the models' [0, 1] scale), its noise level is estimated
inside the body (``--noise auto``) or given, the chosen model or classical method denoises it, and
the result goes back to the scan's units: inside the window it is the method's output, beyond the
window (bone, metal, air, FOV padding) the input values are kept, with a short linear hand-over
(``utils/application/denoising.py``). The output is written complete or not at all, never over an existing one
without ``--overwrite``, and the input is only read. A before/after figure goes to ``<output>.png``
and the last line on stdout is a JSON report.
"""

import argparse
import json
import sys
import time
from pathlib import Path

from utils.base.defaults import DEFAULT_HU_WINDOW

# ## Settings (the defaults of the command-line options)
MODEL = ""  # empty: the shipped model that fits the scan (volume or slices) and its noise
METHOD = "model"  # model, bm3d, bm4d, tv, spade
NOISE = "auto"  # auto: estimated from the scan inside the body; or sigma on the window's [0, 1] scale
HU_WINDOW = DEFAULT_HU_WINDOW  # (-1000, 400)
FORMAT = "same"  # same (the input's), dicom, nifti, png, tiff, npz
SELF_ENSEMBLE = False  # mean over the flips of the model's axes: better, 4 (2D) or 8 (3D) times slower

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
parser.add_argument("input", help="a DICOM series folder or file, NIfTI, PNG/TIFF slice(s) or npz")
parser.add_argument("--out", required=True, help="output file or folder (a DICOM output is a folder)")
parser.add_argument("--model", default=MODEL, help="a .keras or reference .h5 model file (default: the shipped one that fits)")
parser.add_argument("--method", default=METHOD, choices=("model", "bm3d", "bm4d", "tv", "spade"), help="denoiser")
parser.add_argument("--noise", default=NOISE, help="'auto' or the noise sigma on the window's [0, 1] scale (0.05 = 5 %%)")
parser.add_argument("--hu-window", nargs=2, type=float, default=HU_WINDOW, metavar=("LO", "HI"), help="HU window the denoiser works in")
parser.add_argument("--format", default=FORMAT, choices=("same", "dicom", "nifti", "png", "tiff", "npz"), help="output format")
parser.add_argument("--self-ensemble", action=argparse.BooleanOptionalAction, default=SELF_ENSEMBLE, help="average over flips of the model's axes")
parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
parser.add_argument("--no-figure", dest="figure", action="store_false", help="do not write <output>.png")
args = parser.parse_args()
if args.model and args.method != "model":
    parser.error("--model chooses the learned model; leave it out with --method " + args.method)

from utils.application import denoising, figures  # noqa: E402  (TensorFlow loads after --help has been answered)
from utils.base import locks
from utils.data import scans
from utils.base.errors import ConfigError, RunDirectoryError, user_errors  # noqa: E402
from utils.data.noise_level import estimate_scan_sigma  # noqa: E402

out = Path(args.out)
figure_path = out.with_name(out.name + ".png")
started = time.perf_counter()
# A bad scan, setting or model file ends the script here with "error: <message>" and exit status 1,
# before anything is written.
with user_errors():
    # ## The scan, and where the result goes (checked before any work)
    locks.acquire(out)
    scan = scans.read_scan(args.input, args.hu_window)
    output_format = scan.format if args.format == "same" else args.format
    scans.check_output(scan, out, output_format)
    for existing in (out, figure_path if args.figure else None):
        if existing is not None and existing.exists() and not args.overwrite:
            raise RunDirectoryError(f"{existing} exists; pass --overwrite to replace it, or choose another --out")

    # ## Noise level: estimated inside the body unless given
    estimated = args.noise == "auto"
    try:
        sigma = estimate_scan_sigma(scan.model_input) if estimated else float(args.noise)
    except ValueError:
        raise ConfigError(f"--noise must be 'auto' or a number on the [0, 1] scale, got {args.noise!r}") from None
    if not 0 < sigma < 1:
        raise ConfigError(f"noise sigma {sigma:g} is outside (0, 1): {'the scan looks noise-free' if estimated else 'give it on the [0, 1] scale (0.05 = 5 %)'}")
    print(f"noise sigma {sigma:.4f} on the window's [0, 1] scale ({'estimated inside the body' if estimated else 'given'})", file=sys.stderr)

    # ## Denoise inside the window, then back to the scan's units
    method = denoising.make_method(args.method, args.model or None, scan, sigma, self_ensemble=args.self_ensemble)
    print(f"denoising {scan.source} {tuple(scan.values.shape)} with {method.description}", file=sys.stderr)
    denoise_started = time.perf_counter()
    denoised = method.run(scan.model_input)
    denoise_seconds = time.perf_counter() - denoise_started
    result = denoising.merge_into_scan(scan, denoised, sigma)
    written = scans.write_scan(scan, result, out, output_format, method.description)

    # ## Before/after figure and report
    report = {
        "input": str(args.input),
        "output": str(out),
        "format": output_format,
        "files": len(written),
        "method": method.name,
        "model": method.model_path,
        "description": method.description,
        "noise_sigma": round(sigma, 5),
        "noise_estimated": estimated,
        "noise_sigma_after": round(estimate_scan_sigma(denoised), 5),
        "hu_window": list(scan.hu_window) if scan.is_hu else None,
        "shape": list(scan.values.shape),
        "seconds": None,
        "denoise_seconds": round(denoise_seconds, 2),
        "figure": None,
    }
    if args.figure:
        after_std, region = denoising.flat_region_std(result)
        before_std, _ = denoising.flat_region_std(scan.values, region)
        unit = " HU" if scan.is_hu else ""
        stds = [f"{before_std:.1f}{unit}" if scan.is_hu else f"{before_std:.4f}", f"{after_std:.1f}{unit}" if scan.is_hu else f"{after_std:.4f}"]
        title = f"{'/'.join(Path(args.input).parts[-3:])}: {method.description}, noise sigma {sigma:.3f} ({'estimated' if estimated else 'given'}), {denoise_seconds:.1f} s"
        figures.before_after(figure_path, scan.model_input, scans.to_window_scale(scan, result), scan.volume.spacing, title, (region, 15, stds))
        report.update(figure=str(figure_path), flat_region=list(region), flat_std_before=round(before_std, 4), flat_std_after=round(after_std, 4))
report["seconds"] = round(time.perf_counter() - started, 2)
print(json.dumps(report))
