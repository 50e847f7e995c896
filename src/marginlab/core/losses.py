"""Margin losses carried in log space, so that losses far below float64's range stay exact.

Every loss is written ℓ(q) of a margin q (DESIGN.md §2). Binary models have q_n = y_n Φ(x_n);
multi-class models enter through q̃_n = −log Σ_{j≠y} exp(−(Φ_y − Φ_j)), with which the
cross-entropy loss is exactly the logistic loss ℓ(q̃_n) and the multi-class exponential loss
Σ_{j≠y} exp(−(Φ_y − Φ_j)) is exactly exp(−q̃_n).

The training loss is the SUM L = Σ_n ℓ(q_n) (Lyu & Li, Eq. (1)); it is carried as log L in
float64 (DESIGN.md §3), and ℓ^{-1}(L) — the numerator of the smoothed normalized margin
(Lyu & Li, Def. A.3) — is evaluated from log L without forming L.

All functions are differentiable where the loss is, with finite gradients on both branches of
every split (no ``clamp`` at a branch point, no ``inf`` in an unused ``torch.where`` branch).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from marginlab.errors import MarginlabError

__all__ = [
    "ExpTailLoss",
    "ExponentialLoss",
    "LogisticLoss",
    "Loss",
    "get_loss",
    "log_loss_from_logits",
    "log_loss_from_margins",
    "log_sum",
    "multiclass_soft_margin",
]


class Loss:
    """A margin loss ℓ(q) with its inverse, evaluated in log space.

    Subclasses implement :meth:`log_loss` (log ℓ(q), float64 tensor) and :meth:`inverse`
    (ℓ^{-1}(L) from log L).
    """

    name: str = "loss"

    def log_loss(self, q: Tensor) -> Tensor:
        """log ℓ(q) per sample; ``q`` float64, any shape."""
        raise NotImplementedError

    def inverse(self, log_L: float) -> float:
        """ℓ^{-1}(L) given log L (natural log), without forming L."""
        raise NotImplementedError

    @property
    def log_loss_at_zero(self) -> float:
        """log ℓ(0): the smoothed margin is monotone only once log L < log ℓ(0)."""
        return float(self.log_loss(torch.zeros((), dtype=torch.float64)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ExponentialLoss(Loss):
    """ℓ(q) = e^{−q}; ℓ^{-1}(u) = −log u."""

    name = "exponential"

    def log_loss(self, q: Tensor) -> Tensor:
        return -q

    def inverse(self, log_L: float) -> float:
        return -float(log_L)


class LogisticLoss(Loss):
    """ℓ(q) = log(1 + e^{−q}); ℓ^{-1}(u) = −log(e^u − 1).

    For q ≥ 0, log ℓ(q) = −q + log(log1p(t)/t) with t = e^{−q}, which stays exact when ℓ is far
    below float64's range (t underflows to 0 and the correction to 0). For q < 0 the loss is at
    least log 2 and is computed directly as −q + log1p(e^{q}).
    """

    name = "logistic"

    def log_loss(self, q: Tensor) -> Tensor:
        pos = q >= 0
        # Each branch gets an input on which it is finite, so gradients never meet inf/NaN.
        q_pos = torch.where(pos, q, torch.zeros_like(q))
        q_neg = torch.where(pos, torch.zeros_like(q), q)
        t = torch.exp(-q_pos)
        # For t < 1e-8 the series log(log1p(t)/t) = −t/2 + 5t²/24 − O(t³) is exact in float64;
        # the closed form would overflow in its gradient (1/t, 1/t²) once t is below ~1e-308.
        small = t < 1e-8
        t_safe = torch.where(small, torch.ones_like(t), t)
        ratio = torch.log(torch.log1p(t_safe) / t_safe)
        correction = torch.where(small, t * (-0.5 + (5.0 / 24.0) * t), ratio)
        branch_pos = -q_pos + correction
        # softplus(x) = x + log1p(e^{−x}) for x ≥ 0, written out: torch's softplus returns x
        # itself past x = 20, a relative error of up to 1e-10.
        branch_neg = torch.log(-q_neg + torch.log1p(torch.exp(q_neg)))
        return torch.where(pos, branch_pos, branch_neg)

    def inverse(self, log_L: float) -> float:
        log_L = float(log_L)
        if log_L < -20.0:
            # log((e^u − 1)/u) = u/2 + u²/24 − u⁴/2880 + …; u < 2e-9 makes the u² term ~1e-19.
            u = math.exp(log_L)
            return -(log_L + u / 2 + u * u / 24)
        u = math.exp(log_L) if log_L < 700 else math.inf
        if u <= 1.0:
            return -math.log(math.expm1(u))
        if math.isinf(u):
            # −u − log1p(−e^{−u}) with e^{−u} = 0; −u itself overflows past log L ≈ 709.78.
            try:
                return -math.exp(log_L)
            except OverflowError:
                return -math.inf
        return -u - math.log1p(-math.exp(-u))


@dataclass(frozen=True, repr=False)
class ExpTailLoss(Loss):
    """The exponential-tail family ℓ(q) = exp(−f(q)) (Lyu & Li, Assumption (B1)–(B4)).

    Args:
        f: increasing function with f(q) → ∞, applied to a float64 tensor (differentiable).
        g: its inverse on floats, g(f(q)) = q; ℓ^{-1}(u) = g(−log u).
        name: label used in configs and plots.

    Example:
        ``ExpTailLoss(f=lambda q: q**3, g=lambda v: math.copysign(abs(v) ** (1/3), v))``.
    """

    f: Callable[[Tensor], Tensor]
    g: Callable[[float], float]
    name: str = "exp_tail"

    def log_loss(self, q: Tensor) -> Tensor:
        return -self.f(q)

    def inverse(self, log_L: float) -> float:
        return float(self.g(-float(log_L)))

    def __repr__(self) -> str:
        return f"ExpTailLoss(name={self.name!r})"


_NAMED: dict[str, Loss] = {
    "exponential": ExponentialLoss(),
    "logistic": LogisticLoss(),
    # Cross-entropy is the logistic loss of the soft multi-class margin q̃ (binary: of q).
    "cross_entropy": LogisticLoss(),
}

LOSS_NAMES = tuple(_NAMED)


def get_loss(loss: str | Loss) -> Loss:
    """Resolve a loss name (``exponential``, ``logistic``, ``cross_entropy``) or pass a Loss on."""
    if isinstance(loss, Loss):
        return loss
    try:
        return _NAMED[loss]
    except KeyError:
        raise MarginlabError(
            f"unknown loss {loss!r}; expected one of {', '.join(LOSS_NAMES)} or an ExpTailLoss"
        ) from None


def multiclass_soft_margin(logits: Tensor, y: Tensor) -> Tensor:
    """q̃_n = −log Σ_{j≠y_n} exp(−(Φ_{y_n} − Φ_j)), float64, shape (N,).

    Args:
        logits: (N, C) outputs, C ≥ 2.
        y: (N,) integer labels in [0, C).
    """
    z = logits.to(torch.float64)
    z_y = z.gather(1, y.view(-1, 1))
    diff = (z - z_y).masked_fill(torch.nn.functional.one_hot(y, z.shape[1]).bool(), -math.inf)
    return -torch.logsumexp(diff, dim=1)


def log_loss_from_margins(q: Tensor, loss: str | Loss = "logistic") -> Tensor:
    """Per-sample log ℓ(q_n) from binary margins q_n = y_n Φ(x_n); float64, shape of ``q``."""
    return get_loss(loss).log_loss(q.to(torch.float64))


def log_loss_from_logits(logits: Tensor, y: Tensor, loss: str | Loss = "cross_entropy") -> Tensor:
    """Per-sample log-loss of a multi-class model: log ℓ(q̃_n), float64, shape (N,).

    With ``cross_entropy`` this is log(log(1 + Σ_{j≠y} e^{−(Φ_y − Φ_j)})); with ``exponential``
    it is log Σ_{j≠y} e^{−(Φ_y − Φ_j)} (Lyu & Li, Appendix G).
    """
    return get_loss(loss).log_loss(multiclass_soft_margin(logits, y))


def log_sum(log_terms: Tensor) -> Tensor:
    """log Σ_n exp(log_terms_n): the log of the summed loss, never forming the sum."""
    return torch.logsumexp(log_terms.reshape(-1).to(torch.float64), dim=0)
