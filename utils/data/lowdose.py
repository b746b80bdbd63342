"""Simulated low-dose CT noise: a projection-domain reference and a fast TensorFlow twin.

Reference form (:func:`simulate_lowdose_slice`, numpy/scikit-image, CPU)
------------------------------------------------------------------------
A clean slice in HU becomes the same slice as a scan at a fraction ``dose`` of its own dose:

1. HU -> linear attenuation ``mu = MU_WATER * (1 + HU / 1000)`` in 1/mm (clipped at 0, so air
   and the -3024 HU padding outside the field of view attenuate nothing).
2. Parallel-beam forward projection with :func:`skimage.transform.radon` over ``n_views``
   angles in [0, 180) degrees, one detector bin per pixel, times the pixel spacing in mm: the
   sinogram holds physical, dimensionless line integrals ``p``. scikit-image is the field's
   usual library for this, its Radon transform is exact for the pixel grid and runs on the
   CPU; TensorFlow has no Radon transform.
3. Photon noise. The clean slice is taken to be a *full-dose* scan whose own noise is already
   in it, so only the *extra* noise of going down to ``dose`` is drawn. The quantum variance of
   a log-transformed count with mean ``I e^-p`` is ``1 / (I e^-p)``; at incident count ``I0 * dose``
   it is ``1 / dose`` times the full-dose variance, so the extra variance is ``(1 / dose - 1)``
   times the full-dose variance. It is realised exactly (to first order in the log) by one
   Poisson draw at the *added-noise* incident count::

       I_add = I0 * dose / (1 - dose)            counts ~ Poisson(I_add e^-p) + N(0, s_add^2)

   with the electronic variance ``s_add^2 = s_e^2 (1 + dose) / (1 - dose)``, which makes the
   electronic part of the extra variance in the log domain ``s_e^2 (1 / dose^2 - 1) / (I0 e^-p)^2``,
   the difference between the electronic term of a scan at ``I0 * dose`` and at ``I0``. The total
   noise (the scan's own plus the added) therefore scales like ``1 / sqrt(dose)``. At ``dose = 1``
   nothing is added. Counts below ``MIN_COUNT`` are clamped (photon starvation) before
   ``p_noisy = -log(counts / I_add)``.
4. ``p_noisy - p`` is reconstructed by filtered back-projection (:func:`skimage.transform.iradon`,
   ramp filter, linear interpolation), converted back to HU (``1000 * d_mu / MU_WATER``) and added
   to the clean slice. FBP is linear, so this is exactly the difference between the noisy and the
   noise-free reconstructions: the few-view streaks of the noise-free reconstruction never reach
   the image, only noise does.

``I0`` is :data:`FULL_DOSE_PHOTONS` per view for a 1 mm wide ray at :data:`REFERENCE_VIEWS`
views. A ray here is one pixel wide, and a simulation with ``n_views`` views lumps
``REFERENCE_VIEWS / n_views`` real views into one, so the incident count of one simulated ray is
``FULL_DOSE_PHOTONS * spacing_mm * REFERENCE_VIEWS / n_views`` (electronic variance likewise summed
over the lumped views). The image noise then does not depend on ``n_views`` (the FBP noise gain
falls like ``1 / n_views``), only the angular sampling of its texture does. The default 360 views
(0.5 degree) is a speed choice: a 512 x 512 slice takes about 1.5 s on one CPU core
(``benchmarks/lowdose.py``); real scanners take about 1000 views.

Fast form (:func:`fast_lowdose_noise_tf`, stateless TensorFlow, for tf.data)
---------------------------------------------------------------------------
Stationary Gaussian noise with the reference's noise power spectrum, times a smooth standard
deviation map from the clean image itself::

    noise_HU(x) = std_HU(x) * t(x),    t = F^-1[ sqrt(H W NPS(f)) e^{i phi(f)} ],  phi ~ U[0, 2 pi) (stateless, seeded)

(random-phase spectral synthesis, :func:`nps_texture_tf`; it has the NPS of white noise filtered by
``sqrt(NPS)`` at a third of its cost).

* ``NPS(f)`` (frequency ``f`` in cycles/pixel) is the analytic spectrum of ramp-filtered
  parallel-beam FBP with linear interpolation, ``|f| sinc(f)^4`` below 0.5 cycles/pixel plus the
  aliases that the interpolation leaks back onto the pixel grid (:func:`fbp_nps_2d`), normalised
  to unit variance on the patch grid. Zero at zero frequency, peaked at mid frequency (about 0.28
  cycles/pixel), still about 70 % of the peak at 0.5.
* ``std_HU(x)^2 = GAIN * (1000 / MU_WATER)^2 / spacing^2 * mean_k v(p_k(x))``, the FBP variance
  formula of the reference (``v(p) = e^p / I_add + s_add^2 e^2p / I_add^2``, the log-count variance
  of one ray) averaged over four ray directions through ``x`` (row, column and both diagonals, the
  diagonals summed on a 4 x 4 pooled grid) instead of all ``n_views``. ``GAIN`` is the variance that the reference FBP gives to white sinogram noise of
  unit variance (measured once with scikit-image, :func:`fbp_noise_gain`). The patch's line integrals
  ``p_k`` are its own (windowed intensities back to HU, then ``mu``), plus water outside the patch
  where the body goes on beyond it: when a row (column) starts or ends in tissue (HU > -500 at the
  border), half of ``max(0, body_mm - patch length)`` of water is added for that side (a diagonal
  gets the mean of the row and column additions through its pooled cell's first pixel). A full slice
  with air around the body therefore gets no addition; a patch cut from inside an abdomen of
  ``body_mm`` water-equivalent diameter gets the rest of the body. The std map is thus stronger
  behind dense, wide anatomy (long rows or columns of tissue or bone), as in the reference.

It costs one inverse FFT per slice and some reductions, most of them on the profiles and the
pooled grid; the test suite checks its NPS and std map against the reference on the same slices
(``tests/test_lowdose.py``).
"""

