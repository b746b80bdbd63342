"""The project's shared defaults, each defined once.

Plain constants without TensorFlow or ``models`` imports, so that the configuration, the readers,
the command-line tools and the tests can all use them cheaply. A top-level script may keep its
own constant (``HU_WINDOW = DEFAULT_HU_WINDOW``) to show its settings, but takes its value from here.
"""

from pathlib import Path

# The repository's root folder (where the top-level scripts, data/ and trained_models/ live).
REPO_ROOT = Path(__file__).resolve().parents[2]

# ----------------------------------------------------------------------------- intensities
# HU window mapped to [0, 1] (the reference repository's choice: lung to bone).
DEFAULT_HU_WINDOW = (-1000.0, 400.0)

# Air by the definition of the Hounsfield scale: what the phantoms paint outside the body.
AIR_HU = -1000.0

# The lowest value a scanner stores for tissue: the bottom of a 12-bit range shifted by the usual
# -1024 intercept. The readers raise everything below it to it (lower values mark padding outside
# the field of view, e.g. -3024 HU). Not air itself: air is AIR_HU.
HU_FLOOR = -1024.0

# ----------------------------------------------------------------------------- neighbour prior
# Weighted mean of the noisy slices k = -4..4 around each slice, weights exp(-0.04 |k|) (utils.data.prior).
PRIOR_HALF_WINDOW = 4
PRIOR_DECAY = 0.04
PRIOR_VARIANT = "centred"
PRIOR_VARIANTS = ("centred", "reference")
DEFAULT_PRIOR = {"half_window": PRIOR_HALF_WINDOW, "decay": PRIOR_DECAY, "variant": PRIOR_VARIANT}

# ----------------------------------------------------------------------------- models
MODEL_NAMES = ("convnet", "cnn2", "cnn7", "resnet", "dncnn", "unet", "resprunet", "drunet")

# The families that down-sample ``depth`` times: their inputs and patches are multiples of 2**depth.
MULTISCALE_MODELS = ("unet", "resprunet", "drunet")

# First-level filters of each family when none are given (models.builders, the training CLI).
DEFAULT_FILTERS = {"convnet": 64, "cnn2": 32, "cnn7": 32, "resnet": 32, "dncnn": 64, "unet": 32, "resprunet": 32, "drunet": 32}

# Model files the toolkit reads: its own Keras archives and the reference repository's HDF5.
MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")

# ----------------------------------------------------------------------------- assessment
# Seed of the noise added to the test volumes by the assessment demos (the reference's 2020).
ASSESSMENT_SEED = 2020

# ----------------------------------------------------------------------------- folders (relative to the repository root)
MODELS_DIR = "trained_models"  # the shipped models
RESULTS_DIR = "results"  # run folders and assessment outputs
TUNED_DIR = "results/tuned"  # tuned parameters of the classical methods
PHANTOM_DIR = "data/phantom"  # the embedded phantom dataset (train, val, test)
REAL_CT_SAMPLE_DIR = "data/real_ct_sample"  # the committed real CT slices the default 2D training mixes in
