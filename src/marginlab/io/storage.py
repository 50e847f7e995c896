"""Crash-safe files: atomic JSON writes and append-only JSONL logs.

A file written here is either complete or absent: content goes to a temporary file in the same
directory, is flushed and fsynced, then renamed over the target. JSONL lines are appended with
one write and fsynced; a reader drops a final line cut off by a crash.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from marginlab.errors import MarginlabError

__all__ = ["append_jsonl", "atomic_write_bytes", "atomic_write_text", "read_json",
           "read_json_object", "read_jsonl", "read_metrics", "to_jsonable", "write_json"]


def to_jsonable(value: Any) -> Any:
    """Make floats JSON-safe (inf/NaN as strings) and tensors/arrays plain lists or numbers."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return to_jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Path):
        return str(value)
    return value


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that the file is never seen half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=False) + "\n")


def _read_text(path: Path) -> str:
    """The UTF-8 text of ``path``; a missing, unreadable or non-UTF-8 file is a MarginlabError."""
    if path.is_dir():
        raise MarginlabError(f"{path} is a directory, expected a file")
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MarginlabError(f"missing file {path}") from None
    except UnicodeDecodeError as exc:
        raise MarginlabError(f"{path} is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise MarginlabError(f"cannot read {path} ({exc.strerror or exc})") from None


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    text = _read_text(path)
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
        raise MarginlabError(f"{path} is not valid JSON ({reason})") from None


def read_json_object(path: str | os.PathLike) -> dict:
    """:func:`read_json` of a file that must hold a JSON object (a config, a marker)."""
    obj = read_json(path)
    if not isinstance(obj, dict):
        raise MarginlabError(f"{path} must hold a JSON object, got a JSON {_json_type(obj)}")
    return obj


def _json_type(obj: Any) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "boolean", int: "number",
             float: "number", type(None): "null"}
    return names.get(type(obj), type(obj).__name__)


def append_jsonl(path: str | os.PathLike, records: Iterable[dict] | dict) -> None:
    """Append records as JSON lines with a single write, flushed and fsynced."""
    if isinstance(records, dict):
        records = [records]
    text = "".join(json.dumps(to_jsonable(r)) + "\n" for r in records)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSONL file of JSON objects; a last line cut off by a crash is dropped, a corrupt
    inner line, a line that is not an object, or text that is not UTF-8 is an error."""
    path = Path(path)
    if not path.exists():
        return []
    lines = _read_text(path).split("\n")
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            if i >= len(lines) - 2:
                break  # the final, unterminated line of an interrupted append
            raise MarginlabError(f"{path}: line {i + 1} is not valid JSON") from None
        if not isinstance(record, dict):
            raise MarginlabError(f"{path}: line {i + 1} is a JSON {_json_type(record)}, "
                                 "expected an object")
        out.append(record)
    return out


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The records of a run's ``metrics.jsonl`` (see :func:`read_jsonl`), each with an integer
    ``epoch``, epochs strictly increasing."""
    records = read_jsonl(path)
    last = None
    for i, record in enumerate(records):
        epoch = record.get("epoch")
        if isinstance(epoch, bool) or not isinstance(epoch, int):
            what = "no 'epoch'" if "epoch" not in record else f"epoch {epoch!r}, not an integer"
            raise MarginlabError(f"{path}: record {i + 1} has {what}")
        if last is not None and epoch <= last:
            raise MarginlabError(f"{path}: record {i + 1} has epoch {epoch} after epoch {last}")
        last = epoch
    return records
