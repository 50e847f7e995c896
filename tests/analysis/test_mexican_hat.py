"""Lyu & Li, Appendix J (Mexican hat): gradients against autograd of the formula, the reduced
direction flow against the real-time gradient flow, the invariance of the theorem's curve in
closed form, and the direction winding onto the circle with a monotone smoothed margin."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.interpolate import CubicSpline

from marginlab.analysis.mexican_hat import (
    MexicanHatFlow,
    gradient_flow,
    initial_direction,
    simulate,
)
from marginlab.analysis.plots import plot_mexican_hat


def h_reference(theta: torch.Tensor, order: float, p: int) -> torch.Tensor:
    """h(θ) = ρ^L (1 − f(x/ρ, y/ρ)), f the Mexican hat of Absil et al. (2005), written out
    directly from the formula (for autograd)."""
    rho = theta.norm()
    u, v = theta[0] / rho, theta[1] / rho
    r2 = u * u + v * v
    s = 1 / (1 - r2)
    C = 4 * r2**2 / (4 * r2**2 + (1 - r2) ** p)
    f = torch.exp(-s) * (1 - C * torch.sin(torch.atan2(v, u) - s))
    return rho**order * (1 - f)


@pytest.mark.parametrize(("order", "p"), [(2.0, 4), (3.0, 3), (1.5, 4)])
def test_gradient_matches_autograd(order, p):
    flow = MexicanHatFlow(order=order, c_power=p)
    rng = np.random.default_rng(0)
    for _ in range(5):
        theta = rng.normal(size=3) * np.array([1.0, 1.0, 0.6])
        t = torch.tensor(theta, requires_grad=True)
        h = h_reference(t, order, p)
        (g,) = torch.autograd.grad(h, t)
        h_mod, g_mod = flow.h_and_grad(theta)
        assert h_mod == pytest.approx(h.item(), rel=1e-13)
        np.testing.assert_allclose(g_mod, g.numpy(), rtol=1e-10, atol=1e-12)


def test_time_changed_direction_flow_is_the_gradient_flow_path():
    sol = gradient_flow(initial_direction(0.5), 200.0, t_eval=np.linspace(0, 200, 41))
    assert sol.status == 0
    tau_end = sol.y[3, -1]
    ref = simulate(0.5, tau_max=1.01 * tau_end, max_points=10**9)
    spline = CubicSpline(ref.tau, ref.direction)
    theta = sol.y[:3].T
    uh = theta / np.linalg.norm(theta, axis=1, keepdims=True)
    assert np.abs(spline(sol.y[3]) - uh).max() < 1e-7
    # the norm grows and the loss e^{−h} falls along the real flow
    rho = np.linalg.norm(theta, axis=1)
    assert np.all(np.diff(rho) > 0)


@pytest.mark.parametrize("r", [0.3, 0.6, 0.9, 0.97])
def test_theorem_curve_is_invariant_only_with_power_three(r):
    """On ψ = 0, dψ/dτ = 4r⁴/(4r⁴ + (1 − r²)⁴) for the paper's C (p = 4) and 0 for p = 3
    (closed forms from the polar form of the flow)."""
    phi = 1 / (1 - r * r)
    uh = np.array([r * math.cos(phi), r * math.sin(phi), math.sqrt(1 - r * r)])
    for p, expected in ((4, 4 * r**4 / (4 * r**4 + (1 - r * r) ** 4)), (3, 0.0)):
        d = MexicanHatFlow(c_power=p).direction_velocity(uh)
        dr = (uh[0] * d[0] + uh[1] * d[1]) / r
        dphi = (uh[0] * d[1] - uh[1] * d[0]) / r**2
        dpsi = dphi - 2 * r / (1 - r * r) ** 2 * dr
        assert dpsi == pytest.approx(expected, abs=1e-9 * max(1.0, abs(dphi)))


def test_direction_winds_onto_the_circle_with_monotone_smoothed_margin(tmp_path):
    res = simulate(0.5, c_power=4, tau_max=1e6)
    assert res.status == 0
    assert np.allclose(np.linalg.norm(res.direction, axis=1), 1.0, atol=1e-12)
    # never converges: (u, v) keeps turning around the origin ...
    assert res.windings > 2.5
    # ... while settling in the spiral valley ψ ≡ π/2 (mod 2π) and moving outward (r → 1)
    late = res.tau > 1e3
    assert res.valley_offset[late].max() < 1e-3
    assert np.all(np.diff(res.r[late]) > 0) and res.r[-1] > 0.97
    # so the height w = z/ρ = (1 − r²)^{1/2} = (φ − π/2 − 2πk)^{-1/2} on the floor keeps falling
    w = res.direction[late, 2]
    assert np.all(np.diff(w) < 0) and w[-1] < 0.25
    # the last full turn passes near every point of the circle's angle range
    last_turn = res.phi >= res.phi[-1] - 2 * math.pi
    angles = np.sort(np.mod(res.phi[last_turn], 2 * math.pi))
    assert np.diff(np.concatenate([angles, [angles[0] + 2 * math.pi]])).max() < 0.2
    # the smoothed margin γ̃ = 1 − f is non-decreasing (log f non-increasing)
    assert np.all(np.diff(res.log_f) <= 1e-12)
    assert np.all(np.diff(res.smoothed_margin) >= -1e-15)
    png = plot_mexican_hat([res], tmp_path / "mexican_hat.png")
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 20000


def test_power_three_start_stays_on_the_curve_until_it_is_repelled():
    res = simulate(0.5, c_power=3, tau_max=5.0, max_points=10**9)
    early = res.tau < 0.5
    assert np.abs(res.psi[early]).max() < 1e-6  # invariant curve, followed for a while
    assert abs(res.psi[-1]) > 1.0 and res.valley_offset[-1] < 0.2  # then left for the valley


def test_polar_log_time_chart_follows_the_cartesian_flow():
    """The (s, ψ) chart in log τ against the Cartesian integration of the same flow."""
    from marginlab.analysis.mexican_hat import simulate_polar

    ref = simulate(0.5, tau_max=2e3, max_points=10**9)
    res = simulate_polar(0.5, tau_max=1e3, tau_min=1e-2, n_points=200)
    assert res.status == 0
    spline = CubicSpline(ref.tau, ref.direction)
    assert np.abs(spline(res.tau) - res.direction).max() < 1e-6
    flow = MexicanHatFlow()
    for r, psi in ((0.6, 0.3), (0.95, 1.4), (0.995, 1.5707)):
        s = 1 / (1 - r * r)
        phi = psi + s
        uh = np.array([r * math.cos(phi), r * math.sin(phi), math.sqrt(1 - r * r)])
        d = flow.direction_velocity(uh)
        dr = (uh[0] * d[0] + uh[1] * d[1]) / r
        dphi = (uh[0] * d[1] - uh[1] * d[0]) / r**2
        ds, dpsi = flow.polar_velocity(s, psi)
        # the Cartesian form loses digits to cancellation as r → 1
        assert ds == pytest.approx(2 * r * s * s * dr, rel=1e-6)
        assert dpsi == pytest.approx(dphi - 2 * r * s * s * dr, rel=1e-6, abs=1e-9 * abs(dphi))


def test_polar_chart_reaches_the_circle():
    from marginlab.analysis.mexican_hat import simulate_polar

    res = simulate_polar(0.5, tau_max=1e10, rtol=1e-8, atol=1e-10)
    assert res.status == 0 and 1 - res.r[-1] < 0.01 and res.windings > 5
    assert np.all(np.diff(res.smoothed_margin) >= -1e-14)
