"""Assessment layer and the three Demo_assess_* scripts, on a tiny dataset and tiny models.

The demos run as a user runs them (subprocess) with small options; metric values are checked
against scikit-image through ``utils.application.assessment`` directly. Tuned baseline parameters are seeded
into a temporary tuning table so that no test tunes on the embedded phantoms.
"""

import csv
import json
import math

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from tests.ct_files import write_nifti
from tests.scripts import REPO, run_script
from utils.application import assessment, figures, tuning
from utils.base.errors import ConfigError, DataError, ModelFileError
from utils.data.prior import neighbour_prior

DEMO_2D = REPO / "Demo_assess_2D_learning_methods.py"
DEMO_3D = REPO / "Demo_assess_3D_learning_methods.py"
DEMO_VARIATIONAL = REPO / "Demo_assess_variational_methods.py"
SHAPE = (12, 48, 48)
NOISE = 0.05
UNET_H5 = "kits19_200subj_data2k_UNet_32_noisepc5_model_best.h5"


# ---------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """Two 12x48x48 phantom volumes (HU, int16 NIfTI) in one folder."""
    from utils.data.phantom import make_phantom

    folder = tmp_path_factory.mktemp("ct")
    for seed in (1, 2):
        hu = make_phantom(seed, shape=SHAPE, spacing=(2.5, 5.0, 5.0))
        write_nifti(folder / f"case_{seed}.nii.gz", np.asarray(hu).astype(np.int16).transpose(2, 1, 0), zooms=(5.0, 5.0, 2.5))
    return folder


@pytest.fixture(scope="module")
def full_size_data(tmp_path_factory):
    """One 4x256x256 phantom volume at 1 mm in plane: the scale the reference models were trained at."""
    from utils.data.phantom import make_phantom

    path = tmp_path_factory.mktemp("ct256") / "case_256.nii.gz"
    hu = make_phantom(3, shape=(4, 256, 256), spacing=(2.5, 1.0, 1.0))
    return write_nifti(path, np.asarray(hu).astype(np.int16).transpose(2, 1, 0), zooms=(1.0, 1.0, 2.5))


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """Untrained 4-filter models saved with their configuration, and a corrupt file."""
    from models.builders import build_model
    from models.storage import save_model

    folder = tmp_path_factory.mktemp("models")
    paths = {}
    for name, ndim, noise in (("unet", 2, NOISE), ("resprunet", 2, NOISE), ("unet", 3, NOISE), ("unet", 2, 0.02)):
        stem = f"{name}{ndim}d" + ("" if noise == NOISE else "_noise2")
        config = {"ndim": ndim, "noise": noise, "model": name, "filters": 4, "prior": name == "resprunet"}
        paths[stem] = save_model(build_model(name, ndim=ndim, filters=4), folder / f"{stem}.keras", config)
    paths["corrupt"] = folder / "corrupt.keras"
    paths["corrupt"].write_bytes(b"PK\x03\x04 this is not a Keras archive")
    return paths


@pytest.fixture(scope="module")
def tuned_dir(tmp_path_factory):
    """Tuning tables with hand-set entries, as if utils.application.tuning had run (keeps the tests off the phantoms)."""
    folder = tmp_path_factory.mktemp("tuned")
    for noise in (0.02, NOISE):
        common = {"psnr": 30.0, "seed": 0, "crop_shape": [1, 1]}
        for ndim in (2, 3):
            path = assessment.tuned_path(folder, ndim)
            tuning.record_tuned(path, "tv", noise, {"weight": 0.8 * noise, "n_outer": 1, **common})
            tuning.record_tuned(path, "spade", noise, {"tv_weight": 0.6 * noise, "prior_weight": 0.6 * noise, "n_outer": 1, **common})
        tuning.record_tuned(assessment.tuned_path(folder, 2), "bm3d", noise, {"sigma": noise, "sigma_multiplier": 1.0, **common})
    return folder


def read_csv(path):
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
    return header, assessment.read_metrics_csv(path)


def assert_png(path):
    assert path.is_file(), path
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 5_000


