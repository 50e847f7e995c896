"""The schedules of Wei, Lee, Liu & Ma, Appendix F.4 (Table 1), and their arithmetic.

Both arms share the step learning-rate schedule; the annealed arm multiplies the weight decay λ by
the paper's factors at its milestones, the fixed arm keeps λ at its initial value. Milestones are
lists of ``[epoch, factor]`` pairs written for a ``milestone_epochs``-epoch run
(:func:`scale_milestones` moves them to a run of another length); :func:`cumulative_decay`
measures how strongly a schedule regularizes, independently of the run's length.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from marginlab.errors import MarginlabError

__all__ = ["ARMS", "PAPER_LR_MILESTONES", "PAPER_WD_MILESTONES", "PAPER_WD_MILESTONES_CIFAR100",
           "PAPER_WEIGHT_DECAY", "cumulative_decay", "paper_cumulative_decay",
           "scale_milestones", "value_at"]

ARMS = ("annealed", "fixed")

PAPER_LR_MILESTONES = [[60, 0.2], [120, 0.2], [160, 0.2]]
PAPER_WD_MILESTONES = [[60, 0.2], [90, 0.5], [120, 0.5], [140, 0.5], [160, 0.5]]  # CIFAR-10
PAPER_WD_MILESTONES_CIFAR100 = [[60, 0.2], [120, 0.2], [160, 0.2]]

# Appendix F.4, per data set: initial λ and its [epoch, factor] milestones. (Table 1's caption
# says "initial λ = 0.0005" for both; the text gives 0.0002 for CIFAR-10, which is used here.)
PAPER_WEIGHT_DECAY = {
    "cifar10": {"weight_decay": 2e-4, "wd_milestones": PAPER_WD_MILESTONES},
    "cifar100": {"weight_decay": 5e-4, "wd_milestones": PAPER_WD_MILESTONES_CIFAR100},
}


def scale_milestones(milestones: Sequence[Sequence[float]], epochs: int,
                     milestone_epochs: int) -> dict[int, float]:
    """Milestones of a ``milestone_epochs``-epoch schedule moved to the same fraction of an
    ``epochs``-epoch run: epoch e → max(1, round(e · epochs / milestone_epochs)); factors that
    land on one epoch multiply.

    Args:
        milestones: ``[epoch, factor]`` pairs (1-based epochs; the factor applies from that
            epoch on).
        epochs: length of the run.
        milestone_epochs: length of the run the milestones were written for (paper: 200).

    Returns:
        epoch → factor, sorted by epoch.
    """
    if epochs < 1 or milestone_epochs < 1:
        raise MarginlabError(f"epochs must be ≥ 1, got {epochs} and {milestone_epochs}")
    out: dict[int, float] = {}
    for pair in milestones:
        if len(pair) != 2 or not (pair[0] >= 1 and pair[1] > 0):
            raise MarginlabError(f"a milestone is [epoch ≥ 1, factor > 0], got {pair!r}")
        e = max(1, round(pair[0] * epochs / milestone_epochs))
        out[e] = out.get(e, 1.0) * float(pair[1])
    return dict(sorted(out.items()))


def value_at(base: float, milestones: Mapping[int, float], epoch: int) -> float:
    """A scheduled value at ``epoch``: ``base`` times the factor of every milestone ≤ epoch."""
    return base * math.prod(f for e, f in milestones.items() if epoch >= e)


def cumulative_decay(lrs: Sequence[float], lams: Sequence[float],
                     steps: Sequence[int]) -> float:
    """Σ_epochs steps · 2 η λ: the log of the factor by which weight decay alone shrinks the
    weights over a run (each SGD step multiplies θ by 1 − 2ηλ). A run-length-free measure of
    how strongly a schedule regularizes, for comparing a short run with the paper's."""
    return float(sum(2.0 * lr * lam * k for lr, lam, k in zip(lrs, lams, steps)))


def paper_cumulative_decay(arm: str, steps_per_epoch: int = math.ceil(50000 / 128),
                           data: str = "cifar10") -> float:
    """:func:`cumulative_decay` of the paper's schedule for ``data`` (``cifar10`` or
    ``cifar100``; 200 epochs; batch 128 assumed, 391 steps per epoch on 50000 images)."""
    paper = PAPER_WEIGHT_DECAY[data]
    epochs = range(1, 201)
    lr_ms = scale_milestones(PAPER_LR_MILESTONES, 200, 200)
    wd_ms = scale_milestones(paper["wd_milestones"], 200, 200) if arm == "annealed" else {}
    return cumulative_decay([value_at(0.1, lr_ms, e) for e in epochs],
                            [value_at(paper["weight_decay"], wd_ms, e) for e in epochs],
                            [steps_per_epoch] * 200)
