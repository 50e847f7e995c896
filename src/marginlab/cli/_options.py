"""argparse ``type=`` converters built on :mod:`marginlab.validate`, so a bad option value is
refused while the command line is parsed: one line, exit 2, before anything runs."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from marginlab import validate
from marginlab.errors import MarginlabError

__all__ = ["device", "integer", "int_list", "number", "threads"]


def _converter(check: Callable[[str], Any], label: str) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return check(text)
        except MarginlabError as exc:
            # argparse prefixes "argument --name: "; drop the check's own name of the option
            message = str(exc).removeprefix("value")
            raise argparse.ArgumentTypeError(message.removeprefix(":").strip()) from None

    convert.__name__ = label
    return convert


def integer(minimum: int | None = None, maximum: int | None = None) -> Callable[[str], int]:
    """An integer option in [minimum, maximum]."""
    return _converter(lambda t: validate.integer(t, "value", minimum=minimum, maximum=maximum,
                                                 from_text=True),
                      "integer")


def number(*, minimum: float | None = None, maximum: float | None = None,
           positive: bool = False) -> Callable[[str], float]:
    """A finite real option in [minimum, maximum] (``positive``: > 0)."""
    return _converter(lambda t: validate.number(t, "value", minimum=minimum, maximum=maximum,
                                                positive=positive, from_text=True), "number")


def int_list(minimum: int | None = None) -> Callable[[str], list[int]]:
    """Comma-separated integers, each ≥ minimum."""
    return _converter(lambda t: validate.int_list(t, "value", minimum=minimum), "int_list")


device = _converter(lambda t: validate.device(t, "value"), "device")
threads = _converter(lambda t: validate.threads(t, "value"), "threads")
