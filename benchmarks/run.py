"""Run the benchmarks: ``python -m benchmarks.run [NAME ...]`` (``make bench`` runs them all).

Each ``benchmarks/bench_NAME.py`` has a ``main(argv)`` that prints a markdown section with ratios
measured in one run. The output of this run is also written to ``benchmarks/out/latest.md``;
benchmarks/RESULTS.md keeps the curated results with date, machine and command.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import pkgutil
import platform
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def machine() -> str:
    return (f"{platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"torch {torch.__version__}")


class _Tee(io.TextIOBase):
    """Print and keep a copy."""

    def __init__(self, buf: io.StringIO):
        self.buf = buf

    def write(self, s: str) -> int:
        sys.__stdout__.write(s)
        self.buf.write(s)
        return len(s)


def main(argv: list[str] | None = None) -> int:
    names = argv if argv is not None else sys.argv[1:]
    available = sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules([str(HERE)])
                       if m.name.startswith("bench_"))
    unknown = [n for n in names if n not in available]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(available)}",
              file=sys.stderr)
        return 2
    chosen = names or available
    header = f"# Benchmarks, {time.strftime('%Y-%m-%d %H:%M')}\n\nMachine: {machine()}\n"
    print(header)
    parts = [header]
    for name in chosen:
        mod = importlib.import_module(f"benchmarks.bench_{name}")
        buf = io.StringIO()
        with contextlib.redirect_stdout(_Tee(buf)):
            mod.main([])
        parts.append(buf.getvalue())
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    (out / "latest.md").write_text("\n".join(parts), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