import functools

import numpy as np

from utils.base.errors import ConfigError, DataError

MU_WATER = 0.0192  # linear attenuation of water at about 70 keV, 1/mm
FULL_DOSE_PHOTONS = 2.0e6  # full-dose incident photons per view for a 1 mm wide ray at REFERENCE_VIEWS views
REFERENCE_VIEWS = 1000  # views per rotation of the scanner that FULL_DOSE_PHOTONS refers to
DEFAULT_VIEWS = 360  # views simulated by the reference form (speed; see the module notes)
ELECTRONIC_NOISE_VARIANCE = 10.0  # detector electronic noise, counts^2 per ray per real view
MIN_COUNT = 1.0  # counts are clamped here before the log (photon starvation)
TISSUE_HU = -500.0  # a patch border above this is inside the body (fast form's context rule)
DEFAULT_BODY_MM = 250.0  # water-equivalent body diameter assumed around patches (fast form)
DEFAULT_PIXEL_SPACING_MM = 0.7  # pixel spacing assumed for windowed arrays that carry none
DIAGONAL_POOL = 4  # the fast form sums its diagonal rays on a grid pooled 4 x 4


# ----------------------------------------------------------------------------- settings
def check_dose(dose):
    """Return ``dose`` as a float, or raise ConfigError unless 0 < dose <= 1."""
    try:
        value = float(dose)
    except (TypeError, ValueError):
        raise ConfigError(f"dose must be a number in (0, 1] (fraction of the scan's dose kept), got {dose!r}") from None
    if not np.isfinite(value) or not 0 < value <= 1:
        raise ConfigError(f"dose must be in (0, 1] (fraction of the scan's dose kept; 0.25 = quarter dose), got {dose!r}")
    return value


def check_spacing(pixel_spacing_mm, where="image"):
    """In-plane pixel spacing in mm as one float; DataError when it is missing, unknown or not square."""
    if pixel_spacing_mm is None:
        raise DataError(where, "pixel spacing unknown: the low-dose simulation needs it in mm (line integrals are physical)")
    values = np.atleast_1d(np.asarray(pixel_spacing_mm, dtype=np.float64)).ravel()
    if values.size not in (1, 2) or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise DataError(where, f"pixel spacing must be one or two positive numbers in mm, got {pixel_spacing_mm!r}")
    if values.size == 2 and abs(values[0] - values[1]) > 1e-3 * values.max():
        raise DataError(where, f"the low-dose simulation needs square pixels, got spacing {tuple(values)} mm")
    return float(values[0])


