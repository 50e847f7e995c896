"""Checks of numeric settings shared by the training configs: one-line errors naming the value."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from marginlab.errors import MarginlabError

__all__ = ["check_float", "check_int", "check_milestones"]


def check_int(name: str, value: Any, minimum: int, *, none_ok: bool = False) -> int | None:
    """``value`` as an int ≥ ``minimum`` (bools and non-integral numbers refused)."""
    if value is None and none_ok:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and not (math.isfinite(value) and value.is_integer())):
        raise MarginlabError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if int(value) < minimum:
        raise MarginlabError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_float(name: str, value: Any, *, positive: bool = False,
                none_ok: bool = False) -> float | None:
    """``value`` as a finite float (> 0 with ``positive``)."""
    if value is None and none_ok:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise MarginlabError(f"{name} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise MarginlabError(f"{name} must be > 0, got {value!r}")
    return float(value)


def check_milestones(name: str, milestones: Mapping) -> dict[int, float]:
    """epoch -> positive factor; keys ints (or strings of ints, as JSON stores them)."""
    if not isinstance(milestones, Mapping):
        raise MarginlabError(f"{name} must map epochs to factors, got {milestones!r}")
    out = {}
    for k, v in milestones.items():
        try:
            epoch = int(k) if isinstance(k, (int, str)) and not isinstance(k, bool) else None
        except ValueError:
            epoch = None
        if epoch is None or epoch < 1:
            raise MarginlabError(f"{name}: epoch {k!r} is not an integer >= 1")
        out[epoch] = check_float(f"{name} factor at epoch {k}", v, positive=True)
    return out
