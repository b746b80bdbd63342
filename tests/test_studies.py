"""The research studies (studies/*.py): quick runs end to end on tiny data, their tables and refusals."""

import json
import math
import time

import numpy as np
import pytest

from tests.scripts import REPO, run_script


@pytest.mark.e2e
def test_real_ct_recipes_score_a_run_against_bm3d_on_held_out_data(tmp_path, quick_2d_run):
    from tests.ct_files import write_nifti

    run, _ = quick_2d_run
    zz, yy, xx = np.mgrid[:8, :64, :64]
    held_out = tmp_path / "held_out.nii.gz"
    hu = (-600 + 500 * np.sin(yy / 7.0 + zz / 3.0) * np.cos(xx / 9.0)).astype(np.float32)
    write_nifti(held_out, np.transpose(hu, (2, 1, 0)))  # NIfTI stores (x, y, z)
    out = tmp_path / "recipes.json"
    table = tmp_path / "recipes.md"
    result = run_script(
        REPO / "studies" / "real_ct_recipes.py", "--real-ct", held_out, "--runs", run, "--out", out, "--markdown", table
    )
    report = json.loads(out.read_text())
    assert f"| {run.name} | embedded phantoms, 4 samples per volume | 2 |" in table.read_text()
    (recipe,) = report["recipes"]
    assert recipe["run"] == run.name and recipe["data"] == "embedded phantoms, 4 samples per volume" and recipe["epochs"] == 2
    assert math.isfinite(recipe["psnr"]) and report["bm3d_psnr"] > report["noisy_psnr"] + 3
    assert recipe["psnr_minus_bm3d"] == pytest.approx(recipe["psnr"] - report["bm3d_psnr"], abs=1e-3)
    assert run.name in result.stdout and "vs BM3D" in result.stdout


@pytest.mark.bad_input
@pytest.mark.e2e
def test_real_ct_recipes_refuse_a_run_trained_on_the_held_out_data(tmp_path):
    held_out = tmp_path / "series"
    held_out.mkdir()
    run = tmp_path / "leaky_run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"settings": {"data": [str(held_out)]}}))
    (run / "model_final.keras").write_bytes(b"not used")
    result = run_script(REPO / "studies" / "real_ct_recipes.py", "--real-ct", held_out, "--runs", run, check=False)
    assert result.returncode != 0 and "was trained on" in result.stderr and "leaky_run" in result.stderr


@pytest.mark.e2e
def test_spade_prior_study_gains_with_a_better_prior(tmp_path):
    """A prior made of clean neighbouring slices must lift SPADE above a prior made of noisy ones."""
    from studies import spade_prior

    out, table = tmp_path / "spade_prior.json", tmp_path / "spade_prior.md"
    run_script(REPO / "studies" / "spade_prior.py", "--quick", "--out", out, "--markdown", table)
    rows = {row["prior"]: row for row in json.loads(out.read_text())["rows"]}
    assert set(rows) == set(spade_prior.PRIORS)
    for row in rows.values():
        assert row["prior_psnr"] < row["spade_psnr"] and math.isfinite(row["tv_psnr"])
        assert row["spade_minus_tv"] == pytest.approx(row["spade_psnr"] - row["tv_psnr"], abs=2e-3)
    clean, noisy = rows["clean, 3 slices"], rows["noisy, 3 slices"]
    assert clean["prior_psnr"] > noisy["prior_psnr"] and clean["spade_psnr"] > noisy["spade_psnr"]
    assert "| 0.05 | clean, 3 slices |" in table.read_text()


