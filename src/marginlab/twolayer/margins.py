"""ℓ1 and ℓ2 margins of two-layer networks: SVMs over lifted ReLU features (Wei, Lee, Liu & Ma,
Section 4, Appendix D).

- ℓ1-SVM (Eq. (4.2)): γ_ℓ1 = max_{‖α‖₁ ≤ 1} min_i y_i ⟨α, φ(x_i)⟩. On a finite set of
  directions this is a linear program with the plain ℓ1 norm of the weights (DESIGN.md §6); for
  1-D inputs with a bias, the directions form a circle and :func:`l1_margin_1d` solves the
  continuum problem by column generation with the exact pricing step
  (:mod:`marginlab.twolayer.pricing`). Proposition 4.1: the max normalized margin of a two-layer
  ReLU network (‖Θ‖₂² normalization) is γ_ℓ1 / 2.
- Kernel (Eq. (4.3)): γ_ℓ2 is the margin of the hard-margin SVM *without bias* for the
  arc-cosine kernel or its random-feature approximation (:mod:`marginlab.twolayer.features`).
- Regression (Appendix D.2, Eqs. (D.3), (D.4)): minimum ℓ1-norm and minimum ℓ2-norm
  interpolation.

The leading terms of the generalization bounds are in :mod:`marginlab.twolayer.bounds`.
Everything here is numpy float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linprog, minimize

from marginlab.errors import MarginlabError
from marginlab.twolayer.features import (
    angles_to_directions,
    arccos_kernel,
    as_data,
    as_labels,
    grid_angles,
    lift_1d,
    random_relu_features,
    relu_features,
)
from marginlab.twolayer.pricing import sup_relu_correlation_1d

__all__ = [
    "ContinuumL1Result",
    "InterpolationResult",
    "L1MarginResult",
    "L2MarginResult",
    "l1_interpolation",
    "l1_margin",
    "l1_margin_1d",
    "l2_interpolation",
    "l2_margin",
]


@dataclass(frozen=True)
class L1MarginResult:
    """The ℓ1-SVM on a finite direction set (Eq. (4.2)).

    Attributes:
        margin: γ_ℓ1 = max_{‖α‖₁ ≤ 1} min_i y_i ⟨α, φ(x_i)⟩ on the set (≤ 0: not separable).
        weights: (m,) optimal α, ‖α‖₁ ≤ 1.
        dual: (n,) optimal λ on the simplex; γ_ℓ1 = max_u |Σ_i λ_i y_i relu(uᵀx_i)| over the set.
        directions: (m, d) the direction set.
    """

    margin: float
    weights: np.ndarray
    dual: np.ndarray
    directions: np.ndarray


# HiGHS' default feasibility tolerances (1e-7) would limit certificates to ~1e-6 relative.
_HIGHS_TIGHT = {"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10}


def _l1_lp(F: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """The ℓ1-SVM on features F (n, m); returns (γ, α with ‖α‖₁ = 1, λ on the simplex).

    Solved in the minimum-norm form (Wei et al., Eq. (B.1)): min ‖α‖₁ s.t. y_i(Fα)_i ≥ 1, with
    α = α⁺ − α⁻; γ = 1/min. Its constraints and dual (Claim B.3: max Σμ_i s.t.
    |Σ_i μ_i y_i F_iu| ≤ 1) are of order one, so the solver's absolute tolerances are relative
    ones. Data the features cannot separate give γ = 0 and α = 0.
    """
    n, m = F.shape
    YF = y[:, None] * F
    res = linprog(np.ones(2 * m), A_ub=np.hstack([-YF, YF]), b_ub=-np.ones(n),
                  bounds=[(0, None)] * (2 * m), method="highs-ds", options=_HIGHS_TIGHT)
    if res.status == 2:  # infeasible: not separable by these features
        return 0.0, np.zeros(m), np.full(n, 1.0 / n)
    if res.status != 0:
        raise MarginlabError(f"ℓ1-SVM linear program failed: {res.message}")
    alpha = (res.x[:m] - res.x[m:]) / res.fun
    mu = np.maximum(-np.asarray(res.ineqlin.marginals, dtype=np.float64), 0.0)
    return float(1.0 / res.fun), alpha, mu / mu.sum()


def l1_margin(X, y, directions) -> L1MarginResult:
    """ℓ1-SVM margin over the lifted ReLU features of a finite direction set (Eq. (4.2)).

    Solved as a linear program with HiGHS; the norm is the plain ℓ1 norm of the weights.

    Args:
        X: (n, d) inputs (append a column of ones for a first-layer bias).
        y: (n,) labels in {−1, +1}.
        directions: (m, d) directions u (need not be normalized; the feature is relu(uᵀx)).
    """
    X, y = as_labels(X, y)
    U = np.asarray(directions, dtype=np.float64)
    margin, alpha, dual = _l1_lp(relu_features(X, U), y)
    return L1MarginResult(margin=margin, weights=alpha, dual=dual, directions=U)


@dataclass(frozen=True)
class ContinuumL1Result:
    """The ℓ1-SVM over all directions (w, b) on the circle, for 1-D inputs with a bias.

    Attributes:
        margin: γ_ℓ1 of the weights found (a lower bound: they use finitely many directions).
        upper_bound: max_t |Σ λ_i y_i relu(x_i cos t + sin t)| at the final dual λ (an upper
            bound on the continuum γ_ℓ1 by LP duality).
        gap: (upper_bound − margin) / upper_bound.
        angles: (k,) angles of the directions with non-zero weight.
        weights: (k,) their weights, ‖weights‖₁ ≤ 1.
        dual: (n,) λ on the simplex.
        iterations: column-generation rounds.
    """

    margin: float
    upper_bound: float
    gap: float
    angles: np.ndarray
    weights: np.ndarray
    dual: np.ndarray
    iterations: int

    def decision_function(self, x) -> np.ndarray:
        """Σ_k α_k relu(w_k x + b_k) at scalar inputs x; shape (len(x),)."""
        return relu_features(lift_1d(x), angles_to_directions(self.angles)) @ self.weights


def l1_margin_1d(x, y, *, tol: float = 1e-9, init_angles: int = 64,
                 max_iter: int = 500) -> ContinuumL1Result:
    """Continuum ℓ1-SVM margin for 1-D inputs with bias (Wei et al., Appendix F.3, Eq. (4.2)).

    Column generation: solve the LP on the current angles, price the continuum exactly with
    :func:`sup_relu_correlation_1d` at the LP's dual λ, add every candidate angle that beats
    the current value, and stop when the dual upper bound meets the primal value to ``tol``
    (relative).

    Args:
        x: (n,) scalar inputs.
        y: (n,) labels in {−1, +1}.
        tol: relative certificate gap at which to stop.
        init_angles: size of the initial even grid.
        max_iter: limit on rounds; raises MarginlabError if the gap is still open.
    """
    X, y = as_labels(lift_1d(x), y)
    x = X[:, 0]
    angles = grid_angles(init_angles)
    for it in range(1, max_iter + 1):
        margin, alpha, dual = _l1_lp(relu_features(X, angles_to_directions(angles)), y)
        upper, cand, g = sup_relu_correlation_1d(x, dual * y)
        gap = (upper - margin) / upper if upper > 0 else 0.0
        if gap <= tol or margin <= 0:
            keep = alpha != 0
            return ContinuumL1Result(margin=margin, upper_bound=upper, gap=float(gap),
                                     angles=angles[keep], weights=alpha[keep], dual=dual,
                                     iterations=it)
        # Keep every column: dropping idle ones leaves the LP's dual degenerate, and a dual
        # chosen among many may price the continuum badly (the bound then stalls).
        new = cand[np.abs(g) > margin * (1 + 0.1 * tol)][: 2 * len(x)]
        angles = np.unique(np.concatenate([angles, new]))
    raise MarginlabError(f"continuum ℓ1-SVM did not converge in {max_iter} rounds (gap {gap:.2e})")


@dataclass(frozen=True)
class L2MarginResult:
    """Hard-margin SVM without bias for a kernel (Eq. (4.3)).

    Attributes:
        margin: min_i y_i f(x_i) / ‖f‖ of the solution found (a lower bound on γ_ℓ2).
        upper_bound: 1/√(2 D(α)) with D the dual objective (an upper bound on γ_ℓ2).
        gap: (upper_bound − margin) / upper_bound.
        dual: (n,) α ≥ 0; f = Σ_i α_i y_i K(·, x_i) / (Σ_i α_i) is the max-margin predictor up to
            scale, and 1/‖w*‖² = 1/Σ α_i at the optimum.
        n_support: number of support vectors.
    """

    margin: float
    upper_bound: float
    gap: float
    dual: np.ndarray
    n_support: int


def _hard_margin(Q: np.ndarray, *, tol: float = 1e-12) -> L2MarginResult:
    """min ½αᵀQα − 1ᵀα over α ≥ 0 for Q = diag(y) K diag(y) (the no-bias SVM dual).

    L-BFGS-B with bounds gives a near-optimal α and its support; a primal-dual active-set
    Newton iteration (solve Q_SS α_S = 1 on the support, move indices by the sign of α and of
    the slack Qα − 1) then finds the exact optimum in finitely many steps. The returned margin
    and upper bound are evaluated from the final α, so they certify the result whatever path
    the solver took.
    """
    n = Q.shape[0]

    def fun(a):
        Qa = Q @ a
        return 0.5 * a @ Qa - a.sum(), Qa - 1.0

    a = np.full(n, 1.0 / max(np.trace(Q), 1e-300))
    best = _certify(Q, a)
    for maxiter in (300, 20000):  # the long run only if the active-set steps did not converge
        res = minimize(fun, a, jac=True, method="L-BFGS-B", bounds=[(0, None)] * n,
                       options={"maxiter": maxiter, "ftol": 1e-16, "gtol": 1e-13, "maxcor": 30})
        a = res.x
        cand = _certify(Q, a)
        best = cand if cand.gap < best.gap else best
        S = a > 1e-10 * max(a.max(), 1e-300)
        for _ in range(50):
            b = np.zeros(n)
            try:
                b[S] = np.linalg.solve(Q[np.ix_(S, S)], np.ones(S.sum()))
            except np.linalg.LinAlgError:
                b[S] = np.linalg.lstsq(Q[np.ix_(S, S)], np.ones(S.sum()), rcond=None)[0]
            slack = Q @ b - 1.0
            if np.all(b >= 0):
                cand = _certify(Q, b)
                best = cand if cand.gap < best.gap else best
            S_new = ((b > 0) & S) | (~S & (slack < 0))
            if np.array_equal(S_new, S) or best.gap <= tol:
                break
            S = S_new
        if best.gap <= tol:
            break
    return best


def _certify(Q: np.ndarray, a: np.ndarray) -> L2MarginResult:
    a = np.maximum(a, 0.0)
    Qa = Q @ a
    w2 = float(a @ Qa)
    dual_obj = float(a.sum()) - 0.5 * w2
    lower = float(Qa.min() / math.sqrt(w2)) if w2 > 0 else 0.0
    upper = 1.0 / math.sqrt(2 * dual_obj) if dual_obj > 0 else math.inf
    gap = (upper - lower) / upper if math.isfinite(upper) else math.inf
    return L2MarginResult(margin=lower, upper_bound=upper, gap=float(gap), dual=a,
                          n_support=int(np.count_nonzero(a > 1e-12 * max(a.max(), 1e-300))))


def l2_margin(X, y, *, kernel: str = "arccos", n_features: int = 1000,
              seed: int = 0) -> L2MarginResult:
    """Kernel margin γ_ℓ2 of Eq. (4.3): the hard-margin SVM margin 1/‖w*‖ without bias.

    Args:
        X: (n, d) inputs.
        y: (n,) labels in {−1, +1}.
        kernel: ``arccos`` (exact K̄) or ``random`` (relu(u_mᵀx)/√M, u_m uniform on the sphere).
        n_features: M for ``random``.
        seed: seed of the random directions.
    """
    X, y = as_labels(X, y)
    if kernel == "arccos":
        K = arccos_kernel(X)
    elif kernel == "random":
        F = random_relu_features(X, n_features, seed=seed)
        K = F @ F.T
    else:
        raise MarginlabError(f"kernel must be 'arccos' or 'random', got {kernel!r}")
    return _hard_margin(y[:, None] * K * y[None, :])


@dataclass(frozen=True)
class InterpolationResult:
    """A minimum-norm interpolant of regression targets (Appendix D.2).

    Attributes:
        coef: ``l1``: (m,) weights α on the directions; ``l2``: (n,) c with f = Σ_i c_i K̄(·, x_i).
        norm: ``l1``: ‖α‖₁ (Eq. (D.3)); ``l2``: √(yᵀK̄⁻¹y) = √κ‖α_ℓ2‖₂ (Eq. (D.4), Claim D.12).
        kind: ``l1`` or ``l2``.
        basis: ``l1``: the (m, d) directions; ``l2``: the (n, d) training inputs.
    """

    coef: np.ndarray
    norm: float
    kind: str
    basis: np.ndarray

    def predict(self, X) -> np.ndarray:
        """f(x) at (k, d) inputs; shape (k,)."""
        X, _ = as_data(X)
        if self.kind == "l1":
            return relu_features(X, self.basis) @ self.coef
        return arccos_kernel(X, self.basis) @ self.coef


def l1_interpolation(X, y, directions) -> InterpolationResult:
    """min ‖α‖₁ s.t. ⟨α, φ(x_i)⟩ = y_i on a finite direction set (Eq. (D.3)), by HiGHS.

    The limit of the weakly ℓ2-regularized squared loss of a two-layer network (Theorem D.5).
    """
    X, y = as_data(X, y)
    U = np.asarray(directions, dtype=np.float64)
    F = relu_features(X, U)
    m = F.shape[1]
    res = linprog(np.ones(2 * m), A_eq=np.hstack([F, -F]), b_eq=y,
                  bounds=[(0, None)] * (2 * m), method="highs")
    if res.status != 0:
        raise MarginlabError(f"minimum ℓ1-norm interpolation failed: {res.message}")
    alpha = res.x[:m] - res.x[m:]
    return InterpolationResult(coef=alpha, norm=float(np.abs(alpha).sum()), kind="l1", basis=U)


def l2_interpolation(X, y) -> InterpolationResult:
    """Minimum ℓ2-norm interpolation in the kernel K̄ (Eq. (D.4)): c = K̄⁻¹y.

    ‖α_ℓ2‖₂² = yᵀ(κK̄)⁻¹y (Claim D.12, with ⟨φ(x), φ(x')⟩ = κK̄); ``norm`` reports √κ‖α‖₂.
    """
    X, y = as_data(X, y)
    K = arccos_kernel(X)
    try:
        c = np.linalg.solve(K, y)
    except np.linalg.LinAlgError:
        raise MarginlabError("kernel matrix is singular (repeated or parallel inputs)") from None
    return InterpolationResult(coef=c, norm=float(math.sqrt(max(y @ c, 0.0))), kind="l2",
                               basis=X)
