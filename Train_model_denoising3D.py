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

from utils.learning.cli import parse_training_args
from utils.learning.config import TrainingConfig
from utils.base.defaults import DEFAULT_HU_WINDOW

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
PRECISION = "auto"  # auto (mixed_bfloat16 where the CPU or GPU computes in bfloat16, else float32), float32, mixed_bfloat16, mixed_float16
TIME_LIMIT_MINUTES = 15.0  # a guard: the default 45 epochs take 12-14.5 minutes on 2 CPU cores
SEED = 0
QUICK = dict(filters=4, patch=(8, 32, 32), batch_size=2, epochs=2, samples_per_volume=4, validation_samples_per_volume=4, time_limit_minutes=0.0)

defaults = TrainingConfig(
    ndim=3, model=MODEL, filters=FILTERS, depth=DEPTH, noise=NOISE, patch=PATCH, batch_size=BATCH_SIZE, samples_per_volume=SAMPLES_PER_VOLUME,
    validation_samples_per_volume=VALIDATION_SAMPLES_PER_VOLUME, epochs=EPOCHS, learning_rate=LEARNING_RATE, lr_schedule=LR_SCHEDULE,
    data=DATA, hu_window=HU_WINDOW, precision=PRECISION, time_limit_minutes=TIME_LIMIT_MINUTES, seed=SEED,
)
config, options = parse_training_args(defaults, __doc__.split("\n")[0], quick=QUICK)

# TensorFlow loads only now, after --help has been answered.
import keras  # noqa: E402

from models import build_model  # noqa: E402
from utils.learning import training  # noqa: E402
from utils.base.errors import user_errors  # noqa: E402
from utils.data.metrics import psnr_metric, ssim_metric  # noqa: E402
from utils.learning.pipeline import make_dataset  # noqa: E402

# A bad setting, data or model file, or a refused run folder, ends the script here with
# "error: <message>" and exit status 1, before anything is trained or written.
with user_errors():
    # ## Run folder: results/<run>/; an unfinished run there with the same settings is resumed
    run = training.Run(config, options)  # finished runs and changed settings are refused unless --overwrite
    training.configure_runtime(config, options)  # seeds, deterministic ops, the --precision policy, --distribute set-up

    # ## Data: the embedded phantoms unless --data is given; patches, flips, fresh noise and the prior every epoch
    train_volumes, val_volumes, described = training.load_training_volumes(config, quick=options.quick)
    sampling = training.patch_sampling(config)  # --patch crops, flips, --zoom-range, --window-augmentation; the prior for ResPrU-Net
    noise = training.training_noise(config)  # Gaussian of sigma --noise, or blind: a sigma per sample in --noise-range
    common = dict(sampling=sampling, noise=noise, batch_size=config.batch_size, seed=config.seed)
    per_volume = training.samples_per_volume(config, train_volumes, sampling, described)  # --samples-per-volume, --balance-data
    train = make_dataset(train_volumes, training=True, samples_per_volume=per_volume, **common)  # shuffled, new crops every epoch
    val_per_volume = config.validation_samples_per_volume or None  # the same samples, crops and noise every epoch
    val = make_dataset(val_volumes, training=False, samples_per_volume=val_per_volume, **common)
    panel = next(iter(make_dataset(val_volumes, training=False, cache=False, samples_per_volume=val_per_volume, **common)))  # TensorBoard images
    train, val = training.shard_per_worker(config, train, val)

    # ## Model: built and compiled inside the distribution strategy (--distribute)
    with training.make_strategy(config.distribute).scope():
        model = training.load_initial_model(config) if config.init_model else build_model(config.model, **config.model_options)
        learning_rate = config.learning_rate
        if config.lr_schedule == "cosine":  # decays to 1 % of --learning-rate over the planned epochs
            learning_rate = keras.optimizers.schedules.CosineDecay(
                config.learning_rate, decay_steps=training.cosine_decay_steps(config, train), alpha=0.01
            )
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
            loss="mse",
            metrics=["mae", psnr_metric, ssim_metric],
        )
model.summary(line_length=100)
run.write_config(described)  # config.json: settings, versions, data; a run killed from here on resumes

# ## Training: checkpoints, TensorBoard, resume from the last completed epoch after a kill
run.restore(model)  # weights and optimizer state of an interrupted run's last completed epoch
model.fit(
    train,
    validation_data=val,
    epochs=config.epochs,
    initial_epoch=run.initial_epoch,
    callbacks=run.callbacks(panel),  # history.csv, best model, TensorBoard, time limit, resume state
    shuffle=False,
)

# ## Summary
summary = run.finish(model)  # model_final.keras and finished.json
print(training.summary_line(summary))
