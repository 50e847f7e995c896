"""Lyu & Li, Appendix J: a C^∞ homogeneous model whose gradient-flow direction never converges.

The "Mexican hat" of Absil, Mahony & Andrews (2005), in polar coordinates (u, v) =
(r cos φ, r sin φ), reconstructed from the paper's garbled text:

    f(u, v) = exp(−1/(1 − r²)) · [1 − C(r) sin(φ − 1/(1 − r²))]   for r < 1,   0 for r ≥ 1,
    C(r) = 4r⁴ / (4r⁴ + (1 − r²)^p),   p = 4 in Absil et al. and in the paper.

The homogeneous model has three parameters θ = (x, y, z):

    h(θ) = ρ^L (1 − f(x/ρ, y/ρ)),   ρ = ‖θ‖₂,

and every sample has margin q_n(θ) = h(θ); the loss is L(θ) = Σ_n e^{−q_n} (Theorem J.1). The
theorem starts at 0 < r < 1 with φ = 1/(1 − r²) (i.e. ψ := φ − 1/(1 − r²) = 0) and claims
that the limit points of θ/‖θ‖ form the circle {x² + y² = 1, z = 0}.

Two facts the simulation brings out, both checked in the tests:

1. Along the flow, û = θ/ρ obeys dû/dt = N e^{−h} ρ^{L−2} · (−P_û ∇f(û)) with P_û the
   projection orthogonal to û: a time change of the spherical gradient flow of f. In the
   (r, φ) chart this makes dr/dt carry a factor (1 − r²) that Absil's planar flow lacks, and
   the curve ψ = 0 is invariant exactly when p = 3 (then dψ/dt = 0 on it); with the paper's
   p = 4, dψ/dτ = 4r⁴/(4r⁴ + (1 − r²)⁴) > 0 on ψ = 0 (in the time τ of :func:`simulate`). The
   paper's proof uses (1 − r²)⁴ where the flow gives (1 − r²)³.
2. Either way ψ = 0 is a repelling curve: the computed trajectory leaves it at once and falls
   into the spiral valley sin ψ = 1 (ψ ≡ π/2 mod 2π), where f is smallest for each r, and
   follows it outward: φ grows without bound while r → 1, so the direction winds around the
   circle forever and the theorem's conclusion holds, by a different route than its proof.

Since ρ only sets the speed, :func:`simulate` integrates the direction in the time τ with
dτ = N e^{−h} ρ^{L−2} e^{−1/(1−r²)} dt (exact, positive time change; the factor e^{−1/(1−r²)}
would otherwise make the motion underflow as r → 1). With N = 1 sample the smoothed margin is
γ̃ = −log L/ρ^L = 1 − f(û) (= γ), which is non-decreasing because f falls along the flow.
:func:`gradient_flow` integrates the original flow dθ/dt = −∇L(θ) in real time, for checks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.integrate import solve_ivp

from marginlab.errors import MarginlabError

__all__ = ["MexicanHatFlow", "MexicanHatResult", "gradient_flow", "simulate", "simulate_polar"]


@dataclass(frozen=True)
class MexicanHatFlow:
    """The homogeneous Mexican-hat model h(θ) = ρ^L (1 − f(x/ρ, y/ρ)).

    Attributes:
        order: homogeneity order L > 0.
        c_power: the exponent p in C(r) = 4r⁴/(4r⁴ + (1 − r²)^p): 4 is the paper's (and
            Absil et al.'s) function, 3 the one whose curve ψ = 0 is invariant.
    """

    order: float = 2.0
    c_power: int = 4

    def __post_init__(self):
        if not self.order > 0:
            raise MarginlabError(f"order must be > 0, got {self.order}")
        if self.c_power < 1:
            raise MarginlabError(f"c_power must be ≥ 1, got {self.c_power}")

    # ---- f and its gradient, with the factor E = exp(−1/(1 − r²)) kept apart --------------

    def _polar(self, u: float, v: float):
        r2 = u * u + v * v
        r = math.sqrt(r2)
        s = 1.0 / (1.0 - r2)
        p = self.c_power
        D = 4.0 * r2 * r2 + (1.0 - r2) ** p
        C = 4.0 * r2 * r2 / D
        psi = math.atan2(v, u) - s
        return r2, r, s, D, C, psi

    def log_f(self, u: float, v: float) -> float:
        """log f(u, v) (−inf for r ≥ 1)."""
        if u * u + v * v >= 1.0:
            return -math.inf
        _, _, s, _, C, psi = self._polar(u, v)
        return -s + math.log(1.0 - C * math.sin(psi))

    def f(self, u: float, v: float) -> float:
        """The Mexican hat f(u, v)."""
        return math.exp(self.log_f(u, v))

    def scaled_grad(self, u: float, v: float) -> tuple[float, float]:
        """∇f(u, v) / E(r), E = exp(−1/(1 − r²)); (0, 0) for r ≥ 1 or r = 0."""
        r2, r, s, D, C, psi = self._polar(u, v)
        if r2 >= 1.0 or r == 0.0:
            return 0.0, 0.0
        p = self.c_power
        ds = 2.0 * r * s * s  # ds/dr
        dD = 16.0 * r**3 - 2.0 * p * r * (1.0 - r2) ** (p - 1)
        dC = (16.0 * r**3 * D - 4.0 * r2 * r2 * dD) / (D * D)
        sin, cos = math.sin(psi), math.cos(psi)
        F = 1.0 - C * sin
        f_r = -ds * F - dC * sin + C * cos * ds  # ∂f/∂r / E, using ∂ψ/∂r = −ds
        f_phi = -C * cos  # ∂f/∂φ / E
        gu = f_r * u / r - f_phi * v / r2
        gv = f_r * v / r + f_phi * u / r2
        return gu, gv

    # ---- the homogeneous model --------------------------------------------------------------

    def h_and_grad(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """h(θ) and ∇h(θ) by the formulas of Appendix J:
        ∂h/∂θ = ρ^{L−1} (L (1 − f) û − P_û (∂f/∂u, ∂f/∂v, 0))."""
        theta = np.asarray(theta, dtype=np.float64)
        rho = float(np.linalg.norm(theta))
        uh = theta / rho
        f = self.f(uh[0], uh[1])
        logE = -1.0 / (1.0 - uh[0] ** 2 - uh[1] ** 2) if uh[0] ** 2 + uh[1] ** 2 < 1 else -np.inf
        gu, gv = self.scaled_grad(uh[0], uh[1])
        g = math.exp(logE) * np.array([gu, gv, 0.0])
        L = self.order
        grad = rho ** (L - 1) * (L * (1.0 - f) * uh - (g - uh * (uh @ g)))
        return rho**L * (1.0 - f), grad

    def polar_velocity(self, s: float, psi: float) -> tuple[float, float]:
        """(ds/dτ, dψ/dτ) of the direction flow in the chart s = 1/(1 − r²), ψ = φ − s.

        From dr/dτ = −(1 − r²) f_r and dφ/dτ = −f_φ/r² (f_r, f_φ: ∂f/∂r and ∂f/∂φ divided by
        E = e^{−s}): ds/dτ = −2 r s f_r and dψ/dτ = C cos ψ / r² + 2 r s f_r. 1 − C and
        1 − sin ψ are formed without cancellation, so the chart stays accurate as r → 1.
        """
        w2 = 1.0 / s  # 1 − r²
        r2 = 1.0 - w2
        r = math.sqrt(r2)
        p = self.c_power
        D = 4.0 * r2 * r2 + w2**p
        C = 4.0 * r2 * r2 / D
        one_minus_C = w2**p / D
        dD = 16.0 * r**3 - 2.0 * p * r * w2 ** (p - 1)
        dC = (16.0 * r**3 * D - 4.0 * r2 * r2 * dD) / (D * D)
        sin, cos = math.sin(psi), math.cos(psi)
        one_minus_sin = 2.0 * math.sin(0.5 * (psi - 0.5 * math.pi)) ** 2
        F = one_minus_C + C * one_minus_sin  # 1 − C sin ψ
        ds_dr = 2.0 * r * s * s
        f_r = -ds_dr * F - dC * sin + C * cos * ds_dr
        return -2.0 * r * s * f_r, C * cos / r2 + 2.0 * r * s * f_r

    def polar_one_minus_c_sin(self, s: float, psi: float) -> float:
        """1 − C(r) sin ψ at r² = 1 − 1/s, without cancellation (f = e^{−s} times this)."""
        w2 = 1.0 / s
        r2 = 1.0 - w2
        D = 4.0 * r2 * r2 + w2**self.c_power
        C = 4.0 * r2 * r2 / D
        return w2**self.c_power / D + C * 2.0 * math.sin(0.5 * (psi - 0.5 * math.pi)) ** 2

    def direction_velocity(self, uh: np.ndarray) -> np.ndarray:
        """dû/dτ = −P_û (∇f/E)(û), the direction's motion in the time τ of :func:`simulate`."""
        gu, gv = self.scaled_grad(uh[0], uh[1])
        g = np.array([gu, gv, 0.0])
        return -(g - uh * (uh @ g))