# ---------------------------------------------------------------------------------- demos, end to end


@pytest.mark.e2e
def test_2d_demo_writes_metrics_summary_and_figure(tiny_data, tiny_models, tuned_dir, tmp_path):
    out = tmp_path / "assess2d"
    run_script(
        DEMO_2D, "--data", tiny_data, "--models", tiny_models["unet2d"], tiny_models["resprunet2d"],
        "--methods", "noisy,tv", "--slices-per-volume", 3, "--tuned-dir", tuned_dir, "--out", out,
    )
    header, rows = read_csv(out / "metrics.csv")
    assert header == list(assessment.METRIC_COLUMNS)
    assert [r["method"] for r in rows[::6]] == ["noisy", "tv", "unet2d", "resprunet2d"]
    assert len(rows) == 4 * 2 * 3 and {r["noise"] for r in rows} == {NOISE}
    assert all(r["seconds"] >= 0 and math.isfinite(r["psnr"]) for r in rows)
    noisy = [r for r in rows if r["method"] == "noisy"]
    # Every noisy input, the first included, carries the noise: PSNR ~ -20 log10(0.05) = 26 dB.
    assert all(24.0 < r["psnr"] < 28.0 for r in noisy), noisy
    tv = {r["sample"]: r["psnr"] for r in rows if r["method"] == "tv"}
    assert all(tv[r["sample"]] > r["psnr"] + 2 for r in noisy)
    summary = (out / "summary.md").read_text()
    for text in ("| tv |", "| unet2d |", "**", "HU window", "[-1000, 400]", "2020", "sigma = 0.05", "comparison.png"):
        assert text in summary, text
    assert_png(out / "comparison.png")
    assert not list(out.glob("*.tmp*"))


@pytest.mark.e2e
def test_2d_demo_metrics_are_identical_across_runs(tiny_data, tiny_models, tuned_dir, tmp_path):
    """Same seed, same metrics to the last digit (only the timings may differ)."""
    tables = []
    for run in ("first", "second"):
        out = tmp_path / run
        run_script(
            DEMO_2D, "--data", tiny_data, "--models", tiny_models["unet2d"], "--methods", "noisy,tv",
            "--slices-per-volume", 2, "--tuned-dir", tuned_dir, "--seed", 7, "--out", out,
        )
        _, rows = read_csv(out / "metrics.csv")
        tables.append([{k: v for k, v in r.items() if k != "seconds"} for r in rows])
    assert tables[0] == tables[1] and len(tables[0]) == 3 * 2 * 2  # methods x volumes x slices


@pytest.mark.e2e
def test_3d_demo_scores_volumes_with_3d_and_2d_models(tiny_data, tiny_models, tuned_dir, tmp_path):
    out = tmp_path / "assess3d"
    run_script(
        DEMO_3D, "--data", tiny_data, "--models", tiny_models["unet3d"], tiny_models["resprunet2d"],
        "--methods", "noisy,tv,spade", "--max-depth", 8, "--tuned-dir", tuned_dir, "--out", out, "--self-ensemble",
    )
    header, rows = read_csv(out / "metrics.csv")
    assert header == list(assessment.METRIC_COLUMNS)
    assert {r["method"] for r in rows} == {"noisy", "tv", "spade", "unet3d", "resprunet2d"}
    assert {r["sample"] for r in rows} == {"case_1_z002-009", "case_2_z002-009"}
    assert_png(out / "views.png")
    summary = (out / "summary.md").read_text()
    assert "central 8 slices" in summary
    assert "self-ensemble of 8 flips" in summary and "self-ensemble of 4 flips" in summary


