"""Accuracy of ``Denoise_CT.py --noise auto``: the noise estimate on clean real CT with added noise.

    python3 -m studies.noise_estimate --real-ct ../shared/data/real_ct

On the clean test patients of the committed split (``data/real_ct_split.json``), each image or
series windowed to [-1000, 400] HU, Gaussian noise of sigma 2, 5 and 10 % is added (seed 2020) and
``utils.data.noise_level.estimate_scan_sigma`` estimates it inside the body. The table gives, per set and
level, the median estimate and the worst relative error over the images. The clean scans carry noise
of their own (their estimate without added noise is listed), so the estimate of the total is
``sqrt(sigma^2 + own^2)`` at best; the error is given against both.

Writes ``studies/RESULTS_noise_estimate.md`` and ``.json``.
"""

import argparse
import os
import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:  # run by path: re-run as python3 -m studies.<name>
    os.execv(sys.executable, [sys.executable, "-m", f"studies.{Path(__file__).stem}", *sys.argv[1:]])

import numpy as np

from benchmarks.common import REPO, describe_machine, markdown_table, text_table
from utils.base.atomic import write_json, write_text
from utils.data.noise_level import estimate_scan_sigma
from utils.data.readers import read_ct
from utils.data.real_ct_split import test_paths

LEVELS = (0.02, 0.05, 0.10)
SEED = 2020


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--real-ct", type=Path, default=REPO.parent / "shared" / "data" / "real_ct", help="the real_ct folder")
    parser.add_argument("--out", type=Path, default=REPO / "studies" / "RESULTS_noise_estimate", help="results stem")
    args = parser.parse_args()
    groups = {}
    for path in test_paths(args.real_ct):
        name = Path(path).relative_to(args.real_ct).parts[0]
        groups.setdefault(name, []).extend(read_ct(path))
    rng = np.random.default_rng(SEED)
    rows, records = [], []
    for name, volumes in groups.items():
        own = [estimate_scan_sigma(v.array) for v in volumes]
        for sigma in LEVELS:
            estimates = [estimate_scan_sigma(v.array + np.float32(sigma) * rng.standard_normal(v.array.shape, dtype=np.float32)) for v in volumes]
            error = max(abs(e / sigma - 1) for e in estimates)
            error_total = max(abs(e / np.hypot(sigma, o) - 1) for e, o in zip(estimates, own))
            record = {"set": name, "images": len(volumes), "sigma": sigma, "median_estimate": float(np.median(estimates)),
                      "own_noise_median": float(np.median(own)), "worst_error": error, "worst_error_vs_total": error_total}
            records.append(record)
            rows.append([name, len(volumes), f"{sigma:g}", f"{record['median_estimate']:.4f}", f"{record['own_noise_median']:.4f}",
                         f"{100 * error:.1f} %", f"{100 * error_total:.1f} %"])
    header = ["test set", "scans", "added sigma", "median estimate", "own noise (median)", "worst error vs added", "worst error vs total"]
    print(text_table(header, rows))
    write_json(args.out.with_suffix(".json"), {"levels": LEVELS, "seed": SEED, "records": records, "machine": describe_machine()})
    lines = ["# Noise estimate of `Denoise_CT.py --noise auto` on real CT", "", "Made by `python3 -m studies.noise_estimate`. " + __doc__.split("\n\n")[2].replace("\n", " "), "",
             *markdown_table(header, rows, "lrrrrrr")]
    write_text(args.out.with_suffix(".md"), "\n".join(lines) + "\n")
    print(f"wrote {args.out.with_suffix('.md')} and .json")


if __name__ == "__main__":
    main()
