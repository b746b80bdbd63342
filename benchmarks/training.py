"""Training throughput of the 2D U-Net, 3D U-Net and ResPrU-Net 3D in float32, mixed_bfloat16 and mixed_float16.

    python3 benchmarks/training.py                    # --size small: 2D 128x128 x16; 3D f=16, 16x64x64 x4
    python3 benchmarks/training.py --size full        # for a GPU: 2D 256x256 x32; 3D f=32, 32x128x128 x8
    python3 benchmarks/training.py --quick            # smoke run: tiny models and patches, a few steps
    python3 benchmarks/training.py --models unet2d --precisions float32   # a subset

What is measured
    One training step (forward, loss, backward, Adam update) of a compiled model on one constant
    batch held in memory (``model.train_on_batch`` on tensors; no tf.data, so the input pipeline
    is not measured: ``benchmarks/pipeline.py`` does that). Loss MSE, no extra metrics. Each
    (model, precision) case runs in a fresh subprocess because the Keras dtype policy is
    process-wide. The first ``--warmup`` steps (tracing, allocation, oneDNN/cuDNN algorithm
    choice) are excluded; then steps are timed one by one (each ends by reading the loss, which
    synchronises the device) until ``min_steps`` and ``min_seconds`` are both reached.
    Throughput = batch size / median step time, in samples (patches or slices) per second.

FLOPs per training sample (analytic, documented in the JSON under "method")
    Every Conv layer: 2 x (kernel volume x input channels x output channels) x output voxels for
    the forward pass, found by running the model once on one sample and reading each conv's output
    shape. A training step costs 3x the forward conv FLOPs (forward, gradient w.r.t. the input,
    gradient w.r.t. the kernel: the same multiply-adds each). Ignored: bias adds, ReLU, pooling,
    upsampling, concatenation, the loss and the Adam update (all well under 1 % here), and the
    input gradient the first conv does not need (< 0.5 %). As a cross-check, TensorFlow's graph
    profiler (tf.compat.v1.profiler, float_operation) counts the forward FLOPs of the frozen
    inference graph of the same Keras 3 model; both numbers are in the JSON.

Peak
    Dense matrix-multiply peak of the same machine, measured the same way (fresh subprocess):
    tf.matmul of two N x N matrices (N=4096; 16384 at --size full, 1024 with --quick) in float32, bfloat16 and
    float16, several repetitions, best time, 2 N^3 FLOPs each; measured before and after the
    cases, and the faster of the two is used (a shared machine slows one of them). A case's "fraction of peak"
    divides its achieved FLOP/s by the peak of its compute dtype (float32 -> float32,
    mixed_bfloat16 -> bfloat16, mixed_float16 -> float16); the fraction of the float32 peak is
    also given. A dtype whose matmul is very slow is measured on a smaller N (recorded).

float16 on CPUs is often slow or unsupported: every case catches its errors and records them,
and a case that overruns ``--case-timeout`` is killed and recorded as such.

Results: printed as a table, and written to ``benchmarks/results/training.json`` (atomically)
with the machine description (``benchmarks.common.describe_machine``: CPU model, cores, flags, library
versions, git commit, load average).
"""

import argparse
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if __name__ == "__main__" and not __package__:  # run by path: re-run as python3 -m benchmarks.<name>
    os.execv(sys.executable, [sys.executable, "-m", f"benchmarks.{Path(__file__).stem}", *sys.argv[1:]])
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from benchmarks.common import (  # noqa: E402
    accelerator_peak_memory,
    accelerators,
    describe_machine,
    peak_rss_bytes,
    text_table,
)

DEFAULT_OUT = REPO / "benchmarks" / "results" / "training.json"
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
PEAK_DTYPES = ("float32", "bfloat16", "float16")
COMPUTE_DTYPE = {"float32": "float32", "mixed_bfloat16": "bfloat16", "mixed_float16": "float16"}

