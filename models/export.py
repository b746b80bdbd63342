"""Publish a finished training run as a small, self-describing model file.

    python3 -m models.export results/<run> trained_models/unet2d_noise0.05.keras --command "python3 Train_model_denoising2D.py ..."

Writes ``<dest>.keras`` (the run's best model without optimizer state, so the shipped 2D U-Nets are
3.2 MB each instead of 9.3 MB; the run configuration stays embedded), and beside it
``<stem>.config.json`` (settings, library versions, git commit, data description),
``<stem>.history.csv`` (the training log) and ``<stem>.run.json`` (the command and the run's summary).
"""

import argparse
import json
import shutil
from pathlib import Path

from models.storage import load_model, save_model
from utils.base.atomic import atomic_path, write_json
from utils.base.errors import ConfigError


def record_paths(dest):
    """The records written beside an exported model ``dest``: its config, training log and command."""
    dest = Path(dest)
    return {
        "config": dest.with_name(f"{dest.stem}.config.json"),
        "history": dest.with_name(f"{dest.stem}.history.csv"),
        "run": dest.with_name(f"{dest.stem}.run.json"),
    }


def export_run(run_dir, dest, command=""):
    """Copy the best model of the finished run in ``run_dir`` to ``dest`` with its records; return the paths written."""
    run_dir, dest = Path(run_dir), Path(dest)
    summary_path = run_dir / "finished.json"
    if not summary_path.is_file():
        raise ConfigError(f"{run_dir} holds no finished training run (no finished.json); finish or resume it first")
    model, config = load_model(run_dir / "model_best.keras", precision=None)  # a faithful copy
    dest.parent.mkdir(parents=True, exist_ok=True)
    records = record_paths(dest)
    for source, target in ((run_dir / "config.json", records["config"]), (run_dir / "history.csv", records["history"])):
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)
    write_json(records["run"], {"command": command, "summary": json.loads(summary_path.read_text())})
    save_model(model, dest, config)
    return [dest, *records.values()]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", help="a finished run folder (results/<run>)")
    parser.add_argument("dest", help="the model file to write, e.g. trained_models/unet2d_noise0.05.keras")
    parser.add_argument("--command", default="", help="the command that trained the run, recorded beside the model")
    args = parser.parse_args()
    try:
        written = export_run(args.run_dir, args.dest, args.command)
    except ConfigError as error:
        raise SystemExit(f"error: {error}") from None
    print("wrote " + ", ".join(str(p) for p in written))


if __name__ == "__main__":
    main()
