"""Which 2D architecture (or training recipe) gives the most dB on unseen real CT? Finished runs scored.

    python3 studies/architecture.py --runs results/arch_unet results/arch_drunet
    python3 studies/architecture.py --runs trained_models/unet2d_blind.keras results/ft_clean results/ft_with_lowdose \
        --title "..." --out studies/RESULTS_lowdose_targets.json

Each ``--runs`` entry is a finished ``Train_model_denoising2D.py`` run folder, or an exported model
(``models.export``: a ``.keras`` file with its ``.config.json``, ``.history.csv`` and ``.run.json``
beside it, as in ``trained_models/``). The study lists what each run is (model, filters, depth,
parameters, data paths, the model it started from) and what it cost (epochs, wall-clock minutes, its
best validation PSNR), exports a run folder's best model (named after the folder) and scores every
model with ``studies/real_ct.py`` on the real test slices of the patient-level split, against BM3D
given the true sigma, at ``--levels``: the same sets, noise and metrics as the README's real-CT table.

A fair comparison gives every run the same recipe and the same wall-clock budget on the same
machine at the same time. The runs quoted in ``studies/RESULTS_architecture.md`` were trained side
by side (each with about one of the two cores), on the recipe of the shipped blind 2D models
(``trained_models/make_models.sh``, ``R`` = ``../shared/data/real_ct``, ``SPLIT`` = its output of
``python3 -m utils.real_ct_split train --root $R --kinds clean lowdose``)::

    python3 Train_model_denoising2D.py --model unet --filters 24 --depth 3 \\
        --noise 0.05 --noise-range 0.01 0.12 --data data/phantom/train $SPLIT --samples-per-volume 8 \\
        --validation-data data/phantom/val --window-augmentation 0.5 --zoom-range 0.3 1.6 \\
        --epochs 1000 --lr-schedule constant --time-limit-minutes 25 --out results/arch_unet
    # the same with --model drunet --filters 16 --depth 3 --out results/arch_drunet

(a constant learning rate, because a cosine schedule would depend on how many epochs the budget allows).

``studies/RESULTS_lowdose_targets.md`` asks whether the 18 low-dose volumes, whose own noise stays in
their targets, cost the blind 2D U-Net dB on clean CT. Two runs continue the shipped ``unet2d_blind``
for 10 epochs, one after the other (two TensorFlow trainings side by side on 2 cores ran about ten
times slower each), on its recipe with and without them (``CLEAN`` = the output of ``--kinds clean``,
``LOW`` = of ``--kinds clean lowdose``)::

    python3 Train_model_denoising2D.py --model unet --filters 24 --depth 3 --noise 0.05 --noise-range 0.01 0.12 \\
        --epochs 10 --learning-rate 2e-4 --lr-schedule cosine --precision float32 \\
        --init-model trained_models/unet2d_blind.keras --data data/phantom/train $CLEAN --samples-per-volume 8 \\
        --validation-data data/phantom/val --window-augmentation 0.5 --zoom-range 0.3 1.6 --time-limit-minutes 0 \\
        --out results/ft_clean
    # the same with $LOW and --out results/ft_with_lowdose

Results: printed, and written atomically to ``--out`` (default ``studies/RESULTS_architecture.json``) and
the markdown beside it; the per-set tables of ``studies/real_ct.py`` go to ``<out>_real_ct.json``/``.md``.
"""

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if __name__ == "__main__" and not __package__:  # run by path: re-run as python3 -m studies.<name>
    os.execv(sys.executable, [sys.executable, "-m", f"studies.{Path(__file__).stem}", *sys.argv[1:]])
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks.common import command_line, describe_machine, markdown_table, text_table  # noqa: E402

DEFAULT_OUT = REPO / "studies" / "RESULTS_architecture.json"
DEFAULT_TITLE = "Architectures for the same training time, on real CT no model saw"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, nargs="+", required=True, help="finished 2D training run folders or exported .keras models")
    parser.add_argument("--title", default=DEFAULT_TITLE, help="heading of the markdown results")
    parser.add_argument("--levels", default="0.02,0.05,0.1", help="noise sigmas, comma separated")
    parser.add_argument("--sets", nargs="+", default=None, help="real test sets (default: every slice set)")
    parser.add_argument("--models-dir", type=Path, default=REPO / "results" / "architecture", help="where the runs' models are exported")
    parser.add_argument("--real-ct", type=Path, default=None, help="the shared real_ct folder (default ../shared/data/real_ct)")
    parser.add_argument("--split", type=Path, default=None, help="split file (default data/real_ct_split.json)")
    parser.add_argument("--quick", action="store_true", help="smoke run: studies/real_ct.py --quick")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    command = command_line("studies/architecture.py", argv)
    started = time.monotonic()

    from models.export import export_run
    from studies import real_ct

    runs = [describe_run(run) for run in args.runs]
    names = [run["run"] for run in runs]
    if len(set(names)) != len(names):
        raise SystemExit(f"error: run folders must have distinct names, got {names}")
    model_files = [run if run.suffix == ".keras" else export_run(run, args.models_dir / f"{run.name}.keras")[0] for run in args.runs]
    real_ct_out = args.out.with_name(args.out.stem + "_real_ct.json")
    real_ct_args = ["--models", *map(str, model_files), "--levels", args.levels, "--out", str(real_ct_out)]
    real_ct_args += ["--sets", *args.sets] if args.sets else ["--kinds", "slices"]
    real_ct_args += ["--real-ct", str(args.real_ct)] if args.real_ct else []
    real_ct_args += ["--split", str(args.split)] if args.split else []
    real_ct_args += ["--quick"] if args.quick else []
    real_ct.main(real_ct_args)
    scores = json.loads(real_ct_out.read_text())
    slice_sets = [s["name"] for s in scores["sets"] if s["kind"] == "slices"]
    comparison = compare(scores["rows"], names, slice_sets)

    report = {
        "benchmark": "architecture", "title": args.title, "command": command, "runs": runs, "comparison": comparison,
        "real_ct_results": str(real_ct_out.relative_to(REPO) if real_ct_out.is_relative_to(REPO) else real_ct_out),
        "minutes": round((time.monotonic() - started) / 60, 2), "machine": describe_machine(),
    }
    header, rows = comparison_table(runs, comparison)
    print(text_table(header, rows))
    from utils.base.atomic import write_json, write_text

    write_json(args.out, report)
    write_text(args.out.with_suffix(".md"), markdown(report, header, rows))
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return args.out


