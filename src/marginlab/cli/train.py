"""``marginlab train``: train a homogeneous network far past 100% accuracy."""

from __future__ import annotations

import argparse

from marginlab.cli import _options

NAME = "train"
HELP = "train a model with a constant or loss-based learning rate, recording margins"
ORDER = 20
PROGRESS = True


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model and data")
    g.add_argument("--model", default="mnist_cnn",
                   help="mnist_cnn (default), mlp, two_layer, vgg16, wrn16")
    g.add_argument("--bias", choices=("none", "first", "all"), default="none")
    g.add_argument("--widths", default=None,
                   help="hidden widths: mlp, comma-separated (default 100,100); two_layer, one "
                        "width (default 100)")
    g.add_argument("--width", type=float, default=1.0, help="mnist_cnn width multiplier")
    g.add_argument("--data", default="mnist5k",
                   help="mnist5k (default), digits, mnist, cifar10, cifar100")
    g.add_argument("--root", default=None, help="directory with the data files")
    g.add_argument("--n-train", type=int, default=None, help="class-balanced training subset")
    g.add_argument("--n-test", type=int, default=None, help="test subset")
    g = p.add_argument_group("optimization")
    g.add_argument("--schedule", default="loss_based",
                   help="loss_based (Lyu & Li L.1, default), loss_based_momentum (the same "
                        "line search with heavy-ball momentum and a smoothed-margin guard; "
                        "about 3-10x faster to a given margin, see benchmarks/RESULTS.md), "
                        "constant, or another registered schedule")
    g.add_argument("--lr", type=float, default=0.01, help="constant learning rate")
    g.add_argument("--alpha0", type=float, default=0.1,
                   help="loss-based schedules: initial alpha, the step relative to the loss "
                        "(eta = alpha / mean loss; dimensionless)")
    g.add_argument("--up", type=float, default=None,
                   help="loss-based schedules: factor on alpha after a kept epoch (default "
                        "2^(1/5), or 2^(1/10) with momentum)")
    g.add_argument("--down", type=float, default=None,
                   help="loss-based schedules: divisor on alpha after a rolled-back epoch "
                        "(default 2^(1/10), or 2 with momentum)")
    g.add_argument("--momentum", type=float, default=None,
                   help="loss_based_momentum: heavy-ball coefficient in [0, 1) (default 0.9)")
    g.add_argument("--active-gap", default=None,
                   help="loss_based_momentum: SGD steps skip samples whose loss is below "
                        "e^-GAP times the total (GAP in nats, default 30), or 'none' to use "
                        "every sample")
    g.add_argument("--no-margin-guard", action="store_true",
                   help="loss_based_momentum: keep epochs that lower the smoothed margin")
    g.add_argument("--batch-size", default="100", help="mini-batch size, or 'full' for GD")
    g.add_argument("--loss", default="cross_entropy",
                   help="cross_entropy (default), logistic, exponential")
    g.add_argument("--weight-decay", type=float, default=0.0, help="lambda of lambda*|theta|^r")
    g.add_argument("--weight-decay-power", type=float, default=2.0, help="r")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="cpu", help="torch device: cpu (default), cuda, cuda:N "
                   "or mps")
    g = p.add_argument_group("budget and output")
    g.add_argument("--epochs", type=int, default=None,
                   help="accepted epochs in total (default: 100; with --resume: the run's own)")
    g.add_argument("--max-time", type=float, default=None, help="wall-clock budget (seconds)")
    g.add_argument("--stop-at", type=float, default=None,
                   help="stop once log10 of the mean training loss is at or below this")
    g.add_argument("--convention", choices=("homogeneous", "paper_with_bias"), default=None,
                   help="margin norms; default: paper_with_bias for --bias all, else homogeneous")
    g.add_argument("--checkpoint-every", type=int, default=1)
    g.add_argument("--trajectory-every", type=int, default=None,
                   help="save parameters every K epochs (for `marginlab analyze`)")
    g.add_argument("--out", required=True, help="run directory")
    g.add_argument("--resume", action="store_true", help="continue the run in --out")
    g.add_argument("--overwrite", action="store_true", help="replace a different run in --out")
    g.add_argument("--threads", type=_options.threads, default=None,
                   help="torch threads, at least 1 (default: torch's)")


