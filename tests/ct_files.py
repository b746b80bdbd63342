"""Writers of small CT files (DICOM, NIfTI, PNG, reference npz) for tests of every entry point."""

import nibabel
import numpy as np
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid


def write_dicom_slice(
    path,
    hu,
    *,
    position,
    series_uid,
    instance=1,
    orientation=(1, 0, 0, 0, 1, 0),
    modality="CT",
    thickness=1.0,
    pixel_spacing=(0.5, 0.7),
    intercept=-1024,
    padding_value=None,
    description="synthetic",
    with_pixels=True,
    extra=None,
):
    """One CT slice stored as signed 16-bit raw = HU - intercept (slope 1); ``extra``: more elements by keyword."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    dataset.SOPClassUID = CTImageStorage
    dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    dataset.Modality = modality
    dataset.SeriesInstanceUID = series_uid
    dataset.SeriesDescription = description
    dataset.InstanceNumber = instance
    if position is not None:
        dataset.ImagePositionPatient = [float(v) for v in position]
    dataset.ImageOrientationPatient = [float(v) for v in orientation]
    dataset.PixelSpacing = list(pixel_spacing)
    dataset.SliceThickness = thickness
    dataset.RescaleSlope = 1
    dataset.RescaleIntercept = intercept
    for keyword, value in (extra or {}).items():
        setattr(dataset, keyword, value)
    if with_pixels:
        raw = (np.asarray(hu) - intercept).astype(np.int16)
        dataset.Rows, dataset.Columns = raw.shape
        dataset.SamplesPerPixel = 1
        dataset.PhotometricInterpretation = "MONOCHROME2"
        dataset.BitsAllocated = 16
        dataset.BitsStored = 16
        dataset.HighBit = 15
        dataset.PixelRepresentation = 1
        if padding_value is not None:
            dataset.PixelPaddingValue = padding_value
        dataset.PixelData = raw.tobytes()
    dataset.save_as(path, enforce_file_format=True)
    return path


def write_axial_series(folder, hu_slices, *, z0=0.0, step=2.0, thickness=2.0, name=lambda k: f"s{k:02d}.dcm", **kw):
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = kw.pop("series_uid", generate_uid())
    for k, hu in enumerate(hu_slices):
        write_dicom_slice(
            folder / name(k), hu, position=(0, 0, z0 + k * step), series_uid=series_uid, instance=k + 1,
            thickness=thickness, **kw,
        )
    return folder


def write_nifti(path, data, zooms=(1.0, 1.0, 1.0), affine=None):
    if affine is None:
        affine = np.diag(list(zooms) + [1.0])
    image = nibabel.Nifti1Image(np.asarray(data), affine)
    image.header.set_zooms(zooms)
    nibabel.save(image, path)
    return path


def write_png(path, pixels):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(pixels)).save(path)
    return path


def write_reference_npz(path, **arrays):
    np.savez(path, **arrays)
    return path
