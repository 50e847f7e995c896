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

    from marginlab import validate
    from marginlab.errors import RunDirectoryError
    from marginlab.io import plots, storage
    from marginlab.train.rundir import RunDir

    runs = {}
    for path in args.runs:
        run_dir = RunDir(path)
        if not run_dir.path.is_dir():
            raise RunDirectoryError(f"no run directory at {path}")
        storage.read_json_object(run_dir.config_path)  # a run directory
        metrics = run_dir.metrics_path
        if not metrics.is_file():
            raise RunDirectoryError(f"{path} has no {metrics.name}")
        records = storage.read_metrics(metrics)
        if not records:
            raise RunDirectoryError(f"{path}/{metrics.name} holds no epochs: nothing to plot")
        if not any(isinstance(r.get("log10_loss_mean"), (int, float)) for r in records):
            raise RunDirectoryError(f"{path}/{metrics.name} has no log10_loss_mean values: not "
                                    "the metrics of a training run")
        name = run_dir.path.resolve().name
        if name in runs:
            name = str(path)
        runs[name] = records
    prefix = Path(args.out) if args.out else RunDir(args.runs[0]).plots_dir / "compare"
    for suffix in ("_training.png", "_margin_vs_time.png"):
        validate.output_file(prefix.with_name(prefix.name + suffix), "--out")
    a = plots.plot_training(runs, prefix.with_name(prefix.name + "_training.png"),
                            title=args.title)
    b = plots.plot_margin_vs_time(runs, prefix.with_name(prefix.name + "_margin_vs_time.png"),
                                  title=args.title)
    print(f"wrote {a}\nwrote {b}")
    return 0
