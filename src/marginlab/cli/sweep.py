"""``marginlab sweep SPEC``: run a trial over a grid of settings × seeds, resumably, in parallel
on this machine or on a Ray cluster, and report mean ± std over seeds."""

from __future__ import annotations

import argparse

from marginlab.cli import _options

NAME = "sweep"
HELP = "run a grid of settings × seeds (JSON spec or experiment id), resumable, mean ± std"
DESCRIPTION = (
    "Run a sweep: SPEC is a JSON file ({\"experiment\": ID, \"scale\": ..., \"grid\": {...}, "
    "\"seeds\": [...], \"set\": {...}} or {\"train\": {TrainSpec fields}, \"grid\": {...}, "
    "\"seeds\": [...]}) or a registered experiment id, swept over its grid for --scale. Each "
    "trial's result is appended to OUT/trials.jsonl as it finishes; --resume skips finished "
    "trials. Exit code 1 if any trial failed."
)
ORDER = 35
PROGRESS = True


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", help="JSON sweep spec file, or an experiment id")
    p.add_argument("--out", default=None,
                   help="sweep directory (default runs/sweep-<spec name or id>-<scale>)")
    p.add_argument("--scale", choices=("cpu", "paper"), default=None,
                   help="experiment scale (default: the spec's, or cpu)")
    p.add_argument("--seeds", default=None,
                   help="comma-separated seeds (default: the spec's; 0,1,2 for an id)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting shared by every trial (repeatable): an experiment "
                        "setting, or a training setting of a 'train' spec")
    p.add_argument("--workers", type=_options.integer(minimum=0), default=None,
                   help="trials at once (local: default the CPU count, 0 = in this process; "
                        "ray: CPUs of the local instance it starts)")
    p.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="local process pool (default) or a Ray cluster")
    p.add_argument("--address", default=None,
                   help="Ray cluster address ('auto': a running one; default: start a local one)")
    p.add_argument("--resume", action="store_true",
                   help="continue the sweep in --out: skip finished trials, rerun failed ones")
    p.add_argument("--overwrite", action="store_true", help="replace the sweep in --out")


def build_spec(args: argparse.Namespace):
    """The :class:`~marginlab.sweep.SweepSpec` of the command line."""
    from pathlib import Path

    from marginlab import validate
    from marginlab.cli.reproduce import parse_overrides
    from marginlab.errors import MarginlabError
    from marginlab.experiments import sweep_spec
    from marginlab.io import storage
    from marginlab.sweep import SweepSpec

    seeds = None
    if args.seeds is not None:
        seeds = validate.int_list(args.seeds, "--seeds", minimum=0)
    overrides = parse_overrides(args.set)
    path = Path(args.spec)
    if path.suffix == ".json" or path.exists():
        raw = storage.read_json(path)
        if not isinstance(raw, dict):
            raise MarginlabError(f"{path}: a sweep spec is a JSON object")
        raw = dict(raw)
        if args.scale is not None:
            raw["scale"] = args.scale
        if seeds is not None:
            raw["seeds"] = seeds
        if overrides:
            where = "train" if raw.get("train") is not None else "set"
            raw[where] = {**(raw.get(where) or {}), **overrides}
        spec = SweepSpec.from_dict(raw)
        name = path.stem
    else:
        spec = sweep_spec(args.spec, args.scale or "cpu", seeds)
        if overrides:
            spec = SweepSpec.from_dict({**spec.to_dict(), "set": overrides})
        name = args.spec
    if spec.kind == "experiment":
        name = f"{name}-{spec.scale}"
    out = Path(args.out or f"runs/sweep-{name}")
    validate.output_dir(out, "--out")
    return spec, out


def run(args: argparse.Namespace) -> int:
    from marginlab.experiments import trial_source
    from marginlab.sweep import run_sweep

    spec, out = build_spec(args)
    source = trial_source(spec.experiment) if spec.kind == "experiment" else None
    try:
        result = run_sweep(spec, out, workers=args.workers, backend=args.backend,
                           address=args.address, resume=args.resume, overwrite=args.overwrite,
                           source=source)
    except KeyboardInterrupt:
        import sys

        print(f"marginlab sweep: interrupted; the finished trials are in {out}/trials.jsonl: "
              "continue with --resume", file=sys.stderr)
        return 130
    print(f"sweep: {result.summary()}; {result.seconds:.1f} s")
    for rec in result.failed[:10]:
        print(f"  failed {rec.id} {rec.params}: {rec.error}")
    if len(result.failed) > 10:
        print(f"  ... and {len(result.failed) - 10} more")
    print(f"report: {result.report}")
    return 0 if result.ok else 1
