"""Errors a user can act on. The CLI prints their message without a traceback."""


class DeepdiveError(Exception):
    """Base class: the message names the problem and, where possible, the fix."""


class DataError(DeepdiveError):
    """A data file or data source is missing, corrupt or inconsistent."""


class RunError(DeepdiveError):
    """A run is missing, unfinished, or its stored artifacts do not fit together."""