def photon_counts(dose, pixel_spacing_mm, n_views, photons=FULL_DOSE_PHOTONS, electronic_variance=ELECTRONIC_NOISE_VARIANCE):
    """Incident count and electronic variance of the *added* noise per simulated ray.

    ``(I_add, s_add^2)`` with ``I_add = I0 * dose / (1 - dose)`` and ``s_add^2 = s_e^2 (1 + dose) / (1 - dose)``,
    where ``I0 = photons * spacing * REFERENCE_VIEWS / n_views`` and ``s_e^2 = electronic_variance *
    REFERENCE_VIEWS / n_views`` (a simulated view lumps several real ones). ``(inf, 0)`` at dose 1.
    """
    dose = check_dose(dose)
    lumped = REFERENCE_VIEWS / float(n_views)
    full = photons * pixel_spacing_mm * lumped
    if dose == 1.0:
        return np.inf, 0.0
    return full * dose / (1.0 - dose), electronic_variance * lumped * (1.0 + dose) / (1.0 - dose)


def hu_to_mu(hu):
    """Linear attenuation in 1/mm, clipped at 0 (air and FOV padding attenuate nothing)."""
    return np.clip(MU_WATER * (1.0 + np.asarray(hu, dtype=np.float64) / 1000.0), 0.0, None)


def _angles(n_views):
    n_views = int(n_views)
    if n_views < 2:
        raise ConfigError(f"n_views must be >= 2, got {n_views}")
    return np.linspace(0.0, 180.0, n_views, endpoint=False)


def _square(mu):
    """Pad ``mu`` with zeros to a square (radon needs one); return it and the crop back."""
    h, w = mu.shape
    n = max(h, w)
    top, left = (n - h) // 2, (n - w) // 2
    padded = np.zeros((n, n), mu.dtype)
    padded[top : top + h, left : left + w] = mu
    return padded, (slice(top, top + h), slice(left, left + w))


def _inside_circle(n):
    yy, xx = np.mgrid[:n, :n]
    centre = (n - 1) / 2.0
    return (yy - centre) ** 2 + (xx - centre) ** 2 <= (n / 2.0) ** 2


# ----------------------------------------------------------------------------- reference form
def simulate_lowdose_slice(
    hu,
    pixel_spacing_mm,
    dose,
    rng,
    n_views=DEFAULT_VIEWS,
    photons=FULL_DOSE_PHOTONS,
    electronic_variance=ELECTRONIC_NOISE_VARIANCE,
    return_noise=False,
):
    """Reference low-dose simulation of one clean slice ``(H, W)`` in HU (see the module notes).

    Args:
        hu: clean slice in HU (the scan at its full dose).
        pixel_spacing_mm: in-plane spacing, one number or ``(dy, dx)`` (square pixels), in mm.
        dose: fraction of the scan's dose kept, ``0 < dose <= 1``.
        rng: ``numpy.random.Generator``; the result is a deterministic function of its state.
        n_views: projection angles in [0, 180).
        photons: full-dose incident photons per view for a 1 mm ray at ``REFERENCE_VIEWS`` views.
        electronic_variance: electronic noise variance per ray per real view, counts^2.
        return_noise: return the added noise (HU) instead of the noisy slice.

    Returns:
        float32 ``(H, W)``: ``hu + noise`` in HU (or the noise), where ``noise`` is the FBP of the
        log-domain noise of a Poisson + Gaussian scan at the added-noise count ``I_add``.
    """
    dose = check_dose(dose)
    spacing = check_spacing(pixel_spacing_mm)
    hu = np.asarray(hu, dtype=np.float64)
    if hu.ndim != 2 or min(hu.shape) < 2:
        raise DataError("image", f"the low-dose simulation takes one slice (H, W), got shape {hu.shape}")
    if not np.all(np.isfinite(hu)):
        raise DataError("image", "slice has non-finite values")
    theta = _angles(n_views)
    if dose == 1.0:
        noise = np.zeros(hu.shape)
        return noise.astype(np.float32) if return_noise else hu.astype(np.float32)
    from skimage.transform import iradon, radon

    mu, crop = _square(hu_to_mu(hu))
    # The cheaper inscribed-circle geometry when nothing attenuates outside it (FOV padding, air).
    circle = not np.any(mu[~_inside_circle(mu.shape[0])] > 0)
    line_integrals = radon(mu, theta, circle=circle) * spacing
    incident, electronic = photon_counts(dose, spacing, len(theta), photons, electronic_variance)
    expected = incident * np.exp(-line_integrals)
    counts = rng.poisson(expected).astype(np.float64)
    if electronic > 0:
        counts += np.sqrt(electronic) * rng.standard_normal(counts.shape)
    counts = np.maximum(counts, MIN_COUNT)
    log_noise = np.log(expected) - np.log(counts)  # p_noisy - p
    d_mu = iradon(log_noise / spacing, theta, output_size=mu.shape[0], filter_name="ramp", interpolation="linear", circle=circle)
    noise = (1000.0 / MU_WATER) * d_mu[crop]
    return noise.astype(np.float32) if return_noise else (hu + noise).astype(np.float32)