@dataclass(frozen=True)
class MexicanHatResult:
    """A direction trajectory of the Mexican-hat flow.

    Attributes:
        tau: (K,) times τ (see the module docstring).
        direction: (K, 3) unit vectors û = θ/‖θ‖ = (u, v, w).
        r: (K,) √(u² + v²). phi: (K,) polar angle of (u, v), unwrapped.
        psi: (K,) φ − 1/(1 − r²): 0 on the theorem's curve, π/2 (mod 2π) in the valley.
        smoothed_margin: (K,) γ̃ = 1 − f(u, v) (one sample, exponential loss).
        log_f: (K,) log f(u, v) = log(1 − γ̃), kept for when f is below float resolution.
        flow: the model (order, c_power).
        r0: initial r (φ0 = 1/(1 − r0²), w0 = √(1 − r0²) > 0).
        nfev: right-hand-side evaluations. status: solve_ivp's status (0: reached tau_max).
    """

    tau: np.ndarray
    direction: np.ndarray
    r: np.ndarray
    phi: np.ndarray
    psi: np.ndarray
    smoothed_margin: np.ndarray
    log_f: np.ndarray
    flow: MexicanHatFlow
    r0: float
    nfev: int
    status: int

    @property
    def windings(self) -> float:
        """Turns of (u, v) around the origin: (φ_end − φ_0)/(2π)."""
        return float((self.phi[-1] - self.phi[0]) / (2 * math.pi))

    @property
    def valley_offset(self) -> np.ndarray:
        """(K,) distance of ψ from the valley floor π/2 (mod 2π), in [0, π]."""
        return np.abs((self.psi - math.pi / 2 + math.pi) % (2 * math.pi) - math.pi)


