"""tf.data pipelines: shapes, dtypes, fresh training noise, fixed validation noise, exact prior."""

import numpy as np
import pytest
import tensorflow as tf

from utils.config import TrainingConfig
from utils.errors import ConfigError
from utils.noise import GaussianNoise
from utils.pipeline import PatchSampling, make_dataset
from utils.prior import neighbour_prior
from utils.training import training_data


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
    inputs, clean = next(iter(make_dataset(volumes, sampling, batch_size=4)))
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
    from utils.pipeline import balanced_samples_per_volume

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
