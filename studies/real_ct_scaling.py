"""How does a 2D model's gap to BM3D on unseen real CT change with the number of real training slices?

    python3 studies/real_ct_scaling.py --train-ct R/series_crlm_abdomen_dicom \\
        --held-out R/slices_lidc_chest_dicom --counts 5 10 20 0        # about 45 minutes on 2 CPU cores

``R`` is a folder of public real CT (the README names the datasets). The shipped 2D models are
trained on the embedded phantoms mixed with real slices, and on real CT they have not seen they
stay below BM3D. This study holds the recipe fixed and changes only how many real slices it sees:
for each ``--counts`` entry ``n`` it takes ``n`` evenly spaced slices of ``--train-ct`` (0: all of
them, read from the path itself), trains ``Train_model_denoising2D.py`` on the phantoms plus those
slices (``--balance-data``, so the real share of every epoch is half whatever ``n`` is; window
augmentation 0.5; a fixed number of epochs), and scores every model against BM3D with the true sigma
on ``--held-out`` with ``real_ct_recipes.score_runs`` (seeded noise, 8 evenly spaced slices).

Reported per run: real slices, PSNR, lead over BM3D; and the least-squares slope of that lead
against log2(real slices), i.e. what each doubling of the real training data bought. Where the
slope is positive the number of slices at which the fitted line would reach ``--goal-db`` is given
too, marked as an extrapolation (a trend, not a measurement), or, when that is over 100 times the
most slices measured, only that it is.

Runs go to ``--runs-dir/<train name>_n<count>`` (``_all`` for 0) with the slice subsets beside them
as npz; a run whose ``finished.json`` exists is reused, so an interrupted study continues where it
stopped. Results: printed, written to ``studies/results/real_ct_scaling.json`` and, as the table
the README quotes, to ``studies/RESULTS_real_ct_scaling.md``, atomically.
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if __name__ == "__main__" and not __package__:  # run by path: re-run as python3 -m studies.<name>
    os.execv(sys.executable, [sys.executable, "-m", f"studies.{Path(__file__).stem}", *sys.argv[1:]])
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks.common import describe_machine, markdown_table, text_table  # noqa: E402
from studies.real_ct_recipes import score_runs  # noqa: E402

DEFAULT_OUT = REPO / "studies" / "results" / "real_ct_scaling.json"
DEFAULT_MARKDOWN = REPO / "studies" / "RESULTS_real_ct_scaling.md"
TRAIN_2D = "Train_model_denoising2D.py"
DEFAULT_PHANTOMS = "data/phantom/train"
FAR = 100  # beyond this many times the largest count, an extrapolated slice count means nothing


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-ct", type=Path, required=True, help="real CT whose slices are subsampled for training")
    parser.add_argument("--held-out", type=Path, required=True, help="real CT the models are scored on")
    parser.add_argument("--counts", type=int, nargs="+", default=[5, 10, 20, 0], help="real training slices per run (0: all)")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--noise", type=float, default=0.05)
    parser.add_argument("--phantoms", default=DEFAULT_PHANTOMS, help="the data mixed with the real slices")
    parser.add_argument("--validation-data", default="data/phantom/val")
    parser.add_argument("--train-options", default="", help="more options for the training script, one string: --train-options='--filters 32'")
    parser.add_argument("--goal-db", type=float, default=0.5, help="lead over BM3D the extrapolation aims at")
    parser.add_argument("--runs-dir", type=Path, default=REPO / "results" / "real_ct_scaling")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--markdown", type=Path, default=DEFAULT_MARKDOWN, help="the table, for the README")
    args = parser.parse_args(argv)
    if any(count < 0 for count in args.counts):
        parser.error("--counts must be >= 0")

    started = time.monotonic()
    if args.phantoms == DEFAULT_PHANTOMS and not (REPO / DEFAULT_PHANTOMS).exists():
        from utils.data.phantom import ensure_default_dataset

        ensure_default_dataset()
    total = _slice_count(args.train_ct)
    runs, counts = [], []
    for count in args.counts:
        count = total if count == 0 or count >= total else count
        name = f"{args.train_ct.name.split('.')[0]}_" + ("all" if count == total else f"n{count}")
        run = args.runs_dir / name
        if count in counts:
            continue
        if not (run / "finished.json").is_file():
            data = args.train_ct if count == total else write_slice_subset(args.train_ct, count, args.runs_dir / "data" / f"{name}.npz")
            command = [
                sys.executable, TRAIN_2D, "--noise", f"{args.noise:g}", "--epochs", str(args.epochs),
                "--data", str(args.phantoms), str(data), "--balance-data", "--validation-data", str(args.validation_data),
                "--window-augmentation", "0.5", "--time-limit-minutes", "0", "--histogram-freq", "0", "--image-freq", "0",
                *args.train_options.split(), "--out", str(run),
            ]
            print(f"== {count} real slices: {' '.join(command[1:])}", flush=True)
            subprocess.run(command, cwd=REPO, check=True)
        else:
            print(f"== {count} real slices: reusing the finished run {run}", flush=True)
        runs.append(run)
        counts.append(count)

    report = {"benchmark": "real_ct_scaling", **score_runs(args.held_out, runs, noise=args.noise)}
    for recipe, count in zip(report["recipes"], counts):
        recipe["real_slices"] = count
    slope, reach = trend(counts, [r["psnr_minus_bm3d"] for r in report["recipes"]], args.goal_db)
    report.update(
        train_ct=str(args.train_ct),
        db_per_doubling=slope,
        goal_db=args.goal_db,
        extrapolated_slices_for_goal=reach,
        minutes=round((time.monotonic() - started) / 60, 2),
        machine=describe_machine(),
    )

    header = ["real slices", "run", "epochs", "minutes", "PSNR dB", "vs BM3D"]
    rows = [
        [r["real_slices"], r["run"], r["epochs"], f"{r['minutes']:.1f}", f"{r['psnr']:.2f}", f"{r['psnr_minus_bm3d']:+.2f}"]
        for r in report["recipes"]
    ]
    heading = (
        f"trained on {args.phantoms} + n evenly spaced slices of {args.train_ct.name} (balanced, window augmentation 0.5); "
        f"held-out real CT {args.held_out.name}, noise {args.noise:g}, {report['samples']} slices: "
        f"noisy {report['noisy_psnr']:.2f} dB, BM3D (true sigma) {report['bm3d_psnr']:.2f} dB"
    )
    fit = "fewer than two distinct slice counts: no trend" if slope is None else f"lead over BM3D per doubling of the real slices: {slope:+.2f} dB (least squares)"
    if reach is not None and reach > FAR * max(counts):
        fit += f"; the fitted line would need over {FAR} times the most slices measured to reach {args.goal_db:+g} dB"
    elif reach is not None:
        fit += f"; the fitted line reaches {args.goal_db:+g} dB at about {reach:.0f} real slices (extrapolated, not measured)"
    print(heading)
    print(text_table(header, rows))
    print(fit)
    from utils.base.atomic import write_json, write_text

    machine = report["machine"]
    markdown = [
        f"`python3 studies/real_ct_scaling.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
        "",
        f"{heading}. {machine.get('cpu_model')}, {machine.get('usable_cpus')} usable CPUs.",
        "",
        *markdown_table(header, rows, "rlrrrr"),
        "",
        fit + ".",
        "",
    ]
    write_json(args.out, report)
    write_text(args.markdown, "\n".join(markdown))
    print(f"wrote {args.out} and {args.markdown}")


def _slice_count(path):
    from utils.data.readers import read_ct

    return sum(volume.array.shape[0] for volume in read_ct(path))


def write_slice_subset(path, count, out):
    """``count`` evenly spaced slices of the CT at ``path``, windowed as training reads it, saved as an npz.

    The npz holds ``data_train`` (count, H, W, 1) in [0, 1], the layout the readers take as a stack of
    unrelated slices. Every volume at ``path`` must share one slice shape.
    """
    from utils.application.assessment import evenly_spaced
    from utils.base.atomic import atomic_open
    from utils.base.errors import DataError
    from utils.data.readers import read_ct

    volumes = read_ct(path)
    shapes = {volume.array.shape[1:] for volume in volumes}
    if len(shapes) != 1:
        raise DataError(path, f"holds slices of several shapes {sorted(shapes)}; subsets need one")
    slices = np.concatenate([np.asarray(volume.array, np.float32) for volume in volumes])
    chosen = slices[evenly_spaced(len(slices), count)]
    with atomic_open(out, "wb") as handle:
        np.savez_compressed(handle, data_train=chosen[..., None])
    return out


def trend(counts, leads, goal_db):
    """Least-squares slope of ``leads`` (dB) against log2(``counts``) and, when it rises, the count at
    which the fitted line reaches ``goal_db``. (None, None) with fewer than two distinct counts."""
    x = np.log2(np.asarray(counts, float))
    if len(set(counts)) < 2:
        return None, None
    slope, intercept = np.polyfit(x, np.asarray(leads, float), 1)
    reach = float(2 ** ((goal_db - intercept) / slope)) if slope > 0 else None
    return round(float(slope), 3), reach


if __name__ == "__main__":
    main()
