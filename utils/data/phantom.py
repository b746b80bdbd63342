"""Seeded synthetic CT phantoms in Hounsfield units (HU), and the embedded default dataset.

The toolkit must run (and its tests must pass) with no patient data at hand, so it ships a
generator of realistic, noise-free thoraco-abdominal CT volumes. The denoisers add noise
themselves (2/5/10 % of the [-1000, 400] HU window, i.e. 28/70/140 HU), so a clean phantom
only has to look like anatomy: its own fine texture is a few HU.

Anatomy model
-------------
Every structure is an analytic shape evaluated on the voxel grid (no meshes, no loops over
voxels), painted in a fixed order into a tissue-label volume (:class:`Tissue`); the HU volume
is then rendered from the labels, textured, given lesions and blurred by a scanner
point-spread function. HU values follow clinical contrast-enhanced CT; ``benchmarks/
phantom_realism.py`` compares the result with real scans.

* **Frame.** Shapes are described in millimetres of an adult patient: ``x`` points to the
  patient's left (image right, radiological display), ``y`` to the back (image bottom), ``z``
  to the head, with ``z = 0`` at the apex of the right diaphragm dome. The cross-section is
  scaled to fit the in-plane field of view (a 256 mm field holds a 0.65-scale adult section,
  like a real scan resampled to 256 pixels); along ``z`` adult millimetres are kept, so the
  change from one slice to the next is that of a real scan with the same slice spacing.
  Lesion sizes, texture grain and the point-spread function are in real millimetres. Each
  seed views a different ``z`` window between the carina (+110 mm) and the iliac crests
  (-235 mm): some volumes are mostly chest, some all abdomen, most cross the diaphragm.
* **Body wall.** A superellipse outline (boxier at the back) whose half-axes, squareness and
  low-order harmonics vary per seed and slowly along ``z``, with a groove over the spine.
  Layers follow the depth below it: skin (2 mm, 35 HU, anti-aliased against air), subcutaneous
  fat (5-32 mm, about -105 HU, thicker in front), muscle (about 55 HU; 6-11 mm in the abdomen,
  thicker on the flanks; pectorals and serratus make the chest wall thicker), then the cavity.
  Paraspinal muscles run along the spine; the psoas muscles grow towards the pelvis.
* **Diaphragm.** Two domes (the left one 5-25 mm lower) with deep posterior recesses and a
  5 mm muscle sheet. Above them the cavity is lung, below it visceral fat (about -95 HU) that
  holds the abdominal organs; an axial slice through a dome shows a lung crescent around the
  liver, as in real CT.
* **Thorax.** Lungs (-890 HU in front to -800 HU at the back, as in a supine patient, with a
  2 mm mottle) carry a vessel tree: the curves where two independent smooth random fields both
  vanish, up to three times thicker near the hila. The mediastinum holds fat, the heart
  (myocardium, left and right blood pools with a curved septum, epicardial fat), ascending and
  descending aorta, pulmonary trunk, superior vena cava, oesophagus, trachea and bronchi.
* **Abdomen.** Liver (two deformed ellipsoids moulded by the dome; 60-115 HU with the contrast
  phase; portal and hepatic veins), gallbladder (12 HU), spleen, stomach (wall, fluid or food,
  gas cap), kidneys (bean shape, enhancing cortex, medulla, sinus fat, pelvis), pancreas, colon
  (stool with gas bubbles), small-bowel loops (tortuous tubes: where two smooth random fields
  both vanish; fluid, oral contrast, stool or gas over a horizontal fluid level), aorta with
  occasional calcified plaques, inferior vena cava, portal, mesenteric and small fat vessels.
* **Bones.** Vertebrae repeating every 30-36 mm (disc, body, canal with CSF, pedicles, lamina,
  spinous and transverse processes at their own levels), ribs running obliquely down and
  forward (so their cross-sections slide along the wall from slice to slice), costal cartilage
  (120 HU), sternum and scapulae. Bone is trabecular (230 HU with a 30 HU grain) inside a
  1 mm cortical shell (1200 HU before blurring; 700-1000 HU after).
* **Lesions.** 0-8 spheres of 3-15 mm with soft edges, confined to their organ: liver cysts
  (5-15 HU), hypodense metastases (35-70 HU below the liver), hypervascular lesions (30-60 HU
  above), lung nodules (-10..50 HU), renal cysts and splenic lesions.
* **Contrast.** Each seed draws a phase between late arterial (aorta 250 HU, liver 60 HU, renal
  cortex brighter than medulla) and portal venous (aorta 160 HU, liver 115 HU, veins 170 HU),
  and in half of the patients positive oral contrast (180-320 HU) in part of the bowel.
* **Texture.** Organ interiors carry Gaussian random fields: a 0.6 mm grain and a 2 mm mottle
  of 2-6 HU in soft tissue, up to 11 HU in fat and the lobulated pancreas, more in bone, stool
  and lung. After the point-spread function the high-pass residual (minus a 1.5 mm Gaussian)
  inside liver, muscle and fat has a std of 2.5-3.5 HU, far below the 28 HU of the 2 % noise.
* **Scanner.** A Gaussian point-spread function (0.65 mm in-plane, 35 % of the slice spacing
  along ``z``) gives partial-volume edges; the result is rounded to whole HU, so the volume
  equals what the int16 NIfTI files store. Air outside the body is exactly -1000 HU.

All shapes are 3-D (ellipsoids, tubes along ``z``, fields correlated along ``z``, periodic
patterns in ``z``), so neighbouring slices are similar, which the neighbour-slice prior of
ResPrU-Net relies on.

Default dataset
---------------
``generate_dataset`` writes ``data/phantom/{train,val,test}/phantom_XXX.nii.gz`` (int16 HU,
spacing in the header) and, last, ``manifest.json``; ``ensure_default_dataset`` reuses a set
only if its manifest matches the requested settings. ``python -m utils.phantom`` does the same
from the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import scipy.fft
from scipy import ndimage as ndi
from scipy.special import ndtri

from utils.base.atomic import atomic_path, write_json
from utils.base.defaults import AIR_HU, PHANTOM_DIR
from utils.base.errors import ConfigError, RunDirectoryError

GENERATOR_VERSION = "1.0"
DEFAULT_SHAPE = (64, 256, 256)
DEFAULT_SPACING = (2.5, 1.0, 1.0)
DEFAULT_DIR = Path(PHANTOM_DIR)
DEFAULT_COUNTS = {"train": 8, "val": 2, "test": 2}
SPLITS = ("train", "val", "test")
MANIFEST_NAME = "manifest.json"
FILE_PATTERN = "phantom_{index:03d}.nii.gz"


class Tissue(enum.IntEnum):
    """Tissue classes of the label volume (uint8) that the HU volume is rendered from."""

    AIR = 0
    SKIN = 1
    SUBCUTANEOUS_FAT = 2
    MUSCLE = 3
    VISCERAL_FAT = 4
    LUNG = 5
    MYOCARDIUM = 6
    ARTERIAL_BLOOD = 7
    VENOUS_BLOOD = 8
    LIVER = 9
    SPLEEN = 10
    KIDNEY_CORTEX = 11
    KIDNEY_MEDULLA = 12
    PANCREAS = 13
    FLUID = 14
    GUT_WALL = 15
    GUT_FLUID = 16
    ORAL_CONTRAST = 17
    STOOL = 18
    GAS = 19
    CORTICAL_BONE = 20
    TRABECULAR_BONE = 21
    CARTILAGE = 22
    DISC = 23
    CSF = 24
    LESION = 25


@dataclasses.dataclass(frozen=True)
class Phantom:
    """A phantom volume in HU (float32, whole numbers), its tissue labels and its geometry."""

    hu: np.ndarray
    labels: np.ndarray
    spacing: tuple
    seed: int
    contrast_phase: float


# ----------------------------------------------------------------------------------------------
# Public API: one volume


def make_phantom(seed, shape=DEFAULT_SHAPE, spacing=DEFAULT_SPACING):
    """Return a deterministic synthetic CT volume ``(D, H, W)`` in HU (float32) for ``seed``.

    ``spacing`` is ``(z, y, x)`` in mm. Axis 0 runs from the feet towards the head, rows from
    front to back, columns from the patient's right to left (radiological display).
    """
    return make_labelled_phantom(seed, shape, spacing).hu


def make_labelled_phantom(seed, shape=DEFAULT_SHAPE, spacing=DEFAULT_SPACING):
    """Like :func:`make_phantom`, but also return the tissue labels (:class:`Tissue`)."""
    shape, spacing = _validated_geometry(shape, spacing)
    # Separate streams: the anatomy draws the same numbers at every resolution, so one seed is
    # one patient whatever the grid; textures and lesion positions depend on the grid.
    anatomy_rng, texture_rng, lesion_rng = np.random.default_rng(seed).spawn(3)
    patient = _sample_patient(anatomy_rng)
    grid = _Grid.build(shape, spacing, patient)
    canvas = _Canvas(grid, np.zeros(shape, np.uint8), _Fields.build(texture_rng, grid), anatomy_rng, patient)
    _paint_anatomy(canvas)
    hu = _render_hu(canvas)
    _add_lung_parenchyma(hu, canvas)
    _add_lesions(hu, canvas, lesion_rng)
    hu = _apply_scanner_blur(hu, spacing)
    return Phantom(hu, canvas.labels, spacing, int(seed), patient.contrast_phase)


def _validated_geometry(shape, spacing):
    shape = tuple(int(n) for n in shape)
    spacing = tuple(float(s) for s in spacing)
    if len(shape) != 3 or shape[0] < 1 or min(shape[1:]) < 8:
        raise ConfigError(f"phantom shape must be (D, H, W) with D >= 1 and H, W >= 8, got {shape}")
    if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ConfigError(f"phantom spacing must be three positive millimetre values (z, y, x), got {spacing}")
    return shape, spacing


# ----------------------------------------------------------------------------------------------
# Patient, grid, noise fields


@dataclasses.dataclass(frozen=True)
class _Patient:
    """Per-seed body parameters in adult millimetres (see the module docstring)."""

    half_width: float          # lateral half-axis of the outline
    half_depth_front: float    # anterior half-axis
    half_depth_back: float     # posterior half-axis
    squareness: float          # superellipse exponent; 2 is an ellipse
    waist: float               # relative change of the half-axes from thorax to abdomen
    harmonics: np.ndarray      # (3, 2) amplitude and phase of outline harmonics 2..4
    fat: float                 # mean subcutaneous fat thickness
    muscle: float              # mean abdominal wall muscle thickness
    left_dome_drop: float      # the left diaphragm dome lies this much lower than the right
    window_position: float     # 0: lowest allowed z window, 1: highest
    contrast_phase: float      # 0 late arterial ... 1 portal venous
    oral_contrast: bool

    @property
    def spine_y(self):
        """Centre of the vertebral bodies: a fixed distance in front of the back muscles."""
        return self.half_depth_back - 0.6 * self.fat - 72.0


# The z window (adult mm) never leaves the trunk between the lung apices and the iliac crests.
_Z_TOP, _Z_BOTTOM = 110.0, -235.0
# Largest adult half-axes, used to fit the patient into the field of view.
_MAX_HALF_WIDTH, _MAX_HALF_DEPTH = 185.0, 128.0


def _sample_patient(rng):
    return _Patient(
        half_width=rng.uniform(148, 178),
        half_depth_front=rng.uniform(98, 122),
        half_depth_back=rng.uniform(96, 114),
        squareness=rng.uniform(1.9, 2.4),
        waist=rng.uniform(-0.05, 0.06),
        harmonics=np.stack([rng.uniform(0, 0.018, 3), rng.uniform(0, 2 * np.pi, 3)], axis=1),
        fat=rng.uniform(5, 32),
        muscle=rng.uniform(6.5, 11),
        left_dome_drop=rng.uniform(5, 25),
        window_position=rng.uniform(0, 1),
        contrast_phase=rng.uniform(0, 1),
        oral_contrast=bool(rng.uniform() < 0.5),
    )


@dataclasses.dataclass(frozen=True)
class _Grid:
    """Voxel-centre coordinates in adult mm (1-D per axis) and the in-plane scale to real mm.

    Only the cross-section is scaled to fit the field of view; along z the adult proportions
    are kept, so the change from one slice to the next is that of a real scan with the same
    slice spacing (a 256-pixel phantom is like a real scan resampled to 256 pixels).
    """

    z: np.ndarray
    y: np.ndarray
    x: np.ndarray
    scale: float
    spacing: tuple

    @classmethod
    def build(cls, shape, spacing, patient):
        depth, height, width = shape
        fit = min(width * spacing[2] / (2 * _MAX_HALF_WIDTH), height * spacing[1] / (2 * _MAX_HALF_DEPTH))
        scale = min(1.0, 0.94 * fit)
        z_span = depth * spacing[0]
        lowest, highest = _Z_BOTTOM + z_span / 2, _Z_TOP - z_span / 2
        z_centre = (lowest + highest) / 2 if lowest > highest else lowest + patient.window_position * (highest - lowest)

        def axis(n, step):
            return ((np.arange(n) - (n - 1) / 2) * step).astype(np.float32)

        return cls(axis(depth, spacing[0]) + np.float32(z_centre), axis(height, spacing[1] / scale),
                   axis(width, spacing[2] / scale), scale, spacing)

    @property
    def shape(self):
        return (self.z.size, self.y.size, self.x.size)

    def box(self, low, high):
        """Index slices of the voxels whose centres lie within ``[low, high]`` (z, y, x in adult mm)."""
        return tuple(slice(int(np.searchsorted(axis, lo, "left")), int(np.searchsorted(axis, hi, "right")))
                     for axis, lo, hi in zip((self.z, self.y, self.x), low, high))

    def coords(self, box=(slice(None),) * 3):
        """Broadcastable ``(z, y, x)`` coordinate arrays of the voxels in ``box``."""
        return self.z[box[0]][:, None, None], self.y[box[1]][None, :, None], self.x[box[2]][None, None, :]

    def voxels(self, real_mm):
        """A length in real mm as a number of voxels along (z, y, x)."""
        return tuple(real_mm / step for step in self.spacing)

    def voxels_adult(self, adult_mm):
        """A length in adult mm as a number of voxels along (z, y, x)."""
        in_plane = adult_mm * self.scale
        return (adult_mm / self.spacing[0], in_plane / self.spacing[1], in_plane / self.spacing[2])


_FULL = (slice(None),) * 3


def _is_empty(box):
    return any(part.start is not None and part.start >= part.stop for part in box)


def _smooth_field(rng, shape, sigma_voxels):
    """Unit-variance periodic Gaussian random field with correlation length ``sigma_voxels`` per axis.

    Synthesised in the Fourier domain: complex white noise shaped by the Gaussian filter's
    transfer function, drawn only where that transfer is non-negligible, so broad fields cost
    one inverse FFT whatever their correlation length.
    """
    frequencies = [np.fft.fftfreq(n) for n in shape[:-1]] + [np.fft.rfftfreq(shape[-1])]
    transfers = [np.exp(-2 * (np.pi * f * sigma) ** 2).astype(np.float32)
                 for f, sigma in zip(frequencies, sigma_voxels)]
    kept = [np.flatnonzero(transfer > 1e-3) for transfer in transfers]
    block = tuple(index.size for index in kept)
    coefficients = rng.standard_normal(block + (2,), dtype=np.float32).view(np.complex64)[..., 0]
    for axis, (transfer, index) in enumerate(zip(transfers, kept)):
        coefficients *= transfer[index].reshape([-1 if a == axis else 1 for a in range(3)])
    spectrum = np.zeros(shape[:-1] + (shape[-1] // 2 + 1,), np.complex64)
    spectrum[np.ix_(*kept)] = coefficients
    field = scipy.fft.irfftn(spectrum, s=shape, axes=(0, 1, 2)).astype(np.float32, copy=False)
    field /= max(float(field[::2, ::3, ::3].std()), 1e-12)  # a subsample estimates the std well enough
    return field


@dataclasses.dataclass(frozen=True)
class _Fields:
    """Smooth random fields shared by all structures of one volume (unit variance, float32)."""

    grain: np.ndarray      # 0.6 mm: parenchymal grain, trabecular bone
    mottle: np.ndarray     # 2 mm: mottling of fat, pancreas, stool; gas bubbles
    shape_noise: np.ndarray  # 12 adult mm: organ and wall outlines
    vessel_a: np.ndarray   # 7 adult mm: vessel trees are where vessel_a and vessel_b both vanish
    vessel_b: np.ndarray
    bowel_a: np.ndarray    # 12 adult mm: small-bowel loops are where bowel_a and bowel_b both vanish
    bowel_b: np.ndarray

    @classmethod
    def build(cls, rng, grid):
        def fine(real_mm):
            return _smooth_field(rng, grid.shape, grid.voxels(real_mm))

        def anatomical(adult_mm):
            return _smooth_field(rng, grid.shape, grid.voxels_adult(adult_mm))

        return cls(fine(0.6), fine(2.0), anatomical(12), anatomical(7), anatomical(7), anatomical(12), anatomical(12))


# ----------------------------------------------------------------------------------------------
# Shapes and painting


@dataclasses.dataclass(frozen=True)
class _Ellipsoid:
    """Ellipsoid with ``centre`` and semi-axes ``radii`` (z, y, x), rotated by ``angle`` in-plane."""

    centre: tuple
    radii: tuple
    angle: float = 0.0

    def box(self, grid, margin=1.25):
        rz, ry, rx = self.radii
        cos, sin = abs(math.cos(self.angle)), abs(math.sin(self.angle))
        extent = (rz, math.hypot(ry * cos, rx * sin), math.hypot(rx * cos, ry * sin))
        return grid.box([c - margin * e for c, e in zip(self.centre, extent)],
                        [c + margin * e for c, e in zip(self.centre, extent)])

    def local(self, grid, box):
        """Normalised coordinates ``(w, v, u)`` along the ellipsoid's own axes (z, y', x')."""
        z, y, x = grid.coords(box)
        cz, cy, cx = self.centre
        dy, dx = y - cy, x - cx
        cos, sin = math.cos(self.angle), math.sin(self.angle)
        u = (dx * cos + dy * sin) / self.radii[2]
        v = (dy * cos - dx * sin) / self.radii[1]
        return (z - cz) / self.radii[0], v, u

    def rho(self, grid, box):
        """Normalised radius: < 1 inside, 1 on the surface."""
        w, v, u = self.local(grid, box)
        return np.sqrt(w * w + v * v + u * u)


