"""The layer rule of docs/ARCHITECTURE.md: every module imports only from its own layer or lower ones."""

import ast
import subprocess
import sys

import pytest

from tests.conftest import REPO

# Lowest first. Modules of one rank may import each other, except across the two rank-2 layers.
LAYERS = {
    "foundation": (0, {"utils.errors", "utils.atomic", "utils.defaults", "utils.locks"}),
    "data": (1, {"utils.readers", "utils.scans", "utils.phantom", "utils.real_ct_split", "utils.describe", "utils.noise_level",
                 "utils.noise", "utils.lowdose", "utils.prior", "utils.metrics"}),
    "solvers": (2, {"utils.variational", "utils.classical"}),
    "models": (2, {"models.builders", "models.layers", "models.inference", "models.reference_h5", "models.storage", "models.export", "models"}),
    "learning": (3, {"utils.config", "utils.cli", "utils.pipeline", "utils.training"}),
    "application": (4, {"utils.tuning", "utils.assessment", "utils.figures", "utils.denoising"}),
}
LAYER_OF = {module: name for name, (_, modules) in LAYERS.items() for module in modules}
# The data layer's readers and writers need neither TensorFlow nor the models.
TF_FREE = ("utils.readers", "utils.scans", "utils.phantom", "utils.real_ct_split", "utils.describe", "utils.noise_level", "utils.locks", "utils.defaults")


def module_files():
    for package in ("utils", "models"):
        for path in sorted((REPO / package).glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            yield name, path


def imported_project_modules(path):
    """Every utils/models module ``path`` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("utils", "models"):
            if node.module in ("utils", "models"):
                found |= {f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in LAYER_OF else node.module for alias in node.names}
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] in ("utils", "models")}
    return found


def test_every_module_has_a_layer():
    unplaced = [name for name, _ in module_files() if name not in LAYER_OF and name != "utils"]
    assert not unplaced, f"add these modules to a layer in docs/ARCHITECTURE.md and here: {unplaced}"


@pytest.mark.parametrize("name,path", list(module_files()), ids=lambda v: v if isinstance(v, str) else "")
def test_imports_point_downward(name, path):
    if name == "utils":
        return
    layer = LAYER_OF[name]
    rank = LAYERS[layer][0]
    for target in imported_project_modules(path) - {name}:
        target_layer = LAYER_OF.get(target, "models" if target.startswith("models") else None)
        assert target_layer is not None, f"{name} imports {target}, which has no layer"
        target_rank = LAYERS[target_layer][0]
        assert target_rank < rank or target_layer == layer, f"{name} ({layer}) imports {target} ({target_layer}): upward or sideways"


def test_the_data_layer_imports_neither_tensorflow_nor_the_models():
    code = f"import sys; import {', '.join(TF_FREE)}; print(sorted(m for m in ('tensorflow', 'keras', 'models') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]", result.stdout
