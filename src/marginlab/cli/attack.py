"""``marginlab attack RUN_DIR``: L2 robustness of a run's snapshots (Lyu & Li, Appendix K.2).

Attacks and certifies N class-balanced points of the run's own training (or test) subset with
every snapshot, and writes RUN_DIR/robustness.json, RUN_DIR/plots/robustness.png (Figure 8)
and the report fragments RUN_DIR/report/robustness.{html,md} (Table 1 and a summary). Results
for the other split, if already in robustness.json, are kept, so running once with
``--split train`` and once with ``--split test`` gives both rows of Figure 8.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import math
import shlex
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from marginlab.cli import _options

NAME = "attack"
HELP = "L2 robustness (attack upper and certified lower bounds) of a run's snapshots"
ORDER = 40
PROGRESS = True
DEFAULT_SNAPSHOTS = ("model-1", "model-2", "model-3", "model-4", "model-5")
FORMAT = "marginlab-robustness/1"
DEFAULT_N = 100


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a run directory written by the trainer")
    p.add_argument("--snapshots", default=None,
                   help="comma-separated snapshot names (default: those of model-1..model-5 "
                        "present in RUN_DIR/snapshots)")
    p.add_argument("--split", choices=("train", "test", "both"), default="train")
    p.add_argument("--n", type=_options.integer(minimum=1), default=None,
                   help="points to evaluate per split, class-balanced (default 100, or the "
                        "whole split when it is smaller)")
    p.add_argument("--method", choices=("fast", "cw"), default="fast",
                   help="fast: DDN and corrected FMN, bisected (default); cw: Carlini-Wagner L2 "
                        "with the paper's settings")
    p.add_argument("--steps", type=_options.integer(minimum=1), default=None,
                   help="attack iterations (fast: 100; cw: 10000 per binary-search step)")
    p.add_argument("--batch-size", type=_options.integer(minimum=1), default=100,
                   help="points per attack batch")
    p.add_argument("--certificates", default="global,row,local",
                   help="certified bounds to compute (subset of global,row,local)")
    p.add_argument("--bounds", default="0,1",
                   help="data domain LOWER,UPPER of every input coordinate (default 0,1)")
    p.add_argument("--seed", type=_options.integer(minimum=0), default=0)


def _parse_bounds(text: str) -> tuple[float, float]:
    from marginlab.errors import MarginlabError

    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise MarginlabError(f"--bounds must be LOWER,UPPER, got {text!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise MarginlabError(f"--bounds must be finite with LOWER < UPPER, got {text!r}")
    return lo, hi


def _certificates(text: str) -> tuple[str, ...]:
    from marginlab.errors import MarginlabError
    from marginlab.robustness.certify import CERTIFICATES

    chosen = tuple(c.strip() for c in text.split(",") if c.strip())
    unknown = [c for c in chosen if c not in CERTIFICATES]
    if unknown:
        raise MarginlabError(f"--certificates takes a subset of {','.join(CERTIFICATES)}, got "
                             f"{unknown[0]!r}")
    return chosen


def balanced_subset(y: torch.Tensor, n: int) -> np.ndarray:
    """Indices of n points taking classes in turn (first unused point of each class), sorted.

    One-output (binary) labels are balanced over their two values the same way.
    """
    labels = y.cpu().numpy()
    if n >= len(labels):
        return np.arange(len(labels))
    queues = [list(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    out: list[int] = []
    while len(out) < n:
        for q in queues:
            if q and len(out) < n:
                out.append(int(q.pop(0)))
    return np.sort(np.asarray(out))


def _snapshot_paths(run_dir: Path, names: str | None) -> dict[str, Path]:
    from marginlab.errors import RunDirectoryError
    from marginlab.train.rundir import RunDir

    folder = RunDir(run_dir).snapshots_dir
    present = sorted(p.stem for p in folder.glob("*.safetensors")) if folder.is_dir() else []
    if names is None:
        chosen = [s for s in DEFAULT_SNAPSHOTS if s in present]
        if not chosen:
            raise RunDirectoryError(f"no snapshots model-1..model-5 in {folder}")
    else:
        chosen = [s.strip().removesuffix(".safetensors") for s in names.split(",") if s.strip()]
        if not chosen:
            raise RunDirectoryError("--snapshots names no snapshot")
        missing = [s for s in chosen if s not in present]
        if missing:
            raise RunDirectoryError(
                f"no snapshot {missing[0]} in {folder} (found: {', '.join(present) or 'none'})")
    return {s: folder / f"{s}.safetensors" for s in chosen}


def _load_split(run_dir: Path):
    from marginlab import data
    from marginlab.errors import MarginlabError, RunDirectoryError
    from marginlab.io.storage import read_json_object
    from marginlab.train.rundir import RunDir

    config_path = RunDir(run_dir).config_path
    if not config_path.exists():
        raise RunDirectoryError(f"{run_dir} is not a run directory (no config.json)")
    config = read_json_object(config_path)
    spec = config.get("data")
    if not isinstance(spec, dict) or "name" not in spec:
        raise RunDirectoryError(f"{config_path} has no data entry with a name")
    # options of synthetic data sets, if the run recorded them
    extra = {k: v for k, v in spec.items() if k not in ("name", "root", "n_train", "n_test")}
    options = getattr(data, "options", None)
    if options is not None and extra:
        try:
            allowed = set(options(spec["name"]))
        except MarginlabError:
            allowed = set()
        extra = {k: v for k, v in extra.items() if k in allowed}
    try:
        return data.load(spec["name"], spec.get("root"), n_train=spec.get("n_train"),
                         n_test=spec.get("n_test"), **extra), config
    except MarginlabError as exc:
        raise RunDirectoryError(f"cannot load the run's data: {exc}") from None


def run(args: argparse.Namespace) -> int:
    from marginlab import models, validate
    from marginlab.errors import MarginlabError, RunDirectoryError
    from marginlab.io.storage import read_json_object, write_json
    from marginlab.robustness import evaluate
    from marginlab.robustness.report import write_report
    from marginlab.train.rundir import RunDir

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise RunDirectoryError(f"no run directory at {run_dir}")
    certificates = _certificates(args.certificates)
    bounds = _parse_bounds(args.bounds)
    paths = _snapshot_paths(run_dir, args.snapshots)
    out_path = RunDir(run_dir).robustness_path
    validate.output_file(out_path, "RUN_DIR")
    split_data, config = _load_split(run_dir)
    dtype = getattr(torch, str(config.get("dtype", "float32")), None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        dtype = torch.float32
    splits = ("train", "test") if args.split == "both" else (args.split,)
    doc = read_json_object(out_path) if out_path.exists() else {}
    if doc and not str(doc.get("format", "")).startswith("marginlab-robustness/"):
        raise RunDirectoryError(f"{out_path} is not a marginlab robustness file; move it away")
    if doc.get("format") != FORMAT or not isinstance(doc.get("splits"), dict):
        doc = {"format": FORMAT, "splits": {}}
    for split in splits:  # every split checked before the first is attacked and written
        available = (split_data.train if split == "train" else split_data.test)[0].shape[0]
        if args.n is not None and args.n > available:
            raise MarginlabError(f"--n {args.n} exceeds the {available} points of the run's "
                                 f"{split} set")
    command = "marginlab " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    for split in splits:
        X, y = split_data.train if split == "train" else split_data.test
        idx = balanced_subset(y, DEFAULT_N if args.n is None else args.n)
        Xs, ys = X[torch.from_numpy(idx)], y[torch.from_numpy(idx)]
        entry = {"method": args.method, "steps": None, "n": len(idx),
                 "indices": idx.tolist(), "bounds": list(bounds), "certificates": certificates,
                 "command": command, "date": _dt.datetime.now().isoformat(timespec="seconds"),
                 "snapshots": {}}
        for name, path in paths.items():
            model = models.load(path).to(dtype).eval()
            meta = models.metadata(path).get("extra", {})
            res = evaluate(model, Xs, ys, args.method, steps=args.steps,
                           bounds=bounds, certificates=certificates,
                           batch_size=args.batch_size,
                           seed=args.seed, desc=f"attack {split} {name}")
            entry["steps"] = res.steps
            layers = [asdict(f) for f in res.lipschitz.layers] if res.lipschitz else []
            entry["snapshots"][name] = {"meta": meta, "summary": res.summary(),
                                        "points": res.as_dict(), "lipschitz": layers}
            s = res.summary()
            print(f"{split:5s} {name}: accuracy {s['accuracy']:.1%}, median upper "
                  f"{s['median_upper']:.4g}, median certified lower {s['median_lower']:.4g}, "
                  f"attack failures {s['attack_failures']}, {s['attack_seconds']:.1f} s")
        doc["splits"][split] = entry
        write_json(out_path, doc)
    png, html_path, md_path = write_report(run_dir, doc)
    print(f"wrote {out_path}, {png}, {html_path}, {md_path}")
    from marginlab.train.rundir import RunDir

    if RunDir(run_dir).metrics_path.is_file():
        from marginlab.run_report import write_run_report

        print(f"report: {write_run_report(run_dir)}")
    return 0
