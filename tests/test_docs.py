"""The README is a short user's guide whose commands and links work; the docs' links resolve too."""

import re
from pathlib import Path

import pytest

from tests.conftest import REPO

MAX_README_LINES = 300
LINK = re.compile(r"\]\(([^)\s]+)\)")
QUICK_START = (
    "python3 -m pip install -r requirements.txt && python3 Train_model_denoising2D.py",
    "python3 -m pip install -q -r requirements.txt && python3 -m pytest -q tests",
)
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "trained_models" / "README.md", REPO / "data" / "README.md"]


def test_readme_is_short_and_holds_the_two_quick_start_commands():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_README_LINES
    for command in QUICK_START:
        assert command in text, command
    # .ci/run runs exactly the README's test command.
    assert "python3 -m pip install -q -r requirements.txt && python3 -m pytest -q tests" in (REPO / ".ci" / "run").read_text()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves_to_a_file_in_the_repository(page):
    missing = []
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if re.match(r"^(https?:|mailto:|#)", target):
            continue
        path = (page.parent / target.split("#")[0]).resolve()
        if not path.exists() or REPO.resolve() not in (path, *path.parents):
            missing.append(target)
    assert not missing, f"{page.name} links to missing files: {missing}"


def test_readme_names_every_top_level_script():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    for script in sorted(REPO.glob("*.py")):
        assert script.name in text, script.name


def test_readme_headline_is_copied_from_the_benchmark_results(tmp_path):
    import json

    from studies.readme_tables import fill_readme

    entry = {"set": "CRLM slices", "noise": 0.05, "best": "unet2d_blind", "psnr": 40.1, "minus_bm3d": 0.3, "minus_bm4d": None, "minus_tv": 2.0}
    report = {"headline": [{**entry, "pass": "single"}, {**entry, "pass": "self-ensemble", "psnr": 40.4, "minus_bm3d": 0.6}]}
    (tmp_path / "r.json").write_text(json.dumps(report))
    (tmp_path / "README.md").write_text("intro\n<!-- real-ct-headline:start -->\nold\n<!-- real-ct-headline:end -->\nend\n")
    text = fill_readme(tmp_path / "r.json", tmp_path / "README.md", lowdose_results=None).read_text()
    assert "old" not in text and "| CRLM slices | 5 % | `unet2d_blind` | 40.10 | +0.30 | – | +2.00 | +0.60 | – |" in text
    assert text.startswith("intro\n") and text.endswith("end\n")


def load_make_figures():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_figures", REPO / "figures" / "make_figures.py")
    make_figures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_figures)
    return make_figures


def test_make_figures_without_runs_refreshes_the_models_table_and_keeps_the_results(tmp_path, monkeypatch):
    make_figures = load_make_figures()
    (tmp_path / "docs").mkdir()
    page = tmp_path / "docs" / "results.md"
    page.write_text("top\n<!-- results:start -->\nkept results\n<!-- results:end -->\n"
                    "<!-- shipped-models:start -->\nold table\n<!-- shipped-models:end -->\nend\n")
    monkeypatch.setattr(make_figures, "REPO", tmp_path)
    monkeypatch.setattr(make_figures, "FIGURES", tmp_path / "figures")
    monkeypatch.setattr("sys.argv", ["make_figures.py", "--only", "--runs-dir", str(tmp_path / "no_runs")])
    make_figures.main()
    text = page.read_text()
    assert "kept results" in text and "old table" not in text and make_figures.shipped_models_markdown() in text
    assert not (tmp_path / "figures").exists()  # no RESULTS.md written from no runs


def test_results_page_lists_every_shipped_model_with_its_noise_and_data():
    make_figures = load_make_figures()
    rows = {line.split("|")[1].strip(" `"): line.split("|") for line in make_figures.shipped_models_markdown().splitlines()[2:]}
    assert set(rows) == {path.name[: -len(".run.json")] + ".keras" for path in (REPO / "trained_models").glob("*.run.json")}
    assert rows["unet2d_blind.keras"][3].strip() == "blind, 1-12 %"
    assert rows["unet2d_lowdose.keras"][3].strip() == "low-dose CT, dose 0.02-0.5"
    assert re.fullmatch(r"phantoms \+ \d+ real data paths, zoom 0.3-1.6, window augmentation", rows["unet2d_blind.keras"][4].strip())
    assert rows["unet3d_noise0.05.keras"][3:5] == [" 5 % ", " phantoms "]
    assert rows["resprunet3d_lowdose.keras"][4].strip().endswith("; fine-tuned from `resprunet3d_blind.keras`")
