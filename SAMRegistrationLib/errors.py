"""User-facing error types.

Anything derived from :class:`SamregError` is a problem with the user's input or
environment; the CLI and the worker print its message on one line (no traceback)
and exit non-zero. Anything else is a bug and keeps its traceback.
"""


class SamregError(Exception):
    """Base class for errors that are reported to the user as one clear line."""


class InputError(SamregError):
    """An input file or value is missing, unreadable or unsuitable."""


class CheckpointError(SamregError):
    """A model checkpoint is missing, has the wrong checksum or does not fit the model."""


class ResourceError(SamregError):
    """Not enough memory (or another resource) to run the job."""


class OutputError(SamregError):
    """The outputs cannot be written (disk full, quota, permissions)."""


class Cancelled(SamregError):
    """The job was cancelled by the user (SIGTERM, Cancel button)."""
