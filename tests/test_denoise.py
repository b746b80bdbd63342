"""Denoise_CT.py and the modules behind it: scans in and out in HU, noise estimate, tiles, locks."""

import json
import subprocess
import sys
import time

import nibabel
import numpy as np
import pydicom
import pytest
from PIL import Image

from benchmarks.denoise import CASES
from models import build_model, predict, save_model
from models.inference import auto_tiling
from tests.conftest import REPO
from tests.ct_files import write_axial_series, write_dicom_slice, write_nifti, write_png
from tests.scripts import run_script
from utils.application import denoising
from utils.base import locks
from utils.data import scans
from utils.base.errors import ConfigError, ModelFileError, RunDirectoryError
from utils.data.noise_level import estimate_scan_sigma
from utils.data.phantom import make_phantom
from utils.data.readers import read_ct, window_hu

WINDOW = (-1000.0, 400.0)
PATIENT = {"PatientID": "TEST-0042", "PatientName": "Test^Patient", "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.1"}


def tiny_model(path, ndim=2, noise=0.05):
    """A small untrained model saved as a shipped one would be (its output is still a non-trivial function)."""
    model = build_model("convnet" if ndim == 2 else "unet", ndim=ndim, filters=4, **({} if ndim == 2 else {"depth": 1}))
    save_model(model, path, {"model": "convnet" if ndim == 2 else "unet", "ndim": ndim, "noise": noise})
    return path