def simulate_lowdose_volume(hu, spacing, dose, rng, **options):
    """:func:`simulate_lowdose_slice` on every slice of ``(D, H, W)`` HU (or one ``(H, W)``), in order.

    ``spacing`` is ``(dz, dy, dx)``, ``(dy, dx)`` or one in-plane number, in mm.
    """
    hu = np.asarray(hu)
    values = None if spacing is None else np.atleast_1d(np.asarray(spacing, dtype=np.float64)).ravel()
    in_plane = None if values is None else (values[-2:] if values.size >= 2 else values)
    if hu.ndim == 2:
        return simulate_lowdose_slice(hu, in_plane, dose, rng, **options)
    if hu.ndim != 3:
        raise DataError("image", f"expected a slice (H, W) or a volume (D, H, W), got shape {hu.shape}")
    return np.stack([simulate_lowdose_slice(s, in_plane, dose, rng, **options) for s in hu])


def simulate_lowdose_ctvolume(volume, dose, rng, **options):
    """Low-dose version of a :class:`utils.data.readers.CTVolume` (windowed [0, 1]) on the same scale.

    The windowed intensities go back to HU through ``volume.hu_window`` (so HU outside the window
    are clipped to its edges), are simulated slice by slice and windowed again (not clipped).
    DataError when the volume has no HU window or no known spacing.
    """
    if volume.hu_window is None:
        raise DataError(volume.source, "no HU window: the low-dose simulation needs CT in HU (not 8-bit images)")
    if volume.spacing is None:
        raise DataError(volume.source, "pixel spacing unknown: the low-dose simulation needs it in mm")
    lo, hi = (float(h) for h in volume.hu_window)
    hu = np.asarray(volume.array, np.float64) * (hi - lo) + lo
    noisy = simulate_lowdose_volume(hu, volume.spacing, dose, rng, **options)
    return ((noisy - lo) / (hi - lo)).astype(np.float32)


# ----------------------------------------------------------------------------- noise statistics
def radial_nps(noise, pixel_spacing_mm=1.0, n_bins=32, detrend=True):
    """Radially averaged noise power spectrum of noise images ``(H, W)`` or ROIs ``(N, H, W)``.

    ``NPS(f) = spacing^2 / (H W) * |FFT(roi - mean(roi))|^2`` averaged over ROIs and over rings of
    radial frequency; ``f`` in cycles/pixel (``0 .. 0.5 * sqrt(2)``), ``n_bins`` equal rings up to 0.5
    plus nothing beyond. Returns ``(f_centres, nps, nps_at_zero)``; ``nps_at_zero`` is the mean
    power of the DC bin before detrending (the mean of each ROI is then removed for the rings).
    """
    rois = np.asarray(noise, dtype=np.float64)
    rois = rois[None] if rois.ndim == 2 else rois
    _, h, w = rois.shape
    scale = pixel_spacing_mm**2 / (h * w)
    dc = float(np.mean(np.abs(rois.sum(axis=(1, 2))) ** 2) * scale)
    if detrend:
        rois = rois - rois.mean(axis=(1, 2), keepdims=True)
    power = np.mean(np.abs(np.fft.fft2(rois)) ** 2, axis=0) * scale
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    radius = np.sqrt(fy**2 + fx**2)
    edges = np.linspace(0.0, 0.5, n_bins + 1)
    centres = 0.5 * (edges[1:] + edges[:-1])
    index = np.digitize(radius, edges) - 1
    nps = np.array([power[index == i].mean() if np.any(index == i) else 0.0 for i in range(n_bins)])
    return centres, nps, dc


