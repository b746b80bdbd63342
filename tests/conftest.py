"""Shared fixtures: locations of the read-only real CT and seed models beside the checkout, one quick training run."""

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REAL_CT = SHARED / "data" / "real_ct"
SEED_MODELS = SHARED / "seed_models"


def _require(path):
    if not path.exists():
        pytest.skip(f"{path} is absent: these tests need the read-only shared/ folder beside the checkout")
    return path


QUICK_2D_RUN = ("--quick", "--precision", "float32")


@pytest.fixture(scope="session")
def quick_2d_run(tmp_path_factory):
    """One finished ``Train_model_denoising2D.py --quick`` run in float32 (the same numbers on every CPU), shared
    read-only: (run folder, its process result)."""
    from tests.scripts import run_script

    out = tmp_path_factory.mktemp("runs") / "quick2d"
    result = run_script(REPO / "Train_model_denoising2D.py", *QUICK_2D_RUN, "--out", out)
    return out, result


@pytest.fixture
def real_ct():
    return _require(REAL_CT)


@pytest.fixture
def seed_models():
    return _require(SEED_MODELS)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