@dataclasses.dataclass(frozen=True)
class _ZTube:
    """Tube along z with an elliptic cross-section; its centre moves linearly between two ends.

    ``low`` and ``high`` are the (z, y, x) centres of the bottom and top ends; the ends are
    rounded (half-ellipsoid caps) so a vessel fades in and out over a few slices.
    """

    low: tuple
    high: tuple
    radii: tuple  # (y, x)

    def box(self, grid):
        pad = 1.3 * max(self.radii)
        return grid.box([min(a, b) - pad for a, b in zip(self.low, self.high)],
                        [max(a, b) + pad for a, b in zip(self.low, self.high)])

    def rho(self, grid, box):
        z, y, x = grid.coords(box)
        length = max(self.high[0] - self.low[0], 1e-3)
        t = np.clip((z - self.low[0]) / length, 0.0, 1.0)
        cy = self.low[1] + t * (self.high[1] - self.low[1])
        cx = self.low[2] + t * (self.high[2] - self.low[2])
        beyond = np.maximum(self.low[0] - z, 0) + np.maximum(z - self.high[0], 0)
        return np.sqrt(((y - cy) / self.radii[0]) ** 2 + ((x - cx) / self.radii[1]) ** 2
                       + (beyond / min(self.radii)) ** 2)


@dataclasses.dataclass
class _Canvas:
    """Everything a painter needs: grid, label volume, noise fields, anatomy stream, patient."""

    grid: _Grid
    labels: np.ndarray
    fields: _Fields
    rng: np.random.Generator
    patient: _Patient
    cavity: np.ndarray | None = None       # inside the muscle wall
    abdomen: np.ndarray | None = None      # cavity below the diaphragm
    thorax: np.ndarray | None = None       # cavity above the diaphragm
    fat_depth: np.ndarray | None = None    # depth of the outer muscle surface (adult mm)
    wall_depth: np.ndarray | None = None   # depth of the inner muscle surface (adult mm)
    depth: np.ndarray | None = None        # depth below the skin (adult mm)

    def paint(self, box, inside, tissue, region=None, over=None):
        """Label the voxels of ``box`` where ``inside`` (and ``region``, and a label in ``over``)."""
        if _is_empty(box):
            return
        labels = self.labels[box]
        mask = np.broadcast_to(inside, labels.shape)
        if region is not None:
            mask = mask & region[box]
        if over is not None:
            mask = mask & np.isin(labels, [int(t) for t in over])
        labels[mask] = tissue

    def paint_shape(self, shape, tissue, region=None, over=None, wobble=0.0, below=1.0):
        """Paint ``rho < below`` of an analytic shape, its outline deformed by ``wobble``."""
        box = shape.box(self.grid)
        if _is_empty(box):
            return
        self.paint(box, self.rho(shape, box, wobble) < below, tissue, region, over)

    def rho(self, shape, box, wobble=0.0):
        rho = shape.rho(self.grid, box)
        return rho - wobble * self.fields.shape_noise[box] if wobble else rho


