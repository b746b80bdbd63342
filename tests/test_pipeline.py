"""tf.data pipelines: shapes, dtypes, fresh training noise, fixed validation noise, exact prior."""

import numpy as np
import pytest
import tensorflow as tf

from utils.learning.config import TrainingConfig
from utils.base.errors import ConfigError
from utils.data.noise import GaussianNoise
from utils.learning.pipeline import PatchSampling, make_dataset
from utils.data.prior import neighbour_prior
from utils.learning.training import training_data


@pytest.fixture
def volumes(rng):
    return [rng.random((8, 32, 32)).astype(np.float32), rng.random((10, 40, 36)).astype(np.float32)]


@pytest.mark.parametrize(
    "sampling, expected",
    [
        (PatchSampling((16, 16)), (4, 16, 16, 1)),
        (PatchSampling((16, 24), use_prior=True), (4, 16, 24, 1)),
        (PatchSampling((4, 16, 16)), (4, 4, 16, 16, 1)),
        (PatchSampling((4, 16, 16), use_prior=True, prior_variant="reference"), (4, 4, 16, 16, 1)),
    ],
)
def test_batches_have_the_model_shapes_and_dtypes(volumes, sampling, expected):
    dataset = make_dataset(volumes, sampling, batch_size=4)
    spec = dataset.element_spec[1]  # the in-plane size is static: the noise filters are built once
    assert spec.shape[1:] == expected[1:]
    inputs, clean = next(iter(dataset))
    assert clean.shape == expected and clean.dtype == tf.float32
    if sampling.use_prior:
        assert set(inputs) == {"noisy", "prior"}
        assert inputs["noisy"].shape == expected and inputs["prior"].shape == expected
        assert inputs["prior"].dtype == tf.float32
    else:
        assert inputs.shape == expected and inputs.dtype == tf.float32


def test_epoch_covers_one_sample_per_slice_by_default(volumes):
    dataset = make_dataset(volumes, PatchSampling((16, 16)), batch_size=3)
    assert sum(int(clean.shape[0]) for _, clean in dataset) == 8 + 10
    assert dataset.cardinality().numpy() == 6


def _noise_of_epoch(dataset):
    return np.concatenate([(noisy - clean).numpy().ravel() for noisy, clean in dataset])


def test_training_noise_changes_between_epochs_validation_noise_does_not(volumes):
    sampling = PatchSampling((16, 16))
    train = make_dataset(volumes, sampling, GaussianNoise(0.05), batch_size=4, training=True, seed=3)
    val = make_dataset(volumes, sampling, GaussianNoise(0.05), batch_size=4, training=False, seed=3)
    first, second = _noise_of_epoch(train), _noise_of_epoch(train)
    assert not np.allclose(np.sort(first), np.sort(second))
    np.testing.assert_array_equal(_noise_of_epoch(val), _noise_of_epoch(val))
    again = make_dataset(volumes, sampling, GaussianNoise(0.05), batch_size=4, training=False, seed=3)
    np.testing.assert_array_equal(_noise_of_epoch(val), _noise_of_epoch(again))


def test_noise_level_in_batches(volumes):
    noise = _noise_of_epoch(make_dataset(volumes * 4, PatchSampling((32, 32)), GaussianNoise(0.1), batch_size=8))
    assert abs(noise.std() / 0.1 - 1) < 0.02


def test_training_crops_are_redrawn_each_epoch(volumes):
    train = make_dataset(volumes[:1], PatchSampling((8, 8), flips=False), GaussianNoise(0.0), batch_size=8)
    first = next(iter(train))[1].numpy()
    second = next(iter(train))[1].numpy()
    assert not np.array_equal(first, second)


def _slice_index(volume, clean_slice):
    errors = [np.abs(volume[z] - clean_slice).max() for z in range(volume.shape[0])]
    assert min(errors) == 0
    return int(np.argmin(errors))