def schedule_config(args: argparse.Namespace) -> dict:
    from marginlab.errors import MarginlabError
    from marginlab.train import SCHEDULES

    fast_only = {"--momentum": args.momentum, "--active-gap": args.active_gap,
                 "--no-margin-guard": args.no_margin_guard or None}
    if args.schedule != "loss_based_momentum":
        given = [flag for flag, value in fast_only.items() if value is not None]
        if given:
            raise MarginlabError(f"{', '.join(given)} applies only to --schedule "
                                 "loss_based_momentum")
    if args.schedule == "constant":
        return {"name": "constant", "lr": args.lr}
    if args.schedule == "loss_based":
        return {"name": "loss_based", "alpha0": args.alpha0,
                "up": 2 ** (1 / 5) if args.up is None else args.up,
                "down": 2 ** (1 / 10) if args.down is None else args.down}
    if args.schedule == "loss_based_momentum":
        config = {"name": args.schedule, "alpha0": args.alpha0}
        if args.up is not None:
            config["up"] = args.up
        if args.down is not None:
            config["down"] = args.down
        if args.momentum is not None:
            config["momentum"] = args.momentum
        if args.active_gap is not None:
            config["active_gap"] = _gap(args.active_gap)
        if args.no_margin_guard:
            config["monotone_margin"] = False
        return config
    if args.schedule in SCHEDULES:
        return {"name": args.schedule}
    raise MarginlabError(f"unknown schedule {args.schedule!r}; expected {', '.join(SCHEDULES)}")


def _gap(text: str) -> float | None:
    from marginlab.errors import MarginlabError

    if text.strip().lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise MarginlabError(f"--active-gap must be a number of nats or 'none', got "
                             f"{text!r}") from None


DEFAULT_WIDTHS = {"mlp": [100, 100], "two_layer": [100]}


def _widths(args: argparse.Namespace) -> list[int]:
    from marginlab.validate import int_list

    if args.widths is None:
        return list(DEFAULT_WIDTHS.get(args.model, [100, 100]))
    return int_list(args.widths, "--widths", minimum=1)


def spec_from_args(args: argparse.Namespace):
    from marginlab.errors import MarginlabError
    from marginlab.train.spec import TrainSpec

    if args.batch_size == "full":
        batch_size = None
    else:
        try:
            batch_size = int(args.batch_size)
        except ValueError:
            raise MarginlabError(f"--batch-size must be an integer or 'full', got "
                                 f"{args.batch_size!r}") from None
    convention = args.convention or ("paper_with_bias" if args.bias == "all" else "homogeneous")
    return check_spec(TrainSpec(
        model=args.model, bias=args.bias, widths=_widths(args), width=args.width,
        data=args.data, root=args.root, n_train=args.n_train, n_test=args.n_test,
        schedule=schedule_config(args), epochs=100 if args.epochs is None else args.epochs,
        batch_size=batch_size,
        loss=args.loss, weight_decay=args.weight_decay,
        weight_decay_power=args.weight_decay_power, seed=args.seed, device=args.device,
        max_time=args.max_time, stop_at_log10_loss=args.stop_at, margin_convention=convention,
        checkpoint_every=args.checkpoint_every, trajectory_every=args.trajectory_every,
    ))


# TrainSpec field -> the option that sets it, for messages
OPTION = {"widths": "--widths", "width": "--width", "n_train": "--n-train",
          "n_test": "--n-test", "epochs": "--epochs", "batch_size": "--batch-size",
          "weight_decay": "--weight-decay", "weight_decay_power": "--weight-decay-power",
          "seed": "--seed", "device": "--device", "max_time": "--max-time",
          "stop_at_log10_loss": "--stop-at", "checkpoint_every": "--checkpoint-every",
          "trajectory_every": "--trajectory-every", "model": "--model", "data": "--data",
          "loss": "--loss", "root": "--root", "bias": "--bias"}


