"""Assess denoisers on CT volumes: 3D models, 2D models slice by slice, TV, SPADE and BM4D.

Clean test volumes get seeded Gaussian noise and the neighbour-slice prior of the whole noisy volume,
are cropped to their central ``--max-depth`` slices, and are denoised whole: 3D models (3D U-Net,
ResPrU-Net 3D) tile by tile, 2D models (U-Net, 2D ResPrU-Net with the neighbour prior) slice by slice,
TV in 3D, SPADE in 3D with the same prior, BM4D. Each estimate is scored over the volume: PSNR (data
range 1), SSIM averaged over the axial slices and the relative error 100·‖x̂ − x‖/‖x‖, numerator and
denominator over the same volume. The baselines run with parameters tuned on the validation phantoms.

With no arguments it assesses, at 5 % noise on the central 16 slices of the embedded phantom test
volumes, the 2D and 3D models in ``trained_models/`` trained at that noise, plus noisy, TV, SPADE and
BM4D. Every setting below can be overridden on the command line (``--help``).

``--noise-model ct_lowdose --dose D`` replaces the Gaussian noise by simulated low-dose scans (the
reference projection-domain form at each volume's own pixel spacing; an unknown spacing is an error):
the baselines then estimate the noise sigma from each noisy volume (no tuned parameters exist for it),
the default models are those trained on ct_lowdose at that dose, and the results record the model
and the dose (see ``utils/application/assessment.py``).

Outputs (``results/assess3d_<noise>/``): ``metrics.csv`` (one row per method and volume),
``summary.md`` and ``views.png`` (axial, zoomed axial, coronal and sagittal views of every method).

This re-creates the reference repository's ``Demo_assess_3D_learning_methods.py`` without its bug of
dividing one slice's error by the whole volume's norm (which deflated its errors about sqrt(32) times).
"""

import argparse
from pathlib import Path

from utils.base import defaults

# ## Settings (the defaults of the command-line options)
DATA = ()  # empty: the embedded phantom test split, data/phantom/test (generated on first use)
NOISE_MODEL = "gaussian"  # or ct_lowdose: simulated low-dose scans at --dose (BM3D/BM4D/TV/SPADE then estimate sigma per sample)
NOISE = 0.05  # standard deviation on the [0, 1] scale
MODELS_DIR = defaults.MODELS_DIR  # trained_models; default models: the 2D and 3D ones in here trained at NOISE
METHODS = "noisy,tv,spade,bm4d"  # baselines; any of noisy,tv,spade,bm3d,bm4d, or none
MAX_DEPTH = 16  # central slices kept per volume (0: all); BM4D costs about 10 us per voxel on 2 cores
MAX_SIZE = 0  # central in-plane crop, pixels (0: none)
TILE = ()  # largest tile a 3D model sees at once, D H W; empty: chosen from the model and the memory available
SELF_ENSEMBLE = False  # models predict the mean over flips of their axes (4 in 2D, 8 in 3D): better, that many times slower
SEED = defaults.ASSESSMENT_SEED  # 2020
HU_WINDOW = defaults.DEFAULT_HU_WINDOW  # (-1000, 400)
TUNED_DIR = defaults.TUNED_DIR  # results/tuned
OUT = ""  # empty: results/assess3d_<noise>

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
parser.add_argument("--data", nargs="+", default=list(DATA), help="test CT volumes: any files or folders read_ct reads; default: the embedded phantom test split")
parser.add_argument("--noise", type=float, default=NOISE, help="noise standard deviation on the [0, 1] scale")
parser.add_argument("--noise-model", choices=("gaussian", "ct_lowdose"), default=NOISE_MODEL, help="test noise: Gaussian --noise, or simulated low dose (projection-domain reference form, needs the pixel spacing)")
parser.add_argument("--dose", type=float, default=None, help="ct_lowdose only: fraction of the scan's dose kept (default 0.25)")
parser.add_argument("--models", nargs="*", default=None, metavar="FILE", help=f"2D or 3D model files (.keras or reference .h5); default: those in {MODELS_DIR}/ trained at --noise")
parser.add_argument("--methods", default=METHODS, help="comma list of baselines: noisy,tv,spade,bm3d,bm4d; 'none' for models only")
parser.add_argument("--max-depth", type=int, default=MAX_DEPTH, help="keep the central N slices of each volume (0: all)")
parser.add_argument("--max-size", type=int, default=MAX_SIZE, help="keep the central N x N pixels of each slice (0: all)")
parser.add_argument("--tile", nargs=3, type=int, default=TILE or None, metavar=("D", "H", "W"), help="largest tile for 3D models (default: automatic, from the model and the memory available)")
parser.add_argument("--self-ensemble", action=argparse.BooleanOptionalAction, default=SELF_ENSEMBLE, help="models predict the mean over the flips of their axes")
parser.add_argument("--seed", type=int, default=SEED, help="seed of the test noise")
parser.add_argument("--hu-window", nargs=2, type=float, default=HU_WINDOW, metavar=("LO", "HI"), help="HU window mapped to [0, 1]")
parser.add_argument("--tuned-dir", default=TUNED_DIR, help="where the tuned baseline parameters are read and stored")
parser.add_argument("--out", default=OUT, help="output folder (default: results/assess3d_<noise>, or results/assess3d_lowdose<dose> with ct_lowdose)%(default)s")
args = parser.parse_args()