def test_a_self_ensemble_model_method_predicts_the_flip_mean(volumes, tiny_models):
    from models import predict

    sample = assessment.volume_samples(assessment.add_noise(volumes, NOISE), max_depth=8)[0]
    plain = assessment.load_model_method(tiny_models["unet3d"], allowed_ndims=(3,))
    ensemble = assessment.load_model_method(tiny_models["unet3d"], allowed_ndims=(3,), self_ensemble=True)
    expected = predict(plain.model, sample.noisy, tile_shape=plain.tile_shape, self_ensemble=True, progress=False)
    np.testing.assert_allclose(ensemble.denoise(sample), expected, atol=1e-6)
    assert not np.allclose(plain.denoise(sample), expected, atol=1e-6)
    assert "self-ensemble of 8 flips" in ensemble.describe() and "self-ensemble" not in plain.describe()


@pytest.mark.e2e
def test_variational_demo_writes_grids_and_convergence_plot(tiny_data, tuned_dir, tmp_path):
    out = tmp_path / "variational"
    result = run_script(
        DEMO_VARIATIONAL, "--data", tiny_data, "--noise", "0.02,0.05", "--methods", "noisy,tv,spade",
        "--max-depth", 8, "--max-size", 40, "--tuned-dir", tuned_dir, "--out", out,
    )
    header, rows = read_csv(out / "metrics.csv")
    assert header == list(assessment.METRIC_COLUMNS)
    assert len(rows) == 2 * 2 * 3 and {r["noise"] for r in rows} == {0.02, 0.05}
    for name in ("comparison_noise0.02.png", "comparison_noise0.05.png", "convergence.png"):
        assert_png(out / name)
    summary = (out / "summary.md").read_text()
    assert "## Noise sigma = 0.02" in summary and "## Noise sigma = 0.05" in summary
    assert "sigma = 0.02" in result.stdout


@pytest.mark.e2e
def test_2d_demo_accepts_a_reference_h5_model(seed_models, full_size_data, tuned_dir, tmp_path):
    out = tmp_path / "h5"
    run_script(
        DEMO_2D, "--data", full_size_data, "--models", seed_models / UNET_H5, "--methods", "noisy",
        "--slices-per-volume", 2, "--tuned-dir", tuned_dir, "--out", out,
    )
    _, rows = read_csv(out / "metrics.csv")
    stem = UNET_H5.removesuffix(".h5")
    by_sample = {(r["method"], r["sample"]): r["psnr"] for r in rows}
    samples = {r["sample"] for r in rows}
    assert {r["method"] for r in rows} == {"noisy", stem}
    # The published 5 % U-Net removes noise from phantom slices it never saw.
    assert all(by_sample[(stem, s)] > by_sample[("noisy", s)] + 3 for s in samples)


@pytest.mark.parametrize(
    "model, expected",
    [("corrupt", ["corrupt.keras", "not a .keras archive"]), ("unet3d", ["unet3d.keras", "3D model", "2D models"])],
)
@pytest.mark.bad_input
@pytest.mark.e2e
def test_2d_demo_refuses_bad_model_files_cleanly(tiny_data, tiny_models, tuned_dir, tmp_path, model, expected):
    out = tmp_path / "refused"
    result = run_script(
        DEMO_2D, "--data", tiny_data, "--models", tiny_models[model], "--methods", "noisy",
        "--tuned-dir", tuned_dir, "--out", out, check=False,
    )
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("error: "), result.stderr[-2000:]
    for text in expected:
        assert text in message, message
    assert "Traceback" not in result.stderr
    assert not out.exists(), "no partial outputs"


# ------------------------------------------------------------------------------ samples and metrics


@pytest.fixture(scope="module")
def volumes(tiny_data):
    return assessment.load_volumes([tiny_data])


def test_noise_covers_whole_volumes_and_the_first_sample(volumes):
    noisy_volumes = assessment.add_noise(volumes, NOISE, seed=7)
    samples = assessment.slice_samples(noisy_volumes, slices_per_volume=3)
    assert [s.name for s in samples[:3]] == ["case_1_z002", "case_1_z006", "case_1_z010"]
    first = samples[0]
    assert np.std(first.noisy - first.clean) == pytest.approx(NOISE, rel=0.1)
    for volume in noisy_volumes:  # noise on every slice, not only on the sampled ones
        assert np.std(volume.noisy - volume.clean, axis=(1, 2)).min() > 0.8 * NOISE
    # Paired across levels: the same standard-normal field, scaled.
    weaker = assessment.add_noise(volumes, 0.02, seed=7)[0]
    np.testing.assert_allclose(weaker.noisy - weaker.clean, 0.4 * (noisy_volumes[0].noisy - noisy_volumes[0].clean), atol=1e-6)
    again = assessment.add_noise(volumes, NOISE, seed=7)[0]
    np.testing.assert_array_equal(again.noisy, noisy_volumes[0].noisy)


