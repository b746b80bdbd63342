"""Read a scan in its own units and write a denoised copy in the same (or another) format.

:func:`read_ct` gives the denoisers their windowed [0, 1] input; this module keeps what is needed to
give the result back: the scan's own values (HU for DICOM and NIfTI, modality LUT applied and nothing
clamped, so FOV padding such as -3024 HU survives; intensities in [0, 1] for PNG/TIFF/npz), and per
format the files, header and geometry to mirror.

Output formats (``write_scan``)
    dicom   one file per input slice, named as the input files, in a new folder. Every element of
            the input is kept (patient, study, geometry, rescale) except: new SeriesInstanceUID and
            SOPInstanceUIDs, ImageType DERIVED\\SECONDARY, a SeriesDescription naming the method,
            DerivationDescription, uncompressed little-endian pixel data stored with the input's
            RescaleSlope/Intercept and pixel representation. Only from a DICOM input.
    nifti   one ``.nii``/``.nii.gz`` file. From NIfTI: the input's shape, affine, orientation and
            header; int16 HU (slope 1, intercept 0) where the input stored integers, float32
            otherwise. From DICOM: int16 HU with the affine built from
            ImagePositionPatient/ImageOrientationPatient/PixelSpacing (DICOM LPS to NIfTI RAS).
            From 8/16-bit images: float32 intensities, unit spacing.
    png     8- or 16-bit greyscale slices at the input's bit depth; one file for one slice, else a
            folder of slices named as the input files (or ``slice_0000.png``...). HU inputs are
            written as 16-bit images of the HU window (lo -> 0, hi -> 65535).
    tiff    as png, one multi-page TIFF file (or a folder, for a folder of TIFF slices).
    npz     the reference repository's layout, ``data_test`` of shape (N, H, W, 1), float32 [0, 1].

Every writer writes into a temporary sibling and renames it at the end, so an output is complete or
absent; the input is only read.
"""

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path

import nibabel
import numpy as np
import pydicom
import tifffile
from PIL import Image
from pydicom.pixels import apply_modality_lut
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from utils.data import readers
from utils.base.atomic import atomic_path
from utils.base.errors import ConfigError, DataError

FORMATS = ("dicom", "nifti", "png", "tiff", "npz")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
_IMAGE_SUFFIXES = {"png": ".png", "tiff": ".tif"}


@dataclasses.dataclass
class Scan:
    """One scan as read, with what a writer needs to mirror it.

    values     float32 ``(D, H, W)``, axis order as :func:`utils.data.readers.read_ct`: HU (``is_hu``) with
               nothing clamped, or image intensities in [0, 1].
    model_input float32 ``(D, H, W)`` in [0, 1]: exactly what ``read_ct`` gives the denoisers.
    volume     the :class:`utils.data.readers.CTVolume` behind ``model_input`` (format, spacing, contiguity).
    bit_depth  8 or 16 for PNG/TIFF inputs, else None.
    nifti      the input ``nibabel`` image (header and affine) for NIfTI inputs, else None.
    """

    values: np.ndarray
    model_input: np.ndarray
    volume: readers.CTVolume
    bit_depth: int | None = None
    nifti: object = None

    format = property(lambda self: self.volume.format)
    source = property(lambda self: Path(self.volume.source))
    files = property(lambda self: list(self.volume.files))
    is_hu = property(lambda self: self.volume.hu_window is not None)
    hu_window = property(lambda self: self.volume.hu_window)


def read_scan(path, hu_window=readers.DEFAULT_HU_WINDOW):
    """Read one scan (a DICOM series folder or file, NIfTI, PNG/TIFF slice(s), or npz).

    Raises DataError naming the input when it holds no scan or several (denoise one at a time).
    """
    volumes = readers.read_ct(path, hu_window)
    if len(volumes) != 1:
        listed = ", ".join(Path(v.source).name for v in volumes[:4]) + (", ..." if len(volumes) > 4 else "")
        raise DataError(path, f"holds {len(volumes)} scans ({listed}); denoise one scan at a time")
    volume = volumes[0]
    if volume.format == "dicom":
        values = np.stack([_dicom_hu(f) for f in volume.files])
        return Scan(values, volume.array, volume)
    if volume.format == "nifti":
        image = nibabel.load(volume.files[0])
        data = np.asarray(image.get_fdata(dtype=np.float32))
        values = np.ascontiguousarray(_nifti_to_array(data, image))
        return Scan(values, volume.array, volume, nifti=image)
    if volume.format in ("png", "tiff"):
        return Scan(volume.array.copy(), volume.array, volume, bit_depth=_bit_depth(volume))
    return Scan(volume.array.copy(), volume.array, volume)


def default_output_format(scan):
    return scan.format


