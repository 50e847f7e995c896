"""``marginlab homogeneity --model NAME``: is a zoo model homogeneous, and of which order."""

from __future__ import annotations

import argparse
import json

from marginlab.cli import _options

NAME = "homogeneity"
HELP = "check numerically whether a zoo model (or a checkpoint) is homogeneous"
ORDER = 11

# Example input shapes per zoo model (one sample).
INPUT_SHAPES = {"mnist_cnn": (1, 28, 28), "vgg16": (3, 32, 32), "wrn16": (3, 32, 32)}


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="zoo model: mnist_cnn, vgg16, mlp, two_layer, wrn16")
    src.add_argument("--checkpoint", help="a .safetensors checkpoint of a zoo model")
    p.add_argument("--bias", choices=("none", "first", "all"), default="none")
    p.add_argument("--in-dim", type=_options.integer(minimum=1), default=784,
                   help="input size for mlp/two_layer")
    p.add_argument("--widths", type=_options.int_list(minimum=1), default=None,
                   help="hidden widths: mlp, comma-separated (default 100,100); two_layer, one "
                        "width (default 100)")
    p.add_argument("--seed", type=_options.integer(minimum=0), default=0)
    p.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    import torch

    from marginlab import models, validate
    from marginlab.core import homogeneity
    from marginlab.errors import MarginlabError

    if args.checkpoint:
        model = models.load(args.checkpoint)
        name = model.marginlab_spec["name"]
        kwargs = model.marginlab_spec["kwargs"]
    else:
        name, kwargs = args.model, {"bias": args.bias, "seed": args.seed}
        if name not in models.MODELS:
            raise MarginlabError(f"unknown model {name!r} (--model); expected one of "
                                 f"{', '.join(models.MODELS)}")
        if args.widths is not None and name not in ("mlp", "two_layer"):
            raise MarginlabError(f"--widths applies to mlp and two_layer, not {name}")
        if name == "mlp":
            kwargs.update(in_dim=args.in_dim, widths=args.widths or [100, 100])
        elif name == "two_layer":
            widths = validate.widths(args.widths or [100], "--widths (two_layer)", count=1)
            kwargs.update(d=args.in_dim, m=widths[0])
        elif name == "wrn16":
            if args.bias != "none":
                raise MarginlabError("wrn16 is built without biases; use --bias none")
            kwargs.pop("bias")
        model = models.build(name, **kwargs)
    if name in INPUT_SHAPES:
        shape = INPUT_SHAPES[name]
        shape = (kwargs.get("in_channels", shape[0]), *shape[1:])
    else:
        shape = (kwargs.get("in_dim") or kwargs.get("d"),)
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