# name -> (builder name, ndim, filters, patch, batch) per size
MODELS = {
    "small": {
        "unet2d": ("unet", 2, 32, (128, 128), 16),
        "unet3d": ("unet", 3, 16, (16, 64, 64), 4),
        "resprunet3d": ("resprunet", 3, 16, (16, 64, 64), 4),
    },
    # For a GPU: larger slices and batches, so that a step is not dominated by kernel launches.
    "full": {
        "unet2d": ("unet", 2, 32, (256, 256), 32),
        "unet3d": ("unet", 3, 32, (32, 128, 128), 8),
        "resprunet3d": ("resprunet", 3, 32, (32, 128, 128), 8),
    },
    "quick": {
        "unet2d": ("unet", 2, 8, (32, 32), 4),
        "unet3d": ("unet", 3, 4, (8, 32, 32), 2),
        "resprunet3d": ("resprunet", 3, 4, (8, 32, 32), 2),
    },
}
# warm-up steps, minimum timed steps, minimum timed seconds, maximum timed steps
TIMING = {"small": (3, 5, 15.0, 200), "full": (5, 20, 5.0, 2000), "quick": (1, 2, 0.0, 3)}
# N of the N x N peak matmuls: on a GPU a 4096 product takes well under a millisecond, too short to time
MATMUL_SIZE = {"small": 4096, "full": 16384, "quick": 1024}

METHOD = {
    "throughput": "samples/s = batch / median step time; one step = model.train_on_batch (forward, MSE loss, backward, "
    "Adam) on a constant in-memory batch of tensors, loss read back every step (device synchronised); "
    "warm-up steps excluded; each (model, precision) in a fresh subprocess",
    "flops": "analytic: per Conv layer 2 * kernel_volume * C_in * C_out * output_voxels (forward, one sample, output "
    "shapes from one forward pass); training = 3 x forward (forward + input gradient + kernel gradient); "
    "non-conv ops and the first conv's unneeded input gradient ignored. Cross-check: TF graph profiler "
    "(tf.compat.v1.profiler float_operation) on the frozen forward graph of the same model",
    "peak": "keras.ops.matmul (tf.matmul on TensorFlow) of two N x N matrices per dtype, 2 N^3 FLOPs, best of several repetitions, fresh subprocess; "
    "measured before and after the cases, the faster of the two used",
    "fraction_of_peak": "achieved training FLOP/s / matmul peak of the case's compute dtype",
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=("small", "full"), default="small", help="3D patch and filter sizes")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: tiny models and patches, a few seconds per case"
    )
    parser.add_argument("--models", nargs="+", choices=tuple(MODELS["small"]), default=list(MODELS["small"]))
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    parser.add_argument("--warmup", type=int, help="warm-up steps (default by size)")
    parser.add_argument("--min-steps", type=int, help="minimum timed steps (default by size)")
    parser.add_argument("--min-seconds", type=float, help="minimum timed seconds (default by size)")
    parser.add_argument("--matmul-size", type=int, help="N of the N x N peak matmuls (default by size: MATMUL_SIZE)")
    parser.add_argument("--case-timeout", type=float, default=1800.0, help="seconds before a case is killed")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one training case in this process
    parser.add_argument("--peak", help=argparse.SUPPRESS)  # internal: measure the matmul peaks in this process
    args = parser.parse_args(argv)
    if args.case:
        print("RESULT " + json.dumps(_guarded(run_case, json.loads(args.case))), flush=True)
        return
    if args.peak:
        print("RESULT " + json.dumps(_guarded(measure_peaks, json.loads(args.peak))), flush=True)
        return

    size = "quick" if args.quick else args.size
    warmup, min_steps, min_seconds, max_steps = TIMING[size]
    timing = {
        "warmup": warmup if args.warmup is None else args.warmup,
        "min_steps": min_steps if args.min_steps is None else args.min_steps,
        "min_seconds": min_seconds if args.min_seconds is None else args.min_seconds,
        "max_steps": max(max_steps, args.min_steps or 0),
    }
    case_timeout = min(args.case_timeout, 300.0) if args.quick else args.case_timeout
    machine = describe_machine()
    print(
        f"{machine['cpu_model']}, {machine['logical_cpus']} logical CPUs, TF {machine['tensorflow']}, "
        f"load average {machine['load_average']}",
        flush=True,
    )
    if machine["load_average"][0] > 0.25 * machine["usable_cpus"]:
        print(
            "warning: the machine is busy (load average above); throughputs and peaks will be low and noisy", flush=True
        )

    n = args.matmul_size or MATMUL_SIZE[size]
    peak_spec = {
        "n": n,
        "repeats": 3 if args.quick else 5,
        "dtypes": list(PEAK_DTYPES),
        "max_seconds_per_dtype": 10.0 if args.quick else 60.0,
    }
    # The peak is measured before and after the cases and the best of both is used: a burst of
    # other work on a shared machine during one measurement then does not inflate the fractions.
    peak_runs = [_measure_peak(peak_spec, case_timeout, "before")]

    results = []
    for name in args.models:
        builder, ndim, filters, patch, batch = MODELS[size][name]
        for precision in args.precisions:
            case = {
                "name": name,
                "model": builder,
                "ndim": ndim,
                "filters": filters,
                "patch": list(patch),
                "batch": batch,
                "precision": precision,
                **timing,
            }
            label = f"{name} {precision}"
            print(f"{label}: running ...", flush=True)
            started = time.monotonic()
            result = {**case, **_run_in_subprocess(["--case", json.dumps(case)], case_timeout)}
            result["wall_seconds"] = round(time.monotonic() - started, 1)
            results.append(result)
            print(
                f"{label}: " + (_summary(result) if "error" not in result else f"FAILED: {result['error']}"), flush=True
            )

    peak_runs.append(_measure_peak(peak_spec, case_timeout, "after"))
    peak = _best_peak(peak_runs)
    for result in results:
        _add_peak_fractions(result, peak)

    print()
    print(format_table(results))
    from utils.base.atomic import write_json

    report = {
        "benchmark": "training",
        "size": size,
        "quick": args.quick,
        "method": METHOD,
        "timing": timing,
        "machine": {**machine, "load_average_end": [round(x, 2) for x in os.getloadavg()]},
        "peak": peak,
        "peak_runs": peak_runs,
        "cases": results,
    }
    write_json(args.out, report)
    print(f"wrote {args.out}")


