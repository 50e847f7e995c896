"""Mean-field two-layer ReLU networks: perturbed Wasserstein gradient flow and its optimum L*.

Wei, Lee, Liu & Ma, Section 5 and Appendix E. A measure ρ over neurons θ = (w, u) ∈ ℝ^{d+1}
gives the outputs ∫Φ dρ, Φ_i(θ) = w relu(uᵀx_i) (2-homogeneous), and the objective

    L[ρ] = R(∫Φ dρ) + ∫V dρ,   V(θ) = λ‖θ‖²,   R(a) = Σ_i log(1 + exp(−y_i a_i)),

R being the SUM of logistic losses as in Example 5.2 (``reduction="mean"`` divides it by n, the
normalization of the finite-width loss (3.2)). The first variation is
L'[ρ](θ) = ⟨∇R(∫Φ dρ), Φ(θ)⟩ + V(θ) and the velocity field v[ρ] = −∇_θ L'[ρ] (Section 5).

The discrete-time perturbed dynamics (Section 5; Theorem E.21)

    ρ_{t+1} = ρ_t + η(−σρ_t + σU_d − ∇·(v[ρ_t]ρ_t))

runs on weighted particles ρ = Σ_j m_j δ_{θ_j} + m_0 δ_0, one step being

1. transport: θ_j ← θ_j + η v[ρ_t](θ_j), the pushforward (I + ηv)#ρ_t whose first-order
   expansion is ρ_t − η∇·(vρ_t);
2. decay: m_j ← (1 − ησ) m_j for every particle, the origin atom included;
3. injection: the mass ησ of σU_d (U_d uniform on the unit sphere S^d ⊂ ℝ^{d+1}) as K fresh
   particles of mass ησ/K at independent uniform positions (a K-point Monte-Carlo quadrature).

Particle budget: when the K fresh particles would take the count above ``max_particles``, the
particles of smallest *effective mass* m_j‖θ_j‖² are moved onto the origin atom m_0 δ_0 first,
and their slots are reused. The origin is a fixed point of the flow (v[ρ](0) = 0, Φ(0) = V(0) = 0),
so total mass ∫dρ stays exactly 1, and a moved particle changes only its own contribution to
∫Φ dρ and ∫V dρ: since |Φ_i(θ)| ≤ ‖x_i‖‖θ‖²/2, the move changes L by at most
(c_R Σ_i ‖x_i‖/2 + λ)·E with E = Σ_moved m_j‖θ_j‖² and c_R = 1 (sum) or 1/n (mean). The run
records the cumulative E (``pruned_effective_mass``). Within a step this is the only departure
from the update above; σ = 0 never prunes and is plain (Wasserstein) gradient descent.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from scipy.optimize import Bounds, minimize
from scipy.special import entr, expit
from torch import Tensor

from marginlab.errors import MarginlabError

__all__ = [
    "FlowConfig",
    "FlowResult",
    "ParticleMeasure",
    "ReferenceOptimum",
    "first_variation",
    "objective",
    "outputs",
    "reference_optimum",
    "simulate",
    "sphere_directions",
    "uniform_sphere",
    "velocity",
]

Reduction = Literal["sum", "mean"]
_F64 = torch.float64


def uniform_sphere(k: int, dim: int, generator: torch.Generator | None = None) -> Tensor:
    """k independent points uniform on the unit sphere of ℝ^dim; (k, dim) float64."""
    z = torch.randn(k, dim, dtype=_F64, generator=generator)
    return z / z.norm(dim=1, keepdim=True)


@dataclass
class ParticleMeasure:
    """ρ = Σ_j m_j δ_{θ_j} + m_0 δ_0 over neurons θ = (w, u) ∈ ℝ^{d+1}.

    Attributes:
        theta: (P, d+1) float64; row j is (w_j, u_j), w_j the output weight.
        mass: (P,) float64, m_j ≥ 0.
        origin_mass: m_0, mass parked at θ = 0 (contributes nothing to L).
    """

    theta: Tensor
    mass: Tensor
    origin_mass: float = 0.0

    def __post_init__(self) -> None:
        self.theta = torch.as_tensor(self.theta, dtype=_F64)
        self.mass = torch.as_tensor(self.mass, dtype=_F64)
        if self.theta.ndim != 2 or self.theta.shape[1] < 2:
            raise MarginlabError(f"theta must be (P, d+1), d >= 1; got {tuple(self.theta.shape)}")
        if self.mass.shape != self.theta.shape[:1]:
            raise MarginlabError(
                f"mass must have shape ({len(self.theta)},), got {self.mass.shape}"
            )
        if bool((self.mass < 0).any()) or self.origin_mass < 0:
            raise MarginlabError("particle masses must be non-negative")

    @classmethod
    def uniform(cls, n: int, d: int, generator: torch.Generator | None = None) -> ParticleMeasure:
        """n particles of mass 1/n uniform on S^d ⊂ ℝ^{d+1} (the measure U_d, sampled)."""
        return cls(uniform_sphere(n, d + 1, generator), torch.full((n,), 1.0 / n, dtype=_F64))

    @classmethod
    def cone(
        cls, n: int, axis: Tensor, half_angle: float, generator: torch.Generator | None = None
    ) -> ParticleMeasure:
        """n particles of mass 1/n on the unit sphere, within ``half_angle`` (radians) of ``axis``.

        The angle to the axis is uniform in [0, half_angle] and the tangent direction uniform.
        """
        axis = torch.as_tensor(axis, dtype=_F64)
        axis = axis / axis.norm()
        t = torch.randn(n, axis.numel(), dtype=_F64, generator=generator)
        t = t - (t @ axis)[:, None] * axis  # tangent to the sphere at the axis
        t = t / t.norm(dim=1, keepdim=True)
        angle = half_angle * torch.rand(n, 1, dtype=_F64, generator=generator)
        theta = torch.cos(angle) * axis + torch.sin(angle) * t
        return cls(theta, torch.full((n,), 1.0 / n, dtype=_F64))

    @property
    def n_particles(self) -> int:
        return int(self.theta.shape[0])

    @property
    def total_mass(self) -> float:
        """∫dρ (1 for a probability measure; conserved by the dynamics)."""
        return float(self.mass.sum()) + self.origin_mass

    @property
    def second_moment(self) -> float:
        """∫‖θ‖² dρ (W_t² of Appendix E.2)."""
        return float(self.mass @ (self.theta * self.theta).sum(1))


def _reduction_scale(reduction: str, n: int) -> float:
    if reduction not in ("sum", "mean"):
        raise MarginlabError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    return 1.0 if reduction == "sum" else 1.0 / n


def _check_data(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    x = torch.as_tensor(x, dtype=_F64)
    y = torch.as_tensor(y, dtype=_F64)
    if x.ndim != 2 or y.shape != x.shape[:1]:
        raise MarginlabError(f"need x (n, d) and y (n,), got {tuple(x.shape)} and {tuple(y.shape)}")
    if not bool(((y == 1) | (y == -1)).all()):
        raise MarginlabError("labels y must be +1 or -1")
    return x, y


def _loss_and_grad(f: Tensor, y: Tensor, scale: float) -> tuple[float, Tensor]:
    """R(f) = scale Σ log(1 + e^{−y_i f_i}) and ∇R(f) = −scale y σ(−y f) (stable forms)."""
    q = y * f
    value = scale * float(torch.nn.functional.softplus(-q).sum())
    return value, -scale * y * torch.sigmoid(-q)


def outputs(measure: ParticleMeasure, x: Tensor) -> Tensor:
    """∫Φ dρ: the distributional network's outputs Σ_j m_j w_j relu(u_jᵀx_i); (n,) float64."""
    th = measure.theta
    return torch.relu(th[:, 1:] @ torch.as_tensor(x, dtype=_F64).T).T @ (measure.mass * th[:, 0])


