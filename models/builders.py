"""Model zoo: one builder per family, 2D and 3D from the same code via ``ndim``.

Examples::

    unet2d = build_model("unet", ndim=2, filters=32)   # (B, H, W, 1) -> (B, H, W, 1), 332,641 params
    unet3d = build_model("unet", ndim=3, filters=32)   # (B, D, H, W, 1) -> same shape, 996,769 params
    respr = build_model("resprunet", ndim=3)           # inputs "noisy", "prior" -> prior + U-Net([noisy, prior])

Common contract
- Inputs are channels-last float32 with 1 channel and spatial dims ``None`` (fully convolutional).
  The single input is named ``noisy``; ``resprunet`` also takes ``prior`` (same shape).
- U-Nets need every spatial size divisible by ``2**depth``; ``models.inference.predict`` pads for you.
- Outputs are linear (no clipping), the same shape as the input. The output convolution and the residual
  additions run in float32, so the models work under ``mixed_float16``/``mixed_bfloat16`` policies.
- Weighted layers are created in the reference repository's topological order (conv1 ... conv10, out), so the
  published tf.keras ``.h5`` weights load by order (``models.reference_h5``).
- No Lambda and no custom layers: a saved model reloads with ``safe_mode=True``.

Families (F = ``filters``; counts for 1 input channel and 3x3(x3) kernels, 2D / 3D)

- ``convnet``: conv(F, relu) x2, conv1x1(1); the published "Convnet_64", F=64: 37,633 / 112,513.
- ``cnn2``: the convnet with F=32 ("Convnet2_32"): 9,601 / 28,609.
- ``cnn7``: nine kxk ReLU convs with channels F,F,2F,2F,4F,2F,2F,2F,F, then conv1x1(1); F=32. It is the
  reference U-Net's channel plan without pooling or skips, the plan printed for "Convnet7_32": 304,993 / 913,825.
- ``resnet``: the reference's Geron-style ResNet at stride 1: conv(F, no bias)+BN+ReLU, 3 residual units of F,
  4 of 2F (the first with a 1x1 conv+BN skip), conv1x1(1, no bias); F=32: 337,376 / 1,001,504
  (counts include the batch-norm moving statistics, as Keras' count_params does).
- ``dncnn``: Zhang et al. 2017: conv+ReLU, (layers-2) x [conv(no bias)+BN+ReLU], conv(1); the model returns
  input - predicted noise; F=64, 17 layers: 558,017 / 1,666,241.
- ``unet``: the reference U-Net below, F=32: 332,641 / 996,769 (F=64: 1,328,833 in 2D).
- ``resprunet``: the same U-Net on the 2-channel [noisy, prior], output = prior + U-Net; F=32: 332,929 / 997,633.
- ``drunet``: the DRUNet of Zhang et al. 2021 (below), F=32, depth 2, 2 blocks: 1,040,960 / 3,040,960.

U-Net with ``depth`` poolings (default 2). Every conv is kxk ReLU 'same' without batch norm; pooling is max 2x2
(x2), upsampling nearest x2, and skips are concatenated as [skip, upsampled] (the reference's channel order)::

    enc0: F, F ───────────────────────────────────────────► concat → dec0: F, F → 1x1 conv (linear, float32)
      maxpool                                                  ▲ up
      enc1: 2F, 2F ─────────────────────► concat → dec1: 2F, F ┘
        maxpool                             ▲ up
        bottleneck: 4F, 2F ─────────────────┘

DRUNet (Zhang et al., "Plug-and-Play Image Restoration with Deep Denoiser Prior", TPAMI 2021) with ``depth``
down-samplings and ``blocks`` residual blocks per level (the paper: depth 3, 4 blocks, 64 filters, and a
noise-level map as a second input; here the model is blind, one input). Every conv is bias-free, which lets a
denoiser carry over to noise levels it was not trained at (Mohan et al., ICLR 2020); no batch norm. A residual
block is ``x + conv(ReLU(conv(x)))``, its last conv initialised to zero, as is the tail; down-sampling is a 2x2 stride-2 conv, up-sampling a 2x2 stride-2
transposed conv; skips are added, not concatenated::

    head conv(F) ─ s0 ─► blocks(F) → down(2F) ─ s1 ─► blocks(2F) → down(4F) ─ s2 ─► blocks(4F)
                                                                                    │ + s2
    tail conv(1) ◄─ + s0 ─ blocks(F) ← up(F) ◄─ + s1 ─ blocks(2F) ← up(2F) ◄────────┘

``residual=True`` (convnet, cnn2, cnn7, resnet, unet, drunet) adds the input to the output, so the network learns
the noise (residual-to-input learning). ``dncnn`` is residual by construction and ``resprunet`` is residual
to the prior; for both the flag changes nothing.
"""