@pytest.mark.e2e
def test_real_ct_scaling_trains_on_slice_subsets_and_fits_a_trend(tmp_path):
    from studies.real_ct_scaling import trend, write_slice_subset
    from tests.ct_files import write_nifti
    from utils.data.phantom import ensure_default_dataset
    from utils.data.readers import read_ct
    from utils.learning.training import QUICK_PHANTOMS

    splits = ensure_default_dataset(**QUICK_PHANTOMS)
    zz, yy, xx = np.mgrid[:6, :48, :48]
    hu = (-600 + 500 * np.sin(yy / 7.0 + zz / 3.0) * np.cos(xx / 9.0)).astype(np.float32)
    train_ct, held_out = tmp_path / "train_ct.nii.gz", tmp_path / "held_out.nii.gz"
    write_nifti(train_ct, np.transpose(hu, (2, 1, 0)))  # NIfTI stores (x, y, z)
    write_nifti(held_out, np.transpose(hu[:, ::-1], (2, 1, 0)))

    subset = write_slice_subset(train_ct, 2, tmp_path / "subset.npz")
    (whole,), (part,) = read_ct(train_ct), read_ct(subset)
    assert not part.contiguous
    np.testing.assert_array_equal(part.array, whole.array[[1, 4]])  # centred in 2 equal bins of 6 slices

    out, table, runs = tmp_path / "scaling.json", tmp_path / "scaling.md", tmp_path / "runs"
    run_script(
        REPO / "studies" / "real_ct_scaling.py", "--train-ct", train_ct, "--held-out", held_out, "--counts", 2, 0,
        "--epochs", 1, "--phantoms", splits["train"][0], "--validation-data", splits["val"][0], "--train-options=--quick",
        "--runs-dir", runs, "--out", out, "--markdown", table,
    )
    report = json.loads(out.read_text())
    assert [r["real_slices"] for r in report["recipes"]] == [2, 6]
    assert [r["run"] for r in report["recipes"]] == ["train_ct_n2", "train_ct_all"]
    assert all(r["epochs"] == 1 and math.isfinite(r["psnr"]) for r in report["recipes"])
    assert (runs / "data" / "train_ct_n2.npz").is_file()
    leads = [r["psnr_minus_bm3d"] for r in report["recipes"]]
    assert report["db_per_doubling"] == pytest.approx((leads[1] - leads[0]) / np.log2(3), abs=2e-3)
    assert "| 2 | train_ct_n2 | 1 |" in table.read_text() and "per doubling" in table.read_text()

    slope, reach = trend([10, 20, 40], [-1.0, -0.5, 0.0], goal_db=0.5)
    assert slope == pytest.approx(0.5) and reach == pytest.approx(80.0)
    assert trend([10, 20], [0.0, -0.5], goal_db=0.5) == (-0.5, None)
    assert trend([10, 10], [0.0, 0.1], goal_db=0.5) == (None, None)


def _fake_real_ct(tmp_path):
    """A tiny real-CT corpus and split: a 12-slice test series (and a training one never read), 3 test images."""
    from tests.ct_files import write_nifti

    root = tmp_path / "real_ct"
    series, images = root / "series_fake_abdomen_nifti", root / "slices_fake_chest_nifti"
    series.mkdir(parents=True)
    images.mkdir()
    zz, yy, xx = np.mgrid[:12, :96, :96]
    hu = (-600 + 500 * np.sin(yy / 7.0 + zz / 3.0) * np.cos(xx / 9.0)).astype(np.float32)
    write_nifti(series / "test_vol.nii.gz", np.transpose(hu, (2, 1, 0)), zooms=(1.5, 1.5, 3.0))  # NIfTI stores (x, y, z)
    (series / "train_vol.nii.gz").write_bytes(b"a training patient: never read")
    for k in range(3):
        write_nifti(images / f"img{k}.nii.gz", np.transpose(hu[4 * k : 4 * k + 1, ::-1], (2, 1, 0)))

    def dataset(train, test, patients):
        return {"source": "test", "kind": "clean", "patient_id_from": "test", "notes": "", "train": train, "test": test, "patients": patients}

    split = tmp_path / "split.json"
    split.write_text(json.dumps({"datasets": {
        "series_fake_abdomen_nifti": dataset(["P0"], ["P1"], {"P0": ["train_vol.nii.gz"], "P1": ["test_vol.nii.gz"]}),
        "slices_fake_chest_nifti": dataset([], ["P2", "P3"], {"P2": ["img0.nii.gz", "img1.nii.gz"], "P3": ["img2.nii.gz"]}),
    }}))
    return root, split, images


