"""Learned denoisers (Keras 3), one builder per family serving 2D and 3D.

Examples::

    from models import build_model, predict, save_model, load_model
    model = build_model("unet", ndim=3, filters=32)          # 996,769 parameters
    denoised = predict(model, noisy_volume, tile_shape=(96, 256, 256))
    save_model(model, "run/model.keras", {"model": "unet", "ndim": 3})
    model, config = load_model("run/model.keras")           # or a reference repository .h5
"""

from models.builders import DEFAULT_FILTERS, MODEL_NAMES, build_model
from models.inference import ModelInfo, model_info, predict, tiling_summary
from models.reference_h5 import describe_reference_h5, load_reference_h5
from models.storage import load_model, read_config, save_model

__all__ = [
    "DEFAULT_FILTERS",
    "MODEL_NAMES",
    "ModelInfo",
    "build_model",
    "describe_reference_h5",
    "load_model",
    "load_reference_h5",
    "model_info",
    "predict",
    "read_config",
    "save_model",
    "tiling_summary",
]
