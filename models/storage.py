"""Save and load trained models together with the configuration that produced them.

File format: a standard Keras 3 ``.keras`` archive (a zip holding ``config.json``, ``metadata.json`` and
``model.weights.h5``) with one extra entry, ``ctden_config.json``: the run configuration as JSON. One file
is the whole record, so it cannot drift apart from a sidecar; Keras ignores the extra entry and any zip
tool can read it (``unzip -p model.keras ctden_config.json``).

Examples::

    save_model(model, "runs/unet/model.keras", config.to_dict())      # atomic: no half-written model
    model, config = load_model("runs/unet/model.keras")               # safe_mode=True, uncompiled
    model, config = load_model("kits19_..._UNet_32_noisepc2_model_best.h5")   # reference files too

Safety: loading never runs code from the file. Keras' ``safe_mode=True`` already refuses Python lambdas;
we refuse every ``Lambda`` layer before Keras parses the archive, with a message naming the file.
"""

import json
import zipfile
from pathlib import Path

import keras
import numpy as np

from models.precision import with_precision
from models.reference_h5 import describe_reference_h5, load_reference_h5
from utils.base.atomic import atomic_path
from utils.base.errors import ConfigError, ModelFileError

CONFIG_ENTRY = "ctden_config.json"
KERAS_SUFFIX = ".keras"
REFERENCE_SUFFIXES = (".h5", ".hdf5")


def save_model(model, path, config):
    """Write ``model`` to ``path`` (``.keras``) atomically, with ``config`` (a JSON-serialisable dict) embedded.

    Raises:
        ConfigError: ``path`` does not end in ``.keras``, or ``config`` is not a JSON-serialisable dict.
    """
    path = Path(path)
    if path.suffix != KERAS_SUFFIX:
        raise ConfigError(f"model files are saved as .keras archives; got {path}")
    if not isinstance(config, dict):
        raise ConfigError(f"config must be a dict, got {type(config).__name__}")
    try:
        config_text = json.dumps(config, indent=2, sort_keys=True, default=_json_default)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"config is not JSON-serialisable: {err}") from None
    with atomic_path(path) as tmp:
        model.save(tmp)
        with zipfile.ZipFile(tmp, "a") as archive:
            archive.writestr(CONFIG_ENTRY, config_text + "\n")
    return path


def load_model(path, precision="auto"):
    """Load a ``.keras`` file saved by ``save_model`` (or any safe ``.keras``), or a reference ``.h5``.

    ``precision``: ``"auto"`` runs a model saved from a mixed-precision run in float32 on machines that do
    not compute in bfloat16 natively (:func:`models.precision.with_precision`: same weights, several times
    faster there); ``"float32"`` always in float32; ``None`` keeps the layers' policies as saved.

    Returns:
        ``(model, config)``: the uncompiled model and its embedded configuration (``{}`` for a ``.keras``
        without one; the recognised build settings for a reference ``.h5``, see ``describe_reference_h5``).

    Raises:
        ModelFileError: missing, truncated or non-model file, Lambda layers, or anything Keras cannot load
            with ``safe_mode=True``; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(path, "no such model file")
    suffix = path.suffix.lower()
    if suffix in REFERENCE_SUFFIXES:
        return load_reference_h5(path), describe_reference_h5(path)
    if suffix != KERAS_SUFFIX:
        raise ModelFileError(path, f"unsupported model file type {suffix!r}; expected .keras or a reference .h5")

    model_config, config = _read_archive(path)
    if _has_lambda(model_config):
        raise ModelFileError(path, "contains a Lambda layer (arbitrary Python code); refused for safety")
    try:
        model = keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as err:  # Keras raises ValueError, TypeError, OSError, KeyError... all mean "unusable"
        problem = f"Keras could not load it with safe_mode=True ({type(err).__name__}: {err})"
        raise ModelFileError(path, problem) from None
    return with_precision(model, precision), config


def read_config(path):
    """The embedded configuration of a ``.keras`` file, without building the model (``{}`` if none)."""
    return _read_archive(Path(path))[1]


def _read_archive(path):
    """Return (Keras model config, embedded run config) from a .keras zip, validating its structure."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if "config.json" not in names:
                raise ModelFileError(path, "zip archive without config.json: not a Keras model file")
            model_config = json.loads(archive.read("config.json"))
            config = json.loads(archive.read(CONFIG_ENTRY)) if CONFIG_ENTRY in names else {}
    except zipfile.BadZipFile as err:
        raise ModelFileError(path, f"not a .keras archive or truncated ({err})") from None
    except (OSError, EOFError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelFileError(path, f"corrupt .keras archive ({type(err).__name__}: {err})") from None
    if not isinstance(config, dict):
        raise ModelFileError(path, f"{CONFIG_ENTRY} does not hold a JSON object")
    return model_config, config


def _has_lambda(node):
    if isinstance(node, dict):
        if node.get("class_name") == "Lambda":
            return True
        return any(_has_lambda(value) for value in node.values())
    if isinstance(node, list):
        return any(_has_lambda(value) for value in node)
    return False


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
