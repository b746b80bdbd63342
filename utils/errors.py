"""Error types raised on bad input.

Every message names the offending file (or setting) and the problem, so that a user
who feeds the toolkit a broken scan knows what to fix without reading a traceback.
"""


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