def objective(
    measure: ParticleMeasure, x: Tensor, y: Tensor, lam: float, reduction: Reduction = "sum"
) -> float:
    """L[ρ] = R(∫Φ dρ) + λ∫‖θ‖² dρ (Section 5, Example 5.2)."""
    x, y = _check_data(x, y)
    value, _ = _loss_and_grad(outputs(measure, x), y, _reduction_scale(reduction, len(y)))
    return value + lam * measure.second_moment


def first_variation(
    measure: ParticleMeasure,
    x: Tensor,
    y: Tensor,
    lam: float,
    theta: Tensor,
    reduction: Reduction = "sum",
) -> Tensor:
    """L'[ρ](θ) = ⟨∇R(∫Φ dρ), Φ(θ)⟩ + λ‖θ‖² at the rows of ``theta`` (K, d+1); (K,) float64.

    Section 5: the derivative of L along mass added at θ. ρ is optimal iff L'[ρ] ≥ 0 on the unit
    sphere (convexity in ρ, proof of Theorem E.4, Eq. (E.13)); where it is negative, the σU_d
    term of (5.2) seeds mass that grows like exp(−4L'[ρ](θ̄)t) (Lemma E.15, Claim E.19).
    """
    x, y = _check_data(x, y)
    _, g = _loss_and_grad(outputs(measure, x), y, _reduction_scale(reduction, len(y)))
    theta = torch.as_tensor(theta, dtype=_F64)
    phi = theta[:, :1] * torch.relu(theta[:, 1:] @ x.T)  # (K, n)
    return phi @ g + lam * (theta * theta).sum(1)


