"""Learning-rate schedules: small objects with one decision method.

The trainer works on the loss rescaled by a *frame* F = log L̄(t−1), the log of the mean training
loss at the end of the previous accepted epoch (DESIGN.md §3): a step of size ``step`` on
R = exp(log L̄_B − F) equals a step of size η = step · e^{−F} on the mean batch loss L̄_B. Each
schedule therefore reports its step on R (``relative_step``) and the true learning rate in log
space (``log_lr``), which can exceed float64's range when the loss is tiny.

After every epoch the trainer calls :meth:`Schedule.decide` with the log mean loss before and
after the epoch; the schedule says whether to keep the epoch or roll it back and redo it, and
updates its own state for the next attempt. How an epoch moves the parameters is the step rule's
(:mod:`marginlab.train.steps`), which a schedule names with :meth:`Schedule.step_rule`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from torch import Tensor

from marginlab.errors import MarginlabError
from marginlab.train.checks import check_milestones
from marginlab.train.settings import setting
from marginlab.train.steps import HeavyBall, SGDStep, StepRule

__all__ = [
    "SCHEDULES",
    "ConstantLR",
    "LossBasedLR",
    "LossBasedMomentum",
    "Schedule",
    "StepSizeUnderflowError",
    "make_schedule",
]


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _milestones(milestones) -> dict[int, float]:
    return check_milestones("learning-rate milestones", milestones)


# Help of the parameters the command line sets (marginlab.train.settings); the defaults are the
# classes' own.
ALPHA0_HELP = ("initial alpha, the step relative to the loss (eta = alpha / mean loss; "
               "dimensionless)")
UP_HELP = "factor on alpha after a kept epoch"
DOWN_HELP = "divisor on alpha after a rolled-back epoch"


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

    def decide(self, log_loss_before: float, log_loss_after: float, *,
               margins_before: Sequence[float] = (),
               margins_after: Sequence[float] = ()) -> bool:
        """Keep (True) or redo (False) the epoch just run; update the state for the next one.

        Args:
            log_loss_before: log of the mean training loss before the epoch (the frame).
            log_loss_after: log of the mean training loss after it (NaN/inf if it diverged).
            margins_before: the smoothed margins (γ̃, γ̃_multi) before the epoch, given once
                L < ℓ(0) (where the theory makes them monotone), else empty. Schedules that do
                not guard the margin ignore them.
            margins_after: the same margins after the epoch.
        """
        raise NotImplementedError

    def step_rule(self) -> StepRule:
        """How an epoch moves the parameters: plain SGD unless the schedule says otherwise."""
        return SGDStep()

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

    lr: float = setting(0.01, stated=True, help="learning rate on the mean batch loss")
    milestones: dict[int, float] = field(default_factory=dict)
    _epoch: int = field(default=1, init=False, repr=False)
    name = "constant"

    def __post_init__(self):
        if not (_finite(self.lr) and self.lr > 0):
            raise MarginlabError(f"learning rate must be a positive number, got {self.lr}")
        self.milestones = _milestones(self.milestones)

    def start_epoch(self, epoch: int) -> None:
        self._epoch = epoch

    def current_lr(self) -> float:
        factor = math.prod(f for e, f in self.milestones.items() if self._epoch >= e)
        return self.lr * factor

    def relative_step(self, frame: float) -> float:
        return self.current_lr() * math.exp(frame)

    def log_lr(self, frame: float) -> float:
        return math.log(self.current_lr())

    def decide(self, log_loss_before: float, log_loss_after: float, **margins) -> bool:
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

    alpha0: float = setting(0.1, stated=True, help=ALPHA0_HELP)
    up: float = setting(2 ** (1 / 5), stated=True, help=UP_HELP)
    down: float = setting(2 ** (1 / 10), stated=True, help=DOWN_HELP)
    min_alpha: float = 1e-9
    max_alpha: float = 1e2
    _alpha: float = field(init=False, repr=False)
    name = "loss_based"

    def __post_init__(self):
        finite = _finite
        checks = [
            (finite(self.alpha0) and self.alpha0 > 0,
             f"alpha0 must be finite and > 0, got {self.alpha0}"),
            (finite(self.up) and self.up > 1, f"up must be finite and > 1, got {self.up}"),
            (finite(self.down) and self.down > 1, f"down must be finite and > 1, got {self.down}"),
            (_finite(self.min_alpha) and finite(self.alpha0) and 0 < self.min_alpha <= self.alpha0,
             "need 0 < min_alpha <= alpha0"),
            (isinstance(self.max_alpha, (int, float)) and finite(self.alpha0)
             and self.alpha0 <= self.max_alpha, "need alpha0 <= max_alpha"),
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

    def decide(self, log_loss_before: float, log_loss_after: float, **margins) -> bool:
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


@dataclass
class LossBasedMomentum(LossBasedLR):
    """The loss-based rate α/L̄ with heavy-ball momentum and asymmetric, guarded line search.

    The loss-based rate of Lyu & Li (Appendix L.1) keeps an epoch (α ← α·2^{1/5}) if the training
    loss decreased, or restores the parameters and redoes it (α ← α/2^{1/10}). Measured here
    (``benchmarks/bench_schedules.py``), most of its compute goes to epochs it throws away: with
    those ratios α settles where two attempts in three fail, and the end-of-epoch loss of SGD is
    noisy enough that α drifts orders of magnitude below what the loss allows. This schedule
    keeps the paper's decision and changes three things:

    * heavy-ball momentum μ = 0.9 on the loss-relative step (:class:`~marginlab.train.steps.
      HeavyBall`): θ ← θ + v, v ← μ v − (α/L̄) ∇L̄_B, the buffer zeroed whenever an epoch is
      rolled back (a restart);
    * asymmetric ratios, up 2^{1/10} on success and down 2 on failure: at equilibrium one attempt
      in eleven fails instead of two in three;
    * the epoch is also rejected if, once L < ℓ(0), it decreased the smoothed margin γ̃ or
      γ̃_multi (Lyu & Li, Def. A.3 and Appendix K.1): the monotonicity that the theory proves for
      gradient flow (Theorem 4.1) and small-step gradient descent (Theorem E.2) becomes part of
      the acceptance test, so the recorded γ̃ never decreases.

    How the defaults were chosen: prototype runs of the same update rule, one thread, 60 CPU-s,
    seed 0 (* seed 1), on the paper's CNN at width 1/4 with 1000 MNIST-subset images — CPU
    seconds to reach log10 L̄ = −10, and γ̃_multi after 60 s:

    ======================================  ============  ================  ========================
    variant                                 to −10        γ̃ at 60 s        note
    ======================================  ============  ================  ========================
    paper: μ 0, up 2^{1/5}, down 2^{1/10}   56 s          2.8e-3            75% of attempts rejected
    μ 0, up 2^{1/10}, down 2                not reached   0.9e-3            α collapses to 1e-4
    μ 0.9, up 2^{1/10}, down 2 (default)    12 s, 12 s*   5.8e-3, 6.4e-3*   12% rejected
    μ 0.95                                  24 s
    μ 0.8                                   11 s, 22 s    4.4e-3
    μ 0.5                                   not reached   0.9e-3
    μ 0.9, up 2^{1/5}                       14 s                            20% rejected
    μ 0.9 without the margin guard          12 s                            the guard costs nothing
    momentum on the part ⊥ θ only           21 s          5.8e-3            same margin, slower loss
    batch 50                                10 s, 10 s*   5.5e-3, 3.4e-3*   lower margin
    full-batch GD, momentum, per-step LS    not reached                     −5.7 at 60 s
    ======================================  ============  ================  ========================

    Steps only on the samples that carry the loss (``active_gap``), measured on the full-width
    CNN with 1000 images, seed 2, one thread: after 300 CPU-s log10 L̄ = −80.3 and
    γ̃_multi = 2.58e-3, against −51.8 and 1.94e-3 with every sample. Cutting that subset into
    equal batches matters: with batches of 100 and a last batch of the remainder (one sample,
    often), the step that fits the full batches overshoots on the last one, α falls to 1e-8 and
    the loss stalls for hundreds of seconds (at −35.2 from 170 s to 350 s, with or without the
    margin guard).

    Full-batch gradient descent on log L (heavy ball, a line search at every step on a
    β = first-order decrease of log L, the evaluation's forward pass reused for the next step)
    matched this schedule on the 200-image MLP but lost on the CNN even to the paper's schedule
    (log10 L̄ = −4.3 after 200 CPU-s at full width, where the paper's is at −7.8): ten SGD steps
    per pass beat one full gradient step there; hence mini-batches (``batch_size=None`` still
    gives full-batch descent). Momentum speeds the loss up more than the margin: at equal loss
    γ̃ is lower than with the paper's schedule (about 0.7x on the CNN at log10 L̄ = −10), but at
    equal CPU time it is higher (``benchmarks/bench_schedules.py``).

    Args:
        alpha0: initial α, the step relative to the loss (dimensionless; paper: 0.1).
        momentum: heavy-ball coefficient μ in [0, 1).
        up: factor on α after a kept epoch (> 1).
        down: divisor on α after a rolled-back epoch (> 1).
        monotone_margin: also roll back epochs that decrease a smoothed margin once L < ℓ(0).
        min_alpha: floor; falling below it means the loss no longer decreases, and training
            stops with :class:`StepSizeUnderflowError`. α shrinks naturally as ‖θ‖ grows
            (about as ‖θ‖^{−2(L−1)}), so the floor is far below the paper's.
        max_alpha: cap on α.
        active_gap: the SGD steps of an epoch use only the samples with ℓ_n ≥ e^{−gap}·L, in
            nats (default 30): together the others carry less than N·e^{−30} ≈ 1e-10 of the
            gradient's weight at N = 1000, and skipping them makes late epochs cheaper as the
            margins spread. ``None`` uses every sample. The full-loss evaluation that decides
            acceptance always uses every sample.
    """

    alpha0: float = setting(0.1, stated=True, help=ALPHA0_HELP)
    up: float = setting(2 ** (1 / 10), help=UP_HELP)
    down: float = setting(2.0, help=DOWN_HELP)
    min_alpha: float = 1e-20
    max_alpha: float = 1e2
    momentum: float = setting(0.9, help="heavy-ball coefficient in [0, 1)")
    monotone_margin: bool = setting(True, option="--no-margin-guard",
                                    help="keep epochs that lower the smoothed margin")
    active_gap: float | None = setting(
        30.0, none="none", help="SGD steps skip samples whose loss is below e^-GAP times the "
                                "total (GAP in nats), or none to use every sample")
    name = "loss_based_momentum"

    def __post_init__(self):
        super().__post_init__()
        checks = [
            (_finite(self.momentum) and 0 <= self.momentum < 1,
             f"momentum must be in [0, 1), got {self.momentum}"),
            (self.active_gap is None or (_finite(self.active_gap) and self.active_gap > 0),
             f"active_gap must be a positive number or None, got {self.active_gap}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise MarginlabError(f"invalid loss-based momentum schedule: {msg}")
        self.monotone_margin = bool(self.monotone_margin)

    def step_rule(self) -> StepRule:
        return HeavyBall(momentum=self.momentum, active_gap=self.active_gap)

    def active_samples(self, log_losses: Tensor, log_L: float) -> Tensor:
        """Indices of the samples the next epoch's steps use: those with ℓ_n ≥ e^{−gap}·L.

        Args:
            log_losses: log ℓ_n at the current parameters, shape (N,).
            log_L: log Σ_n ℓ_n.
        """
        return self.step_rule().active_samples(log_losses, log_L)

    def decide(self, log_loss_before: float, log_loss_after: float, *,
               margins_before: Sequence[float] = (), margins_after: Sequence[float] = ()) -> bool:
        """Keep (True) or roll back (False) the epoch just run; update α.

        Args:
            log_loss_before: log of the training loss before the epoch.
            log_loss_after: log of the training loss after it (NaN/inf if it diverged).
            margins_before: smoothed margins before the epoch that must not decrease (pass none
                while L ≥ ℓ(0), where the theory does not make them monotone).
            margins_after: the same margins after the epoch.
        """
        keep = math.isfinite(log_loss_after) and log_loss_after < log_loss_before
        if keep and self.monotone_margin:
            keep = all(a >= b for b, a in zip(margins_before, margins_after, strict=True))
        return self._update(keep, log_loss_before)

    def config(self) -> dict:
        return {"name": self.name, "alpha0": self.alpha0, "momentum": self.momentum,
                "up": self.up, "down": self.down, "monotone_margin": self.monotone_margin,
                "active_gap": self.active_gap, "min_alpha": self.min_alpha,
                "max_alpha": self.max_alpha}


SCHEDULES: dict[str, type[Schedule]] = {"constant": ConstantLR, "loss_based": LossBasedLR,
                                        LossBasedMomentum.name: LossBasedMomentum}


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
