"""Errors the command line turns into exit codes."""


class SuiteError(Exception):
    """Base of the suite's own errors."""


class UsageError(SuiteError):
    """Bad input from the user: nothing was run or written (exit status 2)."""


class ConfigError(UsageError):
    """A config that does not validate; the message names the key and what is allowed."""


class TrackingError(SuiteError):
    """The MLflow store cannot be used; the message says why and how to fix it."""
