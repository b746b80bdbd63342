"""Load the reference repository's tf.keras 2.4 whole-model ``.h5`` files into this project's builders.

Why not just ``keras.models.load_model``? It works for the published files, but it returns the
reference's own graph (fixed 256x256 input, anonymous layer names, no ``noisy`` input name), which
the rest of the toolkit cannot treat like its own models. Here we read the file with h5py, recognise
the architecture from its ``model_config`` JSON, build the same architecture with ``build_model`` and
copy the weights in the file's stored order (``model_weights.attrs['layer_names']``, then each layer's
``weight_names``) -- never sorted by name, which would put ``conv2d_10`` (the output) after ``conv2d_1``.

Examples::

    model = load_reference_h5("kits19_200subj_data2k_UNet_32_noisepc2_model_best.h5")
    model.name                                  # 'unet_2d', any H, W divisible by 4
    describe_reference_h5(path)["filters"]      # 32: the build settings recognised in the file

Recognised: the Convnet (3 convs), Convnet7 (10 convs), the 2D/3D U-Net and the 3D ResPr-U-Net
(two inputs + Add). Anything else raises ``ModelFileError`` naming the file.
"""

import json
import re
from pathlib import Path

import h5py
import numpy as np

from models.builders import build_model
from utils.base.errors import ModelFileError

_CONV_CLASSES = {"Conv2D": 2, "Conv3D": 3}
_POOL_CLASSES = ("MaxPooling2D", "MaxPooling3D")
# The published files were trained on kits19 HU clipped to [-1000, 400] and scaled to [0, 1].
REFERENCE_HU_WINDOW = (-1000.0, 400.0)


def describe_reference_h5(path):
    """Return the build settings (``build_model`` keyword arguments plus provenance) of a reference ``.h5``.

    Keys: ``model``, ``ndim``, ``filters``, ``depth``, ``kernel_size``, ``residual``, ``padding``, ``prior``,
    ``hu_window``, ``noise`` (parsed from ``noisepcN`` in the file name, else None), ``source``,
    ``keras_version``.
    """
    path = Path(path)
    config, keras_version = _read_model_config(path)
    layers = _config_layers(path, config)
    convs = [layer["config"] for layer in layers if layer.get("class_name") in _CONV_CLASSES]
    if not convs:
        raise ModelFileError(path, "no Conv2D/Conv3D layers in model_config: not a reference repository denoiser")
    classes = [layer.get("class_name") for layer in layers]
    ndim = _CONV_CLASSES[next(c for c in classes if c in _CONV_CLASSES)]
    n_pools = sum(c in _POOL_CLASSES for c in classes)
    n_inputs = sum(c == "InputLayer" for c in classes) or 1
    has_add = "Add" in classes

    if "BatchNormalization" in classes:
        raise ModelFileError(path, "batch-norm models (the reference ResNet) have no loadable published form")
    if n_pools:
        name = "resprunet" if n_inputs == 2 else "unet"
        residual = has_add and name == "unet"
    elif len(convs) == 3:
        name, residual = "convnet", False
    elif len(convs) == 10:
        name, residual = "cnn7", False
    else:
        raise ModelFileError(
            path, f"architecture not recognised ({len(convs)} convs, {n_pools} poolings, {n_inputs} inputs)"
        )
    settings = {
        "model": name,
        "ndim": ndim,
        "filters": int(convs[0]["filters"]),
        "depth": n_pools if n_pools else 2,
        "kernel_size": int(_first(convs[0]["kernel_size"])),
        "residual": bool(residual),
        "padding": convs[0].get("padding", "same"),
        "prior": name == "resprunet",
        "hu_window": list(REFERENCE_HU_WINDOW),
        "noise": _noise_from_name(path.name),
        "source": f"reference_h5:{path.name}",
        "keras_version": keras_version,
    }
    return settings


def load_reference_h5(path):
    """Build this project's model matching a reference ``.h5`` and load its weights (by stored order).

    Returns an uncompiled ``keras.Model`` whose output equals ``keras.models.load_model(path)``'s.

    Raises:
        ModelFileError: missing, unreadable or non-Keras file; unrecognised architecture; weights that do not fit.
    """
    path = Path(path)
    settings = describe_reference_h5(path)
    options = {"padding": settings["padding"]} if settings["padding"] != "same" else {}
    model = build_model(
        settings["model"],
        ndim=settings["ndim"],
        filters=settings["filters"],
        depth=settings["depth"],
        kernel_size=settings["kernel_size"],
        residual=settings["residual"],
        **options,
    )
    stored = _read_weights(path)
    expected = [tuple(w.shape) for w in model.weights]
    found = [tuple(w.shape) for w in stored]
    if expected != found:
        raise ModelFileError(
            path, f"weights do not fit the recognised {model.name} (expected shapes {expected}, file has {found})"
        )
    model.set_weights(stored)
    return model


def _read_model_config(path):
    if not path.is_file():
        raise ModelFileError(path, "no such file")
    try:
        with h5py.File(path, "r") as h5:
            raw = h5.attrs.get("model_config")
            keras_version = _text(h5.attrs.get("keras_version", "unknown"))
    except OSError as err:
        raise ModelFileError(path, f"not a readable HDF5 model file ({err})") from None
    if raw is None:
        raise ModelFileError(path, "HDF5 file without a 'model_config' attribute: not a whole-model Keras .h5")
    try:
        return json.loads(_text(raw)), keras_version
    except json.JSONDecodeError as err:
        raise ModelFileError(path, f"model_config is not valid JSON ({err})") from None


def _config_layers(path, config):
    try:
        layers = config["config"]["layers"]
    except (KeyError, TypeError):
        raise ModelFileError(path, "model_config has no layer list") from None
    if not isinstance(layers, list):
        raise ModelFileError(path, "model_config layer list is malformed")
    return layers


def _read_weights(path):
    """All weight arrays in the file's topological order (layer_names, then each layer's weight_names)."""
    try:
        with h5py.File(path, "r") as h5:
            group = h5["model_weights"] if "model_weights" in h5 else h5
            arrays = []
            for layer_name in group.attrs["layer_names"]:
                layer = group[_text(layer_name)]
                for weight_name in layer.attrs.get("weight_names", []):
                    arrays.append(np.asarray(layer[_text(weight_name)], dtype=np.float32))
            return arrays
    except (OSError, KeyError) as err:
        raise ModelFileError(path, f"weights unreadable or incomplete ({err})") from None


def _text(value):
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _first(value):
    return value[0] if isinstance(value, (list, tuple)) else value


def _noise_from_name(filename):
    match = re.search(r"noisepc(\d+)", filename)
    return int(match.group(1)) / 100 if match else None