def check_spec(spec):
    """The command line's settings (or a resumed run's saved ones) checked before anything is
    written: each field once, with one-line errors naming its option. The data set checks
    n_train and n_test against its own size when it loads."""
    from marginlab import data, models, validate
    from marginlab.core.losses import LOSS_NAMES
    from marginlab.errors import MarginlabError

    o = OPTION
    if spec.model not in models.MODELS:
        raise MarginlabError(f"unknown model {spec.model!r} (--model); expected one of "
                             f"{', '.join(models.MODELS)}")
    if spec.bias not in models.BIAS_MODES:
        raise MarginlabError(f"--bias must be one of {', '.join(models.BIAS_MODES)}, got "
                             f"{spec.bias!r}")
    if spec.model in ("mlp", "two_layer"):
        count = 1 if spec.model == "two_layer" else None
        spec.widths = validate.widths(spec.widths, o["widths"] + f" ({spec.model})",
                                      count=count)
    if spec.model in ("mnist_cnn", "vgg16"):
        spec.width = validate.number(spec.width, o["width"], positive=True)
    data.options(spec.data)  # a known data set
    if spec.root is not None and not isinstance(spec.root, str):
        raise MarginlabError(f"--root must be a directory path, got {spec.root!r}")
    spec.n_train = validate.optional_integer(spec.n_train, o["n_train"], minimum=1)
    spec.n_test = validate.optional_integer(spec.n_test, o["n_test"], minimum=1)
    if not isinstance(spec.schedule, dict) or not isinstance(spec.schedule.get("name"), str):
        raise MarginlabError(f"the schedule must be a dict with a name, got {spec.schedule!r}")
    spec.epochs = validate.integer(spec.epochs, o["epochs"], minimum=1)
    spec.batch_size = validate.optional_integer(spec.batch_size, o["batch_size"], minimum=1)
    if spec.loss not in LOSS_NAMES:
        raise MarginlabError(f"unknown loss {spec.loss!r} (--loss); expected one of "
                             f"{', '.join(LOSS_NAMES)}")
    spec.weight_decay = validate.number(spec.weight_decay, o["weight_decay"], minimum=0)
    spec.weight_decay_power = validate.number(spec.weight_decay_power,
                                              o["weight_decay_power"], positive=True)
    spec.seed = validate.integer(spec.seed, o["seed"], minimum=0, maximum=2**63 - 1)
    spec.device = validate.device(spec.device, o["device"])
    spec.max_time = validate.optional_number(spec.max_time, o["max_time"], positive=True)
    spec.stop_at_log10_loss = validate.optional_number(spec.stop_at_log10_loss,
                                                       o["stop_at_log10_loss"])
    spec.checkpoint_every = validate.integer(spec.checkpoint_every, o["checkpoint_every"],
                                             minimum=1)
    spec.trajectory_every = validate.optional_integer(spec.trajectory_every,
                                                      o["trajectory_every"], minimum=1)
    if spec.margin_convention not in ("homogeneous", "paper_with_bias"):
        raise MarginlabError(f"--convention must be homogeneous or paper_with_bias, got "
                             f"{spec.margin_convention!r}")
    return spec


def _saved_spec(config_path) -> dict | None:
    """The spec a run directory saved in its config.json (None if it saved none)."""
    from marginlab.errors import RunDirectoryError
    from marginlab.io.storage import read_json_object

    saved = read_json_object(config_path).get("spec")
    if saved is not None and not isinstance(saved, dict):
        raise RunDirectoryError(f"{config_path}: 'spec' must be an object, got "
                                f"{type(saved).__name__}")
    return saved


# What --resume may change; every other option must match the saved run (or be left out).
RESUMABLE = ("epochs", "max_time", "stop_at_log10_loss")


def _refuse_conflicts(args: argparse.Namespace, spec, saved: dict) -> None:
    """Refuse options given with --resume that differ from the saved run's settings."""
    from marginlab.cli import build_parser
    from marginlab.errors import MarginlabError

    defaults = spec_from_args(build_parser().parse_args([NAME, "--out", args.out])).to_dict()
    for key, value in spec.to_dict().items():
        if key in RESUMABLE or key not in saved or value == defaults.get(key):
            continue  # a budget, or an option left at its default
        if value != saved[key]:
            raise MarginlabError(
                f"--resume continues the run in {args.out} with its own settings, but the "
                f"command line gives {key}={value!r} where the run has {saved[key]!r}; only "
                "--epochs, --max-time and --stop-at may change (or use --overwrite)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from marginlab import run_report as report
    from marginlab import validate
    from marginlab.errors import MarginlabError
    from marginlab.io import plots
    from marginlab.train.rundir import RunDir
    from marginlab.train.spec import TrainSpec, run_training

    spec = spec_from_args(args)
    validate.output_dir(args.out, "--out")
    out = Path(args.out)
    if args.resume and RunDir(out).config_path.exists():
        saved = _saved_spec(RunDir(out).config_path)
        if saved:  # the run's own settings; a budget given on this command line replaces its
            given = {"epochs": args.epochs, "max_time": args.max_time,
                     "stop_at_log10_loss": args.stop_at}
            budget = {k: v for k, v in given.items() if v is not None}
            try:
                resumed = TrainSpec.from_dict({**saved, **budget})
            except TypeError as exc:
                raise MarginlabError(f"{RunDir(out).config_path}: bad spec ({exc})") from None
            resumed = check_spec(resumed)  # the saved file is input too
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