import keras

from models import layers as L
from utils.base.defaults import DEFAULT_FILTERS, MODEL_NAMES  # defined there, TF-free, for the configuration too
from utils.base.errors import ConfigError

# Options beyond the named arguments, per family, with their defaults.
_EXTRA_OPTIONS = {
    "convnet": {"padding": "same"},
    "cnn2": {"padding": "same"},
    "cnn7": {"padding": "same"},
    "resnet": {"padding": "same"},
    "dncnn": {"padding": "same", "layers": 17},
    "unet": {"padding": "same"},
    "resprunet": {"padding": "same"},
    "drunet": {"padding": "same", "blocks": 2},
}

# Channel plan of the reference's "Convnet7_32" (notebook summary, 304,993 params with F=32), in units of F.
CNN7_PLAN = (1, 1, 2, 2, 4, 2, 2, 2, 1)


def build_model(name, ndim=2, filters=None, depth=2, kernel_size=3, residual=False, **options):
    """Build a denoiser ``keras.Model`` by family name (see the module docstring for the architectures).

    Args:
        name: one of ``MODEL_NAMES``.
        ndim: 2 for slice models ``(B, H, W, 1)``, 3 for volume models ``(B, D, H, W, 1)``.
        filters: channels of the first level (``DEFAULT_FILTERS[name]`` when None).
        depth: number of down-samplings of ``unet``/``resprunet``/``drunet`` (ignored by the other families).
        kernel_size: odd spatial kernel size of the feature convolutions.
        residual: add the input to the output (see module docstring).
        **options: ``padding`` ('same', or 'valid' for the plain CNNs only, as some reference files store it);
            ``layers`` for ``dncnn`` (17); ``blocks`` for ``drunet`` (residual blocks per level, 2).

    Returns:
        An uncompiled ``keras.Model`` named ``"<name>_<ndim>d"``.

    Raises:
        ConfigError: unknown name or option, or an option value out of range.
    """
    key = str(name).lower()
    if key not in MODEL_NAMES:
        raise ConfigError(f"unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)}")
    ndim = L.check_ndim(ndim)
    unknown = sorted(set(options) - set(_EXTRA_OPTIONS[key]))
    if unknown:
        valid = ", ".join(sorted(_EXTRA_OPTIONS[key])) or "none"
        raise ConfigError(f"unknown option(s) {unknown} for model {key!r}; valid extra options: {valid}")
    opts = {**_EXTRA_OPTIONS[key], **options}
    filters = DEFAULT_FILTERS[key] if filters is None else filters
    _check_positive_int("filters", filters)
    _check_positive_int("kernel_size", kernel_size)
    if kernel_size % 2 == 0:
        raise ConfigError(f"kernel_size must be odd (a centred receptive field), got {kernel_size}")
    if opts["padding"] not in L.PADDINGS:
        raise ConfigError(f"padding must be one of {L.PADDINGS}, got {opts['padding']!r}")
    if opts["padding"] == "valid" and (key not in ("convnet", "cnn2", "cnn7") or residual):
        raise ConfigError(
            f"padding='valid' shrinks the image and only suits the plain CNNs without residual; not {key!r}"
            + (" with residual=True" if residual else "")
        )

    noisy = L.image_input(ndim, "noisy")
    inputs = [noisy]
    if key in ("convnet", "cnn2"):
        output = _plain_cnn(noisy, ndim, (filters, filters), kernel_size, opts["padding"])
    elif key == "cnn7":
        output = _plain_cnn(noisy, ndim, [m * filters for m in CNN7_PLAN], kernel_size, opts["padding"])
    elif key == "resnet":
        output = _resnet(noisy, ndim, filters, kernel_size)
    elif key == "dncnn":
        _check_positive_int("layers", opts["layers"], minimum=3)
        output = _dncnn(noisy, ndim, filters, kernel_size, opts["layers"])
    elif key == "drunet":
        _check_positive_int("depth", depth)
        _check_positive_int("blocks", opts["blocks"])
        output = _drunet(noisy, ndim, filters, depth, kernel_size, opts["blocks"])
    else:
        _check_positive_int("depth", depth)
        if key == "resprunet":
            prior = L.image_input(ndim, "prior")
            inputs.append(prior)
            # The prior is both a second input channel and the base the network corrects:
            # output = prior + U-Net([noisy, prior]), i.e. the net learns clean - prior.
            stacked = L.concat("stack_inputs")([noisy, prior])
            output = L.add("add_prior")([_unet(stacked, ndim, filters, depth, kernel_size), prior])
        else:
            output = _unet(noisy, ndim, filters, depth, kernel_size)

    if residual and key in ("convnet", "cnn2", "cnn7", "resnet", "unet", "drunet"):
        output = L.add("add_input")([output, noisy])
    return keras.Model(inputs if len(inputs) > 1 else noisy, output, name=f"{key}_{ndim}d")