def check_output(scan, output, output_format):
    """Raise ConfigError when ``output`` cannot hold ``output_format`` written from ``scan``."""
    output = Path(output)
    if output_format not in FORMATS:
        raise ConfigError(f"unknown output format {output_format!r}; choose one of {', '.join(FORMATS)}")
    if output_format == "dicom" and scan.format != "dicom":
        raise ConfigError(
            f"DICOM output copies patient, study and geometry from a DICOM input, but {scan.source} is {scan.format}; "
            "choose --format nifti"
        )
    if output_format == "nifti" and not output.name.lower().endswith(NIFTI_SUFFIXES):
        raise ConfigError(f"a NIfTI output needs a .nii or .nii.gz name, got {output}")
    if output_format == "npz" and output.suffix.lower() != ".npz":
        raise ConfigError(f"an npz output needs a .npz name, got {output}")
    source = scan.source.resolve()
    target = output.absolute().resolve()
    if target == source or source in target.parents or target in source.parents or target in {f.resolve() for f in scan.files}:
        raise ConfigError(f"output {output} would overlap the input {scan.source}; the input is never modified")


def write_scan(scan, values, output, output_format, description):
    """Write ``values`` (float32 ``(D, H, W)`` in ``scan``'s units) to ``output`` as ``output_format``.

    ``description`` names the method (DICOM SeriesDescription, NIfTI descrip). Returns the paths written.
    """
    output = Path(output)
    check_output(scan, output, output_format)
    values = np.asarray(values, dtype=np.float32)
    if values.shape != scan.values.shape:
        raise ConfigError(f"denoised shape {values.shape} differs from the scan's {scan.values.shape}")
    if output_format == "dicom":
        return _write_dicom(scan, values, output, description)
    if output_format == "nifti":
        return _write_nifti(scan, values, output, description)
    if output_format == "npz":
        with atomic_path(output) as tmp:
            np.savez_compressed(tmp, data_test=to_window_scale(scan, values)[..., None])
        return [output]
    return _write_images(scan, values, output, output_format)


# --------------------------------------------------------------------------- reading helpers


def _dicom_hu(path):
    dataset = pydicom.dcmread(path)
    return np.asarray(apply_modality_lut(dataset.pixel_array, dataset), dtype=np.float32)


def _nifti_to_array(data, image):
    shape = data.shape
    if data.ndim == 4 and shape[3] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[..., None]
    return data.transpose(readers._nifti_axis_order(image.affine, data.shape))


def _array_to_nifti(array, image):
    stored = tuple(image.shape[:3]) + (1,) * (3 - len(image.shape[:3]))
    data = array.transpose(np.argsort(readers._nifti_axis_order(image.affine, stored)))
    return data.reshape(image.shape)


def _bit_depth(volume):
    first = Path(volume.files[0]) if volume.files else Path(volume.source)
    if volume.format == "png":
        with Image.open(first) as image:
            return 8 if image.mode in ("L", "LA", "P", "RGB", "RGBA") else 16
    with tifffile.TiffFile(first) as tif:
        return 8 * tif.series[0].dtype.itemsize


def to_window_scale(scan, values):
    """Values on the [0, 1] scale of the scan's window (HU inputs) or bit depth (images)."""
    if scan.is_hu:
        lo, hi = scan.hu_window
        return np.clip((values - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    return np.clip(values, 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------- folders


def _publish_folder(build, output):
    """Run ``build(tmp_folder)`` in a hidden sibling folder, then rename it onto ``output``."""
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent))
    try:
        written = build(tmp)
        if output.exists():
            # Callers have checked --overwrite; the old output goes only once the new one is complete.
            trash = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".old", dir=output.parent))
            os.replace(output, trash / output.name)
            os.replace(tmp, output)
            shutil.rmtree(trash)
        else:
            os.replace(tmp, output)
        return [output / Path(w).name for w in written]
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


# --------------------------------------------------------------------------- DICOM


def _write_dicom(scan, values, output, description):
    series_uid = generate_uid()

    def build(folder):
        written = []
        for index, (source, hu) in enumerate(zip(scan.files, values)):
            dataset = pydicom.dcmread(source)
            if dataset.file_meta.TransferSyntaxUID.is_compressed:
                dataset.decompress()
            _set_dicom_pixels(dataset, hu, source)
            _mark_derived(dataset, series_uid, description)
            name = Path(source).name or f"slice_{index:04d}.dcm"
            dataset.save_as(folder / name, enforce_file_format=True)
            written.append(folder / name)
        return written

    return _publish_folder(build, output)


