"""``marginlab homogeneity --model NAME``: is a zoo model homogeneous, and of which order."""

from __future__ import annotations

import argparse
import json

from marginlab import models
from marginlab.cli import _options
from marginlab.train.settings import default_of
from marginlab.train.spec import TrainSpec

NAME = "homogeneity"
HELP = "check numerically whether a zoo model (or a checkpoint) is homogeneous"
ORDER = 11


def _users(setting: str) -> list[str]:
    return [n for n, e in models.REGISTRY.items() if setting in e.uses]


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help=f"zoo model: {', '.join(models.MODELS)}")
    src.add_argument("--checkpoint", help="a .safetensors checkpoint of a zoo model")
    p.add_argument("--bias", choices=models.BIAS_MODES, default=default_of(TrainSpec, "bias"))
    flat = [n for n, e in models.REGISTRY.items() if e.input_shape is None]
    p.add_argument("--in-dim", type=_options.integer(minimum=1), default=None,
                   help=f"input size for {', '.join(flat)} (default: the model's example "
                        "input, " + ", ".join(
                            f"{n} {models.REGISTRY[n].example_input[0]}" for n in flat) + ")")
    p.add_argument("--widths", type=_options.int_list(minimum=1), default=None,
                   help=f"hidden widths, comma-separated ({', '.join(_users('widths'))}; "
                        "default: the model's own, as for marginlab train)")
    p.add_argument("--seed", type=_options.integer(minimum=0),
                   default=default_of(TrainSpec, "seed"))
    p.add_argument("--json", action="store_true")


def _from_registry(args: argparse.Namespace):
    """The zoo model of the command line, built by its registry entry, and its input shape."""
    from marginlab.errors import MarginlabError

    entry = models.entry(args.model, "--model")
    if args.widths is not None and "widths" not in entry.uses:
        raise MarginlabError(f"--widths applies to {' and '.join(_users('widths'))}, not "
                             f"{args.model}")
    widths = TrainSpec(model=args.model).widths if args.widths is None else args.widths
    settings = models.ModelSettings(bias=args.bias, widths=widths,
                                    width=default_of(TrainSpec, "width"), seed=args.seed)
    settings = entry.check(settings, lambda name: "--" + name)
    shape = entry.example_input
    if entry.input_shape is None and args.in_dim is not None:
        shape = (args.in_dim,)
    return entry.build(settings, shape), shape


def _checkpoint_shape(name: str, kwargs: dict) -> tuple[int, ...]:
    """A sample shape that fits a zoo model built with ``kwargs``."""
    example = models.entry(name).example_input
    if models.entry(name).input_shape is None:
        return (kwargs.get("in_dim") or kwargs.get("d") or example[0],)
    return (kwargs.get("in_channels", example[0]), *example[1:])


def run(args: argparse.Namespace) -> int:
    import torch

    from marginlab.core import homogeneity

    if args.checkpoint:
        model = models.load(args.checkpoint)
        name = model.marginlab_spec["name"]
        shape = _checkpoint_shape(name, model.marginlab_spec["kwargs"])
    else:
        name = args.model
        model, shape = _from_registry(args)
    x = torch.rand((8, *shape), generator=torch.Generator().manual_seed(1))
    report = homogeneity.check(model, x)
    if args.json:
        print(json.dumps({"order": report.order, "is_homogeneous": report.is_homogeneous,
                          "is_multi_homogeneous": report.is_multi_homogeneous,
                          "layer_orders": report.layer_orders,
                          "max_residual": report.max_residual}, indent=2))
    else:
        print(f"{name}: " + report.summary())
    return 0