@pytest.mark.e2e
def test_real_ct_quick_scores_only_test_patients_with_the_models_of_each_level(tmp_path):
    """studies/real_ct.py --quick on a corpus and split the test writes: sets, model choice, both files."""
    from models import build_model, save_model

    root, split, images = _fake_real_ct(tmp_path)
    model = build_model("unet", ndim=2, filters=4, depth=1, residual=True)  # untrained: scores need only be finite
    files = {
        "blind": {"model": "unet", "ndim": 2, "noise": 0.05, "noise_range": [0.01, 0.12]},
        "level002": {"model": "unet", "ndim": 2, "noise": 0.02},
        "leaky": {"model": "unet", "ndim": 2, "noise": 0.05, "data": [str(images)]},
    }
    for name, config in files.items():
        save_model(model, tmp_path / f"{name}.keras", config)
    out = tmp_path / "out" / "real_ct.json"
    started = time.monotonic()
    result = run_script(
        REPO / "studies" / "real_ct.py", "--quick", "--real-ct", root, "--split", split, "--out", out,
        "--models", *[tmp_path / f"{name}.keras" for name in files],
    )
    print(f"real_ct --quick: {time.monotonic() - started:.0f} s")
    report = json.loads(out.read_text())
    assert report["levels"] == [0.05] and report["quick"]
    sets = {s["name"]: s for s in report["sets"]}
    assert list(sets) == ["fake_abdomen slices", "fake_abdomen volume", "fake_abdomen volume 3 mm", "fake_chest slices"]
    assert len(sets["fake_chest slices"]["samples"]) == 2 and sets["fake_abdomen volume"]["samples"] == ["test_vol_8x32x32"]
    assert sets["fake_abdomen volume 3 mm"]["samples"] == ["test_vol_8x32x32"]
    methods = {name: [r["method"] for r in report["rows"] if r["set"] == name] for name in sets}
    assert methods["fake_chest slices"] == ["noisy", "tv", "bm3d", "blind", "blind+SE"]
    assert methods["fake_abdomen volume 3 mm"] == ["noisy", "tv", "spade", "bm4d", "blind", "blind+SE"]
    assert any("leaky.keras skipped: trained or validated on test data" in n for n in report["notes"])
    for row in report["rows"]:
        assert math.isfinite(row["psnr"]) and -1 <= row["ssim"] <= 1 and row["seconds"] >= 0 and row["n"] >= 1
        assert row["learned"] == row["method"].startswith("blind") and row["self_ensemble"] == row["method"].endswith("+SE")
    noisy = {r["set"]: r["psnr"] for r in report["rows"] if r["method"] == "noisy"}
    assert all(r["psnr"] > noisy[r["set"]] for r in report["rows"] if r["method"] in ("bm3d", "bm4d"))
    heads = [h for h in report["headline"] if h["set"] == "fake_abdomen volume"]
    assert [h["pass"] for h in heads] == ["single", "self-ensemble"] and heads[1]["best"] == "blind+SE"
    assert heads[0]["minus_tv"] == pytest.approx(heads[0]["psnr"] - heads[0]["tv_psnr"], abs=2e-3)
    assert set(report["goals"]) == {"beats_bm3d", "beats_bm4d", "none_below_tv_3mm", "best_above_tv_3mm"}
    text = out.with_suffix(".md").read_text()
    assert "## Headline" in text and "| fake_abdomen volume 3 mm | 0.05 | single | blind |" in text
    assert "### fake_chest slices, sigma 0.05 (2 images)" in text and "| blind+SE |" in text
    assert "fake_abdomen volume 3 mm" in result.stdout and "vs BM4D" in result.stdout


def test_real_ct_cache_keys_a_model_by_the_precision_it_ran_in(tmp_path, rng):
    """A mixed-precision file run in float32 gives other numbers: its cached results must not be reused."""
    import types

    import keras

    from models import build_model, load_model, save_model
    from studies.real_ct import cache_key
    from utils.application.assessment import ModelMethod

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_model("unet", ndim=2, filters=4, depth=1, residual=True)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    config = {"model": "unet", "ndim": 2, "noise": 0.05}
    path = save_model(model, tmp_path / "mixed.keras", config)
    clean = rng.random((16, 16), dtype=np.float32)
    test_set = types.SimpleNamespace(name="set", description="one image")
    samples = [types.SimpleNamespace(name="a", clean=clean)]

    def key(precision):
        method = ModelMethod(path, load_model(path, precision=precision)[0], config)
        return cache_key(test_set, samples, 0.05, method)

    (as_saved, record), (in_float32, _), (again, _) = key(None), key("float32"), key("float32")
    assert record["compute_dtype"] == "mixed_bfloat16" and as_saved != in_float32 and in_float32 == again