SOFT_CAVITY = (Tissue.VISCERAL_FAT,)


def _paint_anatomy(canvas):
    """Paint all structures in an order where later, more specific structures win."""
    _paint_body_wall(canvas)
    _paint_back_muscles(canvas)
    _paint_mediastinum(canvas)
    _paint_heart(canvas)
    _paint_kidneys(canvas)
    _paint_spleen(canvas)
    _paint_pancreas(canvas)
    _paint_stomach(canvas)
    _paint_liver(canvas)
    _paint_gallbladder(canvas)
    _paint_colon(canvas)
    _paint_small_bowel(canvas)
    _paint_mesenteric_vessels(canvas)
    _paint_great_vessels(canvas)
    _paint_airways_and_oesophagus(canvas)
    _paint_spine(canvas)
    _paint_ribs_and_sternum(canvas)
    _split_cortical_bone(canvas)


# ----------------------------------------------------------------------------------------------
# Body wall and diaphragm


def _outline_radius(canvas):
    """Distance (adult mm) from the body axis to the skin along each in-plane ray, per slice.

    Returns ``(outline, radius, angle)``; the depth below the skin along a ray is
    ``outline - radius``. The angle is 0 in front and +-pi at the back.
    """
    patient = canvas.patient
    z, y, x = canvas.grid.coords()
    radius = np.hypot(y, x)
    with np.errstate(invalid="ignore", divide="ignore"):
        ux, uy = np.nan_to_num(np.abs(x) / radius), np.nan_to_num(y / radius)
    angle = np.arctan2(x, -y)
    # The chest is a little deeper, the abdomen wider or narrower (waist); both change slowly with z.
    abdominal = 0.5 * (1 - np.tanh((z + 40) / 60))
    lateral = patient.half_width * (1 + patient.waist * abdominal) * (1 + 0.015 * np.sin(z / 70))
    front = patient.half_depth_front * (1 + 0.04 * (1 - abdominal))
    # Superellipse, boxier at the back (flat on the table) than in front. The per-ray terms are
    # 2-D; only the half-axes depend on z.
    n = np.where(uy < 0, patient.squareness, patient.squareness + 0.5)
    term_x = ux ** n
    term_y = np.abs(uy) ** n
    depth_axis = np.where(uy < 0, front, patient.half_depth_back)
    outline = (term_x / lateral ** n + term_y / depth_axis ** n) ** (-1.0 / n)
    # Low-order bumps that turn slowly along z: cos(k a + p + z/150) split into 2-D and 1-D factors.
    ripple = np.ones_like(outline)
    for order, (amplitude, phase) in enumerate(patient.harmonics, start=2):
        turn = phase + z / 150
        ripple += amplitude * (np.cos(order * angle) * np.cos(turn) - np.sin(order * angle) * np.sin(turn))
    groove = 1 - 0.035 * np.exp(-((np.abs(angle) - np.pi) / 0.12) ** 2)  # over the spinous processes
    outline *= ripple * groove
    return outline, radius, angle


def _paint_body_wall(canvas):
    """Skin, subcutaneous fat, muscle, and the cavity (lung above, visceral fat below the diaphragm)."""
    patient = canvas.patient
    outline, radius, angle = _outline_radius(canvas)
    depth = outline - radius
    z = canvas.grid.coords()[0]
    thoracic = 0.5 * (1 + np.tanh((z + 60) / 40))
    wobble = 1 + 0.2 * canvas.fields.shape_noise
    # Fat: thickest in front and on the flanks, thinner over the back and the chest.
    fat = patient.fat * (0.65 + 0.35 * np.cos(angle) + 0.25 * np.sin(angle) ** 2) * (1 - 0.1 * thoracic) * wobble
    # Muscle: flank muscles are thicker than the linea alba; the chest wall holds ribs and pectorals.
    muscle = patient.muscle * (0.8 + 0.5 * np.abs(np.sin(angle)) + thoracic * _chest_muscles(angle))
    muscle *= 1 + 0.08 * canvas.fields.shape_noise
    skin_depth, fat_depth = 2.0, 2.0 + fat
    wall_depth = fat_depth + muscle
    labels = canvas.labels
    labels[depth >= 0] = Tissue.SKIN
    labels[depth >= skin_depth] = Tissue.SUBCUTANEOUS_FAT
    labels[depth >= fat_depth] = Tissue.MUSCLE
    cavity = depth >= wall_depth
    dome = _diaphragm_height(canvas)
    thorax = cavity & (z > dome)
    labels[cavity] = Tissue.VISCERAL_FAT
    labels[thorax] = Tissue.LUNG
    canvas.cavity, canvas.thorax = cavity, thorax
    canvas.depth, canvas.fat_depth, canvas.wall_depth = depth, fat_depth, wall_depth
    _paint_diaphragm_muscle(canvas, dome)


def _chest_muscles(angle):
    """Extra chest-wall muscle (relative): pectorals in front, serratus and latissimus on the sides."""
    pectoral = np.exp(-((np.abs(angle) - 0.7) / 0.45) ** 2)
    side = np.exp(-((np.abs(angle) - 1.9) / 0.5) ** 2)
    return 0.6 + 1.6 * pectoral + 0.6 * side