@pytest.mark.parametrize("variant", ["centred", "reference"])
def test_prior_in_the_2d_pipeline_equals_the_whole_volume_prior(volumes, variant):
    volume = volumes[1]
    sampling = PatchSampling((40, 36), use_prior=True, flips=False, prior_variant=variant)
    # Zero noise makes the noisy volume equal the clean one, so the expected prior is known.
    inputs, clean = next(iter(make_dataset([volume], sampling, GaussianNoise(0.0), batch_size=10, training=False)))
    expected = neighbour_prior(volume, variant=variant)
    for prior, target in zip(inputs["prior"].numpy(), clean.numpy()):
        np.testing.assert_allclose(prior[..., 0], expected[_slice_index(volume, target[..., 0])], atol=1e-6)


def test_prior_in_the_3d_pipeline_equals_the_whole_volume_prior(volumes):
    volume = volumes[1]
    sampling = PatchSampling((3, 40, 36), use_prior=True, flips=False)
    inputs, clean = next(iter(make_dataset([volume], sampling, GaussianNoise(0.0), batch_size=4, samples_per_volume=4, training=False)))
    expected = neighbour_prior(volume)
    for prior, target in zip(inputs["prior"].numpy(), clean.numpy()):
        z0 = _slice_index(volume, target[0, ..., 0])
        np.testing.assert_allclose(prior[..., 0], expected[z0 : z0 + 3], atol=1e-6)


def test_prior_is_built_from_noisy_slices(volumes):
    sampling = PatchSampling((32, 32), use_prior=True, flips=False)
    inputs, clean = next(iter(make_dataset(volumes[:1], sampling, GaussianNoise(0.1), batch_size=8, training=False)))
    prior_error = np.std(inputs["prior"].numpy() - clean.numpy())
    # Averaging ~9 noisy slices of independent random content: neither noise-free nor the clean slice.
    assert prior_error > 0.05


def test_window_augmentation_quantises_to_8_bits(volumes):
    sampling = PatchSampling((16, 16), window_augmentation=1.0)
    _, clean = next(iter(make_dataset(volumes, sampling, GaussianNoise(0.0), batch_size=8)))
    levels = clean.numpy() * 255
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)


@pytest.mark.bad_input
def test_patch_larger_than_the_data_is_refused(volumes):
    with pytest.raises(ConfigError, match="larger than volume"):
        make_dataset(volumes, PatchSampling((64, 64)))
    with pytest.raises(ConfigError, match="larger than volume"):
        make_dataset(volumes, PatchSampling((12, 16, 16)))


def test_streaming_from_files_gives_the_same_kind_of_batches(tmp_path, volumes):
    nib = pytest.importorskip("nibabel")
    paths = []
    for i, volume in enumerate(volumes):
        hu = volume * 1400 - 1000
        path = tmp_path / f"v{i}.nii.gz"
        nib.save(nib.Nifti1Image(np.transpose(hu, (2, 1, 0)).astype(np.float32), np.eye(4)), str(path))
        paths.append(path)
    dataset = make_dataset(paths, PatchSampling((4, 16, 16)), batch_size=2, samples_per_volume=2)
    batches = list(dataset)
    assert sum(int(c.shape[0]) for _, c in batches) == 4
    assert batches[0][0].shape == (2, 4, 16, 16, 1)