def test_priors_come_from_the_whole_noisy_volume(volumes):
    volume = assessment.add_noise(volumes, NOISE)[0]
    whole = neighbour_prior(volume.noisy)
    slice_sample = assessment.slice_samples([volume], 3)[0]
    np.testing.assert_array_equal(slice_sample.prior(), whole[slice_sample.index])
    crop = assessment.volume_samples([volume], max_depth=4, max_size=32)[0]
    assert crop.noisy.shape == (4, 32, 32) and crop.name == "case_1_z004-007_y008-039_x008-039"
    np.testing.assert_array_equal(crop.prior(), whole[4:8, 8:40, 8:40])


def test_metrics_match_scikit_image_on_the_same_arrays(volumes, tuned_dir, tmp_path):
    noisy_volumes = assessment.add_noise(volumes, NOISE)
    for samples in (assessment.slice_samples(noisy_volumes, 2), assessment.volume_samples(noisy_volumes, max_depth=6)):
        methods = assessment.baseline_methods(["noisy", "tv"], NOISE, samples[0].ndim, tuned_dir=tuned_dir, progress=False)
        evaluation = assessment.evaluate(methods, samples, keep=[s.name for s in samples], progress=False)
        path = assessment.write_metrics_csv(tmp_path / f"metrics{samples[0].ndim}d.csv", evaluation.records)
        rows = assessment.read_metrics_csv(path)
        assert len(rows) == len(methods) * len(samples)
        for row, sample in zip(rows, samples * len(methods)):
            clean = sample.clean.astype(np.float64)
            estimate = evaluation.outputs[(row["method"], sample.name)].astype(np.float64)
            slices = [(clean, estimate)] if clean.ndim == 2 else list(zip(clean, estimate))
            ssim = np.mean([
                structural_similarity(c, e, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
                for c, e in slices
            ])
            rel_err = 100 * np.linalg.norm(estimate - clean) / np.linalg.norm(clean)
            assert row["psnr"] == pytest.approx(peak_signal_noise_ratio(clean, estimate, data_range=1.0), rel=1e-6)
            assert row["ssim"] == pytest.approx(ssim, rel=1e-6)
            assert row["rel_err_percent"] == pytest.approx(rel_err, rel=1e-6)
            if row["method"] == "noisy":
                assert not np.allclose(estimate, clean)


def test_bm3d_baseline_on_a_tiny_image(volumes, tuned_dir):
    from utils.solvers import classical

    if not classical.is_available("bm3d"):
        pytest.skip("the bm3d binary is not available")
    samples = assessment.slice_samples(assessment.add_noise(volumes[:1], NOISE), 1)
    methods = assessment.baseline_methods(["noisy", "bm3d"], NOISE, 2, tuned_dir=tuned_dir, progress=False)
    assert methods[1].params == {"sigma": NOISE}
    records = assessment.evaluate(methods, samples, progress=False).records
    assert records[1]["psnr"] > records[0]["psnr"] + 3


def test_missing_tuned_parameters_are_tuned_and_stored(volumes, tmp_path):
    clean = [volumes[0].array]
    params, provenance = assessment.tuned_parameters("tv", NOISE, 2, tmp_path, validation_volumes=clean, progress=False)
    assert set(params) == {"weight", "n_outer"} and provenance.startswith("tuned now")
    stored = json.loads(assessment.tuned_path(tmp_path, 2).read_text())
    assert stored["tv"]["0.05"]["weight"] == params["weight"]
    again, provenance = assessment.tuned_parameters("tv", NOISE, 2, tmp_path, progress=False)
    assert again == params and provenance.startswith("tuned:")


def test_default_models_are_those_of_the_right_noise_and_dimension(tiny_models, tmp_path):
    files, notes = assessment.discover_models(tmp_path / "absent", NOISE)
    assert files == [] and "baselines only" in notes[0]
    subset = tmp_path / "models"
    subset.mkdir()
    (subset / "README.md").write_text("models go here")  # only .keras / .h5 files are considered
    for stem in ("unet2d", "unet3d", "unet2d_noise2", "resprunet2d"):
        (subset / f"{stem}.keras").write_bytes(tiny_models[stem].read_bytes())
    chosen, notes = assessment.discover_models(subset, NOISE, ndims=(2,))
    assert [p.name for p in chosen] == ["resprunet2d.keras", "unet2d.keras"]
    assert any("unet3d.keras" in n for n in notes) and any("unet2d_noise2.keras" in n for n in notes)
    chosen, _ = assessment.discover_models(subset, NOISE, ndims=(2, 3))
    assert len(chosen) == 3


@pytest.mark.bad_input
def test_dimension_and_prior_mismatches_are_caught_before_any_work(volumes, tiny_models):
    noisy_volumes = assessment.add_noise(volumes, NOISE)
    slices = assessment.slice_samples(noisy_volumes, 1)
    with pytest.raises(ModelFileError, match="3D model"):
        assessment.model_methods([tiny_models["unet3d"]], allowed_ndims=(2,))
    unet3d = assessment.model_methods([tiny_models["unet3d"]], allowed_ndims=(2, 3))[0]
    with pytest.raises(ModelFileError, match="2D slice"):
        assessment.check_compatible([unet3d], slices)
    with pytest.raises(ConfigError, match="bm4d"):
        assessment.baseline_methods(["bm4d"], NOISE, 2)
    single = assessment.NoisyVolume("one", slices[0].clean[None], slices[0].noisy[None], NOISE, "one.png", True, None, None)
    with pytest.raises(DataError, match="2D image"):
        assessment.volume_samples([single])
    respr = assessment.model_methods([tiny_models["resprunet2d"]])[0]
    with pytest.raises(ConfigError, match="prior"):
        respr.check(assessment.slice_samples([single], 1)[0])
    with pytest.raises(ConfigError, match="unknown method"):
        assessment.parse_method_list("noisy,nlm")
    assert assessment.parse_method_list("none") == []


def test_summary_marks_the_best_method_and_states_the_settings(volumes):
    records = [
        {"method": m, "sample": s, "noise": NOISE, "psnr": p, "ssim": q, "rel_err_percent": e, "seconds": 0.1}
        for m, p, q, e in (("noisy", 26.0, 0.5, 11.0), ("tv", 35.0, 0.93, 3.0), ("unet", 36.0, 0.92, 2.5))
        for s in ("a", "b")
    ]
    stats = assessment.summarise(records)[NOISE]
    assert stats["tv"]["psnr"] == (35.0, 0.0)
    table = assessment.summary_table(stats)
    assert "| unet | **36.00 ± 0.00** | 0.9200 ± 0.0000 | **2.50 ± 0.00** |" in table
    assert "| tv | 35.00 ± 0.00 | **0.9300 ± 0.0000** |" in table
    samples = assessment.slice_samples(assessment.add_noise(volumes, NOISE, seed=3), 2)
    settings = assessment.describe_settings([], volumes, samples, [NOISE], 3, "2 slices per volume")
    text = assessment.summary_markdown("t", records, settings, [assessment.BaselineMethod("noisy")])
    for needle in ("embedded phantom test split", "sigma = 0.05", "default_rng([3, i])", "[-1000, 400] HU", "12x48x48"):
        assert needle in text, needle


def test_figure_titles_give_the_error_of_the_image_shown(tmp_path):
    clean = np.zeros((40, 40), np.float32)
    clean[10:30, 10:30] = 0.8
    estimate = clean + 0.01
    title = figures.panel_title("unet", clean, estimate)
    err = 100 * np.linalg.norm(estimate - clean) / np.linalg.norm(clean)
    assert title == f"unet, err: {err:.2f}, PSNR {40.0:.1f} dB"
    rows, cols = figures.pick_zoom_region(clean, fraction=0.25)
    assert rows.stop - rows.start == cols.stop - cols.start == 10
    assert_png(figures.comparison_grid(tmp_path / "grid.png", clean, [("noisy", clean + 0.05), ("unet", estimate)]))
    histories = {"sigma 0.05": {"tv": np.linspace(5, 2, 30), "spade": np.linspace(5, 1.8, 20)}}
    assert_png(figures.convergence_plot(tmp_path / "convergence.png", histories))


# ------------------------------------------------------------------- simulated low-dose test noise


@pytest.fixture(scope="module")
def lowdose_data(tmp_path_factory):
    """One 6x64x64 phantom volume (HU, int16 NIfTI) at a known 0.8 mm in-plane spacing."""
    from utils.data.phantom import make_phantom

    path = tmp_path_factory.mktemp("ct_lowdose") / "case_ld.nii.gz"
    hu = make_phantom(4, shape=(6, 64, 64), spacing=(2.5, 0.8, 0.8))
    return write_nifti(path, np.asarray(hu).astype(np.int16).transpose(2, 1, 0), zooms=(0.8, 0.8, 2.5))


@pytest.mark.e2e
def test_2d_demo_with_ct_lowdose_records_the_noise_model_and_dose(lowdose_data, tmp_path):
    out = tmp_path / "assess_lowdose"
    run_script(
        DEMO_2D, "--data", lowdose_data, "--noise-model", "ct_lowdose", "--dose", 0.25, "--models",
        "--methods", "noisy,tv", "--slices-per-volume", 2, "--tuned-dir", tmp_path / "tuned", "--out", out,
    )
    header, rows = read_csv(out / "metrics.csv")
    assert header == list(assessment.METRIC_COLUMNS) + ["noise_model", "dose"]
    assert len(rows) == 2 * 2 and {r["noise_model"] for r in rows} == {"ct_lowdose"} and {r["dose"] for r in rows} == {0.25}
    # The noise column is the measured std of the added noise: one positive number for the run.
    assert len({r["noise"] for r in rows}) == 1 and rows[0]["noise"] > 0
    assert all(math.isfinite(r["psnr"]) for r in rows)
    summary = (out / "summary.md").read_text()
    for text in ("ct_lowdose", "dose = 0.25", "reference form", "0.8 mm", "sigma estimated from each noisy sample"):
        assert text in summary, text
    assert not (tmp_path / "tuned").exists()  # no tuning for this noise: the sigma is estimated
    assert_png(out / "comparison.png")


def test_lowdose_test_noise_is_the_reference_form_at_the_volume_spacing(lowdose_data):
    from utils.data.noise import CTLowDoseNoise

    (volume,) = assessment.load_volumes([lowdose_data])
    (noisy,) = assessment.add_lowdose_noise([volume], 0.1, seed=5)
    expected = CTLowDoseNoise(dose=0.1, hu_window=volume.hu_window, pixel_spacing_mm=0.8).sample_numpy(
        volume.array, np.random.default_rng([5, 0])
    )
    np.testing.assert_array_equal(noisy.noisy, expected)
    assert noisy.noise_model == "ct_lowdose" and noisy.noise_params == {"dose": 0.1}
    # Less dose, more noise: the recorded (measured) level grows.
    assert noisy.noise > assessment.add_lowdose_noise([volume], 0.5, seed=5)[0].noise > 0


@pytest.mark.e2e
def test_lowdose_test_noise_needs_a_known_pixel_spacing(lowdose_data, tmp_path):
    import dataclasses

    (volume,) = assessment.load_volumes([lowdose_data])
    with pytest.raises(DataError, match="pixel spacing unknown"):
        assessment.add_lowdose_noise([dataclasses.replace(volume, spacing=None)], 0.25)
    # The same through a demo: a DICOM series without PixelSpacing stops with a clear message.
    import pydicom

    from tests.ct_files import write_axial_series

    folder = write_axial_series(tmp_path / "no_spacing", [np.full((32, 32), 40.0), np.full((32, 32), 40.0)])
    for path in folder.glob("*.dcm"):
        dataset = pydicom.dcmread(path)
        del dataset.PixelSpacing
        dataset.save_as(path)
    result = run_script(
        DEMO_2D, "--data", folder, "--noise-model", "ct_lowdose", "--models", "--methods", "noisy",
        "--out", tmp_path / "never", check=False,
    )
    assert result.returncode != 0
    assert "pixel spacing unknown" in result.stderr and "ct_lowdose" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "never" / "metrics.csv").exists()