def _diaphragm_height(canvas):
    """z (adult mm) of the diaphragm over each (y, x): two domes, deepest at the back."""
    _, y, x = canvas.grid.coords()
    back = y > 0
    reach_y = np.where(back, 72.0, 105.0)  # posterior costophrenic recesses reach lowest

    def dome(top, centre_x, centre_y):
        return top - 70.0 * (((x - centre_x) / 100.0) ** 2 + ((y - centre_y) / reach_y) ** 2)

    right = dome(0.0, -0.35 * canvas.patient.half_width, -10.0)
    left = dome(-canvas.patient.left_dome_drop, 0.38 * canvas.patient.half_width, 0.0)
    return np.maximum(right, left)


def _paint_diaphragm_muscle(canvas, dome):
    """A 5 mm muscle sheet under the domes, measured along the surface normal."""
    z = canvas.grid.coords()[0]
    slope_y, slope_x = np.gradient(dome[0], canvas.grid.y, canvas.grid.x)
    thickness = 5.0 * np.sqrt(1 + slope_x ** 2 + slope_y ** 2)[None]
    below = dome - z
    canvas.labels[canvas.cavity & (below > 0) & (below < thickness)] = Tissue.MUSCLE
    canvas.abdomen = canvas.cavity & (below >= thickness)


def _paint_back_muscles(canvas):
    """Paraspinal muscles along the whole spine; psoas muscles from the upper lumbar spine down."""
    spine_y = canvas.patient.spine_y
    deep = canvas.depth >= canvas.fat_depth  # never into the fat or the skin
    size = canvas.rng.uniform(0.9, 1.15)
    for side in (-1, 1):
        paraspinal = _ZTube((_Z_BOTTOM - 50, spine_y + 44, side * 31), (_Z_TOP + 50, spine_y + 46, side * 29),
                            (30 * size, 27 * size))
        canvas.paint_shape(paraspinal, Tissue.MUSCLE, region=deep, wobble=0.05)
        psoas = _Ellipsoid((-330, spine_y + 2, side * 40), (240, 22 * size, 20 * size))
        canvas.paint_shape(psoas, Tissue.MUSCLE, region=canvas.abdomen, wobble=0.05)


# ----------------------------------------------------------------------------------------------
# Thorax


def _paint_mediastinum(canvas):
    """Mediastinal fat: the posterior mediastinum in front of the spine (around the aorta and the
    oesophagus) from the central tendon up, widening above the heart around the great vessels."""
    rng, spine_y = canvas.rng, canvas.patient.spine_y
    width = rng.uniform(15, 22)
    posterior = _ZTube((-15, spine_y - 35, 8), (_Z_TOP + 50, spine_y - 40, 2), (38, width))
    canvas.paint_shape(posterior, Tissue.VISCERAL_FAT, region=canvas.thorax, wobble=0.06)
    upper = _Ellipsoid((rng.uniform(150, 175), -15, 5), (85, 70, rng.uniform(38, 48)))
    canvas.paint_shape(upper, Tissue.VISCERAL_FAT, region=canvas.thorax, wobble=0.08)


def _paint_heart(canvas):
    """Heart on the central tendon: epicardial fat, myocardium, left (arterial) and right blood pools."""
    rng = canvas.rng
    size = rng.uniform(0.9, 1.1)
    centre = (rng.uniform(25, 55), rng.uniform(-35, -15), rng.uniform(12, 30))
    heart = _Ellipsoid(centre, (60 * size, 48 * size, 64 * size), rng.uniform(0.45, 0.75))
    padding = _Ellipsoid(centre, (64 * size, 52 * size, 68 * size), heart.angle)
    canvas.paint_shape(padding, Tissue.VISCERAL_FAT, region=canvas.thorax, wobble=0.05)
    box = heart.box(canvas.grid)
    if _is_empty(box):
        return
    w, v, u = heart.local(canvas.grid, box)
    rho = np.sqrt(w * w + v * v + u * u)
    canvas.paint(box, rho < 1, Tissue.MYOCARDIUM, region=canvas.thorax)
    septum_line = 0.15 * u + 0.3 * u * u - 0.1  # the interventricular septum bulges into the right ventricle
    septum = np.abs(v - septum_line) < 0.06
    pool = (rho < 0.84) & ~septum
    canvas.paint(box, pool & (v > septum_line), Tissue.ARTERIAL_BLOOD, region=canvas.thorax)
    canvas.paint(box, pool & (v < septum_line), Tissue.VENOUS_BLOOD, region=canvas.thorax)


def _paint_airways_and_oesophagus(canvas):
    """Trachea and main bronchi (air in a cartilage ring) high in the chest, oesophagus behind the heart."""
    spine_y = canvas.patient.spine_y
    carina = canvas.rng.uniform(100, 125)
    trachea = [_ZTube((carina, spine_y - 40, 0), (_Z_TOP + 60, spine_y - 42, 0), (9, 10))]
    bronchi = [_ZTube((carina - 45, spine_y - 32, side * 32), (carina, spine_y - 40, 0), (6.5, 6.5))
               for side in (-1, 1)]
    for airway in trachea + bronchi:
        canvas.paint_shape(airway, Tissue.CARTILAGE, region=canvas.thorax)
    for airway in trachea + bronchi:
        canvas.paint_shape(airway, Tissue.GAS, region=canvas.thorax, below=0.75)
    oesophagus = _ZTube((-30, spine_y - 24, 8), (_Z_TOP + 60, spine_y - 24, -4), (7, 9))
    canvas.paint_shape(oesophagus, Tissue.MUSCLE, region=canvas.cavity)


# ----------------------------------------------------------------------------------------------
# Abdomen


def _paint_liver(canvas):
    """Liver: a large right lobe and a left lobe crossing the midline, moulded by the diaphragm."""
    rng, patient = canvas.rng, canvas.patient
    size = rng.uniform(0.88, 1.12)
    half_depth = 0.5 * (patient.half_depth_front + patient.half_depth_back)
    right = _Ellipsoid((rng.uniform(-75, -50), rng.uniform(-10, 10), -0.42 * patient.half_width),
                       (100 * size, 0.85 * half_depth * size, 0.52 * patient.half_width * size), rng.uniform(-0.2, 0.2))
    left = _Ellipsoid((rng.uniform(-45, -25), -0.45 * half_depth, rng.uniform(0.0, 0.2) * patient.half_width),
                      (55 * size, 0.38 * half_depth * size, 0.45 * patient.half_width * size), rng.uniform(-0.1, 0.3))
    box = _union_box(right.box(canvas.grid), left.box(canvas.grid))
    if _is_empty(box):
        return
    rho = np.minimum(right.rho(canvas.grid, box), left.rho(canvas.grid, box)) - 0.08 * canvas.fields.shape_noise[box]
    canvas.paint(box, rho < 1, Tissue.LIVER, region=canvas.abdomen, over=SOFT_CAVITY)
    porta = (right.centre[0] + 10, right.centre[1] - 0.3 * half_depth, right.centre[2] + 0.35 * right.radii[2])
    _paint_vessel_tree(canvas, box, Tissue.LIVER, porta, width=0.26)


def _union_box(first, second):
    return tuple(slice(min(a.start, b.start), max(a.stop, b.stop)) for a, b in zip(first, second))


def _paint_vessel_tree(canvas, box, organ, hilum, width):
    """Veins inside ``organ``: curves where both vessel fields vanish, widest near ``hilum``."""
    z, y, x = canvas.grid.coords(box)
    distance = np.sqrt((z - hilum[0]) ** 2 + (y - hilum[1]) ** 2 + (x - hilum[2]) ** 2)
    tube = width * np.clip(1.3 - distance / 120, 0.35, 1.3)
    strength = canvas.fields.vessel_a[box] ** 2 + canvas.fields.vessel_b[box] ** 2
    canvas.paint(box, strength < tube ** 2, Tissue.VENOUS_BLOOD, over=(organ,))


def _paint_gallbladder(canvas):
    """Gallbladder (bile, 12 HU) under the liver in two of three patients."""
    rng = canvas.rng
    present = rng.uniform() < 0.7
    size = rng.uniform(0.7, 1.2)
    centre = (rng.uniform(-110, -75), rng.uniform(-50, -25), -0.28 * canvas.patient.half_width)
    gallbladder = _Ellipsoid(centre, (35 * size, 20 * size, 16 * size), rng.uniform(-0.6, 0.6))
    if present:
        over = (Tissue.LIVER, Tissue.VISCERAL_FAT, Tissue.VENOUS_BLOOD)
        canvas.paint_shape(gallbladder, Tissue.FLUID, region=canvas.abdomen, over=over, wobble=0.04)