def velocity(
    measure: ParticleMeasure, x: Tensor, y: Tensor, lam: float, reduction: Reduction = "sum"
) -> Tensor:
    """v[ρ](θ_j) = −∇_θ L'[ρ](θ_j) at every particle; (P, d+1) float64.

    With g = ∇R(∫Φ dρ): ∂_w L' = Σ_i g_i relu(uᵀx_i) + 2λw and
    ∂_u L' = w Σ_i g_i 1[uᵀx_i > 0] x_i + 2λu (relu'(0) = 0).
    """
    x, y = _check_data(x, y)
    _, g = _loss_and_grad(outputs(measure, x), y, _reduction_scale(reduction, len(y)))
    w, u = measure.theta[:, 0], measure.theta[:, 1:]
    active = (u @ x.T) > 0  # (P, n)
    G = torch.where(active, g, 0.0) @ x  # (P, d): Σ_i g_i 1[uᵀx_i > 0] x_i
    grad_w = (u * G).sum(1) + 2 * lam * w  # Σ_i g_i relu(uᵀx_i) = uᵀG
    grad_u = w[:, None] * G + 2 * lam * u
    return -torch.cat([grad_w[:, None], grad_u], dim=1)


@dataclass(frozen=True)
class FlowConfig:
    """Settings of the discrete-time perturbed Wasserstein gradient flow.

    Attributes:
        lam: λ of V(θ) = λ‖θ‖².
        sigma: σ, perturbation rate (per unit time); 0 is plain Wasserstein gradient flow.
        eta: η, step size (time per step); needs ησ ≤ 1.
        steps: number of steps; the run covers time η·steps.
        fresh_per_step: K, particles that carry the injected mass ησ each step.
        max_particles: particle budget (see the module docstring for how it is kept).
        reduction: ``sum`` (Example 5.2) or ``mean`` of the logistic losses in R.
        record_every: record L[ρ_t] and the diagnostics every this many steps.
        chunk_size: particles per block of the (P, n) activation products (memory/cache).
        seed: seed of the fresh particles' positions.
    """

    lam: float
    sigma: float = 0.0
    eta: float = 0.01
    steps: int = 1000
    fresh_per_step: int = 8
    max_particles: int = 10_000
    reduction: Reduction = "sum"
    record_every: int = 1
    chunk_size: int = 4096
    seed: int = 0

    def __post_init__(self) -> None:
        if not (self.lam >= 0 and math.isfinite(self.lam)):
            raise MarginlabError(f"lam must be a finite number >= 0, got {self.lam}")
        if not (self.eta > 0 and self.sigma >= 0 and self.eta * self.sigma <= 1):
            raise MarginlabError(
                f"need eta > 0, sigma >= 0, eta*sigma <= 1; got {self.eta}, {self.sigma}"
            )
        for name in ("steps", "fresh_per_step", "max_particles", "record_every", "chunk_size"):
            if int(getattr(self, name)) != getattr(self, name) or getattr(self, name) < 1:
                raise MarginlabError(f"{name} must be an integer >= 1, got {getattr(self, name)}")
        if self.sigma > 0 and self.fresh_per_step > self.max_particles:
            raise MarginlabError("fresh_per_step must not exceed max_particles")
        _reduction_scale(self.reduction, 1)


