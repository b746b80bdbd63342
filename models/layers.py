"""Small n-D layer factories: one call site serves 2D and 3D models.

The builders never name ``Conv2D`` or ``Conv3D`` directly; they ask for ``conv(ndim, ...)``
(the same idea as MONAI's ``Conv[Conv.CONV, ndim]`` or deepinv's ``conv_nd``), so each
architecture is written once and the spatial rank is a parameter.

All factories return plain Keras layers (serialisable with ``safe_mode=True``, no Lambda).

Examples::

    conv(2, 32)                      # Conv2D(32, 3x3, 'same', ReLU)
    conv(3, 1, kernel_size=1, activation=None, dtype="float32")   # linear 1x1x1 output head
    max_pool(3), upsample(3)         # MaxPooling3D(2), UpSampling3D(2, nearest)
"""

import keras

from utils.base.errors import ConfigError

_CONV = {1: keras.layers.Conv1D, 2: keras.layers.Conv2D, 3: keras.layers.Conv3D}
_MAX_POOL = {1: keras.layers.MaxPooling1D, 2: keras.layers.MaxPooling2D, 3: keras.layers.MaxPooling3D}
_UPSAMPLE = {1: keras.layers.UpSampling1D, 2: keras.layers.UpSampling2D, 3: keras.layers.UpSampling3D}
_CONV_TRANSPOSE = {1: keras.layers.Conv1DTranspose, 2: keras.layers.Conv2DTranspose, 3: keras.layers.Conv3DTranspose}

PADDINGS = ("same", "valid")


def check_ndim(ndim):
    """Return ``ndim`` as an int if it is a supported spatial rank (2 or 3)."""
    if ndim not in (2, 3):
        raise ConfigError(f"ndim must be 2 (slices) or 3 (volumes), got {ndim!r}")
    return int(ndim)


def conv(ndim, filters, kernel_size=3, activation="relu", padding="same", use_bias=True, name=None, dtype=None,
         kernel_initializer="glorot_uniform"):
    """``Conv{ndim}D`` with stride 1, channels-last, Glorot-uniform kernel and zero bias (the Keras defaults
    the reference repository trained with; ``kernel_initializer`` overrides the first). ``activation=None``
    gives a linear layer."""
    if padding not in PADDINGS:
        raise ConfigError(f"padding must be one of {PADDINGS}, got {padding!r}")
    return _CONV[ndim](
        filters, kernel_size, padding=padding, activation=activation, use_bias=use_bias, name=name, dtype=dtype,
        kernel_initializer=kernel_initializer,
    )


def max_pool(ndim, size=2, name=None):
    """Max pooling by ``size`` along every spatial axis (stride = size, 'valid')."""
    return _MAX_POOL[ndim](pool_size=size, name=name)


def upsample(ndim, size=2, name=None):
    """Nearest-neighbour upsampling by ``size`` along every spatial axis (exact inverse grid of ``max_pool``)."""
    return _UPSAMPLE[ndim](size=size, name=name)


def down_conv(ndim, filters, size=2, name=None):
    """Learned down-sampling: a linear, bias-free conv with kernel and stride ``size`` along every spatial axis."""
    return _CONV[ndim](filters, size, strides=size, padding="valid", use_bias=False, name=name)


def up_conv(ndim, filters, size=2, name=None):
    """Learned up-sampling, the inverse grid of ``down_conv``: a linear, bias-free transposed conv, kernel and stride ``size``."""
    return _CONV_TRANSPOSE[ndim](filters, size, strides=size, padding="valid", use_bias=False, name=name)


def batch_norm(name=None):
    return keras.layers.BatchNormalization(name=name)


def relu(name=None):
    return keras.layers.Activation("relu", name=name)


def concat(name=None):
    """Concatenate on the channel axis (channels-last)."""
    return keras.layers.Concatenate(axis=-1, name=name)


def add(name=None):
    """Sum in float32: used for residual outputs, so that under a mixed-precision policy the
    model output keeps full precision (a float16 residual would round the image to ~3 digits)."""
    return keras.layers.Add(name=name, dtype="float32")


def subtract(name=None):
    """Difference in float32 (DnCNN: clean = noisy - predicted noise); see ``add``."""
    return keras.layers.Subtract(name=name, dtype="float32")


def output_conv(ndim, channels=1, name="out", use_bias=True):
    """Linear 1x1(x1) projection to the output channels, computed in float32 (mixed-precision safe)."""
    return conv(ndim, channels, kernel_size=1, activation=None, use_bias=use_bias, name=name, dtype="float32")


def image_input(ndim, name="noisy", channels=1):
    """Fully convolutional input: spatial dims None, channels-last, float32."""
    return keras.Input(shape=(None,) * ndim + (channels,), name=name, dtype="float32")
