"""Errors raised for bad input. Messages name the file, row or value and say what was expected."""


class DataError(ValueError):
    """Input data (images, CSV, npz, manifest) is missing, malformed or unusable."""


class LeakageError(RuntimeError):
    """A classifier dataset would mix evaluation images into training (or synthetic into val/test)."""


class ConfigError(ValueError):
    """A configuration value or key is invalid."""