def body_hu(shape, rng):
    """HU slices with soft tissue, bone above the window and FOV padding below it."""
    depth, height, width = shape
    hu = np.full(shape, 40.0) + 60.0 * rng.standard_normal(shape)
    hu[:, : height // 4, :] = -1000.0 + 30 * rng.standard_normal((depth, height // 4, width))
    hu[:, height // 2 : height // 2 + 4, width // 2 : width // 2 + 4] = 1500.0  # bone, above the window
    hu[:, -3:, :] = -3024.0  # outside the field of view
    return np.rint(hu)


@pytest.fixture
def dicom_series(tmp_path, rng):
    hu = body_hu((4, 32, 40), rng)
    folder = write_axial_series(
        tmp_path / "series",
        list(hu),
        z0=-50.0,
        step=2.5,
        thickness=2.5,
        orientation=(1, 0, 0, 0, 1, 0),
        pixel_spacing=(0.7, 0.8),
        extra=PATIENT,
    )
    return folder, hu


def expected_hu(scan, model_path):
    """What the documented rule gives: prediction in HU inside the window, input beyond the margin."""
    from models import load_model

    model, _ = load_model(model_path)
    prediction = predict(model, scan.model_input, progress=False)
    return WINDOW[0] + prediction * (WINDOW[1] - WINDOW[0])


# --------------------------------------------------------------------------- round trips


def test_dicom_to_dicom_keeps_patient_geometry_and_hu_outside_the_window(tmp_path, dicom_series):
    folder, hu = dicom_series
    model_path = tiny_model(tmp_path / "m2d.keras")
    scan = scans.read_scan(folder)
    method = denoising.make_method("model", model_path, scan, 0.05)
    result = denoising.merge_into_scan(scan, method.run(scan.model_input), 0.05)
    written = scans.write_scan(scan, result, tmp_path / "out", "dicom", method.description)
    assert len(written) == 4 and sorted(p.name for p in written) == sorted(p.name for p in folder.iterdir())

    inputs = {pydicom.dcmread(f).InstanceNumber: pydicom.dcmread(f) for f in folder.iterdir()}
    outputs = {pydicom.dcmread(f).InstanceNumber: pydicom.dcmread(f) for f in written}
    series_uids = {o.SeriesInstanceUID for o in outputs.values()}
    assert len(series_uids) == 1 and series_uids.isdisjoint({i.SeriesInstanceUID for i in inputs.values()})
    assert len({o.SOPInstanceUID for o in outputs.values()} | {i.SOPInstanceUID for i in inputs.values()}) == 8
    for number, out in outputs.items():
        source = inputs[number]
        for keyword in ("PatientID", "PatientName", "StudyInstanceUID", "ImagePositionPatient", "ImageOrientationPatient",
                        "PixelSpacing", "SliceThickness", "RescaleSlope", "RescaleIntercept", "Rows", "Columns"):
            assert out.get(keyword) == source.get(keyword), keyword
        assert out.ImageType[0] == "DERIVED" and "convnet" in out.SeriesDescription
        assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID

    # Read back in slice order: inside the window the prediction (stored as integers), outside the input HU.
    back = np.stack([np.asarray(pydicom.pixels.apply_modality_lut(outputs[k + 1].pixel_array, outputs[k + 1])) for k in range(4)])
    inside = (hu >= WINDOW[0]) & (hu <= WINDOW[1])
    np.testing.assert_allclose(back[inside], expected_hu(scan, model_path)[inside], atol=0.5 + 1e-3)
    far = (hu < WINDOW[0] - 3 * 0.05 * 1400) | (hu > WINDOW[1] + 3 * 0.05 * 1400)
    assert far.any() and np.array_equal(back[far], hu[far])
    assert (back == -3024).sum() == (hu == -3024).sum() and (back == 1500).sum() == (hu == 1500).sum()
    assert read_ct(tmp_path / "out")[0].array.shape == (4, 32, 40)


def test_dicom_to_nifti_has_the_dicom_geometry(tmp_path, dicom_series):
    folder, hu = dicom_series
    scan = scans.read_scan(folder)
    scans.write_scan(scan, scan.values, tmp_path / "out.nii.gz", "nifti", "copy")
    image = nibabel.load(tmp_path / "out.nii.gz")
    assert image.get_data_dtype() == np.int16 and image.shape == (40, 32, 4)
    # Voxel (i=column, j=row, k=slice) -> RAS: x = -(0.8 i), y = -(0.7 j), z = -50 + 2.5 k.
    np.testing.assert_allclose(image.affine @ [2, 3, 1, 1], [-1.6, -2.1, -47.5, 1], atol=1e-6)
    back = read_ct(tmp_path / "out.nii.gz", WINDOW)[0]
    np.testing.assert_allclose(back.array, scan.model_input, atol=1e-6)
    assert back.spacing == pytest.approx((2.5, 0.7, 0.8))


@pytest.mark.parametrize("plane", ["coronal", "sagittal"])
def test_a_single_reformatted_slice_stays_one_slice_through_nifti(tmp_path, rng, plane):
    # A coronal or sagittal DICOM slice is (1, rows, columns); written as NIfTI in its patient geometry
    # and read back, it must still be one slice of the same pixels (not rows slices of 1 x columns).
    orientation = {"coronal": (1, 0, 0, 0, 0, -1), "sagittal": (0, 1, 0, 0, 0, -1)}[plane]
    hu = body_hu((1, 20, 26), rng)[0].astype(np.int16)
    source = tmp_path / f"{plane}.dcm"
    write_dicom_slice(source, hu, position=(-10.0, 5.0, 40.0), series_uid="1.2.3.4", orientation=orientation)
    scan = scans.read_scan(source)
    assert scan.values.shape == (1, 20, 26)
    scans.write_scan(scan, scan.values, tmp_path / "out.nii.gz", "nifti", "copy")
    back = scans.read_scan(tmp_path / "out.nii.gz")
    assert back.values.shape == (1, 20, 26) and np.array_equal(back.values, scan.values)
    assert back.volume.spacing == pytest.approx(scan.volume.spacing)
    scans.write_scan(back, back.values + 1, tmp_path / "again.nii.gz", "nifti", "plus one")  # NIfTI in, NIfTI out
    assert np.array_equal(scans.read_scan(tmp_path / "again.nii.gz").values, scan.values + 1)


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_nifti_to_nifti_keeps_shape_affine_and_type(tmp_path, rng, dtype):
    hu = body_hu((5, 24, 28), rng).astype(dtype)
    data = hu.transpose(2, 1, 0)[::-1]  # stored (x, y, z) with the x axis flipped
    affine = np.array([[-0.9, 0, 0, 30.0], [0, 0.9, 0, -12.0], [0, 0, 3.0, 100.0], [0, 0, 0, 1]])
    source = write_nifti(tmp_path / "in.nii.gz", data, zooms=(0.9, 0.9, 3.0), affine=affine)
    model_path = tiny_model(tmp_path / "m2d.keras")
    scan = scans.read_scan(source)
    method = denoising.make_method("model", model_path, scan, 0.05)
    result = denoising.merge_into_scan(scan, method.run(scan.model_input), 0.05)
    scans.write_scan(scan, result, tmp_path / "out.nii.gz", "nifti", method.description)
    image = nibabel.load(tmp_path / "out.nii.gz")
    assert image.shape == data.shape and np.allclose(image.affine, affine)
    assert image.get_data_dtype() == (np.int16 if dtype == np.int16 else np.float32)
    out = scans.read_scan(tmp_path / "out.nii.gz").values
    inside = (scan.values >= WINDOW[0]) & (scan.values <= WINDOW[1])
    tolerance = 0.5 + 1e-3 if dtype == np.int16 else 1e-3
    np.testing.assert_allclose(out[inside], expected_hu(scan, model_path)[inside], atol=tolerance)
    assert np.array_equal(out[scan.values == -3024], scan.values[scan.values == -3024])


def test_png_in_png_out_at_the_input_bit_depth(tmp_path, rng):
    pixels = (rng.random((30, 36)) * 200 + 20).astype(np.uint8)
    source = write_png(tmp_path / "slice.png", pixels)
    scan = scans.read_scan(source)
    assert scan.bit_depth == 8 and not scan.is_hu
    denoised = np.clip(scan.model_input * 0.5 + 0.25, 0, 1)
    scans.write_scan(scan, denoising.merge_into_scan(scan, denoised, 0.05), tmp_path / "out.png", "png", "test")
    with Image.open(tmp_path / "out.png") as image:
        assert image.mode == "L" and image.size == (36, 30)
        np.testing.assert_array_equal(np.asarray(image), np.rint(denoised[0] * 255).astype(np.uint8))


def test_output_format_and_overlap_are_checked(tmp_path, rng):
    source = write_png(tmp_path / "in" / "slice.png", (rng.random((8, 8)) * 255).astype(np.uint8))
    scan = scans.read_scan(source)
    with pytest.raises(ConfigError, match="DICOM output copies"):
        scans.check_output(scan, tmp_path / "out", "dicom")
    with pytest.raises(ConfigError, match=".nii"):
        scans.check_output(scan, tmp_path / "out.png", "nifti")
    with pytest.raises(ConfigError, match="overlap the input"):
        scans.check_output(scan, source, "png")


def test_a_3d_model_or_a_prior_model_on_separate_slices_is_refused(tmp_path, rng):
    source = write_png(tmp_path / "slice.png", (rng.random((16, 16)) * 255).astype(np.uint8))
    model_path = tiny_model(tmp_path / "m3d.keras", ndim=3)
    with pytest.raises(ModelFileError, match="3D model"):
        denoising.make_method("model", model_path, scans.read_scan(source), 0.05)
    prior_model = build_model("resprunet", ndim=2, filters=4, depth=1)
    save_model(prior_model, tmp_path / "rpr.keras", {"model": "resprunet", "ndim": 2, "noise": 0.05})
    with pytest.raises(ModelFileError, match="neighbouring slices"):
        denoising.make_method("model", tmp_path / "rpr.keras", scans.read_scan(source), 0.05)


def test_default_model_fits_the_input_and_its_noise(tmp_path, dicom_series, rng):
    folder, _ = dicom_series
    models = tmp_path / "models"
    for noise in (0.02, 0.05):
        tiny_model(models / f"convnet2d_noise{noise}.keras", noise=noise)
    tiny_model(models / "unet3d_noise0.05.keras", ndim=3)
    volume = scans.read_scan(folder)
    assert denoising.choose_model(volume, 0.018, models).name == "convnet2d_noise0.02.keras"  # noise first
    assert denoising.choose_model(volume, 0.07, models).name == "unet3d_noise0.05.keras"  # then PREFERENCE
    one_slice = scans.read_scan(write_png(tmp_path / "slice.png", (rng.random((16, 16)) * 255).astype(np.uint8)))
    assert denoising.choose_model(one_slice, 0.07, models).name == "convnet2d_noise0.05.keras"  # no 3D model on slices


# --------------------------------------------------------------------------- noise estimate and tiles


@pytest.mark.parametrize("sigma", [0.02, 0.05, 0.10])
def test_noise_estimate_inside_the_body(rng, sigma):
    clean = window_hu(make_phantom(3, shape=(8, 128, 128)), WINDOW)
    noisy = clean + sigma * rng.standard_normal(clean.shape).astype(np.float32)
    assert estimate_scan_sigma(noisy) == pytest.approx(sigma, rel=0.1)


def test_noise_estimate_on_real_ct(real_ct, rng):
    clean = read_ct(real_ct / "series_crlm_abdomen_dicom")[0].array
    for sigma in (0.02, 0.05, 0.10):
        noisy = clean + sigma * rng.standard_normal(clean.shape).astype(np.float32)
        assert estimate_scan_sigma(noisy) == pytest.approx(sigma, rel=0.1)


def test_automatic_tiles_fit_deep_3d_models_and_match_untiled_output():
    # The demos' fixed 64-slice tile failed on deeper volumes for depth-3 models (overlap 128).
    deep = build_model("unet", ndim=3, filters=2, depth=3)
    tile, overlap = auto_tiling(deep, (300, 512, 512))
    assert tile is not None and all(t >= 3 * overlap for t in tile)
    assert auto_tiling(deep, (8, 32, 32))[0] is None  # small volumes go whole
    import keras

    keras.utils.set_random_seed(0)  # the bound below is for these weights, not any random draw
    model = build_model("unet", ndim=3, filters=2, depth=2, residual=True)
    volume = np.random.default_rng(0).random((160, 24, 24)).astype(np.float32)
    tile, overlap = auto_tiling(model, volume.shape, memory_bytes=1e6)
    assert tile is not None and overlap < tile[0] < 160 and tile[1:] == (24, 24)  # only the long axis is cut
    from models.inference import _plan_tiles, model_info

    # The budget must be what predict uses: patch it through the module constant.
    import models.inference as inference

    budget = inference.AUTO_TILE_BUDGET_BYTES
    inference.AUTO_TILE_BUDGET_BYTES = 1e6
    try:
        tiled = predict(model, volume, tile_shape="auto", progress=False)
    finally:
        inference.AUTO_TILE_BUDGET_BYTES = budget
    whole = predict(model, volume, progress=False)
    assert len(_plan_tiles(volume.shape, model_info(model), tile, overlap, warn=False)[0].starts) > 1
    # Far below the lowest noise level (0.02 on the [0, 1] scale), even for random weights on random input.
    assert np.abs(tiled - whole).max() < 0.5 * 0.02 and np.abs(tiled - whole).mean() < 0.01 * 0.02


# --------------------------------------------------------------------------- locks


def hold_lock(path, seconds=60):
    code = f"import time; from utils import locks; locks.acquire({str(path)!r}); print('held', flush=True); time.sleep({seconds})"
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_folder_in_use_is_refused_and_a_dead_holder_does_not_block(tmp_path):
    target = tmp_path / "run"
    holder = hold_lock(target)
    try:
        with pytest.raises(RunDirectoryError, match=f"in use by another process \\(PID {holder.pid}"):
            locks.acquire(target)
    finally:
        holder.kill()
        holder.wait()
    with locks.locked(target):  # the kernel dropped the killed holder's lock
        pass


@pytest.mark.e2e
def test_a_second_training_on_a_run_folder_in_use_is_refused(tmp_path):
    run = tmp_path / "run"
    holder = hold_lock(run)
    try:
        started = time.perf_counter()
        result = run_script("Train_model_denoising2D.py", "--quick", "--out", run, check=False)
        assert result.returncode != 0 and "in use by another process" in result.stderr and str(run) in result.stderr
        assert time.perf_counter() - started < 60 and not run.exists()
    finally:
        holder.kill()
        holder.wait()


# --------------------------------------------------------------------------- the script


@pytest.mark.e2e
def test_script_writes_the_scan_the_figure_and_a_json_report(tmp_path, dicom_series):
    folder, _ = dicom_series
    model_path = tiny_model(tmp_path / "m2d.keras")
    out = tmp_path / "denoised"
    result = run_script("Denoise_CT.py", folder, "--out", out, "--model", model_path)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("input", "output", "format", "method", "model", "noise_sigma", "noise_estimated", "hu_window", "shape", "seconds"):
        assert key in report, key
    assert report["format"] == "dicom" and report["noise_estimated"] is True and report["shape"] == [4, 32, 40]
    assert len(list(out.iterdir())) == 4 and (tmp_path / "denoised.png").is_file()
    # No second write over it without --overwrite; with it, a complete new output.
    again = run_script("Denoise_CT.py", folder, "--out", out, "--model", model_path, check=False)
    assert again.returncode == 1 and "--overwrite" in again.stderr
    run_script("Denoise_CT.py", folder, "--out", out, "--model", model_path, "--noise", "0.03", "--overwrite", "--no-figure")
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in folder.iterdir())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".denoised.") and not p.name.endswith(".lock")]


