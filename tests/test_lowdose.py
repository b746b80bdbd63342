"""Simulated low-dose CT noise (utils/data/lowdose.py): the reference against physics, the fast form against the reference.

Tolerances (stated here, used below):
* dose scaling: added variance / full-dose variance within 10 % of ``1 / dose - 1``;
* zero mean: |mean| below 3 % of the std inside the disc;
* zero frequency: NPS at f = 0 (64 x 64 ROIs, 12 of them) below 10 % of the NPS peak (white noise: about 75 %);
* fast vs reference NPS: every radial bin of the normalised NPS within 15 % (8 bins to 0.5 cycles/pixel);
* fast vs reference std map: median ratio within 5 %, 5th-95th percentiles within 15 %.
"""

import numpy as np
import pytest
import tensorflow as tf
from scipy.ndimage import gaussian_filter

from utils.learning.config import TrainingConfig
from utils.base.errors import ConfigError, DataError
from utils.data.lowdose import (
    MU_WATER,
    expected_std_hu,
    fast_lowdose_noise_tf,
    fast_std_map_tf,
    fbp_nps_2d,
    nps_filter_tf,
    nps_texture_tf,
    radial_nps,
    simulate_lowdose_ctvolume,
    simulate_lowdose_slice,
)
from utils.data.noise import NOISE_MODELS, CTLowDoseNoise, make_noise
from utils.data.readers import CTVolume

WINDOW = (-1000.0, 400.0)
SPACING = 0.7
SIZE = 128
CENTRE = SIZE // 2


def _disc(hu_inside=0.0, radius_fraction=0.45):
    yy, xx = np.mgrid[:SIZE, :SIZE]
    centre = (SIZE - 1) / 2
    return np.where((yy - centre) ** 2 + (xx - centre) ** 2 < (radius_fraction * SIZE) ** 2, hu_inside, -1000.0)


def _ellipse_with_bone():
    yy, xx = np.mgrid[:SIZE, :SIZE]
    centre = (SIZE - 1) / 2
    hu = np.where(((yy - centre) / (0.3 * SIZE)) ** 2 + ((xx - centre) / (0.47 * SIZE)) ** 2 < 1, 40.0, -1000.0)
    hu[((yy - centre) / (0.05 * SIZE)) ** 2 + ((xx - centre - 30) / (0.05 * SIZE)) ** 2 < 1] = 1000.0
    return hu


def _windowed(hu):
    return ((np.clip(hu, *WINDOW) - WINDOW[0]) / (WINDOW[1] - WINDOW[0])).astype(np.float32)


def _reference_noise(hu, dose, n, seed=0, spacing=SPACING):
    rng = np.random.default_rng(seed)
    return np.stack([simulate_lowdose_slice(hu, spacing, dose, rng, return_noise=True) for _ in range(n)])


def _fast_noise(hu, dose, n, spacing=SPACING):
    clean = tf.constant(_windowed(hu))
    draws = [fast_lowdose_noise_tf(clean, tf.constant([i, 11], tf.int64), dose, WINDOW, pixel_spacing_mm=spacing) for i in range(n)]
    return np.stack([d.numpy() for d in draws]) * (WINDOW[1] - WINDOW[0])


def _central(noise, half=32):
    return noise[..., CENTRE - half : CENTRE + half, CENTRE - half : CENTRE + half]


def test_reference_added_variance_follows_one_over_dose_minus_one():
    disc = _disc()
    full = np.var(_central(_reference_noise(disc, 0.5, 4, seed=1)))  # at dose 0.5 the added noise is the full-dose noise
    for dose in (0.25, 0.1):
        added = np.var(_central(_reference_noise(disc, dose, 4, seed=2)))
        assert added / full == pytest.approx(1 / dose - 1, rel=0.10)
        # total = full + added = full / dose: the total std scales like 1 / sqrt(dose)
        assert np.sqrt(full + added) / np.sqrt(full) == pytest.approx(1 / np.sqrt(dose), rel=0.05)
    # ... and the level follows the FBP variance formula (line integral of the disc's diameter).
    predicted = expected_std_hu(MU_WATER * 2 * 0.45 * SIZE * SPACING, 0.5, SPACING)
    assert np.sqrt(full) == pytest.approx(predicted, rel=0.10)


def test_reference_noise_has_zero_mean_and_no_power_at_zero_frequency():
    disc = _disc()
    noise = _reference_noise(disc, 0.25, 12, seed=3)
    inside = noise[:, disc > -500]
    assert abs(inside.mean()) < 0.03 * inside.std()
    _, nps, dc = radial_nps(_central(noise), SPACING, n_bins=8)
    assert dc < 0.10 * nps.max()
    assert nps[0] < 0.35 * nps.max()  # ramp-like: low at low frequency, peaked at mid frequency
    assert np.argmax(nps) in range(2, 7)