def _paint_spleen(canvas):
    """Spleen against the left posterolateral wall."""
    rng, patient = canvas.rng, canvas.patient
    size = rng.uniform(0.8, 1.2)
    centre = (rng.uniform(-65, -40), 0.35 * patient.half_depth_back, 0.62 * patient.half_width)
    spleen = _Ellipsoid(centre, (55 * size, 52 * size, 22 * size), rng.uniform(-0.9, -0.5))
    canvas.paint_shape(spleen, Tissue.SPLEEN, region=canvas.abdomen, over=SOFT_CAVITY, wobble=0.08)


def _paint_kidneys(canvas):
    """Kidneys beside the spine: enhancing cortex, medullary pyramids, sinus fat and pelvis."""
    rng, spine_y = canvas.rng, canvas.patient.spine_y
    for side, level in ((-1, -125.0), (1, -110.0)):  # the right kidney sits lower, under the liver
        size = rng.uniform(0.9, 1.1)
        centre = (level + rng.uniform(-15, 15), spine_y + rng.uniform(-5, 8), side * rng.uniform(58, 72))
        kidney = _Ellipsoid(centre, (55 * size, 27 * size, 31 * size), side * rng.uniform(0.35, 0.7))
        _paint_kidney(canvas, kidney, hilum_direction=-side)


def _paint_kidney(canvas, kidney, hilum_direction):
    """One kidney: a bean (ellipsoid with a medial notch), cortex rim, medulla, sinus fat, pelvis.

    ``hilum_direction`` is the sign of the local ``u`` axis that points to the spine.
    """
    box = kidney.box(canvas.grid)
    if _is_empty(box):
        return
    w, v, u = kidney.local(canvas.grid, box)
    rho = np.sqrt(w * w + v * v + u * u) - 0.05 * canvas.fields.shape_noise[box]
    medial = hilum_direction * u

    def around_hilum(depth, height, width):
        """Ellipsoid centred on the medial surface, reaching ``depth`` into the kidney."""
        return ((medial - 1) / depth) ** 2 + (v / width) ** 2 + (w / height) ** 2 < 1

    notch = around_hilum(0.45, 0.5, 0.3)
    region, over = canvas.abdomen, SOFT_CAVITY
    canvas.paint(box, (rho < 1) & ~notch, Tissue.KIDNEY_CORTEX, region, over)
    medulla = (rho < 0.74 + 0.06 * canvas.fields.mottle[box]) & ~notch
    canvas.paint(box, medulla, Tissue.KIDNEY_MEDULLA, region, over=(Tissue.KIDNEY_CORTEX,))
    canvas.paint(box, around_hilum(0.85, 0.45, 0.3), Tissue.VISCERAL_FAT, region,
                 over=(Tissue.KIDNEY_CORTEX, Tissue.KIDNEY_MEDULLA))  # sinus fat
    canvas.paint(box, around_hilum(0.75, 0.3, 0.16) & (medial < 0.9), Tissue.FLUID, region,
                 over=(Tissue.VISCERAL_FAT, Tissue.KIDNEY_MEDULLA))  # renal pelvis


def _paint_pancreas(canvas):
    """Pancreas: head near the duodenum, body over the aorta, tail towards the spleen."""
    rng, spine_y = canvas.rng, canvas.patient.spine_y
    level, size = rng.uniform(-100, -70), rng.uniform(0.85, 1.15)
    parts = [_Ellipsoid((level - 12, spine_y - 50, -22), (28 * size, 17 * size, 17 * size)),
             _Ellipsoid((level, spine_y - 55, 18), (14 * size, 10 * size, 30 * size), 0.15),
             _Ellipsoid((level + 8, spine_y - 30, 62), (14 * size, 11 * size, 26 * size), -0.6)]
    for part in parts:
        canvas.paint_shape(part, Tissue.PANCREAS, region=canvas.abdomen, over=SOFT_CAVITY, wobble=0.1)


def _paint_stomach(canvas):
    """Stomach under the left dome: wall, contents (fluid or food) and an anterior gas cap."""
    rng, patient = canvas.rng, canvas.patient
    fill = rng.uniform(0.75, 1.2)
    centre = (rng.uniform(-60, -35), -0.2 * patient.half_depth_front, 0.35 * patient.half_width)
    stomach = _Ellipsoid(centre, (55 * fill, 40 * fill, 42 * fill), rng.uniform(-0.5, 0.2))
    gas_level = centre[1] - stomach.radii[1] * rng.uniform(-0.1, 0.7)  # supine: gas collects in front
    content = Tissue.GUT_FLUID if rng.uniform() < 0.6 else Tissue.STOOL
    box = stomach.box(canvas.grid)
    if _is_empty(box):
        return
    rho = canvas.rho(stomach, box, wobble=0.06)
    _, y, _ = canvas.grid.coords(box)
    canvas.paint(box, rho < 1, Tissue.GUT_WALL, region=canvas.abdomen, over=SOFT_CAVITY)
    canvas.paint(box, rho < 0.9, content, over=(Tissue.GUT_WALL,))
    canvas.paint(box, (rho < 0.9) & (y < gas_level), Tissue.GAS, over=(content,))


def _paint_colon(canvas):
    """Ascending, transverse and descending colon: a thin wall around stool with gas bubbles."""
    rng, patient = canvas.rng, canvas.patient
    lateral = 0.66 * patient.half_width
    radius = rng.uniform(16, 24)
    ascending = _ZTube((-400, rng.uniform(-5, 20), -lateral),
                       (rng.uniform(-120, -85), rng.uniform(-10, 10), -0.95 * lateral), (radius, 0.9 * radius))
    descending = _ZTube((-400, rng.uniform(10, 30), lateral),
                        (rng.uniform(-95, -60), rng.uniform(0, 20), 0.95 * lateral), (0.8 * radius, 0.75 * radius))
    transverse = _Ellipsoid((rng.uniform(-135, -95), -0.55 * patient.half_depth_front, 0),
                            (radius, radius, 1.05 * lateral), rng.uniform(-0.1, 0.1))
    for segment in (ascending, descending, transverse):
        canvas.paint_shape(segment, Tissue.GUT_WALL, region=canvas.abdomen, over=SOFT_CAVITY, wobble=0.12)
        canvas.paint_shape(segment, Tissue.STOOL, over=(Tissue.GUT_WALL,), wobble=0.12, below=0.85)
    stool = canvas.labels == Tissue.STOOL
    canvas.labels[stool & (canvas.fields.mottle > 1.3)] = Tissue.GAS


def _paint_small_bowel(canvas):
    """Small-bowel loops filling the lower abdomen: tortuous tubes with a wall and varied contents.

    The loops are the curves where two smooth random fields both vanish, thickened to a ~12 mm
    radius. The tube radius shrinks above ``top`` and behind the mesenteric vessels, so loops end
    with closed walls instead of being cut by a plane. The content (fluid, oral contrast, gas,
    stool) changes along the bowel in patches of a few centimetres; gas pockets settle in front
    of a horizontal gas-fluid level.
    """
    rng, patient = canvas.rng, canvas.patient
    top = rng.uniform(-110, -70)
    radius = rng.uniform(1.0, 1.3)  # in field units: more, thicker loops and less mesenteric fat
    contents = [Tissue.GUT_FLUID, Tissue.ORAL_CONTRAST if patient.oral_contrast else Tissue.GUT_FLUID,
                Tissue.GAS, Tissue.STOOL]
    shares = np.array([0.5, 0.3, 0.12, 0.08])
    order = rng.permutation(len(contents))  # which content takes which range of the patch field
    box = canvas.grid.box((-1e4, -1e4, -1e4), (top + 40, patient.spine_y + 10, 1e4))
    if _is_empty(box):
        return
    z, y, _ = canvas.grid.coords(box)
    penalty = np.maximum(z - top, 0) / 20 + np.maximum(y - (patient.spine_y - 25), 0) / 12
    potential = canvas.fields.bowel_a[box] ** 2 + canvas.fields.bowel_b[box] ** 2 + penalty
    labels = canvas.labels[box]
    loops = (labels == Tissue.VISCERAL_FAT) & canvas.abdomen[box] & (potential < radius ** 2)
    labels[loops] = Tissue.GUT_WALL
    lumen = loops & (potential < (0.72 * radius) ** 2)
    bounds = ndtri(np.cumsum(shares[order])[:-1])  # Gaussian quantiles of the patch field
    patch = np.digitize(canvas.fields.shape_noise[box][lumen], bounds)
    labels[lumen] = np.array([contents[i] for i in order], np.uint8)[patch]
    _settle_gas(labels, np.broadcast_to(y, labels.shape))
    labels[(labels == Tissue.STOOL) & (canvas.fields.mottle[box] > 1.6)] = Tissue.GAS  # bubbles in stool


def _settle_gas(labels, y):
    """Gas rises to the front of each pocket: fluid fills the pocket behind its mean depth."""
    pockets, count = ndi.label(labels == Tissue.GAS)
    if count == 0:
        return
    level = np.asarray(ndi.mean(y, pockets, index=np.arange(count + 1)))
    labels[(pockets > 0) & (y > level[pockets])] = Tissue.GUT_FLUID


