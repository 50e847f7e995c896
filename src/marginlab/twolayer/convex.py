"""The ℓ1-regularized convex problem of two-layer ReLU networks, its one solver and its one
certificate (Wei, Lee, Liu & Ma, Section 2, Appendix A.2; DESIGN.md §6).

Since a_j² + ‖u_j‖² ≥ 2|a_j|‖u_j‖ with equality for balanced units, the weakly regularized loss
of networks of width ≥ n+1 has the same minimum as

    P* = min_α c_R Σ_i ℓ(y_i ⟨α, φ(x̃_i)⟩) + 2λ‖α‖₁          (α a measure on the sphere),

ℓ(q) = log(1 + e^{−q}), c_R = 1/n (``mean``, the finite-width loss (3.2)) or 1 (``sum``, the
mean-field objective of Example 5.2). Its Fenchel dual is max_β c_R Σ_i H(β_i) over β ∈ [0, 1]^n
with c_R sup_u |Σ_i β_i y_i relu(uᵀx̃_i)| ≤ 2λ, H the binary entropy (ℓ*(−β) = −H(β)). Every
dual-feasible β therefore bounds the loss of *every* two-layer network from below, and
β_i = σ(−q_i) of any candidate, scaled into feasibility, certifies how far it is from the global
optimum (:class:`Certificate`, :func:`dual_bound`). The supremum is the pricing step
(:mod:`marginlab.twolayer.pricing`).

On a finite direction set the problem is solved by :func:`solve_l1_logistic`: scipy's truncated
Newton method with bounds (TNC) on the split α = α⁺ − α⁻ ≥ 0, then an active-set Newton method
that converges quadratically once the support is right. Losses are carried in log space
(:mod:`marginlab.core.losses`), float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from dataclasses import replace as dataclasses_replace
from typing import Literal

import numpy as np
import torch
from scipy.optimize import minimize
from scipy.special import xlogy

from marginlab.core.losses import LogisticLoss
from marginlab.twolayer.features import relu_features, signs
from marginlab.twolayer.pricing import sup_ratio

__all__ = ["Certificate", "ConvexOptimum", "convex_optimum", "dual_bound", "solve_l1_logistic"]

Reduction = Literal["sum", "mean"]

_LOGISTIC = LogisticLoss()


def _log_logistic(q: np.ndarray) -> np.ndarray:
    """log ℓ(q) in float64 via marginlab.core.losses (exact far below float range)."""
    return _LOGISTIC.log_loss(torch.from_numpy(np.asarray(q, dtype=np.float64))).numpy()


def _entropy(beta: np.ndarray) -> np.ndarray:
    """Binary entropy H(β) in nats, accurate for tiny β (H ≈ β(1 − log β))."""
    return -xlogy(beta, beta) - (1.0 - beta) * np.log1p(-beta)


def _sigmoid_neg(q: np.ndarray) -> np.ndarray:
    """σ(−q) = −ℓ'(q), without overflow."""
    return np.exp(-np.logaddexp(0.0, q))



def dual_bound(q: np.ndarray, ratio: float, scale: float | None = None) -> float:
    """c_R Σ_i H(κ β_i) with β = σ(−q) and κ = min(1, 1/ratio): the dual value of the scaled,
    feasible point, a lower bound on P* (c_R = ``scale``, default 1/n: the mean).

    Args:
        q: (n,) margins y_i f(x̃_i) of a candidate.
        ratio: c_R sup_u |Σ_i β_i y_i relu(uᵀx̃_i)| / (2λ) at that β (the pricing step).
        scale: c_R.
    """
    beta = _sigmoid_neg(q) * min(1.0, 1.0 / ratio) if ratio > 0 else _sigmoid_neg(q)
    h = _entropy(beta)
    return float(np.mean(h)) if scale is None else float(scale * h.sum())


@dataclass(frozen=True)
class Certificate:
    """Dual certificate of a candidate's distance to the optimum P* of the convex problem.

    Attributes:
        lower_bound: :func:`dual_bound` at the candidate's β = σ(−q): a lower bound on the loss
            of every two-layer network (of networks with units along the direction set when
            ``continuum`` is False).
        sup_ratio: sup_u |c_R Σ β_i y_i relu(uᵀx̃_i)| / (2λ); ≤ 1 exactly at the optimum.
        direction: (D,) the maximizing unit direction.
        continuum: whether the sup is over the whole sphere (exact for D ≤ 2).
    """

    lower_bound: float
    sup_ratio: float
    direction: np.ndarray
    continuum: bool


