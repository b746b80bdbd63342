"""The machinery behind the training scripts: run folders, runtime set-up, data, callbacks.

The scripts show the machine learning (data, model, loss, optimizer, ``model.fit``); this module
holds the pieces they name and the plumbing around them, which :class:`Run` gathers in one object::

    run = Run(config, options)               # checks the settings; refuses, starts or resumes the folder
    run.write_config(data_description)       # config.json: from here on a killed run resumes
    run.restore(model)                       # an interrupted run's last completed epoch -> run.initial_epoch
    model.fit(..., initial_epoch=run.initial_epoch, callbacks=run.callbacks(panel_samples))
    summary = run.finish(model)              # model_final.keras, finished.json; the resume state removed

Run folder layout (``results/<run_name>/``)::

    config.json          every setting, library versions, git commit, data description
    model_best.keras     lowest validation loss so far (config embedded)
    model_final.keras    weights at the end of training (config embedded)
    history.csv          one row per completed epoch, rewritten atomically
    logs/                TensorBoard: train/, validation/ scalars and histograms, images/
    backup/              resume state while the run is unfinished (removed when it ends)

A run folder is never overwritten silently: an unfinished run with the same settings is
resumed, anything else needs ``--overwrite``.
"""

import csv
import io
import json
import os
import shutil
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from models.precision import resolve_precision
from utils.base import atomic, locks
from utils.base.defaults import REAL_CT_SAMPLE_DIR, REPO_ROOT
from utils.learning.config import TrainingConfig, environment_record
from utils.base.errors import ConfigError, DataError, ModelFileError, RunDirectoryError
from utils.data.noise import estimate_noise_sigma, make_noise
from utils.learning.pipeline import PatchSampling, balanced_samples_per_volume, check_patch_fits, make_dataset

FINISHED_MARKER = "finished.json"
# Settings that may change between a run and its resumption without changing the experiment.
RESUME_IGNORED = {"epochs", "out", "time_limit_minutes", "profile_batch", "tensorboard_update_freq"}


# ----------------------------------------------------------------------------- run folder
class RunDirectory:
    """A results folder for one training run, with the rules that keep earlier runs safe."""

    def __init__(self, path):
        self.path = Path(path)

    config_path = property(lambda self: self.path / "config.json")
    best_model = property(lambda self: self.path / "model_best.keras")
    final_model = property(lambda self: self.path / "model_final.keras")
    history_path = property(lambda self: self.path / "history.csv")
    logs = property(lambda self: self.path / "logs")
    backup = property(lambda self: self.path / "backup")

    @property
    def finished(self):
        return (self.path / FINISHED_MARKER).exists()

    @classmethod
    def prepare(cls, config, overwrite=False):
        """Create the folder, or decide that an unfinished run there is resumed.

        Returns ``(run_directory, resuming)``. Raises RunDirectoryError when another process holds
        the folder (:mod:`utils.base.locks`), or when it holds a finished run or a run with other settings
        and ``overwrite`` is False.
        """
        run = cls(config.out)
        # Held until the process ends: a second training on this folder is refused at once.
        locks.acquire(run.path)
        if run.path.exists() and any(run.path.iterdir()):
            if overwrite:
                shutil.rmtree(run.path)
            elif run.finished:
                raise RunDirectoryError(
                    f"{run.path} holds a finished run; choose another --out or pass --overwrite to replace it"
                )
            elif not run.config_path.exists():
                raise RunDirectoryError(f"{run.path} exists and is not a run folder of this toolkit; choose another --out")
            else:
                # Settings added since that run was made had their default then.
                earlier = {**TrainingConfig().to_dict(), **json.loads(run.config_path.read_text())["settings"]}
                differences = {
                    key: (earlier.get(key), value)
                    for key, value in _comparable(config.to_dict()).items()
                    if _comparable(earlier).get(key) != value
                }
                if differences:
                    listed = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(differences.items()))
                    raise RunDirectoryError(
                        f"{run.path} holds an unfinished run with other settings ({listed}); "
                        "resume it with the same settings, choose another --out, or pass --overwrite"
                    )
                return run, True
        return run, False

    def write_config(self, config, data_description):
        self.path.mkdir(parents=True, exist_ok=True)
        atomic.write_json(
            self.config_path,
            {"settings": config.to_dict(), "environment": environment_record(), "data": data_description},
        )

    def mark_finished(self, summary):
        atomic.write_json(self.path / FINISHED_MARKER, summary)