def _paint_mesenteric_vessels(canvas):
    """Small vessels crossing the visceral fat (same curve construction as the organ veins)."""
    box = _FULL
    strength = canvas.fields.vessel_a ** 2 + canvas.fields.vessel_b ** 2
    canvas.paint(box, strength < 0.012, Tissue.VENOUS_BLOOD, region=canvas.abdomen, over=SOFT_CAVITY)


def _paint_great_vessels(canvas):
    """Aorta (ascending and descending), pulmonary trunk, venae cavae, portal vein, SMA and SMV."""
    rng, spine_y = canvas.rng, canvas.patient.spine_y
    aorta_radius = rng.uniform(10, 13)
    arch = rng.uniform(140, 160)
    hiatus = rng.uniform(-40, -15)
    thoracic = _ZTube((hiatus, spine_y - 14, 22), (arch, spine_y - 18, 24), (aorta_radius, aorta_radius))
    abdominal = _ZTube((-400, spine_y - 30, 10), (hiatus, spine_y - 14, 22), (aorta_radius * 0.9, aorta_radius * 0.9))
    ascending = _ZTube((60, -30, 4), (arch, -10, 6), (aorta_radius * 1.25, aorta_radius * 1.25))
    pulmonary = _ZTube((65, -30, 30), (105, -25, 26), (13, 13))
    superior_cava = _ZTube((55, -20, -26), (_Z_TOP + 60, -10, -24), (10, 10))
    inferior_cava = _ZTube((-400, spine_y - 22, -24), (15, spine_y - 12, -28), (10, 14))
    portal = _ZTube((-95, spine_y - 48, 4), (-55, spine_y - 45, -45), (8, 8))
    mesenteric = [_ZTube((-400, spine_y - 62, 12), (-90, spine_y - 45, 10), (4, 4)),
                  _ZTube((-400, spine_y - 62, -6), (-95, spine_y - 50, 0), (6, 6))]
    everywhere = tuple(t for t in Tissue if t not in (Tissue.AIR, Tissue.SKIN, Tissue.SUBCUTANEOUS_FAT))
    for vessel, tissue in ((thoracic, Tissue.ARTERIAL_BLOOD), (abdominal, Tissue.ARTERIAL_BLOOD),
                           (ascending, Tissue.ARTERIAL_BLOOD), (pulmonary, Tissue.VENOUS_BLOOD),
                           (superior_cava, Tissue.VENOUS_BLOOD), (inferior_cava, Tissue.VENOUS_BLOOD),
                           (portal, Tissue.VENOUS_BLOOD), (mesenteric[0], Tissue.ARTERIAL_BLOOD),
                           (mesenteric[1], Tissue.VENOUS_BLOOD)):
        canvas.paint_shape(vessel, tissue, region=canvas.cavity, over=everywhere)
    _paint_aortic_calcifications(canvas, abdominal, aorta_radius)


def _paint_aortic_calcifications(canvas, aorta, radius):
    """0-4 calcified plaques (bone-like) on the aortic wall of older patients."""
    rng = canvas.rng
    count = int(rng.integers(0, 5))
    plaques = [(rng.uniform(-230, -20), rng.uniform(0, 2 * np.pi), rng.uniform(1.5, 3.0)) for _ in range(count)]
    for z, angle, size in plaques:
        t = (z - aorta.low[0]) / (aorta.high[0] - aorta.low[0])
        centre_y = aorta.low[1] + t * (aorta.high[1] - aorta.low[1]) + radius * math.sin(angle)
        centre_x = aorta.low[2] + t * (aorta.high[2] - aorta.low[2]) + radius * math.cos(angle)
        canvas.paint_shape(_Ellipsoid((z, centre_y, centre_x), (size * 2, size, size)), Tissue.CORTICAL_BONE,
                           region=canvas.cavity)


# ----------------------------------------------------------------------------------------------
# Bones


def _paint_spine(canvas):
    """Vertebrae repeating every 30-36 mm along z, growing from thoracic to lumbar size.

    Within one period (``level`` 0..1): intervertebral disc (0-0.18), then the vertebral body;
    the pedicles and the lamina around the spinal canal (0.25-0.85), the transverse processes
    (0.35-0.65) and the spinous process, which slopes down and shows in the upper half (0.5-1).
    """
    rng, grid, spine_y = canvas.rng, canvas.grid, canvas.patient.spine_y
    period, phase = rng.uniform(30, 36), rng.uniform(0, 1)
    box = grid.box((-1e4, spine_y - 35, -50), (1e4, spine_y + 75, 50))
    if _is_empty(box):
        return
    z, y, x = grid.coords(box)
    level = (z / period + phase) % 1.0
    lumbar = np.clip(-z / 150, 0, 1)
    body_rx, body_ry = 17 + 7 * lumbar, 14 + 3 * lumbar
    body = (x / body_rx) ** 2 + ((y - spine_y) / body_ry) ** 2 < 1
    disc = level < 0.18
    canal_y = spine_y + body_ry + 8
    canal = (x / 8.5) ** 2 + ((y - canal_y) / 7.5) ** 2
    arch_level = (level > 0.25) & (level < 0.85)
    lamina = (canal < 2.6) & (canal >= 1) & (y > canal_y - 2) & arch_level
    pedicles = (np.abs(x) > 6) & (np.abs(x) < 12.5) & (y > spine_y) & (y < canal_y) & arch_level
    spinous_length = 38 - 8 * lumbar
    spinous = ((np.abs(x) < 4.5 - 2.0 * (y - canal_y) / spinous_length) & (y > canal_y + 8)
               & (y < canal_y + spinous_length) & (level > 0.5))
    transverse = ((np.abs(y - canal_y + 2) < 4.5 - 0.06 * np.abs(x)) & (np.abs(x) < 22 + 6 * lumbar)
                  & (np.abs(x) > 8) & (level > 0.35) & (level < 0.65))
    bone = (body & ~disc) | lamina | pedicles | spinous | transverse
    labels = canvas.labels[box]
    inside = canvas.depth[box] > 4  # never through the skin of a thin patient
    labels[bone & inside] = Tissue.TRABECULAR_BONE
    labels[body & disc & inside] = Tissue.DISC
    labels[(canal < 1) & inside] = Tissue.CSF


def _paint_ribs_and_sternum(canvas):
    """Ribs running obliquely down and forward in the chest wall; costal cartilage; sternum; scapulae.

    A rib is a band of constant ``z + slope * arc`` (arc measured from the spine), so its
    cross-section slides along the wall from slice to slice like real ribs do. Only voxels in
    the band of the chest wall that can hold a rib are evaluated.
    """
    rng, patient, grid = canvas.rng, canvas.patient, canvas.grid
    period, slope, offset = rng.uniform(26, 32), rng.uniform(0.5, 0.7), rng.uniform(0, 1)
    right_shift = rng.uniform(-0.2, 0.2)
    scapula_top = rng.uniform(80, 110)
    rib_centre_depth = canvas.wall_depth - 5.0  # ribs lie at the inner surface of the muscle wall
    wall_band = np.nonzero(np.abs(canvas.depth - rib_centre_depth) < 5.5)
    z, y, x = (axis[i] for axis, i in zip((grid.z, grid.y, grid.x), wall_band))
    from_spine = np.pi - np.abs(np.arctan2(x, -y))  # 0 at the spine, pi at the sternum
    arc = from_spine * 0.5 * (patient.half_width + patient.half_depth_back)
    phase = (z + slope * arc) / period + offset + np.where(x < 0, right_shift, 0)
    across = (phase - np.round(phase)) * period / 4.5           # rib height ~9 mm
    through = (canvas.depth[wall_band] - rib_centre_depth[wall_band]) / 4.5  # rib thickness ~9 mm
    in_rib = across ** 2 + through ** 2 < 1
    # Lowest rib level: the floating ribs reach far down at the back, the costal margin rises in front.
    costal_margin = -150 + 110 * np.clip((from_spine - 1.2) / (np.pi - 1.2), 0, 1)
    in_cage = (z > costal_margin) & (from_spine > 0.3)
    cartilage = from_spine > np.pi - 0.8
    labels = canvas.labels
    labels[tuple(i[in_rib & in_cage & ~cartilage] for i in wall_band)] = Tissue.TRABECULAR_BONE
    labels[tuple(i[in_rib & in_cage & cartilage & (from_spine < np.pi - 0.22)] for i in wall_band)] = Tissue.CARTILAGE
    sternum = (np.abs(x) < 15) & (np.abs(through) < 1.1) & (y < 0) & (z > -25)
    labels[tuple(i[sternum] for i in wall_band)] = Tissue.TRABECULAR_BONE
    _paint_scapulae(canvas, scapula_top)


