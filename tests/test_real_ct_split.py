"""utils.data.real_ct_split and data/real_ct_split.json: no patient in both parts, paths exist, CRLM is test.

Tests that need the read-only corpus use the ``real_ct`` fixture (skipped when it is absent).
"""

import copy
import json
from pathlib import Path

import pydicom
import pytest

from utils.base.errors import ConfigError, DataError
from utils.data.real_ct_split import KINDS, SPLIT_FILE, load_split, main, patients, training_paths
from utils.data.real_ct_split import test_paths as split_test_paths

CT_SUFFIXES = (".dcm", ".png", ".nii.gz")


def all_items(split, part, kinds=KINDS):
    return {
        (folder, item)
        for folder, ids in patients(part, kinds, split).items()
        for patient in ids
        for item in split["datasets"][folder]["patients"][patient]
    }


def test_split_file_is_valid_and_parts_never_share_a_patient():
    split = load_split()
    assert load_split(SPLIT_FILE) == split
    for folder, entry in split["datasets"].items():
        assert not set(entry["train"]) & set(entry["test"]), folder
        assert sorted(entry["train"] + entry["test"]) == sorted(entry["patients"]), folder
    # no path is listed under two patients, so no image can reach both parts
    listed = [(f, i) for f, e in split["datasets"].items() for items in e["patients"].values() for i in items]
    assert len(listed) == len(set(listed))
    assert not all_items(split, "train") & all_items(split, "test")


def test_required_test_sets():
    data = load_split()["datasets"]
    assert data["series_crlm_abdomen_dicom"]["test"] == ["CRLM-CT-1004"]
    assert data["series_crlm_abdomen_dicom"]["train"] == []
    assert data["series_head_gantry_tilt_dicom"]["train"] == []
    sts = data["volumes_sts_lowdose_dicom"]
    assert (len(sts["train"]), len(sts["test"]), sts["kind"]) == (18, 6, "lowdose")
    for folder in ("slices_covid19_nysbu_dicom", "slices_kaggle_tcia_nifti", "slices_msd_lung_png"):
        entry = data[folder]
        fraction = len(entry["test"]) / len(entry["patients"])
        assert 0.2 <= fraction <= 0.25, (folder, fraction)


def test_default_paths_are_clean_only_and_disjoint(tmp_path):
    split = load_split()
    train = training_paths(tmp_path, split=split, check=False)
    test = split_test_paths(tmp_path, split=split, check=False)
    assert train and test and not set(train) & set(test)
    for path in train:  # a training path is never inside a test path (a test patient's folder)
        assert not any(path == t or t in path.parents or path in t.parents for t in test), path
    clean = {f for f, e in split["datasets"].items() if e["kind"] == "clean"}
    assert {p.relative_to(tmp_path).parts[0] for p in train + test} <= clean
    assert tmp_path / "series_crlm_abdomen_dicom" in test
    everything = training_paths(tmp_path, kinds=KINDS, split=split, check=False)
    assert tmp_path / "volumes_sts_lowdose_dicom" / "STS_002" in everything


def bad_split(tmp_path, change):
    split = copy.deepcopy(load_split())
    change(split["datasets"])
    path = tmp_path / "split.json"
    path.write_text(json.dumps(split))
    return path


@pytest.mark.bad_input
def test_bad_split_files_are_refused(tmp_path):
    def overlap(d):
        d["slices_covid19_nysbu_dicom"]["test"].append(d["slices_covid19_nysbu_dicom"]["train"][0])

    def forgotten(d):
        d["slices_kaggle_tcia_nifti"]["train"].pop()

    def escaping(d):
        d["slices_lidc_chest_dicom"]["patients"]["LIDC-IDRI-0314"] = ["../elsewhere"]

    def bad_kind(d):
        d["slices_lidc_chest_dicom"]["kind"] = "synthetic"

    for change, fragment in ((overlap, "both train and test"), (forgotten, "neither train nor test"),
                             (escaping, "without '..'"), (bad_kind, "kind")):
        path = bad_split(tmp_path, change)
        with pytest.raises(DataError, match=fragment) as caught:
            load_split(path)
        assert str(path) in str(caught.value)
    with pytest.raises(DataError, match="does not exist"):
        load_split(tmp_path / "missing.json")
    with pytest.raises(ConfigError):
        training_paths(tmp_path, kinds=("noisy",), check=False)
    with pytest.raises(DataError, match="does not exist"):
        training_paths(tmp_path / "no_corpus")


# --------------------------------------------------------------------------- with the shared corpus


def ct_files(folder):
    return {p for p in folder.rglob("*") if p.is_file() and p.name.lower().endswith(CT_SUFFIXES)}


def test_every_listed_item_exists_and_covers_its_dataset(real_ct):
    split = load_split()
    train = training_paths(real_ct, kinds=KINDS, split=split)  # check=True: raises on a missing path
    test = split_test_paths(real_ct, kinds=KINDS, split=split)
    covered = set()
    for path in train + test:
        files = ct_files(path) if path.is_dir() else {path}
        assert files, path
        assert not files & covered, path  # no image is listed twice
        covered |= files
    for folder in split["datasets"]:
        missing = ct_files(real_ct / folder) - covered
        if folder == "slices_covid19_nysbu_dicom":  # byte-identical copies of A072894's coronal images
            assert {p.relative_to(real_ct / folder).as_posix() for p in missing} == {
                "A072894/19001203-CAP-067.dcm", "A072894/19010103-Chest-058.dcm"
            }
        else:
            assert not missing, (folder, sorted(missing)[:3])


def test_no_dicom_patient_id_is_in_both_parts(real_ct):
    split = load_split()

    def patient_ids(paths):
        ids = set()
        for path in paths:
            for file in sorted(ct_files(path) if path.is_dir() else {path}):
                if file.suffix == ".dcm":
                    ids.add(str(pydicom.dcmread(file, stop_before_pixels=True).PatientID))
        return ids

    train_ids = patient_ids(training_paths(real_ct, kinds=KINDS, split=split))
    test_ids = patient_ids(split_test_paths(real_ct, kinds=KINDS, split=split))
    assert train_ids and test_ids and not train_ids & test_ids
    assert {"CRLM-CT-1004", "QMNx85rKkkg", "STS_003"} <= test_ids
    # where the split names DICOM patients by folder, the folder name is the PatientID
    for folder in ("slices_covid19_nysbu_dicom", "volumes_sts_lowdose_dicom"):
        entry = split["datasets"][folder]
        for part in ("train", "test"):
            for patient in entry[part]:
                assert patient in (train_ids if part == "train" else test_ids)


def test_command_line_prints_readable_paths(real_ct, capsys):
    from utils.data.readers import read_ct

    assert main(["test", "--root", str(real_ct)]) == 0
    lines = capsys.readouterr().out.split()
    assert str(real_ct / "series_crlm_abdomen_dicom") in lines
    (crlm,) = read_ct(lines[lines.index(str(real_ct / "series_crlm_abdomen_dicom"))])
    assert crlm.array.shape == (41, 512, 512)
    assert main(["train", "--root", str(real_ct), "--kinds", "8bit"]) == 0
    lines = capsys.readouterr().out.split()
    assert len(lines) == 18 and all(Path(line).suffix == ".png" for line in lines)
    assert sum(v.array.shape[0] for line in lines[:3] for v in read_ct(line)) == 3
