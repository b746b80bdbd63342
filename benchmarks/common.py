"""What every benchmark records beside its numbers: the machine, library versions, git commit, goals.

Used by the scripts in ``benchmarks/`` (run as ``python3 -m benchmarks.<name>`` from the repository
root; see ``benchmarks/__init__.py``)::

    from benchmarks.common import describe_machine, goal, text_table

    report = {"machine": describe_machine(), "goals": {"speed": goal(">= 3x faster", 3.4, 3.4 >= 3)}}
"""

import importlib.metadata
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Libraries whose version changes a benchmark's numbers; absent ones are recorded as None.
LIBRARIES = ("tensorflow", "keras", "jax", "numpy", "scipy", "scikit-image", "bm3d", "bm4d", "psutil")

GOAL_STATUSES = ("met", "not met", "not measured")


def command_line(script, argv=None):
    """The command that reproduces this run, quoted for a shell (a set name like 'crlm_abdomen volume' keeps its space)."""
    return shlex.join(["python3", str(script), *map(str, sys.argv[1:] if argv is None else argv)])


def describe_machine():
    """CPU, memory, GPUs, library versions, git commit and load average of this machine.

    Lists physical GPUs only: creating TensorFlow's logical devices here would reserve the GPU
    memory that the benchmark subprocesses need. Works without TensorFlow too (Keras on JAX).
    """
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model_names = [line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")]
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    interesting = sorted(f for f in flags if f.startswith(("avx512", "amx", "avx2", "fma", "avx_vnni", "f16c")))
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
        memory_gb = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        physical, memory_gb = None, None
    versions = library_versions()
    try:
        import tensorflow as tf

        # The imported module's version is the truth even under another distribution name (tensorflow-cpu, ...).
        versions["tensorflow"] = tf.__version__
        gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    except ImportError:
        gpus = _nvidia_gpus()
    return {
        "cpu_model": model_names[0] if model_names else platform.processor() or "unknown",
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "physical_cores": physical,
        "memory_gb": memory_gb,
        "cpu_flags": interesting,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "tensorflow": versions["tensorflow"],
        "keras": versions["keras"],
        "libraries": versions,
        "git_commit": git_commit(),
        "onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
        "keras_backend": os.environ.get("KERAS_BACKEND", "tensorflow"),
        "gpus": gpus,
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def _nvidia_gpus():
    """GPU names from ``nvidia-smi -L`` (empty where there is none)."""
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in listing.splitlines() if line.startswith("GPU")]


def library_versions(names=LIBRARIES):
    """Installed version of each distribution in ``names`` (None when it is not installed)."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit():
    """``HEAD``'s hash, with ``+uncommitted`` when the tree has changes; ``unknown`` outside git.

    The same convention as ``utils.learning.config.environment_record``, which cannot be reused here because
    it creates TensorFlow's logical devices (see :func:`describe_machine`).
    """
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+uncommitted" if dirty.strip() else "")


def accelerators():
    """The Keras backend's GPU devices by name (empty on a CPU-only machine)."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return [f"{d.platform}:{d.id} {d.device_kind}" for d in jax.devices() if d.platform == "gpu"]
    import tensorflow as tf

    return [d.name for d in tf.config.list_logical_devices("GPU")]


def accelerator_peak_memory():
    """Peak bytes allocated on the first GPU so far, or None without one."""
    if not accelerators():
        return None
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return jax.devices()[0].memory_stats().get("peak_bytes_in_use")
    import tensorflow as tf

    return tf.config.experimental.get_memory_info("GPU:0")["peak"]


def goal(target, value=None, met=None, note=""):
    """One goal of the suite: ``target`` in words, the measured ``value``, and whether it is met.

    ``met=None`` means not measured (say why in ``note``).
    """
    status = "not measured" if met is None else ("met" if met else "not met")
    record = {"target": target, "value": value, "status": status}
    if note:
        record["note"] = note
    return record


def peak_rss_bytes():
    """This process's peak resident memory in bytes, counted from its own start.

    On Linux this is ``VmHWM`` of ``/proc/self/status``. ``getrusage``'s ``ru_maxrss`` is not: a child
    started with fork + exec inherits its parent's peak there, so a case run in a subprocess of a
    benchmark that had just built a 6 GB phantom reported 6 GB whatever the case itself used.
    Elsewhere ``ru_maxrss`` is the fallback (kilobytes on Linux, bytes on macOS).
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def windowed_phantom(shape, seed=0):
    """Clean phantom volume ``(D, H, W)`` on [0, 1] (``utils.data.phantom``, default HU window), float32.

    The in-plane pixel size is scaled so that every size shows the whole anatomy of the default
    256x256 phantoms: a 32x32 smoke-test volume is a coarse body, not a few millimetres of it.
    """
    from utils.data.phantom import DEFAULT_SHAPE, DEFAULT_SPACING, make_phantom
    from utils.data.readers import DEFAULT_HU_WINDOW, window_hu

    depth, height, width = shape
    spacing = (
        DEFAULT_SPACING[0],
        DEFAULT_SPACING[1] * DEFAULT_SHAPE[1] / height,
        DEFAULT_SPACING[2] * DEFAULT_SHAPE[2] / width,
    )
    return window_hu(make_phantom(seed, tuple(shape), spacing), DEFAULT_HU_WINDOW)


def markdown_table(header, rows, align):
    """Markdown table lines; ``align`` has one letter per column, ``l`` (left) or ``r`` (right)."""
    def line(cells):
        return "| " + " | ".join(map(str, cells)) + " |"

    rule = "|" + "".join("---:|" if a == "r" else "---|" for a in align)
    return [line(header), rule, *map(line, rows)]


def text_table(header, rows):
    """Left-aligned plain-text table with a dashed rule under the header."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)
