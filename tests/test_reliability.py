"""What users' scanners and interruptions do to the training scripts: bad input, kills, leftovers.

Every bad input must stop the script before training with one line naming the file and the
problem, a non-zero exit, no traceback and no run folder left behind.
"""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from pydicom.uid import generate_uid

from models import build_model
from models.storage import save_model
from utils.learning.config import TrainingConfig
from utils.learning.training import EpochState, RunDirectory, training_callbacks
from tests.ct_files import write_axial_series, write_dicom_slice, write_nifti, write_png
from tests.scripts import REPO, history_epochs, run_script

pytestmark = pytest.mark.e2e  # the scripts refusing bad input, killed and resumed, in subprocesses

SCRIPT_2D = REPO / "Train_model_denoising2D.py"
SCRIPT_3D = REPO / "Train_model_denoising3D.py"


def soft_tissue_volume(depth=6, size=48, rng=None):
    rng = rng or np.random.default_rng(0)
    return (40 + 30 * rng.standard_normal((depth, size, size))).astype(np.int16)


def truncated_nifti(folder):
    path = write_nifti(folder / "scan.nii.gz", np.transpose(soft_tissue_volume(), (2, 1, 0)))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path, "scan.nii.gz"


def two_series_folder(folder):
    series = folder / "two_series"
    write_axial_series(series, list(soft_tissue_volume(3)), name=lambda k: f"a{k}.dcm", description="arterial")
    write_axial_series(series, list(soft_tissue_volume(3)), name=lambda k: f"v{k}.dcm", description="venous")
    return series, "series"


def mr_series(folder):
    series = folder / "mr"
    write_axial_series(series, list(soft_tissue_volume(3)), modality="MR")
    return series, "MR"


def mixed_size_pngs(folder):
    slices = folder / "pngs"
    write_png(slices / "z1.png", np.zeros((48, 48), np.uint8))
    write_png(slices / "z2.png", np.zeros((40, 48), np.uint8))
    return slices, "z2.png"


def nan_npz(folder):
    data = np.random.default_rng(0).random((4, 48, 48, 1)).astype(np.float32)
    data[1, 5, 5, 0] = np.nan
    path = folder / "set.npz"
    np.savez(path, data_test=data)
    return path, "set.npz"


def non_image_file(folder):
    path = folder / "notes.png"
    path.write_text("this is not an image")
    return path, "notes.png"


@pytest.mark.parametrize(
    "make_bad_data", [truncated_nifti, two_series_folder, mr_series, mixed_size_pngs, nan_npz, non_image_file]
)
@pytest.mark.bad_input
def test_bad_training_data_is_refused_before_training(tmp_path, make_bad_data):
    data, fragment = make_bad_data(tmp_path)
    out = tmp_path / "run"
    result = run_script(SCRIPT_2D, "--quick", "--data", data, "--out", out, check=False, timeout=300)
    assert result.returncode != 0
    assert fragment.lower() in result.stderr.lower() and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert not out.exists()


@pytest.mark.bad_input
def test_volume_thinner_than_the_patch_is_refused(tmp_path):
    thin = write_nifti(tmp_path / "thin.nii.gz", np.transpose(soft_tissue_volume(depth=4, size=64), (2, 1, 0)))
    out = tmp_path / "run"
    result = run_script(SCRIPT_3D, "--quick", "--data", thin, "--out", out, check=False, timeout=300)
    assert result.returncode != 0 and "larger than volume" in result.stderr
    assert not out.exists()


def _keras_file_with_lambda(path):
    inputs = keras.Input((None, None, 1), name="noisy")
    outputs = keras.layers.Lambda(lambda x: x * 2)(inputs)
    keras.Model(inputs, outputs).save(path)
    return path


@pytest.mark.parametrize(
    "make_model, fragment",
    [
        (lambda folder: (folder / "text.keras").write_text("not a model") and folder / "text.keras", "text.keras"),
        (lambda folder: save_model(build_model("unet", ndim=3, filters=4), folder / "unet3d.keras", {}) or folder / "unet3d.keras", "3D"),
        (lambda folder: _keras_file_with_lambda(folder / "lambda.keras"), "Lambda"),
    ],
    ids=["not-a-model", "other-dimensionality", "lambda-layer"],
)
@pytest.mark.bad_input
def test_bad_initial_model_is_refused_before_training(tmp_path, make_model, fragment):
    model_path = make_model(tmp_path)
    out = tmp_path / "run"
    result = run_script(SCRIPT_2D, "--quick", "--init-model", model_path, "--out", out, check=False, timeout=300)
    assert result.returncode != 0
    assert fragment in result.stderr and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert not (out / "history.csv").exists() and not (out / "config.json").exists()