# ----------------------------------------------------------------------------- in the case subprocess
def run_case(case):
    """Build, compile and time one (model, precision) case. Runs inside its own subprocess."""
    import keras
    import numpy as np

    from models import build_model

    keras.mixed_precision.set_global_policy(case["precision"])
    keras.utils.set_random_seed(0)
    model = build_model(case["model"], ndim=case["ndim"], filters=case["filters"])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    shape = (case["batch"], *case["patch"], 1)
    rng = np.random.default_rng(0)
    clean_array = rng.random(shape, dtype=np.float32)
    # Backend tensors, so that no step pays a host-to-device copy of its batch.
    clean = keras.ops.convert_to_tensor(clean_array)
    noisy = keras.ops.convert_to_tensor(clean_array + 0.05 * rng.standard_normal(shape).astype(np.float32))
    x = {"noisy": noisy, "prior": clean} if len(model.inputs) > 1 else noisy

    flops = conv_flops(model, case)
    record = {
        "params": int(model.count_params()),
        "policy": keras.mixed_precision.global_policy().name,
        "optimizer": type(model.optimizer).__name__,
        "backend": keras.backend.backend(),
        "devices": accelerators() or ["CPU"],
        **flops,
    }
    record.update(profiler_forward_flops(model, case, flops["forward_flops_per_sample"]))

    for _ in range(case["warmup"]):
        model.train_on_batch(x, clean)
    times, losses = [], []
    started = time.perf_counter()
    while len(times) < case["max_steps"] and (
        len(times) < case["min_steps"] or time.perf_counter() - started < case["min_seconds"]
    ):
        t0 = time.perf_counter()
        loss = model.train_on_batch(x, clean)  # returns numpy: the step has finished on the device
        times.append(time.perf_counter() - t0)
        losses.append(float(np.asarray(loss).ravel()[0]))
    median = float(np.median(times))
    samples_per_s = case["batch"] / median
    record.update(
        {
            "jit_compile": bool(model.jit_compile),
            "timed_steps": len(times),
            "step_seconds_median": round(median, 5),
            "step_seconds_mean": round(float(np.mean(times)), 5),
            "step_seconds_min": round(float(np.min(times)), 5),
            "step_seconds_max": round(float(np.max(times)), 5),
            "samples_per_s": round(samples_per_s, 3),
            "samples_per_s_mean": round(case["batch"] * len(times) / sum(times), 3),
            "voxels_per_s": round(samples_per_s * math.prod(case["patch"]), 1),
            "achieved_gflops": round(samples_per_s * flops["train_flops_per_sample"] / 1e9, 3),
            "final_loss": losses[-1],
            "loss_finite": bool(np.all(np.isfinite(losses))),
            "peak_rss_mb": round(peak_rss_bytes() / 2**20, 1),
        }
    )
    peak_bytes = accelerator_peak_memory()
    if peak_bytes is not None:
        record["gpu_peak_memory_mb"] = round(peak_bytes / 2**20, 1)
    return record


