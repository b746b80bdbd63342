"""utils.data.readers and utils.data.describe: real CT, tiny synthetic files, bad input, random files.

Real data come from the read-only shared folder through the ``real_ct`` fixture (skipped
when it is absent); every expected value is recomputed here independently with pydicom or
Pillow, not with the reader's own helpers. Synthetic files are written in ``tmp_path``.
"""

import csv
import functools
import io
import json
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import numpy as np
import pydicom
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from PIL import Image
from pydicom.uid import generate_uid

from tests.ct_files import write_axial_series, write_dicom_slice, write_nifti, write_png, write_reference_npz
from utils.base.errors import ConfigError, DataError
from utils.data.readers import DEFAULT_HU_WINDOW, CTVolume, read_ct, read_reference_npz, window_hu

REPO = Path(__file__).resolve().parents[1]
CRLM = "series_crlm_abdomen_dicom"
LIDC = "slices_lidc_chest_dicom"
MSD_PNG = "slices_msd_lung_png"
WIDE_WINDOW = (-3000.0, 1000.0)  # reaches below air, so padding handling becomes visible


# --------------------------------------------------------------------------- helpers


def independent_window(dicom_file, hu_window=DEFAULT_HU_WINDOW):
    """Windowed slice straight from pydicom: pixel_array * slope + intercept, padding to air."""
    dataset = pydicom.dcmread(dicom_file)
    hu = dataset.pixel_array.astype(np.float64) * float(dataset.RescaleSlope) + float(dataset.RescaleIntercept)
    hu = np.where(hu < -1024, -1024, hu)
    lo, hi = hu_window
    return np.clip((hu - lo) / (hi - lo), 0, 1)


