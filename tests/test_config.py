"""Configuration validation and the command line generated from it."""

import json

import pytest

from utils.learning.cli import parse_training_args
from utils.learning.config import TrainingConfig
from utils.base.errors import ConfigError


@pytest.mark.parametrize(
    "change, message",
    [
        ({"model": "transformer"}, "unknown model"),
        ({"noise": -0.05}, "--noise"),
        ({"noise": 5.0}, "fraction"),
        ({"patch": (30, 32)}, "multiples of 4"),
        ({"patch": (32, 32, 32)}, "needs 2 sizes"),
        ({"batch_size": 0}, "--batch-size"),
        ({"epochs": 0}, "--epochs"),
        ({"learning_rate": 0}, "--learning-rate"),
        ({"precision": "float8"}, "--precision"),
        ({"distribute": "horovod"}, "--distribute"),
        ({"hu_window": (400, -1000)}, "--hu-window"),
        ({"model": "unet", "prior": True}, "ResPrU-Net"),
    ],
)
@pytest.mark.bad_input
def test_bad_settings_are_named(change, message):
    with pytest.raises(ConfigError, match=message):
        TrainingConfig(**change).validate()


def test_resprunet_implies_the_prior():
    assert TrainingConfig(model="resprunet").prior


def test_another_model_on_the_command_line_drops_the_default_models_prior():
    """A script whose default is ResPrU-Net trains a plain U-Net with --model unet."""
    defaults = TrainingConfig(ndim=3, model="resprunet", patch=(16, 64, 64))
    config, _ = parse_training_args(defaults, "test", ["--model", "unet"])
    assert not config.validate().prior
    config, _ = parse_training_args(TrainingConfig(model="unet"), "test", ["--model", "resprunet"])
    assert config.validate().prior


def test_round_trip_through_json(tmp_path):
    config = TrainingConfig(ndim=3, model="resprunet", patch=(8, 32, 32), data=("a", "b"))
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config.to_dict()))
    assert TrainingConfig.from_json(path) == config


@pytest.mark.bad_input
def test_unknown_keys_are_refused():
    with pytest.raises(ConfigError, match="colour"):
        TrainingConfig.from_dict({"colour": "red"})


def test_command_line_overrides_every_kind_of_setting():
    defaults = TrainingConfig(model="unet", patch=(64, 64))
    config, options = parse_training_args(
        defaults,
        "test",
        ["--model", "convnet", "--patch", "32", "48", "--noise", "0.1", "--residual", "--hu-window", "-160", "240", "--quick"],
    )
    assert (config.model, config.patch, config.noise, config.residual) == ("convnet", (32, 48), 0.1, True)
    assert config.hu_window == (-160.0, 240.0)
    assert options.quick and not options.overwrite
    untouched, _ = parse_training_args(defaults, "test", [])
    assert untouched == defaults


@pytest.mark.bad_input
@pytest.mark.parametrize("zoom_range", [(0.5,), (0.0, 2.0), (2.0, 0.5), (-1.0, 2.0), (0.5, float("inf"))])
def test_bad_zoom_ranges_are_named(zoom_range):
    with pytest.raises(ConfigError, match="--zoom-range"):
        TrainingConfig(zoom_range=zoom_range).validate()


def test_zoom_range_from_the_command_line_is_float_and_round_trips(tmp_path):
    config, _ = parse_training_args(TrainingConfig(), "test", ["--zoom-range", "0.5", "2"])
    assert config.validate().zoom_range == (0.5, 2.0)
    assert all(isinstance(z, float) for z in config.zoom_range)
    assert TrainingConfig().zoom_range == () and TrainingConfig(zoom_range=(1, 1)).validate().zoom_range == (1.0, 1.0)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config.to_dict()))
    assert TrainingConfig.from_json(path) == config


@pytest.mark.bad_input
@pytest.mark.parametrize(
    "change, message",
    [
        ({"noise_range": (0.1,)}, "--noise-range takes LO HI"),
        ({"noise_range": (0.1, 0.1)}, "--noise-range takes LO HI"),
        ({"noise_range": (-0.01, 0.1)}, "--noise-range takes LO HI"),
        ({"noise_range": (0.0, 1.5)}, "--noise-range takes LO HI"),
        ({"noise_range": (0.0, 0.1), "noise_model": "poisson_gaussian"}, "cannot be combined"),
        ({"noise_range": (0.06, 0.1), "noise": 0.05}, "must lie inside --noise-range"),
    ],
)
def test_bad_noise_ranges_are_named(change, message):
    with pytest.raises(ConfigError, match=message):
        TrainingConfig(**change).validate()


def test_noise_range_from_the_command_line_is_float_and_recorded(tmp_path):
    config, _ = parse_training_args(TrainingConfig(), "test", ["--noise-range", "0", "0.1"])
    assert config.validate().noise_range == (0.0, 0.1) and TrainingConfig().noise_range == ()
    assert config.to_dict()["noise_range"] == (0.0, 0.1)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config.to_dict()))
    assert json.loads(path.read_text())["noise_range"] == [0.0, 0.1]
    assert TrainingConfig.from_json(path) == config


def _model_file(tmp_path, name, config):
    from models import build_model, save_model

    return save_model(build_model("convnet", ndim=2, filters=2), tmp_path / f"{name}.keras", config)


def test_saved_configurations_carry_their_version_and_old_ones_still_load(tmp_path):
    from utils.learning.config import CONFIG_VERSION, read_model_config

    current = TrainingConfig(model="convnet", filters=2).to_dict()
    assert current["config_version"] == CONFIG_VERSION >= 1
    path = _model_file(tmp_path, "current", current)
    assert read_model_config(path) == json.loads(json.dumps(current))  # as saved (tuples become lists)
    legacy = {"model": "unet", "ndim": 3, "noise": 0.05}  # before versions: no config_version, no patch
    assert TrainingConfig.from_embedded(legacy, "old.keras").config_version == 0
    assert TrainingConfig.from_embedded(legacy, "old.keras").patch == (128, 128, 128)
    assert read_model_config(_model_file(tmp_path, "legacy", legacy)) == legacy  # what it does not say stays unsaid


@pytest.mark.bad_input
@pytest.mark.parametrize(
    "config, message",
    [
        ({"model": "convnet", "config_version": 99}, "version 99.*update"),
        ({"model": "convnet", "learning_rate_peak": 1.0}, "unknown keys: learning_rate_peak"),
        ({"model": "convnet", "noise": -0.1}, "invalid.*--noise"),
        ({"model": "nosuchnet"}, "invalid.*unknown model"),
    ],
)
def test_bad_embedded_configurations_name_the_model_file(tmp_path, config, message):
    from utils.application import assessment
    from utils.base.errors import ModelFileError
    from utils.learning.config import read_model_config

    path = _model_file(tmp_path, "bad", config)
    with pytest.raises(ModelFileError, match=rf"bad\.keras.*{message}"):
        read_model_config(path)
    with pytest.raises(ModelFileError, match=rf"bad\.keras.*{message}"):
        assessment.load_model_method(path)