def _ray_nps(radius, xp=np):
    """NPS of one alias of the reference FBP at radial frequency ``radius`` (cycles/pixel).

    The discrete ramp filter is periodic in frequency (``|u|`` folded into [-0.5, 0.5]), linear
    interpolation of the filtered projections multiplies it by ``sinc(u)^2``, and back-projecting
    over all angles divides the power by ``|u|``: ``ramp(u)^2 sinc(u)^4 / |u|`` (``|u| sinc(u)^4``
    below 0.5, the interpolation's leakage above).
    """
    folded = xp.abs(radius - xp.round(radius))
    x = np.pi * xp.maximum(radius, 1e-12)
    sinc = xp.where(radius > 0, xp.sin(x) / x, xp.ones_like(x))
    return xp.where(radius > 0, folded**2 * sinc**4 / xp.maximum(radius, 1e-12), xp.zeros_like(radius))


def fbp_nps_2d(height, width):
    """Analytic 2D NPS of the reference FBP on the ``numpy.fft`` grid of an ``(H, W)`` image, mean 1.

    :func:`_ray_nps` summed over the 3 x 3 aliases that the pixel grid folds back (frequencies beyond
    0.5 cycles/pixel that linear interpolation lets through). Zero at zero frequency (set), peaked near
    0.28 cycles/pixel. Within a few per cent of the reference's radially averaged NPS.
    """
    fy = np.fft.fftfreq(int(height))[:, None]
    fx = np.fft.fftfreq(int(width))[None, :]
    nps = sum(_ray_nps(np.sqrt((fy + m) ** 2 + (fx + k) ** 2)) for m in (-1, 0, 1) for k in (-1, 0, 1))
    nps[0, 0] = 0.0  # the ramp removes the mean (the corner aliases' tiny share at 0 is dropped)
    return nps / nps.mean()


@functools.lru_cache(maxsize=8)
def fbp_noise_gain(n_views=DEFAULT_VIEWS, size=128, seed=0):
    """Variance of the reference FBP output (pixel units) for white sinogram noise of unit variance.

    Measured once with scikit-image (``iradon`` of seeded N(0, 1) sinograms, variance inside the
    central half-radius disc), so the fast form's std map follows whatever the reference does.
    Falls like ``1 / n_views``.
    """
    from skimage.transform import iradon

    rng = np.random.default_rng(seed)
    theta = _angles(n_views)
    yy, xx = np.mgrid[:size, :size]
    centre = (size - 1) / 2.0
    inner = (yy - centre) ** 2 + (xx - centre) ** 2 <= (size / 4.0) ** 2
    values = []
    for _ in range(4):
        sinogram = rng.standard_normal((size, len(theta)))
        values.append(iradon(sinogram, theta, output_size=size, filter_name="ramp", interpolation="linear", circle=True)[inner])
    return float(np.var(np.concatenate(values)))


def log_count_variance(line_integral, incident, electronic, xp=np):
    """Variance of ``-log(counts / I)`` for one ray: ``e^p / I + s^2 e^2p / I^2`` (first order); ``xp``: np or tf."""
    scaled = xp.exp(line_integral) / incident
    return scaled + electronic * scaled**2


def expected_std_hu(line_integral, dose, pixel_spacing_mm, n_views=DEFAULT_VIEWS, photons=FULL_DOSE_PHOTONS, electronic_variance=ELECTRONIC_NOISE_VARIANCE):
    """Predicted std (HU) of the added noise at a point whose rays all have line integral ``p``.

    ``sqrt(GAIN * v(p)) * 1000 / (MU_WATER * spacing)``, the FBP variance formula that the fast form
    uses; at the centre of a uniform disc it is the reference's std (checked in the tests).
    """
    dose = check_dose(dose)
    if dose == 1.0:
        return 0.0 * np.asarray(line_integral, dtype=np.float64)
    incident, electronic = photon_counts(dose, pixel_spacing_mm, n_views, photons, electronic_variance)
    variance = fbp_noise_gain(int(n_views)) * log_count_variance(np.asarray(line_integral, np.float64), incident, electronic)
    return np.sqrt(variance) * 1000.0 / (MU_WATER * pixel_spacing_mm)