@dataclass(frozen=True)
class FlowResult:
    """Trajectory of one run; R records at steps 0, record_every, …, and the last step.

    Attributes:
        config: the settings.
        step: (R,) int64 step numbers; time t = η·step.
        time: (R,) float64 times η·step.
        objective: (R,) float64 L[ρ_t].
        total_mass: (R,) float64 ∫dρ_t (origin atom included).
        second_moment: (R,) float64 ∫‖θ‖² dρ_t.
        n_particles: (R,) int64 particle count (origin atom excluded).
        pruned_effective_mass: (R,) float64 cumulative Σ m_j‖θ_j‖² moved to the origin.
        wall_time: seconds spent in the steps.
        measure: ρ at the end.
    """

    config: FlowConfig
    step: Tensor
    time: Tensor
    objective: Tensor
    total_mass: Tensor
    second_moment: Tensor
    n_particles: Tensor
    pruned_effective_mass: Tensor
    wall_time: float
    measure: ParticleMeasure = field(repr=False)


class _Flow:
    """Particle state in preallocated buffers; one fused pass over particles per step.

    The activation pattern 1[u_jᵀx_i > 0] of the current positions is kept as a (P, n) bool
    buffer, so a step costs two products per particle block: G = (1[·] ⊙ g) x for the velocity,
    and uᵀx at the moved positions, which gives both the next pattern and the next ∫Φ dρ.
    """

    def __init__(self, measure: ParticleMeasure, x: Tensor, y: Tensor, cfg: FlowConfig):
        self.x, self.y, self.cfg = x, y, cfg
        self.xt = x.T.contiguous()
        self.scale = _reduction_scale(cfg.reduction, len(y))
        n, p = x.shape[0], measure.n_particles
        cap = max(p, cfg.max_particles) if cfg.sigma > 0 else p
        self.theta = torch.zeros(cap, x.shape[1] + 1, dtype=_F64)
        self.mass = torch.zeros(cap, dtype=_F64)
        self.active = torch.zeros(cap, n, dtype=torch.bool)
        self.theta[:p] = measure.theta
        self.mass[:p] = measure.mass
        self.count = p
        self.origin = float(measure.origin_mass)
        self.pruned = 0.0
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.f = torch.zeros(n, dtype=_F64)
        for s in range(0, p, cfg.chunk_size):
            self.f += self._rows_output(torch.arange(s, min(s + cfg.chunk_size, p)), store=True)

    def _rows_output(self, rows: Tensor, store: bool) -> Tensor:
        """Σ_{j∈rows} m_j w_j relu(u_jᵀx); optionally stores the rows' activation patterns."""
        th = self.theta[rows]
        z = th[:, 1:] @ self.xt
        if store:
            self.active[rows] = z > 0
        return torch.relu(z).T @ (self.mass[rows] * th[:, 0])

    def loss(self) -> tuple[float, Tensor]:
        value, g = _loss_and_grad(self.f, self.y, self.scale)
        th, m = self.theta[: self.count], self.mass[: self.count]
        return value + self.cfg.lam * float(m @ (th * th).sum(1)), g

    def step(self, g: Tensor) -> None:
        cfg, eta, lam2, p = self.cfg, self.cfg.eta, 2 * self.cfg.lam, self.count
        th = self.theta[:p]
        w, u = th[:, 0], th[:, 1:]
        xg = g[:, None] * self.x  # (n, d): row i is g_i x_i
        G = torch.empty(p, self.x.shape[1], dtype=_F64)  # Σ_i 1[uᵀx_i > 0] g_i x_i per particle
        for s in range(0, p, cfg.chunk_size):
            e = min(s + cfg.chunk_size, p)
            torch.mm(self.active[s:e].to(_F64), xg, out=G[s:e])
        grad_w = (u * G).sum(1).add_(w, alpha=lam2)  # uᵀG = Σ_i g_i relu(uᵀx_i)
        grad_u = G.mul_(w[:, None]).add_(u, alpha=lam2)
        w.sub_(grad_w, alpha=eta)
        u.sub_(grad_u, alpha=eta)
        c = self.mass[:p] * w
        f_next = torch.zeros_like(self.f)
        for s in range(0, p, cfg.chunk_size):
            e = min(s + cfg.chunk_size, p)
            z = (u[s:e] @ self.xt).clamp_min_(0)  # (C, n): relu(uᵀx_i) at the moved positions
            f_next.addmv_(z.T, c[s:e])
            torch.ne(z, 0, out=self.active[s:e])
        if cfg.sigma > 0:
            keep = 1.0 - eta * cfg.sigma
            self.mass[: self.count] *= keep
            self.origin *= keep
            f_next *= keep
            f_next += self._inject()
        self.f = f_next

    def _inject(self) -> Tensor:
        cfg, k = self.cfg, self.cfg.fresh_per_step
        free = min(k, self.theta.shape[0] - self.count)
        slots = torch.arange(self.count, self.count + free)
        self.count += free
        df = torch.zeros_like(self.f)
        if free < k:  # move the lightest particles (effective mass m‖θ‖²) to the origin atom
            th, m = self.theta[: self.count - free], self.mass[: self.count - free]
            eff = m * (th * th).sum(1)
            lightest = torch.topk(eff, k - free, largest=False).indices
            df -= self._rows_output(lightest, store=False)
            self.pruned += float(eff[lightest].sum())
            self.origin += float(m[lightest].sum())
            slots = torch.cat([slots, lightest])
        self.theta[slots] = uniform_sphere(k, self.theta.shape[1], self.gen)
        self.mass[slots] = cfg.eta * cfg.sigma / k
        return df + self._rows_output(slots, store=True)

    def measure(self) -> ParticleMeasure:
        return ParticleMeasure(
            self.theta[: self.count].clone(), self.mass[: self.count].clone(), self.origin
        )