@pytest.mark.bad_input
@pytest.mark.parametrize("case", ["empty folder", "truncated file", "3d model on a slice"])
@pytest.mark.e2e
def test_bad_input_leaves_no_output(tmp_path, rng, case):
    args = []
    if case == "empty folder":
        source = tmp_path / "empty"
        source.mkdir()
    elif case == "truncated file":
        full = write_nifti(tmp_path / "full.nii", body_hu((3, 16, 16), rng).astype(np.int16))
        source = tmp_path / "truncated.nii"
        source.write_bytes(full.read_bytes()[:600])
    else:
        source = write_png(tmp_path / "slice.png", (rng.random((16, 16)) * 255).astype(np.uint8))
        args = ["--model", tiny_model(tmp_path / "m3d.keras", ndim=3)]
    out = tmp_path / "out.nii.gz"
    result = run_script("Denoise_CT.py", source, "--out", out, "--format", "nifti", *args, check=False)
    assert result.returncode == 1 and "error: " in result.stderr
    assert source.name in result.stderr[result.stderr.rindex("error: ") :]  # the message names the input
    assert not out.exists() and not (tmp_path / "out.nii.gz.png").exists()


def test_real_dicom_series_round_trip_with_the_shipped_model(tmp_path, real_ct):
    source = real_ct / "series_crlm_abdomen_dicom"
    scan = scans.read_scan(source)
    sigma = estimate_scan_sigma(scan.model_input)
    method = denoising.make_method("model", None, scan, sigma)
    result = denoising.merge_into_scan(scan, method.run(scan.model_input), sigma)
    written = scans.write_scan(scan, result, tmp_path / "out", "dicom", method.description)
    assert len(written) == 41
    back = scans.read_scan(tmp_path / "out")
    assert back.values.shape == scan.values.shape and back.volume.spacing == pytest.approx(scan.volume.spacing)
    padding = scan.values < -1100
    assert padding.any() and np.array_equal(back.values[padding], scan.values[padding])
    first_in, first_out = pydicom.dcmread(scan.files[0]), pydicom.dcmread(back.files[0])
    assert first_out.PatientID == first_in.PatientID and first_out.SeriesInstanceUID != first_in.SeriesInstanceUID


