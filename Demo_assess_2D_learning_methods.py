"""Assess 2D denoisers on CT slices: learned models against TV and BM3D.

Clean test volumes get seeded Gaussian noise (the whole volume, so a slice's neighbour prior is
real), evenly spaced slices are denoised by every method, and each estimate is scored against the
clean slice: PSNR and SSIM (data range 1) and the relative error 100·‖x̂ − x‖/‖x‖. The baselines run
with parameters tuned on the validation phantoms (tuned once, then read from ``results/tuned/``).

With no arguments it assesses, at 5 % noise on the embedded phantom test split, the 2D models in
``trained_models/`` trained at that noise level, plus the noisy input, TV and BM3D. Every setting
below can be overridden on the command line (``--help``).

``--noise-model ct_lowdose --dose D`` replaces the Gaussian noise by simulated low-dose scans (the
reference projection-domain form at each volume's own pixel spacing; an unknown spacing is an error):
the baselines then estimate the noise sigma from each noisy sample (no tuned parameters exist for it),
the default models are those trained on ct_lowdose at that dose, and the results record the model
and the dose (see ``utils/application/assessment.py``).

Outputs (``results/assess2d_<noise>/``): ``metrics.csv`` (one row per method and slice),
``summary.md`` (mean ± std per method and the settings) and ``comparison.png`` (clean | noisy |
TV | BM3D | models, with a zoomed row).

This re-creates the reference repository's ``Demo_assess_2D_learning_methods.py`` without its bugs:
SSIM is computed per slice (not on a (N, 256, 256) array read as one image), the first test image is
really noisy, and each panel's error is that of the image shown.
"""

import argparse
from pathlib import Path

from utils.base import defaults

# ## Settings (the defaults of the command-line options)
DATA = ()  # empty: the embedded phantom test split, data/phantom/test (generated on first use)
NOISE_MODEL = "gaussian"  # or ct_lowdose: simulated low-dose scans at --dose (BM3D/BM4D/TV/SPADE then estimate sigma per sample)
NOISE = 0.05  # standard deviation on the [0, 1] scale: 0.02, 0.05, 0.10 in the paper
MODELS_DIR = defaults.MODELS_DIR  # trained_models; default models: the 2D ones in here trained at NOISE
METHODS = "noisy,tv,bm3d"  # baselines; any of noisy,tv,spade,bm3d, or none
SLICES_PER_VOLUME = 8  # evenly spaced test slices per volume (BM3D takes seconds per slice)
SELF_ENSEMBLE = False  # models predict the mean over flips of their axes (4 in 2D, 8 in 3D): better, that many times slower
SEED = defaults.ASSESSMENT_SEED  # 2020
HU_WINDOW = defaults.DEFAULT_HU_WINDOW  # (-1000, 400)
TUNED_DIR = defaults.TUNED_DIR  # results/tuned
OUT = ""  # empty: results/assess2d_<noise>

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
parser.add_argument("--data", nargs="+", default=list(DATA), help="test CT: any files or folders read_ct reads; default: the embedded phantom test split")
parser.add_argument("--noise", type=float, default=NOISE, help="noise standard deviation on the [0, 1] scale")
parser.add_argument("--noise-model", choices=("gaussian", "ct_lowdose"), default=NOISE_MODEL, help="test noise: Gaussian --noise, or simulated low dose (projection-domain reference form, needs the pixel spacing)")
parser.add_argument("--dose", type=float, default=None, help="ct_lowdose only: fraction of the scan's dose kept (default 0.25)")
parser.add_argument("--models", nargs="*", default=None, metavar="FILE", help=f"2D model files (.keras or reference .h5); default: those in {MODELS_DIR}/ trained at --noise")
parser.add_argument("--methods", default=METHODS, help="comma list of baselines: noisy,tv,spade,bm3d; 'none' for models only")
parser.add_argument("--slices-per-volume", type=int, default=SLICES_PER_VOLUME, help="evenly spaced test slices per volume (0: all)")
parser.add_argument("--self-ensemble", action=argparse.BooleanOptionalAction, default=SELF_ENSEMBLE, help="models predict the mean over the flips of their axes")
parser.add_argument("--seed", type=int, default=SEED, help="seed of the test noise")
parser.add_argument("--hu-window", nargs=2, type=float, default=HU_WINDOW, metavar=("LO", "HI"), help="HU window mapped to [0, 1]")
parser.add_argument("--tuned-dir", default=TUNED_DIR, help="where the tuned baseline parameters are read and stored")
parser.add_argument("--out", default=OUT, help="output folder (default: results/assess2d_<noise>, or results/assess2d_lowdose<dose> with ct_lowdose)%(default)s")
args = parser.parse_args()

from utils.application import assessment, figures  # noqa: E402  (TensorFlow loads after --help has been answered)

with assessment.user_errors():
    noise = assessment.make_noise_setting(args.noise_model, args.noise, args.dose)
lowdose = noise.model == "ct_lowdose"
out = Path(args.out or f"results/assess2d_{noise.slug}")

# ## Data: noise on the whole volumes, then evenly spaced slices
with assessment.user_errors():
    volumes = assessment.load_volumes(args.data, args.hu_window)
    noisy_volumes = noise.apply(volumes, args.seed)
    samples = assessment.slice_samples(noisy_volumes, args.slices_per_volume)

# ## Methods: the learned models first (a bad file fails before any tuning), then tuned baselines
with assessment.user_errors():
    model_files, notes = (args.models, []) if args.models is not None else assessment.discover_models(MODELS_DIR, args.noise, ndims=(2,), noise_model=noise.model, dose=noise.dose)
    models = assessment.model_methods(
        model_files, allowed_ndims=(2,), demo_hint="; use Demo_assess_3D_learning_methods.py for 3D models", self_ensemble=args.self_ensemble
    )
    notes += assessment.noise_notes(models, args.noise, noise)
for note in notes:
    print(note)
with assessment.user_errors():
    baselines = assessment.baseline_methods(assessment.parse_method_list(args.methods), args.noise, sample_ndim=2, tuned_dir=args.tuned_dir, estimate_sigma=lowdose)
    methods = baselines + models
    assessment.check_compatible(methods, samples)

# ## Evaluation: every method on every slice, timed; the middle slice of the first volume is kept for the figure
first_volume = [s for s in samples if s.volume is samples[0].volume]
shown = first_volume[len(first_volume) // 2]
with assessment.user_errors():
    evaluation = assessment.evaluate(methods, samples, keep=[shown.name])

# ## Results: figure, metrics table and summary (the figure first: metrics.csv marks a complete run)
figure = figures.comparison_grid(
    out / "comparison.png",
    shown.clean,
    [(m.name, evaluation.outputs[(m.name, shown.name)]) for m in methods],
    title=f"{shown.name}, {noise.label}",
)
assessment.write_metrics_csv(out / "metrics.csv", evaluation.records)
settings = assessment.describe_settings(
    args.data, volumes, samples, [noisy_volumes[0].noise], args.seed,
    sampling=f"{args.slices_per_volume or 'all'} evenly spaced slices per volume; figure: {shown.name}",
    noise_text=assessment.describe_lowdose_noise([noise.dose], volumes) if lowdose else None,
)
summary = assessment.summary_markdown("2D denoisers on CT slices", evaluation.records, settings, methods, [figure], notes)
assessment.write_summary(out / "summary.md", summary)
print(summary.split("\n## Settings")[0])
print(f"Wrote {out / 'metrics.csv'}, {out / 'summary.md'} and {figure}")
