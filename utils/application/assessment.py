"""The assessment of denoisers in one import, for the ``Demo_assess_*`` scripts.

Each job has its own module; this one gathers their public names::

    volumes = load_volumes(paths)                          # samples: clean CT, read_ct's [0, 1] scale
    noisy = add_noise(volumes, noise=0.05, seed=2020)      # samples: whole volumes, seeded
    samples = slice_samples(noisy, slices_per_volume=8)    # samples: or volume_samples(noisy, max_depth=16)
    methods = baseline_methods(["noisy", "tv"], 0.05, sample_ndim=2) + model_methods(paths, allowed_ndims=(2,))
    check_compatible(methods, samples)                     # methods: every mismatch fails here, before any work
    evaluation = evaluate(methods, samples, keep=[samples[0].name])     # scoring
    write_metrics_csv(out / "metrics.csv", evaluation.records)         # reports

=====================================  ==============================================================
module                                 job
=====================================  ==============================================================
:mod:`utils.application.samples`      clean volumes, seeded test noise on whole volumes, slices and crops
:mod:`utils.application.methods`      learned models from files and the classical baselines, one interface
:mod:`utils.application.tuning`       the baselines' parameters, tuned on the validation phantoms and stored
:mod:`utils.application.scoring`      every method on every sample, timed and scored (the metrics' definitions)
:mod:`utils.application.reports`      metrics CSV, mean ± std tables, summary markdown
=====================================  ==============================================================

Every file is written atomically (``utils.base.atomic``). Problems with data, settings or model files raise
``DataError``, ``ConfigError`` or ``ModelFileError`` before any method runs; :func:`user_errors` turns
them into ``error: ...`` and a non-zero exit in the scripts.
"""

from utils.application.methods import (
    BASELINES,
    DEFAULT_MODELS_DIR,
    DEFAULT_PRIOR,
    MODEL_SUFFIXES,
    BaselineMethod,
    Method,
    ModelMethod,
    baseline_methods,
    check_compatible,
    discover_models,
    load_model_method,
    model_dims,
    model_methods,
    noise_notes,
    parse_method_list,
    trained_noise,
)
from utils.application.reports import (
    METRIC_COLUMNS,
    NOISE_MODEL_COLUMNS,
    describe_data,
    describe_hu_window,
    describe_lowdose_noise,
    describe_settings,
    read_metrics_csv,
    summarise,
    summary_markdown,
    summary_table,
    write_metrics_csv,
    write_summary,
)
from utils.application.samples import (
    DEFAULT_DOSE,
    DEFAULT_SEED,
    TEST_NOISE_MODELS,
    NoiseSetting,
    NoisyVolume,
    Sample,
    add_lowdose_noise,
    add_noise,
    evenly_spaced,
    load_volumes,
    lowdose_spacing,
    make_noise_setting,
    parse_dose_list,
    parse_noise_list,
    slice_samples,
    volume_samples,
)
from utils.application.scoring import Evaluation, convergence_histories, evaluate
from utils.application.tuning import DEFAULT_TUNED_DIR, tune_baseline, tuned_parameters, tuned_path, tuning_ndim
from utils.base.errors import user_errors

__all__ = [
    "BASELINES",
    "BaselineMethod",
    "DEFAULT_DOSE",
    "DEFAULT_MODELS_DIR",
    "DEFAULT_PRIOR",
    "DEFAULT_SEED",
    "DEFAULT_TUNED_DIR",
    "Evaluation",
    "METRIC_COLUMNS",
    "MODEL_SUFFIXES",
    "Method",
    "ModelMethod",
    "NOISE_MODEL_COLUMNS",
    "NoiseSetting",
    "NoisyVolume",
    "Sample",
    "TEST_NOISE_MODELS",
    "add_lowdose_noise",
    "add_noise",
    "baseline_methods",
    "check_compatible",
    "convergence_histories",
    "describe_data",
    "describe_hu_window",
    "describe_lowdose_noise",
    "describe_settings",
    "discover_models",
    "evaluate",
    "evenly_spaced",
    "load_model_method",
    "load_volumes",
    "lowdose_spacing",
    "make_noise_setting",
    "model_dims",
    "model_methods",
    "noise_notes",
    "parse_dose_list",
    "parse_method_list",
    "parse_noise_list",
    "read_metrics_csv",
    "slice_samples",
    "summarise",
    "summary_markdown",
    "summary_table",
    "trained_noise",
    "tune_baseline",
    "tuned_parameters",
    "tuned_path",
    "tuning_ndim",
    "user_errors",
    "volume_samples",
    "write_metrics_csv",
    "write_summary",
]