def test_noise_settings_check_the_dose_options():
    assert assessment.make_noise_setting("gaussian", 0.05).params == {"sigma": 0.05}
    assert assessment.make_noise_setting("ct_lowdose").dose == assessment.DEFAULT_DOSE
    with pytest.raises(ConfigError, match="ct_lowdose only"):
        assessment.make_noise_setting("gaussian", 0.05, dose=0.25)
    with pytest.raises(ConfigError, match="adds no noise"):
        assessment.make_noise_setting("ct_lowdose", dose=1.0)
    with pytest.raises(ConfigError):
        assessment.make_noise_setting("ct_lowdose", dose=0.0)
    assert assessment.parse_dose_list("0.25,0.1") == [0.25, 0.1]
    with pytest.raises(ConfigError):
        assessment.parse_dose_list("0.25,2")


def test_default_models_include_blind_ones_in_their_range_and_leave_low_dose_ones_out(tmp_path):
    from models import build_model, save_model

    model = build_model("convnet", ndim=2, filters=2)
    save_model(model, tmp_path / "level.keras", {"model": "convnet", "ndim": 2, "noise": 0.05})
    save_model(model, tmp_path / "blind.keras", {"model": "convnet", "ndim": 2, "noise": 0.05, "noise_range": [0.01, 0.12]})
    save_model(model, tmp_path / "lowdose.keras", {"model": "convnet", "ndim": 2, "noise": 0.05, "noise_model": "ct_lowdose", "dose": 0.25})
    chosen, _ = assessment.discover_models(tmp_path, 0.05)
    assert sorted(p.name for p in chosen) == ["blind.keras", "level.keras"]
    chosen, notes = assessment.discover_models(tmp_path, 0.10)
    assert [p.name for p in chosen] == ["blind.keras"] and any("lowdose.keras" in n and "ct_lowdose" in n for n in notes)
    assert assessment.discover_models(tmp_path, 0.2)[0] == []


