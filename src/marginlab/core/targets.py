"""Labels and margins q_n: the one place where both are defined (DESIGN.md §2).

A model with one output takes binary labels, y ∈ {−1, +1} or {0, 1}, read as signs ±1; its
margin is q_n = y_n Φ(θ; x_n). A model with C ≥ 2 outputs takes class labels y ∈ {0, …, C−1};
its margin is q_n = Φ_{y_n} − max_{j≠y_n} Φ_j (Lyu & Li, Eq. (2) and Appendix G). Margins are
formed in float64.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from marginlab.errors import MarginlabError

__all__ = ["class_indices", "margins", "rivals", "signs", "targets"]


def _check_shape(y: Tensor) -> None:
    if y.dim() != 1:
        raise MarginlabError(f"labels must be a 1-D tensor, got shape {tuple(y.shape)}")
    if y.is_floating_point() and not (torch.isfinite(y).all() and torch.equal(y, y.round())):
        raise MarginlabError("labels must be integers")


def signs(y: Tensor) -> Tensor:
    """Binary labels in {−1, +1} or {0, 1} as signs ±1 (float64, same device).

    Raises:
        MarginlabError: labels that are not binary in either coding.
    """
    _check_shape(y)
    values = set(torch.unique(y).tolist())
    if values <= {-1, 1}:
        return y.to(torch.float64)
    if values <= {0, 1}:
        return 2.0 * y.to(torch.float64) - 1.0
    raise MarginlabError(
        f"a model with one output needs labels in {{-1, +1}} or {{0, 1}}, got {sorted(values)[:5]}"
    )


def class_indices(y: Tensor, num_outputs: int) -> Tensor:
    """Labels as class indices (int64) for a model with ``num_outputs`` outputs.

    With one output the binary labels (either coding) become {0, 1} (−1/0 → 0, +1 → 1), the
    indices of the two-logit form [−Φ/2, Φ/2] of the same margin.

    Raises:
        MarginlabError: labels that do not fit the model's outputs.
    """
    if num_outputs == 1:
        return (signs(y) > 0).long()
    _check_shape(y)
    yi = y.long()
    if yi.numel() and (yi.min() < 0 or yi.max() >= num_outputs):
        raise MarginlabError(
            f"labels must be in [0, {num_outputs - 1}] for a model with {num_outputs} outputs, "
            f"got range [{int(yi.min())}, {int(yi.max())}]"
        )
    return yi


def targets(y: Tensor, num_outputs: int) -> Tensor:
    """Labels in the form :func:`margins` takes: signs ±1 (float64) for one output, class
    indices (int64) for C ≥ 2 outputs. Validated once, so per-batch slices need no check.

    Raises:
        MarginlabError: labels that do not fit the model's outputs.
    """
    return signs(y) if num_outputs == 1 else class_indices(y, num_outputs)


def margins(out: Tensor, target: Tensor) -> Tensor:
    """q_n (float64, shape (N,)) from outputs (N,) / (N, 1) / (N, C) and :func:`targets`.

    One output: q_n = y_n Φ_n. C outputs: q_n = Φ_{y_n} − max_{j≠y_n} Φ_j.
    """
    out = out.reshape(out.shape[0], -1).to(torch.float64)
    if out.shape[1] == 1:
        return target.to(torch.float64) * out[:, 0]
    yi = target.view(-1, 1)
    return out.gather(1, yi)[:, 0] - out.scatter(1, yi, -math.inf).max(1).values


def rivals(out: Tensor, target: Tensor) -> Tensor:
    """The index j ≠ y_n attaining max_{j≠y_n} Φ_j (the first one on ties), shape (N,), for
    C ≥ 2 outputs and class-index targets."""
    out = out.reshape(out.shape[0], -1)
    return out.scatter(1, target.view(-1, 1), -math.inf).argmax(1)
