"""Which training data makes a 2D denoiser good on real CT it has not seen? Training runs against BM3D.

    python3 studies/real_ct_recipes.py --real-ct ../shared/data/real_ct/series_crlm_abdomen_dicom \\
        --runs results/default_2d results/real_slices_only_2d results/shipped/unet2d_noise0.05

Each ``--runs`` folder is a finished ``Train_model_denoising2D.py`` run (the shipped models' runs
are in ``results/shipped/``); its ``model_final.keras`` (or ``--model-file``) denoises the held-out
real series at ``--noise`` through ``Demo_assess_2D_learning_methods.py`` (seeded test noise, 8
evenly spaced slices), next to noisy input and BM3D given the true sigma, and each run is listed
with the training data its ``config.json`` records: the ``--data`` paths, ``--balance-data``,
window augmentation, epochs and minutes. Runs trained on the held-out series are refused.

The runs quoted in the README used the 2D script's default model (residual U-Net, depth 3, 24
filters) at 5 % noise with validation on the phantoms (``R`` = ``../shared/data/real_ct``):

* phantoms only: ``python3 Train_model_denoising2D.py`` (the default run);
* real slices only: ``--data $R/slices_lidc_chest_dicom $R/slices_msd_lung_png --validation-data
  data/phantom/val --window-augmentation 0.5 --samples-per-volume 200 --epochs 100
  --time-limit-minutes 13``;
* phantoms + both real sets, the first shipped recipe: ``--data data/phantom/train
  $R/slices_lidc_chest_dicom $R/slices_msd_lung_png --validation-data data/phantom/val
  --window-augmentation 0.5 --epochs 60``;
* phantoms + LIDC, balanced (``--balance-data``), at 60 and 180 epochs, and at the 480 epochs of
  the recipe shipped now (``trained_models/make_models.sh``): what training longer buys;
* LIDC alone, as many training steps per epoch as the balanced runs: ``--data
  $R/slices_lidc_chest_dicom --validation-data data/phantom/val --window-augmentation 0.5
  --samples-per-volume 1024 --validation-samples-per-volume 1024 --epochs 60`` (it ran when the
  training count applied to validation too: its minutes include validating 2048 phantom slices
  per epoch instead of 128);
* the shipped 480-epoch model fine-tuned on LIDC alone: the same options without
  ``--validation-samples-per-volume`` (one per slice, 128 in all, hence its shorter minutes) and with
  ``--init-model trained_models/unet2d_noise0.05.keras --learning-rate 0.0002 --epochs 120``.

Results: printed, written to ``studies/results/real_ct_recipes.json`` and, as the table the
README quotes, to ``studies/RESULTS_real_ct_recipes.md`` (``--markdown``), atomically.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if __name__ == "__main__" and not __package__:  # run by path: re-run as python3 -m studies.<name>
    os.execv(sys.executable, [sys.executable, "-m", f"studies.{Path(__file__).stem}", *sys.argv[1:]])
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks.common import command_line, describe_machine, markdown_table, text_table  # noqa: E402

DEFAULT_OUT = REPO / "studies" / "results" / "real_ct_recipes.json"
DEFAULT_MARKDOWN = REPO / "studies" / "RESULTS_real_ct_recipes.md"
DEMO_2D = "Demo_assess_2D_learning_methods.py"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real-ct", type=Path, required=True, help="the held-out real series (any readable format)")
    parser.add_argument("--runs", type=Path, nargs="+", required=True, help="finished 2D training run folders")
    parser.add_argument("--model-file", default="model_final.keras", help="model file inside each run folder")
    parser.add_argument("--noise", type=float, default=0.05)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--markdown", type=Path, default=DEFAULT_MARKDOWN, help="the table, for the README")
    args = parser.parse_args(argv)

    started = time.monotonic()
    report = {"benchmark": "real_ct_recipes", **score_runs(args.real_ct, args.runs, args.model_file, args.noise)}
    report.update(minutes=round((time.monotonic() - started) / 60, 2), machine=describe_machine())
    recipes, noisy, bm3d = report["recipes"], report["noisy_psnr"], report["bm3d_psnr"]
    rows = [
        [r["run"], r["data"], r["epochs"], f"{r['minutes']:.1f}", f"{r['psnr']:.2f}", f"{r['psnr_minus_bm3d']:+.2f}"]
        for r in recipes
    ]
    header = ["run", "training data", "epochs", "minutes", "PSNR dB", "vs BM3D"]
    heading = (
        f"held-out real CT {args.real_ct.name}, noise {args.noise:g}, {report['samples']} slices: "
        f"noisy {noisy:.2f} dB, BM3D (true sigma) {bm3d:.2f} dB"
    )
    print(heading)
    print(text_table(header, rows))
    from utils.base.atomic import write_json, write_text

    machine = report["machine"]
    markdown = [
        f"`{command_line('studies/real_ct_recipes.py', argv)}`",
        "",
        f"{heading}. {machine.get('cpu_model')}, {machine.get('usable_cpus')} usable CPUs.",
        "",
        *markdown_table(header, rows, "llrrrr"),
        "",
    ]
    write_json(args.out, report)
    write_text(args.markdown, "\n".join(markdown))
    print(f"wrote {args.out} and {args.markdown}")


def score_runs(real_ct, runs, model_file="model_final.keras", noise=0.05):
    """Each run's model, noisy input and BM3D (true sigma) on the held-out series ``real_ct``.

    Returns a dict: ``real_ct``, ``noise``, ``samples`` (slices scored), ``noisy_psnr``, ``bm3d_psnr``,
    ``bm3d_ssim`` and ``recipes``, one entry per run (``describe_run``) with its ``psnr``, ``ssim`` and
    ``psnr_minus_bm3d``. Runs trained on ``real_ct`` are refused (SystemExit).
    """
    with tempfile.TemporaryDirectory(prefix="real_ct_recipes_") as folder:
        folder = Path(folder)
        recipes = [describe_run(run, model_file, real_ct) for run in runs]
        models = []
        for recipe, run in zip(recipes, runs):
            # The demo names a model by its file's stem: give each run's model its run's name.
            models.append(folder / f"{recipe['run']}.keras")
            models[-1].write_bytes((Path(run) / model_file).read_bytes())
        command = [
            sys.executable, DEMO_2D, "--data", str(real_ct), "--noise", f"{noise:g}",
            "--models", *map(str, models), "--methods", "noisy,bm3d", "--out", str(folder / "assessment"),
        ]
        subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        from utils.application.assessment import read_metrics_csv, summarise

        (stats,) = summarise(read_metrics_csv(folder / "assessment" / "metrics.csv")).values()

    def mean(method, metric):
        return round(stats[method][metric][0], 3)

    bm3d = mean("bm3d", "psnr")
    for recipe in recipes:
        recipe.update(psnr=mean(recipe["run"], "psnr"), ssim=mean(recipe["run"], "ssim"))
        recipe["psnr_minus_bm3d"] = round(recipe["psnr"] - bm3d, 3)
    return {
        "real_ct": str(real_ct),
        "noise": noise,
        "samples": stats["bm3d"]["n"],
        "noisy_psnr": mean("noisy", "psnr"),
        "bm3d_psnr": bm3d,
        "bm3d_ssim": mean("bm3d", "ssim"),
        "recipes": recipes,
    }


def describe_run(run, model_file, held_out):
    """The training data and length of a finished run, from its config.json and finished.json."""
    run = Path(run)
    config_path, model_path = run / "config.json", run / model_file
    if not config_path.is_file() or not model_path.is_file():
        raise SystemExit(f"error: {run} is not a finished training run (needs config.json and {model_file})")
    settings = json.loads(config_path.read_text())["settings"]
    paths = list(settings.get("data") or [])
    held = Path(held_out).resolve()
    if any((REPO / p).resolve() == held for p in paths):  # training records paths relative to the repository
        raise SystemExit(f"error: {run} was trained on {held_out}, the held-out series")
    finished = run / "finished.json"
    summary = json.loads(finished.read_text()) if finished.is_file() else {}
    # A split folder ("data/phantom/train") is named with its parent.
    names = [Path(p).name if Path(p).name not in ("train", "val", "test") else f"{Path(p).parent.name}/{Path(p).name}" for p in paths]
    data = " + ".join(names) or "embedded phantoms"
    if settings.get("balance_data"):
        data += ", balanced"
    if settings.get("window_augmentation"):
        data += f", window augmentation {settings['window_augmentation']:g}"
    if settings.get("samples_per_volume"):
        data += f", {settings['samples_per_volume']} samples per volume"
    if settings.get("init_model"):
        data += f", fine-tuned from {Path(settings['init_model']).name} at learning rate {settings['learning_rate']:g}"
    return {
        "run": run.name,
        "data": data,
        "epochs": summary.get("epochs_completed", settings.get("epochs")),
        "minutes": summary.get("minutes", float("nan")),
        "settings": settings,
    }


if __name__ == "__main__":
    main()