@pytest.mark.skipif(not (REPO.parent / "shared" / "data" / "real_ct").is_dir(), reason="the shared real CT (../shared) is absent")
@pytest.mark.e2e
def test_lowdose_quality_study_quick_run(tmp_path):
    """studies/lowdose_quality.py --quick: simulated low dose on real clean test slices, real low-dose noise and edges."""
    started = time.monotonic()
    result = run_script(REPO / "studies" / "lowdose_quality.py", "--quick", "--out", tmp_path, timeout=300)
    print(f"lowdose_quality --quick: {time.monotonic() - started:.0f} s")
    report = json.loads((tmp_path / "RESULTS_lowdose_quality.json").read_text())
    assert report["quick"] and report["doses"] == [0.25]
    table = report["simulated"]["0.25"]["methods"]
    assert {"noisy", "bm3d_est", "bm3d_tuned"} <= set(table)
    assert all(math.isfinite(m["psnr"]) and 0 < m["ssim"] <= 1 for m in table.values())
    # The tuned multiplier is the best of the ones tried, so tuned BM3D is never below the estimate's.
    assert table["bm3d_tuned"]["psnr"] >= table["bm3d_est"]["psnr"] - 1e-9
    real = report["real"]
    assert real["noisy"]["regions"] > 0 and real["noisy"]["noise_std_hu_median"] > 0
    assert real["bm3d_est"]["noise_std_hu_median"] < real["noisy"]["noise_std_hu_median"]
    assert real["bm3d_est"]["edge_width_vs_bm3d"] == pytest.approx(1.0)
    figure = tmp_path / "lowdose_real_before_after.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and figure.stat().st_size < 1_000_000
    text = (tmp_path / "RESULTS_lowdose_quality.md").read_text()
    assert "## A. Simulated low dose" in text and "## B. Real low-dose" in text and "| bm3d_tuned |" in text


@pytest.mark.skipif(not (REPO.parent / "shared" / "data" / "real_ct").is_dir(), reason="the shared real CT (../shared) is absent")
@pytest.mark.e2e
def test_lowdose_volumes_study_quick_run(tmp_path):
    """studies/lowdose_volumes.py --quick: simulated low dose on the real test series, BM3D/BM4D tuned, a model and its +SE."""
    import shutil

    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(REPO / "trained_models" / "unet2d_lowdose.keras", models)
    run_script(REPO / "studies" / "lowdose_volumes.py", "--quick", "--models-dir", models, "--out", tmp_path, timeout=300)
    report = json.loads((tmp_path / "RESULTS_lowdose_volumes.json").read_text())
    (result,) = report["results"]
    table = result["methods"]
    assert set(table) == {"noisy", "bm3d_est", "bm3d_tuned", "bm4d_est", "bm4d_tuned", "unet2d_lowdose", "unet2d_lowdose+SE"}
    assert all(math.isfinite(m["psnr"]) and 0 < m["ssim"] <= 1 and m["seconds"] >= 0 for m in table.values())
    for solver in ("bm3d", "bm4d"):  # tuned is the best multiplier tried, so never below the plain estimate
        assert table[f"{solver}_tuned"]["psnr"] >= table[f"{solver}_est"]["psnr"] - 1e-9
    assert result["added_std_hu"] > 0 and result["sigma_estimates"] and all(0 < s < 1 for s in result["sigma_estimates"])
    # Every record is a sample of the real test series, never of a training patient.
    assert {r["noise_model"] for r in result["records"]} == {"ct_lowdose"} and "series_crlm" in report["volumes"][0]
    assert any("resprunet3d_lowdose is not in the comparison" in note for note in report["notes"])
    text = (tmp_path / "RESULTS_lowdose_volumes.md").read_text()
    assert "| unet2d_lowdose+SE |" in text and "vs BM4D tuned, dose 0.25" in text