def _comparable(settings):
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in settings.items() if k not in RESUME_IGNORED}


def default_run_name(config):
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return f"{config.ndim}d_{config.model}_{config.filters}_noise{round(config.noise * 100)}pc_{stamp}"


# ----------------------------------------------------------------------------- runtime
def configure_runtime(config, options=None):
    """Seed everything, choose the precision policy and, for tests, split the CPU into devices.

    ``options``: the scripts' extra options (``deterministic``, ``logical_cpus``); default: deterministic
    ops on the machine's devices as they are.
    """
    deterministic = getattr(options, "deterministic", True)
    logical_cpus = getattr(options, "logical_cpus", 0)
    if logical_cpus > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * logical_cpus)
    if config.distribute == "multiworker":
        # MultiWorkerMirroredStrategy must exist before the first TensorFlow op (the pipelines
        # built next), or TF fails with "Collective ops must be configured at program startup".
        # make_strategy keeps it, so the script's later make_strategy call returns this one.
        make_strategy("multiworker")
    keras.utils.set_random_seed(config.seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    policy, reason = resolve_precision(config.precision)
    if config.precision == "auto":
        print(f"Precision: {policy} ({reason})")
    keras.mixed_precision.set_global_policy(policy)


class _MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """MultiWorkerMirroredStrategy whose ``reduce`` accepts nested values, as MirroredStrategy's does.

    Works around two Keras 3 (3.15) bugs that stop ``model.fit`` under this strategy
    (keras-team/keras#20585, tensorflow/tensorflow#72388):

    * fit reduces its first ``(inputs, targets)`` batch with one ``reduce`` call, which the
      multi-worker strategy rejects ("Attempt to convert a value (PerReplica...) to a
      Tensor"): nested values are reduced leaf by leaf, as MirroredStrategy does;
    * every step reduces the scalar loss and metrics with ``axis=0`` ("Invalid reduction
      dimension 0 for input with 0 dimensions"): scalars are averaged across replicas only,
      which is what the single-worker strategies do with them.
    """

    def reduce(self, reduce_op, value, axis):
        parent = super()

        def reduce_leaf(leaf):
            scalar = tf.convert_to_tensor(parent.experimental_local_results(leaf)[0]).shape.rank == 0
            return parent.reduce(reduce_op, leaf, None if scalar else axis)

        return tf.nest.map_structure(reduce_leaf, value)


_MULTIWORKER_STRATEGY = None


def make_strategy(name):
    """TensorFlow's own distribution engine: all local GPUs, or workers described by TF_CONFIG."""
    global _MULTIWORKER_STRATEGY
    if name == "none":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise ConfigError("--distribute multiworker needs the TF_CONFIG environment variable (cluster and task)")
        if _MULTIWORKER_STRATEGY is None:  # one per process: see configure_runtime
            _MULTIWORKER_STRATEGY = _MultiWorkerMirroredStrategy()
        return _MULTIWORKER_STRATEGY
    raise ConfigError(f"unknown distribution strategy {name!r}")


# ----------------------------------------------------------------------------- data
def load_volumes(paths, hu_window):
    """Read every path (any format :func:`utils.data.readers.read_ct` accepts) into clean volumes.

    Each volume's description carries ``noise_sigma_estimate``, the noise already in it
    (:func:`utils.data.noise.estimate_noise_sigma`), which :func:`noisy_target_warnings` checks.
    """
    from utils.data.readers import read_ct

    volumes, description = [], []
    for path in paths:
        if not Path(path).exists():
            raise DataError(path, "no such file or folder (check --data)")
        for volume in read_ct(path, hu_window=hu_window):
            volumes.append(volume.array)
            description.append(
                {**volume.describe(), "data_path": str(path), "noise_sigma_estimate": round(estimate_noise_sigma(volume.array), 5)}
            )
    return volumes, description


# Clean targets may carry at most this fraction of the training noise's standard deviation.
TARGET_NOISE_LIMIT = 0.5


def noisy_target_warnings(description, noise_sigma):
    """One message per training volume whose own noise is not small against the added noise.

    A network trained to map ``target + added noise`` to ``target`` learns to keep whatever noise
    the target already has: an 8-bit export in a narrow window (its quantum noise stretched by the
    window) used as a clean target at 5 % training noise makes a denoiser that leaves grain in.
    """
    messages = []
    for volume in description:
        estimate = volume.get("noise_sigma_estimate")
        if estimate is not None and estimate > TARGET_NOISE_LIMIT * noise_sigma:
            messages.append(
                f"{volume['source']}: its images already carry noise of about sigma {estimate:.3f} on the [0, 1] "
                f"scale, more than {TARGET_NOISE_LIMIT:g} x the training noise {noise_sigma:g}; as clean targets "
                "they teach the model to keep that noise (use cleaner scans, a wider window or a higher --noise)"
            )
    return messages


def resolve_data(config, quick=False):
    """Training and validation volumes for ``config``, plus a description for config.json.

    With no ``--data``, the embedded default data: the phantom dataset (generated under ``data/``
    on first use; ``quick`` uses a tiny one) and, for 2D runs but not ``quick`` ones, the real CT
    sample committed in ``data/real_ct_sample/``, the two balanced (half of every epoch each,
    :func:`samples_per_volume`). With ``--data`` and no ``--validation-data``, volumes (or the last
    slices of a single volume) are held out for validation.
    """
    if config.data:
        train, described = load_volumes(config.data, config.hu_window)
        if config.validation_data:
            val, val_described = load_volumes(config.validation_data, config.hu_window)
        else:
            train, val = split_validation(train)
            val_described = "held out from --data"
            described = described[: len(train)]  # whole volumes held out are not training data
        return train, val, {"train": described, "validation": val_described}
    from utils.data.phantom import ensure_default_dataset

    settings = QUICK_PHANTOMS if quick else {}
    splits = ensure_default_dataset(**settings)
    train, described = load_volumes(splits["train"], config.hu_window)
    balanced = False
    sample = REPO_ROOT / REAL_CT_SAMPLE_DIR
    if config.ndim == 2 and not quick and sample.is_dir():
        real, real_described = load_volumes([sample], config.hu_window)
        phantoms = str(Path(splits["train"][0]).parent)  # one source for the balance, not one per phantom file
        described = [{**entry, "data_path": phantoms} for entry in described]
        real_described = [{**entry, "data_path": REAL_CT_SAMPLE_DIR} for entry in real_described]
        train, described, balanced = train + real, described + real_described, True
    if config.validation_data:
        val, val_described = load_volumes(config.validation_data, config.hu_window)
    else:
        val, val_described = load_volumes(splits["val"], config.hu_window)
    return train, val, {"train": described, "validation": val_described, "balanced": balanced}


# Normal anatomy at low resolution (4 mm pixels), so smoke runs still see CT-like images.
QUICK_PHANTOMS = {"out_dir": "data/phantom_quick", "n_train": 2, "n_val": 1, "n_test": 1, "shape": (16, 64, 64), "spacing": (2.5, 4.0, 4.0)}


def load_training_volumes(config, quick=False):
    """The clean training and validation volumes of a run (see :func:`resolve_data`) and their description.

    Prints a warning for every training volume whose own noise is not small against the
    training noise (:func:`noisy_target_warnings`). Raises DataError or ConfigError.
    """
    train, val, description = resolve_data(config, quick=quick)
    for message in noisy_target_warnings(description["train"], configured_noise(config).effective_sigma):
        print(f"warning: {message}", file=sys.stderr)
    return train, val, description


def split_validation(volumes, fraction=0.15):
    """Hold out whole volumes for validation, or the last slices when there is only one."""
    if len(volumes) >= 2:
        n_val = max(1, int(round(len(volumes) * fraction)))
        return volumes[:-n_val], volumes[-n_val:]
    volume = volumes[0]
    n_val = max(1, int(round(volume.shape[0] * fraction)))
    if volume.shape[0] - n_val < 1:
        raise ConfigError("one single slice cannot be split into training and validation data; add data or --validation-data")
    return [volume[:-n_val]], [volume[-n_val:]]


def configured_noise(config):
    """The run's noise model; ``ct_lowdose`` also gets ``--dose`` and the HU window of the data."""
    options = {"dose": config.dose, "hu_window": config.hu_window} if config.noise_model == "ct_lowdose" else {}
    return make_noise(config.noise, config.noise_model, **options)


def patch_sampling(config):
    """How the samples of a run are cut: --patch crops inside --central-fraction, flips, --zoom-range,
    --window-augmentation, and for ResPrU-Net the neighbour-slice prior (:class:`utils.learning.pipeline.PatchSampling`)."""
    return PatchSampling(
        patch=config.patch,
        use_prior=config.prior,
        prior_half_window=config.prior_half_window,
        prior_decay=config.prior_decay,
        prior_variant=config.prior_variant,
        central_fraction=config.central_fraction,
        window_augmentation=config.window_augmentation,
        base_hu_window=config.hu_window,
        zoom_range=config.zoom_range,
    )


def training_noise(config):
    """The noise added to the samples: --noise-model at --noise (or --dose), or for blind training a
    Gaussian sigma (--noise-range) or a low dose (--dose-range) drawn per sample in the range (the model
    gets no noise level)."""
    if config.noise_range:
        from utils.data.noise import GaussianRangeNoise

        return GaussianRangeNoise(*config.noise_range)
    if config.dose_range:
        from utils.data.noise import CTLowDoseRangeNoise

        return CTLowDoseRangeNoise(dose=config.dose, dose_range=config.dose_range, hu_window=config.hu_window)
    return configured_noise(config)


def samples_per_volume(config, volumes, sampling, description=None):
    """Training samples per volume and epoch: --samples-per-volume (None: one per slice in 2D, one per
    patch depth in 3D), or with --balance-data counts that give every --data path the same share.

    ``description`` is :func:`load_training_volumes`' record of the volumes (it names their paths).
    """
    per_volume = config.samples_per_volume or None
    if not (config.balance_data or (description or {}).get("balanced")):  # the default data are balanced
        return per_volume
    sources = [volume.get("data_path") for volume in (description or {}).get("train", [])] or [None] * len(volumes)
    return balanced_samples_per_volume(volumes, sources, sampling, per_volume)


def shard_per_worker(config, *datasets):
    """With --distribute multiworker, each worker takes its share of every dataset's batches; else unchanged."""
    if config.distribute != "multiworker":
        return datasets
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return tuple(dataset.with_options(options) for dataset in datasets)


def training_data(config, train_volumes, val_volumes, train_sources=None):
    """The training and validation pipelines described by ``config``, and fixed validation samples
    for the image panels: the datasets the training scripts build, from the same pieces.

    ``train_sources`` names the ``--data`` path of each training volume, for ``balance_data``.
    """
    sampling = patch_sampling(config)
    check_patch_fits([v.shape for v in train_volumes + val_volumes], sampling)
    description = {"train": [{"data_path": source} for source in train_sources or [None] * len(train_volumes)]}
    common = {"sampling": sampling, "noise": training_noise(config), "batch_size": config.batch_size, "seed": config.seed}
    train = make_dataset(train_volumes, training=True, samples_per_volume=samples_per_volume(config, train_volumes, sampling, description), **common)
    # Counted apart from training: many random crops per epoch need not mean as many fixed validation samples.
    val_per_volume = config.validation_samples_per_volume or None
    validation = make_dataset(val_volumes, training=False, samples_per_volume=val_per_volume, **common)
    # The same fixed validation samples for the image panels, read without touching the cache.
    panel_inputs, panel_clean = next(iter(make_dataset(val_volumes, training=False, cache=False, samples_per_volume=val_per_volume, **common)))
    train, validation = shard_per_worker(config, train, validation)
    return train, validation, (panel_inputs, panel_clean)


# ----------------------------------------------------------------------------- model
def load_initial_model(config):
    """The model to continue training from (--init-model: a .keras file, or a reference repository .h5).

    Raises ModelFileError when the file cannot be loaded, or when its dimensionality or prior
    input does not match the settings.
    """
    from models.inference import model_info
    from models.storage import load_model

    # A mixed-precision file continues in float32 where this run trains in float32.
    model, _ = load_model(config.init_model, precision=resolve_precision(config.precision)[0])
    info = model_info(model)
    if info.ndim != config.ndim or info.needs_prior != config.prior:
        kind = f"{info.ndim}D{' with a prior input' if info.needs_prior else ''}"
        wanted = f"{config.ndim}D{' with a prior input' if config.prior else ''}"
        raise ModelFileError(config.init_model, f"the model is {kind}, this training needs {wanted}")
    return model


def cosine_decay_steps(config, dataset):
    """Steps of the planned training (epochs x batches per epoch), over which --lr-schedule cosine decays."""
    steps = int(dataset.cardinality())
    if steps <= 0:
        raise ConfigError("--lr-schedule cosine needs a known number of steps per epoch; use constant")
    return config.epochs * steps


# ----------------------------------------------------------------------------- callbacks
class EpochState(keras.callbacks.Callback):
    """Resume state (weights, optimizer, epoch, best loss) saved atomically after every epoch.

    ``state.json`` is written after the weights file it names, so a kill at any moment leaves
    either the previous consistent pair or the new one, never a mix.
    """

    def __init__(self, backup_dir):
        super().__init__()
        self.backup_dir = Path(backup_dir)
        self.state_path = self.backup_dir / "state.json"

    def restore(self, model):
        """Load the last saved state into ``model``; return the epoch to start from (0 if none)."""
        if not self.state_path.exists():
            return 0
        state = json.loads(self.state_path.read_text())
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        model.load_weights(self.backup_dir / state["weights"])
        return int(state["epoch"])

    def on_epoch_end(self, epoch, logs=None):
        self.backup_dir.mkdir(parents=True, exist_ok=True)
        weights_name = f"epoch{epoch + 1:05d}.weights.h5"
        with atomic.atomic_path(self.backup_dir / weights_name) as tmp:
            self.model.save_weights(tmp)
        atomic.write_json(self.state_path, {"epoch": epoch + 1, "weights": weights_name})
        for old in self.backup_dir.glob("epoch*.weights.h5"):
            if old.name != weights_name:
                old.unlink()


class HistoryWriter(keras.callbacks.Callback):
    """history.csv with one row per completed epoch; rows of epochs redone after a resume are replaced."""

    def __init__(self, path):
        super().__init__()
        self.path = Path(path)
        self.rows = []

    def on_train_begin(self, logs=None):
        if self.path.exists():
            with open(self.path, newline="") as handle:
                self.rows = list(csv.DictReader(handle))

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()}}
        self.rows = [r for r in self.rows if int(r["epoch"]) < epoch] + [row]
        columns = list(dict.fromkeys(k for r in self.rows for k in r))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        writer.writerows(self.rows)
        atomic.write_text(self.path, buffer.getvalue())


