"""One trial of ``wei-wd-anneal`` (Wei et al., Appendix F.4, Table 1): one arm, one data set, one
seed, as a :class:`~marginlab.train.spec.TrainSpec` trained by :mod:`marginlab.train`.

The settings name one or several data sets (:func:`data_sets`); :func:`resolve` fills in a data
set's initial λ and λ milestones from Appendix F.4 where they are None. In the selection stage
(``stage`` = ``select``) the fixed arm trains on the training set minus ``validation`` held-out
images (:func:`held_out_split`), whose error stands in for the test error.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from marginlab import data
from marginlab.data.split import DataSplit
from marginlab.errors import MarginlabError
from marginlab.experiments.wei_wd_anneal_schedules import (
    ARMS,
    PAPER_WEIGHT_DECAY,
    cumulative_decay,
    scale_milestones,
    value_at,
)
from marginlab.train import fit
from marginlab.train.spec import TrainSpec, build_model, fit_config, run_training

__all__ = ["data_sets", "held_out_split", "resolve", "train_spec", "wd_anneal_trial"]


def data_sets(settings: Mapping) -> list[str]:
    """The data sets of a run: the names in ``settings["data"]`` joined by ``+`` (e.g.
    ``cifar10+cifar100``), each a name :func:`marginlab.data.load` knows."""
    value = settings["data"]
    names = [n.strip() for n in value.split("+")] if isinstance(value, str) else []
    if not names or not all(names) or len(set(names)) != len(names):
        raise MarginlabError(f"data must be one data set name or several joined by '+' "
                             f"(e.g. cifar10+cifar100), got {value!r}")
    for name in names:
        data.options(name)  # raises for an unknown name
    return names


def resolve(settings: Mapping) -> dict:
    """The settings of one data set's runs, with ``weight_decay`` and ``wd_milestones`` None
    replaced by that data set's values from Appendix F.4 (:data:`PAPER_WEIGHT_DECAY`)."""
    s = dict(settings)
    names = data_sets(s)
    if len(names) != 1:
        raise MarginlabError(f"a training run uses one data set, got data={s['data']!r}; run "
                             "the experiment, or sweep over 'data'")
    s["data"] = names[0]
    for key in ("weight_decay", "wd_milestones"):
        if s[key] is None:
            if names[0] not in PAPER_WEIGHT_DECAY:
                raise MarginlabError(
                    f"{key}=None stands for the paper's value, which Appendix F.4 gives only "
                    f"for {' and '.join(PAPER_WEIGHT_DECAY)}; set {key} for {names[0]}")
            s[key] = PAPER_WEIGHT_DECAY[names[0]][key]
    wd = s["weight_decay"]
    if isinstance(wd, bool) or not isinstance(wd, (int, float)) or not wd > 0:
        raise MarginlabError(f"weight_decay must be a number > 0, got {wd!r}")
    if not isinstance(s["wd_milestones"], (list, tuple)):
        raise MarginlabError(f"wd_milestones must be a list of [epoch, factor] pairs, got "
                             f"{s['wd_milestones']!r}")
    return s


def train_spec(settings: Mapping) -> dict:
    """The :class:`~marginlab.train.spec.TrainSpec` (as a dict) of one arm, data set and seed."""
    s = resolve(settings)
    if s["weight_decay_schedule"] not in ARMS:
        raise MarginlabError(f"weight_decay_schedule must be 'annealed' or 'fixed', got "
                             f"{s['weight_decay_schedule']!r}")
    lr_ms = scale_milestones(s["lr_milestones"], s["epochs"], s["milestone_epochs"])
    wd_ms = (scale_milestones(s["wd_milestones"], s["epochs"], s["milestone_epochs"])
             if s["weight_decay_schedule"] == "annealed" else {})
    return {
        "model": s["model"], "bias": s["bias"], "widths": list(s["widths"]),
        "width": s["width"], "data": s["data"], "root": s.get("root"),
        "n_train": s["n_train"], "n_test": s["n_test"],
        "schedule": {"name": "constant", "lr": s["lr"],
                     "milestones": {str(e): f for e, f in lr_ms.items()}},
        "epochs": s["epochs"], "batch_size": s["batch_size"], "loss": "cross_entropy",
        "weight_decay": s["weight_decay"], "weight_decay_power": 2.0,
        "weight_decay_milestones": {str(e): f for e, f in wd_ms.items()},
        "seed": int(s["seed"]), "device": s.get("device", "cpu"),
        "margin_convention": s["margin_convention"], "checkpoint_every": s["checkpoint_every"],
        "snapshots_at": [],
    }