def initial_direction(r0: float) -> np.ndarray:
    """The theorem's initial direction: r = r0, φ = 1/(1 − r0²), z > 0."""
    if not 0.0 < r0 < 1.0:
        raise MarginlabError(f"the theorem needs 0 < r0 < 1, got {r0}")
    phi0 = 1.0 / (1.0 - r0 * r0)
    return np.array([r0 * math.cos(phi0), r0 * math.sin(phi0), math.sqrt(1.0 - r0 * r0)])


def simulate(r0: float = 0.5, *, order: float = 2.0, c_power: int = 4, tau_max: float = 1e6,
             rtol: float = 1e-10, atol: float = 1e-12, method: str = "LSODA",
             max_points: int = 20000) -> MexicanHatResult:
    """Integrate the direction of the Mexican-hat gradient flow from Theorem J.1's start.

    Args:
        r0: initial r ∈ (0, 1); φ0 = 1/(1 − r0²) puts the start on the curve ψ = 0.
        order: homogeneity order L (only rescales time: the path of û does not depend on it).
        c_power: p in C(r) (4: the paper's function).
        tau_max: end of the integration in τ.
        rtol, atol: solve_ivp tolerances.
        method: solve_ivp method; the valley is stiff across, so an implicit or switching
            method (LSODA, Radau, BDF) is needed.
        max_points: keep at most about this many of the solver's steps (evenly in arc length).

    Returns:
        A :class:`MexicanHatResult`.
    """
    flow = MexicanHatFlow(order=order, c_power=c_power)
    x0 = initial_direction(r0)
    sol = solve_ivp(lambda t, x: flow.direction_velocity(x), (0.0, float(tau_max)), x0,
                    method=method, rtol=rtol, atol=atol)
    if sol.status < 0:
        raise MarginlabError(f"the Mexican-hat integration failed: {sol.message}")
    # thin evenly in arc length (the solver's steps crowd where the valley is stiff)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(sol.y, axis=1), axis=0))])
    marks = np.linspace(0.0, arc[-1], min(sol.t.size, max_points))
    keep = np.unique(np.concatenate([[0, sol.t.size - 1],
                                     np.searchsorted(arc, marks).clip(0, sol.t.size - 1)]))
    tau, X = sol.t[keep], sol.y[:, keep].T
    X = X / np.linalg.norm(X, axis=1, keepdims=True)
    r = np.hypot(X[:, 0], X[:, 1])
    phi = np.unwrap(np.arctan2(X[:, 1], X[:, 0]))
    psi = phi - 1.0 / (1.0 - r * r)
    log_f = np.array([flow.log_f(u, v) for u, v in X[:, :2]])
    return MexicanHatResult(tau=tau, direction=X, r=r, phi=phi, psi=psi,
                            smoothed_margin=1.0 - np.exp(log_f), log_f=log_f, flow=flow,
                            r0=float(r0), nfev=int(sol.nfev), status=int(sol.status))