def _paint_scapulae(canvas, top):
    """Thin shoulder-blade plates in the back muscles of the upper chest."""
    grid = canvas.grid
    box = grid.box((top - 40, 0, -1e4), (1e4, 1e4, 1e4))
    if _is_empty(box):
        return
    z, y, x = grid.coords(box)
    depth = canvas.depth[box]
    fat_depth = canvas.fat_depth[box]
    from_spine = np.pi - np.abs(np.arctan2(x, -y))
    blade = ((from_spine > 0.45) & (from_spine < 1.25) & (np.abs(depth - fat_depth - 7) < 2.2 + 0.02 * (z - top))
             & (z > top - 25 * np.abs(from_spine - 0.85)))
    canvas.labels[box][blade] = Tissue.TRABECULAR_BONE


def _split_cortical_bone(canvas):
    """Turn the outer 1 mm of every bone (in-plane) into cortical bone."""
    bone = canvas.labels == Tissue.TRABECULAR_BONE
    iterations = max(1, round(1.0 / min(canvas.grid.spacing[1:])))
    in_plane = ndi.generate_binary_structure(2, 1)[None]
    core = ndi.binary_erosion(bone, in_plane, iterations=iterations)
    canvas.labels[bone & ~core] = Tissue.CORTICAL_BONE


# ----------------------------------------------------------------------------------------------
# Rendering: HU table, lung parenchyma, lesions, scanner blur


def _tissue_table(patient, rng):
    """Per-tissue (mean HU, fine-grain std, mottle std) for this patient's contrast phase.

    ``phase`` 0 is late arterial (bright aorta and renal cortex, liver barely enhanced), 1 is
    portal venous (liver and veins enhanced, kidneys nephrographic). Values follow clinical CT.
    """
    phase = patient.contrast_phase
    oral = rng.uniform(180, 320)
    fat_shift = rng.uniform(-12, 12)  # fat density varies between patients and scanners
    table = {
        Tissue.AIR: (AIR_HU, 0, 0),
        Tissue.SKIN: (35, 4, 2),
        Tissue.SUBCUTANEOUS_FAT: (-105 + fat_shift, 5, 9),
        Tissue.MUSCLE: (52 + 8 * phase, 5, 3),
        Tissue.VISCERAL_FAT: (-95 + fat_shift, 5, 11),
        Tissue.LUNG: (-870, 0, 0),  # textured by _add_lung_parenchyma
        Tissue.MYOCARDIUM: (75 + 30 * phase, 5, 3),
        Tissue.ARTERIAL_BLOOD: (250 - 90 * phase, 4, 2),
        Tissue.VENOUS_BLOOD: (90 + 80 * phase, 4, 2),
        Tissue.LIVER: (60 + 55 * phase, 5, 4),
        Tissue.SPLEEN: (90 + 30 * phase, 5, 5),
        Tissue.KIDNEY_CORTEX: (190 - 20 * phase, 5, 3),
        Tissue.KIDNEY_MEDULLA: (110 + 70 * phase, 5, 3),
        Tissue.PANCREAS: (95 - 10 * phase, 6, 10),
        Tissue.FLUID: (12, 2, 1),
        Tissue.GUT_WALL: (75 + 15 * phase, 5, 3),
        Tissue.GUT_FLUID: (18, 3, 4),
        Tissue.ORAL_CONTRAST: (oral, 6, 15),
        Tissue.STOOL: (-60, 15, 60),
        Tissue.GAS: (-995, 3, 0),
        Tissue.CORTICAL_BONE: (1200, 30, 0),
        Tissue.TRABECULAR_BONE: (230, 30, 20),
        Tissue.CARTILAGE: (120, 8, 4),
        Tissue.DISC: (85, 5, 3),
        Tissue.CSF: (15, 3, 2),
        Tissue.LESION: (40, 5, 3),  # not rendered from here: lesions are blended in afterwards
    }
    base, grain, mottle = (np.array([table[t][i] for t in Tissue], np.float32) for i in range(3))
    soft = np.array([t not in (Tissue.AIR, Tissue.GAS, Tissue.LUNG) for t in Tissue])
    base[soft] += rng.normal(0, 3, soft.sum()).astype(np.float32)  # scanner calibration and patient variety
    return base, grain, mottle


def _render_hu(canvas):
    """HU = tissue mean + grain and mottle fields scaled per tissue; anti-aliased skin surface."""
    base, grain, mottle = _tissue_table(canvas.patient, canvas.rng)
    labels = canvas.labels
    hu = base[labels]
    hu += grain[labels] * canvas.fields.grain
    hu += mottle[labels] * canvas.fields.mottle
    # The skin is the strongest edge; covering each voxel by the fraction of it inside the body
    # avoids the staircase a binary mask gives (and the spiky partial-volume histogram with it).
    depth_voxels = canvas.depth * (canvas.grid.scale / min(canvas.grid.spacing[1:]))
    surface = np.abs(depth_voxels) < 0.5
    coverage = depth_voxels[surface] + 0.5
    hu[surface] = AIR_HU + (base[Tissue.SKIN] - AIR_HU) * coverage
    return hu


def _add_lung_parenchyma(hu, canvas):
    """Lung: -890 HU in front to -800 HU at the back (gravity), mottle and a vessel tree."""
    lung = canvas.labels == Tissue.LUNG
    if not lung.any():
        return
    index = np.nonzero(lung)
    z, y, x = (axis[i] for axis, i in zip((canvas.grid.z, canvas.grid.y, canvas.grid.x), index))
    patient = canvas.patient
    dependent = np.clip((y + patient.half_depth_front) / (patient.half_depth_front + patient.half_depth_back), 0, 1)
    parenchyma = -890 + 90 * dependent ** 2 + 18 * canvas.fields.mottle[index] + 8 * canvas.fields.grain[index]
    hilum_z, hilum_y, hilum_x = 70.0, patient.spine_y - 35, np.where(x < 0, -45.0, 45.0)
    distance = np.sqrt((z - hilum_z) ** 2 + (y - hilum_y) ** 2 + (x - hilum_x) ** 2)
    width = 0.085 + 0.17 * np.clip(1 - distance / 150, 0, 1)
    curve = canvas.fields.vessel_a[index] ** 2 + canvas.fields.vessel_b[index] ** 2
    vessel = np.exp(-curve / (2 * width ** 2))
    hu[index] = parenchyma + (40 - parenchyma) * vessel


@dataclasses.dataclass(frozen=True)
class _LesionKind:
    organ: Tissue
    contrast: tuple  # HU relative to the organ (or absolute when ``absolute``)
    edge_mm: float
    absolute: bool = False


_LESION_KINDS = (
    (0.25, _LesionKind(Tissue.LIVER, (5, 15), 0.5, absolute=True)),     # simple cyst
    (0.25, _LesionKind(Tissue.LIVER, (-70, -35), 1.5)),                  # hypodense metastasis
    (0.10, _LesionKind(Tissue.LIVER, (30, 60), 1.2)),                    # hypervascular lesion
    (0.20, _LesionKind(Tissue.LUNG, (-10, 50), 0.6, absolute=True)),     # solid nodule
    (0.10, _LesionKind(Tissue.KIDNEY_CORTEX, (0, 15), 0.5, absolute=True)),  # renal cyst
    (0.10, _LesionKind(Tissue.SPLEEN, (-50, -25), 1.0)),                 # splenic lesion
)


def _add_lesions(hu, canvas, rng):
    """Up to 8 spherical lesions of 3-15 mm with soft edges, each confined to its host organ."""
    count = min(int(rng.poisson(2.5)), 8)
    weights = np.array([w for w, _ in _LESION_KINDS])
    for _ in range(count):
        kind = _LESION_KINDS[rng.choice(len(_LESION_KINDS), p=weights / weights.sum())][1]
        diameter = math.exp(rng.uniform(math.log(3), math.log(15)))
        level = rng.uniform(*kind.contrast)
        _paint_lesion(hu, canvas, rng, kind, diameter, level)


def _paint_lesion(hu, canvas, rng, kind, diameter, level):
    host = np.flatnonzero(canvas.labels == kind.organ)
    if host.size == 0:
        return
    centre = np.unravel_index(host[rng.integers(host.size)], canvas.labels.shape)
    radius = diameter / 2
    reach = [int(math.ceil((radius + 2 * kind.edge_mm) / step)) for step in canvas.grid.spacing]
    box = tuple(slice(max(c - r, 0), c + r + 1) for c, r in zip(centre, reach))
    axes_mm = [(np.arange(part.start, min(part.stop, size)) - c) * step
               for part, c, size, step in zip(box, centre, canvas.labels.shape, canvas.grid.spacing)]
    offsets = np.meshgrid(*axes_mm, indexing="ij")
    distance = np.sqrt(sum(o ** 2 for o in offsets))
    weight = np.clip((radius - distance) / kind.edge_mm + 0.5, 0, 1) * (canvas.labels[box] == kind.organ)
    target = level if kind.absolute else np.median(hu[box][canvas.labels[box] == kind.organ]) + level
    hu[box] += weight * (target - hu[box])
    canvas.labels[box][weight > 0.5] = Tissue.LESION