from utils.application import assessment, figures  # noqa: E402  (TensorFlow loads after --help has been answered)

with assessment.user_errors():
    noise = assessment.make_noise_setting(args.noise_model, args.noise, args.dose)
lowdose = noise.model == "ct_lowdose"
out = Path(args.out or f"results/assess3d_{noise.slug}")

# ## Data: noise and prior on the whole volumes, then the central crop
with assessment.user_errors():
    volumes = assessment.load_volumes(args.data, args.hu_window)
    noisy_volumes = noise.apply(volumes, args.seed)
    samples = assessment.volume_samples(noisy_volumes, args.max_depth, args.max_size)

# ## Methods: the learned models first (a bad file fails before any tuning), then tuned baselines
with assessment.user_errors():
    model_files, notes = (args.models, []) if args.models is not None else assessment.discover_models(MODELS_DIR, args.noise, ndims=(2, 3), noise_model=noise.model, dose=noise.dose)
    models = assessment.model_methods(model_files, allowed_ndims=(2, 3), tile_shape=tuple(args.tile) if args.tile else "auto", self_ensemble=args.self_ensemble)
    notes += assessment.noise_notes(models, args.noise, noise)
for note in notes:
    print(note)
with assessment.user_errors():
    baselines = assessment.baseline_methods(assessment.parse_method_list(args.methods), args.noise, sample_ndim=3, tuned_dir=args.tuned_dir, estimate_sigma=lowdose)
    methods = baselines + models
    assessment.check_compatible(methods, samples)

# ## Evaluation: every method on every volume, timed; the first volume is kept for the figure
shown = samples[0]
with assessment.user_errors():
    evaluation = assessment.evaluate(methods, samples, keep=[shown.name])

# ## Results: figure, metrics table and summary (the figure first: metrics.csv marks a complete run)
figure = figures.volume_views(
    out / "views.png",
    shown.clean,
    [(m.name, evaluation.outputs[(m.name, shown.name)]) for m in methods],
    spacing=shown.volume.spacing,
    title=f"{shown.name}, {noise.label} (err and PSNR of the whole volume)",
)
assessment.write_metrics_csv(out / "metrics.csv", evaluation.records)
settings = assessment.describe_settings(
    args.data, volumes, samples, [noisy_volumes[0].noise], args.seed,
    sampling=f"whole volumes cropped to the central {args.max_depth or 'all'} slices"
    + (f" and {args.max_size}x{args.max_size} pixels" if args.max_size else "") + f"; figure: {shown.name}",
    noise_text=assessment.describe_lowdose_noise([noise.dose], volumes) if lowdose else None,
)
summary = assessment.summary_markdown("Denoisers on CT volumes", evaluation.records, settings, methods, [figure], notes)
assessment.write_summary(out / "summary.md", summary)
print(summary.split("\n## Settings")[0])
print(f"Wrote {out / 'metrics.csv'}, {out / 'summary.md'} and {figure}")