def simulate(
    measure: ParticleMeasure, x: Tensor, y: Tensor, config: FlowConfig, *, progress: bool = True
) -> FlowResult:
    """Run the discrete-time perturbed Wasserstein gradient flow from ``measure``.

    Wei, Lee, Liu & Ma, Section 5, ρ_{t+1} = ρ_t + η(−σρ_t + σU_d − ∇·(v[ρ_t]ρ_t)), in the particle
    form described in the module docstring. The input measure is not modified.

    Args:
        measure: ρ_0 (total mass 1 for the paper's setting; any total is carried along).
        x: (n, d) inputs. y: (n,) labels ±1.
        config: step size, σ, λ, particle budget.
        progress: show a tqdm bar (hidden when not on a terminal).
    """
    from tqdm.auto import tqdm

    x, y = _check_data(x, y)
    if measure.theta.shape[1] != x.shape[1] + 1:
        raise MarginlabError(
            f"particles live in R^{measure.theta.shape[1]}, data in R^{x.shape[1]}"
            f" (need d+1 = {x.shape[1] + 1})"
        )
    flow = _Flow(measure, x, y, config)
    rec: dict[str, list] = {k: [] for k in ("step", "obj", "mass", "mom", "count", "pruned")}

    def record(t: int, value: float) -> None:
        th, m = flow.theta[: flow.count], flow.mass[: flow.count]
        rec["step"].append(t)
        rec["obj"].append(value)
        rec["mass"].append(float(m.sum()) + flow.origin)
        rec["mom"].append(float(m @ (th * th).sum(1)))
        rec["count"].append(flow.count)
        rec["pruned"].append(flow.pruned)

    start = time.perf_counter()
    bar = tqdm(range(config.steps), disable=None if progress else True, desc="flow", leave=False)
    for t in bar:
        value, g = flow.loss()
        if t % config.record_every == 0:
            record(t, value)
        flow.step(g)
    record(config.steps, flow.loss()[0])
    wall = time.perf_counter() - start
    return FlowResult(
        config=config,
        step=torch.tensor(rec["step"], dtype=torch.int64),
        time=config.eta * torch.tensor(rec["step"], dtype=_F64),
        objective=torch.tensor(rec["obj"], dtype=_F64),
        total_mass=torch.tensor(rec["mass"], dtype=_F64),
        second_moment=torch.tensor(rec["mom"], dtype=_F64),
        n_particles=torch.tensor(rec["count"], dtype=torch.int64),
        pruned_effective_mass=torch.tensor(rec["pruned"], dtype=_F64),
        wall_time=wall,
        measure=flow.measure(),
    )