def _apply_scanner_blur(hu, spacing):
    """Gaussian PSF (0.65 mm in-plane, 35 % of the slice spacing in z), whole HU, exact air."""
    sigma = (0.35, 0.65 / spacing[1], 0.65 / spacing[2])
    blurred = ndi.gaussian_filter(hu, sigma, mode="nearest", truncate=3.0)
    np.rint(blurred, out=blurred)
    return np.clip(blurred, AIR_HU, 3071.0).astype(np.float32, copy=False)


# ----------------------------------------------------------------------------------------------
# Dataset on disk


def volume_seeds(seed, counts):
    """Seed of every volume: split and index are mixed into ``seed`` (``SeedSequence``).

    A split's volumes do not depend on the other splits' sizes, so growing the training set
    keeps the validation and test volumes.
    """
    return {split: [int(np.random.SeedSequence([int(seed), SPLITS.index(split), index]).generate_state(1)[0])
                    for index in range(counts[split])] for split in SPLITS}


def generate_dataset(out_dir=DEFAULT_DIR, n_train=8, n_val=2, n_test=2, shape=DEFAULT_SHAPE, seed=0,
                     overwrite=False, spacing=DEFAULT_SPACING, progress=True):
    """Write phantoms as int16 NIfTI to ``out_dir/{train,val,test}/`` and then ``manifest.json``.

    Returns ``{split: [Path, ...]}``. A complete set (one with a manifest) is only replaced when
    ``overwrite`` is true; the files of an incomplete set (no manifest) are always replaced.
    The manifest goes first and comes back last, so an interrupted run never looks complete.
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    shape, spacing = _validated_geometry(shape, spacing)
    counts = _validated_counts(n_train, n_val, n_test)
    manifest_path = out_dir / MANIFEST_NAME
    if manifest_path.exists() and not overwrite:
        raise RunDirectoryError(f"{out_dir}: holds a phantom dataset already; "
                                "pass overwrite=True (--overwrite) to replace it")
    manifest_path.unlink(missing_ok=True)
    _remove_stale_files(out_dir)
    seeds = volume_seeds(seed, counts)
    jobs = [(split, index, volume_seed) for split in SPLITS for index, volume_seed in enumerate(seeds[split])]
    started = time.perf_counter()
    entries = {split: [] for split in SPLITS}
    for split, index, volume_seed in tqdm(jobs, desc="phantoms", unit="vol", disable=not progress):
        path = out_dir / split / FILE_PATTERN.format(index=index)
        _write_nifti(path, make_phantom(volume_seed, shape, spacing), spacing)
        entries[split].append({"file": path.relative_to(out_dir).as_posix(), "seed": volume_seed,
                               "bytes": path.stat().st_size, "sha256": _sha256(path)})
    manifest = dict(_settings_record(seed, shape, spacing, counts), generator="utils.data.phantom", files=entries,
                    dtype="int16", unit="HU", array_axes="NIfTI (x, y, z): the (D, H, W) volume transposed",
                    seconds=round(time.perf_counter() - started, 2))
    write_json(manifest_path, manifest)
    return _files_from_manifest(out_dir, manifest)


def find_dataset(out_dir=DEFAULT_DIR, n_train=8, n_val=2, n_test=2, shape=DEFAULT_SHAPE, seed=0,
                 spacing=DEFAULT_SPACING):
    """``{split: [Path, ...]}`` of a complete phantom set in ``out_dir`` with these settings, else None.

    Complete means: the manifest exists and was written by this generator version for the same
    seed, shape, spacing and counts, and every listed file is there with the recorded size.
    """
    out_dir = Path(out_dir)
    shape, spacing = _validated_geometry(shape, spacing)
    wanted = _settings_record(seed, shape, spacing, _validated_counts(n_train, n_val, n_test))
    manifest = _read_manifest(out_dir / MANIFEST_NAME)
    if manifest is None or not _manifest_matches(out_dir, manifest, wanted):
        return None
    return _files_from_manifest(out_dir, manifest)


def ensure_default_dataset(out_dir=DEFAULT_DIR, n_train=8, n_val=2, n_test=2, shape=DEFAULT_SHAPE, seed=0,
                           spacing=DEFAULT_SPACING, progress=True):
    """Return ``{split: [Path, ...]}`` of the phantom set in ``out_dir``, generating it if needed.

    An existing set is reused only if :func:`find_dataset` accepts it; anything else (no
    manifest, other settings, a missing or truncated file) is regenerated from scratch.
    """
    settings = dict(n_train=n_train, n_val=n_val, n_test=n_test, shape=shape, seed=seed, spacing=spacing)
    found = find_dataset(out_dir, **settings)
    if found is not None:
        return found
    return generate_dataset(out_dir, overwrite=True, progress=progress, **settings)


def _settings_record(seed, shape, spacing, counts):
    """The manifest fields that must match for a set to be reused (JSON types, as read back)."""
    return {"generator_version": GENERATOR_VERSION, "seed": int(seed), "shape": list(shape),
            "spacing": list(spacing), "counts": counts}


def _validated_counts(n_train, n_val, n_test):
    counts = {"train": int(n_train), "val": int(n_val), "test": int(n_test)}
    if min(counts.values()) < 0 or sum(counts.values()) == 0:
        raise ConfigError(f"phantom counts must be >= 0 and not all zero, got {counts}")
    return counts


def _read_manifest(path):
    """The manifest as a dict, or None when it is missing or unreadable (then the set is rebuilt)."""
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _manifest_matches(out_dir, manifest, wanted):
    if any(manifest.get(key) != value for key, value in wanted.items()):
        return False
    try:
        entries = [entry for split in SPLITS for entry in manifest["files"][split]]
        if [len(manifest["files"][split]) for split in SPLITS] != [wanted["counts"][s] for s in SPLITS]:
            return False
        return all((out_dir / entry["file"]).is_file() and (out_dir / entry["file"]).stat().st_size == entry["bytes"]
                   for entry in entries)
    except (KeyError, TypeError):
        return False


def _files_from_manifest(out_dir, manifest):
    return {split: [out_dir / entry["file"] for entry in manifest["files"][split]] for split in SPLITS}


def _remove_stale_files(out_dir):
    """Delete phantom volumes and crash leftovers of an earlier, incomplete or replaced set."""
    for split in SPLITS:
        folder = out_dir / split
        if folder.is_dir():
            for path in list(folder.glob("phantom_*.nii.gz")) + list(folder.glob(".phantom_*.tmp*")):
                path.unlink()


def _write_nifti(path, hu, spacing):
    """Write ``hu`` (D, H, W) as int16 NIfTI (x, y, z) atomically.

    The affine maps the array like a DICOM axial series converted without reordering: columns
    run to the patient's left and rows to the back (hence the negative x and y steps in RAS+
    world coordinates), slices run to the head. ``pixdim`` holds the positive spacing.
    """
    import nibabel as nib

    step_z, step_y, step_x = spacing
    data = np.ascontiguousarray(hu.transpose(2, 1, 0)).astype(np.int16)
    affine = np.diag([-step_x, -step_y, step_z, 1.0])
    image = nib.Nifti1Image(data, affine)
    image.header.set_data_dtype(np.int16)
    image.header.set_xyzt_units("mm", "sec")
    image.header.set_qform(affine, code=1)
    image.header.set_sform(affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(image, tmp)


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------
# Command line


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m utils.phantom",
                                     description="Write the synthetic CT phantom dataset (int16 NIfTI, HU).")
    parser.add_argument("--out", type=Path, default=DEFAULT_DIR, help="output folder (default: %(default)s)")
    parser.add_argument("--n-train", type=int, default=DEFAULT_COUNTS["train"])
    parser.add_argument("--n-val", type=int, default=DEFAULT_COUNTS["val"])
    parser.add_argument("--n-test", type=int, default=DEFAULT_COUNTS["test"])
    parser.add_argument("--shape", type=int, nargs=3, default=list(DEFAULT_SHAPE), metavar=("D", "H", "W"))
    parser.add_argument("--spacing", type=float, nargs=3, default=list(DEFAULT_SPACING), metavar=("Z", "Y", "X"),
                        help="voxel size in mm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="regenerate even if a matching dataset exists")
    args = parser.parse_args(argv)
    settings = dict(n_train=args.n_train, n_val=args.n_val, n_test=args.n_test, shape=tuple(args.shape),
                    spacing=tuple(args.spacing), seed=args.seed)
    try:
        if not args.overwrite and find_dataset(args.out, **settings) is not None:
            print(f"phantom dataset in {args.out.resolve()} is up to date (use --overwrite to rebuild it)")
            return 0
        started = time.perf_counter()
        files = generate_dataset(args.out, overwrite=True, **settings)
    except (ConfigError, RunDirectoryError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    summary = ", ".join(f"{len(files[split])} {split}" for split in SPLITS)
    print(f"wrote phantom dataset to {args.out.resolve()} ({summary}; shape {tuple(args.shape)}, "
          f"spacing {tuple(args.spacing)} mm) in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