def conv_flops(model, case):
    """Analytic conv FLOPs of one sample: forward, and training (3 x forward). See the module docstring."""
    import keras
    import numpy as np

    convs = [layer for layer in model.layers if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv3D))]
    probe = keras.Model(model.inputs, [layer.output for layer in convs])
    one = np.zeros((1, *case["patch"], 1), np.float32)
    outputs = probe({"noisy": one, "prior": one} if len(model.inputs) > 1 else one, training=False)
    forward, per_layer = 0, []
    for layer, output in zip(convs, outputs):
        kernel = layer.kernel.shape  # (*kernel_size, C_in, C_out)
        macs = math.prod(kernel) * math.prod(output.shape[1:-1])
        forward += 2 * macs
        per_layer.append(
            {
                "layer": layer.name,
                "kernel": list(kernel),
                "output": list(output.shape[1:]),
                "gflops": round(2 * macs / 1e9, 4),
            }
        )
    return {
        "forward_flops_per_sample": int(forward),
        "train_flops_per_sample": int(3 * forward),
        "conv_layers": per_layer,
    }


def profiler_forward_flops(model, case, analytic):
    """Forward FLOPs of one sample counted by TensorFlow's graph profiler (cross-check; None if it fails)."""
    try:
        import tensorflow as tf

        from tensorflow.python.framework.convert_to_constants import (
            convert_variables_to_constants_v2,
        )

        spec = tf.TensorSpec((1, *case["patch"], 1), tf.float32)
        if len(model.inputs) > 1:
            function = tf.function(lambda noisy, prior: model({"noisy": noisy, "prior": prior}, training=False))
            concrete = function.get_concrete_function(spec, spec)
        else:
            function = tf.function(lambda noisy: model(noisy, training=False))
            concrete = function.get_concrete_function(spec)
        frozen = convert_variables_to_constants_v2(concrete)
        options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
        options["output"] = "none"
        total = int(tf.compat.v1.profiler.profile(graph=frozen.graph, options=options).total_float_ops)
        return {"profiler_forward_flops_per_sample": total, "profiler_over_analytic": round(total / analytic, 4)}
    except Exception as error:  # noqa: BLE001  (the cross-check is optional: record why it failed)
        return {"profiler_forward_flops_per_sample": None, "profiler_error": f"{type(error).__name__}: {error}"[:300]}


# ----------------------------------------------------------------------------- in the peak subprocess
def measure_peaks(spec):
    """Best-of-repeats matmul FLOP/s per dtype (the Keras backend's); a dtype too slow for N x N within the budget gets a smaller N."""
    out = {}
    for dtype in spec["dtypes"]:
        try:
            out[dtype] = _matmul_peak(dtype, spec["n"], spec["repeats"], spec["max_seconds_per_dtype"])
        except Exception as error:  # noqa: BLE001  (a dtype without a kernel is a result, not a crash)
            out[dtype] = {"error": f"{type(error).__name__}: {error}"[:300]}
    return {"dtypes": out, "device": ", ".join(accelerators()) or "CPU"}


def _matmul_peak(dtype, n, repeats, budget):
    import keras
    import numpy as np

    ops = keras.ops

    def first(c):
        """Read one entry of ``c``, which waits for it on a GPU (JAX and TF GPU ops are asynchronous); numpy has no bfloat16."""
        return float(ops.convert_to_numpy(ops.cast(c[0, 0], "float32")))

    def timed(size, count):
        rng = np.random.default_rng(1)
        a, b = (ops.cast(ops.convert_to_tensor(rng.standard_normal((size, size), dtype=np.float32)), dtype) for _ in range(2))
        first(ops.matmul(a, b))  # warm-up
        best = math.inf
        for _ in range(count):
            start = time.perf_counter()
            c = ops.matmul(a, b)
            first(c)
            best = min(best, time.perf_counter() - start)
        return best

    # Estimate from a smaller product, and shrink N if the full one would overrun the budget. On a GPU
    # a small product is all launch overhead, so the probe must not be tiny or N shrinks for nothing.
    probe = min(n, 2048)
    estimate = timed(probe, 3) * (n / probe) ** 3 * (repeats + 1)
    while n > probe and estimate > budget:
        n //= 2
        estimate /= 8
    best = timed(n, repeats)
    return {"n": n, "repeats": repeats, "best_seconds": round(best, 6), "gflops": round(2 * n**3 / best / 1e9, 2)}