def test_low_dose_assessment_takes_the_models_whose_dose_or_dose_range_fits(tmp_path):
    from models import build_model, save_model

    model = build_model("convnet", ndim=2, filters=2)
    lowdose = {"model": "convnet", "ndim": 2, "noise": 0.05, "noise_model": "ct_lowdose"}
    save_model(model, tmp_path / "quarter.keras", {**lowdose, "dose": 0.25})
    save_model(model, tmp_path / "range.keras", {**lowdose, "dose": 0.25, "dose_range": [0.05, 0.5]})
    save_model(model, tmp_path / "gaussian.keras", {"model": "convnet", "ndim": 2, "noise": 0.05})
    chosen, _ = assessment.discover_models(tmp_path, noise_model="ct_lowdose", dose=0.25)
    assert sorted(p.name for p in chosen) == ["quarter.keras", "range.keras"]
    chosen, notes = assessment.discover_models(tmp_path, noise_model="ct_lowdose", dose=0.1)
    assert [p.name for p in chosen] == ["range.keras"] and any("quarter.keras" in n and "dose 0.25" in n for n in notes)
    chosen, notes = assessment.discover_models(tmp_path, noise_model="ct_lowdose", dose=0.02)
    assert chosen == [] and any("range.keras" in n and "0.05-0.5" in n for n in notes)