@pytest.mark.e2e
def test_architecture_study_scores_finished_runs_on_the_real_test_slices(tmp_path):
    """studies/architecture.py on two finished runs: what each is and cost, and its margin over BM3D per set."""
    from models import build_model, save_model

    root, split, _ = _fake_real_ct(tmp_path)
    runs = []
    for name, family, minutes in (("arch_unet", "unet", 3.0), ("arch_drunet", "drunet", 4.0)):
        run = tmp_path / name
        run.mkdir()
        settings = {"model": family, "ndim": 2, "filters": 4, "depth": 1, "noise": 0.05, "noise_range": [0.01, 0.12]}
        model = build_model(family, ndim=2, filters=4, depth=1, residual=True)
        save_model(model, run / "model_best.keras", settings)
        trained_on = [{"data_path": "data/phantom/train"}] * 3 + [{"data_path": "data/real_ct_sample"}]  # the default data
        (run / "config.json").write_text(json.dumps({"settings": settings, "data": {"train": trained_on}}))
        (run / "history.csv").write_text("epoch,val_psnr\n0,30.5\n1,31.25\n2,31.0\n")
        (run / "finished.json").write_text(json.dumps({"minutes": minutes}))
        runs.append((run, model.count_params()))
    # An exported model (as in trained_models/) fine-tuned from another, with its records beside it.
    shipped = tmp_path / "exported" / "shipped.keras"
    shipped.parent.mkdir()
    settings = {"model": "unet", "ndim": 2, "filters": 4, "depth": 1, "noise": 0.05, "noise_range": [0.01, 0.12],
                "data": ["a", "b"], "init_model": "trained_models/base.keras"}
    model = build_model("unet", ndim=2, filters=4, depth=1, residual=True)
    save_model(model, shipped, settings)
    (shipped.parent / "shipped.config.json").write_text(json.dumps({"settings": settings}))
    (shipped.parent / "shipped.history.csv").write_text("epoch,val_psnr\n0,30.5\n1,31.25\n2,31.0\n")
    (shipped.parent / "shipped.run.json").write_text(json.dumps({"command": "", "summary": {"minutes": 5.0}}))
    runs.append((shipped, model.count_params()))
    out = tmp_path / "out" / "architecture.json"
    result = run_script(
        REPO / "studies" / "architecture.py", "--quick", "--real-ct", root, "--split", split, "--runs", *[run for run, _ in runs],
        "--models-dir", tmp_path / "models", "--out", out,
    )
    report = json.loads(out.read_text())
    described = {r["run"]: r for r in report["runs"]}
    for run, parameters in runs:
        assert described[run.stem]["parameters"] == parameters and described[run.stem]["epochs"] == 3
        assert described[run.stem]["best_val_psnr"] == pytest.approx(31.25)
    assert described["shipped"]["minutes"] == 5.0 and described["shipped"]["data_paths"] == 2
    assert described["arch_unet"]["data_paths"] == 2  # counted from what the run read, not from --data
    assert not (tmp_path / "models" / "shipped.keras").exists()  # an exported model is scored where it is
    assert described["arch_drunet"]["minutes"] == 4.0 and described["arch_drunet"]["model"] == "drunet"
    scores = json.loads(out.with_name("architecture_real_ct.json").read_text())
    assert {s["kind"] for s in scores["sets"]} == {"slices"}  # the volume sets are left out
    psnr = {(r["set"], r["noise"], r["method"]): r["psnr"] for r in scores["rows"] if not r["self_ensemble"]}
    assert len(report["comparison"]["per_set"]) == 2 * 3  # two slice sets, three levels
    entry = report["comparison"]["per_set"][-1]
    for name in ("arch_unet", "arch_drunet", "shipped"):
        assert entry[name] == psnr[(entry["set"], entry["noise"], name)] and entry["bm3d"] == psnr[(entry["set"], entry["noise"], "bm3d")]
        margins = [e[name] - e["bm3d"] for e in report["comparison"]["per_set"]]
        assert report["comparison"]["mean_minus_bm3d"][name] == pytest.approx(sum(margins) / len(margins), abs=1e-3)
    table = out.with_suffix(".md").read_text()
    assert "| arch_drunet | drunet | 4 / 1 |" in table and "## Per set and level" in table
    assert "| 2 | base.keras | 3 | 5.0 |" in table  # data paths, started from, epochs, minutes
    assert "arch_unet" in result.stdout
