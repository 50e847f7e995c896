"""Learning-rate schedules: small objects with one decision method.

The trainer works on the loss rescaled by a *frame* F = log L̄(t−1), the log of the mean training
loss at the end of the previous accepted epoch (DESIGN.md §3): a step of size ``step`` on
R = exp(log L̄_B − F) equals a step of size η = step · e^{−F} on the mean batch loss L̄_B. Each
schedule therefore reports its step on R (``relative_step``) and the true learning rate in log
space (``log_lr``), which can exceed float64's range when the loss is tiny.

After every epoch the trainer calls :meth:`Schedule.decide` with the log mean loss before and
after the epoch; the schedule says whether to keep the epoch or roll it back and redo it, and
updates its own state for the next attempt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from marginlab.errors import MarginlabError

__all__ = [
    "SCHEDULES",
    "ConstantLR",
    "LossBasedLR",
    "Schedule",
    "StepSizeUnderflowError",
    "make_schedule",
]


class StepSizeUnderflowError(MarginlabError):
    """The loss stopped decreasing: the step size fell below its floor."""


class Schedule:
    """Base class. Subclasses define ``relative_step``, ``log_lr`` and ``decide``."""

    name = "schedule"

    def relative_step(self, frame: float) -> float:
        """Step size on the rescaled loss R = exp(log L̄_B − frame)."""
        raise NotImplementedError

    def log_lr(self, frame: float) -> float:
        """Natural log of the true learning rate η on the mean loss."""
        raise NotImplementedError

    def start_epoch(self, epoch: int) -> None:
        """Called before every attempt at ``epoch`` (1-based); schedules on epochs use it."""

    def decide(self, log_loss_before: float, log_loss_after: float) -> bool:
        """Keep (True) or redo (False) the epoch just run; update the state for the next one.

        Args:
            log_loss_before: log of the mean training loss before the epoch (the frame).
            log_loss_after: log of the mean training loss after it (NaN/inf if it diverged).
        """
        raise NotImplementedError

    @property
    def alpha(self) -> float:
        """The schedule's relative step parameter, as recorded in the metrics."""
        return math.nan

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def config(self) -> dict:
        """JSON-able constructor arguments, with the schedule's name."""
        raise NotImplementedError


@dataclass
class ConstantLR(Schedule):
    """Plain SGD with a constant learning rate ``lr`` on the mean batch loss.

    ``milestones`` (epoch -> factor) multiply the rate from that epoch on, e.g. Wei et al.'s
    ``{60: 0.2, 120: 0.2, 160: 0.2}`` (Appendix F.4). Every finite epoch is kept. An epoch whose
    loss turns NaN/inf is rolled back and redone (the shuffle differs); the trainer stops after
    ``max_retries`` such epochs in a row.
    """

    lr: float = 0.01
    milestones: dict[int, float] = field(default_factory=dict)
    _epoch: int = field(default=1, init=False, repr=False)
    name = "constant"

    def __post_init__(self):
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise MarginlabError(f"learning rate must be a positive number, got {self.lr}")
        self.milestones = {int(k): float(v) for k, v in self.milestones.items()}
        if any(not (math.isfinite(v) and v > 0) for v in self.milestones.values()):
            raise MarginlabError("learning-rate milestone factors must be positive numbers")

    def start_epoch(self, epoch: int) -> None:
        self._epoch = epoch

    def current_lr(self) -> float:
        factor = math.prod(f for e, f in self.milestones.items() if self._epoch >= e)
        return self.lr * factor

    def relative_step(self, frame: float) -> float:
        return self.current_lr() * math.exp(frame)

    def log_lr(self, frame: float) -> float:
        return math.log(self.current_lr())

    def decide(self, log_loss_before: float, log_loss_after: float) -> bool:
        return math.isfinite(log_loss_after)

    @property
    def alpha(self) -> float:
        return math.nan

    def config(self) -> dict:
        out = {"name": self.name, "lr": self.lr}
        if self.milestones:
            out["milestones"] = {str(k): v for k, v in self.milestones.items()}
        return out