def run_records(run):
    """``(name, files)`` of a finished run folder, or of an exported model and its sidecar records."""
    run = Path(run)
    if run.suffix == ".keras":
        from models.export import record_paths

        return run.stem, {"model": run, **record_paths(run)}
    files = {"model": run / "model_best.keras", "config": run / "config.json", "history": run / "history.csv", "finished": run / "finished.json"}
    return run.name, files


def describe_run(run):
    """What a finished run is and what it cost, from its config, history and summary."""
    name, files = run_records(run)
    for path in files.values():
        if not path.exists():
            raise SystemExit(f"error: {run}: no {path.name} (not a finished training run or an exported model)")
    record = json.loads(files["config"].read_text())
    settings = record["settings"]
    # What was trained on, not what was typed: a run without --data trained on the default data.
    trained_on = {entry.get("data_path") for entry in (record.get("data") or {}).get("train", [])} - {None}
    with open(files["history"], newline="") as handle:
        history = list(csv.DictReader(handle))
    summary = json.loads(files["finished"].read_text()) if "finished" in files else json.loads(files["run"].read_text())["summary"]
    from models import load_model

    model, _ = load_model(files["model"])
    return {
        "run": name, "model": settings["model"], "filters": settings["filters"], "depth": settings["depth"],
        "parameters": int(model.count_params()), "epochs": len(history), "minutes": float(summary.get("minutes", float("nan"))),
        "best_val_psnr": max(float(row["val_psnr"]) for row in history),
        "noise_range": settings.get("noise_range") or [settings["noise"]],
        "data_paths": len(trained_on) or len(settings.get("data") or ()), "init_model": Path(settings.get("init_model") or "").name,
    }


def compare(rows, names, slice_sets):
    """Per (set, level): each run's single-pass PSNR and BM3D's; and each run's mean margin over BM3D."""
    table = {}
    for row in rows:
        if row["set"] in slice_sets and not row["self_ensemble"] and row["method"] in (*names, "bm3d"):
            table.setdefault((row["set"], row["noise"]), {})[row["method"]] = row["psnr"]
    per_set = [{"set": s, "noise": n, **values} for (s, n), values in sorted(table.items())]
    complete = [entry for entry in per_set if all(name in entry for name in (*names, "bm3d"))]
    mean_margin = {name: round(sum(e[name] - e["bm3d"] for e in complete) / max(len(complete), 1), 3) for name in names}
    return {"per_set": per_set, "mean_minus_bm3d": mean_margin, "n_sets_levels": len(complete)}


def comparison_table(runs, comparison):
    header = ["run", "model", "filters / depth", "parameters", "data paths", "started from", "epochs", "minutes", "val PSNR dB", "real slices vs BM3D dB"]
    rows = [
        [r["run"], r["model"], f"{r['filters']} / {r['depth']}", f"{r['parameters']:,}", r.get("data_paths", "-"),
         r.get("init_model") or "scratch", r["epochs"], f"{r['minutes']:.1f}", f"{r['best_val_psnr']:.2f}",
         f"{comparison['mean_minus_bm3d'][r['run']]:+.2f}"]
        for r in runs
    ]
    return header, rows


def markdown(report, header, rows):
    names = [r["run"] for r in report["runs"]]
    lines = [
        f"# {report.get('title', DEFAULT_TITLE)}", "",
        f"`{report['command']}`: {report['minutes']:.1f} min, on {report['machine']['cpu_model']}, "
        f"{report['machine']['logical_cpus']} CPUs, commit {report['machine']['git_commit']}.", "",
        "Protocol: `studies/architecture.py` (its docstring gives the training commands); the scores are "
        f"those of `studies/real_ct.py` ([{Path(report['real_ct_results']).with_suffix('.md').name}]"
        f"({Path(report['real_ct_results']).with_suffix('.md').name})): the real test slices of the split, Gaussian "
        "noise, BM3D given the true sigma, single pass.", "",
        *markdown_table(header, rows, "llrrrlrrrr"), "",
        f"The last column is the mean over {report['comparison']['n_sets_levels']} (set, level) pairs.", "",
        "## Per set and level (PSNR dB)", "",
    ]
    per_set_header = ["set", "sigma", "BM3D", *names, *(f"{n} vs BM3D" for n in names)]
    per_set_rows = [
        [e["set"], f"{e['noise']:g}", f"{e['bm3d']:.2f}", *(f"{e[n]:.2f}" for n in names), *(f"{e[n] - e['bm3d']:+.2f}" for n in names)]
        for e in report["comparison"]["per_set"] if all(n in e for n in (*names, "bm3d"))
    ]
    lines += [*markdown_table(per_set_header, per_set_rows, "lr" + "r" * (len(per_set_header) - 2)), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
