"""The README's example: a real low-dose test volume denoised by ``Denoise_CT.py`` with its defaults.

    python3 -m studies.denoise_example --real-ct ../shared/data/real_ct

Runs ``Denoise_CT.py`` on the Soft-tissue-Sarcoma low-dose volume ``STS_003`` (a test patient of
``data/real_ct_split.json``; real scanner noise, no clean reference) as a user would, and keeps its
before/after figure and JSON report as ``figures/denoise_lowdose_example.png`` and ``.json``: the
estimated noise level, the noise in a flat region before and after, and the time.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

if __name__ == "__main__" and not __package__:  # run by path: re-run as python3 -m studies.<name>
    os.execv(sys.executable, [sys.executable, "-m", f"studies.{Path(__file__).stem}", *sys.argv[1:]])

from benchmarks.common import REPO
from utils.base.atomic import write_json

VOLUME = Path("volumes_sts_lowdose_dicom") / "STS_003" / "CT" / "image"
FIGURE = REPO / "figures" / "denoise_lowdose_example.png"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--real-ct", type=Path, default=REPO.parent / "shared" / "data" / "real_ct", help="the real_ct folder")
    parser.add_argument("--figure", type=Path, default=FIGURE, help="where the figure goes (the report beside it, .json)")
    args = parser.parse_args()
    source = args.real_ct / VOLUME
    if not source.is_dir():
        raise SystemExit(f"error: {source} does not exist; give the real_ct folder with --real-ct")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "STS_003_denoised.nii.gz"
        command = [sys.executable, "Denoise_CT.py", str(source), "--out", str(out), "--format", "nifti"]
        result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise SystemExit(f"error: {' '.join(command)} failed:\n{result.stderr[-2000:]}")
        report = json.loads(result.stdout.strip().splitlines()[-1])
        shutil.copyfile(report["figure"], args.figure)
    if report.get("model"):
        report["model"] = str(Path(report["model"]).resolve().relative_to(REPO))
    report.update(input=str(VOLUME), output="(temporary)", figure=str(args.figure.relative_to(REPO)) if args.figure.is_relative_to(REPO) else str(args.figure))
    write_json(args.figure.with_suffix(".json"), report)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