def test_dose_one_adds_nothing_and_clean_slice_is_kept():
    disc = _disc()
    rng = np.random.default_rng(0)
    np.testing.assert_array_equal(simulate_lowdose_slice(disc, SPACING, 1.0, rng), disc.astype(np.float32))
    noisy = simulate_lowdose_slice(disc, SPACING, 0.3, rng)
    # only noise is added: the mean of a large region is the clean value
    assert abs(np.mean(noisy[disc > -500]) - 0.0) < 1.0


def test_fast_form_matches_reference_nps_within_15_percent():
    disc = _disc()
    ref = _central(_reference_noise(disc, 0.25, 8, seed=4))
    fast = _central(_fast_noise(disc, 0.25, 8))
    _, nps_ref, _ = radial_nps(ref, SPACING, n_bins=8)
    _, nps_fast, _ = radial_nps(fast, SPACING, n_bins=8)
    np.testing.assert_allclose(nps_fast / nps_fast.sum(), nps_ref / nps_ref.sum(), rtol=0.15)
    assert np.var(fast) == pytest.approx(np.var(ref), rel=0.10)
    # The DC power of a 64 x 64 crop is what the window leaks from low frequencies: about 8 % of the
    # peak in expectation (white noise: 100 %); 32 draws keep its chi-square spread to about 25 %.
    _, _, dc = radial_nps(_central(_fast_noise(disc, 0.25, 32)), SPACING, n_bins=8)
    assert dc < 0.15 * nps_fast.max()


