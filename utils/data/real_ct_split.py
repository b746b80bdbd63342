"""The patient-level train/test split of the shared real-CT corpus (``data/real_ct_split.json``).

The corpus lives read-only outside the repository (``../shared/data/real_ct`` beside the checkout);
only the split, a list of names, is committed. For each dataset folder the split file records its
public source, its ``kind`` ("clean": routine dose, a clean target; "8bit": an 8-bit narrow-window
export carrying its own noise; "lowdose": real low-dose noise with no clean reference), how patient
ids were obtained, every patient's paths (relative to the dataset folder, "." for the folder itself)
and which patients are ``train`` and which ``test``. Every patient is in exactly one part, so no test
patient is ever trained on.

The paths returned here are files or folders that :func:`utils.data.readers.read_ct` and the training
scripts' ``--data`` option accept. Command line, printing one path per line::

    python3 -m utils.real_ct_split train [--root ../shared/data/real_ct] [--kinds clean] [--with-phantoms]
    python3 -m utils.real_ct_split test --kinds clean 8bit lowdose

so that a training run on the phantoms plus every clean real training image is::

    python3 Train_model_denoising2D.py --data $(python3 -m utils.real_ct_split train --with-phantoms) \\
        --validation-data data/phantom/val
"""

import argparse
import json
import sys
from pathlib import Path, PurePosixPath

from utils.base.defaults import REPO_ROOT
from utils.base.errors import ConfigError, DataError

REPO = REPO_ROOT
SPLIT_FILE = REPO / "data" / "real_ct_split.json"
DEFAULT_REAL_CT_ROOT = REPO.parent / "shared" / "data" / "real_ct"
KINDS = ("clean", "8bit", "lowdose")
PARTS = ("train", "test")
_DATASET_KEYS = {"source", "kind", "patient_id_from", "notes", "train", "test", "patients"}


def load_split(path=None):
    """Read and check the split file (default ``data/real_ct_split.json``); return it as a dict.

    Checks: every dataset has the keys ``source, kind, patient_id_from, notes, train, test,
    patients``; ``kind`` is one of ``KINDS``; each patient has a non-empty list of relative paths
    without ``..``; ``train`` and ``test`` are disjoint and together list every patient once.
    Raises DataError(path, problem) on any violation.
    """
    path = Path(path) if path is not None else SPLIT_FILE
    try:
        split = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(path, "does not exist (the real-CT split file)") from None
    except (OSError, ValueError) as exc:
        raise DataError(path, f"unreadable split file ({exc})") from None
    datasets = split.get("datasets") if isinstance(split, dict) else None
    if not isinstance(datasets, dict) or not datasets:
        raise DataError(path, "has no 'datasets' mapping of dataset folder -> split")
    for folder, entry in datasets.items():
        _check_dataset(path, folder, entry)
    return split


def _check_dataset(path, folder, entry):
    where = f"dataset {folder!r}"
    if not isinstance(entry, dict) or set(entry) != _DATASET_KEYS:
        keys = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
        raise DataError(path, f"{where} must have exactly the keys {sorted(_DATASET_KEYS)}, has {keys}")
    if entry["kind"] not in KINDS:
        raise DataError(path, f"{where} has kind {entry['kind']!r}; expected one of {list(KINDS)}")
    patients = entry["patients"]
    if not isinstance(patients, dict) or not patients:
        raise DataError(path, f"{where}: 'patients' must map patient id -> list of paths")
    for patient, items in patients.items():
        if not isinstance(items, list) or not items or not all(isinstance(i, str) and i for i in items):
            raise DataError(path, f"{where}, patient {patient!r}: expected a non-empty list of paths")
        for item in items:
            pure = PurePosixPath(item)
            if pure.is_absolute() or ".." in pure.parts:
                raise DataError(path, f"{where}, patient {patient!r}: path {item!r} must be relative, without '..'")
    train, test = entry["train"], entry["test"]
    for part, ids in (("train", train), ("test", test)):
        if not isinstance(ids, list) or len(set(ids)) != len(ids):
            raise DataError(path, f"{where}: {part!r} must be a list of distinct patient ids")
        unknown = sorted(set(ids) - set(patients))
        if unknown:
            raise DataError(path, f"{where}: {part!r} names patients not in 'patients': {unknown}")
    both = sorted(set(train) & set(test))
    if both:
        raise DataError(path, f"{where}: patients in both train and test: {both}")
    missing = sorted(set(patients) - set(train) - set(test))
    if missing:
        raise DataError(path, f"{where}: patients in neither train nor test: {missing}")


