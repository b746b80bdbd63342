"""Read CT from PNG/TIFF slice folders, the reference repository's npz, NIfTI and DICOM.

``read_ct(path, hu_window)`` returns a list of :class:`CTVolume`, each a float32 array
``(D, H, W)`` in [0, 1] with its provenance (source, format, spacing, window, contiguity).

Conventions
-----------
Axis order
    Axis 0 is the slice axis, axis 1 the image rows, axis 2 the image columns.
    * DICOM: slices are sorted by their position along the slice normal,
      ``dot(ImagePositionPatient, row_direction x column_direction)`` with the directions
      from ImageOrientationPatient, ascending (for an axial scan of a supine patient:
      slice 0 is the most inferior). File names are never used for ordering. Only when a
      file lacks ImagePositionPatient are the slices ordered by InstanceNumber.
    * NIfTI: the voxel axes are permuted, never flipped, so that axis 0 is the voxel axis
      closest to the scanner's z (superior-inferior) axis, axis 1 to y (anterior-posterior)
      and axis 2 to x (right-left), from the affine (``nibabel.io_orientation``). For the
      usual ``(X, Y, Z)`` storage this is ``transpose(2, 1, 0)``; for kits19, stored
      ``(Z, Y, X)``, the order is kept. When the affine gives no orientation (all zero),
      ``transpose(2, 1, 0)`` is used. A single slice (one voxel axis of length 1) keeps that
      axis first whatever plane it lies in, so a coronal or sagittal slice reads as ``(1, H, W)``
      like an axial one. Because nothing is flipped, an image may look mirrored
      relative to the radiological display convention; denoising does not care.
    * PNG/TIFF folders: slices in natural order of the numbers in their names
      (``z2`` before ``z10``).

Intensities
    HU data (DICOM, NIfTI) are windowed by :func:`window_hu`::

        x = clip((HU - lo) / (hi - lo), 0, 1)      # float32, default (lo, hi) = (-1000, 400)

    Before windowing, everything below air is set to air, ``HU < -1024 -> -1024``, and in
    DICOM so is every pixel whose stored value is PixelPaddingValue (up to
    PixelPaddingRangeLimit when present). Scanners mark the area outside the circular field
    of view with such values (-3024 HU is common); with a window reaching below -1024 it
    would otherwise show up as a dark artefact rather than as air.
    DICOM values are converted to HU by the modality LUT (RescaleSlope, RescaleIntercept).
    NIfTI values are taken as HU after the header's scl_slope/scl_inter.
    Images that carry no HU: 8-bit PNG/TIFF are divided by 255, 16-bit (unsigned) by 65535,
    so the full range of the container maps to [0, 1] and no information about the
    exporter's window is invented (a 12-bit scan stored in 16 bits lands in [0, 1/16]);
    ``hu_window`` is then None. The reference npz arrays are already in [0, 1] and are
    kept as they are.

Folders
    A folder's own CT files form its volume(s): numbered PNG/TIFF slices -> one volume, a
    DICOM series -> one volume, each NIfTI or npz file -> its own volume(s). Sub-folders
    are then read the same way, in natural order of their names, down to
    ``MAX_FOLDER_DEPTH`` levels, so that ``Data/Train/<subject>/*.png`` gives one volume per
    subject folder and ``kits19/case_XXXXX/imaging.nii.gz`` one volume per case. Sub-folders
    without CT files are skipped; the whole path must yield at least one volume.
    Special cases:
    * a folder whose DICOM files belong to several series, each series holding exactly one
      slice (key images; one slice exported from each of several studies, e.g. the
      COVID-19-NY-SBU sample's ``<patient>/axial/``), gives one single-slice volume per
      series, ``(1, H, W)`` with ``source`` the slice's file, in natural file-name order.
      They are not stacked: they are unrelated and their sizes may differ. Reformatted
      (coronal, sagittal) single images are read the same way, as 2D slices in their own
      plane. A folder with several series of which any holds more than one slice is an
      error that lists the series (read one series per folder). Scattered slices of ONE
      series (the LIDC sample) stay one stack with ``contiguous=False``;
    * a folder with ``Train``/``Test`` sub-folders is the reference repository's ``Data/``
      layout: only those sub-folders are read, and files beside them (npz sets built from
      the same slices) are ignored so that no slice is counted twice;
    * a folder holding ``imaging.nii[.gz]`` is a kits19 case: only that file is read, the
      other NIfTI files there (``segmentation.nii.gz``) being label maps;
    * documentation and sidecar files (``.md``, ``.txt``, ``.csv``, ``.json``, ...; README,
      LICENSE; DICOMDIR) and hidden files are ignored. Any other file whose type is not
      recognised is an error, and so is a folder mixing formats.
    Files without a known extension are DICOM when they carry the Part-10 ``DICM`` marker.

Contiguity (``CTVolume.contiguous``)
    * DICOM: True when every step between sorted positions is at most
      ``2 x SliceThickness`` (the median step when SliceThickness is missing) and the
      largest step is at most 1.5 x the smallest. Thin slices far apart (LIDC sample: 1 mm
      thick, ~13.5 mm apart) or gaps are not contiguous. Without positions: True when the
      InstanceNumbers are consecutive.
      A gantry-tilted series (ImageOrientationPatient not axial, e.g. the head sample tilted
      18.5 degrees) is read as acquired: slices are ordered along their own normal and kept
      as stored, with no shear correction or resampling; dz is the median step along that
      normal, and irregular gaps (4 / 1.08 / 7 mm there) make it not contiguous.
    * PNG/TIFF folders: True when the file names differ in exactly one number and that
      number moves by a constant step (``slice_001.png``, ``slice_002.png``, ...). Names
      differing in several numbers (``<patient>_<slice>.png``) or in text are a collection
      of scattered slices: False.
    * NIfTI, a multi-page TIFF, a 3D npz sample, a single slice: True. A 2D npz set: False.

Every problem with the input raises :class:`utils.base.errors.DataError` naming the offending
file (or, for problems of a whole folder, the folder and example files) and the problem.
No pickle is ever loaded (``np.load(..., allow_pickle=False)``).
"""

