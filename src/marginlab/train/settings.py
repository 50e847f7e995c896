"""Settings: fields of a configuration dataclass that a user sets, described once.

A setting's default lives in its dataclass (:class:`~marginlab.train.spec.TrainSpec`, the
schedules); :func:`setting` adds what the rest of the package needs to know about it — its help
text, its command-line option if that is not ``--`` plus the field name with dashes, how the
command line spells ``None``, its choices and bounds. The ``train`` command's options are
generated from these fields (:mod:`marginlab.cli._options`), and error messages name a setting
as the option the user typed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import MISSING, dataclass
from typing import Any

__all__ = ["SettingInfo", "default_of", "info", "option_name", "setting"]

KEY = "marginlab.setting"


@dataclass(frozen=True)
class SettingInfo:
    """What a setting's field declares besides its type and default.

    Attributes:
        help: one line for ``--help``.
        option: the command-line option (``None``: ``--`` and the name with dashes).
        none: how the command line spells ``None`` (e.g. ``full`` for the batch size), if it
            can be given at all.
        choices: the allowed values, if a fixed list.
        minimum: smallest allowed value (numbers; for lists, of each item).
        maximum: largest allowed value.
        positive: the value must be > 0.
        stated: written into a recorded configuration even at its default (schedules).
    """

    help: str
    option: str | None = None
    none: str | None = None
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    positive: bool = False
    stated: bool = False


def setting(default: Any = MISSING, *, default_factory: Callable[[], Any] | Any = MISSING,
            help: str, option: str | None = None, none: str | None = None,
            choices: Sequence[str] | None = None, minimum: float | None = None,
            maximum: float | None = None, positive: bool = False,
            stated: bool = False) -> Any:
    """A dataclass field with a :class:`SettingInfo` in its metadata."""
    meta = {KEY: SettingInfo(help, option, none, None if choices is None else tuple(choices),
                             minimum, maximum, positive, stated)}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=meta)


def info(field: dataclasses.Field) -> SettingInfo | None:
    """The setting a field declares (None for a field that is not a setting)."""
    return field.metadata.get(KEY)


def option_name(field: dataclasses.Field) -> str:
    """The command-line option of a field: its declared option, else ``--name-with-dashes``."""
    declared = info(field)
    if declared is not None and declared.option:
        return declared.option
    return "--" + field.name.replace("_", "-")


def default_of(cls: type, name: str) -> Any:
    """The default of field ``name`` of dataclass ``cls`` (a fresh one for a factory)."""
    field = {f.name: f for f in dataclasses.fields(cls)}[name]
    if field.default is not MISSING:
        return field.default
    if field.default_factory is not MISSING:
        return field.default_factory()
    raise ValueError(f"{cls.__name__}.{name} has no default")
