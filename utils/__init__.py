"""Shared code of the CT denoising toolkit, in layers (docs/ARCHITECTURE.md): each sub-package imports only
from its own layer or lower ones.

    utils.base         errors, atomic writes, locks, defaults
    utils.data         readers and writers, phantoms, real-CT split, noise models, prior, metrics
    utils.solvers      TV, SPADE, BM3D/BM4D
    utils.learning     configuration, command line, pipelines, training runs
    utils.application  assessment, tuning, figures, denoising a scan

The modules used to sit directly in ``utils/``; their old names (``utils.readers``, ``from utils import
training``, ``python -m utils.describe``) still work and give the same module objects.
"""

import importlib
import importlib.abc
import importlib.util
import os
import sys

# TensorFlow's C++ start-up chatter (CUDA probing, oneDNN notices) buries the progress bars;
# users who want it back set TF_CPP_MIN_LOG_LEVEL=0.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MOVED = {
    "base": ("errors", "atomic", "defaults", "locks"),
    "data": ("readers", "scans", "phantom", "real_ct_split", "describe", "noise_level", "noise", "lowdose", "prior", "metrics"),
    "solvers": ("variational", "classical"),
    "learning": ("config", "cli", "pipeline", "training"),
    "application": ("tuning", "assessment", "figures", "denoising"),
}
NEW_NAME = {f"{__name__}.{module}": f"{__name__}.{package}.{module}" for package, modules in MOVED.items() for module in modules}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports ``utils.<old>`` as the module ``utils.<layer>.<old>`` itself (one object under two names)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in NEW_NAME:
            return None
        # The new file as origin: ``python -m utils.<old>`` runs it with its own ``__file__``.
        return importlib.util.spec_from_loader(fullname, self, origin=importlib.util.find_spec(NEW_NAME[fullname]).origin)

    def create_module(self, spec):
        module = importlib.import_module(NEW_NAME[spec.name])
        spec.loader_state = module.__spec__
        return module

    def exec_module(self, module):
        # The import system has just given the module the alias's spec; it keeps its own.
        module.__spec__ = module.__spec__.loader_state
        module.__loader__ = module.__spec__.loader

    def get_code(self, fullname):
        """For ``python -m utils.<old>``: the new module's code, run as ``__main__``."""
        return importlib.util.find_spec(NEW_NAME[fullname]).loader.get_code(NEW_NAME[fullname])


sys.meta_path.append(_Alias())
