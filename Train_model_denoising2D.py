"""Train a 2D CT denoiser (U-Net, ConvNet, ResNet, DnCNN or ResPrU-Net) on slices.

Noisy slices are made on the fly from clean CT: random crops and flips, fresh Gaussian noise
every epoch, and for ResPrU-Net the prior image averaged from neighbouring noisy slices.
With no arguments it trains a 2D U-Net on the embedded synthetic phantoms (generated on the
first run) at 5 % noise. Every setting below can be overridden on the command line
(``--help`` lists them); ``--quick`` runs a tiny complete training for smoke tests.

Outputs go to ``results/<run>/``: model_best.keras, model_final.keras, config.json,
history.csv and TensorBoard logs (``tensorboard --logdir results``).
"""

import sys

from utils.cli import parse_training_args
from utils.config import TrainingConfig
from utils.defaults import DEFAULT_HU_WINDOW

# ## Settings (the defaults of the command-line options)
MODEL = "unet"  # convnet, cnn2, cnn7, resnet, dncnn, unet, resprunet
FILTERS = 24  # first-level filters of MODEL (768,361 parameters at depth 3: 3 MB); another --model: its family default
DEPTH = 3  # poolings of the U-Net: a receptive field of about 100 pixels
RESIDUAL = True  # learn the noise (input + correction); --no-residual is the reference's plain U-Net
NOISE = 0.05  # standard deviation on the [0, 1] scale: 0.02, 0.05, 0.10 in the paper
PATCH = (128, 128)
BATCH_SIZE = 16
EPOCHS = 100
LEARNING_RATE = 1e-3
LR_SCHEDULE = "cosine"  # constant or cosine
DATA = ()  # empty: the embedded phantoms in data/phantom/
HU_WINDOW = DEFAULT_HU_WINDOW  # (-1000, 400)
PRECISION = "mixed_bfloat16"  # float32, mixed_bfloat16 (CPUs with AVX512-BF16, recent GPUs), mixed_float16 (GPUs)
TIME_LIMIT_MINUTES = 14.0  # a guard: the 100 default epochs take 14 minutes on 2 CPU cores
SEED = 0
QUICK = dict(filters=8, patch=(32, 32), batch_size=4, epochs=2, samples_per_volume=4, validation_samples_per_volume=4, time_limit_minutes=0.0)

defaults = TrainingConfig(
    ndim=2, model=MODEL, filters=FILTERS, depth=DEPTH, residual=RESIDUAL, noise=NOISE, patch=PATCH, batch_size=BATCH_SIZE,
    epochs=EPOCHS, learning_rate=LEARNING_RATE, lr_schedule=LR_SCHEDULE, data=DATA, hu_window=HU_WINDOW, precision=PRECISION,
    time_limit_minutes=TIME_LIMIT_MINUTES, seed=SEED,
)
if "--quick" in sys.argv:
    defaults = TrainingConfig(**{**defaults.to_dict(), **QUICK})
config, options = parse_training_args(defaults, __doc__.split("\n")[0])

# ## Data: the embedded phantoms unless --data is given; crops, flips and noise on the fly
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
