"""Research studies: which models, data and priors denoise real CT best, measured on held-out patients.

Each study trains or runs methods, prints its numbers and writes a ``RESULTS_<study>`` table here (and
figures under ``figures/``); see README.md in this folder. Speed and memory are in ``benchmarks/``.
Run each as ``python3 -m studies.<name>`` from the repository root (by its path works too).
"""