def manifest_rows(folder):
    with open(folder / "manifest.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@functools.lru_cache(maxsize=None)
def read_cached(path, hu_window=DEFAULT_HU_WINDOW):
    """The real series are read by several tests; read each once (callers must not modify)."""
    return read_ct(path, hu_window)


def constant_hu_slices(values, shape=(4, 5)):
    return [np.full(shape, v, dtype=np.int16) for v in values]


def assert_data_error(call, *fragments):
    """The call raises DataError and the message contains every fragment (case-insensitive)."""
    with pytest.raises(DataError) as caught:
        call()
    message = str(caught.value).lower()
    for fragment in fragments:
        assert str(fragment).lower() in message, f"{fragment!r} not in {message!r}"
    return caught.value


# --------------------------------------------------------------------------- real CT


def test_crlm_series_sorted_by_position_with_exact_hu(real_ct):
    folder = real_ct / CRLM
    (volume,) = read_cached(str(folder))
    assert volume.array.shape == (41, 512, 512) and volume.array.dtype == np.float32
    assert (volume.format, volume.n_files, volume.contiguous) == ("dicom", 41, True)
    assert volume.hu_window == DEFAULT_HU_WINDOW
    assert volume.spacing == pytest.approx((5.0, 0.797, 0.797), abs=1e-3)

    rows = manifest_rows(folder)  # the manifest lists the files in z order
    headers = [pydicom.dcmread(folder / row["file"], stop_before_pixels=True) for row in rows]
    z_from_files = [float(header.ImagePositionPatient[2]) for header in headers]
    assert z_from_files == pytest.approx([float(r["z_mm"]) for r in rows])
    assert np.all(np.diff(z_from_files) > 0), "manifest order must be increasing z"
    assert rows[0]["file"] == "1-41.dcm", "file names run against z: sorting by name would be wrong"
    for index in (0, 1, 20, 40):
        np.testing.assert_allclose(volume.array[index], independent_window(folder / rows[index]["file"]), atol=1e-6)


def test_crlm_padding_becomes_air_not_a_negative_artefact(real_ct):
    folder = real_ct / CRLM
    (volume,) = read_cached(str(folder))
    assert volume.array.min() == 0.0

    (wide,) = read_cached(str(folder), WIDE_WINDOW)
    air = (-1024 - WIDE_WINDOW[0]) / (WIDE_WINDOW[1] - WIDE_WINDOW[0])
    assert wide.hu_window == WIDE_WINDOW
    assert wide.array.min() == pytest.approx(air)  # the -3024 HU ring is air, nothing lies below it
    first = manifest_rows(folder)[0]["file"]
    dataset = pydicom.dcmread(folder / first)
    padded = dataset.pixel_array == dataset.PixelPaddingValue
    assert 0.1 < padded.mean() < 0.4
    assert np.allclose(wide.array[0][padded], air)


def test_crlm_file_name_order_does_not_matter(real_ct, tmp_path):
    folder = real_ct / CRLM
    files = sorted(folder.glob("*.dcm"))
    shuffled = np.random.default_rng(7).permutation(len(files))
    for new_index, file in zip(shuffled, files):
        (tmp_path / f"{new_index:03d}.dcm").symlink_to(file)  # names in random order, no copy
    (volume,) = read_ct(tmp_path)
    (reference,) = read_cached(str(folder))
    np.testing.assert_array_equal(volume.array, reference.array)


def test_lidc_scattered_unsigned_slices(real_ct):
    folder = real_ct / LIDC
    (volume,) = read_cached(str(folder))
    assert volume.array.shape == (20, 512, 512)
    assert (volume.format, volume.n_files, volume.contiguous) == ("dicom", 20, False)
    assert volume.spacing[1:] == pytest.approx((0.78125, 0.78125))
    assert 13.0 <= volume.spacing[0] <= 14.0
    rows = manifest_rows(folder)
    assert np.all(np.diff([float(r["z_mm"]) for r in rows]) > 0)
    dataset = pydicom.dcmread(folder / rows[5]["file"])
    assert dataset.pixel_array.dtype == np.uint16 and float(dataset.RescaleIntercept) == -1000
    np.testing.assert_allclose(volume.array[5], independent_window(folder / rows[5]["file"]), atol=1e-6)


def test_msd_png_folder_is_divided_by_255(real_ct):
    folder = real_ct / MSD_PNG
    (volume,) = read_cached(str(folder))
    assert volume.array.shape == (24, 512, 512)
    assert (volume.format, volume.hu_window, volume.spacing, volume.n_files) == ("png", None, None, 24)
    assert volume.contiguous is False  # <patient>_<slice>: slices of 12 patients
    files = sorted(folder.glob("*.png"), key=lambda f: tuple(int(n) for n in f.stem.split("_")))
    for index in (0, 1, 23):
        expected = np.asarray(Image.open(files[index])).astype(np.float32) / np.float32(255)
        np.testing.assert_array_equal(volume.array[index], expected)


def run_describe(*args):
    return subprocess.run(
        [sys.executable, "-m", "utils.data.describe", *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_describe_cli_on_real_dicom(real_ct):
    result = run_describe(real_ct / LIDC, "--hu-window", -3000, 1000)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    info = json.loads(lines[0])
    assert set(info) == {
        "format", "shape", "spacing", "dtype", "min", "max", "hu_window", "n_files", "n_volumes", "contiguous", "source"
    }
    assert info["format"] == "dicom" and info["shape"] == [20, 512, 512] and info["dtype"] == "float32"
    assert info["hu_window"] == [-3000.0, 1000.0] and info["n_files"] == 20 and info["n_volumes"] == 1
    assert info["contiguous"] is False and info["min"] == pytest.approx(0.5) and info["max"] <= 1.0


@pytest.mark.bad_input
def test_describe_cli_bad_path_exits_2_without_traceback(tmp_path):
    missing = tmp_path / "no_such_scan"
    result = run_describe(missing)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("error: ") and "no_such_scan" in result.stderr and "does not exist" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.bad_input
def test_describe_bad_window_exits_2(tmp_path, capsys):
    from utils.data.describe import main

    assert main([str(tmp_path), "--hu-window", "400", "-1000"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("error: ") and "lo < hi" in captured.err


def test_describe_summarises_several_volumes(tmp_path):
    from utils.data.describe import summarise

    write_reference_npz(tmp_path / "set.npz", data_test=np.full((2, 3, 4, 5, 1), 0.25, np.float32))
    info = summarise(read_ct(tmp_path / "set.npz"), tmp_path / "set.npz")
    assert info["shape"] == [[3, 4, 5], [3, 4, 5]] and info["n_volumes"] == 2 and info["n_files"] == 2
    assert info["format"] == "npz" and info["hu_window"] is None and info["contiguous"] == [True, True]


# --------------------------------------------------------------------------- synthetic: NIfTI


def test_nifti_xyz_is_transposed_to_zyx_with_spacing(tmp_path):
    x, y, z = np.meshgrid(np.arange(4), np.arange(3), np.arange(5), indexing="ij")
    hu = (-900 + 100 * z + 10 * y + x).astype(np.int16)  # stored (X, Y, Z) = (4, 3, 5)
    write_nifti(tmp_path / "ct.nii.gz", hu, zooms=(0.7, 0.8, 2.5))
    (volume,) = read_ct(tmp_path / "ct.nii.gz", hu_window=(-1000, 0))
    assert volume.array.shape == (5, 3, 4)
    assert volume.spacing == pytest.approx((2.5, 0.8, 0.7))
    assert (volume.format, volume.contiguous, volume.n_files, volume.hu_window) == ("nifti", True, 1, (-1000.0, 0.0))
    expected = (-900 + 100 * 2 + 10 * 1 + 3 + 1000) / 1000  # voxel x=3, y=1, z=2
    assert volume.array[2, 1, 3] == pytest.approx(expected)


def test_nifti_kits19_layout_keeps_slice_axis_first(tmp_path):
    # kits19 stores (Z, Y, X) with an affine whose first voxel axis runs along z.
    affine = np.array([[0, 0, -0.8, 0], [0, -0.8, 0, 0], [-2.5, 0, 0, 0], [0, 0, 0, 1]], dtype=float)
    for case, value in (("case_00000", -500), ("case_00001", 0)):
        (tmp_path / case).mkdir()
        write_nifti(tmp_path / case / "imaging.nii.gz", np.full((6, 3, 4), value, np.int16), (2.5, 0.8, 0.8), affine)
        write_nifti(tmp_path / case / "segmentation.nii.gz", np.ones((6, 3, 4), np.uint8), (2.5, 0.8, 0.8), affine)
    volumes = read_ct(tmp_path)
    assert [Path(v.source).parent.name for v in volumes] == ["case_00000", "case_00001"]
    assert all(Path(v.source).name == "imaging.nii.gz" for v in volumes)
    assert all(v.array.shape == (6, 3, 4) and v.spacing == pytest.approx((2.5, 0.8, 0.8)) for v in volumes)
    assert volumes[0].array.max() == pytest.approx(500 / 1400)


@pytest.mark.parametrize("plane", ["axial", "coronal", "sagittal"])
def test_nifti_single_slice_reads_as_one_slice_in_any_plane(tmp_path, plane):
    # One slice stored (X, Y, Z) with an axis-aligned affine; the axis of length 1 is the slice normal.
    sizes = {"axial": (6, 5, 1), "coronal": (6, 1, 5), "sagittal": (1, 6, 5)}[plane]
    hu = np.arange(np.prod(sizes), dtype=np.int16).reshape(sizes) - 1000
    write_nifti(tmp_path / "slice.nii.gz", hu, zooms=(0.7, 0.8, 2.5))
    (volume,) = read_ct(tmp_path / "slice.nii.gz", hu_window=(-1000, 0))
    in_plane = [axis for axis, n in enumerate(sizes) if n > 1]  # world order (z, y, x) of the in-plane axes
    assert volume.array.shape == (1, sizes[in_plane[1]], sizes[in_plane[0]])
    # Rows run along the in-plane axis nearer world z (or y), which is stored last: the slice transposed.
    assert volume.array[0] * 1000 - 1000 == pytest.approx(np.squeeze(hu).T.astype(np.float32), abs=1e-3)
    zooms = (0.7, 0.8, 2.5)
    normal = sizes.index(1)
    assert volume.spacing == pytest.approx((zooms[normal], zooms[in_plane[1]], zooms[in_plane[0]]))


def test_nifti_folder_gives_one_volume_per_file_and_clamps_padding(tmp_path):
    write_nifti(tmp_path / "a.nii", np.full((2, 2, 3), -3024, np.int16))
    write_nifti(tmp_path / "b.nii.gz", np.full((2, 2, 4), 400, np.int16))
    volumes = read_ct(tmp_path, hu_window=WIDE_WINDOW)
    assert [v.array.shape for v in volumes] == [(3, 2, 2), (4, 2, 2)]
    assert volumes[0].array.min() == pytest.approx((-1024 + 3000) / 4000)


# --------------------------------------------------------------------------- synthetic: DICOM


def test_dicom_series_sorted_by_position_not_name(tmp_path):
    values = [-500, -100, 0, 300]
    # s00.dcm holds the highest z: name order is the reverse of z order.
    write_axial_series(tmp_path, constant_hu_slices(values), z0=30.0, step=-2.0, name=lambda k: f"s{k:02d}.dcm")
    (volume,) = read_ct(tmp_path)
    np.testing.assert_allclose(volume.array[:, 0, 0], window_hu(np.array(values[::-1]), DEFAULT_HU_WINDOW))
    assert volume.spacing == pytest.approx((2.0, 0.5, 0.7))
    assert volume.contiguous and volume.n_files == 4


def test_dicom_sagittal_series_sorted_along_the_normal(tmp_path):
    uid = generate_uid()
    sagittal = (0, 1, 0, 0, 0, -1)  # row direction y, column direction -z: normal y x (-z) = -x
    for k, x in enumerate([5.0, -5.0, 0.0]):
        write_dicom_slice(
            tmp_path / f"{k}.dcm", np.full((3, 3), 100 * k, np.int16), position=(x, 0, 0), series_uid=uid,
            orientation=sagittal, thickness=5.0,
        )
    (volume,) = read_ct(tmp_path, hu_window=(0, 200))
    np.testing.assert_allclose(volume.array[:, 0, 0], [0.0, 1.0, 0.5])  # ascending along -x: x = 5, 0, -5
    assert volume.spacing[0] == pytest.approx(5.0) and volume.contiguous


def test_dicom_padding_value_and_instance_number_fallback(tmp_path):
    uid = generate_uid()
    for k, instance in enumerate([3, 1, 2]):
        hu = np.full((3, 3), 40 * instance, np.int16)
        hu[0, 0] = -2000 - 1024  # raw -2000 = PixelPaddingValue
        write_dicom_slice(
            tmp_path / f"{k}.dcm", hu, position=None, series_uid=uid, instance=instance, padding_value=-2000
        )
    (volume,) = read_ct(tmp_path, hu_window=WIDE_WINDOW)
    np.testing.assert_allclose(volume.array[:, 1, 1], window_hu(np.array([40, 80, 120]), WIDE_WINDOW))
    np.testing.assert_allclose(volume.array[:, 0, 0], (-1024 + 3000) / 4000)
    assert volume.contiguous and volume.spacing == pytest.approx((1.0, 0.5, 0.7))


def test_single_dicom_file_and_scattered_slices(tmp_path):
    write_axial_series(tmp_path / "scattered", constant_hu_slices([0, 10, 20]), step=13.5, thickness=1.0)
    (volume,) = read_ct(tmp_path / "scattered")
    assert not volume.contiguous and volume.spacing[0] == pytest.approx(13.5)
    (single,) = read_ct(tmp_path / "scattered" / "s01.dcm")
    assert single.array.shape == (1, 4, 5) and single.n_files == 1 and single.contiguous
    assert single.spacing == pytest.approx((1.0, 0.5, 0.7))
    # DICOM files without an extension are recognised by their DICM marker.
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "IM0001").write_bytes((tmp_path / "scattered" / "s00.dcm").read_bytes())
    assert read_ct(tmp_path / "bare")[0].format == "dicom"


# --------------------------------------------------------------------------- synthetic: PNG / TIFF / npz


def test_png_16bit_natural_order_and_scaling(tmp_path):
    for number, value in ((10, 3000), (2, 2000), (1, 1000)):
        write_png(tmp_path / f"z{number}.png", np.full((3, 4), value, np.uint16))
    (volume,) = read_ct(tmp_path)
    np.testing.assert_array_equal(volume.array[:, 0, 0], np.array([1000, 2000, 3000], np.float32) / np.float32(65535))
    assert volume.hu_window is None and volume.contiguous is False  # z1, z2, z10: uneven steps


@pytest.mark.parametrize(
    "names, contiguous",
    [(["slice_1.png", "slice_2.png", "slice_3.png"], True), (["a_7_1.png", "a_7_3.png", "a_7_5.png"], True),
     (["1_10.png", "2_11.png", "3_12.png"], False), (["left.png", "right.png"], False)],
)
def test_png_folder_contiguity_from_names(tmp_path, names, contiguous):
    for name in names:
        write_png(tmp_path / name, np.zeros((2, 2), np.uint8))
    assert read_ct(tmp_path)[0].contiguous is contiguous


def test_tiff_slices_and_multipage_stack(tmp_path):
    (tmp_path / "slices").mkdir()
    tifffile.imwrite(tmp_path / "slices" / "im_1.tif", np.full((3, 4), 255, np.uint8))
    tifffile.imwrite(tmp_path / "slices" / "im_2.tif", np.full((3, 4), 51, np.uint8))
    (volume,) = read_ct(tmp_path / "slices")
    np.testing.assert_allclose(volume.array[:, 0, 0], [1.0, 0.2])
    assert (volume.format, volume.contiguous, volume.n_files) == ("tiff", True, 2)

    stack = np.arange(2 * 3 * 4, dtype=np.uint16).reshape(2, 3, 4) * 1000
    tifffile.imwrite(tmp_path / "stack.tiff", stack, photometric="minisblack")  # pages, not RGBA samples
    (volume,) = read_ct(tmp_path / "stack.tiff")
    np.testing.assert_array_equal(volume.array, stack.astype(np.float32) / np.float32(65535))


def test_reference_data_layout_gives_one_volume_per_subject(tmp_path):
    data = tmp_path / "Data"
    for split, subject, value in (("Train", "case_a", 10), ("Train", "case_b", 20), ("Test", "case_c", 30)):
        for k in range(3):
            write_png(data / split / subject / f"{k}.png", np.full((4, 4), value + k, np.uint8))
    write_reference_npz(data / "test_set.npz", data_test=np.zeros((2, 4, 4, 1), np.float32))  # derived set: ignored
    volumes = read_ct(data)
    assert [Path(v.source).relative_to(data).as_posix() for v in volumes] == [
        "Test/case_c", "Train/case_a", "Train/case_b"
    ]
    assert all(v.array.shape == (3, 4, 4) and v.contiguous for v in volumes)
    assert volumes[1].array[2, 0, 0] == pytest.approx(12 / 255)
    assert [v.source for v in read_ct(data / "Train")] == [v.source for v in volumes[1:]]


def test_reference_npz_2d_and_3d(tmp_path, rng):
    clean2d = rng.random((5, 6, 7, 1))
    write_reference_npz(
        tmp_path / "two_d.npz", data_test=clean2d, data_test_noisy=clean2d + 0.1, data_test_prior=clean2d,
    )
    arrays = read_reference_npz(tmp_path / "two_d.npz")
    assert set(arrays) == {"data_test", "data_test_noisy", "data_test_prior"}
    assert all(a.dtype == np.float32 for a in arrays.values())
    (volume,) = read_ct(tmp_path / "two_d.npz")
    assert volume.array.shape == (5, 6, 7) and volume.contiguous is False and volume.hu_window is None
    np.testing.assert_array_equal(volume.array, clean2d[..., 0].astype(np.float32))

    clean3d = rng.random((2, 3, 6, 7, 1)).astype(np.float32)
    write_reference_npz(tmp_path / "three_d.npz", data_train=clean3d, data_train_noisy=clean3d)
    volumes = read_ct(tmp_path / "three_d.npz")
    assert [v.array.shape for v in volumes] == [(3, 6, 7)] * 2 and all(v.contiguous for v in volumes)
    np.testing.assert_array_equal(volumes[1].array, clean3d[1, ..., 0])


@pytest.mark.bad_input
def test_window_hu_formula_and_bad_windows():
    hu = np.array([-2000, -1000, -300, 400, 3000])
    np.testing.assert_allclose(window_hu(hu, (-1000, 400)), [0, 0, 0.5, 1, 1])
    assert window_hu(hu, (-1000, 400)).dtype == np.float32
    for bad in [(400, -1000), (0, 0), (float("nan"), 1), (1,), "wide"]:
        with pytest.raises(ConfigError):
            window_hu(hu, bad)
    with pytest.raises(ConfigError):
        read_ct(REPO, hu_window=(1, 0))


def test_ctvolume_describe_is_json_ready():
    volume = CTVolume(np.zeros((2, 3, 4), np.float32), "x", "png", None, None, True, 2)
    assert json.loads(json.dumps(volume.describe()))["shape"] == [2, 3, 4]


# --------------------------------------------------------------------------- bad input


@pytest.mark.bad_input
def test_missing_path(tmp_path):
    assert_data_error(lambda: read_ct(tmp_path / "gone.dcm"), "gone.dcm", "does not exist")


@pytest.mark.bad_input
def test_empty_folder_and_folder_of_documentation(tmp_path):
    assert_data_error(lambda: read_ct(tmp_path), str(tmp_path), "empty")
    (tmp_path / "README.md").write_text("notes")
    (tmp_path / "empty_subject").mkdir()
    assert_data_error(lambda: read_ct(tmp_path), "empty", "README.md")


def truncate(path, keep_fraction=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep_fraction)])
    return path


@pytest.mark.bad_input
def test_truncated_png(tmp_path):
    write_png(tmp_path / "a_1.png", np.arange(64 * 64, dtype=np.uint16).reshape(64, 64))
    truncate(write_png(tmp_path / "a_2.png", np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)))
    assert_data_error(lambda: read_ct(tmp_path), "a_2.png", "truncated")


@pytest.mark.bad_input
def test_truncated_nifti(tmp_path):
    hu = np.random.default_rng(0).integers(-1000, 1000, (16, 16, 8), dtype=np.int16)  # noise: gzip cannot shrink it
    truncate(write_nifti(tmp_path / "ct.nii.gz", hu))
    assert_data_error(lambda: read_ct(tmp_path / "ct.nii.gz"), "ct.nii.gz", "truncated")


@pytest.mark.parametrize("keep_fraction", [0.01, 0.5, 0.99])
@pytest.mark.bad_input
def test_truncated_dicom(tmp_path, keep_fraction):
    write_axial_series(tmp_path, constant_hu_slices([0, 1, 2], shape=(32, 32)))
    truncate(tmp_path / "s01.dcm", keep_fraction)
    assert_data_error(lambda: read_ct(tmp_path), "s01.dcm")
    error = assert_data_error(lambda: read_ct(tmp_path / "s01.dcm"), "s01.dcm")
    assert any(word in error.problem for word in ("truncated", "not a DICOM"))


@pytest.mark.bad_input
def test_truncated_copy_of_real_dicom(real_ct, tmp_path):
    source = real_ct / CRLM / "1-20.dcm"
    (tmp_path / "1-20.dcm").write_bytes(source.read_bytes()[:300_000])
    assert_data_error(lambda: read_ct(tmp_path), "1-20.dcm", "truncated")


@pytest.mark.bad_input
def test_mixed_slice_sizes_name_both_files(tmp_path):
    write_png(tmp_path / "s1.png", np.zeros((4, 4), np.uint8))
    write_png(tmp_path / "s2.png", np.zeros((4, 5), np.uint8))
    assert_data_error(lambda: read_ct(tmp_path), "s1.png", "s2.png", "(4, 4)", "(4, 5)", "mixed slice sizes")
    dicom_folder = tmp_path / "dicom"
    write_axial_series(dicom_folder, [np.zeros((4, 4)), np.zeros((6, 6))], series_uid="1.2.3")
    assert_data_error(lambda: read_ct(dicom_folder), "s00.dcm", "s01.dcm", "(6, 6)", "mixed slice sizes")


@pytest.mark.bad_input
def test_non_image_files(tmp_path):
    (tmp_path / "notes.png").write_text("this is text, renamed")
    assert_data_error(lambda: read_ct(tmp_path), "notes.png", "png")
    jpeg = io.BytesIO()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(jpeg, format="JPEG")
    (tmp_path / "notes.png").write_bytes(jpeg.getvalue())
    assert_data_error(lambda: read_ct(tmp_path / "notes.png"), "notes.png", "JPEG", "not PNG")
    (tmp_path / "notes.png").unlink()
    (tmp_path / "scan.jpg").write_bytes(jpeg.getvalue())
    assert_data_error(lambda: read_ct(tmp_path), "scan.jpg", "unsupported file type")
    assert_data_error(lambda: read_ct(tmp_path / "scan.jpg"), "scan.jpg", "unsupported file type")
    (tmp_path / "fake.dcm").write_text("not dicom")
    assert_data_error(lambda: read_ct(tmp_path / "fake.dcm"), "fake.dcm", "not a DICOM")


@pytest.mark.bad_input
def test_colour_and_signed_images(tmp_path):
    colour = np.zeros((4, 4, 3), np.uint8)
    colour[..., 0] = 200
    write_png(tmp_path / "colour.png", colour)
    assert_data_error(lambda: read_ct(tmp_path / "colour.png"), "colour.png", "colour")
    write_png(tmp_path / "grey_rgb.png", np.repeat(np.full((4, 4, 1), 51, np.uint8), 3, axis=2))
    assert read_ct(tmp_path / "grey_rgb.png")[0].array.max() == pytest.approx(0.2)
    tifffile.imwrite(tmp_path / "hu.tif", np.full((4, 4), -1000, np.int16))
    assert_data_error(lambda: read_ct(tmp_path / "hu.tif"), "hu.tif", "int16", "unsigned 8- or 16-bit")


@pytest.mark.bad_input
def test_non_finite_values(tmp_path):
    bad = np.zeros((2, 3, 3, 1), np.float32)
    bad[0, 1, 1, 0] = np.nan
    write_reference_npz(tmp_path / "nan.npz", data_test=bad)
    assert_data_error(lambda: read_ct(tmp_path / "nan.npz"), "nan.npz", "data_test", "non-finite", "1 NaN")
    volume = np.zeros((3, 3, 2), np.float32)
    volume[1, 1, 1] = np.inf
    write_nifti(tmp_path / "inf.nii.gz", volume)
    assert_data_error(lambda: read_ct(tmp_path / "inf.nii.gz"), "inf.nii.gz", "non-finite", "1 Inf")


@pytest.mark.bad_input
def test_folder_mixing_formats(tmp_path):
    write_png(tmp_path / "slice_1.png", np.zeros((4, 5), np.uint8))
    write_dicom_slice(tmp_path / "slice_2.dcm", np.zeros((4, 5)), position=(0, 0, 0), series_uid="1.2")
    assert_data_error(lambda: read_ct(tmp_path), "slice_1.png", "slice_2.dcm", "mixes file formats")


@pytest.mark.bad_input
def test_several_dicom_series_are_listed(tmp_path):
    write_axial_series(tmp_path, constant_hu_slices([0, 0]), series_uid="1.2.840.1", description="AXIAL 5mm")
    write_axial_series(
        tmp_path, constant_hu_slices([0]), series_uid="1.2.840.2", description="SCOUT", name=lambda k: "x.dcm"
    )
    assert_data_error(
        lambda: read_ct(tmp_path), "2 dicom series", "1.2.840.1", "axial 5mm", "2 files", "1.2.840.2", "scout", "x.dcm"
    )


@pytest.mark.bad_input
def test_non_ct_modalities(tmp_path):
    write_dicom_slice(tmp_path / "mr.dcm", np.zeros((4, 4)), position=(0, 0, 0), series_uid="1.3", modality="MR")
    assert_data_error(lambda: read_ct(tmp_path / "mr.dcm"), "mr.dcm", "'MR'", "not CT")
    write_dicom_slice(tmp_path / "sr.dcm", None, position=None, series_uid="1.4", modality="SR", with_pixels=False)
    assert_data_error(lambda: read_ct(tmp_path / "sr.dcm"), "sr.dcm", "'SR'", "not CT")
    write_dicom_slice(tmp_path / "ct.dcm", None, position=None, series_uid="1.5", with_pixels=False)
    assert_data_error(lambda: read_ct(tmp_path / "ct.dcm"), "ct.dcm", "no pixel data")


@pytest.mark.bad_input
def test_duplicate_dicom_positions(tmp_path):
    write_axial_series(tmp_path, constant_hu_slices([0, 0, 0]), step=0.0)
    assert_data_error(lambda: read_ct(tmp_path), "s01.dcm", "s00.dcm", "duplicate")


@pytest.mark.bad_input
def test_invalid_reference_npz(tmp_path):
    np.savez(tmp_path / "objects.npz", data_test=np.array([{"a": 1}], dtype=object))
    assert_data_error(lambda: read_ct(tmp_path / "objects.npz"), "objects.npz", "pickle")
    np.savez(tmp_path / "keys.npz", images=np.zeros((1, 2, 2, 1)))
    assert_data_error(lambda: read_ct(tmp_path / "keys.npz"), "keys.npz", "unexpected arrays", "images")
    np.savez(tmp_path / "hu.npz", data_test=np.full((1, 2, 2, 1), -1000.0))
    assert_data_error(lambda: read_ct(tmp_path / "hu.npz"), "hu.npz", "outside [0, 1]")
    np.savez(tmp_path / "shape.npz", data_test=np.zeros((2, 2, 2)))
    assert_data_error(lambda: read_ct(tmp_path / "shape.npz"), "shape.npz", "(N, H, W, 1)")
    np.savez(tmp_path / "pair.npz", data_test=np.zeros((2, 4, 4, 1)), data_test_noisy=np.zeros((2, 4, 5, 1)))
    assert_data_error(lambda: read_ct(tmp_path / "pair.npz"), "pair.npz", "data_test_noisy", "(2, 4, 5, 1)")
    np.savez(tmp_path / "noisy_only.npz", data_test_noisy=np.zeros((2, 4, 4, 1)))
    assert_data_error(lambda: read_ct(tmp_path / "noisy_only.npz"), "noisy_only.npz", "no clean images")
    np.save(tmp_path / "array.npy", np.zeros(3))
    (tmp_path / "array.npy").rename(tmp_path / "array.npz")
    assert_data_error(lambda: read_ct(tmp_path / "array.npz"), "array.npz", "not an npz")


# --------------------------------------------------------------------------- property tests


def _seed_files():
    """Small valid files of each kind, as bytes, to mutate."""
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        write_png(folder / "a.png", np.arange(16 * 16, dtype=np.uint16).reshape(16, 16))
        write_dicom_slice(folder / "a.dcm", np.arange(64).reshape(8, 8) - 1000, position=(0, 0, 0), series_uid="1.2")
        write_nifti(folder / "a.nii.gz", np.arange(4 * 4 * 3, dtype=np.int16).reshape(4, 4, 3) - 1000)
        write_reference_npz(folder / "a.npz", data_test=np.linspace(0, 1, 2 * 4 * 4).reshape(2, 4, 4, 1))
        return {suffix: (folder / f"a{suffix}").read_bytes() for suffix in (".png", ".dcm", ".nii.gz", ".npz")}


SEED_FILES = _seed_files()
SUFFIXES = sorted(SEED_FILES)
QUICK = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def loads_or_raises_data_error(suffix, content):
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # decoders warn about the damage before failing
        path = Path(folder) / f"random{suffix}"
        path.write_bytes(content)
        try:
            volumes = read_ct(path)
        except DataError as error:
            assert "random" in str(error)
            return
        for volume in volumes:
            assert volume.array.dtype == np.float32 and volume.array.ndim == 3


@QUICK
@given(suffix=st.sampled_from(SUFFIXES), content=st.binary(max_size=600))
@pytest.mark.bad_input
def test_random_bytes_load_or_raise_data_error(suffix, content):
    loads_or_raises_data_error(suffix, content)


@QUICK
@given(
    suffix=st.sampled_from(SUFFIXES),
    cut=st.floats(0, 1),
    flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=4),
)
@pytest.mark.bad_input
def test_damaged_files_load_or_raise_data_error(suffix, cut, flips):
    content = bytearray(SEED_FILES[suffix])
    for where, value in flips:
        content[int(where * (len(content) - 1))] = value
    loads_or_raises_data_error(suffix, bytes(content[: max(1, int(cut * len(content)))] if cut < 1 else content))


