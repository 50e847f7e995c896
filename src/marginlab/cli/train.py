"""``marginlab train``: train a homogeneous network far past 100% accuracy.

The options are generated from the fields of :class:`~marginlab.train.spec.TrainSpec` and of
the schedule dataclasses (:data:`~marginlab.train.schedules.SCHEDULES`): defaults, help and
checks live there, once. An option left out takes the dataclass's default.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing

from marginlab.cli import _options
from marginlab.errors import MarginlabError
from marginlab.train.schedules import SCHEDULES, make_schedule
from marginlab.train.settings import default_of, info, option_name
from marginlab.train.spec import TrainSpec

NAME = "train"
HELP = "train a model with a constant or loss-based learning rate, recording margins"
ORDER = 20
PROGRESS = True

# What --resume may change; every other option given must match the saved run.
RESUMABLE = ("epochs", "max_time", "stop_at_log10_loss")
DEFAULT_SCHEDULE = TrainSpec().schedule["name"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training settings (an option left out takes its default)")
    _options.add_settings(g, TrainSpec, skip=("schedule",),
                          notes={k: "with --resume: the run's own" for k in RESUMABLE})
    g = p.add_argument_group("schedule (each parameter applies to the schedules it names)")
    g.add_argument("--schedule", default=None,
                   help="loss_based (Lyu & Li L.1), loss_based_momentum (the same line search "
                        "with heavy-ball momentum and a smoothed-margin guard; about 3-10x "
                        "faster to a given margin, see benchmarks/RESULTS.md) or constant; "
                        f"registered: {', '.join(SCHEDULES)} (default: {DEFAULT_SCHEDULE})")
    for owners in schedule_options().values():
        name, field = owners[0]
        text = f"{', '.join(n for n, _ in owners)}: {info(field).help}"
        if not isinstance(default_of(SCHEDULES[name], field.name), bool):
            text += " (default: " + "; ".join(
                f"{_options.show_default(default_of(SCHEDULES[n], f.name))} for {n}"
                for n, f in owners) + ")"
        _options.add_setting(g, SCHEDULES[name], field, help=text)
    g = p.add_argument_group("output")
    g.add_argument("--out", required=True, help="run directory")
    g.add_argument("--resume", action="store_true", help="continue the run in --out")
    g.add_argument("--overwrite", action="store_true", help="replace a different run in --out")
    g.add_argument("--threads", type=_options.threads, default=None,
                   help="torch threads, at least 1 (default: torch's)")


def schedule_options() -> dict[str, list[tuple[str, dataclasses.Field]]]:
    """option -> the (schedule name, field) pairs it sets, over every registered schedule."""
    out: dict[str, list[tuple[str, dataclasses.Field]]] = {}
    for name, cls in SCHEDULES.items():
        if dataclasses.is_dataclass(cls):
            for field in _options.setting_fields(cls):
                out.setdefault(option_name(field), []).append((name, field))
    return out


def _given_schedule_options(args: argparse.Namespace) -> list[str]:
    return [flag for flag, owners in schedule_options().items()
            if getattr(args, owners[0][1].name, None) is not None]


def schedule_config(args: argparse.Namespace) -> dict:
    """The schedule of the command line: ``--schedule`` (default the spec's) with the
    parameters given, and those the schedule states even at their defaults."""
    name = DEFAULT_SCHEDULE if args.schedule is None else args.schedule
    if name not in SCHEDULES:
        raise MarginlabError(f"unknown schedule {name!r}; expected {', '.join(SCHEDULES)}")
    options = schedule_options()
    for flag in _given_schedule_options(args):
        names = [n for n, _ in options[flag]]
        if name not in names:
            raise MarginlabError(f"{flag} applies only to --schedule {' or '.join(names)}")
    config: dict = {"name": name}
    cls = SCHEDULES[name]
    if not dataclasses.is_dataclass(cls):
        return config
    hints = typing.get_type_hints(cls)
    for field in _options.setting_fields(cls):
        value = getattr(args, field.name, None)
        if value is not None:
            config[field.name] = _options.parse_setting(value, field, hints[field.name])
        elif info(field).stated:
            config[field.name] = default_of(cls, field.name)
    return config


def given_settings(args: argparse.Namespace) -> dict:
    """The TrainSpec fields set on the command line, parsed (``schedule`` if ``--schedule``
    or one of its parameters is given)."""
    given = _options.given_settings(args, TrainSpec, skip=("schedule",))
    if args.schedule is not None or _given_schedule_options(args):
        given["schedule"] = schedule_config(args)
    return given


def spec_from_args(args: argparse.Namespace) -> TrainSpec:
    """The validated :class:`TrainSpec` of the command line; errors name the options."""
    settings = given_settings(args)
    if "schedule" not in settings:
        settings["schedule"] = schedule_config(args)
    return TrainSpec.from_dict(settings, label=TrainSpec.option)


def _saved_spec(config_path) -> dict | None:
    """The spec a run directory saved in its config.json (None if it saved none)."""
    from marginlab.errors import RunDirectoryError
    from marginlab.io.storage import read_json_object

    saved = read_json_object(config_path).get("spec")
    if saved is not None and not isinstance(saved, dict):
        raise RunDirectoryError(f"{config_path}: 'spec' must be an object, got "
                                f"{type(saved).__name__}")
    return saved


def _same(key: str, a, b) -> bool:
    """Whether two values of TrainSpec field ``key`` describe the same run."""
    if key == "schedule":
        try:
            return make_schedule(a).config() == make_schedule(b).config()
        except MarginlabError:
            return False
    return json.loads(json.dumps(a)) == json.loads(json.dumps(b))


def _refuse_conflicts(args: argparse.Namespace, spec: TrainSpec, saved: dict) -> None:
    """Refuse options given with --resume that differ from the saved run's settings."""
    mine = spec.to_dict()
    for key in given_settings(args):
        if key in RESUMABLE or key not in saved or _same(key, mine[key], saved[key]):
            continue
        budgets = ", ".join(TrainSpec.option(k) for k in RESUMABLE)
        raise MarginlabError(
            f"--resume continues the run in {args.out} with its own settings, but the "
            f"command line gives {key}={mine[key]!r} where the run has {saved[key]!r}; only "
            f"{budgets} may change (or use --overwrite)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from marginlab import run_report as report
    from marginlab import validate
    from marginlab.io import plots
    from marginlab.train.rundir import RunDir
    from marginlab.train.spec import run_training

    spec = spec_from_args(args)
    validate.output_dir(args.out, "--out")
    out = Path(args.out)
    if args.resume and RunDir(out).config_path.exists():
        saved = _saved_spec(RunDir(out).config_path)
        if saved:  # the run's own settings; a budget given on this command line replaces its
            given = given_settings(args)
            budget = {k: given[k] for k in RESUMABLE if k in given}
            # the saved file is input too
            resumed = TrainSpec.from_dict({**saved, **budget}, label=TrainSpec.option)
            _refuse_conflicts(args, spec, saved)
            spec = resumed
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run_training(spec, out, resume=args.resume, overwrite=args.overwrite)
    plots.plot_training({out.name: result.history}, RunDir(out).plots_dir / "training.png",
                        title=f"{spec.model} ({spec.bias} bias) on {spec.data}")
    page = report.write_run_report(out)
    last = result.last
    if last:
        print(f"epoch {last['epoch']}: log10 loss {last['log10_loss_mean']:.4g}, "
              f"normalized margin {last['normalized_margin_multi']:.4g}, "
              f"train acc {last['train_acc']:.4f}; stopped by {result.stop_reason}")
    print(f"report: {page}")
    return 0
