"""``marginlab reproduce ID --scale cpu|paper``: run a registered experiment of the papers;
``marginlab reproduce --all --out DIR``: run them all and write the table of every claim."""

from __future__ import annotations

import argparse

from marginlab.cli import _options
from marginlab.experiments import RunRequest
from marginlab.train.settings import default_of

NAME = "reproduce"
HELP = "run a registered experiment (a paper figure or table) at cpu or paper scale, or --all"
ORDER = 30
PROGRESS = True


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("experiment", nargs="?", help="experiment id; omit with --list or --all")
    p.add_argument("--list", action="store_true",
                   help="list the registered experiments and which scales need --root")
    p.add_argument("--all", action="store_true",
                   help="run every registered experiment into OUT/<id>/ (resumable) and write "
                        "OUT/index.html and OUT/index.md with the table of every claim")
    p.add_argument("--scale", choices=("cpu", "paper"), default="cpu")
    p.add_argument("--out", default=None,
                   help="output directory (default runs/<id>-<scale>, with --all runs/all-<scale>)")
    p.add_argument("--root", default=None, help="directory with the full data set files")
    p.add_argument("--device", type=_options.device, default=default_of(RunRequest, "device"),
                   help="torch device: cpu, cuda, cuda:N or mps (default: "
                        f"{default_of(RunRequest, 'device')})")
    seed = default_of(RunRequest, "seed")
    p.add_argument("--seed", type=_options.integer(minimum=0), default=seed,
                   help=f"base seed (default: {seed})")
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


def _list() -> None:
    from marginlab import experiments

    for exp in experiments.all_experiments().values():
        scales = ", ".join(f"{s} (needs --root)" if exp.needs_root(s) else s
                           for s in exp.scales)
        print(f"{exp.id:18s} {exp.title}  [{exp.reference}]  scales: {scales}")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from marginlab import experiments, validate
    from marginlab.errors import MarginlabError

    root = None if args.root is None else Path(args.root)
    if args.list:
        _list()
        return 0
    if args.all:
        from marginlab.experiments.suite import run_all

        if args.experiment or args.set or args.overwrite:
            raise MarginlabError("--all runs every experiment with its scale's settings; it "
                                 "takes no experiment id, --set or --overwrite")
        out = Path(args.out or f"runs/all-{args.scale}")
        result = run_all(out, args.scale, device=args.device, root=root, seed=args.seed)
        print(f"index: {result.index}")
        return 0
    if not args.experiment:
        _list()
        raise MarginlabError("name an experiment to run, or --all (see the list above)")
    exp = experiments.get(args.experiment)
    out = Path(args.out or f"runs/{exp.id}-{args.scale}")
    validate.output_dir(out, "--out")
    request = exp.request(args.scale, out, parse_overrides(args.set), device=args.device,
                          root=root, seed=args.seed, overwrite=args.overwrite,
                          resume=args.resume)
    exp.check_data(request)  # before the output directory or any worker exists
    page = exp.run(request)
    print(f"report: {page}")
    return 0