@QUICK
@given(
    depth=st.integers(1, 3),
    dtype=st.sampled_from([np.uint8, np.uint16]),
    size=st.tuples(st.integers(1, 12), st.integers(1, 12)),
    data=st.data(),
)
def test_png_round_trip(depth, dtype, size, data):
    slices = data.draw(hnp.arrays(dtype, (depth,) + size))
    with tempfile.TemporaryDirectory() as folder:
        for index, pixels in enumerate(slices):
            write_png(Path(folder) / f"slice_{index}.png", pixels)
        (volume,) = read_ct(folder)
    assert volume.array.shape == slices.shape and volume.array.dtype == np.float32
    assert 0.0 <= volume.array.min() and volume.array.max() <= 1.0
    np.testing.assert_array_equal(volume.array, slices.astype(np.float32) / np.float32(np.iinfo(dtype).max))


@QUICK
@given(
    shape=st.one_of(
        st.tuples(st.integers(1, 4), st.integers(1, 8), st.integers(1, 8)),
        st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 8), st.integers(1, 8)),
    ),
    dtype=st.sampled_from([np.float16, np.float32, np.float64]),
    data=st.data(),
)
def test_npz_round_trip(shape, dtype, data):
    clean = data.draw(hnp.arrays(dtype, shape + (1,), elements=st.floats(0, 1, width=np.dtype(dtype).itemsize * 8)))
    with tempfile.TemporaryDirectory() as folder:
        path = write_reference_npz(Path(folder) / "set.npz", data_test=clean)
        volumes = read_ct(path)
    expected = clean[..., 0].astype(np.float32)
    if len(shape) == 3:
        assert [v.array.shape for v in volumes] == [shape] and volumes[0].contiguous is False
        np.testing.assert_array_equal(volumes[0].array, expected)
    else:
        assert [v.array.shape for v in volumes] == [shape[1:]] * shape[0]
        np.testing.assert_array_equal(np.stack([v.array for v in volumes]), expected)
    assert all(0.0 <= v.array.min() and v.array.max() <= 1.0 for v in volumes)


