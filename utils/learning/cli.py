"""Command-line options generated from :class:`utils.learning.config.TrainingConfig`.

The scripts keep their settings as constants at the top (the reference repository's habit)
and pass them here as defaults; every field becomes a ``--dashed-name`` option, so the CLI
can never drift from the configuration object.
"""

import argparse
import dataclasses
import sys

from utils.learning.config import TrainingConfig, resolve_filters


def parse_training_args(defaults, description, argv=None, quick=None):
    """Parse the command line over ``defaults`` (a TrainingConfig); return (config, extra options).

    ``quick`` (a dict of settings, the script's QUICK) replaces those defaults when ``--quick`` is
    given, so that options given explicitly still win over it.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if quick and "--quick" in argv:
        defaults = TrainingConfig(**{**defaults.to_dict(), **quick})
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for field in _options():
        default = getattr(defaults, field.name)
        flag = "--" + field.name.replace("_", "-")
        text = help_text(field)
        if field.name == "filters":  # 0: resolved after parsing, from the model actually chosen
            text += f"; not given: {default} for {defaults.model} (the script's FILTERS), the family default for other models"
            default = 0
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=text)
        elif isinstance(default, tuple):
            element = float if field.name in FLOAT_TUPLES else (int if field.name in ("patch", "profile_batch") else str)
            parser.add_argument(flag, nargs="*", type=element, default=default, help=text)
        else:
            parser.add_argument(flag, type=type(default), default=default, help=text)
    parser.add_argument("--quick", action="store_true", help="tiny complete training for smoke tests (under 2 minutes): the script's QUICK settings, "
                        "which shrink the filters, patch, batch, epochs and samples (options given explicitly still win)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    parser.add_argument("--no-deterministic", dest="deterministic", action="store_false", help="allow non-deterministic ops")
    parser.add_argument("--logical-cpus", type=int, default=0, help="split the CPU into N logical devices (testing --distribute)")
    args = parser.parse_args(argv)
    # Derived settings are left out, so that TrainingConfig derives them again from the options given.
    values = {f.name: getattr(args, f.name) for f in _options()}
    values["filters"] = resolve_filters(args.model, args.filters, defaults.model, defaults.filters, quick=args.quick)
    extra = argparse.Namespace(quick=args.quick, overwrite=args.overwrite, deterministic=args.deterministic, logical_cpus=args.logical_cpus)
    return TrainingConfig(**values), extra


# Tuple settings whose elements are numbers with a fraction; the other tuples hold ints or paths.
FLOAT_TUPLES = ("hu_window", "zoom_range", "noise_range", "dose_range")

# Settings that follow from others (the prior input is implied by --model resprunet, the layout
# version is the toolkit's); not options.
DERIVED = ("prior", "config_version")


def help_text(field):
    """The option's help: the field's own text and valid values (``utils.learning.config._setting``), %-escaped for argparse."""
    text = field.metadata["help"] + (f" [valid: {field.metadata['valid']}]" if field.metadata.get("valid") else "")
    return text.replace("%", "%%")


# The help texts, by field name (one source: the TrainingConfig field metadata).
HELP = {f.name: f.metadata["help"] for f in dataclasses.fields(TrainingConfig)}


def _options():
    return [f for f in dataclasses.fields(TrainingConfig) if f.name not in DERIVED]
