"""Checks of the values a user gives, made where they enter (a command-line option, an argument
of a public function, a field of a file read back): one function per concept.

Each check returns the value in its normal form (``int``, ``float``, ``list[int]``, ``Path``) or
raises :class:`~marginlab.errors.MarginlabError` with one line that names the setting, the bad
value and what is allowed. The command line maps that error to exit code 2.
"""

from __future__ import annotations

import errno
import math
import numbers
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from marginlab.errors import MarginlabError

__all__ = ["FILE_ERRNOS", "device", "integer", "int_list", "number", "optional_integer",
           "optional_number", "os_error_message", "output_dir", "output_file", "threads",
           "widths"]

# File-system errors a user causes (a bad path, a full or read-only disk): one line, exit 2.
# The first group needs no file name to be the user's; the second only with one.
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})
FILE_ERRNOS = DISK_ERRNOS | frozenset({
    errno.EACCES, errno.EPERM, errno.ENAMETOOLONG, errno.ENOTDIR, errno.EISDIR, errno.ENOENT,
    errno.EEXIST, errno.ENOTEMPTY, errno.ELOOP, errno.EXDEV, errno.EBUSY, errno.ETXTBSY})
MIN_FREE_BYTES = 1 << 20  # refuse to start writing on a file system with less free space


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def integer(value: Any, name: str, *, minimum: int | None = None,
            maximum: int | None = None, from_text: bool = False) -> int:
    """An integer (not a bool, not a float with a fraction) in [minimum, maximum].

    An integral float such as ``3.0`` is accepted, ``3.5`` is not; a string only with
    ``from_text`` (an option given as text), never from a file or an API call.
    """
    out: int | None = None
    if isinstance(value, bool):
        out = None
    elif isinstance(value, numbers.Integral):
        out = int(value)
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
        out = int(value)
    elif isinstance(value, str) and from_text:
        try:
            out = int(value.strip())
        except ValueError:
            out = None
    if out is None:
        raise MarginlabError(f"{name} must be an integer, got {_show(value)}")
    if minimum is not None and out < minimum:
        raise MarginlabError(f"{name} must be at least {minimum}, got {out}")
    if maximum is not None and out > maximum:
        raise MarginlabError(f"{name} must be at most {maximum}, got {out}")
    return out


def optional_integer(value: Any, name: str, **bounds: int | None) -> int | None:
    """:func:`integer`, or None."""
    return None if value is None else integer(value, name, **bounds)


def number(value: Any, name: str, *, minimum: float | None = None,
           maximum: float | None = None, positive: bool = False,
           from_text: bool = False) -> float:
    """A finite real number in [minimum, maximum] (``positive``: strictly above 0); a string
    only with ``from_text``."""
    out: float | None = None
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        out = float(value)
    elif isinstance(value, str) and from_text:
        try:
            out = float(value.strip())
        except ValueError:
            out = None
    if out is None:
        raise MarginlabError(f"{name} must be a number, got {_show(value)}")
    if not math.isfinite(out):
        raise MarginlabError(f"{name} must be a finite number, got {out}")
    if positive and not out > 0:
        raise MarginlabError(f"{name} must be positive, got {out:g}")
    if minimum is not None and out < minimum:
        raise MarginlabError(f"{name} must be at least {minimum:g}, got {out:g}")
    if maximum is not None and out > maximum:
        raise MarginlabError(f"{name} must be at most {maximum:g}, got {out:g}")
    return out


def optional_number(value: Any, name: str, **bounds: Any) -> float | None:
    """:func:`number`, or None."""
    return None if value is None else number(value, name, **bounds)


def int_list(text: str, name: str, *, minimum: int | None = None) -> list[int]:
    """Comma-separated integers given as text, e.g. ``--widths 32,32`` → [32, 32]."""
    if not isinstance(text, str):
        raise MarginlabError(f"{name} must be comma-separated integers, got {_show(text)}")
    items = [t.strip() for t in text.split(",")]
    if not text.strip() or any(not t for t in items):
        raise MarginlabError(f"{name} must be comma-separated integers, got {text!r}")
    return [integer(t, name, minimum=minimum, from_text=True) for t in items]


def widths(value: Any, name: str = "widths", *, count: int | None = None,
           allow_empty: bool = False) -> list[int]:
    """Hidden-layer widths: a non-empty list of positive integers (``count``: exactly so many;
    ``allow_empty``: no hidden layer is allowed too).

    A string is refused rather than split, so ``"32,32"`` read from a file is an error, not a
    guess; the command line parses its text with :func:`int_list` first.
    """
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise MarginlabError(f"{name} must be a list of positive integers, got {_show(value)}")
    out = [integer(w, name, minimum=1) for w in value]
    if not out and not allow_empty:
        raise MarginlabError(f"{name} must name at least one hidden width")
    if count is not None and len(out) != count:
        raise MarginlabError(f"{name} must hold exactly {count} width"
                             f"{'s' if count != 1 else ''}, got {len(out)}: "
                             f"{','.join(map(str, out))}")
    return out


def threads(value: Any, name: str = "--threads") -> int:
    """A thread count: an integer ≥ 1, at most 4096."""
    return integer(value, name, minimum=1, maximum=4096, from_text=True)