@pytest.mark.bad_input
def test_unfinished_run_with_other_settings_is_not_overwritten(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"settings": {"model": "convnet", "noise": 0.1}}))
    result = run_script(SCRIPT_2D, "--quick", "--out", out, check=False, timeout=300)
    assert result.returncode != 0 and "other settings" in result.stderr
    assert json.loads((out / "config.json").read_text())["settings"]["model"] == "convnet"


@pytest.mark.bad_input
def test_folder_that_is_not_a_run_is_not_touched(tmp_path):
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("precious")
    result = run_script(SCRIPT_2D, "--quick", "--out", out, check=False, timeout=300)
    assert result.returncode != 0 and "not a run folder" in result.stderr
    assert (out / "chapter1.tex").read_text() == "precious" and len(list(out.iterdir())) == 1


def _start(out, epochs):
    command = [sys.executable, str(SCRIPT_2D), "--quick", "--epochs", str(epochs), "--out", str(out)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _kill_when(process, condition, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None and not condition():
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()


def test_kill_before_the_first_checkpoint_then_resume(tmp_path):
    out = tmp_path / "run"
    process = _start(out, epochs=3)
    _kill_when(process, lambda: (out / "config.json").exists())
    assert not (out / "backup" / "state.json").exists()
    run_script(SCRIPT_2D, "--quick", "--epochs", "3", "--out", out)
    assert history_epochs(out) == [0, 1, 2]


def test_leftovers_of_a_kill_during_a_checkpoint_write_are_ignored(tmp_path):
    """A kill while writing leaves a temporary file and maybe a half-written weights file that
    state.json does not name yet; resuming must use the last complete state only."""
    out = tmp_path / "run"
    process = _start(out, epochs=3)
    _kill_when(process, lambda: (out / "backup" / "state.json").exists())
    state = json.loads((out / "backup" / "state.json").read_text())
    next_epoch = state["epoch"] + 1
    (out / "backup" / f".epoch{next_epoch:05d}.weights.h5.x1.tmp.weights.h5").write_bytes(b"\x89HDF half written")
    (out / "backup" / f"epoch{next_epoch:05d}.weights.h5").write_bytes(b"\x89HDF half written")
    run_script(SCRIPT_2D, "--quick", "--epochs", "3", "--out", out)
    assert history_epochs(out) == [0, 1, 2]
    assert not (out / "backup").exists()
    leftovers = [p.name for p in out.rglob("*") if ".tmp" in p.name]
    assert leftovers == []


def test_an_epoch_is_committed_only_after_its_history_row_and_best_model(tmp_path, monkeypatch):
    """state.json commits an epoch: a kill just before it must not lose that epoch's outputs."""
    run = RunDirectory(tmp_path / "run")
    run.path.mkdir()
    seen_at_commit = []
    commit = EpochState.on_epoch_end

    def checking_commit(self, epoch, logs=None):
        seen_at_commit.append((epoch, history_epochs(run.path), run.best_model.exists()))
        commit(self, epoch, logs)

    monkeypatch.setattr(EpochState, "on_epoch_end", checking_commit)
    config = TrainingConfig(model="convnet", filters=4, patch=(16, 16), epochs=2)
    images = np.random.default_rng(0).random((4, 16, 16, 1)).astype(np.float32)
    data = tf.data.Dataset.from_tensor_slices((images, images)).batch(2)
    model = build_model("convnet", ndim=2, filters=4)
    model.compile(optimizer="adam", loss="mse")
    callbacks = training_callbacks(config, run, config.to_dict(), next(iter(data)))
    model.fit(data, validation_data=data, epochs=2, callbacks=callbacks, verbose=0)
    assert seen_at_commit == [(0, [0], True), (1, [0, 1], True)]


def test_unfinished_run_from_before_a_new_setting_still_resumes(tmp_path):
    """A run folder written before a setting existed holds that setting's default, not a difference."""
    config = TrainingConfig(out=str(tmp_path / "run"))
    older_settings = config.to_dict()
    del older_settings["validation_samples_per_volume"]
    run = RunDirectory(config.out)
    run.path.mkdir()
    run.config_path.write_text(json.dumps({"settings": older_settings}))
    _, resuming = RunDirectory.prepare(config)
    assert resuming