@pytest.mark.parametrize("size", [tf.constant, int], ids=["dynamic size", "static size"])
def test_fast_nps_filter_is_the_analytic_nps(size):
    amplitude = nps_filter_tf(size(64), size(32)).numpy()  # sizes dividing 512: the table is exact
    np.testing.assert_allclose(amplitude**2, fbp_nps_2d(64, 32)[:, : 32 // 2 + 1], rtol=1e-4, atol=1e-6)
    assert amplitude[0, 0] == 0
    amplitude = nps_filter_tf(size(48), size(40)).numpy()  # nearest table entry otherwise
    np.testing.assert_allclose(amplitude**2, fbp_nps_2d(48, 40)[:, : 40 // 2 + 1], rtol=0.03, atol=0.01)


@pytest.mark.parametrize("size", [tf.constant, int], ids=["dynamic size", "static size"])
@pytest.mark.parametrize("height, width", [(64, 48), (45, 37)])
def test_nps_texture_is_gaussian_with_the_analytic_nps(size, height, width):
    from scipy.stats import kurtosis, skew

    shape = tf.constant([200, height, width])
    texture = nps_texture_tf(shape, tf.constant([5, 6], tf.int64), static_size=(size(height), size(width)), scale=2.0).numpy()
    assert texture.shape == (200, height, width)
    assert texture.std() == pytest.approx(2.0, rel=0.01)
    assert abs(texture.mean()) < 0.01 and abs(skew(texture.ravel())) < 0.02 and abs(kurtosis(texture.ravel())) < 0.05
    # The power at each frequency is the NPS that nps_filter_tf gives, mirrored onto the full grid:
    # exactly on the columns that irfft2d extends by symmetry, within the spread of 200 draws on
    # the self-conjugate ones (zero and Nyquist frequency along W), whose real part mixes two phases.
    power = np.mean(np.abs(np.fft.fft2(texture / 2.0)) ** 2, axis=0) / (height * width)
    half = nps_filter_tf(height, width).numpy().astype(np.float64) ** 2
    expected = np.zeros((height, width))
    expected[:, : width // 2 + 1] = half
    columns = np.arange(width // 2 + 1, width)
    expected[:, columns] = half[(-np.arange(height)) % height][:, width - columns]
    mirrored = np.ones(width, bool)
    mirrored[0] = False
    if width % 2 == 0:
        mirrored[width // 2] = False
    np.testing.assert_allclose(power[:, mirrored], expected[:, mirrored], rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(power, expected, rtol=0.25, atol=0.02)
    assert power[0, 0] < 1e-6
    again = nps_texture_tf(shape, tf.constant([5, 6], tf.int64), static_size=(size(height), size(width)), scale=2.0).numpy()
    np.testing.assert_array_equal(texture, again)


@pytest.mark.parametrize("make", [_disc, _ellipse_with_bone])
def test_fast_std_map_matches_reference_local_std(make):
    hu = make()
    ref = _reference_noise(hu, 0.25, 8, seed=5)
    local = np.sqrt(gaussian_filter((ref**2).mean(0), 6))
    fast_map = fast_std_map_tf(tf.constant(_windowed(hu)), 0.25, WINDOW, pixel_spacing_mm=SPACING).numpy()
    ratio = (fast_map / local)[hu > -500]
    assert np.median(ratio) == pytest.approx(1.0, abs=0.05)
    assert 0.85 < np.percentile(ratio, 5) and np.percentile(ratio, 95) < 1.15


def test_fast_std_map_is_stronger_behind_bone_and_inside_a_body():
    hu = _ellipse_with_bone()
    std = fast_std_map_tf(tf.constant(_windowed(hu)), 0.25, WINDOW, pixel_spacing_mm=SPACING).numpy()
    assert std[CENTRE, CENTRE + 30] > 1.1 * std[CENTRE - 25, CENTRE - 30]  # the bone's row and column
    # A tissue patch cut from inside a body gets the rest of the body's water: more noise than a small disc.
    patch = tf.constant(np.full((32, 32), _windowed(np.array(40.0)), np.float32))
    inner = fast_std_map_tf(patch, 0.25, WINDOW, pixel_spacing_mm=SPACING, body_mm=250.0).numpy()
    alone = fast_std_map_tf(patch, 0.25, WINDOW, pixel_spacing_mm=SPACING, body_mm=0.0).numpy()
    assert inner.mean() > 5 * alone.mean()


def test_both_forms_are_deterministic_under_a_seed():
    disc = _disc()
    a = simulate_lowdose_slice(disc, SPACING, 0.25, np.random.default_rng(7))
    b = simulate_lowdose_slice(disc, SPACING, 0.25, np.random.default_rng(7))
    c = simulate_lowdose_slice(disc, SPACING, 0.25, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    model = make_noise(0.05, "ct_lowdose", dose=0.25, hu_window=WINDOW)
    clean = tf.constant(_windowed(disc)[None].repeat(3, 0))
    x = model.sample_tf(clean, tf.constant([1, 2], tf.int64)).numpy()
    y = model.sample_tf(clean, tf.constant([1, 2], tf.int64)).numpy()
    z = model.sample_tf(clean, tf.constant([1, 3], tf.int64)).numpy()
    np.testing.assert_array_equal(x, y)
    assert not np.array_equal(x, z)
    assert not np.array_equal(x[0], x[1])  # slices of a slab get their own noise


def test_registered_model_on_the_window_scale():
    assert NOISE_MODELS["ct_lowdose"] is CTLowDoseNoise
    quarter = make_noise(0.05, "ct_lowdose", dose=0.25, hu_window=(-1000, 400))
    half = make_noise(0.05, "ct_lowdose", dose=0.5, hu_window=(-1000, 400))
    assert quarter.effective_sigma == pytest.approx(half.effective_sigma * np.sqrt(3), rel=0.05)  # added var ~ 1/dose - 1
    assert 0.003 < half.effective_sigma < 0.03  # full-dose noise of a 250 mm body at 0.7 mm: about 10-20 HU
    narrow = make_noise(0.05, "ct_lowdose", dose=0.25, hu_window=(-160, 240))
    assert narrow.effective_sigma == pytest.approx(quarter.effective_sigma * 1400 / 400, rel=1e-6)
    clean = _windowed(_disc())[None]
    noisy = quarter.sample_numpy(clean, np.random.default_rng(0))
    assert noisy.shape == clean.shape and noisy.dtype == np.float32
    assert 0 < np.std(noisy - clean) < 0.05
    same = make_noise(0.05, "ct_lowdose", dose=1.0).sample_tf(tf.constant(clean), tf.constant([0, 0], tf.int64))
    np.testing.assert_array_equal(same.numpy(), clean)


@pytest.mark.bad_input
@pytest.mark.parametrize("dose", [0.0, -0.1, 1.5, float("nan")])
def test_bad_dose_is_refused(dose):
    with pytest.raises(ConfigError, match="dose"):
        simulate_lowdose_slice(_disc(), SPACING, dose, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="dose"):
        make_noise(0.05, "ct_lowdose", dose=dose)
    with pytest.raises(ConfigError, match="--dose"):
        TrainingConfig(noise_model="ct_lowdose", dose=dose).validate()


@pytest.mark.bad_input
def test_dose_needs_the_lowdose_model_and_spacing_must_be_known():
    with pytest.raises(ConfigError, match="ct_lowdose"):
        TrainingConfig(noise_model="gaussian", dose=0.5).validate()
    TrainingConfig(noise_model="ct_lowdose", dose=0.25).validate()
    with pytest.raises(DataError, match="pixel spacing"):
        simulate_lowdose_slice(_disc(), None, 0.5, np.random.default_rng(0))
    with pytest.raises(DataError, match="pixel spacing"):
        simulate_lowdose_slice(_disc(), -1.0, 0.5, np.random.default_rng(0))
    volume = CTVolume(_windowed(_disc())[None], "scan.png", "png", None, WINDOW, True, 1)
    with pytest.raises(DataError, match="scan.png.*pixel spacing"):
        simulate_lowdose_ctvolume(volume, 0.5, np.random.default_rng(0))
    with pytest.raises(ConfigError, match="pixel spacing"):
        make_noise(0.05, "ct_lowdose", dose=0.5, pixel_spacing_mm=0.0)


def test_command_line_takes_the_dose():
    from utils.learning.cli import parse_training_args

    config, _ = parse_training_args(TrainingConfig(), "test", ["--noise-model", "ct_lowdose", "--dose", "0.25"])
    assert config.validate().dose == 0.25 and config.noise_model == "ct_lowdose"
    from utils.learning.training import configured_noise

    noise = configured_noise(config)
    assert isinstance(noise, CTLowDoseNoise) and noise.dose == 0.25 and noise.window == config.hu_window


def test_pipeline_draws_lowdose_patches():
    from utils.learning.pipeline import PatchSampling, make_dataset

    volume = np.stack([_windowed(_disc())] * 4)
    noise = make_noise(0.05, "ct_lowdose", dose=0.25, hu_window=WINDOW)
    noisy, clean = next(iter(make_dataset([volume], PatchSampling((32, 32)), noise, batch_size=4, seed=3)))
    residual = (noisy - clean).numpy()
    assert residual.shape == (4, 32, 32, 1) and 0 < residual.std() < 0.05


def _water_std_hu(noise, seed):
    clean = tf.constant(_windowed(_disc(radius_fraction=0.6))[None])
    return float(tf.math.reduce_std(_central(noise.sample_tf(clean, tf.constant(seed, tf.int64)) - clean))) * 1400


def test_dose_range_draws_one_dose_per_sample_inside_the_range():
    from utils.data.noise import CTLowDoseRangeNoise

    blind = CTLowDoseRangeNoise(dose=0.25, dose_range=(0.05, 0.5), hu_window=WINDOW)
    lowest, highest = (_water_std_hu(blind.at_dose(d), [0, 1]) for d in (0.05, 0.5))
    stds = [_water_std_hu(blind, [i, 1]) for i in range(12)]
    assert all(0.9 * highest < s < 1.1 * lowest for s in stds), (highest, stds, lowest)
    assert max(stds) / min(stds) > 1.5  # the level varies from sample to sample
    assert _water_std_hu(blind, [4, 1]) == stds[4]  # and is fixed by the seed
    noisy = blind.sample_numpy(_windowed(_disc())[None], np.random.default_rng(0))
    assert noisy.shape == (1, SIZE, SIZE) and noisy.dtype == np.float32


@pytest.mark.bad_input
@pytest.mark.parametrize("dose_range, dose", [((0.5, 0.1), 0.25), ((0.0, 0.5), 0.25), ((0.1, 1.5), 0.25), ((0.1, 0.5), 0.7)])
def test_bad_dose_range_is_refused(dose_range, dose):
    from utils.data.noise import CTLowDoseRangeNoise

    with pytest.raises(ConfigError, match="dose"):
        TrainingConfig(noise_model="ct_lowdose", dose=dose, dose_range=dose_range).validate()
    with pytest.raises(ConfigError, match="dose"):
        CTLowDoseRangeNoise(dose=dose, dose_range=dose_range)


@pytest.mark.bad_input
def test_dose_range_needs_the_lowdose_model():
    with pytest.raises(ConfigError, match="--dose-range.*ct_lowdose"):
        TrainingConfig(dose_range=(0.1, 0.5)).validate()


def test_command_line_takes_a_dose_range():
    from utils.application.assessment import trained_noise
    from utils.learning.cli import parse_training_args
    from utils.data.noise import CTLowDoseRangeNoise
    from utils.learning.training import training_noise

    args = ["--noise-model", "ct_lowdose", "--dose", "0.25", "--dose-range", "0.05", "0.5"]
    config, _ = parse_training_args(TrainingConfig(), "test", args)
    noise = training_noise(config.validate())
    assert isinstance(noise, CTLowDoseRangeNoise) and noise.dose_range == (0.05, 0.5) and noise.window == config.hu_window
    assert trained_noise(config.to_dict()) == ("ct_lowdose_range", (0.05, 0.5))
