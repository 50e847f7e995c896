"""The optimum L* = inf_ρ L[ρ] of the mean-field objective, certified (Wei, Lee, Liu & Ma,
Section 5, Example 5.2): the reference the particle flow of :mod:`marginlab.twolayer.meanfield`
is measured against.

By 2-homogeneity L* is the ℓ1-regularized logistic problem over ReLU features on the unit sphere
(:mod:`marginlab.twolayer.convex`), solved here on finer and finer grids of directions and then
made exact by column generation with the pricing step of :mod:`marginlab.twolayer.pricing`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import minimize
from scipy.special import expit
from torch import Tensor

from marginlab.errors import MarginlabError
from marginlab.twolayer.convex import Certificate, dual_bound, solve_l1_logistic
from marginlab.twolayer.features import sphere_directions
from marginlab.twolayer.particles import (
    ParticleMeasure,
    Reduction,
    _check_data,
    _reduction_scale,
)
from marginlab.twolayer.pricing import sup_candidates

__all__ = ["ReferenceOptimum", "reference_optimum"]

_F64 = torch.float64


@dataclass(frozen=True)
class ReferenceOptimum:
    """L* = inf over measures of L[ρ], from the convex problem over directions.

    By 2-homogeneity a measure may be replaced by one on the unit sphere S^d with masses
    c = ∫‖θ‖² dρ along each ray, which costs λ per unit mass (V = λ on S^d); and on S^d,
    w relu(uᵀx) = w‖u‖ relu(ūᵀx) with |w|‖u‖ ≤ 1/2, attained at |w| = ‖u‖ = 1/√2. Hence

        L* = inf_a R(Σ_k a_k relu(ū_kᵀx)) + 2λ Σ_k |a_k|,   ū_k ∈ S^{d−1},

    the ℓ1-regularized logistic regression over relu features (DESIGN.md §6), equivalently
    min_{c ≥ 0} R(F(c⁺ − c⁻)/2) + λΣ(c⁺ + c⁻) over masses c on the sphere. On a finite direction
    set this smooth convex problem is solved by the convex problem's one solver,
    :func:`~marginlab.twolayer.convex.solve_l1_logistic` (L-BFGS-B, then an active-set Newton
    method: L-BFGS-B alone stops early on these nearly collinear columns, a finer grid then giving
    a worse value than the coarse grid it contains). Column generation then makes the direction
    set exact:
    directions with |h(ū)| > 2λ, h(ū) = −Σ_i ∇R_i relu(ūᵀx_i) the first variation along a new
    atom, are added to the support and the problem is solved again until none is left.

    Fenchel duality gives the lower bound L* ≥ c_R Σ_i H(p_i) for any p ∈ [0, 1]^n with
    c_R sup_ū |Σ_i y_i p_i relu(ūᵀx_i)| ≤ 2λ (H the binary entropy in nats, c_R = 1 for a sum,
    1/n for a mean); p = σ(−y_i f_i) at the solution, scaled down to feasibility.

    Attributes:
        value: best primal value found: the objective of an actual measure, so ≥ L*.
        lower_bound: the dual bound, ≤ L* when ``certified``.
        certified: the supremum over the sphere in the dual bound is exact (d ≤ 2); for d ≥ 3
            it is estimated from a random sample with local ascent, so the bound is approximate
            and may exceed L* (an underestimated supremum makes the dual point infeasible).
        grid_sizes: number of directions of each grid level.
        grid_values: the optimum on each grid level (upper bounds on L*).
        rounds: column-generation rounds after the finest grid.
        dual_ratio: sup_ū |h(ū)| / 2λ at the final solution (1 at an exact optimum).
        directions: (k, d) the atoms' directions ū_k (|a_k| > 0).
        coefficients: (k,) a_k.
        certificate: the :class:`~marginlab.twolayer.convex.Certificate` of the best dual
            point (its ``continuum`` is ``certified``).
    """

    value: float
    lower_bound: float
    certified: bool
    grid_sizes: tuple[int, ...]
    grid_values: tuple[float, ...]
    rounds: int
    dual_ratio: float
    directions: Tensor = field(repr=False)
    coefficients: Tensor = field(repr=False)
    certificate: Certificate | None = field(default=None, repr=False)

    @property
    def gap(self) -> float:
        """value − lower_bound: the certified accuracy of ``value`` (when ``certified``)."""
        return self.value - self.lower_bound

    def measure(self) -> ParticleMeasure:
        """A probability measure attaining ``value``: atoms (sign a_k, ū_k)·r/√2 with mass
        2|a_k|/r², r² = 2Σ|a_k|."""
        a = self.coefficients
        d = self.directions.shape[1]
        total = float(a.abs().sum())
        if total == 0.0:
            return ParticleMeasure(
                torch.zeros(0, d + 1, dtype=_F64), torch.zeros(0, dtype=_F64), 1.0
            )
        r = math.sqrt(2 * total)
        theta = torch.cat([torch.sign(a)[:, None], self.directions], dim=1) * (r / math.sqrt(2))
        return ParticleMeasure(theta, 2 * a.abs() / r**2)


def _objective_np(F: np.ndarray, y: np.ndarray, a: np.ndarray, lam: float, scale: float) -> float:
    return float(scale * np.logaddexp(0.0, -y * (F @ a)).sum() + 2 * lam * np.abs(a).sum())


def _refine_atoms(
    x: np.ndarray, y: np.ndarray, dirs: np.ndarray, a: np.ndarray, lam: float, scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """Merge same-sign atoms less than 0.01 rad apart, then move directions and coefficients
    jointly to a local minimum of the finite problem (L-BFGS-B, signs held by bounds)."""
    groups: list[list[int]] = []
    for i in np.argsort(-np.abs(a)):
        for grp in groups:
            j = grp[0]
            if np.sign(a[i]) == np.sign(a[j]) and dirs[i] @ dirs[j] > math.cos(0.01):
                grp.append(i)
                break
        else:
            groups.append([i])
    A = np.array([a[g].sum() for g in groups])
    U = np.stack([np.abs(a[g]) @ dirs[g] for g in groups])
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    K, d = U.shape
    sgn = np.sign(A)
    X, Y, S = torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(sgn)

    def fun(z: np.ndarray) -> tuple[float, np.ndarray]:
        zt = torch.from_numpy(z).requires_grad_()
        ub = zt[K:].view(K, d)
        out = torch.relu(X @ (ub / ub.norm(dim=1, keepdim=True)).T) @ zt[:K]
        value = scale * torch.nn.functional.softplus(-Y * out).sum() + 2 * lam * (S @ zt[:K])
        value.backward()
        return float(value.detach()), zt.grad.numpy()

    bounds = [(0.0, None) if s > 0 else (None, 0.0) for s in sgn] + [(None, None)] * (K * d)
    res = minimize(
        fun,
        np.concatenate([A, U.ravel()]),
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options={"maxiter": 5000, "ftol": 1e-16, "gtol": 1e-13},
    )
    U = res.x[K:].reshape(K, d)
    return U / np.linalg.norm(U, axis=1, keepdims=True), res.x[:K]


def _distinct_peaks(cand: np.ndarray, score: np.ndarray, level: float, k: int) -> np.ndarray:
    """Up to k candidates with score > level, best first, pairwise more than 1e-6 apart."""
    chosen: list[np.ndarray] = []
    for i in np.argsort(-score):
        if score[i] <= level or len(chosen) == k:
            break
        if all(np.linalg.norm(cand[i] - c) > 1e-6 for c in chosen):
            chosen.append(cand[i])
    return np.array(chosen).reshape(-1, cand.shape[1])


def reference_optimum(
    x: Tensor,
    y: Tensor,
    lam: float,
    *,
    reduction: Reduction = "sum",
    n_directions: int | None = None,
    refinements: int = 2,
    max_rounds: int = 50,
    seed: int = 0,
) -> ReferenceOptimum:
    """L* = inf_ρ L[ρ] for the logistic objective of Example 5.2 (see :class:`ReferenceOptimum`).

    Args:
        x: (n, d) inputs; y: (n,) labels ±1; lam: λ > 0.
        reduction: ``sum`` (Example 5.2) or ``mean``.
        n_directions: size of the coarsest grid on S^{d−1} (default 64 for d = 2, 250 for d = 3,
            500 above; d = 1 uses {±1}, the whole sphere).
        refinements: extra grid levels, each 4 times finer; their values show the grid error.
        max_rounds: column-generation rounds after the grids (it stops earlier once the dual
            bound is within 1e-9 (relative) of the value).
        seed: seed of the random grids and samples (d ≥ 3).
    """
    x_t, y_t = _check_data(x, y)
    if not (lam > 0 and math.isfinite(lam)):
        raise MarginlabError(f"the reference optimum needs lam > 0, got {lam}")
    xs, ys = x_t.numpy(), y_t.numpy()
    n, d = xs.shape
    scale = _reduction_scale(reduction, n)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    k0 = n_directions or {2: 64, 3: 250}.get(d, 500)

    sizes, values = [], []
    for level in range(1 if d == 1 else refinements + 1):
        grid = sphere_directions(d, k0 * 4**level, gen).numpy()
        F = np.maximum(xs @ grid.T, 0)
        a = solve_l1_logistic(F, ys, lam, reduction=reduction)
        sizes.append(len(grid))
        values.append(_objective_np(F, ys, a, lam, scale))

    # Column generation from the finest grid's support: add the directions that violate the
    # optimality condition |h(ū)| ≤ 2λ; merge and move the atoms to a local optimum of the
    # finite problem; repeat until the dual bound meets the primal value.
    keep = np.abs(a) > 1e-12 * np.abs(a).max(initial=0.0)
    dirs, a = (grid[keep], a[keep]) if keep.any() else (grid[:1], a[:1])
    best = (math.inf, dirs, a, math.inf)  # (value, directions, coefficients, dual ratio)
    lower, exact, rounds, cert = -math.inf, d <= 2, 0, None
    for rounds in range(max_rounds + 1):
        F = np.maximum(xs @ dirs.T, 0)
        a = solve_l1_logistic(F, ys, lam, np.concatenate([a, np.zeros(len(dirs) - len(a))]),
                              reduction=reduction)
        value = _objective_np(F, ys, a, lam, scale)
        coef = scale * ys * expit(-ys * (F @ a))  # h(ū) = Σ_i coef_i relu(ūᵀx_i)
        cand, exact = sup_candidates(xs, coef, dirs, rng)
        h = np.maximum(cand @ xs.T, 0) @ coef
        top = int(np.argmax(np.abs(h)))
        ratio = float(np.abs(h[top])) / (2 * lam)
        bound = dual_bound(ys * (F @ a), ratio, scale)  # at σ(−q), scaled to feasibility
        if bound > lower:
            lower = bound
            cert = Certificate(lower_bound=bound, sup_ratio=ratio, direction=cand[top],
                               continuum=exact)
        if value < best[0]:
            best = (value, dirs, a, ratio)
        if best[0] - lower <= 1e-9 * max(1.0, abs(best[0])) or rounds == max_rounds:
            break
        keep = np.abs(a) > 1e-12 * np.abs(a).max(initial=0.0)
        dirs, a = dirs[keep], a[keep]
        if d > 1:
            dirs, a = _refine_atoms(xs, ys, dirs, a, lam, scale)
        dirs = np.concatenate([dirs, _distinct_peaks(cand, np.abs(h), 2 * lam, 4)])

    value, dirs, a, ratio = best
    keep = np.abs(a) > 1e-9 * np.abs(a).max(initial=0.0)  # atoms that carry weight
    dirs, a = dirs[keep], a[keep]
    return ReferenceOptimum(
        value=_objective_np(np.maximum(xs @ dirs.T, 0), ys, a, lam, scale),
        lower_bound=lower,
        certified=exact,
        grid_sizes=tuple(sizes),
        grid_values=tuple(values),
        rounds=rounds,
        dual_ratio=ratio,
        directions=torch.from_numpy(dirs).clone(),
        coefficients=torch.from_numpy(a).clone(),
        certificate=cert,
    )
