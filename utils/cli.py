"""Command-line options generated from :class:`utils.config.TrainingConfig`.

The scripts keep their settings as constants at the top (the reference repository's habit)
and pass them here as defaults; every field becomes a ``--dashed-name`` option, so the CLI
can never drift from the configuration object.
"""

import argparse
import dataclasses

from utils.config import MODEL_NAMES, PRECISIONS, STRATEGIES, TrainingConfig

HELP = {
    "ndim": "2 for slice models, 3 for volume models",
    "model": f"architecture: {', '.join(MODEL_NAMES)}",
    "filters": "filters of the first level",
    "depth": "number of poolings of the U-Nets",
    "kernel_size": "convolution kernel size",
    "residual": "plain U-Net learns the correction to its input",
    "prior_half_window": "prior window: slices on each side of the centre",
    "prior_decay": "prior weights exp(-decay * distance)",
    "prior_variant": "centred, or the reference repository's off-centre window",
    "noise": "noise standard deviation on the [0, 1] scale (0.05 = 5 %%)",
    "noise_model": "gaussian, poisson_gaussian, or ct_lowdose (simulated low-dose CT; its level is set by --dose, not --noise)",
    "dose": "with --noise-model ct_lowdose: fraction of the scan's dose kept, in (0, 1] (0.25 = quarter dose)",
    "noise_range": "blind training: each training sample's Gaussian sigma is drawn uniformly in LO HI "
                   "(validation samples keep fixed sigmas from the seed; the model gets no noise level; "
                   "--noise is then the nominal level for the run name, image panels and assessment)",
    "patch": "patch size: H W in 2D, D H W in 3D",
    "central_fraction": "crops are drawn inside this central fraction of each slice",
    "window_augmentation": "probability of re-windowing a sample to a narrow 8-bit window",
    "zoom_range": "random in-plane zoom LO HI per training sample, log-uniform scale factors "
                  "(0.5 = pixels twice as large, 2 = half as large; resampled before the noise is added; none when empty)",
    "batch_size": "samples per batch",
    "samples_per_volume": "samples per volume per epoch (0: one per slice in 2D, one per patch depth in 3D)",
    "validation_samples_per_volume": "fixed validation samples per volume (0: one per slice in 2D, one per patch depth in 3D)",
    "balance_data": "every --data path gets the same share of each epoch's samples (else each its number of slices or patches)",
    "epochs": "training epochs",
    "learning_rate": "Adam learning rate (the start value with --lr-schedule cosine)",
    "lr_schedule": "constant, or cosine decay to 1 %% over the planned epochs",
    "data": "training data: any number of paths (PNG/TIFF folders, npz, NIfTI, DICOM); default: the embedded phantoms",
    "validation_data": "validation data paths; default: the embedded validation phantoms, or volumes held out of --data",
    "hu_window": "HU window mapped to [0, 1]",
    "precision": f"{', '.join(PRECISIONS)}",
    "distribute": f"{', '.join(STRATEGIES)}",
    "out": "run folder (default results/<model>_<noise>_<time>)",
    "seed": "seed of shuffles, crops and noise",
    "patience": "early-stopping patience in epochs (0: off)",
    "reduce_lr_patience": "halve the learning rate after this many epochs without progress (0: off)",
    "time_limit_minutes": "stop before an epoch that would end after this many minutes (0: off)",
    "init_model": "continue training from this model (.keras, or a reference repository .h5)",
    "tensorboard_update_freq": "TensorBoard scalars every 'epoch', 'batch', or N batches",
    "histogram_freq": "weight histograms every N epochs (0: off)",
    "image_freq": "validation image panel every N epochs (0: off)",
    "profile_batch": "profile batches START STOP with the TensorFlow profiler",
}


def parse_training_args(defaults, description, argv=None):
    """Parse the command line over ``defaults`` (a TrainingConfig); return (config, extra options)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for field in _options():
        default = getattr(defaults, field.name)
        flag = "--" + field.name.replace("_", "-")
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=HELP[field.name])
        elif isinstance(default, tuple):
            element = float if field.name in FLOAT_TUPLES else (int if field.name in ("patch", "profile_batch") else str)
            parser.add_argument(flag, nargs="*", type=element, default=default, help=HELP[field.name])
        else:
            parser.add_argument(flag, type=type(default), default=default, help=HELP[field.name])
    parser.add_argument("--quick", action="store_true", help="tiny complete training for smoke tests (under 2 minutes)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    parser.add_argument("--no-deterministic", dest="deterministic", action="store_false", help="allow non-deterministic ops")
    parser.add_argument("--logical-cpus", type=int, default=0, help="split the CPU into N logical devices (testing --distribute)")
    args = parser.parse_args(argv)
    # Derived settings are left out, so that TrainingConfig derives them again from the options given.
    values = {f.name: getattr(args, f.name) for f in _options()}
    extra = argparse.Namespace(quick=args.quick, overwrite=args.overwrite, deterministic=args.deterministic, logical_cpus=args.logical_cpus)
    return TrainingConfig(**values), extra


# Tuple settings whose elements are numbers with a fraction; the other tuples hold ints or paths.
FLOAT_TUPLES = ("hu_window", "zoom_range", "noise_range")

# Settings that follow from others (the prior input is implied by --model resprunet); not options.
DERIVED = ("prior",)


def _options():
    return [f for f in dataclasses.fields(TrainingConfig) if f.name not in DERIVED]