@dataclass(frozen=True)
class ConvexOptimum:
    """Solution of the ℓ1-regularized convex problem over directions (equal to min L_λ).

    Attributes:
        lam: λ.
        value: P(α) of the solution (an upper bound on the optimum; attained by a network).
        lower_bound: dual value (1/n) Σ H(β_i) of a feasible β (a lower bound on the loss of
            every two-layer network).
        gap: (value − lower_bound) / value.
        directions: (k, D) unit directions with non-zero weight.
        weights: (k,) their weights α.
        margins: (n,) q_i = y_i ⟨α, φ(x̃_i)⟩.
        normalized_margin: q_min / (2‖α‖₁), the normalized margin of the balanced network
            (‖Θ‖₂² = 2‖α‖₁).
        continuum: True if the lower bound holds over the whole sphere.
        iterations: column-generation rounds.
        certificate: the :class:`Certificate` behind ``lower_bound``.
    """

    lam: float
    value: float
    lower_bound: float
    gap: float
    directions: np.ndarray
    weights: np.ndarray
    margins: np.ndarray
    normalized_margin: float
    continuum: bool
    iterations: int
    certificate: Certificate | None = None


def solve_l1_logistic(F: np.ndarray, y: np.ndarray, lam: float, alpha0: np.ndarray | None = None,
                      *, reduction: Reduction = "mean") -> np.ndarray:
    """argmin_α c_R Σ_i ℓ(y_i (Fα)_i) + 2λ‖α‖₁ on a finite direction set (features F, (n, m)):
    the one solver of the convex problem.

    The objective is divided by λ: (c_R/λ) Σ ℓ + 2‖α‖₁ keeps its value O(log 1/λ) and its
    curvature O(1) for every λ. α = α⁺ − α⁻ with α± ≥ 0 makes it smooth; the truncated Newton
    method with bounds (TNC, run to |Δf| = 0) finds the support — L-BFGS-B stops early on the
    nearly collinear columns of fine direction grids, a finer grid then giving a worse value than
    the coarse grid it contains — and :func:`_newton_polish` converges on it to the KKT
    conditions |(YF)ᵀσ(−q)| c_R/λ ≤ 2 within ~1e-14.

    Args:
        F: (n, m) features relu(x̃_iᵀu_j).
        y: (n,) labels ±1.
        lam: λ > 0.
        alpha0: (m,) starting point (default 0).
        reduction: ``mean`` (c_R = 1/n) or ``sum`` (c_R = 1).
    """
    n, m_all = F.shape
    log_nl = math.log(n * lam) if reduction == "mean" else math.log(lam)  # log(λ/c_R)
    alpha0 = np.zeros(m_all) if alpha0 is None else np.asarray(alpha0, dtype=np.float64)
    # A direction active on no sample has a zero column: its weight is 0 at the optimum (its
    # derivative is the penalty alone), and its zero curvature would stall TNC. Leave it out.
    live = np.flatnonzero(np.any(F != 0, axis=0))
    YF = y[:, None] * F[:, live]
    m = len(live)
    out = np.zeros(m_all)
    if m == 0:
        return out

    def fun(z):
        alpha = z[:m] - z[m:]
        q = YF @ alpha
        log_l = _log_logistic(q)
        top = log_l.max()
        val = math.exp(top - log_nl) * np.exp(log_l - top).sum() + 2.0 * z.sum()
        dq = -np.exp(-np.logaddexp(0.0, q) - log_nl)  # (c_R/λ) ℓ'(q)
        gs = YF.T @ dq
        return val, np.concatenate([gs + 2.0, -gs + 2.0])

    a0 = alpha0[live]
    z0 = np.concatenate([np.maximum(a0, 0.0), np.maximum(-a0, 0.0)])
    res = minimize(fun, z0, jac=True, method="TNC", bounds=[(0, None)] * (2 * m),
                   options={"ftol": 0.0, "xtol": 0.0, "gtol": 1e-13, "maxfun": 200_000})
    alpha = res.x[:m] - res.x[m:]
    alpha[np.abs(alpha) < 1e-9 * max(np.abs(alpha).sum(), 1e-300)] = 0.0
    out[live] = _newton_polish(YF, log_nl, alpha)
    return out