# --------------------------------------------------------------------------- every shared folder as published

COVID = "slices_covid19_nysbu_dicom"
KAGGLE = "slices_kaggle_tcia_nifti"
HEAD_TILT = "series_head_gantry_tilt_dicom"
STS = "volumes_sts_lowdose_dicom"

# folder: (number of volumes, total slices)
SHARED_FOLDER_COUNTS = {
    CRLM: (1, 41),
    LIDC: (1, 20),
    MSD_PNG: (1, 24),
    COVID: (62, 62),
    KAGGLE: (70, 70),
    HEAD_TILT: (1, 28),
    STS: (24, 1356),
}


def hu_from_nifti(path):
    """(1, H, W) HU of a single-slice NIfTI stored (X, Y, 1), straight from nibabel, padding to air."""
    import nibabel

    data = np.asarray(nibabel.load(path).get_fdata(), np.float64)
    return np.maximum(data.transpose(2, 1, 0), -1024)


def window(hu, hu_window=DEFAULT_HU_WINDOW):
    lo, hi = hu_window
    return np.clip((hu - lo) / (hi - lo), 0, 1)


@pytest.mark.parametrize("folder", sorted(SHARED_FOLDER_COUNTS))
def test_every_shared_folder_reads_with_its_counts(real_ct, folder):
    volumes = read_cached(str(real_ct / folder))
    n_volumes, n_slices = SHARED_FOLDER_COUNTS[folder]
    assert len(volumes) == n_volumes
    assert sum(v.array.shape[0] for v in volumes) == n_slices
    for volume in volumes:
        assert volume.array.dtype == np.float32 and 0.0 <= volume.array.min() and volume.array.max() <= 1.0


