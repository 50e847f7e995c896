"""Wei, Lee, Liu & Ma, Appendix F.4 (Table 1): annealing the weight decay vs keeping it fixed.

Both arms train with SGD on the mean cross-entropy plus λ(t)‖θ‖² (marginlab.train.fit with a
:class:`~marginlab.train.WeightDecay`) under the same step learning-rate schedule
(:class:`~marginlab.train.ConstantLR` with milestones); the annealed arm multiplies λ by the
paper's factors at its milestones, the fixed arm keeps λ at its initial value. Paper
(WideResNet-16 without batch-norm, 200 epochs, lr 0.1 ×0.2 at epochs 60, 120 and 160), each data
set with its own weight decay: CIFAR-10 λ = 2e-4, ×0.2 at epoch 60 and ×0.5 at 90, 120, 140 and
160, test error 5.86% annealed vs 6.01% fixed; CIFAR-100 λ = 5e-4, ×0.2 at 60, 120 and 160,
26.22% vs 27.00%.

The ``paper`` scale runs both data sets (setting ``data`` = ``cifar10+cifar100``; one of them with
``--set data=cifar100``); its ``weight_decay`` and ``wd_milestones`` are None, meaning each data
set's values from Appendix F.4 (:data:`PAPER_WEIGHT_DECAY`); numbers set by the user apply to
every data set of the run.

The paper chose the initial λ that worked best for the model *without* annealing and annealed
from it. When ``lambda_grid`` is non-empty the run does the same: the fixed arm is trained on
the training set minus ``validation`` held-out images at every λ of the grid
(``selection_seeds`` seeds each), the λ with the lowest mean validation error is kept, and
both arms are then trained with it on the whole training set. The claim is the paired
difference of test errors (fixed − annealed) over seeds, with its standard error.

The ``cpu`` scale is a substitute, not the paper's experiment: the same two arms on the
bundled MNIST subset with a small bias-free MLP for a few epochs, every milestone moved to the
same fraction of the shorter run. Milestones are lists of ``[epoch, factor]`` pairs, given in
the epochs of a ``milestone_epochs``-epoch run.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from marginlab import data
from marginlab.claims import write_claims
from marginlab.errors import MarginlabError
from marginlab.experiments import Experiment, RunRequest, register
from marginlab.experiments.runs import prepare_output
from marginlab.experiments.wei_common import raise_failures, run_trials
from marginlab.experiments.wei_wd_anneal_report import (
    PAPER_NAMES,
    PAPER_TABLE,
    paired_differences,
    plot_wd_anneal,
    wd_claim,
    write_report,
)
from marginlab.experiments.wei_wd_anneal_schedules import (
    ARMS,
    PAPER_LR_MILESTONES,
    PAPER_WD_MILESTONES,
    PAPER_WD_MILESTONES_CIFAR100,
    PAPER_WEIGHT_DECAY,
    cumulative_decay,
    paper_cumulative_decay,
    scale_milestones,
)
from marginlab.experiments.wei_wd_anneal_trial import (
    data_sets,
    held_out_split,
    resolve,
    train_spec,
    wd_anneal_trial,
)
from marginlab.io import storage
from marginlab.train.rundir import RunDir

# The schedules, the trial and the report are in wei_wd_anneal_schedules, _trial and _report;
# their public names are re-exported here.
__all__ = ["ARMS", "PAPER_LR_MILESTONES", "PAPER_NAMES", "PAPER_TABLE", "PAPER_WD_MILESTONES",
           "PAPER_WD_MILESTONES_CIFAR100", "PAPER_WEIGHT_DECAY", "cumulative_decay", "data_sets",
           "held_out_split", "paper_cumulative_decay", "resolve", "run_wd_anneal",
           "scale_milestones", "train_spec", "wd_anneal_trial", "wd_claim"]

FILE_DATA = ("mnist", "cifar10", "cifar100")  # data sets read from files under --root


def _check_data(names: Sequence[str], root: Path | None) -> None:
    """Read each file-based data set once before anything trains, so that a missing or corrupt
    file is one error now rather than a failure of every trial."""
    for name in names:
        if name in FILE_DATA:
            if root is None:
                raise MarginlabError(f"data {name!r} is read from files: pass --root DIR")
            data.load(name, root, n_train=1, n_test=1)


def _grid(settings: Mapping) -> list[float]:
    grid = [float(v) for v in settings.get("lambda_grid") or []]
    if any(not v > 0 for v in grid):
        raise MarginlabError(f"lambda_grid must hold numbers > 0, got {grid}")
    if grid and settings["weight_decay"] is not None:
        raise MarginlabError("set either lambda_grid (λ chosen on a validation split) or "
                             "weight_decay, not both")
    return grid


def run_wd_anneal(request: RunRequest) -> Path:
    """Choose the fixed arm's λ on held-out data (when ``lambda_grid`` is set), then both arms ×
    ``trials`` seeds on each data set; claims, figures and report."""
    s = request.settings
    names = data_sets(s)
    grid = _grid(s)
    per_data = {d: resolve({**s, "data": d, "weight_decay": grid[0] if grid
                            else s["weight_decay"]}) for d in names}
    _check_data(names, request.root)
    out = prepare_output(request, "wei-wd-anneal")
    start = time.perf_counter()
    common = {"device": request.device,
              "root": None if request.root is None else str(request.root)}
    selection: dict[str, list] = {}
    if grid:
        points = []
        for d in names:
            for lam in grid:
                for k in range(s["selection_seeds"]):
                    seed = request.seed + 1000 + k
                    points.append(({"data": d, "stage": "select", "weight_decay": lam,
                                    "weight_decay_schedule": "fixed", "seed": seed},
                                   {**per_data[d], **common, "stage": "select",
                                    "weight_decay": lam, "weight_decay_schedule": "fixed",
                                    "seed": seed}))
        sel = run_trials(out, wd_anneal_trial, points, workers=s["workers"],
                         resume=request.resume, desc="wei-wd-anneal λ selection")
        raise_failures(sel, out)
        for d in names:
            rows = []
            for lam in grid:
                errs = [r.result["test_error"] for r in sel
                        if r.params["data"] == d and r.params["weight_decay"] == lam]
                train = [r.result["train_error"] for r in sel
                         if r.params["data"] == d and r.params["weight_decay"] == lam]
                rows.append((lam, float(np.mean(errs)), float(np.mean(train)), len(errs)))
            selection[d] = rows
            best = min(rows, key=lambda row: row[1])[0]
            per_data[d] = {**per_data[d], "weight_decay": best}
    points = []
    for d in names:
        base = {**per_data[d], **common}
        for k in range(s["trials"]):
            seed = request.seed + k
            for arm in ARMS:
                run_dir = out / "runs" / f"{d}-{arm}-seed{seed}"
                points.append(({"data": d, "weight_decay_schedule": arm, "seed": seed},
                               {**base, "weight_decay_schedule": arm, "seed": seed,
                                "run_dir": str(run_dir)}))
    records = run_trials(out, wd_anneal_trial, points, workers=s["workers"],
                         resume=request.resume, desc="wei-wd-anneal")
    wall = time.perf_counter() - start
    curves = {d: {arm: [storage.read_jsonl(RunDir(st["run_dir"]).metrics_path)
                        for p, st in points
                        if p["data"] == d and p["weight_decay_schedule"] == arm]
                  for arm in ARMS} for d in names}
    plot_wd_anneal(curves, per_data, out / "plots")
    ok = [r for r in records if r.ok]
    write_claims(out, "wei-wd-anneal", [wd_claim(request.scale, d, per_data[d],
                                                  paired_differences(ok, d)) for d in names])
    page = write_report(request, out, per_data, records, selection, wall)
    raise_failures(records, out)
    return page


SCALES = {
    "cpu": {
        "weight_decay_schedule": "annealed", "trials": 10, "model": "mlp", "bias": "none",
        "widths": [256, 256], "width": 1.0, "data": "mnist5k", "n_train": 2000, "n_test": 1000,
        "epochs": 40, "milestone_epochs": 200, "batch_size": 100, "lr": 0.1,
        "lr_milestones": PAPER_LR_MILESTONES, "weight_decay": None,
        # The fixed arm's initial λ, chosen on held-out images: two decades around the value
        # whose total shrinkage Σ 2ηλ over this 800-step run is the paper's (2e-2).
        "lambda_grid": [2e-4, 1e-3, 5e-3, 2e-2], "validation": 500, "selection_seeds": 2,
        "wd_milestones": PAPER_WD_MILESTONES, "margin_convention": "homogeneous",
        "checkpoint_every": 5, "workers": 2,
    },
    "paper": {
        "weight_decay_schedule": "annealed", "trials": 3, "model": "wrn16", "bias": "none",
        "widths": [], "width": 1.0, "data": "cifar10+cifar100", "n_train": None,
        "n_test": None, "epochs": 200, "milestone_epochs": 200, "batch_size": 128, "lr": 0.1,
        "lr_milestones": PAPER_LR_MILESTONES,
        # None: each data set's own initial λ and λ milestones (Appendix F.4).
        "weight_decay": None, "wd_milestones": None,
        # Empty: the paper's tuned values; a grid here selects λ on `validation` held-out images.
        "lambda_grid": [], "validation": 5000, "selection_seeds": 1,
        # WideResNet is not homogeneous; fit's margins are then only recorded, per layer group.
        "margin_convention": "paper_with_bias", "checkpoint_every": 5, "workers": 1,
    },
}

register(Experiment(
    id="wei-wd-anneal",
    title="Weight-decay annealing vs fixed weight decay",
    reference="Wei, Lee, Liu & Ma, Appendix F.4, Table 1",
    scales=SCALES,
    run=run_wd_anneal,
    trial=wd_anneal_trial,
    grid={"cpu": {"weight_decay_schedule": list(ARMS)},
          "paper": {"data": list(PAPER_WEIGHT_DECAY), "weight_decay_schedule": list(ARMS)}},
))