# ----------------------------------------------------------------------------- fast form
def _frequencies_tf(n):
    """``numpy.fft.fftfreq(n)`` for a dynamic length, float32."""
    import tensorflow as tf

    k = tf.range(n)
    k = tf.where(k < (n + 1) // 2, k, k - n)
    return tf.cast(k, tf.float32) / tf.cast(n, tf.float32)


NPS_TABLE_STEPS = 512  # the fast form's NPS table: frequencies k / 512 cycles/pixel, k = 0..256


@functools.lru_cache(maxsize=1)
def _nps_table():
    """:func:`fbp_nps_2d`'s formula (before normalisation) on ``|fy|, |fx|`` = k / NPS_TABLE_STEPS, k = 0..steps/2."""
    f = np.arange(NPS_TABLE_STEPS // 2 + 1) / NPS_TABLE_STEPS
    fy, fx = f[:, None], f[None, :]
    table = sum(_ray_nps(np.sqrt((fy + m) ** 2 + (fx + k) ** 2)) for m in (-1, 0, 1) for k in (-1, 0, 1))
    table[0, 0] = 0.0
    return table.astype(np.float32)


def nps_filter_tf(height, width):
    """``sqrt(NPS)`` of :func:`fbp_nps_2d` on the rfft2 grid ``(H, W // 2 + 1)``, normalised so that
    filtered N(0, 1) white noise has unit variance.

    Read from a table at the nearest multiple of 1/512 cycles/pixel (the NPS is even in both
    frequencies): exact for sizes that divide 512, within 1/1024 cycles/pixel otherwise; two
    gathers instead of evaluating the nine aliases per sample.
    """
    import tensorflow as tf

    if isinstance(height, int) and isinstance(width, int):  # a static patch size: built once, a constant
        return tf.constant(_nps_filter_numpy(height, width))

    def index(n):
        return tf.cast(tf.round(tf.abs(_frequencies_tf(n)) * NPS_TABLE_STEPS), tf.int32)

    table = tf.constant(_nps_table())
    nps = tf.gather(tf.gather(table, index(height), axis=0), index(width), axis=1)
    amplitude = tf.sqrt(nps / tf.reduce_mean(nps))  # mean over the full grid: unit output variance
    return amplitude[:, : width // 2 + 1]


@functools.lru_cache(maxsize=16)
def _nps_filter_numpy(height, width):
    """:func:`nps_filter_tf` for a static size, in numpy."""
    def index(n):
        return np.round(np.abs(np.fft.fftfreq(n)) * NPS_TABLE_STEPS).astype(int)

    nps = _nps_table()[index(height)][:, index(width)].astype(np.float64)
    return np.sqrt(nps / nps.mean())[:, : width // 2 + 1].astype(np.float32)


def _antidiagonal_sums(x):
    """``out[n, i, j] = sum of x[n, a, b] over a + b = i + j`` for ``(N, H, W)``, by shearing rows."""
    import tensorflow as tf

    shape = tf.shape(x)
    n, h, w = shape[0], shape[1], shape[2]
    # Row i shifted right by i: padding each row by h and re-reading the buffer with rows of w + h - 1.
    flat = tf.reshape(tf.pad(x, [[0, 0], [0, 0], [0, h]]), [n, -1])[:, : h * (w + h - 1)]
    sums = tf.reduce_sum(tf.reshape(flat, [n, h, w + h - 1]), axis=1, keepdims=True)
    # And back: the broadcast sums re-read with rows of w + h undo the shift.
    flat = tf.pad(tf.reshape(tf.broadcast_to(sums, [n, h, w + h - 1]), [n, -1]), [[0, 0], [0, h]])
    return tf.reshape(flat, [n, h, w + h])[:, :, :w]


def fast_std_map_tf(clean, dose, hu_window, pixel_spacing_mm=DEFAULT_PIXEL_SPACING_MM, body_mm=DEFAULT_BODY_MM, n_views=DEFAULT_VIEWS,
                    photons=FULL_DOSE_PHOTONS, electronic_variance=ELECTRONIC_NOISE_VARIANCE):
    """Std map (HU) of the fast form for windowed images ``(..., H, W)`` on [0, 1] (see the module notes)."""
    import tensorflow as tf

    lo, hi = (float(h) for h in hu_window)
    spacing = float(pixel_spacing_mm)
    if tf.is_tensor(dose):  # drawn per sample in the pipeline (dose ranges): the same formula in tf, dose < 1
        lumped = REFERENCE_VIEWS / float(n_views)
        dose = tf.cast(dose, tf.float32)
        incident = photons * spacing * lumped * dose / (1.0 - dose)
        electronic = electronic_variance * lumped * (1.0 + dose) / (1.0 - dose)
        ceiling = tf.math.log(incident / MIN_COUNT)
    else:
        dose = check_dose(dose)
        if dose == 1.0:
            return tf.zeros_like(tf.cast(clean, tf.float32))
        incident, electronic = photon_counts(dose, spacing, n_views, photons, electronic_variance)
        ceiling = float(np.log(incident / MIN_COUNT))
    clean = tf.cast(clean, tf.float32)
    shape = tf.shape(clean)
    height, width = shape[-2], shape[-1]
    clean = tf.reshape(clean, tf.stack([-1, height, width]))
    if lo < -1000.0:  # no attenuation below air's, pixel by pixel, before the sums
        clean = tf.maximum(clean, (-1000.0 - lo) / (hi - lo))
    # Full-size ops are what this map costs in the pipeline: the sums and the pooling are linear,
    # so they run on the windowed values and only their results become attenuation, and every
    # constant factor is applied on the profiles and the pooled grid.
    mu_per_unit = MU_WATER * (hi - lo) / 1000.0  # attenuation per unit of windowed intensity
    mu_at_zero = MU_WATER * (1.0 + lo / 1000.0)

    def attenuation_sum(sums, length):
        return tf.maximum(mu_per_unit * sums + mu_at_zero * tf.cast(length, tf.float32), 0.0) * spacing

    def context(border_a, border_b, length):
        # Water beyond the image on each side whose border is tissue: half the rest of the body each.
        rest = 0.5 * MU_WATER * tf.maximum(body_mm - tf.cast(length, tf.float32) * spacing, 0.0)
        tissue = (TISSUE_HU - lo) / (hi - lo)
        return rest * (tf.cast(border_a > tissue, tf.float32) + tf.cast(border_b > tissue, tf.float32))

    scale = 0.25 * fbp_noise_gain(int(n_views)) * (1000.0 / (MU_WATER * spacing)) ** 2

    def ray_variance(p):
        # Beyond a count of MIN_COUNT the reference clamps: the variance stops growing there.
        return scale * log_count_variance(tf.minimum(p, ceiling), incident, electronic, tf)

    row_context = context(clean[:, :, 0], clean[:, :, -1], width)  # (N, H)
    col_context = context(clean[:, 0, :], clean[:, -1, :], height)  # (N, W)
    v_rows = ray_variance(attenuation_sum(tf.reduce_sum(clean, axis=2), width) + row_context)
    v_cols = ray_variance(attenuation_sum(tf.reduce_sum(clean, axis=1), height) + col_context)
    # Diagonals, on a grid pooled by DIAGONAL_POOL (the map is smooth; this is the costly part): a
    # pooled pixel per sqrt(2) * pool * spacing of path; their context is the mean of the row's and
    # the column's through the cell's first pixel. Their variance comes back to the pixels at the end.
    pooled = tf.nn.avg_pool2d(clean[..., None], DIAGONAL_POOL, DIAGONAL_POOL, "SAME")[..., 0]
    mu = tf.maximum(mu_per_unit * pooled + mu_at_zero, 0.0)
    step = np.sqrt(2.0) * DIAGONAL_POOL * spacing
    diagonal_context = 0.5 * (row_context[:, ::DIAGONAL_POOL, None] + col_context[:, None, ::DIAGONAL_POOL])
    p_anti = _antidiagonal_sums(mu) * step + diagonal_context
    p_main = tf.reverse(_antidiagonal_sums(tf.reverse(mu, [2])), [2]) * step + diagonal_context
    v_diagonals = _upsample_nearest(ray_variance(p_anti) + ray_variance(p_main), DIAGONAL_POOL, height, width)
    std = tf.sqrt(v_rows[:, :, None] + v_cols[:, None, :] + v_diagonals)
    return tf.reshape(std, shape)


def _upsample_nearest(x, factor, height, width):
    """``(N, h, w)`` to ``(N, height, width)``, each value copied onto its ``factor x factor`` cell (one broadcast)."""
    import tensorflow as tf

    shape = tf.shape(x)
    n, h, w = shape[0], shape[1], shape[2]
    cells = tf.broadcast_to(x[:, :, None, :, None], tf.stack([n, h, factor, w, factor]))
    return tf.reshape(cells, tf.stack([n, h * factor, w * factor]))[:, :height, :width]


def fast_lowdose_noise_tf(clean, seed, dose, hu_window, **options):
    """Fast-form noise on the window's [0, 1] scale for windowed images ``(..., H, W)``; stateless.

    ``std_HU(x) * t(x) / (hi - lo)``, with ``t`` the unit-variance texture of :func:`nps_texture_tf`
    (seeded by ``seed``) and ``std_HU`` the map of :func:`fast_std_map_tf` (``options`` go there).
    Each slice of a stack gets its own noise. ``dose`` is a number in (0, 1], or a scalar float
    tensor in (0, 1) (drawn in the pipeline, not checked).
    """
    import tensorflow as tf

    clean32 = tf.cast(clean, tf.float32)
    if not tf.is_tensor(dose) and check_dose(dose) == 1.0:
        return tf.zeros_like(clean32)
    lo, hi = (float(h) for h in hu_window)
    texture = nps_texture_tf(tf.shape(clean32), seed, static_size=clean32.shape[-2:], scale=1.0 / (hi - lo))
    return fast_std_map_tf(clean32, dose, hu_window, **options) * texture


def nps_texture_tf(shape, seed, static_size=None, scale=1.0):
    """Stationary Gaussian noise of ``shape`` (..., H, W) whose noise power spectrum is :func:`fbp_nps_2d`'s, times ``scale``.

    Spectral synthesis with random phases (the spectral representation method of Shinozuka and
    Deodatis, 1991): ``t = irfft2d(A e^{i phi})``, with ``phi`` uniform on [0, 2 pi) per frequency
    (``stateless_uniform``, seeded) and the fixed amplitude ``A = sqrt(H W) sqrt(NPS)``, the
    self-conjugate columns (zero and Nyquist frequency along W) raised by ``sqrt(2)`` because
    ``irfft2d`` keeps only their real part. Every frequency then carries its NPS exactly (the
    variance is ``scale**2``), and each pixel, a sum of thousands of independent waves, is Gaussian.
    It draws uniforms for half the spectrum and one inverse FFT: about a third of the cost of
    filtering drawn white Gaussian noise (``stateless_normal`` for every pixel, then an FFT pair).
    ``static_size``: ``(H, W)`` when known when tracing, so that ``A`` is a constant.
    """
    import tensorflow as tf

    if static_size is not None and tf.TensorShape(static_size).is_fully_defined():
        height, width = (int(n) for n in static_size)
        amplitude = tf.constant(_random_phase_amplitude_numpy(height, width) * np.float32(scale))
    else:
        height, width = shape[-2], shape[-1]
        columns = tf.range(width // 2 + 1)
        self_conjugate = (columns == 0) | (2 * columns == width)
        raise_by = tf.where(self_conjugate, np.float32(np.sqrt(2.0)), np.float32(1.0))
        size = tf.cast(height * width, tf.float32)
        amplitude = nps_filter_tf(height, width) * raise_by * tf.sqrt(size) * np.float32(scale)
    half_spectrum = tf.concat([shape[:-1], [width // 2 + 1]], 0)
    phase = tf.random.stateless_uniform(half_spectrum, seed, 0.0, 2.0 * np.pi, dtype=tf.float32)
    spectrum = tf.complex(amplitude * tf.cos(phase), amplitude * tf.sin(phase))
    return tf.signal.irfft2d(spectrum, fft_length=tf.stack([height, width]))


@functools.lru_cache(maxsize=16)
def _random_phase_amplitude_numpy(height, width):
    amplitude = _nps_filter_numpy(height, width).astype(np.float64) * np.sqrt(height * width)
    amplitude[:, 0] *= np.sqrt(2.0)
    if width % 2 == 0:
        amplitude[:, -1] *= np.sqrt(2.0)
    return amplitude.astype(np.float32)