def _check_positive_int(label, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{label} must be an integer >= {minimum}, got {value!r}")


def _plain_cnn(x, ndim, channel_plan, kernel_size, padding):
    """kxk ReLU convs with the given channels, then a linear 1x1 projection."""
    for i, channels in enumerate(channel_plan, start=1):
        x = L.conv(ndim, channels, kernel_size, padding=padding, name=f"conv{i}")(x)
    return L.output_conv(ndim)(x)


def _residual_unit(x, ndim, filters, kernel_size, name):
    """ReLU(BN(conv(ReLU(BN(conv(x))))) + skip), skip = identity or 1x1 conv + BN when channels change."""
    main = L.conv(ndim, filters, kernel_size, activation=None, use_bias=False, name=f"{name}_conv1")(x)
    main = L.relu(f"{name}_relu1")(L.batch_norm(f"{name}_bn1")(main))
    main = L.conv(ndim, filters, kernel_size, activation=None, use_bias=False, name=f"{name}_conv2")(main)
    main = L.batch_norm(f"{name}_bn2")(main)
    skip = x
    if x.shape[-1] != filters:
        skip = L.conv(ndim, filters, 1, activation=None, use_bias=False, name=f"{name}_skip_conv")(x)
        skip = L.batch_norm(f"{name}_skip_bn")(skip)
    return L.relu(f"{name}_out")(keras.layers.Add(name=f"{name}_add")([main, skip]))


def _resnet(x, ndim, filters, kernel_size):
    """Reference ResNet (Geron's ResNet-34 units, stride 1, no pooling): 3 units of F then 4 of 2F."""
    x = L.conv(ndim, filters, kernel_size, activation=None, use_bias=False, name="stem_conv")(x)
    x = L.relu("stem_relu")(L.batch_norm("stem_bn")(x))
    for i, unit_filters in enumerate([filters] * 3 + [2 * filters] * 4, start=1):
        x = _residual_unit(x, ndim, unit_filters, kernel_size, name=f"unit{i}")
    return L.output_conv(ndim, use_bias=False)(x)


def _dncnn(noisy, ndim, filters, kernel_size, n_layers):
    """DnCNN: the network predicts the noise; the model returns noisy - noise (in float32)."""
    x = L.conv(ndim, filters, kernel_size, name="conv1")(noisy)
    for i in range(2, n_layers):
        x = L.conv(ndim, filters, kernel_size, activation=None, use_bias=False, name=f"conv{i}")(x)
        x = L.relu(f"relu{i}")(L.batch_norm(f"bn{i}")(x))
    noise = L.conv(ndim, 1, kernel_size, activation=None, name="noise", dtype="float32")(x)
    return L.subtract("denoised")([noisy, noise])


def _unet(x, ndim, filters, depth, kernel_size):
    """Reference U-Net body generalised to ``depth`` poolings; returns the linear 1-channel output.

    Layers are created encoder → bottleneck → decoder → output, the order of the reference's conv2d ... conv2d_10.
    """

    def conv(channels, name):
        return L.conv(ndim, channels, kernel_size, name=name)

    skips = []
    for level in range(depth):
        x = conv(filters * 2**level, f"enc{level}_conv1")(x)
        x = conv(filters * 2**level, f"enc{level}_conv2")(x)
        skips.append(x)
        x = L.max_pool(ndim, name=f"pool{level}")(x)
    # The bottleneck ends at the channels of the level above, like every decoder stage.
    x = conv(filters * 2**depth, "bottleneck_conv1")(x)
    x = conv(filters * 2 ** (depth - 1), "bottleneck_conv2")(x)
    for level in reversed(range(depth)):
        x = L.upsample(ndim, name=f"up{level}")(x)
        x = L.concat(f"skip{level}")([skips[level], x])  # [skip, upsampled]: the reference's in-channel order
        x = conv(filters * 2**level, f"dec{level}_conv1")(x)
        x = conv(filters * 2 ** max(level - 1, 0), f"dec{level}_conv2")(x)
    return L.output_conv(ndim)(x)


def _drunet(x, ndim, filters, depth, kernel_size, blocks):
    """DRUNet body (module docstring); returns the linear 1-channel output, computed in float32."""

    def conv(channels, name, activation=None, initializer="glorot_uniform"):
        return L.conv(ndim, channels, kernel_size, activation=activation, use_bias=False, name=name, kernel_initializer=initializer)

    def residual_blocks(x, channels, name):
        # The last conv of each block starts at zero (Goyal et al. 2017, Fixup): every block begins
        # as the identity, so the untrained stack of blocks and additive skips keeps its scale.
        for b in range(blocks):
            y = conv(channels, f"{name}_block{b}_conv1", activation="relu")(x)
            y = conv(channels, f"{name}_block{b}_conv2", initializer="zeros")(y)
            x = keras.layers.Add(name=f"{name}_block{b}_add")([x, y])
        return x

    skips = [conv(filters, "head")(x)]
    x = skips[0]
    for level in range(depth):
        x = residual_blocks(x, filters * 2**level, f"enc{level}")
        x = L.down_conv(ndim, filters * 2 ** (level + 1), name=f"down{level}")(x)
        skips.append(x)
    x = residual_blocks(x, filters * 2**depth, "body")
    for level in reversed(range(depth)):
        x = keras.layers.Add(name=f"skip{level + 1}")([x, skips[level + 1]])
        x = L.up_conv(ndim, filters * 2**level, name=f"up{level}")(x)
        x = residual_blocks(x, filters * 2**level, f"dec{level}")
    x = keras.layers.Add(name="skip0")([x, skips[0]])
    # A zero tail too: an untrained residual DRUNet returns its input, a plain one zero.
    return L.conv(ndim, 1, kernel_size, activation=None, use_bias=False, name="out", dtype="float32", kernel_initializer="zeros")(x)
