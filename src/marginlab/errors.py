"""Errors a user can cause, reported as one line (exit code 2 from the CLI), never a traceback."""

from __future__ import annotations


class MarginlabError(ValueError):
    """A problem with the caller's input: bad shapes, labels, files, settings or models.

    The message is one line that names what was wrong; the CLI prints it and exits with code 2.
    """


class NotHomogeneousError(MarginlabError):
    """A normalized or smoothed margin was asked of a model that is not homogeneous."""


class NotSeparatedError(MarginlabError):
    """A quantity defined only for separated data (q_min > 0) was asked of data the model
    misclassifies."""


class RunDirectoryError(MarginlabError):
    """A run directory is missing, corrupt, or holds a different run."""
