"""The metric loop: every method on every sample, timed and scored.

Metrics (``utils.data.metrics``, on the [0, 1] intensity scale, estimates not clipped):

* ``psnr``: ``10 log10(1 / MSE)`` in dB, data range 1, over the whole sample (slice or volume).
* ``ssim``: SSIM with data range 1, Gaussian window 11 with sigma 1.5, K1 0.01, K2 0.03, population
  covariance (``tf.image.ssim``'s definition); for a volume, the mean over its axial slices.
* ``rel_err_percent``: ``100 * ||x_hat - x||_2 / ||x||_2`` over the same sample (for a volume: the
  whole volume in numerator and denominator, not one slice over the volume's norm).
* ``seconds``: wall-clock time of the method on that sample, after untimed warm-up calls of the
  learned models on small crops and of the TensorFlow solvers for one iteration on the first sample
  (graph tracing, and the solvers' XLA compilation for that array shape, are not counted); the
  neighbour prior, input data like the noisy image, is computed before the clock starts.
"""

from __future__ import annotations

import dataclasses
import sys
import time

import numpy as np

from utils.application.methods import BaselineMethod, check_compatible
from utils.base.errors import ConfigError
from utils.data.metrics import all_metrics

try:  # progress bars are a convenience; their absence must never stop an assessment
    from tqdm.auto import tqdm
except ImportError:  # pragma: no cover
    tqdm = None

@dataclasses.dataclass
class Evaluation:
    """``records``: one dict per (method, sample) with ``METRIC_COLUMNS``; ``outputs[(method, sample)]``
    holds the estimates of the samples asked for in ``keep`` (for the figures)."""

    records: list
    outputs: dict


def evaluate(methods, samples, keep=(), progress=True):
    """Run every method on every sample, timing each call, and score it (see the module notes).

    Methods run one after another over all samples (a tqdm bar per method), after untimed warm-up
    calls on small crops of the first sample. The neighbour prior is input data, like the noisy
    image: it is computed once per volume before the clock starts.
    """
    check_compatible(methods, samples)
    keep = set(keep)
    records, outputs = [], {}
    for method in methods:
        method.warm_up(samples[0])
        bar = tqdm(samples, desc=f"{method.name:>12}", unit="sample", file=sys.stderr, disable=not progress) if tqdm else samples
        for sample in bar:
            if method.prior_settings is not None:
                sample.prior(**method.prior_settings)  # cached on the volume: outside the timing
            started = time.perf_counter()
            estimate = np.asarray(method.denoise(sample), dtype=np.float32)
            seconds = time.perf_counter() - started
            if estimate.shape != sample.clean.shape:
                raise ConfigError(f"{method.name} returned shape {estimate.shape} for sample {sample.name} of shape {sample.clean.shape}")
            record = {"method": method.name, "sample": sample.name, "noise": sample.noise, **all_metrics(sample.clean, estimate), "seconds": seconds}
            if sample.noise_model != "gaussian":
                record.update(noise_model=sample.noise_model, **sample.noise_params)
            records.append(record)
            if sample.name in keep:
                outputs[(method.name, sample.name)] = estimate
    return Evaluation(records, outputs)


def convergence_histories(sample, methods):
    """Relative error (%) after every solver iteration of the ``tv`` and ``spade`` methods on ``sample``.

    Re-runs each with the same parameters (the same estimated sigma with ``estimate_sigma``) and ``reference=sample.clean`` (the solvers' history
    option). Returns ``{method name: 1-D array}``.
    """
    from utils.solvers import variational

    histories = {}
    for method in methods:
        arguments = method.solver_arguments(sample) if isinstance(method, BaselineMethod) else {}
        if method.name == "tv":
            traced = variational.tv_denoise(sample.noisy, **arguments, reference=sample.clean)
        elif method.name == "spade":
            traced = variational.spade_denoise(sample.noisy, sample.prior(**method.prior_settings), **arguments, reference=sample.clean)
        else:
            continue
        histories[method.name] = 100.0 * np.asarray(traced.rel_err_history, dtype=np.float64)
    return histories