def _set_dicom_pixels(dataset, hu, source):
    slope = float(dataset.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(dataset.get("RescaleIntercept", 0.0) or 0.0)
    dtype = dataset.pixel_array.dtype
    info = np.iinfo(dtype)
    stored = np.rint((hu.astype(np.float64) - intercept) / slope)
    bits_stored = int(dataset.get("BitsStored", 8 * dtype.itemsize))
    low = -(2 ** (bits_stored - 1)) if info.min < 0 else 0
    high = 2 ** (bits_stored - 1) - 1 if info.min < 0 else 2**bits_stored - 1
    stored = np.clip(stored, max(low, info.min), min(high, info.max)).astype(dtype)
    dataset.PixelData = stored.tobytes()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if "SmallestImagePixelValue" in dataset:
        del dataset.SmallestImagePixelValue
    if "LargestImagePixelValue" in dataset:
        del dataset.LargestImagePixelValue


def _mark_derived(dataset, series_uid, description):
    dataset.SeriesInstanceUID = series_uid
    dataset.SOPInstanceUID = generate_uid()
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    image_type = list(dataset.get("ImageType", ["ORIGINAL", "PRIMARY", "AXIAL"]))
    dataset.ImageType = ["DERIVED", "SECONDARY"] + [str(v) for v in image_type[2:]]
    original = str(dataset.get("SeriesDescription", "")).strip()
    dataset.SeriesDescription = (f"{original} " if original else "")[: 64 - len(description) - 1].rstrip() + " " + description
    dataset.SeriesDescription = dataset.SeriesDescription.strip()[:64]
    dataset.DerivationDescription = f"denoised by ctden: {description}"[:1024]
    if "SeriesNumber" in dataset and str(dataset.SeriesNumber).strip():
        dataset.SeriesNumber = int(dataset.SeriesNumber) + 1000


# --------------------------------------------------------------------------- NIfTI


def _write_nifti(scan, values, output, description):
    if scan.format == "nifti":
        image = scan.nifti
        integer = np.issubdtype(image.get_data_dtype(), np.integer)
        data = _array_to_nifti(values, image)
        header, affine = image.header.copy(), image.affine
    else:
        integer = scan.is_hu
        data = values.transpose(2, 1, 0)  # (slice, row, column) -> NIfTI (i, j, k)
        header, affine = None, _dicom_affine(scan) if scan.format == "dicom" else np.eye(4)
    out = nibabel.Nifti1Image(_nifti_values(data, integer), affine, header=header)
    out.set_data_dtype(np.int16 if integer else np.float32)
    out.header.set_slope_inter(1.0, 0.0)
    out.header["descrip"] = description.encode()[:79]
    with atomic_path(output) as tmp:
        nibabel.save(out, tmp)
    return [output]


def _nifti_values(data, integer):
    if not integer:
        return data.astype(np.float32)
    info = np.iinfo(np.int16)
    return np.clip(np.rint(data), info.min, info.max).astype(np.int16)


def _dicom_affine(scan):
    """NIfTI (RAS) affine of a DICOM series whose array axes are (slice, row, column)."""
    first = pydicom.dcmread(scan.files[0], stop_before_pixels=True)
    orientation = np.asarray(first.get("ImageOrientationPatient", [1, 0, 0, 0, 1, 0]), dtype=float)
    spacing = np.asarray(first.get("PixelSpacing", [1.0, 1.0]), dtype=float)
    origin = np.asarray(first.get("ImagePositionPatient", [0.0, 0.0, 0.0]), dtype=float)
    if len(scan.files) > 1:
        last = pydicom.dcmread(scan.files[-1], stop_before_pixels=True)
        step = (np.asarray(last.get("ImagePositionPatient", origin), dtype=float) - origin) / (len(scan.files) - 1)
    else:
        thickness = float(first.get("SliceThickness", 1.0) or 1.0)
        step = np.cross(orientation[:3], orientation[3:]) * thickness
    if not np.linalg.norm(step) > 0:
        step = np.cross(orientation[:3], orientation[3:])
    affine = np.eye(4)
    # NIfTI voxel (i, j, k) = (column, row, slice); DICOM row direction moves along the columns.
    affine[:3, 0] = orientation[:3] * spacing[1]
    affine[:3, 1] = orientation[3:] * spacing[0]
    affine[:3, 2] = step
    affine[:3, 3] = origin
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine  # LPS -> RAS


# --------------------------------------------------------------------------- PNG / TIFF


def _write_images(scan, values, output, output_format):
    bits = scan.bit_depth if scan.bit_depth in (8, 16) and not scan.is_hu else 16
    scale = 255.0 if bits == 8 else 65535.0
    pixels = np.rint(to_window_scale(scan, values) * scale).astype(np.uint8 if bits == 8 else np.uint16)
    one_file = len(pixels) == 1 or (output_format == "tiff" and not (scan.format == "tiff" and len(scan.files) > 1))
    if one_file:
        with atomic_path(output) as tmp:
            if output_format == "png":
                Image.fromarray(pixels[0]).save(tmp, format="PNG")
            else:
                tifffile.imwrite(tmp, pixels if len(pixels) > 1 else pixels[0])
        return [output]
    suffix = _IMAGE_SUFFIXES[output_format]
    same_kind = scan.format == output_format and len(scan.files) == len(pixels)
    names = [Path(f).name for f in scan.files] if same_kind else [f"slice_{i:04d}{suffix}" for i in range(len(pixels))]

    def build(folder):
        for name, page in zip(names, pixels):
            if output_format == "png":
                Image.fromarray(page).save(folder / name, format="PNG")
            else:
                tifffile.imwrite(folder / name, page)
        return [folder / n for n in names]

    return _publish_folder(build, output)