# --------------------------------------------------------------------------------------------
# The reference optimum L* = inf_ρ L[ρ]
# --------------------------------------------------------------------------------------------


def sphere_directions(d: int, k: int, generator: torch.Generator | None = None) -> Tensor:
    """About k unit directions on S^{d−1} ⊂ ℝ^d for the reference grid; (k', d) float64.

    d = 1: {+1, −1} (the whole sphere); d = 2: k evenly spaced angles (a grid of k·4^j contains
    the grid of k); d ≥ 3: k independent uniform points.
    """
    if d == 1:
        return torch.tensor([[1.0], [-1.0]], dtype=_F64)
    if d == 2:
        phi = 2 * math.pi * torch.arange(k, dtype=_F64) / k
        return torch.stack([torch.cos(phi), torch.sin(phi)], dim=1)
    return uniform_sphere(k, d, generator)


@dataclass(frozen=True)
class ReferenceOptimum:
    """L* = inf over measures of L[ρ], from the convex problem over directions.

    By 2-homogeneity a measure may be replaced by one on the unit sphere S^d with masses
    c = ∫‖θ‖² dρ along each ray, which costs λ per unit mass (V = λ on S^d); and on S^d,
    w relu(uᵀx) = w‖u‖ relu(ūᵀx) with |w|‖u‖ ≤ 1/2, attained at |w| = ‖u‖ = 1/√2. Hence

        L* = inf_a R(Σ_k a_k relu(ū_kᵀx)) + 2λ Σ_k |a_k|,   ū_k ∈ S^{d−1},

    the ℓ1-regularized logistic regression over relu features (DESIGN.md §6), equivalently
    min_{c ≥ 0} R(F(c⁺ − c⁻)/2) + λΣ(c⁺ + c⁻) over masses c on the sphere. On a finite direction
    set this smooth convex problem with bounds is solved by scipy's truncated Newton method (TNC;
    L-BFGS-B stops early on these nearly collinear columns, a finer grid giving a worse value
    than the coarse grid it contains). Column generation then makes the direction set exact:
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


def _solve_grid(
    F: np.ndarray, y: np.ndarray, lam: float, scale: float, a0: np.ndarray | None = None
) -> np.ndarray:
    """argmin_a scale Σ log(1 + e^{−y_i (Fa)_i}) + 2λ‖a‖₁, F (n, M) the features on a grid.

    Solved in the bounded form a = (c⁺ − c⁻)/2, c± ≥ 0 (objective λΣ(c⁺ + c⁻) + R, smooth and
    convex) by scipy's truncated Newton method with bounds (TNC), run to |Δf| = 0.
    """
    M = F.shape[1]

    def fun(c: np.ndarray) -> tuple[float, np.ndarray]:
        q = y * (F @ (0.5 * (c[:M] - c[M:])))
        s = 0.5 * (F.T @ (-scale * y * expit(-q)))
        value = scale * np.logaddexp(0.0, -q).sum() + lam * c.sum()
        return float(value), np.concatenate([s + lam, lam - s])

    c0 = np.zeros(2 * M)
    if a0 is not None:
        c0 = np.concatenate([2 * np.maximum(a0, 0), 2 * np.maximum(-a0, 0)])
    res = minimize(
        fun,
        c0,
        jac=True,
        method="TNC",
        bounds=Bounds(0.0, np.inf),
        options={"ftol": 0.0, "xtol": 0.0, "gtol": 1e-13, "maxfun": 200_000},
    )
    return 0.5 * (res.x[:M] - res.x[M:])


def _sup_candidates(
    x: np.ndarray, coef: np.ndarray, grid: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, bool]:
    """Directions containing argmax_ū |h(ū)|, h(ū) = Σ_i coef_i relu(ūᵀx_i) (exactly for d ≤ 2).

    Returns (directions (K, d), exact).
    """
    d = x.shape[1]
    if d == 1:
        return np.array([[1.0], [-1.0]]), True
    if d == 2:
        # Between consecutive kinks (angles where ūᵀx_i = 0) h(φ) = sᵀ(cos φ, sin φ), s the sum of
        # coef_i x_i over that arc's active set: |h| peaks at a kink or at ±s/‖s‖.
        nz = np.linalg.norm(x, axis=1) > 0
        ang = np.arctan2(x[nz, 1], x[nz, 0])
        kinks = np.sort(np.mod(np.concatenate([ang + np.pi / 2, ang - np.pi / 2]), 2 * np.pi))
        mids = 0.5 * (kinks + np.roll(kinks, -1))
        mids[-1] = 0.5 * (kinks[-1] + kinks[0] + 2 * np.pi)
        e_mid = np.stack([np.cos(mids), np.sin(mids)], axis=1)
        s = ((e_mid @ x.T) > 0) @ (coef[:, None] * x)  # (arcs, 2)
        psi = np.arctan2(s[:, 1], s[:, 0])
        phi = np.concatenate([kinks, psi, psi + np.pi])
        return np.stack([np.cos(phi), np.sin(phi)], axis=1), True
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
        a = _solve_grid(F, ys, lam, scale)
        sizes.append(len(grid))
        values.append(_objective_np(F, ys, a, lam, scale))

    # Column generation from the finest grid's support: add the directions that violate the
    # optimality condition |h(ū)| ≤ 2λ; merge and move the atoms to a local optimum of the
    # finite problem; repeat until the dual bound meets the primal value.
    keep = np.abs(a) > 1e-12 * np.abs(a).max(initial=0.0)
    dirs, a = (grid[keep], a[keep]) if keep.any() else (grid[:1], a[:1])
    best = (math.inf, dirs, a, math.inf)  # (value, directions, coefficients, dual ratio)
    lower, exact, rounds = -math.inf, d <= 2, 0
    for rounds in range(max_rounds + 1):
        F = np.maximum(xs @ dirs.T, 0)
        a = _solve_grid(F, ys, lam, scale, np.concatenate([a, np.zeros(len(dirs) - len(a))]))
        value = _objective_np(F, ys, a, lam, scale)
        coef = scale * ys * expit(-ys * (F @ a))  # h(ū) = Σ_i coef_i relu(ūᵀx_i)
        cand, exact = _sup_candidates(xs, coef, dirs, rng)
        h = np.maximum(cand @ xs.T, 0) @ coef
        ratio = float(np.abs(h).max()) / (2 * lam)
        p = coef / (scale * ys) / max(1.0, ratio)  # a feasible dual point
        lower = max(lower, scale * float((entr(p) + entr(1 - p)).sum()))
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
    )