def device(value: Any, name: str = "--device") -> str:
    """A torch device this machine has: ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.

    Returns the device string as given (normalized by torch).
    """
    import torch

    if isinstance(value, torch.device):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise MarginlabError(f"{name}: unknown torch device {_show(value)}; expected cpu, cuda, "
                             "cuda:N or mps")
    try:
        dev = torch.device(value.strip())
    except (RuntimeError, ValueError):
        raise MarginlabError(f"{name}: unknown torch device {value!r}; expected cpu, cuda, "
                             "cuda:N or mps") from None
    if dev.type == "cpu":
        return str(dev)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise MarginlabError(f"{name} {value}: CUDA is not available on this machine (torch "
                                 f"{torch.__version__}); use cpu")
        count = torch.cuda.device_count()
        if dev.index is not None and count and dev.index >= count:
            raise MarginlabError(f"{name} {value}: only {count} CUDA device(s), "
                                 f"cuda:0..cuda:{count - 1}")
        return str(dev)
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise MarginlabError(f"{name} {value}: MPS is not available on this machine")
        return str(dev)
    raise MarginlabError(f"{name}: unknown torch device {value!r}; expected cpu, cuda, "
                         "cuda:N or mps")


def _existing_ancestor(path: Path) -> Path:
    """The deepest existing prefix of ``path`` (which is absolute)."""
    for p in (path, *path.parents):
        try:
            os.lstat(p)
        except (OSError, ValueError):
            continue
        return p
    return Path(path.anchor or "/")


def _lengths(target: Path, name: str) -> None:
    """Names and the whole path within the limits of the file system they would be made on."""
    base = _existing_ancestor(target)
    try:
        name_max = os.pathconf(base, "PC_NAME_MAX")
        path_max = os.pathconf(base, "PC_PATH_MAX")
    except (OSError, ValueError):
        name_max, path_max = 255, 4096
    long = [part for part in target.parts if len(os.fsencode(part)) > name_max]
    if long:
        raise MarginlabError(f"{name}: the name {long[0][:40]}... is longer than the file "
                             f"system allows ({len(os.fsencode(long[0]))} > {name_max} bytes)")
    if len(os.fsencode(str(target))) >= path_max:
        raise MarginlabError(f"{name}: the path is longer than the file system allows "
                             f"({len(os.fsencode(str(target)))} >= {path_max} bytes)")


def _location(target: Path, base: Path, name: str, shown: Any) -> None:
    """The checks shared by :func:`output_dir` and :func:`output_file` once the names are known
    to fit: ``base`` is the deepest existing entry above the new ones."""
    if not base.is_dir():
        what = "is a file, not a directory" if base.is_file() else "is not a directory"
        raise MarginlabError(f"{name} {shown}: {base} {what}")
    if not os.access(base, os.W_OK | os.X_OK):
        reason = "read-only file system" if _read_only(base) else "permission denied"
        raise MarginlabError(f"{name} {shown}: cannot write in {base} ({reason})")
    try:
        st = os.statvfs(base)
    except OSError:
        return
    if st.f_blocks and st.f_bavail * st.f_frsize < MIN_FREE_BYTES:  # (pseudo file systems: 0)
        raise MarginlabError(f"{name} {shown}: no space left on the file system of {base}")


def _target(path: Any, name: str, kind: str) -> Path:
    if not isinstance(path, (str, os.PathLike)) or not str(path).strip():
        raise MarginlabError(f"{name} must be a {kind} path, got {_show(path)}")
    if "\x00" in os.fspath(path):
        raise MarginlabError(f"{name} {os.fspath(path)!r}: a path cannot contain a NUL byte")
    return Path(os.path.abspath(os.path.expanduser(os.fspath(path))))


def output_dir(path: Any, name: str = "--out") -> Path:
    """A directory to write in, checked without creating anything: not a file and not under
    one, names within the file system's limits, writable, on a file system with free space.

    Returns the absolute path.
    """
    target = _target(path, name, "directory")
    _lengths(target, name)
    if target.exists() and not target.is_dir():
        raise MarginlabError(f"{name} {path}: exists and is not a directory")
    _location(target, _existing_ancestor(target), name, path)
    return target


def output_file(path: Any, name: str = "--out") -> Path:
    """A file to write (or replace), checked as :func:`output_dir` checks its directory; the
    path itself must not be a directory. Returns the absolute path."""
    target = _target(path, name, "file")
    _lengths(target, name)
    if target.is_dir():
        raise MarginlabError(f"{name} {path}: is a directory, not a file")
    _location(target, _existing_ancestor(target.parent), name, path)
    return target


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def os_error_message(exc: OSError) -> str | None:
    """One line for a file-system error a user caused (see ``FILE_ERRNOS``), else None."""
    if exc.errno not in FILE_ERRNOS:
        return None
    if exc.errno not in DISK_ERRNOS and exc.filename is None:
        return None
    reason = exc.strerror or os.strerror(exc.errno)
    where = exc.filename if exc.filename is not None else None
    if where is not None and len(str(where)) > 120:
        where = str(where)[:60] + "..." + str(where)[-40:]
    return f"{reason}: {where}" if where is not None else reason
