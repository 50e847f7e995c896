"""How far a direction is from a KKT point of the margin problem (P) (DESIGN.md §5).

Problem (P) (Lyu & Li, Theorem 4.4): min ½‖θ‖² s.t. q_n(θ) ≥ 1 for all n; for C outputs
(Appendix G) one constraint per pair, s_nj(θ) = Φ_{y_n}(θ; x_n) − Φ_j(θ; x_n) ≥ 1 for every n
and every j ≠ y_n. A feasible θ is an (ε, δ)-KKT point (Appendix C, Def. C.6) if there are
multipliers λ_r ≥ 0 and h_r ∈ ∂°s_r(θ), one per constraint r, with ‖θ − Σ_r λ_r h_r‖₂ ≤ ε and
λ_r (s_r(θ) − 1) ≤ δ for all r.

For the direction of a model's parameters, :func:`kkt_residual` does the following:

1. rescale θ ← θ / q_min^{1/L} (L the homogeneity order), the point of (P) in that direction
   with q_min = min_r s_r = 1 (Lyu & Li, Theorem A.8);
2. restrict the multipliers to the near-active constraints A = {r : s_r ≤ 1 + τ} (samples for
   one output, pairs (n, j) for C outputs), so that δ = max_r λ_r (s_r − 1) ≤ τ·max λ;
3. solve the non-negative least squares problem min_{λ ≥ 0} ‖θ − J_Aᵀλ‖₂ (J_A: rows ∇s_r,
   r ∈ A) and report ε = ‖θ − J_Aᵀλ‖₂ (computed with one vector–Jacobian product) and
   ε/‖θ‖.

The R×P Jacobian is never formed (see :mod:`marginlab.analysis.margin_jacobian`). When the
|A|×|A| Gram matrix G = J_A J_Aᵀ fits in memory, NNLS is solved exactly in Gram form,
min ½λᵀGλ − λᵀ(J_Aθ) + ½‖θ‖², by Lawson–Hanson (``scipy.optimize.nnls``) on a square-root
factor of G (method ``gram``); otherwise by accelerated projected gradient with one JVP and one
VJP per iteration (method ``projected-gradient``). The h_r are autograd's gradients (ReLU takes
relu'(0) = 0), so ε is that of one element of each Clarke subdifferential — an upper bound on
the best ε at kinks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import scipy.linalg
import scipy.optimize
import torch
from torch import Tensor, nn

from marginlab.analysis.margin_jacobian import Constraints, MarginJacobian, as_numpy
from marginlab.core import homogeneity
from marginlab.core.margins import validate_data
from marginlab.errors import MarginlabError, NotHomogeneousError, NotSeparatedError

__all__ = ["KKTCurve", "KKTResult", "kkt_curve", "kkt_residual"]

Method = Literal["auto", "gram", "projected-gradient"]


@dataclass(frozen=True)
class KKTResult:
    """The (ε, δ)-KKT certificate of one direction (Lyu & Li, Def. C.6; Appendix G).

    Constraints r = 1..R are the samples for a model with one output (R = N) and the pairs
    (n, j), j ≠ y_n, ordered by n then j, for C outputs (R = N(C − 1)); ``constraints`` lists
    them.

    Attributes:
        eps: ‖θ − Σ_r λ_r ∇s_r(θ)‖₂ at the rescaled θ (q_min = 1).
        eps_relative: eps / ‖θ‖₂.
        delta: max_r λ_r (s_r(θ) − 1) (≤ tau · max λ).
        lambdas: (R,) float64 multipliers, zero outside the near-active set.
        active: (k,) int64 constraint indices with λ_r > 0.
        near_active: (m,) int64 constraint indices with s_r ≤ 1 + tau (where multipliers may
            be placed).
        margins: (N,) float64 margins q_n = min_j s_nj at the rescaled θ (min 1).
        tau: the near-active tolerance used.
        order: homogeneity order L.
        q_min: min_n q_n of the model as given, before rescaling.
        theta_norm: ‖θ‖₂ after rescaling (= γ^{-1/L}, γ the normalized margin).
        method: ``gram`` or ``projected-gradient``.
        gram_builder: how G was built (``layer-products`` / ``per-sample-gradients``), or
            ``none`` for the projected-gradient method.
        iterations: NNLS iterations (projected gradient), 0 for the exact Gram solve.
        nnls_gap: max violation of the NNLS optimality conditions relative to ‖J_Aθ‖
            (≈ 1e-12 for an exact solve).
        constraints: (R, 2) int64 rows (n, j): sample and competitor class (j = −1 for one
            output).
        constraint_margins: (R,) float64 s_r at the rescaled θ.
    """

    eps: float
    eps_relative: float
    delta: float
    lambdas: Tensor
    active: Tensor
    near_active: Tensor
    margins: Tensor
    tau: float
    order: float
    q_min: float
    theta_norm: float
    method: str
    gram_builder: str
    iterations: int = 0
    nnls_gap: float = 0.0
    constraints: Tensor = field(default_factory=lambda: torch.zeros(0, 2, dtype=torch.long))
    constraint_margins: Tensor = field(default_factory=lambda: torch.zeros(0))

    @property
    def n_constraints(self) -> int:
        """R: samples (one output) or pairs (C outputs)."""
        return int(self.constraints.shape[0])

    def summary(self) -> dict:
        """Scalar fields as a JSON-ready dict (the tensors reduced to counts)."""
        return {
            "eps": self.eps, "eps_relative": self.eps_relative, "delta": self.delta,
            "tau": self.tau, "order": self.order, "q_min": self.q_min,
            "theta_norm": self.theta_norm, "n_near_active": int(self.near_active.numel()),
            "n_active": int(self.active.numel()), "n_constraints": self.n_constraints,
            "n_active_samples": int(torch.unique(self.constraints[self.active, 0]).numel())
            if self.constraints.numel() else int(self.active.numel()),
            "max_lambda": float(self.lambdas.max()) if self.lambdas.numel() else 0.0,
            "method": self.method, "gram_builder": self.gram_builder,
            "iterations": self.iterations, "nnls_gap": self.nnls_gap,
        }


@dataclass(frozen=True)
class KKTCurve:
    """ε as a function of the near-active tolerance τ (one direction).

    Attributes:
        taus, eps, eps_relative, delta: one entry per τ, in the order given.
        n_near_active, n_active: sizes of the near-active and active sets per τ.
        method, gram_builder: as in :class:`KKTResult`.
        results: the full :class:`KKTResult` per τ.
    """

    taus: list[float]
    eps: list[float]
    eps_relative: list[float]
    delta: list[float]
    n_near_active: list[int]
    n_active: list[int]
    method: str
    gram_builder: str
    results: list[KKTResult] = field(repr=False, default_factory=list)


@dataclass
class _Point:
    """A direction rescaled to q_min = 1, with its constraint values s_r."""

    jac: MarginJacobian
    q: Tensor  # (R,) s_r at the rescaled θ
    order: float
    q_min: float
    theta: Tensor


def prepare_kkt_point(model: nn.Module, X: Tensor, y: Tensor, *, batch_size: int = 256,
                      memory_limit: float = 2 * 2**30,
                      constraints: Constraints = "pairs") -> _Point:
    """Check homogeneity and separation, and rescale θ to q_min = 1 (float64 copy).

    ``constraints`` (C outputs): ``pairs`` for problem (P) of Appendix G, ``arg-max`` for one
    constraint per sample (its competitor at this θ).

    Raises:
        NotHomogeneousError: (P) needs an L-homogeneous model.
        NotSeparatedError: q_min ≤ 0.
    """
    validate_data(X, y)
    report = homogeneity.cached_check(model, X[:8])
    if not report.is_homogeneous:
        raise NotHomogeneousError(
            f"the model is not homogeneous in its parameters (residual "
            f"{report.max_residual:.1e}); problem (P) and its KKT points are defined for "
            "homogeneous models only")
    order = float(report.order)
    if order <= 0:
        raise NotHomogeneousError(f"homogeneity order {order} is not positive")
    jac = MarginJacobian(model, X, y, constraints=constraints, batch_size=batch_size,
                         memory_limit=memory_limit)
    q = jac.initial_margins
    q_min = float(q.min())
    if not q_min > 0:
        n_bad = int((q <= 0).sum())
        raise NotSeparatedError(
            f"q_min = {q_min:.3g} ≤ 0 ({n_bad} of {q.numel()} samples have q_n ≤ 0): no "
            "rescaling of this direction satisfies q_n ≥ 1 for all n, so it holds no feasible "
            "point of (P) and the KKT conditions of (P) are undefined there")
    jac.scale_(q_min ** (-1.0 / order))
    q = jac.margins()
    return _Point(jac=jac, q=q, order=order, q_min=q_min, theta=jac.theta())


def kkt_residual(model: nn.Module, X: Tensor, y: Tensor, tau: float = 1e-2, *,
                 method: Method = "auto", batch_size: int = 256,
                 memory_limit: float = 2 * 2**30, max_iter: int = 5000,
                 tol: float = 1e-10, constraints: Constraints = "pairs") -> KKTResult:
    """(ε, δ)-KKT residual of the direction of ``model``'s parameters for problem (P).

    Lyu & Li, Appendix C, Def. C.6, with multipliers on {n : q_n ≤ 1 + tau} (DESIGN.md §5).

    Args:
        model: an L-homogeneous network with one output (binary, labels ±1 or {0,1}; one
            constraint per sample) or C outputs (labels in [C]; one constraint per pair (n, j),
            j ≠ y_n, Appendix G).
        X: inputs (N, ...). y: labels (N,).
        tau: near-active tolerance (≥ 0).
        method: ``auto`` (Gram when the |A|×|A| matrix fits in ``memory_limit``),
            ``gram`` or ``projected-gradient``.
        batch_size: samples per forward/backward pass.
        memory_limit: bytes for the Gram matrix and per-sample factors.
        max_iter: projected-gradient iterations at most.
        tol: projected-gradient stopping tolerance on the NNLS optimality gap.
        constraints: for C outputs, ``pairs`` (problem (P) of Appendix G) or ``arg-max`` (one
            constraint per sample, its competitor at this θ: a coarser certificate, for
            comparison).

    Returns:
        A :class:`KKTResult`.

    Raises:
        NotHomogeneousError: the model is not homogeneous.
        NotSeparatedError: the model does not separate the data (q_min ≤ 0).
        MarginlabError: bad data, labels or arguments.
    """
    _check_tau(tau)
    point = prepare_kkt_point(model, X, y, batch_size=batch_size, memory_limit=memory_limit,
                              constraints=constraints)
    return _solve(point, tau, method=method, max_iter=max_iter, tol=tol)


def kkt_curve(model: nn.Module, X: Tensor, y: Tensor, taus: Sequence[float], *,
              method: Method = "auto", batch_size: int = 256,
              memory_limit: float = 2 * 2**30, max_iter: int = 5000,
              tol: float = 1e-10, constraints: Constraints = "pairs") -> KKTCurve:
    """ε (and δ) of one direction as a curve over the near-active tolerance τ.

    The Gram matrix is built once over the largest near-active set and restricted for smaller
    τ. Arguments as in :func:`kkt_residual`.
    """
    taus = [float(t) for t in taus]
    if not taus:
        raise MarginlabError("give at least one tau")
    for t in taus:
        _check_tau(t)
    point = prepare_kkt_point(model, X, y, batch_size=batch_size, memory_limit=memory_limit,
                              constraints=constraints)
    largest = _near_active(point.q, max(taus))
    cache = None
    if _pick_method(point, largest.numel(), method) == "gram":
        cache = (largest, *point.jac.gram(largest))
    results = [_solve(point, t, method=method, max_iter=max_iter, tol=tol, gram_cache=cache)
               for t in taus]
    return KKTCurve(
        taus=taus, eps=[r.eps for r in results], eps_relative=[r.eps_relative for r in results],
        delta=[r.delta for r in results],
        n_near_active=[int(r.near_active.numel()) for r in results],
        n_active=[int(r.active.numel()) for r in results],
        method=results[-1].method, gram_builder=results[-1].gram_builder, results=results)


# ---- internals ----------------------------------------------------------------------------


def _check_tau(tau: float) -> None:
    if not (isinstance(tau, (int, float)) and tau >= 0 and not math.isnan(tau)):
        raise MarginlabError(f"tau must be a number ≥ 0, got {tau!r}")


def _near_active(q: Tensor, tau: float) -> Tensor:
    return torch.nonzero(q <= 1.0 + tau).reshape(-1)


def _pick_method(point: _Point, n_active: int, method: Method) -> str:
    if method == "auto":
        return "gram" if point.jac.gram_fits(n_active) else "projected-gradient"
    if method not in ("gram", "projected-gradient"):
        raise MarginlabError(f"unknown method {method!r}; expected auto, gram or "
                             "projected-gradient")
    return method


def _solve(point: _Point, tau: float, *, method: Method, max_iter: int, tol: float,
           gram_cache: tuple[Tensor, Tensor, Tensor] | None = None) -> KKTResult:
    jac, q = point.jac, point.q
    idx = _near_active(q, tau)
    chosen = _pick_method(point, idx.numel(), method)
    iterations, builder = 0, "none"
    if chosen == "gram":
        builder = jac.gram_builder
        if gram_cache is not None:
            where = {int(i): k for k, i in enumerate(gram_cache[0].tolist())}
            sel = torch.tensor([where[int(i)] for i in idx], dtype=torch.long)
            G, b = gram_cache[1][sel[:, None], sel[None, :]], gram_cache[2][sel]
        else:
            G, b = jac.gram(idx)
        lam = _nnls_gram(as_numpy(G), as_numpy(b))
        grad = as_numpy(G) @ lam - as_numpy(b)
        b_norm = float(b.norm())
    else:
        lam, grad, iterations, b_norm = _nnls_projected_gradient(jac, idx, point.theta,
                                                                 max_iter, tol)
    lam_t = torch.from_numpy(lam)
    residual = point.theta - jac.vjp(idx, lam_t)
    eps = float(residual.norm())
    theta_norm = float(point.theta.norm())
    lambdas = torch.zeros(q.numel(), dtype=torch.float64)
    lambdas[idx] = lam_t
    delta = float((lam_t * (q[idx] - 1.0)).max()) if idx.numel() else 0.0
    n_samples = jac.X.shape[0]
    per_sample = torch.full((n_samples,), math.inf, dtype=torch.float64)
    per_sample = per_sample.scatter_reduce(0, jac.sample, q, reduce="amin")
    return KKTResult(
        eps=eps, eps_relative=eps / theta_norm, delta=max(delta, 0.0), lambdas=lambdas,
        active=torch.nonzero(lambdas > 0).reshape(-1), near_active=idx, margins=per_sample,
        tau=float(tau), order=point.order, q_min=point.q_min, theta_norm=theta_norm,
        method=chosen, gram_builder=builder, iterations=iterations,
        nnls_gap=_nnls_gap(lam, grad) / max(b_norm, 1e-300),
        constraints=torch.stack([jac.sample, jac.competitor], 1), constraint_margins=q.clone())


def _nnls_gram(G: np.ndarray, b: np.ndarray) -> np.ndarray:
    """argmin_{λ ≥ 0} ½λᵀGλ − λᵀb for G = J Jᵀ, b = Jθ (b lies in the range of G).

    With G = V diag(s) Vᵀ, the factor M = diag(√s) Vᵀ and d = diag(1/√s) Vᵀ b give
    ‖Mλ − d‖² = λᵀGλ − 2λᵀb + const on the range of G; Lawson–Hanson solves it exactly.
    """
    n = b.size
    if n == 0:
        return np.zeros(0)
    s, V = scipy.linalg.eigh(G)
    keep = s > max(float(s[-1]), 0.0) * n * np.finfo(float).eps
    s, V = s[keep], V[:, keep]
    if s.size == 0:
        return np.zeros(n)
    root = np.sqrt(s)
    M = root[:, None] * V.T
    d = (V.T @ b) / root
    lam, _ = scipy.optimize.nnls(M, d, maxiter=50 * n + 100)
    return lam


def _nnls_gap(lam: np.ndarray, grad: np.ndarray) -> float:
    """Largest violation of the NNLS optimality conditions (∇ ≥ 0, λ∘∇ = 0)."""
    if lam.size == 0:
        return 0.0
    viol = np.where(lam > 0, np.abs(grad), np.maximum(-grad, 0.0))
    return float(viol.max())


def _nnls_projected_gradient(jac: MarginJacobian, idx: Tensor, theta: Tensor, max_iter: int,
                             tol: float) -> tuple[np.ndarray, np.ndarray, int, float]:
    """FISTA with gradient-based adaptive restart on f(λ) = ½‖θ − J_Aᵀλ‖², λ ≥ 0.

    Each iteration costs one VJP (r = θ − J_Aᵀz) and one JVP (∇f(z) = −J_A r); the step is
    1/(1.2‖G‖₂) with ‖G‖₂ from power iteration on G = J_A J_Aᵀ. Stops when the gradient
    mapping is below ``tol``·‖J_Aθ‖ (O'Donoghue & Candès 2015 for the restart rule).

    Returns:
        (λ, ∇f(λ), iterations, ‖J_Aθ‖).
    """
    n = idx.numel()
    if n == 0:
        return np.zeros(0), np.zeros(0), 0, 0.0
    b = jac.jvp(idx, theta)
    scale = max(float(b.norm()), 1e-300)
    v = torch.ones(n, dtype=torch.float64) / math.sqrt(n)
    lip = 0.0
    for _ in range(50):
        w = jac.jvp(idx, jac.vjp(idx, v))
        lip_new = float(w.norm())
        v = w / max(lip_new, 1e-300)
        converged = abs(lip_new - lip) <= 1e-4 * lip_new
        lip = lip_new
        if converged:
            break
    lip = 1.2 * max(lip, 1e-300)
    # start on the best multiple of b₊ (one more VJP)
    b_pos = torch.clamp(b, min=0)
    u = jac.vjp(idx, b_pos)
    lam = b_pos * (float(b_pos @ b) / max(float(u @ u), 1e-300))
    z, t, iterations = lam.clone(), 1.0, 0
    for _ in range(max_iter):
        iterations += 1
        g_z = -jac.jvp(idx, theta - jac.vjp(idx, z))
        new = torch.clamp(z - g_z / lip, min=0)
        if lip * float((new - z).norm()) <= tol * scale:
            lam = new
            break
        if float((z - new) @ (new - lam)) > 0:  # momentum points uphill: restart
            t = 1.0
            z = new.clone()
        else:
            t_next = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * t * t))
            z = new + ((t - 1.0) / t_next) * (new - lam)
            t = t_next
        lam = new
    g_lam = -jac.jvp(idx, theta - jac.vjp(idx, lam))
    return as_numpy(lam), as_numpy(g_lam), iterations, scale
