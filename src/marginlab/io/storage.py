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

__all__ = ["append_jsonl", "atomic_write_bytes", "atomic_write_text", "read_json", "read_jsonl",
           "to_jsonable", "write_json"]


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


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MarginlabError(f"missing file {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MarginlabError(f"{path} is not valid JSON ({exc})") from None


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
    """Read a JSONL file; a last line cut off by a crash is dropped, a corrupt inner line is an
    error."""
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").split("\n")
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i >= len(lines) - 2:  # the final, unterminated line of an interrupted append
                break
            raise MarginlabError(f"{path}: line {i + 1} is not valid JSON") from None
    return out