class BestModelSaver(keras.callbacks.Callback):
    """Save the model (config embedded) whenever the validation loss improves, atomically."""

    def __init__(self, path, config_record, monitor="val_loss", best=np.inf):
        super().__init__()
        self.path, self.config_record, self.monitor, self.best = Path(path), config_record, monitor, best
        self.best_epoch = None

    def on_epoch_end(self, epoch, logs=None):
        from models.storage import save_model

        value = (logs or {}).get(self.monitor)
        if value is not None and value < self.best:
            self.best, self.best_epoch = float(value), epoch
            save_model(self.model, self.path, self.config_record)


class ValidationImages(keras.callbacks.Callback):
    """TensorBoard image panel of fixed validation samples: noisy | prior | denoised | clean | |error|.

    Volumes show their central slice. Images use the full [0, 1] window; the error panel
    maps [0, 4 sigma] to black..white so that residual structure is visible.
    """

    def __init__(self, log_dir, inputs, clean, noise_sigma, every=1, max_samples=4):
        super().__init__()
        self.writer = tf.summary.create_file_writer(str(Path(log_dir) / "images"))
        self.inputs = inputs
        self.clean = clean[:max_samples]
        self.error_scale = 4 * max(noise_sigma, 1e-3)
        self.every = every

    def _take(self, x):
        return x[: len(self.clean)]

    def on_epoch_end(self, epoch, logs=None):
        if self.every < 1 or epoch % self.every:
            return
        inputs = {k: self._take(v) for k, v in self.inputs.items()} if isinstance(self.inputs, dict) else self._take(self.inputs)
        denoised = np.asarray(self.model.predict(inputs, verbose=0), np.float32)
        noisy = inputs["noisy"] if isinstance(inputs, dict) else inputs
        columns = [noisy] + ([inputs["prior"]] if isinstance(inputs, dict) else []) + [denoised, self.clean]
        columns.append(np.abs(denoised - self.clean) / self.error_scale)
        panel = np.concatenate([_central_slice(np.clip(c, 0, 1)) for c in columns], axis=2)
        with self.writer.as_default():
            tf.summary.image("validation/noisy_prior_denoised_clean_error", panel, step=epoch, max_outputs=len(panel))
        self.writer.flush()


