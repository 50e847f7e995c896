"""Mean-field two-layer ReLU networks: a measure over neurons as weighted particles, and the
objective L[ρ] with its first variation and velocity field.

Wei, Lee, Liu & Ma, Section 5 and Appendix E. A measure ρ over neurons θ = (w, u) ∈ ℝ^{d+1}
gives the outputs ∫Φ dρ, Φ_i(θ) = w relu(uᵀx_i) (2-homogeneous), and the objective

    L[ρ] = R(∫Φ dρ) + ∫V dρ,   V(θ) = λ‖θ‖²,   R(a) = Σ_i log(1 + exp(−y_i a_i)),

R being the SUM of logistic losses as in Example 5.2 (``reduction="mean"`` divides it by n, the
normalization of the finite-width loss (3.2)). The first variation is
L'[ρ](θ) = ⟨∇R(∫Φ dρ), Φ(θ)⟩ + V(θ) and the velocity field v[ρ] = −∇_θ L'[ρ] (Section 5).
The flow that moves ρ along v[ρ] is :mod:`marginlab.twolayer.meanfield`, the optimum L* is
:mod:`marginlab.twolayer.reference`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from marginlab.errors import MarginlabError
from marginlab.twolayer.features import uniform_sphere

__all__ = ["ParticleMeasure", "Reduction", "first_variation", "objective", "outputs",
           "velocity"]

Reduction = Literal["sum", "mean"]
_F64 = torch.float64


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