def _check_kinds(kinds):
    kinds = tuple(kinds)
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise ConfigError(f"real-CT kinds must be some of {list(KINDS)}, got {list(kinds)}")
    return kinds


def patients(part, kinds=KINDS, split=None):
    """``{dataset folder: [patient ids]}`` of one part ("train" or "test") for the given kinds."""
    if part not in PARTS:
        raise ConfigError(f"split part must be one of {list(PARTS)}, got {part!r}")
    kinds = _check_kinds(kinds)
    split = split if split is not None else load_split()
    return {
        folder: list(entry[part])
        for folder, entry in split["datasets"].items()
        if entry["kind"] in kinds and entry[part]
    }


def _paths(real_ct_root, part, kinds, split, check):
    split = split if split is not None else load_split()
    root = Path(real_ct_root)
    if check and not root.is_dir():
        raise DataError(root, "does not exist or is not a folder (the shared real-CT corpus)")
    paths = []
    for folder, ids in patients(part, kinds, split).items():
        entry = split["datasets"][folder]
        for patient in ids:
            for item in entry["patients"][patient]:
                path = root / folder if item == "." else root / folder / item
                if check and not path.exists():
                    raise DataError(path, f"listed in the real-CT split ({folder}, patient {patient}) but missing")
                paths.append(path)
    return paths


def training_paths(real_ct_root=DEFAULT_REAL_CT_ROOT, kinds=("clean",), split=None, check=True):
    """Files and folders of the training patients of the datasets of ``kinds`` (default: clean only).

    In split-file order (dataset, then patient, then path). ``check`` raises DataError naming the
    first listed path that does not exist under ``real_ct_root``.
    """
    return _paths(real_ct_root, "train", kinds, split, check)


def test_paths(real_ct_root=DEFAULT_REAL_CT_ROOT, kinds=("clean",), split=None, check=True):
    """Files and folders of the test patients of the datasets of ``kinds`` (default: clean only).

    Same order and checks as :func:`training_paths`.
    """
    return _paths(real_ct_root, "test", kinds, split, check)


test_paths.__test__ = False  # a library function, not a pytest test


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python3 -m utils.real_ct_split", description="Print the real-CT paths of one part of the split, one per line."
    )
    parser.add_argument("part", choices=PARTS)
    parser.add_argument("--root", default=str(DEFAULT_REAL_CT_ROOT), help="the shared real_ct folder")
    parser.add_argument("--kinds", nargs="+", default=["clean"], choices=KINDS, help="dataset kinds (default: clean)")
    parser.add_argument("--split", default=None, help="split file (default: data/real_ct_split.json)")
    parser.add_argument(
        "--with-phantoms", action="store_true",
        help="first print data/phantom/<part> (train or test), generating the phantom set if it is missing",
    )
    args = parser.parse_args(argv)
    try:
        lines = []
        if args.with_phantoms:
            from utils.data.phantom import DEFAULT_DIR, ensure_default_dataset

            ensure_default_dataset(progress=False)
            lines.append(str(Path(DEFAULT_DIR) / args.part))
        split = load_split(args.split)
        select = training_paths if args.part == "train" else test_paths
        lines += [str(p) for p in select(args.root, args.kinds, split)]
    except (DataError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