def test_covid19_one_slice_series_read_as_separate_2d_slices(real_ct):
    folder = real_ct / COVID
    volumes = read_cached(str(folder))
    files = sorted(folder.rglob("*.dcm"))
    assert sorted(Path(v.source) for v in volumes) == files  # one volume per file, each its own source
    assert all(v.array.shape[0] == 1 and v.n_files == 1 and v.format == "dicom" for v in volumes)
    sizes = {v.array.shape[1:] for v in volumes}
    assert {(512, 512), (568, 568), (616, 616)} <= sizes  # Toshiba reformats: cannot be stacked
    by_source = {Path(v.source): v for v in volumes}
    for name in ("A002304/axial/19001231-076.dcm", "A002304/axial/19010112-135.dcm",
                 "A067967/coronal/19001006-064.dcm", "A046441/sagittal/19010101-050.dcm"):
        volume = by_source[folder / name]
        expected = independent_window(folder / name)
        np.testing.assert_allclose(volume.array[0], expected, atol=1e-6)
        dataset = pydicom.dcmread(folder / name)
        assert volume.spacing[1:] == pytest.approx(tuple(float(s) for s in dataset.PixelSpacing))
    # the axial folder holds two series of one slice each: read as two volumes, not an error
    axial = read_ct(folder / "A002304" / "axial")
    assert [Path(v.source).name for v in axial] == ["19001231-076.dcm", "19010112-135.dcm"]