import dataclasses
import re
import zipfile
from pathlib import Path

import nibabel
import numpy as np
import pydicom
import pydicom.errors
import tifffile
from PIL import Image
from pydicom.pixels import apply_modality_lut

from utils.base.defaults import DEFAULT_HU_WINDOW, HU_FLOOR
from utils.base.errors import ConfigError, DataError

# Air is about -1000 HU; nothing physical lies below HU_FLOOR (-1024), the lowest value of a 12-bit
# scanner range shifted by the usual -1024 intercept. Lower values are padding markers.

MAX_FOLDER_DEPTH = 6

# A corrupt header must not make a decoder allocate gigabytes: a file may claim at most
# MAX_VOXELS values, and at most MAX_EXPANSION times its own size in bytes (deflate, used by
# PNG, .nii.gz and most TIFFs, cannot expand data more than about 1032 times).
MAX_VOXELS = 2**31
MAX_EXPANSION = 4096

REFERENCE_NPZ_KEYS = ("data_train", "data_train_noisy", "data_test", "data_test_noisy", "data_test_prior")
# Arrays that hold clean images (must lie in [0, 1]) and the arrays that must match their shape.
_REFERENCE_NPZ_PAIRS = {
    "data_train": ("data_train_noisy",),
    "data_test": ("data_test_noisy", "data_test_prior"),
}

_SUFFIX_FORMATS = {
    ".png": "png",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".dcm": "dicom",
    ".dicom": "dicom",
    ".ima": "dicom",
    ".nii": "nifti",
    ".nii.gz": "nifti",
    ".npz": "npz",
}
_SIDECAR_SUFFIXES = {".md", ".txt", ".csv", ".tsv", ".json", ".yaml", ".yml", ".log", ".rst", ".html", ".pdf", ".xml"}
_SIDECAR_NAME_PREFIXES = ("readme", "license", "licence", "copying", "notice", "dicomdir")
_REFERENCE_SPLITS = ("train", "test")
_KITS19_IMAGING = ("imaging.nii.gz", "imaging.nii")


@dataclasses.dataclass
class CTVolume:
    """One CT volume (or stack of scattered slices) ready for the denoisers.

    array      float32 ``(D, H, W)`` in [0, 1] after windowing (axis 0 = slices).
    source     the file or folder it was read from.
    format     "dicom" | "nifti" | "png" | "tiff" | "npz".
    spacing    ``(dz, dy, dx)`` in mm when known, else None. dz is the step between
               consecutive array slices (not the slice thickness).
    hu_window  ``(lo, hi)`` HU window applied; None for images scaled by their bit depth
               and for the reference npz (already in [0, 1]).
    contiguous True when slice i and i + 1 are neighbours in space (see the module notes).
    n_files    number of files the volume was built from.
    files      the files read, in slice order for DICOM series and PNG/TIFF slice folders
               (what a writer needs to mirror the input file by file).
    """

    array: np.ndarray
    source: str
    format: str
    spacing: tuple | None
    hu_window: tuple | None
    contiguous: bool
    n_files: int
    files: tuple = ()

    def describe(self):
        """JSON-ready summary: format, shape, spacing, dtype, min, max, hu_window, n_files,
        n_volumes (1), contiguous, source."""
        return {
            "format": self.format,
            "shape": list(self.array.shape),
            "spacing": None if self.spacing is None else [float(s) for s in self.spacing],
            "dtype": str(self.array.dtype),
            "min": float(self.array.min()),
            "max": float(self.array.max()),
            "hu_window": None if self.hu_window is None else [float(h) for h in self.hu_window],
            "n_files": int(self.n_files),
            "n_volumes": 1,
            "contiguous": bool(self.contiguous),
            "source": str(self.source),
        }


