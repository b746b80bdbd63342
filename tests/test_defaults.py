"""One definition per default (utils.base.defaults), and the filters a training run gets."""

import dataclasses
import subprocess
import sys

import pytest

from tests.scripts import REPO
from utils.base import defaults
from utils.learning.cli import parse_training_args
from utils.learning.config import TrainingConfig, resolve_filters


def test_defaults_and_the_configuration_import_without_tensorflow():
    code = "import sys, utils.base.defaults, utils.learning.config, utils.learning.cli; sys.exit('tensorflow' in sys.modules or 'models' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, timeout=60).returncode == 0


def test_model_packages_use_the_shared_definitions():
    import models
    from utils.learning import pipeline
    from utils.data import prior, readers

    assert models.MODEL_NAMES is defaults.MODEL_NAMES and models.DEFAULT_FILTERS is defaults.DEFAULT_FILTERS
    assert set(defaults.DEFAULT_FILTERS) == set(defaults.MODEL_NAMES)
    assert readers.DEFAULT_HU_WINDOW == pipeline.DEFAULT_HU_WINDOW == TrainingConfig().hu_window == defaults.DEFAULT_HU_WINDOW
    assert prior.PRIOR_VARIANTS is defaults.PRIOR_VARIANTS
    sampling = pipeline.PatchSampling(patch=(8, 8))
    config = TrainingConfig()
    assert (sampling.prior_half_window, sampling.prior_decay, sampling.prior_variant) == (
        config.prior_half_window, config.prior_decay, config.prior_variant) == tuple(defaults.DEFAULT_PRIOR.values())


def test_air_and_the_hu_floor_are_two_quantities():
    from utils.data import phantom

    assert phantom.AIR_HU == defaults.AIR_HU == -1000.0  # air on the Hounsfield scale (phantom background)
    assert defaults.HU_FLOOR == -1024.0 < defaults.AIR_HU  # the readers' clamp for padding markers


def test_every_setting_has_help_text():
    for field in dataclasses.fields(TrainingConfig):
        assert field.metadata["help"], field.name
        assert "valid" in field.metadata, field.name


@pytest.mark.parametrize(
    "model, given, quick, expected",
    [
        ("unet", 0, False, 24),  # the script's own model keeps the script's FILTERS
        ("convnet", 0, False, 64),  # another family gets its own default, not the script's 24
        ("dncnn", 0, False, 64),
        ("resnet", 0, False, 32),
        ("convnet", 8, False, 8),  # --filters given
        ("convnet", 0, True, 24),  # --quick: the script's (quick) filters for every model
        ("transformer", 0, False, 0),  # unknown: left to validate(), which names the model
    ],
)
def test_filters_resolve_to_the_family_default_unless_given(model, given, quick, expected):
    assert resolve_filters(model, given, script_model="unet", script_filters=24, quick=quick) == expected


def test_convnet_from_the_2d_scripts_defaults_trains_64_filters():
    script_defaults = TrainingConfig(ndim=2, model="unet", filters=24, depth=3)
    assert parse_training_args(script_defaults, "test", [])[0].filters == 24
    assert parse_training_args(script_defaults, "test", ["--model", "convnet"])[0].filters == 64
    assert parse_training_args(script_defaults, "test", ["--model", "convnet", "--filters", "16"])[0].filters == 16
    assert TrainingConfig(model="convnet").filters == 64 and TrainingConfig().filters == defaults.DEFAULT_FILTERS["unet"]
