"""Assess the variational and classical denoisers on CT volumes: TV, SPADE, BM3D and BM4D at 2, 5, 10 % noise.

For each noise level, clean test volumes get seeded Gaussian noise (the same standard-normal field
scaled to each level) and the neighbour-slice prior of the whole noisy volume, are cropped, and are
denoised by split-Bregman TV (3D), SPADE (3D, TV plus sparsity of the difference to the prior), BM3D
(slice by slice) and BM4D. Estimates are scored over each volume: PSNR (data range 1), SSIM averaged
over axial slices, relative error 100·‖x̂ − x‖/‖x‖. Every method runs with parameters tuned on the
validation phantoms (tuned once per noise level, then read from ``results/tuned/tuned_3d.json``).

Default runtime on 2 CPU cores: the volumes are cropped to their central 16 slices and 128 x 128
pixels (``--max-depth``, ``--max-size``), because BM4D costs about 10 us per voxel and BM3D about a
second per 128 x 128 slice; ``--max-depth 0 --max-size 0`` assesses whole volumes.

``--noise-model ct_lowdose --dose 0.25,0.1`` replaces the Gaussian levels by simulated low-dose scans
(the reference projection-domain form at each volume's own pixel spacing; an unknown spacing is an
error); every method then takes the noise sigma estimated from each noisy volume (no tuned
parameters exist for this noise), and the results record the model and the dose.

Outputs (``results/assess_variational/``): ``metrics.csv``, ``summary.md``, one comparison figure per
noise level (``comparison_noise<sigma>.png``: clean | noisy | TV | SPADE | BM3D | BM4D with a zoomed
row; error and PSNR of the slice shown) and ``convergence.png`` (relative error after every iteration,
TV against SPADE, on the first volume).

The reference repository's variational demo was never written ("under construction"); this is it.
"""

import argparse
from pathlib import Path

from utils.base import defaults

# ## Settings (the defaults of the command-line options)
DATA = ()  # empty: the embedded phantom test split, data/phantom/test (generated on first use)
NOISE = "0.02,0.05,0.10"  # standard deviations on the [0, 1] scale, the paper's three levels
NOISE_MODEL = "gaussian"  # or ct_lowdose: simulated low-dose scans at each --dose (methods then estimate sigma per volume)
DOSE = "0.25"  # ct_lowdose only: fractions of the scan's dose kept, comma list
METHODS = "noisy,tv,spade,bm3d,bm4d"
MAX_DEPTH = 16  # central slices kept per volume (0: all)
MAX_SIZE = 128  # central in-plane crop in pixels (0: none)
SEED = defaults.ASSESSMENT_SEED  # 2020
HU_WINDOW = defaults.DEFAULT_HU_WINDOW  # (-1000, 400)
TUNED_DIR = defaults.TUNED_DIR  # results/tuned
OUT = "results/assess_variational"

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
parser.add_argument("--data", nargs="+", default=list(DATA), help="test CT volumes: any files or folders read_ct reads; default: the embedded phantom test split")
parser.add_argument("--noise", default=NOISE, help="one noise level or a comma list (standard deviations on the [0, 1] scale)")
parser.add_argument("--noise-model", choices=("gaussian", "ct_lowdose"), default=NOISE_MODEL, help="test noise: Gaussian --noise levels, or simulated low dose at each --dose (projection-domain reference form, needs the pixel spacing)")
parser.add_argument("--dose", default=None, help=f"ct_lowdose only: one dose fraction or a comma list (default {DOSE})")
parser.add_argument("--methods", default=METHODS, help="comma list of noisy,tv,spade,bm3d,bm4d")
parser.add_argument("--max-depth", type=int, default=MAX_DEPTH, help="keep the central N slices of each volume (0: all)")
parser.add_argument("--max-size", type=int, default=MAX_SIZE, help="keep the central N x N pixels of each slice (0: all)")
parser.add_argument("--seed", type=int, default=SEED, help="seed of the test noise")
parser.add_argument("--hu-window", nargs=2, type=float, default=HU_WINDOW, metavar=("LO", "HI"), help="HU window mapped to [0, 1]")
parser.add_argument("--tuned-dir", default=TUNED_DIR, help="where the tuned parameters are read and stored")
parser.add_argument("--out", default=OUT, help="output folder")
args = parser.parse_args()
out = Path(args.out)