def _newton_polish(YF: np.ndarray, log_nl: float, alpha: np.ndarray,
                   max_iter: int = 200) -> np.ndarray:
    """Active-set Newton method for e^{−log_nl} Σ ℓ((YF α)_i) + 2‖α‖₁ from a near-optimal α
    (e^{log_nl} = λ/c_R).

    On the support S with signs s the objective is smooth; Newton steps stop at the boundary of
    the orthant (a weight reaching zero leaves S), and the coordinate that most violates
    |c_j| ≤ 2, c = (YF)ᵀ σ(−q) c_R/λ, enters S. Converges quadratically once S is right, which
    first-order methods alone do not reach (their KKT residual stalls near 1e-7).
    """
    alpha = alpha.copy()

    def parts(a):
        q = YF @ a
        log_l = _log_logistic(q)
        return q, float(np.exp(log_l - log_nl).sum())

    for _ in range(max_iter):
        q, loss = parts(alpha)
        w1 = np.exp(-np.logaddexp(0.0, q) - log_nl)
        corr = YF.T @ w1
        S = alpha != 0
        s = np.sign(alpha)
        off = np.where(S, 0.0, np.abs(corr) - 2.0)
        j = int(np.argmax(off))
        entering = off[j] > 4e-14
        if entering:
            S[j], s[j] = True, np.sign(corr[j])
        idx = np.flatnonzero(S)
        g = -corr[idx] + 2.0 * s[idx]
        if not entering and np.max(np.abs(g), initial=0.0) < 2e-14:
            break
        w2 = np.exp(-np.logaddexp(0.0, q) - np.logaddexp(0.0, -q) - log_nl)
        A = YF[:, idx]
        H = A.T @ (w2[:, None] * A)
        H[np.diag_indices_from(H)] += 1e-13 * max(np.trace(H), 1e-300) / len(idx)
        d = np.linalg.solve(H, -g)
        a_S, s_S = alpha[idx], s[idx]
        if entering:  # the new coordinate must move in its sign's direction
            k = int(np.flatnonzero(idx == j)[0])
            if d[k] * s_S[k] <= 0:
                d = np.zeros_like(d)
                d[k] = s_S[k] * abs(g[k]) / max(H[k, k], 1e-300)
        shrink = (d * s_S < 0) & (a_S != 0)
        tau_max = np.min(-a_S[shrink] / d[shrink], initial=np.inf)
        tau = min(1.0, tau_max)
        base = loss + 2.0 * s_S @ a_S
        slope = g @ d
        while tau > 1e-12:
            trial = alpha.copy()
            trial[idx] = a_S + tau * d
            if tau == tau_max:
                trial[idx[shrink & np.isclose(-a_S / np.where(d == 0, 1, d), tau_max)]] = 0.0
            # Near the optimum the decrease (~KKT residual²) is below float resolution of the
            # objective, while the certificate is first order: accept steps within roundoff.
            if parts(trial)[1] + 2.0 * s_S @ trial[idx] <= base + 1e-4 * tau * slope + 1e-13 * abs(
                    base):
                break
            tau *= 0.5
        else:
            break
        alpha = trial
    return alpha


def certify(Xl: np.ndarray, y: np.ndarray, q: np.ndarray, lam: float,
            directions: np.ndarray | None) -> Certificate:
    """The :class:`Certificate` of a candidate with margins q (mean reduction): the pricing step
    at β = σ(−q) (over the sphere for D ≤ 2, else over ``directions``) and :func:`dual_bound`."""
    ratio, u, exact = sup_ratio(Xl, y, q, lam, directions)
    return Certificate(lower_bound=dual_bound(q, ratio), sup_ratio=ratio, direction=u,
                       continuum=exact)


def _convex_summary(F, y, lam, alpha, cert: Certificate, U, it) -> ConvexOptimum:
    q = y * (F @ alpha)
    l1 = float(np.abs(alpha).sum())
    value = float(np.exp(_log_logistic(q)).mean() + 2.0 * lam * l1)
    lower = cert.lower_bound
    keep = alpha != 0
    return ConvexOptimum(lam=lam, value=value, lower_bound=lower, gap=(value - lower) / value,
                         directions=U[keep], weights=alpha[keep], margins=q,
                         normalized_margin=float(q.min() / (2 * l1)) if l1 > 0 else 0.0,
                         continuum=cert.continuum, iterations=it, certificate=cert)


def convex_optimum(X, y, lam: float, directions) -> ConvexOptimum:
    """min_α (1/n) Σ ℓ(y_i ⟨α, φ(x_i)⟩) + 2λ‖α‖₁ on a finite direction set (any dimension).

    The lower bound is dual-feasible only on ``directions`` (``continuum`` False): it bounds the
    networks whose units point along the set, not all networks.

    Args:
        X: (n, D) inputs (append a column of ones for a first-layer bias).
        y: (n,) labels ±1.
        lam: λ > 0.
        directions: (m, D) directions (normalized here).
    """
    X, y = np.asarray(X, dtype=np.float64), signs(y)
    U = np.asarray(directions, dtype=np.float64)
    U = U / np.linalg.norm(U, axis=1, keepdims=True)
    F = relu_features(X, U)
    alpha = solve_l1_logistic(F, y, lam)
    q = y * (F @ alpha)
    cert = certify(X, y, q, lam, U)
    return _convex_summary(F, y, lam, alpha, dataclasses_replace(cert, continuum=False), U, 1)
