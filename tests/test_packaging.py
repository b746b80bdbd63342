"""Packaging: pyproject.toml agrees with requirements.txt, and no module edits the import path."""

import re
import subprocess
import sys
import tomllib

import pytest

from tests.scripts import REPO


def _pins():
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        requirement = line.split("#", 1)[0].strip()
        if requirement:
            name, version = requirement.split("==")
            pins[name.strip().lower()] = version.strip()
    return pins


def test_pyproject_dependencies_are_the_requirements_pins():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = list(project["dependencies"]) + [d for extra in project["optional-dependencies"].values() for d in extra]
    lower_bounds = {}
    for dependency in declared:
        name, version = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", dependency).groups()
        lower_bounds[name.lower()] = version
    assert lower_bounds == _pins()
    assert set(project["optional-dependencies"]["classical"]) == {f"bm3d>={_pins()['bm3d']}", f"bm4d>={_pins()['bm4d']}"}


def test_no_module_edits_the_import_path():
    offenders = []
    for path in REPO.rglob("*.py"):
        relative = path.relative_to(REPO)
        if relative.parts[0].startswith(".") or relative.as_posix() == "tests/conftest.py":
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if re.search(r"sys\.path\.(insert|append)|sys\.path\s*=|sys\.path\[", text):
            offenders.append(str(relative))
    assert offenders == []


@pytest.mark.parametrize("command", [["-m", "benchmarks.soak"], ["benchmarks/soak.py"]])
def test_a_benchmark_runs_as_a_module_and_by_its_path(command):
    result = subprocess.run([sys.executable, *command, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: soak.py")