# --------------------------------------------------------------------------- public API


def window_hu(hu, hu_window):
    """Map HU to [0, 1]: ``clip((hu - lo) / (hi - lo), 0, 1)`` as float32.

    Padding is not handled here (see :func:`read_ct`); NaN stays NaN.
    """
    lo, hi = check_hu_window(hu_window)
    hu = np.asarray(hu, dtype=np.float32)
    scaled = (hu - np.float32(lo)) / np.float32(hi - lo)
    return np.clip(scaled, 0.0, 1.0).astype(np.float32, copy=False)


def check_hu_window(hu_window):
    """Return ``(lo, hi)`` as floats; ConfigError unless both are finite and lo < hi."""
    try:
        lo, hi = (float(v) for v in hu_window)
    except (TypeError, ValueError):
        raise ConfigError(f"HU window must be two numbers (lo, hi), got {hu_window!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ConfigError(f"HU window must be finite with lo < hi, got ({lo}, {hi})")
    return lo, hi


def read_ct(path, hu_window=DEFAULT_HU_WINDOW):
    """Read any supported CT input; return one :class:`CTVolume` per volume found.

    ``path`` may be a PNG/TIFF/DICOM/NIfTI/npz file or a folder (see the module notes for
    ordering, windowing, padding, folder walking and contiguity). ``hu_window`` applies to
    HU data (DICOM, NIfTI) and is recorded in ``CTVolume.hu_window``.
    Raises DataError naming the offending file and the problem, ConfigError for a bad window.
    """
    hu_window = check_hu_window(hu_window)
    path = Path(path)
    if not path.exists():
        raise DataError(path, "does not exist")
    if path.is_dir():
        volumes = _read_folder(path, hu_window, depth=0)
        if not volumes:
            raise DataError(path, _empty_folder_problem(path))
        return volumes
    file_format = _file_format(path)
    if file_format is None:
        raise DataError(path, f"unsupported file type {_suffix(path)!r}: expected {_expected_formats()}")
    return _read_files(path, file_format, [path], hu_window)


def read_reference_npz(path):
    """Load the reference repository's npz: ``{key: float32 array}``, keys as stored.

    Keys must be among ``REFERENCE_NPZ_KEYS``; 2D sets are ``(N, H, W, 1)``, 3D sets
    ``(N, D, H, W, 1)``; all values finite; clean arrays (data_train, data_test) in [0, 1];
    noisy and prior arrays the shape of their clean array. ``allow_pickle=False``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "does not exist" if not path.exists() else "is not a file")
    arrays = _load_npz_arrays(path)
    unknown = sorted(set(arrays) - set(REFERENCE_NPZ_KEYS))
    if unknown:
        raise DataError(path, f"unexpected arrays {unknown}; a reference npz holds only {list(REFERENCE_NPZ_KEYS)}")
    if not arrays:
        raise DataError(path, f"holds no arrays; expected some of {list(REFERENCE_NPZ_KEYS)}")
    for key, array in arrays.items():
        if array.ndim not in (4, 5) or array.shape[-1] != 1 or 0 in array.shape:
            raise DataError(
                path, f"array {key!r} has shape {array.shape}; expected (N, H, W, 1) or (N, D, H, W, 1), non-empty"
            )
        _require_finite(array, path, f"array {key!r}")
    for clean_key, companions in _REFERENCE_NPZ_PAIRS.items():
        if clean_key in arrays:
            clean = arrays[clean_key]
            if clean.min() < 0.0 or clean.max() > 1.0:
                raise DataError(
                    path,
                    f"clean array {clean_key!r} spans [{clean.min():g}, {clean.max():g}], outside [0, 1]: not windowed",
                )
        for key in companions:
            if key in arrays and clean_key in arrays and arrays[key].shape != arrays[clean_key].shape:
                raise DataError(
                    path, f"array {key!r} has shape {arrays[key].shape} but {clean_key!r} has {arrays[clean_key].shape}"
                )
    return arrays


# --------------------------------------------------------------------------- dispatch


def _suffix(path):
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def _expected_formats():
    return "PNG/TIFF slices, DICOM (.dcm or files with the DICM marker), NIfTI (.nii, .nii.gz) or npz"


def _has_dicom_marker(path):
    # DICOM Part 10 files start with a 128-byte preamble followed by b"DICM".
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError as exc:
        raise DataError(path, f"cannot be opened: {exc.strerror or exc}") from None
    return head[128:132] == b"DICM"


def _file_format(path):
    """Format of a data file from its extension (or DICOM marker); None when unrecognised."""
    known = _SUFFIX_FORMATS.get(_suffix(path))
    if known is not None:
        return known
    return "dicom" if _has_dicom_marker(path) else None


def _is_ignored(path):
    """Hidden entries, documentation and sidecar files: never data, never an error."""
    name = path.name.lower()
    if name.startswith(".") or name == "__macosx":
        return True
    if not path.is_file() or _suffix(path) in _SUFFIX_FORMATS:
        return False
    return _suffix(path) in _SIDECAR_SUFFIXES or name.startswith(_SIDECAR_NAME_PREFIXES)


def _natural_key(text):
    # Alternating text and integers, so that "z2" < "z10"; the case-folded text comes first.
    parts = re.split(r"(\d+)", text.lower())
    return [int(part) if index % 2 else part for index, part in enumerate(parts)]


def _list_folder(folder):
    """Split a folder into ({format: [files]}, [sub-folders]), both in natural order."""
    files_by_format, subfolders = {}, []
    try:
        entries = sorted(folder.iterdir(), key=lambda p: _natural_key(p.name))
    except OSError as exc:
        raise DataError(folder, f"cannot be listed: {exc.strerror or exc}") from None
    for entry in entries:
        if _is_ignored(entry):
            continue
        if entry.is_dir():
            subfolders.append(entry)
            continue
        file_format = _file_format(entry)
        if file_format is None:
            suffix = _suffix(entry) or "(no extension)"
            raise DataError(entry, f"unsupported file type {suffix!r}: expected {_expected_formats()}")
        files_by_format.setdefault(file_format, []).append(entry)
    return files_by_format, subfolders


def _empty_folder_problem(folder):
    ignored = sorted(p.name for p in folder.rglob("*") if p.is_file())[:5]
    detail = f" (only ignored files such as {', '.join(ignored)})" if ignored else ""
    return f"empty folder: no CT files found{detail}; expected {_expected_formats()}"


def _read_folder(folder, hu_window, depth):
    files_by_format, subfolders = _list_folder(folder)
    splits = [sub for sub in subfolders if sub.name.lower() in _REFERENCE_SPLITS]
    if splits:
        # Reference repository Data/ layout: the subject folders are the data; loose files
        # beside Train/Test are sets derived from them.
        files_by_format, subfolders = {}, splits
    volumes = []
    if len(files_by_format) > 1:
        examples = "; ".join(
            f"{fmt}: {files[0].name} ({len(files)} file{'s' if len(files) > 1 else ''})"
            for fmt, files in files_by_format.items()
        )
        raise DataError(folder, f"folder mixes file formats ({examples}); put each format in its own folder")
    for file_format, files in files_by_format.items():
        volumes += _read_files(folder, file_format, files, hu_window)
    if depth < MAX_FOLDER_DEPTH:
        for sub in subfolders:
            volumes += _read_folder(sub, hu_window, depth + 1)
    return volumes


def _read_files(source, file_format, files, hu_window):
    """Volumes from same-format files of one folder (or one file, then ``source`` is it)."""
    if file_format in ("png", "tiff"):
        return [_read_image_slices(source, file_format, files)]
    if file_format == "dicom":
        return _read_dicom_files(source, files, hu_window)
    if file_format == "nifti":
        imaging = [f for f in files if f.name.lower() in _KITS19_IMAGING]
        return [_read_nifti(f, hu_window) for f in (imaging[:1] or files)]
    if file_format == "npz":
        return [volume for f in files for volume in _read_npz_volumes(f)]
    raise AssertionError(f"unhandled format {file_format}")


def _check_plausible_size(path, shape, itemsize):
    """DataError when a header claims more pixel data than the file can hold."""
    n_values = float(np.prod([float(n) for n in shape]))
    file_size = path.stat().st_size
    if n_values > MAX_VOXELS or n_values * itemsize > MAX_EXPANSION * file_size + 2**20:
        raise DataError(
            path, f"header claims {tuple(shape)} pixels, implausible for a {file_size}-byte file (corrupt or truncated)"
        )


def _require_finite(array, path, what):
    finite = np.isfinite(array)
    if not finite.all():
        n_nan = int(np.isnan(array).sum())
        n_inf = int(array.size - finite.sum()) - n_nan
        raise DataError(path, f"{what} holds non-finite values ({n_nan} NaN, {n_inf} Inf)")


def _air_below_air(hu):
    """Raise everything below the HU floor to it (padding markers such as -3024 HU)."""
    return np.maximum(hu, np.float32(HU_FLOOR))


# --------------------------------------------------------------------------- PNG / TIFF


def _grey(pixels, path):
    """Collapse grey images stored with colour or alpha channels; refuse real colour."""
    if pixels.ndim == 2:
        return pixels
    if pixels.ndim == 3 and pixels.shape[-1] == 2:  # grey + alpha
        return pixels[..., 0]
    if pixels.ndim == 3 and pixels.shape[-1] in (3, 4):
        rgb = pixels[..., :3]
        if (rgb == rgb[..., :1]).all():
            return rgb[..., 0]
        raise DataError(path, "is a colour image; expected a greyscale CT slice")
    raise DataError(path, f"has pixel array of shape {pixels.shape}; expected a 2D greyscale slice")


def _decode_png(path):
    try:
        with Image.open(path) as image:
            _check_plausible_size(path, image.size, 1)
            image.load()  # decode now: a truncated file fails here, not later
            image_format, mode = image.format, image.mode
            if mode == "P":
                image = image.convert("RGB")
            pixels = np.array(image)
    except DataError:
        raise
    except Image.DecompressionBombError as exc:
        raise DataError(path, f"implausibly large image: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types on corrupt data
        raise DataError(path, f"unreadable or truncated PNG ({type(exc).__name__}: {exc})") from None
    if image_format != "PNG":
        raise DataError(path, f"is a {image_format} file, not PNG (renamed?)")
    if mode == "1":
        raise DataError(path, "is a 1-bit (black and white) image; expected an 8- or 16-bit greyscale CT slice")
    if mode == "I" and pixels.size and (pixels.min() < 0 or pixels.max() > 65535):
        raise DataError(path, "holds 32-bit integers outside the 16-bit range")
    if mode == "I":
        pixels = pixels.astype(np.uint16)
    return pixels


def _decode_tiff(path):
    """(pages, H, W) from a TIFF: one page per 2D image, colour samples collapsed to grey."""
    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            _check_plausible_size(path, series.shape, series.dtype.itemsize)
            axes, pixels = series.axes, series.asarray()
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - tifffile raises many types on corrupt data
        raise DataError(path, f"unreadable or truncated TIFF ({type(exc).__name__}: {exc})") from None
    if pixels.ndim < 2 or 0 in pixels.shape:
        raise DataError(path, f"has image shape {pixels.shape}; expected non-empty 2D slices")
    if axes.endswith("S"):  # samples per pixel (RGB, grey + alpha) are the last axis
        pixels = pixels.reshape((-1,) + pixels.shape[-3:])
        return np.stack([_grey(page, path) for page in pixels])
    return pixels.reshape((-1,) + pixels.shape[-2:])


def _decode_png_slice(path):
    return _grey(_decode_png(path), path)[np.newaxis]


def _scale_by_bit_depth(pixels, path):
    if pixels.dtype == np.uint8:
        return pixels.astype(np.float32) / np.float32(255.0)
    if pixels.dtype == np.uint16:
        return pixels.astype(np.float32) / np.float32(65535.0)
    raise DataError(
        path,
        f"holds {pixels.dtype} samples; only unsigned 8- or 16-bit images are read "
        "(store HU in DICOM or NIfTI)",
    )


def _contiguous_by_name(files):
    """True when the names differ in exactly one number that moves by a constant step."""
    if len(files) < 2:
        return True
    keys = [_natural_key(f.name) for f in files]
    if len({len(k) for k in keys}) != 1:
        return False
    varying = [i for i in range(len(keys[0])) if len({k[i] for k in keys}) > 1]
    if len(varying) != 1 or varying[0] % 2 == 0:  # odd positions hold the numbers
        return False
    numbers = np.array([k[varying[0]] for k in keys])
    steps = np.diff(numbers)
    return bool(steps[0] > 0 and (steps == steps[0]).all())


def _read_image_slices(source, file_format, files):
    decode = _decode_png_slice if file_format == "png" else _decode_tiff
    stacks, first = [], None
    for path in files:
        pixels = decode(path)
        if pixels.ndim != 3 or 0 in pixels.shape:
            raise DataError(path, f"has image shape {pixels.shape}; expected a non-empty 2D slice")
        if len(files) > 1 and pixels.shape[0] != 1:
            raise DataError(path, f"holds {pixels.shape[0]} pages; a folder of slices needs one slice per file")
        if first is None:
            first = (path, pixels)
        elif pixels.shape[1:] != first[1].shape[1:]:
            raise DataError(
                path,
                f"mixed slice sizes: {path.name} is {pixels.shape[1:]} but {first[0].name} is {first[1].shape[1:]}",
            )
        elif pixels.dtype != first[1].dtype:
            raise DataError(
                path,
                f"mixed bit depths: {path.name} is {pixels.dtype} but {first[0].name} is {first[1].dtype}",
            )
        stacks.append(_scale_by_bit_depth(pixels, path))
    array = np.concatenate(stacks, axis=0)
    return CTVolume(array, str(source), file_format, None, None, _contiguous_by_name(files), len(files), tuple(files))


# --------------------------------------------------------------------------- npz


def _load_npz_arrays(path):
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise DataError(path, "is a single .npy array, not an npz archive")
        with loaded:
            arrays = {key: loaded[key] for key in loaded.files}  # members decompress lazily: read them here
    except DataError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise DataError(path, "holds pickled objects (refused: allow_pickle=False) or is not an npz") from None
        raise DataError(path, f"unreadable or truncated npz ({exc})") from None
    except Exception as exc:  # noqa: BLE001 - zipfile/zlib/numpy raise many types on corrupt data
        kind = "truncated or corrupt zip" if isinstance(exc, (zipfile.BadZipFile, EOFError)) else "unreadable npz"
        raise DataError(path, f"{kind} ({type(exc).__name__}: {exc})") from None
    converted = {}
    for key, array in arrays.items():
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_) or np.iscomplexobj(array):
            raise DataError(path, f"array {key!r} has dtype {array.dtype}; expected real numbers")
        converted[key] = array.astype(np.float32)
    return converted


def _read_npz_volumes(path):
    arrays = read_reference_npz(path)
    key = "data_test" if "data_test" in arrays else "data_train" if "data_train" in arrays else None
    if key is None:
        raise DataError(path, f"holds no clean images (data_test or data_train), only {sorted(arrays)}")
    clean = arrays[key][..., 0]
    if clean.ndim == 3:  # (N, H, W): a set of unrelated 2D slices
        return [CTVolume(clean, str(path), "npz", None, None, False, 1)]
    return [CTVolume(np.ascontiguousarray(sample), str(path), "npz", None, None, True, 1) for sample in clean]


# --------------------------------------------------------------------------- NIfTI


def _nifti_axis_order(affine, shape):
    """Voxel axes of a 3D ``shape`` ordered (closest to world z, y, x); (2, 1, 0) when the affine is unusable.

    A single slice is a slice in whatever plane it lies (a coronal reformat, say): its axis of length 1
    goes first, and its two in-plane axes keep the orientation's order.
    """
    order = (2, 1, 0)
    try:
        world_axes = nibabel.io_orientation(affine)[:, 0]
    except Exception:  # noqa: BLE001 - degenerate affines raise from the linear algebra
        world_axes = None
    if world_axes is not None and not np.isnan(world_axes).any() and sorted(world_axes.tolist()) == [0.0, 1.0, 2.0]:
        order = tuple(int(np.flatnonzero(world_axes == world)[0]) for world in (2, 1, 0))
    if tuple(shape).count(1) == 1:
        single = tuple(shape).index(1)
        order = (single,) + tuple(axis for axis in order if axis != single)
    return order


def _read_nifti(path, hu_window):
    try:
        image = nibabel.load(path)
        shape = tuple(int(n) for n in image.shape)
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types on corrupt headers
        raise DataError(path, f"unreadable NIfTI header ({type(exc).__name__}: {exc})") from None
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) == 2:
        shape = shape + (1,)
    if len(shape) != 3 or 0 in shape:
        raise DataError(path, f"has shape {tuple(image.shape)}; expected a 3D volume (a 4D series is not CT)")
    try:
        itemsize = image.header.get_data_dtype().itemsize
    except Exception:  # noqa: BLE001 - an invalid datatype code
        raise DataError(path, "unreadable NIfTI header (invalid data type)") from None
    _check_plausible_size(path, shape, itemsize)
    try:
        hu = np.asarray(image.get_fdata(dtype=np.float32)).reshape(shape)
        # Header zooms are float32: round away the noise (0.8 -> 0.800000011920929).
        zooms = tuple(round(float(z), 6) for z in image.header.get_zooms()[:3])
        affine = image.affine
    except Exception as exc:  # noqa: BLE001 - truncated data raise EOFError, zlib.error, OSError, ...
        raise DataError(path, f"unreadable or truncated NIfTI data ({type(exc).__name__}: {exc})") from None
    _require_finite(hu, path, "image")
    order = _nifti_axis_order(affine, shape)
    hu = np.ascontiguousarray(hu.transpose(order))
    zooms = zooms + (1.0,) * (3 - len(zooms))
    spacing = tuple(zooms[axis] for axis in order)
    if not all(np.isfinite(s) and s > 0 for s in spacing):
        spacing = None
    return CTVolume(window_hu(_air_below_air(hu), hu_window), str(path), "nifti", spacing, hu_window, True, 1, (path,))


# --------------------------------------------------------------------------- DICOM


@dataclasses.dataclass
class _DicomSlice:
    path: Path
    hu: np.ndarray
    series_uid: str
    series_description: str
    position: np.ndarray | None  # ImagePositionPatient, mm
    orientation: np.ndarray | None  # ImageOrientationPatient (row cosines, column cosines)
    instance_number: int | None
    pixel_spacing: tuple | None  # (row spacing = dy, column spacing = dx), mm
    slice_thickness: float | None
    spacing_between_slices: float | None


def _optional_floats(dataset, keyword, count):
    value = dataset.get(keyword)
    if value is None or value == "":
        return None
    values = np.atleast_1d(np.asarray(value, dtype=np.float64))
    return values if values.size == count and np.isfinite(values).all() else None


def _optional_float(dataset, keyword):
    values = _optional_floats(dataset, keyword, 1)
    return None if values is None or values[0] <= 0 else float(values[0])


def _padding_mask(dataset, raw):
    """Stored values marking pixels outside the field of view (PixelPaddingValue[..RangeLimit])."""
    padding = dataset.get("PixelPaddingValue")
    if padding is None or not np.isscalar(padding):
        return None
    limit = dataset.get("PixelPaddingRangeLimit")
    if limit is None or not np.isscalar(limit):
        return raw == padding
    low, high = sorted((padding, limit))
    return (raw >= low) & (raw <= high)


def _read_dicom_slice(path):
    try:
        dataset = pydicom.dcmread(path)
    except pydicom.errors.InvalidDicomError:
        raise DataError(path, "not a DICOM file (no 'DICM' file meta header)") from None
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on corrupt files
        raise DataError(path, f"unreadable or truncated DICOM ({type(exc).__name__}: {exc})") from None
    try:
        return _dicom_slice_from_dataset(path, dataset)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - malformed elements surface on access
        raise DataError(path, f"unreadable or corrupt DICOM ({type(exc).__name__}: {exc})") from None


def _dicom_slice_from_dataset(path, dataset):
    modality = str(dataset.get("Modality", "")).strip()
    if modality and modality != "CT":
        raise DataError(path, f"Modality is {modality!r}, not CT: only CT images are read")
    if "PixelData" not in dataset:
        raise DataError(path, "holds no pixel data (truncated file, or not an image, e.g. a structured report)")
    if not modality:
        raise DataError(path, "has no Modality element, so it cannot be confirmed as CT (truncated header?)")
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if frames != 1:
        raise DataError(path, f"is a multi-frame DICOM ({frames} frames); only one slice per file is supported")
    if int(dataset.get("SamplesPerPixel", 1)) != 1:
        raise DataError(path, "is a colour DICOM image; expected a greyscale CT slice")
    photometric = str(dataset.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    if photometric != "MONOCHROME2":
        raise DataError(path, f"has PhotometricInterpretation {photometric!r}; CT images are MONOCHROME2")
    bytes_per_pixel = max(1, int(dataset.get("BitsAllocated", 8) or 8) // 8)
    _check_plausible_size(path, (int(dataset.get("Rows", 0)), int(dataset.get("Columns", 0))), bytes_per_pixel)
    try:
        raw = dataset.pixel_array
    except Exception as exc:  # noqa: BLE001 - short pixel data, missing codecs, bad group 0028 values
        problem = f"pixel data cannot be decoded: truncated or unsupported ({type(exc).__name__}: {exc})"
        raise DataError(path, problem) from None
    if raw.ndim != 2:
        raise DataError(path, f"pixel data has shape {raw.shape}; expected one 2D slice")
    hu = np.asarray(apply_modality_lut(raw, dataset), dtype=np.float32)
    padding = _padding_mask(dataset, raw)
    if padding is not None:
        hu[padding] = HU_FLOOR
    _require_finite(hu, path, "pixel data after rescale")
    instance = dataset.get("InstanceNumber")
    pixel_spacing = _optional_floats(dataset, "PixelSpacing", 2)
    return _DicomSlice(
        path=path,
        hu=_air_below_air(hu),
        series_uid=str(dataset.get("SeriesInstanceUID", "(no SeriesInstanceUID)")),
        series_description=str(dataset.get("SeriesDescription", "")),
        position=_optional_floats(dataset, "ImagePositionPatient", 3),
        orientation=_optional_floats(dataset, "ImageOrientationPatient", 6),
        instance_number=None if instance in (None, "") else int(instance),
        pixel_spacing=None if pixel_spacing is None else tuple(float(s) for s in pixel_spacing),
        slice_thickness=_optional_float(dataset, "SliceThickness"),
        spacing_between_slices=_optional_float(dataset, "SpacingBetweenSlices"),
    )


def _group_by_series(slices):
    """{SeriesInstanceUID: [slices]} in the order the series are first met (natural file order)."""
    series = {}
    for dicom_slice in slices:
        series.setdefault(dicom_slice.series_uid, []).append(dicom_slice)
    return series


def _check_single_series(source, slices):
    series = _group_by_series(slices)
    if len(series) > 1:
        listing = "; ".join(
            f"{uid} ({members[0].series_description or 'no description'}, {len(members)} files, "
            f"e.g. {members[0].path.name})"
            for uid, members in series.items()
        )
        raise DataError(
            source,
            f"holds {len(series)} DICOM series; read one series per folder: {listing} "
            "(several series are read only when each holds a single slice: then each is its own 2D slice)",
        )


def _check_same_geometry(slices):
    first = slices[0]
    for other in slices[1:]:
        if other.hu.shape != first.hu.shape:
            raise DataError(
                other.path,
                f"mixed slice sizes: {other.path.name} is {other.hu.shape} but {first.path.name} is {first.hu.shape}",
            )
        if (
            first.orientation is not None
            and other.orientation is not None
            and not np.allclose(first.orientation, other.orientation, atol=1e-3)
        ):
            raise DataError(
                other.path,
                f"ImageOrientationPatient {other.orientation.tolist()} differs from {first.path.name}'s "
                f"{first.orientation.tolist()}: not one stack of parallel slices",
            )


def _slice_normal(orientation):
    if orientation is None:
        return np.array([0.0, 0.0, 1.0])  # no orientation stored: assume axial
    normal = np.cross(orientation[:3], orientation[3:])
    norm = np.linalg.norm(normal)
    return normal / norm if norm > 1e-6 else np.array([0.0, 0.0, 1.0])


def _order_slices(slices):
    """Sort slices along the normal; return (slices, steps in mm or None, ordered by position?)."""
    if all(s.position is not None for s in slices):
        normal = _slice_normal(slices[0].orientation)
        positions = np.array([float(np.dot(s.position, normal)) for s in slices])
        order = np.argsort(positions, kind="stable")
        slices = [slices[i] for i in order]
        positions = positions[order]
        steps = np.diff(positions)
        for index, step in enumerate(steps):
            if step < 1e-3:
                raise DataError(
                    slices[index + 1].path,
                    f"same slice position ({positions[index]:.3f} mm) as {slices[index].path.name}: duplicate slice",
                )
        return slices, steps, True
    missing = [s for s in slices if s.instance_number is None]
    if missing and len(slices) > 1:
        raise DataError(missing[0].path, "has neither ImagePositionPatient nor InstanceNumber: cannot order the slices")
    slices = sorted(slices, key=lambda s: s.instance_number or 0)
    return slices, None, False


def _dicom_contiguity_and_dz(slices, steps, by_position):
    thickness = slices[0].slice_thickness
    if by_position and len(slices) > 1:
        reference = thickness if thickness is not None else float(np.median(steps))
        contiguous = bool(steps.max() <= 2.0 * reference + 1e-3 and steps.max() <= 1.5 * steps.min() + 1e-3)
        return contiguous, float(np.median(steps))
    dz = slices[0].spacing_between_slices or thickness
    if len(slices) == 1:
        return True, dz
    numbers = np.diff([s.instance_number for s in slices])
    return bool((numbers == 1).all()), dz


def _read_dicom_files(source, files, hu_window):
    """Volumes from the DICOM files of one folder (or one file).

    One series -> one volume. Several series that each hold exactly one slice (key images,
    one slice exported from each of several studies) -> one single-slice volume per series,
    ``source`` being that slice's file, in natural file-name order: such slices are unrelated
    and may differ in size, so they are never stacked. Several series of which any holds
    more than one slice -> DataError listing the series.
    """
    slices = [_read_dicom_slice(path) for path in files]
    series = _group_by_series(slices)
    if len(series) > 1 and all(len(members) == 1 for members in series.values()):
        return [_dicom_volume(members[0].path, members, hu_window) for members in series.values()]
    _check_single_series(source, slices)
    return [_dicom_volume(source, slices, hu_window)]


def _dicom_volume(source, slices, hu_window):
    _check_same_geometry(slices)
    slices, steps, by_position = _order_slices(slices)
    contiguous, dz = _dicom_contiguity_and_dz(slices, steps, by_position)
    pixel_spacing = slices[0].pixel_spacing
    spacing = None if pixel_spacing is None or dz is None else (dz, pixel_spacing[0], pixel_spacing[1])
    hu = np.stack([s.hu for s in slices])
    files = tuple(s.path for s in slices)
    return CTVolume(window_hu(hu, hu_window), str(source), "dicom", spacing, hu_window, contiguous, len(slices), files)
