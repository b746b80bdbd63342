"""The real CT sample committed in data/real_ct_sample/ and its place in the default 2D training data."""

import hashlib
import json

import numpy as np
import pytest

from tests.conftest import REAL_CT
from tests.scripts import REPO

SAMPLE = REPO / "data" / "real_ct_sample"
MANIFEST = json.loads((SAMPLE / "manifest.json").read_text())


def test_the_sample_is_small_attributed_and_lists_every_file():
    files = {entry["file"] for entry in MANIFEST["files"]}
    assert files == {p.name for p in SAMPLE.glob("*.nii.gz")} and len(files) >= 8
    assert sum(p.stat().st_size for p in SAMPLE.iterdir()) <= 5_000_000
    assert {entry["licence"] for entry in MANIFEST["files"]} <= {"CC BY 3.0", "CC BY 4.0", "CC BY-SA 4.0"}
    attribution = (REPO / "data" / "README.md").read_text()
    for entry in MANIFEST["files"]:
        assert entry["patient"] in attribution, f"{entry['patient']} is not attributed in data/README.md"


def test_the_sample_holds_only_training_patients_of_the_split():
    from utils.data.real_ct_split import load_split

    datasets = load_split()["datasets"]
    for entry in MANIFEST["files"]:
        split = datasets[entry["dataset"]]
        assert entry["patient"] in split["train"] and entry["patient"] not in split["test"], entry["file"]


def test_the_sample_reads_as_separate_2d_slices_in_hu_with_their_spacing():
    from utils.data.scans import read_scan
    from utils.data.readers import read_ct

    volumes = read_ct(SAMPLE)
    assert len(volumes) == len(MANIFEST["files"])
    by_name = {entry["file"]: entry for entry in MANIFEST["files"]}
    for volume in volumes:
        entry = by_name[volume.files[0].name]
        assert volume.array.shape == (1, *entry["shape"]) and volume.format == "nifti"
        assert volume.spacing[1:] == pytest.approx(entry["pixel_spacing_mm"], rel=1e-5)
        assert 0 <= volume.array.min() and volume.array.max() <= 1
    hu = read_scan(SAMPLE / MANIFEST["files"][0]["file"]).values
    assert hu.min() >= -1024 and hu.max() > 200  # air, soft tissue and bone; padding set to air


@pytest.mark.skipif(not REAL_CT.is_dir(), reason="the shared real CT (../shared) is absent")
@pytest.mark.parametrize("index", [0, -1])
def test_a_sample_slice_is_its_source_dicom_in_hu(index):
    from utils.data.scans import read_scan

    entry = MANIFEST["files"][index]
    source = REAL_CT / entry["source_file"]
    assert hashlib.sha256(source.read_bytes()).hexdigest() == entry["source_sha256"]
    expected = np.maximum(read_scan(source).values[0], -1024)
    stored = read_scan(SAMPLE / entry["file"]).values[0]
    np.testing.assert_array_equal(stored, np.round(expected))
    assert stored[256, 256] == np.round(expected[256, 256])


@pytest.fixture
def quick_phantoms(monkeypatch):
    """The default data with the tiny phantoms in place of the full ones (no full dataset generated here)."""
    from utils.data import phantom
    from utils.learning.training import QUICK_PHANTOMS

    full = phantom.ensure_default_dataset
    monkeypatch.setattr(phantom, "ensure_default_dataset", lambda **settings: full(**(settings or QUICK_PHANTOMS)))


def test_the_default_2d_data_mixes_the_sample_half_and_half_with_the_phantoms(quick_phantoms):
    from utils.learning import training
    from utils.learning.config import TrainingConfig

    config = TrainingConfig(ndim=2, patch=(32, 32))
    train, _, described = training.resolve_data(config)
    sources = [entry["data_path"] for entry in described["train"]]
    assert sources.count("data/real_ct_sample") == len(MANIFEST["files"]) and described["balanced"]
    counts = training.samples_per_volume(config, train, training.patch_sampling(config), described)
    real = sum(n for n, source in zip(counts, sources) if source == "data/real_ct_sample")
    assert 0.4 <= real / sum(counts) <= 0.6  # half, up to the rounding of a few samples per slice


@pytest.mark.parametrize("ndim, quick", [(3, False), (2, True)])
def test_volume_and_quick_runs_train_on_the_phantoms_alone(ndim, quick, quick_phantoms):
    from utils.learning import training
    from utils.learning.config import TrainingConfig

    config = TrainingConfig(ndim=ndim, patch=(8, 32, 32) if ndim == 3 else (32, 32))
    train, _, described = training.resolve_data(config, quick=quick)
    assert not described["balanced"] and all("real_ct_sample" not in e["data_path"] for e in described["train"])
    assert training.samples_per_volume(config, train, training.patch_sampling(config), described) is None
