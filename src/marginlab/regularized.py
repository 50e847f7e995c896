"""Weakly regularized two-layer ReLU networks and a certificate of their global optimality.

Wei, Lee, Liu & Ma, Section 2 (binary form, Appendix A.2):

    L_λ(Θ) = (1/n) Σ_i ℓ(y_i f(Θ; x_i)) + λ‖Θ‖₂²,  ℓ(q) = log(1 + e^{−q}),

for f(x) = Σ_j a_j relu(u_jᵀx̃) with x̃ = x, or x̃ = (x, 1) when the first layer has a bias
(u_j = (w_j, b_j)). As λ → 0 the normalized margin q_min/‖Θ‖² of the minimizer tends to the
max normalized margin γ_ℓ1/2 (Theorem A.3, Proposition 4.1).

Convex reformulation (DESIGN.md §6). Since a_j² + ‖u_j‖² ≥ 2|a_j|‖u_j‖ with equality for balanced
units, min_Θ L_λ over networks of width ≥ n+1 equals

    P* = min_α (1/n) Σ_i ℓ(y_i ⟨α, φ(x̃_i)⟩) + 2λ‖α‖₁          (α a measure on the sphere),

whose Fenchel dual is max_β (1/n) Σ_i H(β_i) over β ∈ [0, 1]^n with
sup_u |(1/n) Σ_i β_i y_i relu(uᵀx̃_i)| ≤ 2λ, H the binary entropy (ℓ*(−β) = −H(β)). Every
dual-feasible β therefore gives a lower bound on the loss of *every* two-layer network, and
β_i = σ(−q_i) of a trained network, scaled into feasibility, certifies how far it is from the
global optimum. For 1-D inputs with a bias the sup runs over the circle and is computed exactly
(:func:`marginlab.kernels.sup_relu_correlation_1d`); otherwise over a finite direction set.

Losses are carried in log space with :mod:`marginlab.losses` and everything runs in float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linprog, minimize
from scipy.special import xlogy
from torch import Tensor, nn

from marginlab import kernels
from marginlab.errors import MarginlabError
from marginlab.losses import LogisticLoss, log_sum

__all__ = [
    "Certificate",
    "ConvexOptimum",
    "RegularizedResult",
    "certificate",
    "compress_measure",
    "convex_optimum",
    "convex_optimum_1d",
    "load_measure",
    "regularized_objective",
    "train",
    "train_1d",
]

_LOGISTIC = LogisticLoss()
# HiGHS' default feasibility tolerances (1e-7) are too loose for the basic-solution step.
_HIGHS_TIGHT = {"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10}


# ----------------------------------------------------------------------------- helpers


def _log_logistic(q: np.ndarray) -> np.ndarray:
    """log ℓ(q) in float64 via marginlab.losses (exact far below float range)."""
    return _LOGISTIC.log_loss(torch.from_numpy(np.asarray(q, dtype=np.float64))).numpy()


def _entropy(beta: np.ndarray) -> np.ndarray:
    """Binary entropy H(β) in nats, accurate for tiny β (H ≈ β(1 − log β))."""
    return -xlogy(beta, beta) - (1.0 - beta) * np.log1p(-beta)


def _sigmoid_neg(q: np.ndarray) -> np.ndarray:
    """σ(−q) = −ℓ'(q), without overflow."""
    return np.exp(-np.logaddexp(0.0, q))


def _labels(y) -> np.ndarray:
    y = np.asarray(y.detach().cpu() if isinstance(y, Tensor) else y, dtype=np.float64)
    y = y.reshape(-1)
    if y.size and set(np.unique(y)) <= {0.0, 1.0} and not np.any(y == -1):
        y = 2.0 * y - 1.0  # {0, 1} labels
    if not np.all(np.isin(y, (-1.0, 1.0))):
        raise MarginlabError("labels must be -1/+1 (or 0/1)")
    return y


def _lower_bound(q: np.ndarray, sup_ratio: float) -> float:
    """(1/n) Σ H(κ β_i) with β = σ(−q) and κ = min(1, 1/sup_ratio): dual-feasible by scaling."""
    beta = _sigmoid_neg(q) * min(1.0, 1.0 / sup_ratio) if sup_ratio > 0 else _sigmoid_neg(q)
    return float(np.mean(_entropy(beta)))


def _sup_ratio(Xl: np.ndarray, y: np.ndarray, q: np.ndarray, lam: float,
               directions: np.ndarray | None) -> tuple[float, np.ndarray, bool]:
    """sup_u |(1/n) Σ β_i y_i relu(uᵀx̃_i)| / (2λ), the maximizing u, and whether the sup was
    over the whole sphere (1-D with bias, or 1-D without) or only over ``directions``."""
    n = len(y)
    # c_i = β_i y_i / (2nλ), formed in log space since β_i and λ may both be ~1e-14.
    c = y * np.exp(-np.logaddexp(0.0, q) - math.log(2.0 * n * lam))
    if Xl.shape[1] == 2 and np.all(Xl[:, 1] == 1.0):
        sup, cand, _ = kernels.sup_relu_correlation_1d(Xl[:, 0], c)
        return sup, kernels.angles_to_directions(cand[:1])[0], True
    if Xl.shape[1] == 1:
        U = np.array([[1.0], [-1.0]])
        exact = True
    else:
        if directions is None or len(directions) == 0:
            raise MarginlabError("inputs beyond 1-D need a direction set for the certificate")
        U = np.asarray(directions, dtype=np.float64)
        U = U / np.linalg.norm(U, axis=1, keepdims=True)
        exact = False
    g = np.abs(c @ kernels.relu_features(Xl, U))
    j = int(np.argmax(g))
    return float(g[j]), U[j], exact


# ----------------------------------------------------------------------------- convex problem


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