@dataclass
class LossBasedLR(Schedule):
    """The loss-based learning rate of Lyu & Li, Appendix L.1: η(t) = α(t) / L̄(t−1).

    After each epoch the full training loss is evaluated; if it decreased, α ← α·up and the
    epoch is kept, otherwise the parameters are restored, α ← α/down and the epoch is redone.
    NaN/inf counts as "did not decrease".

    Args:
        alpha0: initial α (paper: 0.1), the step relative to the loss (dimensionless).
        up: factor on success (paper: 2^{1/5}).
        down: divisor on failure (paper: 2^{1/10}).
        min_alpha: floor; falling below it means the loss no longer decreases (e.g. data the
            model cannot separate) and training stops with :class:`StepSizeUnderflowError`.
        max_alpha: cap on α.
    """

    alpha0: float = 0.1
    up: float = 2 ** (1 / 5)
    down: float = 2 ** (1 / 10)
    min_alpha: float = 1e-9
    max_alpha: float = 1e2
    _alpha: float = field(init=False, repr=False)
    name = "loss_based"

    def __post_init__(self):
        finite = math.isfinite
        checks = [
            (finite(self.alpha0) and self.alpha0 > 0,
             f"alpha0 must be finite and > 0, got {self.alpha0}"),
            (finite(self.up) and self.up > 1, f"up must be finite and > 1, got {self.up}"),
            (finite(self.down) and self.down > 1, f"down must be finite and > 1, got {self.down}"),
            (0 < self.min_alpha <= self.alpha0, "need 0 < min_alpha <= alpha0"),
            (self.alpha0 <= self.max_alpha, "need alpha0 <= max_alpha"),
        ]
        for ok, msg in checks:
            if not ok:
                raise MarginlabError(f"invalid loss-based schedule: {msg}")
        self._alpha = float(self.alpha0)

    @property
    def alpha(self) -> float:
        return self._alpha

    def relative_step(self, frame: float) -> float:
        return self._alpha

    def log_lr(self, frame: float) -> float:
        return math.log(self._alpha) - frame

    def decide(self, log_loss_before: float, log_loss_after: float) -> bool:
        return self._update(math.isfinite(log_loss_after) and log_loss_after < log_loss_before,
                            log_loss_before)

    def _update(self, keep: bool, log_loss_before: float) -> bool:
        """α ← α·up if the epoch is kept, else α ← α/down (raising below the floor)."""
        if keep:
            self._alpha = min(self._alpha * self.up, self.max_alpha)
            return True
        self._alpha /= self.down
        if self._alpha < self.min_alpha:
            raise StepSizeUnderflowError(
                f"alpha fell below {self.min_alpha:g} without the training loss decreasing "
                "(stuck at log10 loss "
                f"{log_loss_before / math.log(10):.4g}); is the data separable by this model?"
            )
        return False

    def state_dict(self) -> dict:
        return {"alpha": self._alpha}

    def load_state_dict(self, state: dict) -> None:
        self._alpha = float(state["alpha"])

    def config(self) -> dict:
        return {"name": self.name, "alpha0": self.alpha0, "up": self.up, "down": self.down,
                "min_alpha": self.min_alpha, "max_alpha": self.max_alpha}


SCHEDULES: dict[str, type[Schedule]] = {"constant": ConstantLR, "loss_based": LossBasedLR}


def make_schedule(config: dict) -> Schedule:
    """Build a schedule from its ``config()`` dict (``name`` plus constructor arguments)."""
    config = dict(config)
    name = config.pop("name", None)
    if name not in SCHEDULES:
        raise MarginlabError(f"unknown schedule {name!r}; expected one of {', '.join(SCHEDULES)}")
    try:
        return SCHEDULES[name](**config)
    except TypeError as exc:
        raise MarginlabError(f"bad parameters for schedule {name!r}: {exc}") from None