# ----------------------------------------------------------------------------- in the parent
def _guarded(function, spec):
    try:
        return function(spec)
    except Exception as error:  # noqa: BLE001  (every failure of a case is recorded, e.g. float16 on CPU)
        return {"error": _clean_error(f"{type(error).__name__}: {error}")}


def _clean_error(text):
    """One readable line: Keras' ANSI colours removed, a missing kernel named by op and dtype."""
    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", text).split())
    missing = re.search(r"Could not find device for node: \{\{node (\w+)\}\} = \w+\[T=DT_(\w+)", text)
    if missing:
        dtype = {"HALF": "float16", "FLOAT": "float32"}.get(missing.group(2), missing.group(2).lower())
        return f"no kernel for {missing.group(1)} in {dtype} on this device ({text[:300]})"
    return text[:1000]


def _run_in_subprocess(arguments, timeout):
    command = [sys.executable, "-m", "benchmarks.training", *arguments]
    load_before = [round(x, 2) for x in os.getloadavg()]
    try:
        completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout: killed after {timeout:.0f} s", "load_average_before": load_before}
    lines = [line[len("RESULT ") :] for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        tail = (completed.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit code {completed.returncode}: {tail}"[:1000], "load_average_before": load_before}
    return {**json.loads(lines[-1]), "load_average_before": load_before}


def _add_peak_fractions(result, peak):
    if "achieved_gflops" not in result:
        return
    peaks = peak.get("dtypes", {})
    dtype = COMPUTE_DTYPE[result["precision"]]
    if "gflops" in peaks.get(dtype, {}):
        result["peak_dtype"] = dtype
        result["fraction_of_peak"] = round(result["achieved_gflops"] / peaks[dtype]["gflops"], 4)
    if "gflops" in peaks.get("float32", {}):
        result["fraction_of_float32_peak"] = round(result["achieved_gflops"] / peaks["float32"]["gflops"], 4)


def _summary(result):
    return (
        f"{result['samples_per_s']:.2f} samples/s ({result['step_seconds_median'] * 1e3:.0f} ms/step, "
        f"{result['timed_steps']} steps), {result['achieved_gflops']:.1f} GFLOP/s"
    )


def _measure_peak(spec, timeout, when):
    peak = {"when": when, **_run_in_subprocess(["--peak", json.dumps(spec)], timeout)}
    for dtype, result in peak.get("dtypes", {}).items():
        text = (
            f"{result['gflops']:.1f} GFLOP/s (N={result['n']})" if "gflops" in result else f"FAILED: {result['error']}"
        )
        print(f"matmul peak ({when}) {dtype:9s}: {text}", flush=True)
    if "error" in peak:
        print(f"matmul peak ({when}): FAILED: {peak['error']}", flush=True)
    return peak


def _best_peak(runs):
    """Per dtype, the fastest of the measurements (all of them stay in the JSON under peak_runs)."""
    best = {}
    for run in runs:
        for dtype, result in run.get("dtypes", {}).items():
            current = best.get(dtype)
            if current is None or result.get("gflops", -1) > current.get("gflops", -1):
                best[dtype] = {**result, "when": run["when"]}
    return {"dtypes": best, "device": next((r["device"] for r in runs if "device" in r), None)}


def format_table(results):
    header = (
        "model",
        "precision",
        "batch x patch",
        "f",
        "ms/step",
        "samples/s",
        "GFLOP/sample",
        "GFLOP/s",
        "% peak",
        "note",
    )
    rows = []
    for r in results:
        shape = f"{r['batch']} x {'x'.join(map(str, r['patch']))}"
        if "error" in r:
            rows.append(
                (
                    r["name"],
                    r["precision"],
                    shape,
                    str(r["filters"]),
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    r["error"].split(" (")[0][:70],
                )
            )
            continue
        fraction = r.get("fraction_of_peak")
        rows.append(
            (
                r["name"],
                r["precision"],
                shape,
                str(r["filters"]),
                f"{r['step_seconds_median'] * 1e3:.1f}",
                f"{r['samples_per_s']:.2f}",
                f"{r['train_flops_per_sample'] / 1e9:.3f}",
                f"{r['achieved_gflops']:.1f}",
                "-" if fraction is None else f"{fraction * 100:.1f}",
                "" if r["loss_finite"] else "non-finite loss",
            )
        )
    return text_table(header, rows)


if __name__ == "__main__":
    main()