@pytest.mark.parametrize("patch", [(8, 8), (2, 8, 8)])
def test_balanced_sources_share_an_epoch_of_unchanged_size(patch):
    from utils.learning.pipeline import balanced_samples_per_volume

    # Source "phantoms": three 12-slice volumes; source "real": one 4-slice volume, each filled with its index.
    volumes = [np.full((depth, 16, 16), index, np.float32) for index, depth in enumerate([12, 12, 12, 4])]
    sources = ["phantoms", "phantoms", "phantoms", "real"]
    sampling = PatchSampling(patch, flips=False)
    counts = balanced_samples_per_volume(volumes, sources, sampling)
    natural = [depth // (patch[0] if len(patch) == 3 else 1) for depth in (12, 12, 12, 4)]
    assert abs(sum(counts) - sum(natural)) <= 2  # each volume's count is rounded
    assert abs(sum(counts[:3]) - counts[3]) <= 3 and counts[0] == counts[1] == counts[2]

    dataset = make_dataset(volumes, sampling, GaussianNoise(0.0), batch_size=1, samples_per_volume=counts)
    seen = [int(round(float(clean.numpy().mean()))) for _, clean in dataset]
    assert [seen.count(index) for index in range(4)] == counts


@pytest.mark.parametrize("validation_per_volume, expected", [(0, 8 + 10), (3, 2 * 3)])
def test_validation_samples_are_counted_apart_from_training(volumes, validation_per_volume, expected):
    config = TrainingConfig(patch=(16, 16), batch_size=1, samples_per_volume=6, validation_samples_per_volume=validation_per_volume)
    train, validation, _ = training_data(config, volumes, volumes)
    assert int(train.cardinality()) == 2 * 6
    assert int(validation.cardinality()) == expected


# --------------------------------------------------------------------------- resolution augmentation (zoom)

ZOOM_PATCHES = [pytest.param((16, 16), id="2d"), pytest.param((3, 16, 16), id="3d")]


def _first_batch(volumes, sampling, noise=GaussianNoise(0.0), **options):
    inputs, clean = next(iter(make_dataset(volumes, sampling, noise, **options)))
    return inputs.numpy(), clean.numpy()


@pytest.mark.parametrize("patch", ZOOM_PATCHES)
def test_zoom_keeps_shapes_and_the_clean_range(volumes, patch):
    sampling = PatchSampling(patch, zoom_range=(0.5, 2.0))
    noisy, clean = _first_batch(volumes, sampling, batch_size=6)
    assert clean.shape == noisy.shape == (6,) + patch + (1,)
    assert clean.min() >= 0.0 and clean.max() <= 1.0  # bilinear weights are convex


@pytest.mark.parametrize("patch", ZOOM_PATCHES)
def test_zoom_of_one_is_no_zoom_and_draws_are_seeded(volumes, patch):
    plain = _first_batch(volumes, PatchSampling(patch), GaussianNoise(0.05), batch_size=4, seed=5)
    unit = _first_batch(volumes, PatchSampling(patch, zoom_range=(1.0, 1.0)), GaussianNoise(0.05), batch_size=4, seed=5)
    for a, b in zip(plain, unit):
        np.testing.assert_array_equal(a, b)
    zoomed = PatchSampling(patch, zoom_range=(0.6, 1.6))
    first = _first_batch(volumes, zoomed, GaussianNoise(0.05), batch_size=4, seed=5)
    again = _first_batch(volumes, zoomed, GaussianNoise(0.05), batch_size=4, seed=5)
    other = _first_batch(volumes, zoomed, GaussianNoise(0.05), batch_size=4, seed=6)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[1], other[1])
    assert not np.array_equal(first[1], plain[1])


@pytest.mark.parametrize("patch", ZOOM_PATCHES)
@pytest.mark.parametrize("zoom", [0.5, 2.0])
def test_zoom_scales_in_plane_only(patch, zoom):
    """A ramp along x keeps its shape with slope / zoom; the slice axis is never resampled."""
    depth, height, width = 6, 48, 48
    ramp = np.arange(width, dtype=np.float32) / width
    steps = np.arange(depth, dtype=np.float32)[:, None, None] * 0.01
    volume = np.broadcast_to(0.2 + 0.5 * ramp[None, None, :] + steps, (depth, height, width)).copy()
    sampling = PatchSampling(patch, zoom_range=(zoom, zoom), flips=False)
    _, clean = _first_batch([volume], sampling, batch_size=4, samples_per_volume=4)
    slope = np.diff(clean[..., 0], axis=-1)[..., 2:-2]  # away from the resize borders
    np.testing.assert_allclose(slope, 0.5 / width / zoom, atol=1e-5)
    if len(patch) == 3:  # consecutive slices still differ by one source step: no resampling along z
        np.testing.assert_allclose(np.diff(clean[..., 0], axis=1), 0.01, atol=1e-5)


def test_zoom_leaves_white_noise_and_validation_unzoomed(volumes):
    zoomed = PatchSampling((16, 16), zoom_range=(0.4, 2.5))
    noise = _noise_of_epoch(make_dataset(volumes * 4, zoomed, GaussianNoise(0.1), batch_size=8, seed=2))
    assert abs(noise.std() / 0.1 - 1) < 0.03  # added after resampling: the level is kept
    plain = _first_batch(volumes, PatchSampling((16, 16)), GaussianNoise(0.05), batch_size=4, training=False)
    val = _first_batch(volumes, zoomed, GaussianNoise(0.05), batch_size=4, training=False)
    for a, b in zip(plain, val):
        np.testing.assert_array_equal(a, b)


