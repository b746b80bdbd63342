"""Parameter tuner (utils/application/tuning.py): searches, toy problems, and the atomic, merging JSON table."""

import json

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio

from utils.application import tuning
from utils.base.errors import ConfigError, DataError
from utils.data.noise import PoissonGaussianNoise


def test_golden_section_finds_a_log_scale_peak():
    calls = []

    def peaked(x):
        calls.append(x)
        return -((np.log(x) - np.log(0.042)) ** 2)

    best, score = tuning.golden_section_log(peaked, 0.001, 1.0, n_evals=14)
    evaluated = list(calls)  # a copy: calling peaked below appends to calls
    assert best == pytest.approx(0.042, rel=0.05)
    assert score == max(peaked(x) for x in evaluated)
    assert len(set(evaluated)) <= 14


def test_grid_search_returns_the_best_point():
    assert tuning.grid_search(lambda x: -abs(x - 3), [1, 2, 3, 4, 5]) == (3, 0)
    assert tuning.grid_search(lambda x: 1.0, ["first", "second"])[0] == "first"
    with pytest.raises(ConfigError):
        tuning.grid_search(lambda x: x, [])
    with pytest.raises(ConfigError):
        tuning.golden_section_log(lambda x: x, 1.0, 0.5)


@pytest.fixture
def toy_method(monkeypatch):
    """A fake method whose PSNR peaks at gain 0.6 on a grid; records every call."""
    calls = []

    def run(noisy, prior, sigma, params):
        calls.append(params["gain"])
        return noisy / params["gain"]  # the noisy data below are clean * 0.6: gain 0.6 undoes it

    def search(score, sigma, grid=(0.2, 0.4, 0.6, 0.8, 1.0)):
        gain, _ = tuning.grid_search(lambda g: score({"gain": g}), grid)
        return {"gain": gain}

    monkeypatch.setitem(tuning.TUNABLE_METHODS, "toy", tuning.TunableMethod("toy", run, search, budget=5))
    return calls


def test_tuner_picks_the_best_grid_point_and_writes_json(toy_method, tmp_path, monkeypatch):
    # Noise-free toy: "noisy" = 0.6 * clean, so gain 0.6 reconstructs exactly and wins.
    monkeypatch.setattr(tuning.GaussianNoise, "sample_numpy", lambda self, clean, rng: 0.6 * clean)
    clean = [np.random.default_rng(1).uniform(0.2, 0.8, (5, 20, 24)).astype(np.float32)]
    path = tmp_path / "tuned" / "tuned.json"
    result = tuning.tune("toy", clean, 0.05, results_path=path, progress=False, crop_shape=(4, 16, 16))
    assert result["gain"] == 0.6
    assert result["evaluations"] == 5 and len(toy_method) == 5  # the final score is cached
    assert result["crop_shape"] == [4, 16, 16]
    stored = json.loads(path.read_text())
    assert stored["toy"]["0.05"]["gain"] == 0.6
    assert tuning.load_tuned(path, "toy", 0.05) == stored["toy"]["0.05"]
    assert tuning.solver_parameters(stored["toy"]["0.05"]) == {"gain": 0.6}
    assert [p.name for p in path.parent.iterdir()] == ["tuned.json"]  # no temporary files left


def test_results_merge_with_an_existing_table(toy_method, tmp_path):
    path = tmp_path / "tuned.json"
    path.write_text(json.dumps({"bm3d": {"0.05": {"sigma": 0.05}}, "toy": {"0.1": {"gain": 1.0}}}))
    clean = [np.full((4, 12, 12), 0.5, np.float32)]
    tuning.tune("toy", clean, 0.02, results_path=path, progress=False)
    table = json.loads(path.read_text())
    assert table["bm3d"] == {"0.05": {"sigma": 0.05}}
    assert set(table["toy"]) == {"0.1", "0.02"}
    assert tuning.load_tuned(path, "toy", 0.1) == {"gain": 1.0}


def test_failed_tuning_leaves_the_table_untouched(tmp_path, monkeypatch):
    path = tmp_path / "tuned.json"
    original = json.dumps({"tv": {"0.05": {"weight": 0.06}}})
    path.write_text(original)

    def broken_search(score, sigma):
        score({"gain": 1.0})

    def broken_run(noisy, prior, sigma, params):
        raise RuntimeError("solver crashed")

    monkeypatch.setitem(tuning.TUNABLE_METHODS, "broken", tuning.TunableMethod("broken", broken_run, broken_search))
    with pytest.raises(RuntimeError, match="solver crashed"):
        tuning.tune("broken", [np.zeros((4, 8, 8), np.float32)], 0.05, results_path=path, progress=False)
    assert path.read_text() == original


@pytest.mark.bad_input
def test_load_tuned_missing_and_corrupt(tmp_path):
    assert tuning.load_tuned(tmp_path / "absent.json", "tv", 0.05) is None
    path = tmp_path / "tuned.json"
    path.write_text(json.dumps({"tv": {"0.05": {"weight": 0.06}}}))
    assert tuning.load_tuned(path, "tv", 0.1) is None
    assert tuning.load_tuned(path, "spade", 0.05) is None
    path.write_text("{not json")
    with pytest.raises(DataError, match="tuned.json"):
        tuning.load_tuned(path, "tv", 0.05)
    path.write_text(json.dumps([1, 2]))
    with pytest.raises(DataError, match="not a tuning table"):
        tuning.load_tuned(path, "tv", 0.05)