def test_kaggle_single_slice_nifti_hu_matches_nibabel(real_ct):
    folder = real_ct / KAGGLE
    volumes = read_cached(str(folder))
    assert all(v.array.shape == (1, 512, 512) and v.format == "nifti" for v in volumes)
    by_name = {Path(v.source).name: v for v in volumes}
    for name in ("ID_0000_AGE_0060_CONTRAST_1_CT.nii.gz", "ID_0098_AGE_0061_CONTRAST_0_CT.nii.gz"):
        hu = hu_from_nifti(folder / name)
        volume = by_name[name]
        np.testing.assert_allclose(volume.array, window(hu), atol=1e-6)
        assert volume.array[0, 256, 256] == pytest.approx(window(hu[0, 256, 256]), abs=1e-6)
    # the spacing is unknown; the header declares 1 mm, which is what is reported
    assert volumes[0].spacing == (1.0, 1.0, 1.0)


def test_head_gantry_tilt_ordered_along_the_tilted_normal(real_ct):
    folder = real_ct / HEAD_TILT
    (volume,) = read_cached(str(folder))
    assert volume.array.shape == (28, 512, 512) and volume.n_files == 28
    assert volume.contiguous is False  # steps of 4, 1.08 and 7 mm
    assert volume.spacing[1:] == pytest.approx((0.48828, 0.48828), abs=1e-4)
    assert volume.spacing[0] == pytest.approx(4.0, abs=0.01)  # median step along the normal
    headers = {f: pydicom.dcmread(f, stop_before_pixels=True) for f in folder.glob("*.dcm")}
    orientation = np.array(next(iter(headers.values())).ImageOrientationPatient, float)
    normal = np.cross(orientation[:3], orientation[3:])
    assert abs(normal[2]) < 0.96  # tilted: the normal is not the z axis
    ordered = sorted(headers, key=lambda f: float(np.dot(np.array(headers[f].ImagePositionPatient, float), normal)))
    steps = np.diff([float(np.dot(np.array(headers[f].ImagePositionPatient, float), normal)) for f in ordered])
    assert steps.min() == pytest.approx(1.08, abs=0.01) and steps.max() == pytest.approx(7.0, abs=0.01)
    for index in (0, 13, 14, 27):
        np.testing.assert_allclose(volume.array[index], independent_window(ordered[index]), atol=1e-6)