def test_zoom_out_is_capped_at_the_slice(volumes):
    # 32x32 slices and a 16x16 patch: zoom 0.1 would need a 160-pixel region; the whole slice is used.
    _, clean = _first_batch(volumes[:1], PatchSampling((16, 16), zoom_range=(0.1, 0.1), flips=False), batch_size=8)
    assert clean.shape == (8, 16, 16, 1)


@pytest.mark.bad_input
@pytest.mark.parametrize("zoom_range", [(0.0, 1.0), (2.0, 1.0), (1.0,), (float("nan"), 1.0)])
def test_bad_zoom_ranges_are_refused(zoom_range):
    with pytest.raises(ConfigError, match="zoom range"):
        PatchSampling((16, 16), zoom_range=zoom_range)


def test_training_config_zoom_range_reaches_the_pipeline(volumes):
    config = TrainingConfig(patch=(16, 16), batch_size=4, zoom_range=(0.5, 2.0), noise=0.0)
    train, _, _ = training_data(config, volumes, volumes)
    reference = make_dataset(volumes, PatchSampling((16, 16), zoom_range=(0.5, 2.0)), GaussianNoise(0.0), batch_size=4)
    np.testing.assert_array_equal(next(iter(train))[1].numpy(), next(iter(reference))[1].numpy())


# --------------------------------------------------------------------------- blind noise (a sigma range)


def _per_sample_noise_std(dataset):
    return np.concatenate([np.std((noisy - clean).numpy(), axis=(1, 2, 3)) for noisy, clean in dataset])


def test_blind_training_noise_spans_the_range_and_validation_keeps_its_sigmas(volumes):
    from utils.data.noise import GaussianRangeNoise

    noise = GaussianRangeNoise(0.01, 0.2)
    sampling = PatchSampling((32, 32))
    train = make_dataset(volumes * 4, sampling, noise, batch_size=8, seed=4)
    first, second = _per_sample_noise_std(train), _per_sample_noise_std(train)
    assert len(first) == 4 * 18
    # 1024 values per sample estimate its sigma within a few per cent
    assert 0.0095 < first.min() < 0.04 and 0.17 < first.max() < 0.21
    assert abs(np.median(first) - 0.105) < 0.035  # uniform in [0.01, 0.2]
    assert not np.allclose(np.sort(first), np.sort(second))  # new sigmas every training epoch
    val = make_dataset(volumes * 4, sampling, noise, batch_size=8, training=False, seed=4)
    once, twice = _per_sample_noise_std(val), _per_sample_noise_std(val)
    np.testing.assert_array_equal(once, twice)
    assert once.min() < 0.05 and once.max() > 0.15
    again = make_dataset(volumes * 4, sampling, noise, batch_size=8, training=False, seed=4)
    np.testing.assert_array_equal(_per_sample_noise_std(again), once)


@pytest.mark.parametrize("patch", [(16, 16), (3, 16, 16)])
def test_blind_noise_is_one_sigma_per_sample_in_2d_and_3d(volumes, patch):
    from utils.data.noise import GaussianRangeNoise

    zero = [np.zeros_like(v) for v in volumes]
    noisy, clean = next(iter(make_dataset(zero, PatchSampling(patch), GaussianRangeNoise(0.0, 0.3), batch_size=6)))
    assert noisy.shape == clean.shape == (6,) + patch + (1,)
    stds = np.std(noisy.numpy().reshape(6, -1), axis=1)
    assert stds.max() <= 0.3 * 1.25 and len(np.unique(np.round(stds, 3))) > 1


def test_noise_range_setting_makes_training_blind(volumes):
    config = TrainingConfig(patch=(32, 32), batch_size=8, noise=0.05, noise_range=(0.0, 0.1), samples_per_volume=16)
    train, validation, (panel_inputs, _) = training_data(config.validate(), volumes, volumes)
    stds = _per_sample_noise_std(train)
    assert stds.min() < 0.02 and stds.max() > 0.08 and stds.max() < 0.11
    assert panel_inputs.shape == (8, 32, 32, 1)  # one input: no noise-level map
    np.testing.assert_array_equal(_per_sample_noise_std(validation), _per_sample_noise_std(validation))
