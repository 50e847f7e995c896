"""Command-line options: argparse ``type=`` converters built on :mod:`marginlab.validate` (a
bad value is refused while the command line is parsed: one line, exit 2, before anything runs),
and options generated from the setting fields of a configuration dataclass
(:mod:`marginlab.train.settings`), whose defaults, help and checks stay in the dataclass."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Callable
from typing import Any

from marginlab import validate
from marginlab.errors import MarginlabError
from marginlab.train import settings

__all__ = ["add_setting", "add_settings", "device", "given_settings", "integer", "int_list",
           "number", "parse_setting", "setting_fields", "threads"]


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


# --------------------------------------------------------------------------- dataclass fields


def _unwrap(hint: Any) -> tuple[Any, bool]:
    """(the type of a field, whether it may be None) from its annotation."""
    args = typing.get_args(hint)
    if type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return hint, False


def show_default(value: Any) -> str:
    """A default as the command line would spell it."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ",".join(show_default(v) for v in value) or "none"
    if isinstance(value, dict):
        return ",".join(f"{k}:{show_default(v)}" for k, v in value.items()) or "none"
    return str(value)


def _metavar(base: Any, name: str) -> str | None:
    origin = typing.get_origin(base) or base
    if origin is list:
        return "A,B,..."
    if origin is dict:
        return "EPOCH:FACTOR,..."
    if base is int:
        return "N"
    if base is float:
        return "X"
    return None


def setting_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of dataclass ``cls`` that declare a setting (:func:`settings.setting`)."""
    return [f for f in dataclasses.fields(cls) if settings.info(f) is not None]


def add_setting(group, cls: type, field: dataclasses.Field, *, help: str | None = None,
                note: str = "") -> None:
    """Add the option of one setting field of dataclass ``cls`` to an argparse ``group``.

    The option's default is None (not given), so the dataclass stays the one place of the
    default, which the help shows; :func:`parse_setting` turns the given text into the field's
    type. A bool field becomes a switch to the opposite of its default.
    """
    meta = settings.info(field)
    flag = settings.option_name(field)
    default = settings.default_of(cls, field.name)
    text = help or meta.help
    switch = isinstance(default, bool)
    shown = [] if default is None or switch else [f"default: {show_default(default)}"]
    if note:
        shown.append(note)
    if shown and "default:" not in text:
        text = f"{text} ({'; '.join(shown)})"
    base, _ = _unwrap(typing.get_type_hints(cls)[field.name])
    if base is bool:
        group.add_argument(flag, dest=field.name, action="store_const", const=not default,
                           default=None, help=text)
        return
    group.add_argument(flag, dest=field.name, default=None, choices=meta.choices,
                       metavar=None if meta.choices else _metavar(base, field.name), help=text)


def add_settings(group, cls: type, *, skip: tuple[str, ...] = (),
                 notes: dict[str, str] | None = None) -> list[dataclasses.Field]:
    """Add one option per setting field of dataclass ``cls`` (but ``skip``) to ``group``;
    ``notes`` adds a remark to a field's help. Returns the fields added."""
    added = []
    for field in setting_fields(cls):
        if field.name in skip:
            continue
        add_setting(group, cls, field, note=(notes or {}).get(field.name, ""))
        added.append(field)
    return added


def parse_setting(text: Any, field: dataclasses.Field, hint: Any) -> Any:
    """The value of a setting's option as given on the command line, in the field's type
    (its range is checked by whoever validates the dataclass, naming the same option)."""
    meta = settings.info(field)
    flag = settings.option_name(field)
    base, optional = _unwrap(hint)
    if base is bool or not isinstance(text, str):
        return text  # a switch's constant
    spelled = f" or {meta.none!r}" if optional and meta.none else ""
    if spelled and text.strip().lower() == meta.none:
        return None
    origin = typing.get_origin(base) or base
    if base is int:
        try:
            return int(text.strip())
        except ValueError:
            raise MarginlabError(f"{flag} must be an integer{spelled}, got {text!r}") from None
    if base is float:
        try:
            return float(text.strip())
        except ValueError:
            raise MarginlabError(f"{flag} must be a number{spelled}, got {text!r}") from None
    if origin is list:
        (item,) = typing.get_args(base)
        if item is int:
            minimum = None if meta.minimum is None else int(meta.minimum)
            return validate.int_list(text, flag, minimum=minimum)
        return [_number(t, flag) for t in _items(text)]
    if origin is dict:
        pairs = [t.split(":") for t in _items(text)]
        if any(len(p) != 2 for p in pairs):
            raise MarginlabError(f"{flag} must be comma-separated EPOCH:FACTOR pairs, got "
                                 f"{text!r}")
        return {p[0].strip(): _number(p[1], flag) for p in pairs}
    return text


def _items(text: str) -> list[str]:
    """Comma-separated items; an empty text is an empty list."""
    return [t for t in (s.strip() for s in text.split(",")) if t] if text.strip() else []


def _number(text: str, flag: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise MarginlabError(f"{flag} must be comma-separated numbers, got {text!r}") from None


def given_settings(args: argparse.Namespace, cls: type,
                   skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The setting fields of ``cls`` given on the command line, parsed: field -> value."""
    hints = typing.get_type_hints(cls)
    out = {}
    for field in setting_fields(cls):
        value = getattr(args, field.name, None)
        if field.name not in skip and value is not None:
            out[field.name] = parse_setting(value, field, hints[field.name])
    return out