def _solve_restricted(F: np.ndarray, y: np.ndarray, lam: float,
                      alpha0: np.ndarray) -> np.ndarray:
    """argmin_α (1/(nλ)) Σ ℓ(y_i (Fα)_i) + 2‖α‖₁ on a finite direction set.

    The objective is P(α)/λ: rescaling by 1/λ keeps its value O(log 1/λ) and its curvature
    O(1) for every λ. α = α⁺ − α⁻ with α± ≥ 0 makes it smooth; L-BFGS-B with bounds solves it.
    """
    n, m = F.shape
    YF = y[:, None] * F
    log_nl = math.log(n * lam)

    def fun(z):
        alpha = z[:m] - z[m:]
        q = YF @ alpha
        log_l = _log_logistic(q)
        top = log_l.max()
        val = math.exp(top - log_nl) * np.exp(log_l - top).sum() + 2.0 * z.sum()
        dq = -np.exp(-np.logaddexp(0.0, q) - log_nl)  # (1/(nλ)) ℓ'(q)
        gs = YF.T @ dq
        return val, np.concatenate([gs + 2.0, -gs + 2.0])

    z0 = np.concatenate([np.maximum(alpha0, 0.0), np.maximum(-alpha0, 0.0)])
    res = minimize(fun, z0, jac=True, method="L-BFGS-B", bounds=[(0, None)] * (2 * m),
                   options={"maxiter": 3000, "ftol": 1e-16, "gtol": 1e-12, "maxcor": 50})
    alpha = res.x[:m] - res.x[m:]
    alpha[np.abs(alpha) < 1e-9 * max(np.abs(alpha).sum(), 1e-300)] = 0.0
    return _newton_polish(YF, log_nl, alpha)