def test_sts_lowdose_volumes_are_contiguous_with_exact_hu(real_ct):
    folder = real_ct / STS
    volumes = read_cached(str(folder))
    assert [Path(v.source).parts[-3] for v in volumes] == sorted(p.name for p in folder.glob("STS_*"))
    assert all(v.contiguous and 47 <= v.array.shape[0] <= 70 for v in volumes)
    assert all(v.spacing == pytest.approx((3.27, 0.9766, 0.9766), abs=1e-3) for v in volumes)
    volume = volumes[0]
    files = sorted(Path(volume.source).glob("*.dcm"))
    z = [float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]) for f in files]
    lowest = files[int(np.argmin(z))]
    np.testing.assert_allclose(volume.array[0], independent_window(lowest), atol=1e-6)


# --------------------------------------------------------------------------- synthetic: one-slice series


def test_folder_of_one_slice_series_gives_one_2d_volume_each(tmp_path):
    sizes = {"b10.dcm": (4, 5), "b2.dcm": (6, 3), "c.dcm": (4, 5)}
    for index, (name, shape) in enumerate(sizes.items()):
        write_dicom_slice(
            tmp_path / name, np.full(shape, 100 * index - 500, np.int16), position=(0, 0, 7.0 * index),
            series_uid=f"1.2.826.{index}", thickness=2.5, pixel_spacing=(0.6, 0.9),
        )
    volumes = read_ct(tmp_path)
    assert [Path(v.source).name for v in volumes] == ["b2.dcm", "b10.dcm", "c.dcm"]  # natural name order
    assert [v.array.shape for v in volumes] == [(1, 6, 3), (1, 4, 5), (1, 4, 5)]  # not stacked
    assert all(v.n_files == 1 and v.contiguous and v.spacing == (2.5, 0.6, 0.9) for v in volumes)
    np.testing.assert_allclose(volumes[0].array, window(np.full((1, 6, 3), -400.0)), atol=1e-6)
    np.testing.assert_allclose(volumes[1].array, window(np.full((1, 4, 5), -500.0)), atol=1e-6)


