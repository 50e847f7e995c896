"""``marginlab margin CHECKPOINT --data NAME``: margin statistics of a saved model."""

from __future__ import annotations

import argparse
import json

from marginlab.cli import _options

NAME = "margin"
HELP = "print the margin statistics (MarginStats) of a saved model on a data set"
ORDER = 10


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a .safetensors checkpoint written by marginlab")
    p.add_argument("--data", required=True, help="data set: mnist5k, digits, mnist, cifar10")
    p.add_argument("--root", default=None, help="directory with the data files (mnist, cifar10)")
    p.add_argument("--split", choices=("train", "test"), default="train")
    p.add_argument("--n", type=_options.integer(minimum=1), default=None,
                   help="class-balanced subset size")
    p.add_argument("--loss", default="cross_entropy",
                   help="cross_entropy (default), logistic or exponential")
    p.add_argument("--convention", choices=("homogeneous", "paper_with_bias"),
                   default="homogeneous",
                   help="paper_with_bias: Lyu & Li's norms for models with biases")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from marginlab import data, models
    from marginlab.core import margins
    from marginlab.io.storage import to_jsonable

    model = models.load(args.checkpoint).eval()
    kw = {"n_train": args.n} if args.split == "train" else {"n_test": args.n}
    split = data.load(args.data, args.root, **kw)
    X, y = split.train if args.split == "train" else split.test
    stats = margins.measure(model, X, y, loss=args.loss, convention=args.convention)
    if args.json:
        print(json.dumps(to_jsonable(stats.as_dict()), indent=2))  # inf/NaN as strings
    else:
        for key, value in stats.as_dict().items():
            print(f"{key:24s} {value:.6g}" if isinstance(value, float) else f"{key:24s} {value}")
    return 0
