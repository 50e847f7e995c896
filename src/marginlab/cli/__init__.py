"""The ``marginlab`` command: one console script with a subcommand per module in this package.

Each command module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``.
A long command sets ``PROGRESS = True`` and gets ``--quiet`` and ``--progress-every`` (see
:mod:`marginlab.progress`). Errors a user can cause (:class:`marginlab.errors.MarginlabError`, and
file-system errors such as a full or read-only disk or a bad path) print one line and exit 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from marginlab.errors import MarginlabError

__all__ = ["main"]


def _commands():
    mods = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(mod, "NAME"):
            mods.append(mod)
    return sorted(mods, key=lambda m: getattr(m, "ORDER", 100))


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # usage errors: one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="marginlab",
        description="Measure, verify and accelerate margin maximization in homogeneous networks.",
    )
    from marginlab import __version__

    parser.add_argument("--version", action="version", version=f"marginlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for mod in _commands():
        desc = getattr(mod, "DESCRIPTION", mod.HELP)
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=desc)
        mod.add_arguments(p)
        if getattr(mod, "PROGRESS", False):
            _add_progress_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def _add_progress_arguments(p: argparse.ArgumentParser) -> None:
    from marginlab.cli import _options

    g = p.add_argument_group("progress")
    g.add_argument("--quiet", action="store_true",
                   help="no progress bars (terminal) and no progress lines (log file)")
    g.add_argument("--progress-every", type=_options.number(positive=True), default=None,
                   metavar="SECONDS",
                   help="seconds between progress lines on stderr when it is not a terminal "
                        "(default 30; also at every snapshot and at the end)")


def _fail(command: str, message: str) -> int:
    """Print a user error as one line on stderr; the exit code is 2."""
    line = " ".join(part.strip() for part in message.splitlines() if part.strip())
    print(f"marginlab {command}: error: {line}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage errors (one line, 2), --help and --version (0)
        return exc.code if isinstance(exc.code, int) else 2
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    from marginlab import progress

    try:
        with progress.configured(quiet=getattr(args, "quiet", None) or None,
                                 interval=getattr(args, "progress_every", None)):
            return int(args._run(args) or 0)
    except MarginlabError as exc:
        return _fail(args.command, str(exc))
    except OSError as exc:
        from marginlab.validate import os_error_message

        message = os_error_message(exc)
        if message is None:
            raise
        return _fail(args.command, message)
    except KeyboardInterrupt:
        print(f"marginlab {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
