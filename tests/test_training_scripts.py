"""The training scripts end to end, as a user runs them: outputs, TensorBoard, resume, errors."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.scripts import REPO, history_epochs, run_script

pytestmark = pytest.mark.e2e  # every test trains or runs a script in a subprocess

SCRIPT_2D = REPO / "Train_model_denoising2D.py"
SCRIPT_3D = REPO / "Train_model_denoising3D.py"


def tensorboard_tags(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = {}
    for events in Path(log_dir).rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events), size_guidance={"tensors": 0, "images": 0, "histograms": 0})
        accumulator.Reload()
        for kind, names in accumulator.Tags().items():
            if isinstance(names, list):
                tags.setdefault(kind, set()).update(names)
    return tags


def stored_weight_groups(keras_file):
    """Top-level groups of the weights file inside a .keras archive ("layers", "optimizer", ...)."""
    import io
    import zipfile

    import h5py

    with zipfile.ZipFile(keras_file) as archive, h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r") as weights:
        return set(weights.keys())


def test_quick_2d_run_writes_every_output(quick_2d_run):
    out, result = quick_2d_run
    for name in ("model_best.keras", "model_final.keras", "config.json", "history.csv", "finished.json"):
        assert (out / name).is_file(), name
    assert not (out / "backup").exists()
    config = json.loads((out / "config.json").read_text())
    assert config["settings"]["model"] == "unet" and config["settings"]["noise"] == 0.05
    assert config["settings"]["hu_window"] == [-1000.0, 400.0]
    assert {"tensorflow", "keras", "git_commit"} <= set(config["environment"])
    assert config["data"]["train"], "the data description is recorded"
    assert history_epochs(out) == [0, 1]
    assert "Best validation PSNR" in result.stdout and str(out / "model_best.keras") in result.stdout


def test_quick_2d_run_logs_scalars_images_and_histograms(quick_2d_run):
    out, _ = quick_2d_run
    tags = tensorboard_tags(out / "logs")
    scalars = tags.get("tensors", set()) | tags.get("scalars", set())
    for name in ("epoch_loss", "epoch_psnr", "epoch_ssim", "epoch_learning_rate"):
        assert name in scalars, (name, scalars)
    assert any("noisy_prior_denoised_clean_error" in t for t in tags.get("tensors", set()) | tags.get("images", set()))
    assert any("histogram" in t or "kernel" in t for t in tags.get("tensors", set()) | tags.get("histograms", set()))


def test_training_on_noisy_targets_warns_and_records_their_noise(tmp_path):
    """8-bit slices whose own noise is close to the training noise train, with a warning naming them."""
    from tests.ct_files import write_png

    rng = np.random.default_rng(0)
    folder = tmp_path / "grainy_png"
    folder.mkdir()
    yy, xx = np.mgrid[:64, :64]
    for k in range(6):
        image = 0.5 + 0.2 * np.sin(yy / (9.0 + k)) + 0.06 * rng.standard_normal((64, 64))
        write_png(folder / f"slice_{k:02d}.png", np.clip(np.round(image * 255), 0, 255).astype(np.uint8))
    out = tmp_path / "run"
    result = run_script(SCRIPT_2D, "--quick", "--data", folder, "--out", out)
    assert f"warning: {folder}" in result.stderr and "keep that noise" in result.stderr
    recorded = json.loads((out / "config.json").read_text())["data"]["train"]
    assert recorded[0]["noise_sigma_estimate"] == pytest.approx(0.06, rel=0.25)


def test_saved_model_reloads_with_its_configuration(quick_2d_run):
    from models.storage import load_model

    out, _ = quick_2d_run
    model, config = load_model(out / "model_best.keras")
    assert config["model"] == "unet" and config["noise"] == 0.05
    assert model.count_params() > 0


def test_export_publishes_the_best_model_with_its_records(quick_2d_run, tmp_path):
    """python -m models.export: the best model without optimizer state, config and log beside it."""
    from models.storage import load_model

    out, _ = quick_2d_run
    dest = tmp_path / "published" / "unet2d_quick.keras"
    run_script("-m", "models.export", out, dest, "--command", "python3 Train_model_denoising2D.py --quick")
    model, config = load_model(dest)
    best, _ = load_model(out / "model_best.keras")
    assert config["model"] == "unet" and config["noise"] == 0.05
    for mine, theirs in zip(model.get_weights(), best.get_weights()):
        assert (mine == theirs).all()
    assert "optimizer" in stored_weight_groups(out / "model_best.keras")
    assert "optimizer" not in stored_weight_groups(dest)
    assert json.loads((tmp_path / "published" / "unet2d_quick.config.json").read_text())["settings"]["model"] == "unet"
    assert (tmp_path / "published" / "unet2d_quick.history.csv").read_text() == (out / "history.csv").read_text()
    record = json.loads((tmp_path / "published" / "unet2d_quick.run.json").read_text())
    assert record["command"].endswith("--quick") and record["summary"]["epochs_completed"] == 2


@pytest.mark.bad_input
def test_export_refuses_an_unfinished_run(tmp_path):
    (tmp_path / "run").mkdir()
    result = run_script("-m", "models.export", tmp_path / "run", tmp_path / "x.keras", check=False)
    assert result.returncode != 0 and "no finished training run" in result.stderr
    assert not (tmp_path / "x.keras").exists()


@pytest.mark.bad_input
def test_finished_run_is_not_overwritten(quick_2d_run):
    out, _ = quick_2d_run
    before = (out / "model_final.keras").stat().st_mtime_ns
    result = run_script(SCRIPT_2D, "--quick", "--out", out, check=False)
    assert result.returncode != 0 and "finished run" in result.stderr
    assert (out / "model_final.keras").stat().st_mtime_ns == before


def test_quick_3d_resprunet_run(tmp_path):
    out = tmp_path / "quick3d"
    run_script(SCRIPT_3D, "--quick", "--out", out)
    config = json.loads((out / "config.json").read_text())["settings"]
    assert config["model"] == "resprunet" and config["prior"] and config["ndim"] == 3
    assert (out / "model_best.keras").is_file() and history_epochs(out) == [0, 1]


def test_killed_run_resumes_from_its_last_completed_epoch(tmp_path):
    out = tmp_path / "killed"
    command = [sys.executable, str(SCRIPT_2D), "--quick", "--epochs", "4", "--out", str(out)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if (out / "backup" / "state.json").exists():
            break
        time.sleep(0.2)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "finished.json").exists()
    result = run_script(SCRIPT_2D, "--quick", "--epochs", "4", "--out", out)
    assert "Resuming" in result.stdout
    assert history_epochs(out) == [0, 1, 2, 3]
    assert (out / "model_final.keras").is_file()


def test_same_seed_gives_identical_losses(tmp_path, quick_2d_run):
    from tests.conftest import QUICK_2D_RUN

    run_script(SCRIPT_2D, *QUICK_2D_RUN, "--out", tmp_path / "again")
    losses = []
    for run in (quick_2d_run[0], tmp_path / "again"):
        with open(run / "history.csv", newline="") as handle:
            losses.append([(row["loss"], row["val_loss"]) for row in csv.DictReader(handle)])
    assert len(losses[0]) == 2 and losses[0] == losses[1]


def test_mirrored_training_on_two_logical_cpus(tmp_path):
    out = tmp_path / "mirrored"
    result = run_script(SCRIPT_2D, "--quick", "--distribute", "mirrored", "--logical-cpus", "2", "--out", out)
    assert history_epochs(out) == [0, 1]
    assert json.loads((out / "finished.json").read_text())["replicas"] == 2  # one per logical CPU, not a silent single device
    assert "Best validation PSNR" in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "transformer"], "unknown model"),
        (["--noise", "-0.1"], "--noise"),
        (["--patch", "512", "512"], "larger than volume"),
        (["--data", "/nonexistent/scan"], "no such file"),
        (["--init-model", "/nonexistent/model.keras"], "no such model file"),
    ],
)
@pytest.mark.bad_input
def test_bad_settings_fail_before_training(tmp_path, args, message):
    out = tmp_path / "bad"
    started = time.monotonic()
    result = run_script(SCRIPT_2D, "--quick", "--out", out, *args, check=False, timeout=300)
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not out.exists(), "a failed start leaves no run folder"
    assert time.monotonic() - started < 120


def test_fine_tuning_from_a_reference_h5_model(tmp_path, seed_models):
    out = tmp_path / "finetune"
    h5 = seed_models / "kits19_200subj_data2k_UNet_32_noisepc5_model_best.h5"
    run_script(SCRIPT_2D, "--quick", "--filters", "32", "--init-model", h5, "--epochs", "1", "--out", out)
    assert history_epochs(out) == [0]
    from models.storage import load_model

    model, _ = load_model(out / "model_final.keras")
    assert model.count_params() == 332_641