def _newton_polish(YF: np.ndarray, log_nl: float, alpha: np.ndarray,
                   max_iter: int = 200) -> np.ndarray:
    """Active-set Newton method for (1/(nλ)) Σ ℓ((YF α)_i) + 2‖α‖₁ from a near-optimal α.

    On the support S with signs s the objective is smooth; Newton steps stop at the boundary of
    the orthant (a weight reaching zero leaves S), and the coordinate that most violates
    |c_j| ≤ 2, c = (YF)ᵀ σ(−q)/(nλ), enters S. Converges quadratically once S is right, which
    L-BFGS-B alone does not reach (its KKT residual stalls near 1e-7).
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


def _convex_summary(F, y, lam, alpha, sup_ratio, U, continuum, it) -> ConvexOptimum:
    q = y * (F @ alpha)
    l1 = float(np.abs(alpha).sum())
    value = float(np.exp(_log_logistic(q)).mean() + 2.0 * lam * l1)
    lower = _lower_bound(q, sup_ratio)
    keep = alpha != 0
    return ConvexOptimum(lam=lam, value=value, lower_bound=lower, gap=(value - lower) / value,
                         directions=U[keep], weights=alpha[keep], margins=q,
                         normalized_margin=float(q.min() / (2 * l1)) if l1 > 0 else 0.0,
                         continuum=continuum, iterations=it)


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
    X, y = np.asarray(X, dtype=np.float64), _labels(y)
    U = np.asarray(directions, dtype=np.float64)
    U = U / np.linalg.norm(U, axis=1, keepdims=True)
    F = kernels.relu_features(X, U)
    alpha = _solve_restricted(F, y, lam, np.zeros(len(U)))
    q = y * (F @ alpha)
    sup, _, _ = _sup_ratio(X, y, q, lam, U)
    return _convex_summary(F, y, lam, alpha, sup, U, False, 1)


# ----------------------------------------------------------------------------- 1-D: arcs


_TWO_PI = 2.0 * math.pi


@dataclass(frozen=True)
class _Arcs:
    """The circle of unit directions u = (cos t, sin t) = (w, b)/‖(w, b)‖, cut at the kinks.

    The feature relu(x_i cos t + sin t) has kinks at t = ψ_i ± π/2, ψ_i = atan2(1, x_i): the
    angles where the unit's kink −b/w passes the data point x_i. Between consecutive kinks each
    feature is either 0 or the sinusoid x_i cos t + sin t, so on a closed arc [lo_j, hi_j] a
    unit's values on the data are smooth in t and linear in u (Wei et al., Appendix F.3
    features; :func:`marginlab.kernels.sup_relu_correlation_1d` prices with the same pieces).
    Arcs on which every feature vanishes are left out.

    Attributes:
        x: (n,) inputs.
        lo: (K,) arc starts in [0, 2π).
        hi: (K,) arc ends, lo < hi < lo + π (the arc across t = 0 ends past 2π).
        mask: (K, n) 1.0 where x_i is on the active side on the arc, else 0.0.
    """

    x: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    mask: np.ndarray


def _arcs(x: np.ndarray) -> _Arcs:
    psi = np.arctan2(1.0, x)
    kinks = np.sort(np.mod(np.concatenate([psi - np.pi / 2, psi + np.pi / 2]), _TWO_PI))
    kinks = kinks[np.concatenate([[True], np.diff(kinks) > 1e-13])]  # repeated inputs
    lo, hi = kinks, np.append(kinks[1:], kinks[0] + _TWO_PI)
    mid = 0.5 * (lo + hi)
    mask = np.cos(mid)[:, None] * x[None, :] + np.sin(mid)[:, None] > 0
    useful = mask.any(axis=1)
    return _Arcs(x=x, lo=lo[useful], hi=hi[useful], mask=mask[useful].astype(np.float64))


@dataclass(frozen=True)
class _Atoms:
    """Units of a balanced network (|a| = ‖(w, b)‖) as atoms of a measure on the circle.

    Unit k computes sign_k r_k relu(x cos t_k + sin t_k), i.e. a = sign √r, (w, b) = √r u(t),
    and costs λ(a² + w² + b²) = 2λ r_k. Each atom stays on one arc (``arc``), t_k ∈ [lo, hi].
    Shapes (k,).
    """

    arc: np.ndarray
    sign: np.ndarray
    r: np.ndarray
    t: np.ndarray

    def __len__(self) -> int:
        return len(self.r)

    def take(self, keep) -> _Atoms:
        return _Atoms(self.arc[keep], self.sign[keep], self.r[keep], self.t[keep])

    def join(self, other: _Atoms) -> _Atoms:
        return _Atoms(*(np.concatenate([a, b]) for a, b in zip(
            (self.arc, self.sign, self.r, self.t), (other.arc, other.sign, other.r, other.t))))

    def weights(self) -> np.ndarray:
        return self.sign * self.r

    def directions(self) -> np.ndarray:
        return kernels.angles_to_directions(self.t)


def _no_atoms() -> _Atoms:
    return _Atoms(np.zeros(0, dtype=int), np.zeros(0), np.zeros(0), np.zeros(0))


def _atoms_from_measure(arcs: _Arcs, angles, weights) -> _Atoms:
    """Atoms at ``angles`` with signed masses ``weights`` (those whose features vanish on the
    data are dropped), merged to one per (arc, sign)."""
    t = np.mod(np.asarray(angles, dtype=np.float64).reshape(-1), _TWO_PI)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    arc = np.full(len(t), -1)
    for shift in (0.0, _TWO_PI):  # the arc across t = 0 holds angles up to hi − 2π
        inside = ((t[:, None] + shift >= arcs.lo[None, :] - 1e-12)
                  & (t[:, None] + shift <= arcs.hi[None, :] + 1e-12))
        for k in np.flatnonzero((arc < 0) & inside.any(axis=1)):
            j = int(np.argmax(inside[k]))
            arc[k], t[k] = j, min(max(t[k] + shift, arcs.lo[j]), arcs.hi[j])
    keep = (arc >= 0) & (w != 0)
    return _merge(arcs, _Atoms(arc[keep], np.sign(w[keep]), np.abs(w[keep]), t[keep]))


def _merge(arcs: _Arcs, atoms: _Atoms) -> _Atoms:
    """One atom per (arc, sign), and none of zero mass.

    On a closed arc the values on the data are linear in u = r(cos t, sin t), so atoms of one
    sign there add as vectors: the merged atom has the same values on the data and mass
    ‖Σ_k u_k‖ ≤ Σ_k r_k (equal when the angles agree). L_λ can only fall.
    """
    atoms = atoms.take(atoms.r > 0)
    key = 2 * atoms.arc + (atoms.sign > 0)
    if len(np.unique(key)) == len(key):
        return atoms
    parts = []
    for k in np.unique(key):
        sel = np.flatnonzero(key == k)
        j = int(atoms.arc[sel[0]])
        v = (atoms.r[sel] @ np.cos(atoms.t[sel]), atoms.r[sel] @ np.sin(atoms.t[sel]))
        r = math.hypot(*v)
        if r > 0:
            t = min(arcs.lo[j] + (math.atan2(v[1], v[0]) - arcs.lo[j]) % _TWO_PI, arcs.hi[j])
            parts.append(_Atoms(np.array([j]), atoms.sign[sel[:1]], np.array([r]),
                                np.array([t])))
    return _join(parts)


def _join(parts: list[_Atoms]) -> _Atoms:
    atoms = _no_atoms()
    for p in parts:
        atoms = atoms.join(p)
    return atoms


def _arc_features(arcs: _Arcs, atoms: _Atoms) -> tuple[np.ndarray, np.ndarray]:
    """h_ki = relu(x_i cos t_k + sin t_k) written as the smooth piece of atom k's arc, and
    ∂h/∂t; (k, n) each."""
    M = arcs.mask[atoms.arc]
    c, s = np.cos(atoms.t)[:, None], np.sin(atoms.t)[:, None]
    return M * (c * arcs.x[None, :] + s), M * (c - s * arcs.x[None, :])


def _arc_objective(arcs: _Arcs, y: np.ndarray, lam: float, atoms: _Atoms, order: int = 0):
    """J = L_λ/λ = (1/(nλ)) Σ_i ℓ(q_i) + 2 Σ_k r_k of the balanced network, with q.

    order 1 adds the gradient in z = (r, t), order 2 the Hessian (2k, 2k): with
    q = y ⊙ Σ_k s_k r_k h_k(t_k), ∂q/∂r_k = y s_k h_k, ∂q/∂t_k = y s_k r_k h_k', and on an
    arc h_k'' = −h_k.
    """
    n, k = len(y), len(atoms)
    log_nl = math.log(n * lam)
    h, dh = _arc_features(arcs, atoms)
    q = y * (atoms.weights() @ h)
    J = float(np.exp(_log_logistic(q) - log_nl).sum() + 2.0 * atoms.r.sum())
    if order == 0:
        return J, q
    w1 = -np.exp(-np.logaddexp(0.0, q) - log_nl)                      # ∂J/∂q = ℓ'(q)/(nλ)
    Dr = atoms.sign[:, None] * h * y
    Dt = atoms.weights()[:, None] * dh * y
    grad = np.concatenate([Dr @ w1 + 2.0, Dt @ w1])
    if order == 1:
        return J, q, grad
    w2 = np.exp(-np.logaddexp(0.0, q) - np.logaddexp(0.0, -q) - log_nl)  # ℓ''(q)/(nλ)
    D = np.vstack([Dr, Dt])
    H = (D * w2) @ D.T
    ir, it = np.arange(k), np.arange(k, 2 * k)
    cross = (atoms.sign[:, None] * dh * y) @ w1
    H[ir, it] += cross
    H[it, ir] += cross
    H[it, it] -= (atoms.weights()[:, None] * h * y) @ w1
    return J, q, grad, H


def _arc_newton(arcs: _Arcs, y: np.ndarray, lam: float, atoms: _Atoms,
                max_iter: int = 500) -> tuple[_Atoms, int]:
    """Projected Newton method (Bertsekas 1982) on z = (r, t), r ≥ 0, t ∈ [lo, hi] of its arc.

    Inside its arc every unit's contribution is smooth, so Newton converges quadratically
    where L-BFGS on (a, w, b) stalls at kinks; an angle reaching an arc end (the unit's kink
    on a data point) is held there by the bound. Variables at a bound whose gradient points
    out are fixed; the rest take a Newton step with |eigenvalues| of their Hessian (the polar
    parametrization is not convex far from the optimum) and a projected Armijo search.
    Returns the atoms of non-zero mass and the number of objective evaluations.
    """
    k = len(atoms)
    if k == 0:
        return atoms, 0
    lo = np.concatenate([np.zeros(k), arcs.lo[atoms.arc]])
    hi = np.concatenate([np.full(k, np.inf), arcs.hi[atoms.arc]])
    z = np.concatenate([atoms.r, atoms.t])

    def at(v):
        return _Atoms(atoms.arc, atoms.sign, v[:k], v[k:])

    evals, stalls = 0, 0
    for _ in range(max_iter):
        J, _, g, H = _arc_objective(arcs, y, lam, at(z), 2)
        evals += 1
        eps = np.concatenate([np.full(k, 1e-13 * max(z[:k].max(), 1.0)), np.full(k, 1e-13)])
        fixed = ((z <= lo + eps) & (g > 0)) | ((z >= hi - eps) & (g < 0))
        fixed[k:] |= z[:k] == 0  # the angle of a unit without mass
        free = ~fixed
        scale = np.concatenate([np.ones(k), np.maximum(z[:k], 1.0)])
        if not free.any() or np.max(np.abs(g[free]) / scale[free]) < 1e-12:
            break
        ev, V = np.linalg.eigh(H[np.ix_(free, free)])
        ev = np.maximum(np.abs(ev), 1e-10 * max(np.abs(ev).max(), 1e-300))
        d = np.zeros_like(z)
        d[free] = -V @ ((V.T @ g[free]) / ev)
        tau = 1.0
        while tau > 1e-14:
            trial = np.clip(z + tau * d, lo, hi)
            J_trial = _arc_objective(arcs, y, lam, at(trial))[0]
            evals += 1
            # Near the optimum the decrease is below the float resolution of J.
            if J_trial <= J + 1e-4 * g @ (trial - z) + 1e-15 * abs(J):
                break
            tau *= 0.5
        else:
            break
        stalls = stalls + 1 if J_trial >= J else 0
        z = trial
        if stalls >= 3:
            break
    return at(z).take(z[:k] > 0), evals


def _arc_links(arcs: _Arcs) -> tuple[np.ndarray, np.ndarray]:
    """nxt[j]: the arc that starts where arc j ends (−1 if all features vanish there); prv."""
    K = len(arcs.lo)
    nxt, prv = np.full(K, -1), np.full(K, -1)
    for j in range(K):
        d = np.abs((arcs.lo - arcs.hi[j] + np.pi) % _TWO_PI - np.pi)
        m = int(np.argmin(d))
        if d[m] < 1e-12:
            nxt[j], prv[m] = m, j
    return nxt, prv


def _cross_kinks(arcs: _Arcs, y: np.ndarray, lam: float,
                 atoms: _Atoms) -> tuple[_Atoms, int]:
    """Move each unit held at an arc end into the neighbouring arc when L_λ decreases there.

    At an arc end the unit's kink sits on a data point and L_λ is not differentiable in the
    angle; the one-sided derivative on the far side decides whether the kink should pass the
    point. The move itself does not change the network.
    """
    nxt, prv = _arc_links(arcs)
    moved = 0
    for k in range(len(atoms)):
        j = atoms.arc[k]
        for end, nb, step in ((arcs.hi[j], nxt[j], 1.0), (arcs.lo[j], prv[j], -1.0)):
            if nb < 0 or abs(atoms.t[k] - end) > 1e-13:
                continue
            arc, t = atoms.arc.copy(), atoms.t.copy()
            arc[k], t[k] = nb, arcs.lo[nb] if step > 0 else arcs.hi[nb]
            trial = _Atoms(arc, atoms.sign, atoms.r, t)
            if step * _arc_objective(arcs, y, lam, trial, 1)[2][len(atoms) + k] < 0:
                atoms, moved = trial, moved + 1
                break
    return atoms, moved


def _arc_pricing(arcs: _Arcs, c: np.ndarray):
    """For every (arc, sign): the angle maximizing s⟨c, h(t)⟩ on the arc, and the maximum.

    On an arc ⟨c, h(t)⟩ = A cos t + B sin t (A = Σ_active c_i x_i, B = Σ_active c_i), whose
    maximum times s is at atan2(sB, sA) if that lies on the arc, else at an end. With
    c = −∂J/∂f, a new unit there lowers J iff the maximum exceeds 2 (its cost per mass).
    Returns (arc, sign, angle, value), each (2K,).
    """
    A, B = arcs.mask @ (c * arcs.x), arcs.mask @ c
    K = len(A)
    out = []
    for s in (1.0, -1.0):
        star = arcs.lo + (np.arctan2(s * B, s * A) - arcs.lo) % _TWO_PI
        cand = np.stack([arcs.lo, arcs.hi, np.where(star <= arcs.hi, star, arcs.lo)])
        v = s * (A * np.cos(cand) + B * np.sin(cand))
        best = np.argmax(v, axis=0)
        out.append((np.arange(K), np.full(K, s), cand[best, np.arange(K)],
                    v[best, np.arange(K)]))
    return tuple(np.concatenate(parts) for parts in zip(*out))


def _basic_measure(arcs: _Arcs, atoms: _Atoms) -> _Atoms:
    """A basic solution of min Σ r_k s.t. the same values on the data, over the current
    atoms (HiGHS simplex): at most n atoms, the same loss, no larger penalty (Carathéodory;
    the reason width ≥ n + 1 suffices)."""
    h, _ = _arc_features(arcs, atoms)
    res = linprog(np.ones(len(atoms)), A_eq=(atoms.sign[:, None] * h).T,
                  b_eq=atoms.weights() @ h, bounds=[(0, None)] * len(atoms),
                  method="highs-ds", options=_HIGHS_TIGHT)
    if res.status != 0 or res.fun > atoms.r.sum() * (1 + 1e-9):  # a Newton step follows
        return atoms
    r = np.where(res.x > 1e-12 * res.x.max(), res.x, 0.0)
    return _Atoms(atoms.arc, atoms.sign, r, atoms.t).take(r > 0)


@dataclass(frozen=True)
class _ArcFit:
    atoms: _Atoms
    rounds: int
    evals: int
    inserted: int


def _arc_fit(arcs: _Arcs, y: np.ndarray, lam: float, atoms: _Atoms, *, max_atoms: int,
             insert: bool, tol: float = 1e-10, max_rounds: int = 100) -> _ArcFit:
    """Minimize L_λ over at most ``max_atoms`` balanced units, kink-aware.

    Rounds of: merge units sharing an (arc, sign); Newton on every unit's mass and angle
    within its arc (:func:`_arc_newton`); move units whose kink should pass a data point into
    the next arc (:func:`_cross_kinks`); with ``insert``, add zero-mass units at the
    (arc, sign) pieces whose exact dual constraint is violated by more than ``tol`` relative
    (the dual certificate's most violated directions, Wei et al., Section 5), freeing units
    by :func:`_basic_measure` when all are in use. Stops when no piece is violated, so the
    result satisfies the optimality conditions of the convex problem over the whole circle.
    """
    n = len(y)
    evals = inserted = rounds = 0
    while rounds < max_rounds:
        rounds += 1
        atoms, e = _arc_newton(arcs, y, lam, _merge(arcs, atoms))
        evals += e
        atoms, moved = _cross_kinks(arcs, y, lam, _merge(arcs, atoms))
        if moved:
            continue
        if not insert:
            break
        q = _arc_objective(arcs, y, lam, atoms)[1]
        c = y * np.exp(-np.logaddexp(0.0, q) - math.log(n * lam))  # −∂J/∂f
        arc, sign, t, v = _arc_pricing(arcs, c)
        used = set(zip(atoms.arc.tolist(), atoms.sign.tolist()))
        fresh = np.array([key not in used for key in zip(arc.tolist(), sign.tolist())])
        cand = np.flatnonzero(fresh & (v > 2.0 * (1.0 + tol)))
        if len(cand) == 0:
            break
        if len(atoms) >= max_atoms:
            atoms = _basic_measure(arcs, atoms)
        cand = cand[np.argsort(-v[cand])][: max(max_atoms - len(atoms), 0)]
        if len(cand) == 0:
            break
        inserted += len(cand)
        # Zero-mass units enter through the Newton step (their mass gradient 2 − v < 0).
        atoms = atoms.join(_Atoms(arc[cand], sign[cand], np.zeros(len(cand)), t[cand]))
        atoms, e = _arc_newton(arcs, y, lam, atoms)
        evals += e
    return _ArcFit(atoms=atoms, rounds=rounds, evals=evals, inserted=inserted)


def convex_optimum_1d(x, y, lam: float, *, tol: float = 1e-10, max_iter: int = 100,
                      init: ConvexOptimum | None = None) -> ConvexOptimum:
    """The convex problem over the whole circle of (w, b), for 1-D inputs with a bias.

    Exact in the continuum (Wei et al., Appendix F.3 setting): the circle is cut at the 2n
    kinks into arcs on which the features are linear in u = r(cos t, sin t), so one atom per
    (arc, sign) suffices; each atom's mass and angle are solved by Newton's method within its
    arc, and pieces whose dual constraint is violated receive a new atom (:func:`_arc_fit`).
    The result is reduced to a basic solution (≤ n atoms) and certified by the exact dual
    bound (:func:`marginlab.kernels.sup_relu_correlation_1d` at β = σ(−q)).

    Args:
        x: (n,) scalar inputs.
        y: (n,) labels ±1.
        lam: λ > 0.
        tol: relative violation of the dual constraint at which to stop.
        max_iter: limit on rounds (the last solution is returned with its gap).
        init: a solution at a nearby λ to start from (its directions, weights rescaled by
            log(1/λ)/log(1/λ_init), the growth of ‖α‖₁ as λ → 0).
    """
    if lam <= 0:
        raise MarginlabError(f"lam must be positive, got {lam}")
    X, y = kernels.lift_1d(x), _labels(y)
    if len(y) != len(X):
        raise MarginlabError(f"{len(X)} inputs but {len(y)} labels")
    arcs = _arcs(X[:, 0])
    atoms = _no_atoms()
    if init is not None:
        scale = math.log(1 / lam) / math.log(1 / init.lam) if 0 < init.lam < 1 else 1.0
        atoms = _atoms_from_measure(
            arcs, np.arctan2(init.directions[:, 1], init.directions[:, 0]),
            init.weights * scale)
    fit = _arc_fit(arcs, y, lam, atoms, max_atoms=2 * len(arcs.lo), insert=True, tol=tol,
                   max_rounds=max_iter)
    atoms = fit.atoms
    if len(atoms) > len(y):
        atoms, _ = _arc_newton(arcs, y, lam, _basic_measure(arcs, atoms))
    U, alpha = atoms.directions(), atoms.weights()
    F = kernels.relu_features(X, U)
    q = y * (F @ alpha)
    sup, _, _ = _sup_ratio(X, y, q, lam, None)
    return _convex_summary(F, y, lam, alpha, sup, U, True, fit.rounds)


# ----------------------------------------------------------------------------- networks


def _layers(model: nn.Module) -> tuple[nn.Linear, nn.Linear]:
    fc1, fc2 = getattr(model, "fc1", None), getattr(model, "fc2", None)
    if not (isinstance(fc1, nn.Linear) and isinstance(fc2, nn.Linear)) or hasattr(model, "fc3"):
        raise MarginlabError("expected a two-layer network (models.two_layer) with fc1 and fc2")
    if fc2.out_features != 1 or fc2.bias is not None:
        raise MarginlabError("expected one output and no output bias (bias='none' or 'first')")
    return fc1, fc2


def _lifted(model: nn.Module, X: np.ndarray) -> np.ndarray:
    fc1, _ = _layers(model)
    X = X.reshape(len(X), -1)
    return np.hstack([X, np.ones((len(X), 1))]) if fc1.bias is not None else X


def regularized_objective(model: nn.Module, X: Tensor, y: Tensor, lam: float) -> float:
    """L_λ(Θ) = mean_i ℓ(q_i) + λ‖Θ‖₂² (Wei et al., Eq. (3.2)), evaluated in float64."""
    with torch.no_grad():
        value, _, _, _ = _objective_parts(model, X, torch.as_tensor(_labels(y)), lam)
    return float(value) * lam


def _objective_parts(model, X, y, lam):
    """(L_λ/λ, log mean loss, ‖Θ‖², q): the objective scaled by 1/λ so that it stays O(1)."""
    q = y * model(X).reshape(-1)
    log_mean = log_sum(_LOGISTIC.log_loss(q)) - math.log(len(q))
    norm_sq = sum((p * p).sum() for p in model.parameters())
    return norm_sq + torch.exp(log_mean - math.log(lam)), log_mean, norm_sq, q


def _radial_step(model, X, y, lam) -> None:
    """Rescale Θ → cΘ to the best c: J(cΘ) = c²‖Θ‖² + mean ℓ(c² q)/λ is smooth in c even at a
    ReLU kink (homogeneity moves no kink), so it makes progress where gradient steps stall."""
    from scipy.optimize import minimize_scalar

    with torch.no_grad():
        q = y * model(X).reshape(-1)
        norm_sq = float(sum((p * p).sum() for p in model.parameters()))

        def value(log_s):
            s = math.exp(log_s)
            log_mean = float(log_sum(_LOGISTIC.log_loss(s * q))) - math.log(len(q))
            return s * norm_sq + math.exp(log_mean - math.log(lam))

        if norm_sq == 0:
            return
        res = minimize_scalar(value, bounds=(-30.0, 30.0), method="bounded",
                              options={"xatol": 1e-12})
        if res.fun < value(0.0):
            c = math.exp(res.x / 2)
            for p in model.parameters():
                p.mul_(c)


def _lbfgs(model, X, y, lam, max_iter) -> int:
    """Full-batch L-BFGS with strong-Wolfe line search on L_λ/λ, restarted until it stalls."""
    opt = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=max_iter, history_size=50,
                            tolerance_grad=1e-12, tolerance_change=1e-16,
                            line_search_fn="strong_wolfe")
    evals = 0

    def closure():
        nonlocal evals
        evals += 1
        opt.zero_grad()
        value = _objective_parts(model, X, y, lam)[0]
        value.backward()
        return value

    last = math.inf
    for _ in range(5):
        value = float(opt.step(closure).detach())
        if value >= last * (1 - 1e-14):
            break
        last = value
        opt.state.clear()  # fresh curvature pairs after a stall at a kink
    return evals


def _minimize(model, X, y, lam, max_iter, *, jitters: int, seed: int = 0) -> int:
    """Radial rescaling + L-BFGS; when L-BFGS stalls at a ReLU kink (a unit's kink on a data
    point, where −∇ is no descent direction), jitter the parameters by 1e-6 relative and retry,
    keeping the best point (a crude form of gradient sampling)."""
    gen = torch.Generator().manual_seed(seed)
    params = list(model.parameters())

    def current():
        with torch.no_grad():
            return float(_objective_parts(model, X, y, lam)[0])

    _radial_step(model, X, y, lam)
    evals = _lbfgs(model, X, y, lam, max_iter)
    best, saved = current(), [p.detach().clone() for p in params]
    for _ in range(jitters):
        with torch.no_grad():
            for p in params:
                p.add_(1e-6 * p.abs() * torch.randn(p.shape, generator=gen, dtype=p.dtype))
        _radial_step(model, X, y, lam)
        evals += _lbfgs(model, X, y, lam, max_iter)
        value = current()
        if value < best * (1 - 1e-12):
            best, saved = value, [p.detach().clone() for p in params]
        else:
            break
    with torch.no_grad():
        for p, s in zip(params, saved):
            p.copy_(s)
    return evals


@dataclass(frozen=True)
class Certificate:
    """Dual certificate of a network's distance to the global optimum of L_λ.

    Attributes:
        lower_bound: (1/n) Σ H(κβ_i), β = σ(−q), κ = min(1, 1/sup_ratio): a lower bound on L_λ
            over all two-layer networks (over networks with units along the direction set when
            ``continuum`` is False).
        sup_ratio: sup_u |(1/n) Σ β_i y_i relu(uᵀx̃_i)| / (2λ); ≤ 1 exactly at a global optimum.
        direction: (D,) the maximizing unit direction.
        continuum: whether the sup is over the whole sphere.
    """

    lower_bound: float
    sup_ratio: float
    direction: np.ndarray
    continuum: bool


def certificate(model: nn.Module, X: Tensor, y: Tensor, lam: float,
                directions=None) -> Certificate:
    """Dual lower bound on min L_λ from the network's own β_i = σ(−q_i) (module docstring)."""
    Xn = X.detach().cpu().double().numpy()
    yn = _labels(y)
    with torch.no_grad():
        q = (torch.as_tensor(yn) * model(X.double()).reshape(-1)).numpy()
    Xl = _lifted(model, Xn)
    U = _unit_directions(model)
    if directions is not None:
        U = np.vstack([U, np.asarray(directions, dtype=np.float64)])
    sup, u, exact = _sup_ratio(Xl, yn, q, lam, U)
    return Certificate(lower_bound=_lower_bound(q, sup), sup_ratio=sup, direction=u,
                       continuum=exact)


def _unit_directions(model) -> np.ndarray:
    fc1, _ = _layers(model)
    W = fc1.weight.detach().double()
    if fc1.bias is not None:
        W = torch.cat([W, fc1.bias.detach().double()[:, None]], dim=1)
    W = W.numpy()
    norms = np.linalg.norm(W, axis=1, keepdims=True)
    return W[norms[:, 0] > 0] / norms[norms[:, 0] > 0]


def load_measure(model: nn.Module, directions, weights) -> None:
    """Write the balanced network of a measure α = Σ_k weights_k δ_{u_k} into ``model``:
    unit k gets u_k √|α_k| and a_k = sign(α_k) √|α_k| (Proposition 4.1's construction), the other
    units zero. Then f = ⟨α, φ⟩ and ‖Θ‖₂² = 2‖α‖₁."""
    fc1, fc2 = _layers(model)
    U = np.asarray(directions, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if len(w) > fc1.out_features:
        raise MarginlabError(f"{len(w)} directions but only {fc1.out_features} hidden units")
    with torch.no_grad():
        for p in (fc1.weight, fc2.weight, *(() if fc1.bias is None else (fc1.bias,))):
            p.zero_()
        s = torch.as_tensor(np.sqrt(np.abs(w)), dtype=fc1.weight.dtype)
        Ut = torch.as_tensor(U, dtype=fc1.weight.dtype) * s[:, None]
        k = len(w)
        fc1.weight[:k] = Ut[:, : fc1.in_features]
        if fc1.bias is not None:
            fc1.bias[:k] = Ut[:, -1]
        fc2.weight[0, :k] = torch.as_tensor(np.sign(w), dtype=fc2.weight.dtype) * s


def compress_measure(directions, weights, *, tol: float = 1e-3,
                     max_atoms: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Merge atoms of a measure that point within ``tol`` radians of each other with the same
    sign (a finite direction set spreads one optimal atom over neighbouring columns); the merged
    atom points along the weighted mean direction and carries the summed weight. Keeps the
    ``max_atoms`` heaviest atoms if given. Returns (directions (k, D), weights (k,))."""
    U = np.asarray(directions, dtype=np.float64)
    U = U / np.linalg.norm(U, axis=1, keepdims=True)
    w = np.asarray(weights, dtype=np.float64)
    cos_tol = math.cos(tol)
    centers: list[np.ndarray] = []
    sums: list[np.ndarray] = []
    totals: list[float] = []
    for k in np.argsort(-np.abs(w)):
        for c, (center, total) in enumerate(zip(centers, totals)):
            if np.sign(total) == np.sign(w[k]) and center @ U[k] >= cos_tol:
                sums[c] = sums[c] + abs(w[k]) * U[k]
                totals[c] += w[k]
                centers[c] = sums[c] / np.linalg.norm(sums[c])
                break
        else:
            centers.append(U[k].copy())
            sums.append(abs(w[k]) * U[k])
            totals.append(float(w[k]))
    order = np.argsort(-np.abs(totals))[:max_atoms]
    return np.array(centers)[order], np.array(totals)[order]


def _insert_unit(model, X, y, lam, direction, sign) -> None:
    """Put a new unit along ``direction`` (the most violated dual constraint) in place of the
    unit whose removal raises L_λ least, at the scale that gives the lowest L_λ; the caller
    polishes with L-BFGS and keeps the result only if L_λ fell.

    This is a deterministic form of the perturbation of Wei et al., Section 5 (mass re-drawn on
    the sphere): at a stationary point that is not a global optimum, a unit along the violated
    direction is a descent direction of second order, which gradient steps from zero cannot find.
    """
    fc1, fc2 = _layers(model)
    with torch.no_grad():
        energy = fc2.weight[0] ** 2 + (fc1.weight ** 2).sum(1)
        if fc1.bias is not None:
            energy = energy + fc1.bias ** 2
        cost = []
        for k in range(len(energy)):
            a_k = float(fc2.weight[0, k])
            fc2.weight[0, k] = 0.0
            # L_λ/λ without unit k: its output weight zeroed, and its ‖u_k‖² taken off.
            cost.append(float(_objective_parts(model, X, y, lam)[0])
                        - float(energy[k]) + a_k * a_k)
            fc2.weight[0, k] = a_k
        j = int(np.argmin(cost))
        mean = float(energy.sum()) / len(energy)
        u = torch.as_tensor(direction, dtype=fc1.weight.dtype)

        def place(e):
            fc1.weight[j] = e * u[: fc1.in_features]
            if fc1.bias is not None:
                fc1.bias[j] = e * u[-1]
            fc2.weight[0, j] = sign * e

        scales = np.sqrt(mean * 10.0 ** np.arange(-6.0, 1.5, 0.5))
        values = []
        for e in scales:
            place(float(e))
            values.append(float(_objective_parts(model, X, y, lam)[0]))
        place(float(scales[int(np.argmin(values))]))


@dataclass(frozen=True)
class RegularizedResult:
    """A two-layer network trained on L_λ, with its certificate.

    Attributes:
        params: the trained parameters (float64 copies of the state dict).
        lam: λ.
        objective: L_λ(Θ) = mean_i ℓ(q_i) + λ‖Θ‖₂².
        log_loss_mean: natural log of mean_i ℓ(q_i).
        norm_sq: ‖Θ‖₂².
        q_min: min_i y_i f(x_i).
        normalized_margin: q_min / ‖Θ‖₂² (f is 2-homogeneous).
        lower_bound: certified lower bound on min L_λ (see :class:`Certificate`).
        gap: (objective − lower_bound) / objective.
        sup_ratio: the certificate's sup ratio (≤ 1 at a global optimum).
        continuum: whether the certificate holds against every direction.
        function_evals: L-BFGS objective evaluations.
        reseeds: units inserted along violated directions.
    """

    params: dict[str, Tensor]
    lam: float
    objective: float
    log_loss_mean: float
    norm_sq: float
    q_min: float
    normalized_margin: float
    lower_bound: float
    gap: float
    sup_ratio: float
    continuum: bool
    function_evals: int
    reseeds: int


def train(model: nn.Module, X: Tensor, y: Tensor, *, lam: float, reseed: bool = True,
          directions=None, max_reseeds: int = 30, max_iter: int = 1000,
          tol: float = 1e-9, jitters: int = 5) -> RegularizedResult:
    """Minimize L_λ over a two-layer network, full batch, in float64 (trains ``model`` in place).

    Optimizer: L-BFGS with strong-Wolfe line search on L_λ/λ. Dividing by λ makes the objective
    O(log 1/λ) with O(1) curvature at every λ, where plain gradient descent on L_λ would need
    steps ~1/λ and millions of iterations as λ → 1e-14; L-BFGS is restarted when it stalls at a
    ReLU kink. With ``reseed``, each stationary point is checked against the dual certificate
    and, while a direction violates it by more than ``tol``, a unit is inserted along that
    direction (:func:`_insert_unit`) and L-BFGS resumes.

    Args:
        model: ``models.two_layer(d, m, bias="none" | "first")``; converted to float64.
        X: (n, d) inputs.
        y: (n,) labels ±1 (or 0/1).
        lam: λ > 0.
        reseed: insert units along violated dual directions.
        directions: (k, D) extra directions for the certificate when D > 2 (D = d, +1 with bias).
        max_reseeds: limit on insertions.
        max_iter: L-BFGS iterations per run.
        tol: accept the certificate when sup_ratio ≤ 1 + tol.
    """
    if lam <= 0:
        raise MarginlabError(f"lam must be positive, got {lam}")
    _layers(model)
    model.double()
    X = X.detach().double()
    yt = torch.as_tensor(_labels(y))
    if X.shape[0] != len(yt):
        raise MarginlabError(f"{X.shape[0]} inputs but {len(yt)} labels")
    evals, reseeds = _minimize(model, X, yt, lam, max_iter, jitters=jitters), 0
    cert = certificate(model, X, yt, lam, directions)
    while reseed and cert.sup_ratio > 1 + tol and reseeds < max_reseeds:
        Xl = _lifted(model, X.numpy())
        with torch.no_grad():
            q = (yt * model(X).reshape(-1)).numpy()
        c = yt.numpy() * _sigmoid_neg(q)
        sign = float(np.sign(kernels.relu_features(Xl, cert.direction[None, :])[:, 0] @ c))
        with torch.no_grad():
            before = float(_objective_parts(model, X, yt, lam)[0])
            saved = [p.detach().clone() for p in model.parameters()]
        _insert_unit(model, X, yt, lam, cert.direction, sign)
        reseeds += 1
        evals += _minimize(model, X, yt, lam, max_iter, jitters=jitters)
        with torch.no_grad():
            if float(_objective_parts(model, X, yt, lam)[0]) >= before:
                for p, old in zip(model.parameters(), saved):
                    p.copy_(old)
                break
        cert = certificate(model, X, yt, lam, directions)
    return _result(model, X, yt, lam, cert, evals, reseeds)


def _result(model, X, yt, lam, cert: Certificate, evals: int, reseeds: int) -> RegularizedResult:
    with torch.no_grad():
        scaled, log_mean, norm_sq, q = _objective_parts(model, X, yt, lam)
    objective = float(scaled) * lam
    q_min, norm_sq = float(q.min()), float(norm_sq)
    return RegularizedResult(
        params={k: v.detach().clone() for k, v in model.state_dict().items()},
        lam=lam, objective=objective, log_loss_mean=float(log_mean), norm_sq=norm_sq,
        q_min=q_min, normalized_margin=q_min / norm_sq if norm_sq > 0 else 0.0,
        lower_bound=cert.lower_bound, gap=(objective - cert.lower_bound) / objective,
        sup_ratio=cert.sup_ratio, continuum=cert.continuum, function_evals=evals,
        reseeds=reseeds)


def train_1d(model: nn.Module, X: Tensor, y: Tensor, *, lam: float, reseed: bool = True,
             tol: float = 1e-10, max_rounds: int = 100) -> RegularizedResult:
    """Minimize L_λ for 1-D inputs with a first-layer bias, kink-aware (trains ``model`` in place).

    L-BFGS on (a, w, b) stalls where a unit's kink −b/w sits on a data point, which is where
    optimal units tend to put it: L_λ is not differentiable in the unit's angle there. Here
    each unit is written as an angle t on the circle, (w, b) ∝ (cos t, sin t), and a signed
    mass r = |a|‖(w, b)‖. Balancing |a| = ‖(w, b)‖ (the rescaling symmetry
    (a, u) → (ca, u/c)) leaves f unchanged and lowers λ(a² + ‖u‖²) to 2λr, its minimum; between
    the angles where the kink passes a data point the objective is then smooth, and Newton's
    method runs on each unit's (r, t) within its piece, with the piece's ends as bounds. A unit
    held at an end moves to the next piece when the one-sided derivative there is negative;
    units of one sign on one piece merge exactly (:func:`_merge`). With ``reseed``, units are
    added where the exact dual certificate is violated (as in :func:`train`), which makes the
    result a certified global optimum once no piece is violated. The trained network is
    written back balanced; its objective is L_λ of those parameters, with the ℓ2 penalty.

    Args:
        model: ``models.two_layer(1, m, bias="first")``; converted to float64.
        X: (n, 1) inputs.
        y: (n,) labels ±1 (or 0/1).
        lam: λ > 0.
        reseed: add units along violated dual directions (at most m units in use).
        tol: relative violation of the dual constraint accepted when ``reseed``.
        max_rounds: limit on rounds of Newton, kink moves and insertions.
    """
    if lam <= 0:
        raise MarginlabError(f"lam must be positive, got {lam}")
    fc1, fc2 = _layers(model)
    if fc1.in_features != 1 or fc1.bias is None:
        raise MarginlabError("train_1d needs models.two_layer(1, m, bias='first')")
    model.double()
    X = X.detach().double().reshape(-1, 1)
    yt = torch.as_tensor(_labels(y))
    if X.shape[0] != len(yt):
        raise MarginlabError(f"{X.shape[0]} inputs but {len(yt)} labels")
    x, yn = X[:, 0].numpy(), yt.numpy()
    arcs = _arcs(x)
    with torch.no_grad():
        saved = [p.detach().clone() for p in model.parameters()]
        before = float(_objective_parts(model, X, yt, lam)[0])
        w, b = fc1.weight[:, 0].numpy().copy(), fc1.bias.numpy().copy()
        a = fc2.weight[0].numpy().copy()
    atoms = _atoms_from_measure(arcs, np.arctan2(b, w), a * np.hypot(w, b))
    fit = _arc_fit(arcs, yn, lam, atoms, max_atoms=fc1.out_features, insert=reseed, tol=tol,
                   max_rounds=max_rounds)
    load_measure(model, fit.atoms.directions(), fit.atoms.weights())
    with torch.no_grad():
        if float(_objective_parts(model, X, yt, lam)[0]) > before:  # never worse than start
            for p, old in zip(model.parameters(), saved):
                p.copy_(old)
    cert = certificate(model, X, yt, lam)
    return _result(model, X, yt, lam, cert, fit.evals, fit.inserted)
