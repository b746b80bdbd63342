"""Error types raised on bad input.

Every message names the offending file (or setting) and the problem, so that a user
who feeds the toolkit a broken scan knows what to fix without reading a traceback.
"""

import contextlib


class DataError(ValueError):
    """Input data that cannot be used: missing, unreadable, truncated, inconsistent or non-finite."""

    def __init__(self, path, problem):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ConfigError(ValueError):
    """A setting that is out of range or inconsistent with the data or the model."""


class ModelFileError(ValueError):
    """A model file that cannot be loaded safely or does not match the data."""

    def __init__(self, path, problem):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class RunDirectoryError(RuntimeError):
    """An output folder that would be overwritten, or cannot be resumed."""


# The errors a user can cause with a setting, a file or an output folder (not bugs).
USER_ERRORS = (ConfigError, DataError, ModelFileError, RunDirectoryError)


@contextlib.contextmanager
def user_errors():
    """In a script: a bad setting, data or model file, or a refused run folder ends it with
    ``error: <message>`` on stderr and exit status 1, without a traceback. Library code raises;
    only the top-level scripts use this."""
    try:
        yield
    except USER_ERRORS as error:
        raise SystemExit(f"error: {error}") from None