def simulate_polar(r0: float = 0.5, *, c_power: int = 4, order: float = 2.0,
                   tau_max: float = 1e12, tau_min: float = 1e-3, rtol: float = 1e-10,
                   atol: float = 1e-12, n_points: int = 4000) -> MexicanHatResult:
    """The direction flow of :func:`simulate`, integrated in the chart (s, ψ) over log τ.

    s = 1/(1 − r²) and ψ = φ − s turn the winding about the circle r = 1 into a slow drift
    of s along the valley ψ ≈ π/2 (mod 2π), and σ = log τ lets one integration cover many
    decades of τ (d/dσ = τ d/dτ); the valley is stiff across, so the solver is Radau.
    The start is the theorem's (s = 1/(1 − r0²), ψ = 0); the first stretch, τ ∈ [0, tau_min],
    is integrated in Cartesian form by :func:`simulate`.

    Args:
        r0, c_power, order: as in :func:`simulate`.
        tau_max: end of the integration in τ.
        tau_min: where the log-time chart takes over.
        rtol, atol: solver tolerances (on s and ψ).
        n_points: output points, evenly spaced in log τ.

    Returns:
        A :class:`MexicanHatResult` (τ from ``tau_min``; ``nfev`` counts both stretches).
    """
    if not tau_max > tau_min > 0:
        raise MarginlabError(f"need tau_max > tau_min > 0, got {tau_max}, {tau_min}")
    flow = MexicanHatFlow(order=order, c_power=c_power)
    head = simulate(r0, order=order, c_power=c_power, tau_max=tau_min, rtol=rtol, atol=atol)
    r_h, phi_h = float(head.r[-1]), float(head.phi[-1])
    s0 = 1.0 / (1.0 - r_h * r_h)
    state0 = [s0, phi_h - s0]

    def rhs(sigma, state):
        ds, dpsi = flow.polar_velocity(state[0], state[1])
        tau = math.exp(sigma)
        return [tau * ds, tau * dpsi]

    sigmas = np.linspace(math.log(tau_min), math.log(tau_max), n_points)
    sol = solve_ivp(rhs, (sigmas[0], sigmas[-1]), state0, method="Radau", rtol=rtol, atol=atol,
                    t_eval=sigmas)
    if sol.status < 0:
        raise MarginlabError(f"the Mexican-hat integration failed: {sol.message}")
    s_, psi = sol.y
    r = np.sqrt(1.0 - 1.0 / s_)
    phi = psi + s_
    X = np.column_stack([r * np.cos(phi), r * np.sin(phi), np.sqrt(1.0 / s_)])
    log_f = np.array([-si + math.log(flow.polar_one_minus_c_sin(si, pi))
                      for si, pi in zip(s_, psi)])
    return MexicanHatResult(tau=np.exp(sol.t), direction=X, r=r, phi=phi, psi=psi,
                            smoothed_margin=1.0 - np.exp(log_f), log_f=log_f, flow=flow,
                            r0=float(r0), nfev=int(sol.nfev) + head.nfev, status=int(sol.status))


def gradient_flow(theta0: np.ndarray, t_max: float, *, n_samples: int = 1, order: float = 2.0,
                  c_power: int = 4, rtol: float = 1e-10, atol: float = 1e-12,
                  t_eval: np.ndarray | None = None):
    """The original flow dθ/dt = −∇L(θ) = N e^{−h(θ)} ∇h(θ) in real time t (Theorem J.1),
    with τ(t) of :func:`simulate` integrated alongside as a fourth state.

    Returns:
        solve_ivp's solution; ``y[:3]`` is θ(t), ``y[3]`` is τ(t).
    """
    flow = MexicanHatFlow(order=order, c_power=c_power)

    def rhs(t, state):
        theta = state[:3]
        h, grad = flow.h_and_grad(theta)
        rho = float(np.linalg.norm(theta))
        uh = theta / rho
        r2 = uh[0] ** 2 + uh[1] ** 2
        speed = n_samples * math.exp(-h)
        dtau = speed * rho ** (order - 2) * (math.exp(-1.0 / (1.0 - r2)) if r2 < 1 else 0.0)
        return [*(speed * grad), dtau]

    return solve_ivp(rhs, (0.0, float(t_max)), [*np.asarray(theta0, dtype=float), 0.0],
                     method="LSODA", rtol=rtol, atol=atol, t_eval=t_eval, dense_output=False)