@pytest.mark.e2e
def test_denoise_benchmark_quick_run_writes_its_table(tmp_path):
    stem = tmp_path / "RESULTS_denoise"
    result = subprocess.run([sys.executable, "-m", "benchmarks.denoise", "--quick", "--out", str(stem)], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads(stem.with_suffix(".json").read_text())
    assert [case["method"] for case in record["cases"]] == [label for label, _ in CASES]
    assert all(case["seconds"] > 0 and case["peak_memory_gb"] > 0 for case in record["cases"])
    assert record["cases"][-1]["extrapolated"] and "crop" in stem.with_suffix(".md").read_text()


def test_tiff_in_tiff_out_at_16_bits(tmp_path, rng):
    import tifffile

    pages = (rng.random((3, 20, 24)) * 60000).astype(np.uint16)
    tifffile.imwrite(tmp_path / "stack.tif", pages)
    scan = scans.read_scan(tmp_path / "stack.tif")
    assert scan.bit_depth == 16 and scan.values.shape == (3, 20, 24)
    scans.write_scan(scan, scan.values, tmp_path / "out.tif", "tiff", "copy")
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out.tif"), pages)


def test_a_reference_h5_model_denoises_a_scan(tmp_path, seed_models, dicom_series):
    folder, _ = dicom_series
    scan = scans.read_scan(folder)
    method = denoising.make_method("model", seed_models / "kits19_200subj_data2k_UNet_32_noisepc5_model_best.h5", scan, 0.05)
    denoised = method.run(scan.model_input)
    assert denoised.shape == scan.model_input.shape and np.isfinite(denoised).all()
    assert method.model_path.endswith(".h5")


@pytest.mark.parametrize("sigma", [0.01, 0.03, 0.07, 0.12])
def test_the_shipped_blind_model_denoises_every_level_of_its_range(rng, sigma):
    from models import load_model
    from utils.data.metrics import psnr

    model, config = load_model(REPO / "trained_models" / "unet2d_blind.keras")
    low, high = config["noise_range"]
    assert low <= sigma <= high
    clean = window_hu(make_phantom(5, shape=(2, 128, 128)), WINDOW)
    noisy = clean + sigma * rng.standard_normal(clean.shape).astype(np.float32)
    denoised = predict(model, noisy, progress=False)
    assert psnr(clean, denoised) > psnr(clean, noisy) + 3.0  # one blind model, a clear gain at every level