def test_noise_keys():
    assert tuning.noise_key(0.05) == "0.05"
    assert tuning.noise_key(0.1) == tuning.noise_key(0.10) == "0.1"
    assert tuning.noise_key(tuning.GaussianNoise(0.02)) == "0.02"
    assert tuning.noise_key(PoissonGaussianNoise(0.01, 0.002)) == "poisson_gaussian(gain=0.002,sigma=0.01)"


@pytest.mark.bad_input
def test_unknown_method_and_bad_crop():
    with pytest.raises(ConfigError, match="unknown method"):
        tuning.tune("nlm", [np.zeros((4, 8, 8), np.float32)], 0.05, progress=False)
    with pytest.raises(ConfigError, match="axes"):
        tuning.central_crop(np.zeros((4, 8, 8)), (8, 8))
    with pytest.raises(DataError, match="volume"):
        tuning.make_validation_set([np.zeros((8, 8), np.float32)], 0.05, with_prior=True)


def test_validation_crops_are_central_and_seeded():
    clean = np.arange(6 * 10 * 12, dtype=np.float32).reshape(6, 10, 12) / 720
    first = tuning.make_validation_set([clean], 0.05, seed=3, crop_shape=(4, 6, 8), with_prior=True)
    again = tuning.make_validation_set([clean], 0.05, seed=3, crop_shape=(4, 6, 8), with_prior=True)
    crop_clean, crop_noisy, crop_prior = first[0]
    np.testing.assert_array_equal(crop_clean, clean[1:5, 2:8, 2:10])
    np.testing.assert_array_equal(crop_noisy, again[0][1])
    assert crop_prior.shape == (4, 6, 8)


def test_a_prior_of_ones_choice_is_built_on_the_whole_volume_then_cropped():
    clean = np.arange(6 * 10 * 12, dtype=np.float32).reshape(6, 10, 12) / 720
    seen = []

    def prior_from(noisy, whole_clean):
        seen.append((noisy.shape, whole_clean.shape))
        return whole_clean * 2.0

    ((crop_clean, crop_noisy, crop_prior),) = tuning.make_validation_set(
        [clean], 0.05, seed=3, crop_shape=(4, 6, 8), with_prior=True, prior_from=prior_from
    )
    assert seen == [((6, 10, 12), (6, 10, 12))]
    np.testing.assert_array_equal(crop_prior, 2.0 * crop_clean)
    default = tuning.make_validation_set([clean], 0.05, seed=3, crop_shape=(4, 6, 8), with_prior=True)
    np.testing.assert_array_equal(crop_noisy, default[0][1])  # the same noise whatever the prior


def blocks_volume(seed):
    rng = np.random.default_rng(seed)
    volume = np.full((8, 32, 32), 0.3, np.float32)
    for _ in range(6):
        z, y, x = rng.integers(0, 6), rng.integers(0, 24), rng.integers(0, 24)
        volume[z : z + 4, y : y + 8, x : x + 8] = rng.uniform(0.2, 0.9)
    return volume


def test_tv_tuning_on_a_small_volume(tmp_path):
    path = tmp_path / "tuned.json"
    volumes = [blocks_volume(0), blocks_volume(1)]
    result = tuning.tune("tv", volumes, 0.05, results_path=path, progress=False, n_evals=6)
    assert result["evaluations"] == 6
    assert 0.005 < result["weight"] < 0.25 and result["n_outer"] == 2
    assert result["psnr"] > result["noisy_psnr"] + 5
    # The recorded PSNR is the one the tuned parameters give on the same crops.
    crops = tuning.make_validation_set(volumes, 0.05, seed=0, crop_shape=(16, 96, 96))
    denoised = [tuning.variational.tv_denoise(noisy, **tuning.solver_parameters(result)) for _, noisy, _ in crops]
    recomputed = np.mean([peak_signal_noise_ratio(c, d, data_range=1.0) for (c, _, _), d in zip(crops, denoised)])
    assert result["psnr"] == pytest.approx(recomputed, abs=1e-6)
    assert tuning.load_tuned(path, "tv", 0.05)["weight"] == result["weight"]


def test_spade_tuning_runs_on_a_small_volume():
    result = tuning.tune("spade", [blocks_volume(2)], 0.05, progress=False, n_evals=3)
    assert {"tv_weight", "prior_weight", "n_outer"} <= set(result)
    assert result["psnr"] > result["noisy_psnr"] + 5


def test_validation_slices_come_from_whole_volumes_with_their_prior():
    from utils.data.noise import GaussianNoise
    from utils.data.prior import neighbour_prior

    rng = np.random.default_rng(3)
    volumes = [rng.uniform(0.2, 0.8, (9, 40, 44)).astype(np.float32), rng.uniform(0.2, 0.8, (5, 33, 30)).astype(np.float32)]
    crops = tuning.make_validation_set(volumes, 0.05, seed=1, crop_shape=(24, 24), with_prior=True, slices_per_volume=2)
    assert len(crops) == 4 and all(a.shape == (24, 24) for crop in crops for a in crop)
    noisy = GaussianNoise(0.05).sample_numpy(volumes[0], np.random.default_rng(1))  # the first volume's draw
    z = 6  # evenly spaced over 9 slices: the centres of two equal bins, 2 and 6
    np.testing.assert_allclose(crops[1][1], tuning.central_crop(noisy[z], (24, 24)))
    np.testing.assert_allclose(crops[1][2], tuning.central_crop(neighbour_prior(noisy)[z], (24, 24)), rtol=1e-6)
    np.testing.assert_array_equal(crops[1][0], tuning.central_crop(volumes[0][z], (24, 24)))