from utils.application import assessment, figures  # noqa: E402  (TensorFlow loads after --help has been answered)

# ## Data: the clean volumes; noise comes per level below
with assessment.user_errors():
    lowdose = args.noise_model == "ct_lowdose"
    if lowdose:
        settings_list = [assessment.make_noise_setting("ct_lowdose", dose=d) for d in assessment.parse_dose_list(args.dose or DOSE)]
    else:
        settings_list = [assessment.make_noise_setting(args.noise_model, n, args.dose) for n in assessment.parse_noise_list(args.noise)]
    method_names = assessment.parse_method_list(args.methods)
    volumes = assessment.load_volumes(args.data, args.hu_window)
    # Keyed by the noise column's value: sigma, or for ct_lowdose the measured std of the added noise at that dose.
    samples_by_noise, setting_by_noise = {}, {}
    for setting in settings_list:
        noisy_volumes = setting.apply(volumes, args.seed)
        samples_by_noise[noisy_volumes[0].noise] = assessment.volume_samples(noisy_volumes, args.max_depth, args.max_size)
        setting_by_noise[noisy_volumes[0].noise] = setting
    noise_levels = list(samples_by_noise)

# ## Methods: tuned parameters per noise level (tuned now on the validation phantoms where missing; estimated sigma for ct_lowdose)
with assessment.user_errors():
    methods_by_noise = {
        noise: assessment.baseline_methods(method_names, noise, sample_ndim=3, tuned_dir=args.tuned_dir, estimate_sigma=lowdose) for noise in noise_levels
    }
    for noise in noise_levels:
        assessment.check_compatible(methods_by_noise[noise], samples_by_noise[noise])

# ## Evaluation: every method on every volume at every level; the first volume is kept for the figures
records, figure_files, histories = [], [], {}
for noise in noise_levels:
    samples, methods = samples_by_noise[noise], methods_by_noise[noise]
    shown = samples[0]
    with assessment.user_errors():
        evaluation = assessment.evaluate(methods, samples, keep=[shown.name])
    records += evaluation.records
    middle = shown.clean.shape[0] // 2  # the figure shows the middle axial slice; its own err and PSNR
    figure_files.append(
        figures.comparison_grid(
            out / f"comparison_{'' if lowdose else 'noise'}{setting_by_noise[noise].slug}.png",
            shown.clean[middle],
            [(m.name, evaluation.outputs[(m.name, shown.name)][middle]) for m in methods],
            title=f"{shown.name}, slice {middle}, {setting_by_noise[noise].label}",
        )
    )
    histories[setting_by_noise[noise].label] = assessment.convergence_histories(shown, methods)

# ## Results: convergence plot, metrics table and summary (metrics.csv last: it marks a complete run)
if any(histories.values()):
    figure_files.append(figures.convergence_plot(out / "convergence.png", histories, title=f"{samples_by_noise[noise_levels[0]][0].name}: relative error per iteration"))
assessment.write_metrics_csv(out / "metrics.csv", records)
first = samples_by_noise[noise_levels[0]]
settings = assessment.describe_settings(
    args.data, volumes, first, noise_levels, args.seed,
    sampling=f"whole volumes cropped to the central {args.max_depth or 'all'} slices"
    + (f" and {args.max_size}x{args.max_size} pixels" if args.max_size else "") + f"; figures: {first[0].name}",
    noise_text=assessment.describe_lowdose_noise([s.dose for s in settings_list], volumes) if lowdose else None,
)
summary = assessment.summary_markdown("Variational and classical denoisers on CT volumes", records, settings, methods_by_noise, figure_files)
assessment.write_summary(out / "summary.md", summary)
print(summary.split("\n## Settings")[0])
print(f"Wrote {out / 'metrics.csv'}, {out / 'summary.md'} and {', '.join(str(f) for f in figure_files)}")
