"""The pieces the training scripts name (utils.learning.training) and the Run object, in process: library code
raises the project's errors, and only ``user_errors`` in the scripts turns them into an exit."""

import argparse
import json

import numpy as np
import pytest
import tensorflow as tf

from models import build_model
from models.precision import resolve_precision
from models.storage import save_model
from utils.learning import training
from utils.learning.config import TrainingConfig, environment_record
from utils.base.errors import ConfigError, DataError, ModelFileError, RunDirectoryError, user_errors
from utils.learning.pipeline import balanced_samples_per_volume

OPTIONS = argparse.Namespace(quick=True, overwrite=False, deterministic=True, logical_cpus=0)


@pytest.mark.parametrize("error", [ConfigError("bad"), DataError("scan.nii", "bad"), ModelFileError("m.keras", "bad"), RunDirectoryError("bad")])
def test_user_errors_end_a_script_with_one_line(error):
    with pytest.raises(SystemExit) as exit_:
        with user_errors():
            raise error
    assert exit_.value.code == f"error: {error}"


def test_user_errors_let_bugs_through():
    with pytest.raises(KeyError):
        with user_errors():
            raise KeyError("a bug keeps its traceback")


def test_run_refuses_a_finished_run_without_exiting(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "finished.json").write_text("{}")
    with pytest.raises(RunDirectoryError, match="finished run"):
        training.Run(TrainingConfig(out=str(tmp_path / "run")), OPTIONS)


def test_run_checks_the_settings_before_the_folder(tmp_path):
    with pytest.raises(ConfigError, match="no such model file"):
        training.Run(TrainingConfig(out=str(tmp_path / "run"), init_model=str(tmp_path / "none.keras")), OPTIONS)
    assert not (tmp_path / "run").exists()


def test_initial_model_of_another_dimensionality_is_a_model_file_error(tmp_path):
    path = tmp_path / "unet3d.keras"
    save_model(build_model("unet", ndim=3, filters=4), path, {})
    with pytest.raises(ModelFileError, match="the model is 3D, this training needs 2D"):
        training.load_initial_model(TrainingConfig(init_model=str(path)))


def test_balanced_samples_follow_the_recorded_data_paths():
    config = TrainingConfig(balance_data=True, patch=(16, 16))
    volumes = [np.zeros((20, 16, 16), np.float32), np.zeros((4, 16, 16), np.float32)]
    described = {"train": [{"data_path": "phantoms"}, {"data_path": "real"}]}
    sampling = training.patch_sampling(config)
    counts = training.samples_per_volume(config, volumes, sampling, described)
    assert counts == balanced_samples_per_volume(volumes, ["phantoms", "real"], sampling) == [12, 12]
    assert training.samples_per_volume(TrainingConfig(samples_per_volume=3), volumes, sampling, described) == 3


def test_blind_training_noise_draws_a_sigma_per_sample():
    from utils.data.noise import GaussianRangeNoise

    assert isinstance(training.training_noise(TrainingConfig(noise_range=(0.01, 0.12))), GaussianRangeNoise)


def test_cosine_schedule_needs_a_known_epoch_length():
    known = tf.data.Dataset.range(10).batch(4)
    assert training.cosine_decay_steps(TrainingConfig(epochs=5), known) == 15
    with pytest.raises(ConfigError, match="--lr-schedule cosine"):
        training.cosine_decay_steps(TrainingConfig(), known.filter(lambda x: True))


def test_run_writes_config_trains_and_finishes(tmp_path):
    """write_config, restore, callbacks and finish around a plain model.fit, as the scripts use them."""
    config = TrainingConfig(model="convnet", filters=4, patch=(16, 16), epochs=2, out=str(tmp_path / "run"), image_freq=0, histogram_freq=0)
    run = training.Run(config, OPTIONS)
    images = np.random.default_rng(0).random((4, 16, 16, 1)).astype(np.float32)
    data = tf.data.Dataset.from_tensor_slices((images, images)).batch(2)
    model = build_model("convnet", ndim=2, filters=4)
    from utils.data.metrics import psnr_metric, ssim_metric

    model.compile(optimizer="adam", loss="mse", metrics=[psnr_metric, ssim_metric])
    run.write_config({"train": [], "validation": []})
    assert run.restore(model) == 0 and run.initial_epoch == 0
    model.fit(data, validation_data=data, epochs=config.epochs, initial_epoch=run.initial_epoch, callbacks=run.callbacks(next(iter(data))), verbose=0)
    summary = run.finish(model)
    assert json.loads((run.path / "finished.json").read_text()) == summary
    assert summary["epochs_completed"] == 2 and summary["replicas"] == 1
    assert (run.path / "model_final.keras").is_file() and not (run.path / "backup").exists()
    assert "Best validation PSNR" in training.summary_line(summary)


def test_configure_runtime_sets_the_resolved_policy(capsys):
    import keras

    try:
        training.configure_runtime(TrainingConfig(precision="auto"), OPTIONS)
        assert keras.mixed_precision.global_policy().name == resolve_precision("auto")[0]
        assert "Precision: " in capsys.readouterr().out
        assert environment_record()["precision_policy"] == resolve_precision("auto")[0]  # what config.json records
    finally:
        keras.mixed_precision.set_global_policy("float32")
