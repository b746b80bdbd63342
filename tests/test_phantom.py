"""Synthetic phantoms: determinism, plausible HU per tissue, z-continuity, and the dataset on disk."""

import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi

from utils.data import phantom
from utils.base.errors import ConfigError, RunDirectoryError
from utils.data.phantom import Tissue

# Small grids that keep the default 256 mm field of view, so the anatomy is the real one, coarser.
COARSE = dict(shape=(8, 64, 64), spacing=(2.5, 4.0, 4.0))
MEDIUM = dict(shape=(32, 128, 128), spacing=(2.5, 2.0, 2.0))
TINY = (4, 32, 32)


@pytest.fixture(scope="module")
def medium_phantoms():
    """Labelled phantoms of four seeds: one mostly thorax (4), one mostly abdomen (1), two across
    the diaphragm (7, 9)."""
    return [phantom.make_labelled_phantom(seed, **MEDIUM) for seed in (1, 4, 7, 9)]


def _core(labels, tissue, iterations=1):
    """Voxels of ``tissue`` away from its boundary (in-plane), where partial volume does not reach."""
    mask = labels == tissue
    if iterations == 0:  # scipy reads 0 as "erode until nothing changes"
        return mask
    return ndi.binary_erosion(mask, ndi.generate_binary_structure(2, 1)[None], iterations=iterations)


def _pooled(phantoms, tissue, iterations=1):
    return np.concatenate([p.hu[_core(p.labels, tissue, iterations)] for p in phantoms])


# ----------------------------------------------------------------------------------------------
# One volume


def test_same_seed_gives_the_same_volume():
    first = phantom.make_phantom(7, **COARSE)
    second = phantom.make_phantom(7, **COARSE)
    assert np.array_equal(first, second)


def test_different_seeds_give_different_anatomy():
    first = phantom.make_phantom(1, **COARSE)
    second = phantom.make_phantom(2, **COARSE)
    assert np.mean(np.abs(first - second)) > 50.0


def test_shape_dtype_and_whole_hu_values():
    hu = phantom.make_phantom(3, **COARSE)
    assert hu.shape == COARSE["shape"]
    assert hu.dtype == np.float32
    assert np.array_equal(hu, np.rint(hu))  # what the int16 files store
    assert hu.min() >= -1000.0 and hu.max() <= 3071.0


def test_default_spacing_works_on_a_tiny_grid():
    hu = phantom.make_phantom(0, shape=(3, 24, 20))
    assert hu.shape == (3, 24, 20)
    assert np.isfinite(hu).all()


def test_air_outside_the_body_is_exactly_minus_1000(medium_phantoms):
    for p in medium_phantoms:
        body = p.labels != Tissue.AIR
        far_outside = ~ndi.binary_dilation(body, iterations=3)
        assert far_outside.sum() > 0.1 * body.size
        assert np.all(p.hu[far_outside] == -1000.0)
        assert p.hu[:, 0, :].max() == -1000.0  # top rows: air in front of the patient


def test_soft_tissue_and_fat_have_clinical_hu(medium_phantoms):
    fat = _pooled(medium_phantoms, Tissue.SUBCUTANEOUS_FAT)
    muscle = _pooled(medium_phantoms, Tissue.MUSCLE)
    liver = _pooled(medium_phantoms, Tissue.LIVER, iterations=2)
    assert -130 < np.median(fat) < -75
    assert 35 < np.median(muscle) < 80
    assert 50 < np.median(liver) < 130


def test_contrast_enhanced_aorta_and_bone(medium_phantoms):
    aorta = _pooled(medium_phantoms, Tissue.ARTERIAL_BLOOD)
    assert 140 < np.median(aorta) < 270
    assert max(p.hu.max() for p in medium_phantoms) > 600  # cortical bone
    trabecular = _pooled(medium_phantoms, Tissue.TRABECULAR_BONE, iterations=0)
    assert 150 < np.median(trabecular) < 450
    assert all((p.hu > 300).any() for p in medium_phantoms)  # every volume has bone


def test_lungs_are_dark_where_present(medium_phantoms):
    lungs = _pooled(medium_phantoms, Tissue.LUNG, iterations=2)
    assert lungs.size > 1000, "no lung in the test seeds"
    assert np.median(lungs) < -750
    assert np.percentile(lungs, 95) < -400  # vessels are sparse


def test_bowel_gas_is_air():
    gas = np.concatenate([p.hu[_core(p.labels, Tissue.GAS)] for p in
                          (phantom.make_labelled_phantom(seed, **MEDIUM) for seed in (3, 5))])
    assert gas.size > 0
    assert np.median(gas) < -900


def test_clean_texture_is_far_below_the_weakest_noise_level(medium_phantoms):
    """Fine texture inside organs is a few HU, far below 2 % of the 1400 HU window (28 HU)."""
    for tissue in (Tissue.LIVER, Tissue.MUSCLE, Tissue.SUBCUTANEOUS_FAT):
        residuals = []
        for p in medium_phantoms:
            high_pass = p.hu - ndi.gaussian_filter(p.hu, (0, 1, 1))
            residuals.append(high_pass[_core(p.labels, tissue, iterations=2)])
        residual = np.concatenate(residuals)
        assert residual.size > 500
        assert 0.3 < residual.std() < 10.0, tissue.name  # textured, but far below 28 HU


