"""What a training run is asked to do: :class:`FitConfig`, validated when it is built.

A bad value is refused here, before any file is written, with a one-line
:class:`~marginlab.errors.MarginlabError` naming the field, the value and what is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from marginlab.core.losses import Loss, get_loss
from marginlab.errors import MarginlabError
from marginlab.train.checks import check_float, check_int, check_milestones
from marginlab.train.schedules import Schedule

__all__ = ["CONVENTIONS", "DEFAULT_SNAPSHOTS", "RESUMABLE_FIELDS", "FitConfig", "WeightDecay"]

DEFAULT_SNAPSHOTS = (1e-10, 1e-15, 1e-20, 1e-120)
CONVENTIONS = ("homogeneous", "paper_with_bias")

# Fields a resumed run may change: budgets and bookkeeping, which do not alter the numbers of
# the epochs already run. Every other field defines the run (see RunDir.IDENTITY_KEYS).
RESUMABLE_FIELDS = ("epochs", "max_time", "max_cpu_time", "stop_at_log10_loss",
                    "checkpoint_every", "trajectory_every", "max_retries", "device")


@dataclass(frozen=True)
class WeightDecay:
    """Penalty λ(t)·‖θ‖^power added to the mean loss; λ(t) = lam × Π factors of milestones ≤ t.

    Args:
        lam: λ at epoch 1.
        power: r in λ‖θ‖^r (Wei et al., Eq. (2.1)); 2 is ordinary weight decay.
        milestones: epoch -> factor, e.g. ``{60: 0.2, 90: 0.5}`` (Wei et al., Appendix F.4).
    """

    lam: float
    power: float = 2.0
    milestones: Mapping[int, float] = field(default_factory=dict)

    def __post_init__(self):
        if isinstance(self.lam, bool) or not isinstance(self.lam, (int, float)) or not (
                math.isfinite(self.lam) and self.lam >= 0):
            raise MarginlabError(f"weight decay must be >= 0, got {self.lam!r}")
        if isinstance(self.power, bool) or not isinstance(self.power, (int, float)) or not (
                math.isfinite(self.power) and self.power >= 1):
            raise MarginlabError(f"weight decay power must be >= 1, got {self.power!r}")
        object.__setattr__(self, "milestones",
                           check_milestones("weight decay milestones", self.milestones))

    def at(self, epoch: int) -> float:
        """λ(epoch)."""
        return self.lam * math.prod(f for e, f in self.milestones.items() if epoch >= e)

    def config(self) -> dict:
        return {"lam": self.lam, "power": self.power,
                "milestones": {str(k): v for k, v in self.milestones.items()}}


@dataclass(frozen=True)
class FitConfig:
    """How to train: schedule, batches, loss, penalty, recording and budgets.

    Attributes:
        schedule: a :class:`~marginlab.train.schedules.Schedule` (it also names the step rule).
        epochs: accepted epochs to run in total, counting a resumed run's (≥ 1).
        batch_size: mini-batch size (paper: 100); ``None`` for full-batch gradient descent.
        loss: ``cross_entropy`` (logistic for one output), ``logistic``, ``exponential`` or an
            ExpTailLoss.
        weight_decay: a :class:`WeightDecay`, a plain λ (power 2), or None.
        snapshots_at: mean-loss thresholds (e.g. 1e-10, not log10): the model is saved the first
            epoch whose mean training loss is below each (model-1, ...), and at the end.
        seed: seeds the shuffling.
        device: torch device for training.
        max_time: wall-clock budget in seconds, checked between epochs (None: none).
        max_cpu_time: CPU-time budget of this process in seconds (``time.process_time``).
        stop_at_log10_loss: stop once log10 of the mean training loss is at or below this.
        margin_convention: ``homogeneous`` or ``paper_with_bias`` (see margins.measure).
        checkpoint_every: epochs between resume checkpoints.
        trajectory_every: save the parameters every this many epochs (None: never).
        eval_batch_size: largest chunk of the end-of-epoch evaluation's forward passes.
        max_retries: diverged (NaN/inf) attempts at one epoch before giving up. Finite epochs
            that a schedule rolls back are bounded by the schedule itself.
    """

    schedule: Schedule
    epochs: int
    batch_size: int | None = 100
    loss: str | Loss = "cross_entropy"
    weight_decay: WeightDecay | float | None = None
    snapshots_at: Sequence[float] = DEFAULT_SNAPSHOTS
    seed: int = 0
    device: str = "cpu"
    max_time: float | None = None
    max_cpu_time: float | None = None
    stop_at_log10_loss: float | None = None
    margin_convention: str = "homogeneous"
    checkpoint_every: int = 1
    trajectory_every: int | None = None
    eval_batch_size: int = 1000
    max_retries: int = 200

    def __post_init__(self):
        put = object.__setattr__
        if not isinstance(self.schedule, Schedule):
            raise MarginlabError(f"schedule must be a Schedule object, got {self.schedule!r}")
        put(self, "epochs", check_int("epochs", self.epochs, 1))
        put(self, "batch_size", check_int("batch_size", self.batch_size, 1, none_ok=True))
        get_loss(self.loss)  # unknown names are refused here
        wd = self.weight_decay
        if wd is not None and not isinstance(wd, WeightDecay):
            lam = check_float("weight decay", wd)
            wd = WeightDecay(lam) if lam else None
        elif isinstance(wd, WeightDecay) and wd.lam == 0 and not wd.milestones:
            wd = None
        put(self, "weight_decay", wd)
        if isinstance(self.snapshots_at, (str, bytes)) or not isinstance(self.snapshots_at,
                                                                         Sequence):
            raise MarginlabError(f"snapshots_at must be a list of mean-loss thresholds, got "
                                 f"{self.snapshots_at!r}")
        put(self, "snapshots_at", tuple(sorted(
            (check_float("snapshot threshold (a mean loss, e.g. 1e-10)", t, positive=True)
             for t in self.snapshots_at), reverse=True)))
        put(self, "seed", check_int("seed", self.seed, 0))
        if not isinstance(self.device, str):
            raise MarginlabError(f"device must be a string such as 'cpu', got {self.device!r}")
        try:
            torch.device(self.device)
        except (RuntimeError, ValueError):
            raise MarginlabError(f"unknown device {self.device!r}; e.g. cpu or cuda") from None
        for name in ("max_time", "max_cpu_time"):
            put(self, name, check_float(name, getattr(self, name), positive=True, none_ok=True))
        put(self, "stop_at_log10_loss",
            check_float("stop_at_log10_loss", self.stop_at_log10_loss, none_ok=True))
        if self.margin_convention not in CONVENTIONS:
            raise MarginlabError(f"margin_convention must be one of {', '.join(CONVENTIONS)}, "
                                 f"got {self.margin_convention!r}")
        put(self, "checkpoint_every", check_int("checkpoint_every", self.checkpoint_every, 1))
        put(self, "trajectory_every",
            check_int("trajectory_every", self.trajectory_every, 1, none_ok=True))
        put(self, "eval_batch_size", check_int("eval_batch_size", self.eval_batch_size, 1))
        put(self, "max_retries", check_int("max_retries", self.max_retries, 1))

    @classmethod
    def from_keywords(cls, settings: Mapping[str, Any]) -> FitConfig:
        """The config from ``fit``'s keyword form; unknown keywords are refused."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(settings) - names)
        if unknown:
            raise MarginlabError(f"unknown training setting(s): {', '.join(unknown)}; expected "
                                 f"some of {', '.join(sorted(names))}")
        missing = [n for n in ("schedule", "epochs") if n not in settings]
        if missing:
            raise MarginlabError(f"fit needs {' and '.join(missing)}")
        return cls(**settings)

    @property
    def loss_fn(self) -> Loss:
        return get_loss(self.loss)

    def record(self) -> dict:
        """The JSON-able fields written to a run's ``config.json``."""
        wd = self.weight_decay
        return {"schedule": self.schedule.config(),
                "loss": self.loss if isinstance(self.loss, str) else self.loss_fn.name,
                "batch_size": self.batch_size, "seed": self.seed,
                "weight_decay": None if wd is None else wd.config(),
                "snapshots_at": list(self.snapshots_at),
                "margin_convention": self.margin_convention, "epochs": self.epochs,
                "max_time": self.max_time, "max_cpu_time": self.max_cpu_time,
                "stop_at_log10_loss": self.stop_at_log10_loss, "device": self.device,
                "eval_batch_size": self.eval_batch_size}
