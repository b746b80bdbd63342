"""Which numeric precision a model trains and runs in on this machine.

Mixed precision pays only on hardware that computes in 16-bit natively. Elsewhere it costs: on a CPU
without AVX512-BF16 (an AVX2 AMD EPYC) oneDNN runs bfloat16 convolutions on fallback kernels, and a
training step of the 2D U-Net took 9.8 times as long as in float32
(``benchmarks/RESULTS_precision_avx2.json``, written by ``benchmarks/training.py``). A model saved from a
mixed-precision run keeps its policy per layer, so it would run that slowly at inference too;
:func:`with_precision` rebuilds it in float32 with the same weights.
"""

import keras
import tensorflow as tf

# CPU instruction sets with native bfloat16 arithmetic (the flag names of Linux /proc/cpuinfo).
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def resolve_precision(precision, gpus=None, cpu_flags=None):
    """The Keras policy that ``precision`` names on this machine, and why, as ``(policy, reason)``.

    ``"auto"`` is ``mixed_bfloat16`` where the hardware computes in bfloat16 natively (GPUs, all of compute
    capability 8.0 or newer, or, without GPUs, a CPU with one of ``BF16_CPU_FLAGS``) and ``float32``
    elsewhere. Any other value is returned as it is. ``gpus`` (compute capabilities as ``(major, minor)``)
    and ``cpu_flags`` default to this machine's.
    """
    if precision != "auto":
        return precision, "as asked"
    if gpus is None:
        gpus = [
            tuple(tf.config.experimental.get_device_details(gpu).get("compute_capability") or (0, 0))
            for gpu in tf.config.list_physical_devices("GPU")
        ]
    if gpus:
        oldest = min(tuple(capability) for capability in gpus)
        if oldest >= (8, 0):
            return "mixed_bfloat16", f"GPUs of compute capability {oldest[0]}.{oldest[1]} or newer"
        return "float32", f"a GPU of compute capability {oldest[0]}.{oldest[1]} has no bfloat16 units"
    if cpu_flags is None:
        cpu_flags = _cpu_flags()
    native = [flag for flag in BF16_CPU_FLAGS if flag in cpu_flags]
    if native:
        return "mixed_bfloat16", f"the CPU has {native[0]}"
    return "float32", f"no GPU, and the CPU has none of {', '.join(BF16_CPU_FLAGS)}"


def _cpu_flags():
    """The CPU's instruction-set flags (Linux); empty where they cannot be read."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def is_mixed(model):
    """True when some layer of ``model`` computes in a 16-bit type."""
    return any(layer.dtype_policy.compute_dtype != layer.dtype_policy.variable_dtype for layer in model.layers)


def with_precision(model, precision="auto"):
    """``model``, or a copy with the same weights that computes in float32 where ``precision`` asks for it.

    ``precision``: ``"auto"`` (float32 unless this machine computes in bfloat16 natively, see
    :func:`resolve_precision`), ``"float32"``, or ``None`` (the model as it is). Only the direction to
    float32 is taken: a mixed model's own float32 layers (its output, the residual additions) are
    float32 already, and a float32 model is never made mixed here, since which of its layers must stay
    float32 is its builder's knowledge.
    """
    if precision is None or not is_mixed(model):
        return model
    policy = resolve_precision(precision)[0]
    if policy != "float32":
        return model

    def in_float32(layer):
        return layer.__class__.from_config({**layer.get_config(), "dtype": "float32"})

    rebuilt = keras.models.clone_model(model, clone_function=in_float32)
    rebuilt.set_weights(model.get_weights())
    return rebuilt
