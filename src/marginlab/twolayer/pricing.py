"""The pricing step of the two-layer convex problems: the unit direction u that maximizes the
correlation |h(u)|, h(u) = Σ_i c_i relu(uᵀx_i), over the sphere.

Every column-generation solver and every dual certificate of the two-layer theory asks this
question: the ℓ1-SVM (Wei et al., Eq. (4.2), its dual Claim B.3), the ℓ1-regularized logistic
problem (whose dual constraint is sup_u |h(u)| ≤ 2λ) and the mean-field optimum L* (the first
variation along a new atom). It is answered exactly for inputs in ℝ¹ and ℝ² — 1-D data with a
bias, lifted to (x, 1), included: between consecutive kinks h is A cos t + B sin t, so its
extrema are kinks or the stationary points atan2(B, A) (+π) — and approximately above (a random
sample refined by a fixed-point ascent, or a given finite direction set).
"""

from __future__ import annotations

import math

import numpy as np

from marginlab.errors import MarginlabError
from marginlab.twolayer.features import angles_to_directions, lift_1d, relu_features

__all__ = ["arc_peaks", "circle_candidates", "sup_candidates", "sup_ratio",
           "sup_relu_correlation_1d"]


def circle_candidates(X: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Angles φ ∈ [0, 2π) among which |h| attains its maximum over the circle, for inputs in ℝ²:
    h(φ) = Σ_i c_i relu(X_iᵀ(cos φ, sin φ)).

    Between consecutive kinks (the angles where X_iᵀ(cos φ, sin φ) = 0) the active set is fixed
    and h(φ) = sᵀ(cos φ, sin φ) with s = Σ_active c_i X_i, so the extrema of h are kinks or
    the points ±s/‖s‖ of each arc.

    Args:
        X: (n, 2) inputs (1-D data with a bias: :func:`~marginlab.twolayer.features.lift_1d`).
        c: (n,) coefficients.

    Returns:
        (K,) candidate angles: every kink and both stationary points of every arc.
    """
    nz = np.linalg.norm(X, axis=1) > 0
    ang = np.arctan2(X[nz, 1], X[nz, 0])
    kinks = np.sort(np.mod(np.concatenate([ang + np.pi / 2, ang - np.pi / 2]), 2 * np.pi))
    mids = 0.5 * (kinks + np.roll(kinks, -1))
    mids[-1] = 0.5 * (kinks[-1] + kinks[0] + 2 * np.pi)
    e_mid = np.stack([np.cos(mids), np.sin(mids)], axis=1)
    s = ((e_mid @ X.T) > 0) @ (c[:, None] * X)  # (arcs, 2)
    psi = np.arctan2(s[:, 1], s[:, 0])
    return np.mod(np.concatenate([kinks, psi, psi + np.pi]), 2 * np.pi)


def arc_peaks(lo: np.ndarray, hi: np.ndarray, A: np.ndarray, B: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """For every arc [lo_k, hi_k] (hi_k − lo_k < 2π; hi may pass 2π): the angle maximizing
    A_k cos t + B_k sin t on the arc, and the maximum — the pricing step on one piece of the
    circle, where the active set and hence (A, B) are fixed.

    The sinusoid peaks at atan2(B, A); if that lies outside the arc, at one of its ends.

    Returns:
        (t, value), each (K,).
    """
    star = lo + (np.arctan2(B, A) - lo) % (2 * np.pi)
    cand = np.stack([lo, hi, np.where(star <= hi, star, lo)])
    v = A * np.cos(cand) + B * np.sin(cand)
    best = np.argmax(v, axis=0)
    k = np.arange(len(lo))
    return cand[best, k], v[best, k]


def sup_relu_correlation_1d(x, c) -> tuple[float, np.ndarray, np.ndarray]:
    """Exact max over the circle of |g(t)|, g(t) = Σ_i c_i relu(x_i cos t + sin t): the pricing
    step for 1-D inputs with a bias, (x_i, 1) ∈ ℝ² (:func:`circle_candidates`; Wei et al.,
    Appendix F.3 features).

    Args:
        x: (n,) scalar inputs.
        c: (n,) coefficients.

    Returns:
        (max |g|, candidate angles sorted by |g| descending, their g values).
    """
    X = lift_1d(x)
    c = np.asarray(c, dtype=np.float64).reshape(-1)
    cand = circle_candidates(X, c)
    g = c @ relu_features(X, angles_to_directions(cand))
    order = np.argsort(-np.abs(g))
    return float(np.abs(g[order[0]])), cand[order], g[order]


def sup_candidates(
    x: np.ndarray, coef: np.ndarray, grid: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, bool]:
    """Directions containing argmax_ū |h(ū)|, h(ū) = Σ_i coef_i relu(ūᵀx_i) (exactly for d ≤ 2).

    Returns (directions (K, d), exact).
    """
    d = x.shape[1]
    if d == 1:
        return np.array([[1.0], [-1.0]]), True
    if d == 2:
        return angles_to_directions(circle_candidates(x, coef)), True
    # d ≥ 3: a random sample plus the grid, then the fixed-point ascent ū ← ±s_A(ū)/‖s_A(ū)‖ from
    # the best ones (s_A the active-set sum; its fixed points are stationary points of h).
    cand = np.concatenate([grid, rng.standard_normal((20_000, d))])
    cand /= np.linalg.norm(cand, axis=1, keepdims=True)
    h = np.maximum(cand @ x.T, 0) @ coef
    top = cand[np.argsort(-np.abs(h))[:32]]
    sign = np.sign(np.maximum(top @ x.T, 0) @ coef)[:, None]
    for _ in range(100):
        s = sign * (((top @ x.T) > 0) @ (coef[:, None] * x))
        norm = np.linalg.norm(s, axis=1, keepdims=True)
        top = np.where(norm > 0, s / np.where(norm > 0, norm, 1), top)
    return np.concatenate([cand, top]), False


def sup_ratio(Xl: np.ndarray, y: np.ndarray, q: np.ndarray, lam: float,
               directions: np.ndarray | None) -> tuple[float, np.ndarray, bool]:
    """sup_u |(1/n) Σ β_i y_i relu(uᵀx̃_i)| / (2λ), the maximizing u, and whether the sup was
    over the whole sphere (1-D with bias, or 1-D without) or only over ``directions``."""
    n = len(y)
    # c_i = β_i y_i / (2nλ), formed in log space since β_i and λ may both be ~1e-14.
    c = y * np.exp(-np.logaddexp(0.0, q) - math.log(2.0 * n * lam))
    if Xl.shape[1] == 2 and np.all(Xl[:, 1] == 1.0):
        sup, cand, _ = sup_relu_correlation_1d(Xl[:, 0], c)
        return sup, angles_to_directions(cand[:1])[0], True
    if Xl.shape[1] == 1:
        U = np.array([[1.0], [-1.0]])
        exact = True
    else:
        if directions is None or len(directions) == 0:
            raise MarginlabError("inputs beyond 1-D need a direction set for the certificate")
        U = np.asarray(directions, dtype=np.float64)
        U = U / np.linalg.norm(U, axis=1, keepdims=True)
        exact = False
    g = np.abs(c @ relu_features(Xl, U))
    j = int(np.argmax(g))
    return float(g[j]), U[j], exact
