"""``marginlab reproduce ID --scale cpu|paper``: run a registered experiment of the papers."""

from __future__ import annotations

import argparse

NAME = "reproduce"
HELP = "run a registered experiment (a paper figure or table) at cpu or paper scale"
ORDER = 30
PROGRESS = True


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("experiment", nargs="?", help="experiment id; omit with --list")
    p.add_argument("--list", action="store_true", help="list the registered experiments")
    p.add_argument("--scale", choices=("cpu", "paper"), default="cpu")
    p.add_argument("--out", default=None, help="output directory (default runs/<id>-<scale>)")
    p.add_argument("--root", default=None, help="directory with the full data set files")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda for paper scale")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting of the scale (repeatable), e.g. --set n_train=500")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier run in --out")


def parse_overrides(items: list[str]) -> dict:
    import json

    from marginlab.errors import MarginlabError

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise MarginlabError(f"--set takes KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from marginlab import experiments
    from marginlab.errors import MarginlabError

    if args.list or not args.experiment:
        for exp in experiments.all_experiments().values():
            print(f"{exp.id:18s} {exp.title}  [{exp.reference}]  scales: {', '.join(exp.scales)}")
        if not args.list:
            raise MarginlabError("name an experiment to run (see the list above)")
        return 0
    exp = experiments.get(args.experiment)
    out = Path(args.out or f"runs/{exp.id}-{args.scale}")
    request = exp.request(args.scale, out, parse_overrides(args.set), device=args.device,
                          root=None if args.root is None else Path(args.root), seed=args.seed,
                          overwrite=args.overwrite, resume=args.resume)
    page = exp.run(request)
    print(f"report: {page}")
    return 0
