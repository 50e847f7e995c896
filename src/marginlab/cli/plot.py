"""``marginlab plot RUN_DIR...``: Figure-1-style plots of one or more runs, overlaid."""

from __future__ import annotations

import argparse

NAME = "plot"
HELP = "draw Figure-1-style PNGs (loss, margins, accuracy, alpha) of runs, overlaid"
ORDER = 21


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", help="run directories written by `marginlab train`")
    p.add_argument("--out", default=None,
                   help="PNG path prefix (default: RUN_DIR/plots/ of the first run)")
    p.add_argument("--title", default="")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from marginlab.io import plots
    from marginlab.train.rundir import RunDir

    runs = {}
    for path in args.runs:
        run_dir = RunDir(path)
        run_dir.config()  # a clear error if this is not a run directory
        name = Path(path).resolve().name
        if name in runs:
            name = str(path)
        runs[name] = run_dir.metrics()
    prefix = Path(args.out) if args.out else Path(args.runs[0]) / "plots" / "compare"
    a = plots.plot_training(runs, prefix.with_name(prefix.name + "_training.png"),
                            title=args.title)
    b = plots.plot_margin_vs_time(runs, prefix.with_name(prefix.name + "_margin_vs_time.png"),
                                  title=args.title)
    print(f"wrote {a}\nwrote {b}")
    return 0
