"""Train a 3D CT denoiser (ResPrU-Net 3D, 3D U-Net or 3D CNN) on volume patches.

Noisy patches are cut on the fly from clean CT volumes: random crops and flips, fresh
Gaussian noise every epoch, and for ResPrU-Net the prior volume averaged from neighbouring
noisy slices (computed over a slab around the patch, so it equals the whole-volume prior).
With no arguments it trains ResPrU-Net 3D on the embedded synthetic phantoms (generated on
the first run) at 5 % noise, sized for a CPU; the reference repository's GPU settings are
``--filters 32 --patch 32 256 256 --batch-size 2``. Every setting below can be overridden on
the command line (``--help`` lists them); ``--quick`` runs a tiny complete training for smoke tests.

Outputs go to ``results/<run>/``: model_best.keras, model_final.keras, config.json,
history.csv and TensorBoard logs (``tensorboard --logdir results``).
"""

import sys

from utils.cli import parse_training_args
from utils.config import TrainingConfig
from utils.defaults import DEFAULT_HU_WINDOW

# ## Settings (the defaults of the command-line options)
MODEL = "resprunet"  # resprunet, unet, cnn2 (the reference's 3D CNN), convnet, dncnn, ...
FILTERS = 16  # first-level filters of MODEL; another --model: its family default
DEPTH = 3  # poolings: a 2x8x8 bottleneck for 16x64x64 patches (the README compares it with depth 2)
NOISE = 0.05  # standard deviation on the [0, 1] scale: 0.02, 0.05, 0.10 in the paper
PATCH = (16, 64, 64)
BATCH_SIZE = 4
SAMPLES_PER_VOLUME = 48  # random patches cut from each volume per epoch (0: one per patch depth, 4 here)
VALIDATION_SAMPLES_PER_VOLUME = 48  # fixed patches per validation volume (0 would leave the embedded phantoms 8)
EPOCHS = 45  # long epochs: validation and checkpoints cost about 3 s per epoch on 2 CPU cores
LEARNING_RATE = 1e-3
LR_SCHEDULE = "cosine"  # constant or cosine
DATA = ()  # empty: the embedded phantoms in data/phantom/
HU_WINDOW = DEFAULT_HU_WINDOW  # (-1000, 400)
PRECISION = "mixed_bfloat16"  # float32, mixed_bfloat16 (CPUs with AVX512-BF16, recent GPUs), mixed_float16 (GPUs)
TIME_LIMIT_MINUTES = 15.0  # a guard: the default 45 epochs take 12-14.5 minutes on 2 CPU cores
SEED = 0
QUICK = dict(filters=4, patch=(8, 32, 32), batch_size=2, epochs=2, samples_per_volume=4, validation_samples_per_volume=4, time_limit_minutes=0.0)

defaults = TrainingConfig(
    ndim=3, model=MODEL, filters=FILTERS, depth=DEPTH, noise=NOISE, patch=PATCH, batch_size=BATCH_SIZE, samples_per_volume=SAMPLES_PER_VOLUME,
    validation_samples_per_volume=VALIDATION_SAMPLES_PER_VOLUME, epochs=EPOCHS, learning_rate=LEARNING_RATE, lr_schedule=LR_SCHEDULE,
    data=DATA, hu_window=HU_WINDOW, precision=PRECISION, time_limit_minutes=TIME_LIMIT_MINUTES, seed=SEED,
)
if "--quick" in sys.argv:
    defaults = TrainingConfig(**{**defaults.to_dict(), **QUICK})
config, options = parse_training_args(defaults, __doc__.split("\n")[0])

# ## Data: the embedded phantoms unless --data is given; patches, flips, noise and prior on the fly
from utils import training  # noqa: E402  (TensorFlow loads after --help has been answered)

run, resuming, data = training.prepare(config, options)

# ## Model
with training.make_strategy(config.distribute).scope():
    model = training.compile_model(training.build_or_load_model(config), config, data.steps_per_epoch)
model.summary(line_length=100)
run.write_config(config, data.description)

# ## Training: checkpoints, TensorBoard, resume from the last completed epoch after a kill
summary = training.fit(model, config, run, resuming, data)

# ## Summary
print(training.summary_line(summary))