def _central_slice(batch):
    batch = np.asarray(batch, np.float32)
    return batch[:, batch.shape[1] // 2] if batch.ndim == 5 else batch


class TimeLimit(keras.callbacks.Callback):
    """Stop before an epoch that would end after the time limit (estimated from the slowest epoch)."""

    def __init__(self, minutes):
        super().__init__()
        self.seconds = minutes * 60
        self.start = self.slowest = None

    def on_train_begin(self, logs=None):
        self.start = time.monotonic()
        self.slowest = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        self.slowest = max(self.slowest, time.monotonic() - self.epoch_start)
        if time.monotonic() - self.start + self.slowest > self.seconds:
            print(f"\nTime limit of {self.seconds / 60:.1f} min reached after epoch {epoch + 1}: stopping.")
            self.model.stop_training = True


def training_callbacks(config, run, config_record, panel_samples, best_loss=np.inf):
    """Checkpoints, resume state, history, TensorBoard (scalars, histograms, images, profiler)."""
    inputs, clean = panel_samples
    inputs = {k: v.numpy() for k, v in inputs.items()} if isinstance(inputs, dict) else inputs.numpy()
    callbacks = [
        keras.callbacks.TerminateOnNaN(),
        HistoryWriter(run.history_path),
        BestModelSaver(run.best_model, config_record, best=best_loss),
        keras.callbacks.TensorBoard(
            log_dir=str(run.logs),
            histogram_freq=config.histogram_freq,
            update_freq=config.tensorboard_update_freq,
            profile_batch=config.profile_batch or 0,
        ),
        ValidationImages(run.logs, inputs, clean.numpy(), config.noise, every=config.image_freq),
    ]
    if config.patience:
        callbacks.append(keras.callbacks.EarlyStopping(patience=config.patience, restore_best_weights=True))
    if config.reduce_lr_patience:
        callbacks.append(keras.callbacks.ReduceLROnPlateau(factor=0.5, patience=config.reduce_lr_patience, min_lr=1e-6))
    if config.time_limit_minutes:
        callbacks.append(TimeLimit(config.time_limit_minutes))
    # The resume state commits an epoch, so it is written last: a kill before it leaves the
    # epoch to be redone, never a committed epoch without its history row or best model.
    callbacks.append(EpochState(run.backup))
    return callbacks


def best_validation_loss(history_path):
    """Lowest val_loss recorded by an earlier part of a resumed run (inf when none)."""
    if not Path(history_path).exists():
        return np.inf
    with open(history_path, newline="") as handle:
        values = [float(r["val_loss"]) for r in csv.DictReader(handle) if r.get("val_loss")]
    return min(values, default=np.inf)


# ----------------------------------------------------------------------------- the run
class Run:
    """One training run and its folder: everything around ``model.fit`` that is not machine learning.

    ``Run(config, options)`` fills in the default --out, validates the settings, checks that an
    --init-model file exists, locks the folder and refuses a finished run, a run with other settings
    or a foreign folder unless --overwrite (:meth:`RunDirectory.prepare`; RunDirectoryError or
    ConfigError). Nothing is written until :meth:`write_config`.
    """

    def __init__(self, config, options):
        config.out = config.out or f"results/{default_run_name(config)}"
        config.validate()
        if config.init_model and not Path(config.init_model).is_file():
            raise ConfigError(f"--init-model {config.init_model}: no such model file")
        self.config = config
        self.directory, self.resuming = RunDirectory.prepare(config, overwrite=getattr(options, "overwrite", False))
        self.initial_epoch = 0
        self.started = None

    @property
    def path(self):
        return self.directory.path

    def write_config(self, data_description):
        """config.json (settings, environment, data): the run exists, and is resumed after a kill."""
        self.directory.write_config(self.config, data_description)

    def restore(self, model):
        """Put an interrupted run's last completed epoch (weights, optimizer state) into the compiled
        ``model``; return the epoch to start from, also kept as ``initial_epoch`` (0 for a new run)."""
        self.initial_epoch = EpochState(self.directory.backup).restore(model) if self.resuming else 0
        if self.resuming:
            print(f"Resuming {self.path} at epoch {self.initial_epoch + 1}")
        self.started = time.monotonic()
        return self.initial_epoch

    def callbacks(self, panel_samples):
        """history.csv, best model, TensorBoard and image panels of ``panel_samples`` (fixed validation
        ``(inputs, clean)``), the optional early stop, plateau and time limit, and the resume state (last)."""
        best = best_validation_loss(self.directory.history_path)
        return training_callbacks(self.config, self.directory, self.config.to_dict(), panel_samples, best_loss=best)

    def finish(self, model):
        """Save the final model, remove the resume state, mark the run finished, return the summary."""
        from models.storage import save_model

        run = self.directory
        save_model(model, run.final_model, self.config.to_dict())
        with open(run.history_path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        best = min(rows, key=lambda r: float(r["val_loss"]))
        summary = {
            "best_epoch": int(best["epoch"]),
            "val_psnr": float(best["val_psnr"]),
            "val_ssim": float(best["val_ssim"]),
            "epochs_completed": len(rows),
            "minutes": (time.monotonic() - (self.started or time.monotonic())) / 60,
            "best_model": str(run.best_model),
            "replicas": int(model.distribute_strategy.num_replicas_in_sync),  # devices (and workers) that shared each step
        }
        run.mark_finished(summary)
        shutil.rmtree(run.backup, ignore_errors=True)
        for leftover in run.path.glob(".*.tmp*"):  # from writes interrupted by a kill in an earlier part of the run
            leftover.unlink()
        return summary


def summary_line(summary):
    return (
        f"Best validation PSNR {summary['val_psnr']:.2f} dB, SSIM {summary['val_ssim']:.4f} at epoch "
        f"{summary['best_epoch'] + 1}/{summary['epochs_completed']}; {summary['minutes']:.1f} min; model: {summary['best_model']}"
    )