def test_neighbouring_slices_are_much_more_similar_than_distant_ones(medium_phantoms):
    for p in medium_phantoms:
        hu = np.clip(p.hu, -1000, 400)
        neighbour = np.mean(np.abs(hu[1:] - hu[:-1]))
        distant = np.mean(np.abs(hu[16:] - hu[:-16]))
        assert neighbour < 0.5 * distant


def test_seeds_vary_body_size_and_organs_in_view(medium_phantoms):
    centre = [np.mean(p.labels[p.labels.shape[0] // 2] != Tissue.AIR) for p in medium_phantoms]
    assert np.ptp(centre) > 0.03
    lung_fraction = [np.mean(p.labels == Tissue.LUNG) for p in medium_phantoms]
    assert np.ptp(lung_fraction) > 0.05


def test_anatomy_does_not_depend_on_the_resolution():
    """One seed is one patient: halving the pixel size keeps the body outline."""
    coarse = phantom.make_labelled_phantom(11, shape=(8, 64, 64), spacing=(2.5, 4.0, 4.0))
    fine = phantom.make_labelled_phantom(11, shape=(8, 128, 128), spacing=(2.5, 2.0, 2.0))
    coarse_body = np.mean(coarse.labels != Tissue.AIR, axis=(1, 2))
    fine_body = np.mean(fine.labels != Tissue.AIR, axis=(1, 2))
    assert np.max(np.abs(coarse_body - fine_body)) < 0.02


@pytest.mark.parametrize("shape, spacing", [((0, 8, 8), (1, 1, 1)), ((8, 8), (1, 1, 1)), ((4, 4, 8), (1, 1, 1)),
                                            ((4, 8, 8), (1, 0, 1)), ((4, 8, 8), (1, float("nan"), 1))])
@pytest.mark.bad_input
def test_bad_geometry_is_refused(shape, spacing):
    with pytest.raises(ConfigError):
        phantom.make_phantom(0, shape=shape, spacing=spacing)


# ----------------------------------------------------------------------------------------------
# Dataset on disk


def _generate_tiny(out_dir, **settings):
    settings = dict(dict(n_train=2, n_val=1, n_test=1, shape=TINY, seed=5, progress=False), **settings)
    return phantom.generate_dataset(out_dir, **settings)


def _temporary_files(root):
    return [p for p in root.rglob("*") if ".tmp" in p.name]


def test_generate_dataset_writes_volumes_and_manifest(tmp_path):
    files = _generate_tiny(tmp_path)
    assert {split: [p.relative_to(tmp_path).as_posix() for p in paths] for split, paths in files.items()} == {
        "train": ["train/phantom_000.nii.gz", "train/phantom_001.nii.gz"],
        "val": ["val/phantom_000.nii.gz"],
        "test": ["test/phantom_000.nii.gz"],
    }
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["seed"] == 5 and manifest["shape"] == list(TINY)
    assert manifest["spacing"] == list(phantom.DEFAULT_SPACING)
    assert manifest["counts"] == {"train": 2, "val": 1, "test": 1}
    assert manifest["generator_version"] == phantom.GENERATOR_VERSION
    seeds = [entry["seed"] for split in phantom.SPLITS for entry in manifest["files"][split]]
    assert len(set(seeds)) == 4
    assert _temporary_files(tmp_path) == []


def test_nifti_holds_int16_hu_with_spacing_in_xyz_order(tmp_path):
    spacing = (3.0, 1.5, 2.0)  # distinct per axis, so a swapped axis shows
    files = _generate_tiny(tmp_path, spacing=spacing)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    image = nib.load(str(files["val"][0]))
    assert image.get_data_dtype() == np.int16
    assert image.shape == (TINY[2], TINY[1], TINY[0])  # NIfTI (x, y, z)
    assert tuple(float(z) for z in image.header.get_zooms()) == (2.0, 1.5, 3.0)
    assert np.allclose(np.abs(np.diag(image.affine)[:3]), (2.0, 1.5, 3.0))
    volume = np.asanyarray(image.dataobj).transpose(2, 1, 0)  # the project's reader: (X, Y, Z) -> (Z, Y, X)
    expected = phantom.make_phantom(manifest["files"]["val"][0]["seed"], TINY, spacing)
    assert np.array_equal(volume.astype(np.float32), expected)


def test_project_reader_gets_the_phantom_back_with_its_spacing(tmp_path):
    readers = pytest.importorskip("utils.data.readers")
    spacing = (3.0, 1.5, 2.0)
    files = _generate_tiny(tmp_path, spacing=spacing)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    (volume,) = readers.read_ct(files["test"][0], (-1000.0, 400.0))
    expected = phantom.make_phantom(manifest["files"]["test"][0]["seed"], TINY, spacing)
    assert volume.spacing == spacing
    assert np.allclose(volume.array, np.clip((expected + 1000.0) / 1400.0, 0, 1), atol=1e-6)


@pytest.mark.bad_input
def test_existing_dataset_is_not_overwritten_by_accident(tmp_path):
    _generate_tiny(tmp_path)
    with pytest.raises(RunDirectoryError):
        _generate_tiny(tmp_path)
    _generate_tiny(tmp_path, overwrite=True, n_train=1)
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == ["phantom_000.nii.gz"]  # stale volume removed


def _count_generated(monkeypatch):
    calls = []
    original = phantom.make_phantom

    def counting(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(phantom, "make_phantom", counting)
    return calls


def test_ensure_dataset_reuses_a_complete_matching_set(tmp_path, monkeypatch):
    settings = dict(n_train=2, n_val=1, n_test=1, shape=TINY, seed=5, progress=False)
    calls = _count_generated(monkeypatch)
    first = phantom.ensure_default_dataset(tmp_path, **settings)
    assert len(calls) == 4
    stamps = {p: p.stat().st_mtime_ns for paths in first.values() for p in paths}
    second = phantom.ensure_default_dataset(tmp_path, **settings)
    assert len(calls) == 4  # nothing generated
    assert second == first
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_ensure_dataset_regenerates_without_manifest(tmp_path, monkeypatch):
    settings = dict(n_train=2, n_val=1, n_test=1, shape=TINY, seed=5, progress=False)
    phantom.ensure_default_dataset(tmp_path, **settings)
    (tmp_path / "manifest.json").unlink()  # as after a crash half-way through
    calls = _count_generated(monkeypatch)
    files = phantom.ensure_default_dataset(tmp_path, **settings)
    assert len(calls) == 4
    assert (tmp_path / "manifest.json").is_file()
    assert all(p.is_file() for paths in files.values() for p in paths)
    assert _temporary_files(tmp_path) == []


@pytest.mark.parametrize("change", [dict(seed=6), dict(shape=(5, 32, 32)), dict(n_val=2),
                                    dict(spacing=(2.0, 1.0, 1.0))])
def test_ensure_dataset_regenerates_when_settings_differ(tmp_path, monkeypatch, change):
    settings = dict(n_train=2, n_val=1, n_test=1, shape=TINY, seed=5, progress=False)
    phantom.ensure_default_dataset(tmp_path, **settings)
    calls = _count_generated(monkeypatch)
    phantom.ensure_default_dataset(tmp_path, **dict(settings, **change))
    assert len(calls) == sum(dict(settings, **change)[k] for k in ("n_train", "n_val", "n_test"))
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    for key, value in change.items():
        wanted = list(value) if isinstance(value, tuple) else value
        stored = manifest["counts"]["val"] if key == "n_val" else manifest[key]
        assert stored == wanted


@pytest.mark.bad_input
def test_ensure_dataset_regenerates_when_a_file_is_missing_or_truncated(tmp_path, monkeypatch):
    settings = dict(n_train=2, n_val=1, n_test=1, shape=TINY, seed=5, progress=False)
    files = phantom.ensure_default_dataset(tmp_path, **settings)
    files["train"][1].write_bytes(files["train"][1].read_bytes()[:100])
    calls = _count_generated(monkeypatch)
    phantom.ensure_default_dataset(tmp_path, **settings)
    assert len(calls) == 4
    assert nib.load(str(files["train"][1])).shape == (32, 32, 4)


def test_volume_seeds_of_a_split_do_not_depend_on_other_splits():
    small = phantom.volume_seeds(0, {"train": 2, "val": 2, "test": 2})
    large = phantom.volume_seeds(0, {"train": 8, "val": 2, "test": 2})
    assert small["val"] == large["val"] and small["test"] == large["test"]
    assert large["train"][:2] == small["train"]
    assert len(set(large["train"] + large["val"] + large["test"])) == 12


def test_command_line_writes_and_then_reuses(tmp_path, capsys):
    arguments = ["--out", str(tmp_path), "--n-train", "1", "--n-val", "1", "--n-test", "1",
                 "--shape", "3", "24", "24", "--seed", "2"]
    assert phantom.main(arguments) == 0
    output = capsys.readouterr().out
    assert output.startswith(f"wrote phantom dataset to {tmp_path.resolve()}") and output.rstrip().endswith(" s")
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["shape"] == [3, 24, 24] and manifest["seed"] == 2
    stamp = (tmp_path / "manifest.json").stat().st_mtime_ns
    assert phantom.main(arguments) == 0
    assert "up to date" in capsys.readouterr().out
    assert (tmp_path / "manifest.json").stat().st_mtime_ns == stamp
    assert phantom.main(arguments + ["--overwrite"]) == 0
    assert (tmp_path / "manifest.json").stat().st_mtime_ns != stamp


@pytest.mark.bad_input
def test_command_line_reports_bad_settings(tmp_path, capsys):
    assert phantom.main(["--out", str(tmp_path), "--shape", "0", "24", "24"]) == 2
    assert "error:" in capsys.readouterr().err
    assert not (tmp_path / "manifest.json").exists()