def wd_anneal_trial(settings: Mapping) -> dict:
    """Train one arm (``weight_decay_schedule``: ``annealed`` or ``fixed``) on one data set
    (``data``) with one seed.

    Writes a run directory if ``settings["run_dir"]`` is given (and continues it if it holds
    an interrupted run). Returns the final test error, the epochs at which the recorded
    weight decay and learning rate changed, and whether every epoch's recorded values match
    the schedule.
    """
    spec = train_spec(settings)
    if settings.get("stage", "final") == "select":
        result = _train_held_out(TrainSpec.from_dict(spec), int(settings["validation"]),
                                 settings.get("run_dir"))
    else:
        result = run_training(TrainSpec.from_dict(spec), settings.get("run_dir"), resume=True,
                              progress=False)
    hist = result.history
    if not hist:
        raise MarginlabError("training ran no epoch")
    lr_ms = {int(k): v for k, v in spec["schedule"]["milestones"].items()}
    wd_ms = {int(k): v for k, v in spec["weight_decay_milestones"].items()}
    schedule_ok = all(
        math.isclose(h["lr"], value_at(spec["schedule"]["lr"], lr_ms, h["epoch"]),
                     rel_tol=1e-9)
        and math.isclose(h["weight_decay"], value_at(spec["weight_decay"], wd_ms, h["epoch"]),
                         rel_tol=1e-9)
        for h in hist)
    last = hist[-1]
    return {
        "test_error": 1.0 - last["test_acc"],
        "train_error": 1.0 - last["train_acc"],
        "min_test_error": 1.0 - max(h["test_acc"] for h in hist),
        "log10_loss_mean": last["log10_loss_mean"],
        "final_weight_decay": last["weight_decay"],
        "final_lr": last["lr"],
        "epochs": len(hist),
        "schedule_ok": schedule_ok,
        "cumulative_decay": cumulative_decay([h["lr"] for h in hist],
                                             [h["weight_decay"] for h in hist],
                                             [h["steps"] for h in hist]),
        "wd_changes": _changes(hist, "weight_decay"),
        "lr_changes": _changes(hist, "lr"),
        "wall_time": last["wall_time"],
    }


def held_out_split(split, validation: int):
    """The training set cut into (train, validation): ``validation`` images chosen by a fixed
    permutation (the same for every λ and seed), the rest for training; the test set is not
    touched. Returns a DataSplit whose "test" part is the validation set."""
    n = len(split.y_train)
    if not 0 < validation < n:
        raise MarginlabError(f"validation must be between 1 and {n - 1} (the training set "
                             f"has {n} images), got {validation}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(20190527))
    val, train = perm[:validation], perm[validation:]
    return DataSplit(split.X_train[train], split.y_train[train], split.X_train[val],
                     split.y_train[val], split.name, split.num_classes, split.task)


def _train_held_out(spec, validation: int, run_dir):
    """:func:`~marginlab.train.fit` of ``spec`` on the training set minus ``validation``
    held-out images, whose error is recorded as the "test" error of each epoch."""
    split = held_out_split(data.load(spec.data, spec.root, n_train=spec.n_train,
                                     n_test=1), validation)
    return fit(build_model(spec, split), split.train, split.test, fit_config(spec),
               run_dir=run_dir, resume=run_dir is not None, progress=False,
               extra_config={"spec": spec.to_dict(), "validation": validation})


def _changes(hist: Sequence[dict], key: str) -> list[list[float]]:
    """[epoch, value] at the first epoch and wherever the recorded value changed."""
    out, prev = [], None
    for h in hist:
        if prev is None or not math.isclose(h[key], prev, rel_tol=1e-12):
            out.append([h["epoch"], h[key]])
        prev = h[key]
    return out
