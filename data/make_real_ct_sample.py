"""Make ``data/real_ct_sample/``: the small real CT sample committed with the toolkit.

The default training (``Train_model_denoising2D.py`` with no ``--data``) mixes these real slices with
the embedded phantoms, so that the main job on a fresh machine has seen real anatomy and real texture.
Run once by a developer with the public sources at hand, from the repository root; users never need it:

    python3 -m data.make_real_ct_sample [--real-ct ../shared/data/real_ct] [--out data/real_ct_sample]

What it takes, all from TRAINING patients of ``data/real_ct_split.json`` (never a test patient), and
all under CC BY licences (attribution: ``data/README.md``):

* TCIA LIDC-IDRI (CC BY 3.0): 4 of the 20 chest slices of LIDC-IDRI-0314, evenly spaced;
* TCIA COVID-19-NY-SBU (CC BY 4.0): for 4 patients, their 2 axial slices and 1 coronal reformat.

Each image is written as one single-slice NIfTI, int16 HU, its pixel spacing in the affine, values
below -1024 HU (the scanners' field-of-view padding) set to -1024; nothing else is changed.
``manifest.json`` beside them names every file's dataset, patient and source file.
"""

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

if __name__ == "__main__" and not __package__:  # run by path: re-run as python3 -m data.<name>
    os.execv(sys.executable, [sys.executable, "-m", f"data.{Path(__file__).stem}", *sys.argv[1:]])

import nibabel
import numpy as np

from utils.base.defaults import REAL_CT_SAMPLE_DIR, REPO_ROOT
from utils.data.real_ct_split import DEFAULT_REAL_CT_ROOT, load_split
from utils.data.scans import read_scan

DEFAULT_OUT = REPO_ROOT / REAL_CT_SAMPLE_DIR
AIR_HU = -1024
LIDC = ("slices_lidc_chest_dicom", 4)  # dataset, slices taken (evenly spaced)
COVID = ("slices_covid19_nysbu_dicom", 4, 1)  # dataset, patients (their axial slices), coronal reformats each
LICENCES = {"slices_lidc_chest_dicom": "CC BY 3.0", "slices_covid19_nysbu_dicom": "CC BY 4.0"}


def chosen_files(root, split):
    """``[(dataset, patient, dicom_file)]`` of the sample, training patients only."""
    datasets = split["datasets"]
    chosen = []
    dataset, count = LIDC
    (patient,) = datasets[dataset]["train"]
    files = sorted((root / dataset).rglob("*.dcm"))
    picks = np.linspace(0, len(files) - 1, count).round().astype(int)
    chosen += [(dataset, patient, files[i]) for i in picks]
    dataset, patients, coronal = COVID
    for patient in sorted(datasets[dataset]["train"])[:patients]:
        chosen += [(dataset, patient, f) for f in sorted((root / dataset / patient / "axial").glob("*.dcm"))]
        chosen += [(dataset, patient, f) for f in sorted((root / dataset / patient / "coronal").glob("*.dcm"))[:coronal]]
    return chosen


def write_slice(hu, spacing, path):
    """One (H, W) HU slice as int16 NIfTI; NIfTI stores (x, y, z), the readers give (z, y, x) back.

    A diagonal affine with the pixel spacing, not the DICOM patient geometry: the sample is training
    data, so every slice (coronal reformats too) is stored as a plain image without the patient's position.
    """
    dy, dx = spacing
    affine = np.diag([dx, dy, 1.0, 1.0])
    image = nibabel.Nifti1Image(np.round(hu.T[:, :, None]).astype(np.int16), affine)
    image.header.set_xyzt_units("mm")
    nibabel.save(image, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--real-ct", type=Path, default=DEFAULT_REAL_CT_ROOT, help="the public real CT, as in ../shared")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    split = load_split()
    entries = []
    # Built in a temporary folder beside --out and renamed at the end: never a half-written sample.
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.out.exists():
        raise SystemExit(f"error: {args.out} exists; remove it first to make the sample again")
    work = Path(tempfile.mkdtemp(dir=args.out.parent, prefix=".real_ct_sample."))
    try:
        for dataset, patient, source in chosen_files(args.real_ct, split):
            scan = read_scan(source)
            hu = np.maximum(scan.values[0], AIR_HU)
            spacing = scan.volume.spacing[1:]
            stem = source.stem if source.stem.startswith(patient) else f"{patient}_{source.parent.name}_{source.stem}"
            name = f"{stem}.nii.gz"
            write_slice(hu, spacing, work / name)
            entries.append({
                "file": name, "dataset": dataset, "licence": LICENCES[dataset], "patient": patient,
                "source_file": str(source.relative_to(args.real_ct)),
                "source_sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
                "shape": list(hu.shape), "pixel_spacing_mm": [round(float(s), 6) for s in spacing],
            })
            print(f"{name}: {hu.shape}, {spacing[0]:.3f} mm, {(work / name).stat().st_size / 1e3:.0f} kB")
        manifest = {"about": "real CT sample for the default training; see data/README.md and data/make_real_ct_sample.py",
                    "files": entries}
        (work / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        work.rename(args.out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    total = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"{len(entries)} slices, {total / 1e6:.2f} MB in {args.out}")


if __name__ == "__main__":
    main()
