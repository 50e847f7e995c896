"""Mean-field two-layer ReLU networks: the perturbed Wasserstein gradient flow.

Wei, Lee, Liu & Ma, Section 5 and Appendix E. The measure ρ over neurons, the objective L[ρ], its
first variation L'[ρ] and the velocity field v[ρ] = −∇_θ L'[ρ] are in
:mod:`marginlab.twolayer.particles` (and re-exported here); the optimum L* the flow is measured
against is :mod:`marginlab.twolayer.reference`.

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

import torch
from torch import Tensor

from marginlab.errors import MarginlabError
from marginlab.twolayer.features import uniform_sphere
from marginlab.twolayer.particles import (
    ParticleMeasure,
    Reduction,
    _check_data,
    _loss_and_grad,
    _reduction_scale,
    first_variation,
    objective,
    outputs,
    velocity,
)

__all__ = ["FlowConfig", "FlowResult", "ParticleMeasure", "first_variation", "objective",
           "outputs", "simulate", "velocity"]

_F64 = torch.float64


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
