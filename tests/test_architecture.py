"""The layer rule of docs/ARCHITECTURE.md: each layer is a package, and every module imports only from its
own layer or lower ones; the old flat ``utils.<module>`` names still give the same modules."""

import ast
import subprocess
import sys

import pytest

import utils
from tests.conftest import REPO

# Layer packages, lowest first. Packages of one rank may import each other, except the two of rank 2.
RANK = {"utils.base": 0, "utils.data": 1, "utils.solvers": 2, "models": 2, "utils.learning": 3, "utils.application": 4}
# The data layer's readers and writers need neither TensorFlow nor the models.
TF_FREE = ("utils.data.readers", "utils.data.scans", "utils.data.phantom", "utils.data.real_ct_split", "utils.data.describe",
           "utils.data.noise_level", "utils.base.locks", "utils.base.defaults")


def module_files():
    """``(module name, path)`` of every module of the layer packages (``models`` and ``utils/<layer>/``)."""
    for package in RANK:
        folder = REPO.joinpath(*package.split("."))
        for path in sorted(folder.glob("*.py")):
            yield (package if path.stem == "__init__" else f"{package}.{path.stem}"), path


def layer_of(module):
    """The layer package that ``module`` belongs to (None for a name outside every layer)."""
    return next((package for package in RANK if module == package or module.startswith(package + ".")), None)


def imported_project_modules(path):
    """Every utils/models module ``path`` imports, at module level or inside functions, by its full name."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("utils", "models"):
            found |= {f"{node.module}.{alias.name}" if layer_of(f"{node.module}.{alias.name}") else node.module for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] in ("utils", "models")}
    return found


def test_utils_holds_only_layer_packages():
    loose = sorted(p.name for p in (REPO / "utils").glob("*.py") if p.name != "__init__.py")
    assert not loose, f"move these modules into a layer package (docs/ARCHITECTURE.md): {loose}"
    packages = {p.name for p in (REPO / "utils").iterdir() if (p / "__init__.py").exists()}
    assert {f"utils.{p}" for p in packages} == {p for p in RANK if p.startswith("utils.")}


@pytest.mark.parametrize("name,path", list(module_files()), ids=lambda v: v if isinstance(v, str) else "")
def test_imports_point_downward(name, path):
    layer = layer_of(name)
    for target in imported_project_modules(path) - {name}:
        target_layer = layer_of(target)
        assert target_layer is not None, f"{name} imports {target}, which is in no layer (use the layer package's name)"
        assert RANK[target_layer] < RANK[layer] or target_layer == layer, f"{name} ({layer}) imports {target} ({target_layer}): upward or sideways"


def test_the_data_layer_imports_neither_tensorflow_nor_the_models():
    code = f"import sys; import {', '.join(TF_FREE)}; print(sorted(m for m in ('tensorflow', 'keras', 'models') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]", result.stdout


def test_every_old_flat_name_is_the_moved_module_itself():
    import importlib

    assert set(utils.NEW_NAME.values()) <= {name for name, _ in module_files()}
    assert len(utils.NEW_NAME) == 24  # every module that sat in utils/ before the layer packages
    for old, new in utils.NEW_NAME.items():
        moved = importlib.import_module(new)
        assert importlib.import_module(old) is moved, old
        assert moved.__spec__.name == new and moved.__name__ == new  # the alias leaves the module's identity alone
    from utils import noise, readers  # the form the old scripts used

    assert readers is importlib.import_module("utils.data.readers") and noise.NOISE_MODELS is utils.data.noise.NOISE_MODELS


def test_old_module_commands_still_run(tmp_path):
    result = subprocess.run([sys.executable, "-m", "utils.real_ct_split", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "train" in result.stdout, result.stderr
    result = subprocess.run([sys.executable, "-m", "utils.describe", str(tmp_path / "absent")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "absent" in result.stderr  # the moved module's own error, under the old name
