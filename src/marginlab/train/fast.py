"""The loss-based momentum schedule under its former module path.

:class:`LossBasedMomentum` lives in :mod:`marginlab.train.schedules` and its heavy-ball steps in
:mod:`marginlab.train.steps`; :func:`marginlab.train.fit` trains it like every other schedule.
"""

from __future__ import annotations

from marginlab.errors import MarginlabError
from marginlab.train.fit import FitResult, fit
from marginlab.train.schedules import LossBasedMomentum

__all__ = ["LossBasedMomentum", "fit_fast"]


def fit_fast(*args, schedule: LossBasedMomentum, **kwargs) -> FitResult:
    """:func:`marginlab.train.fit` for a :class:`LossBasedMomentum` schedule (kept for callers of
    the former separate loop)."""
    if not isinstance(schedule, LossBasedMomentum):
        raise MarginlabError("fit_fast runs LossBasedMomentum schedules; use train.fit")
    return fit(*args, schedule=schedule, **kwargs)