def test_one_slice_reformats_and_patient_tree(tmp_path):
    patient = tmp_path / "P001"
    (patient / "axial").mkdir(parents=True)
    (patient / "coronal").mkdir()
    for k in range(2):
        write_dicom_slice(patient / "axial" / f"{k}.dcm", np.full((4, 4), k, np.int16), position=(0, 0, 10 * k),
                          series_uid=f"1.9.{k}")
        write_dicom_slice(patient / "coronal" / f"{k}.dcm", np.full((3, 5), 50 + k, np.int16), position=(0, 4 * k, 0),
                          series_uid=f"1.8.{k}", orientation=(1, 0, 0, 0, 0, -1))
    volumes = read_ct(tmp_path)
    assert [v.array.shape for v in volumes] == [(1, 4, 4)] * 2 + [(1, 3, 5)] * 2
    assert [Path(v.source).relative_to(tmp_path).as_posix() for v in volumes] == [
        "P001/axial/0.dcm", "P001/axial/1.dcm", "P001/coronal/0.dcm", "P001/coronal/1.dcm"
    ]


@pytest.mark.bad_input
def test_folder_mixing_multi_slice_series_stays_an_error(tmp_path):
    write_axial_series(tmp_path, constant_hu_slices([0, 0, 0]), series_uid="1.2.840.7", description="BODY 5mm")
    write_axial_series(
        tmp_path, constant_hu_slices([0, 0]), series_uid="1.2.840.8", description="LUNG 1mm", name=lambda k: f"l{k}.dcm"
    )
    error = assert_data_error(
        lambda: read_ct(tmp_path), "2 dicom series", "1.2.840.7", "3 files", "1.2.840.8", "2 files", "single slice"
    )
    assert str(tmp_path) in str(error)
    # one multi-slice series beside one-slice series: an error too
    write_dicom_slice(tmp_path / "key.dcm", np.zeros((4, 5)), position=(0, 0, 99), series_uid="1.2.840.9")
    assert_data_error(lambda: read_ct(tmp_path), "3 dicom series", "1.2.840.9", "key.dcm")
