"""Input-pipeline throughput: the reference repository's order vs this project's, and vs the training step.

Variants, all cutting 2D patches with Gaussian noise from the same NIfTI volumes:

* ``stream_no_cache``: decode the files every epoch, no cache, no prefetch (the naive pipeline).
* ``reference_order``: the reference repository's order: crop and noise, batch, *then* cache and
  shuffle whole batches. Fast after the first epoch only because it replays the first
  epoch's crops and noise (the bug this project fixes); shown for the speed comparison.
* ``this_project``: decode, cache the clean volumes, shuffle samples, crop/flip/noise per
  epoch, batch, prefetch.

Then the training step of the default 2D U-Net is timed on a constant in-memory batch
(what the model can consume) and on the real pipeline; the difference is the fraction of
a training step spent waiting for input.

Usage: python benchmarks/pipeline.py [--quick] [--epochs 3] [--steps 30]
Writes benchmarks/results/pipeline.json, with the machine description.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

if __name__ == "__main__" and not __package__:  # run by path: re-run as python3 -m benchmarks.<name>
    os.execv(sys.executable, [sys.executable, "-m", f"benchmarks.{Path(__file__).stem}", *sys.argv[1:]])

import keras  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks.common import describe_machine  # noqa: E402
from models import build_model  # noqa: E402
from utils.base.atomic import write_json  # noqa: E402
from utils.data.noise import GaussianNoise  # noqa: E402
from utils.data.phantom import make_phantom  # noqa: E402
from utils.learning.pipeline import PatchSampling, make_dataset  # noqa: E402
from utils.data.readers import read_ct  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "pipeline.json"


def write_volumes(folder, n_volumes, shape):
    paths = []
    for seed in range(n_volumes):
        hu = make_phantom(seed, shape=shape)
        path = Path(folder) / f"phantom_{seed}.nii.gz"
        nib.save(nib.Nifti1Image(np.transpose(hu, (2, 1, 0)).astype(np.int16), np.eye(4)), str(path))
        paths.append(path)
    return paths


def reference_order_dataset(paths, patch, noise, batch_size):
    """Crop and noise before the cache, shuffle after batching, as the reference repository did."""
    arrays = [v.array for p in paths for v in read_ct(p)]

    def slices():
        for volume in arrays:
            yield from volume

    spec = tf.TensorSpec((None, None), tf.float32)
    dataset = tf.data.Dataset.from_generator(slices, output_signature=spec)
    dataset = dataset.map(lambda s: tf.image.random_crop(s, patch)[..., None])
    dataset = dataset.map(lambda s: (s + noise * tf.random.normal(tf.shape(s)), s))
    return dataset.batch(batch_size).cache().shuffle(64).prefetch(tf.data.AUTOTUNE)


def images_per_second(dataset, epochs):
    """Throughput over epochs 2.. (epoch 1 fills the caches), and of epoch 1 alone."""
    timings = []
    for _ in range(epochs):
        start, count = time.perf_counter(), 0
        for _, clean in dataset:
            count += int(clean.shape[0])
        timings.append((count, time.perf_counter() - start))
    later = timings[1:] or timings
    return sum(c for c, _ in later) / sum(t for _, t in later), timings[0][0] / timings[0][1]


def training_consumption(model, dataset, steps):
    """Images/s of fit() on a constant batch and on the real pipeline (both after warm-up)."""
    inputs, clean = next(iter(dataset))
    constant = tf.data.Dataset.from_tensors((inputs, clean)).repeat(steps)
    batch = int(clean.shape[0])
    model.fit(constant.take(2), epochs=1, verbose=0)  # trace and warm up
    start = time.perf_counter()
    model.fit(constant, epochs=1, verbose=0)
    constant_rate = steps * batch / (time.perf_counter() - start)
    real = dataset.repeat().take(steps)
    model.fit(real.take(2), epochs=1, verbose=0)
    start = time.perf_counter()
    model.fit(real, epochs=1, verbose=0)
    real_rate = steps * batch / (time.perf_counter() - start)
    return constant_rate, real_rate


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes for a smoke run")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, help="training steps timed per input (default 30; 4 with --quick)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    shape, n_volumes, patch, batch, steps = ((16, 64, 64), 2, (32, 32), 4, 4) if args.quick else ((64, 256, 256), 4, (128, 128), 16, 30)
    steps = args.steps or steps
    noise = 0.05
    with tempfile.TemporaryDirectory() as folder:
        paths = write_volumes(folder, n_volumes, shape)
        sampling = PatchSampling(patch)
        variants = {
            "stream_no_cache": make_dataset(paths, sampling, GaussianNoise(noise), batch, cache=False, prefetch=False),
            "reference_order": reference_order_dataset(paths, patch, noise, batch),
            "this_project": make_dataset(paths, sampling, GaussianNoise(noise), batch),
        }
        results = {}
        for name, dataset in variants.items():
            rate, first_epoch_rate = images_per_second(dataset, args.epochs)
            results[name] = {"images_per_s": rate, "first_epoch_images_per_s": first_epoch_rate}
            print(f"{name:>16}: {rate:8.1f} images/s after epoch 1 ({first_epoch_rate:.1f} in epoch 1)")
        arrays = [v.array for p in paths for v in read_ct(p)]
        model = build_model("unet", ndim=2, filters=8 if args.quick else 32)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
        constant_rate, real_rate = training_consumption(model, make_dataset(arrays, sampling, GaussianNoise(noise), batch), steps)
    ours = results["this_project"]["images_per_s"]
    summary = {
        "settings": {"volumes": n_volumes, "shape": shape, "patch": patch, "batch": batch, "epochs": args.epochs, "steps": steps, "quick": args.quick},
        "variants": results,
        "speedup_cache_prefetch_vs_stream": ours / results["stream_no_cache"]["images_per_s"],
        "training_images_per_s_constant_input": constant_rate,
        "training_images_per_s_real_pipeline": real_rate,
        "pipeline_to_training_ratio": ours / constant_rate,
        "input_wait_fraction": max(0.0, 1 - real_rate / constant_rate),
        "cpu_cores": len(tf.config.list_physical_devices("CPU")) and __import__("os").cpu_count(),
        "machine": describe_machine(),
    }
    print(f"cache+prefetch vs stream: {summary['speedup_cache_prefetch_vs_stream']:.2f}x")
    print(f"training step consumes {constant_rate:.1f} images/s; pipeline delivers {ours:.1f} ({summary['pipeline_to_training_ratio']:.1f}x)")
    print(f"fraction of a training step waiting for input: {100 * summary['input_wait_fraction']:.1f} %")
    write_json(args.out, summary)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
