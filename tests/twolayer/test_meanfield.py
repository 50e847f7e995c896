"""Mean-field two-layer networks and perturbed Wasserstein gradient flow (Wei, Lee, Liu & Ma,
Section 5): the particle dynamics against autograd gradient descent on finite networks, mass
bookkeeping, the stall-vs-escape result, and the reference optimum L* against closed forms and
independent solvers."""

import json
import math
import warnings

import numpy as np
import pytest
import torch
from scipy.optimize import Bounds, minimize

from marginlab import meanfield as mf
from marginlab import regularized_1d
from marginlab.errors import MarginlabError
from marginlab.experiments import get
from marginlab.experiments.wei_meanfield import cluster_data

F64 = torch.float64


def _data(n=12, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=F64)
    y = torch.where(x[:, 0] * x[:, 1] > 0, 1.0, -1.0).to(F64)
    return x, y


def _gd_standard_network(A, W, x, y, lam, eta, steps, reduction):
    """Plain autograd gradient descent on f(x) = Σ_j a_j relu(w_jᵀx) with the loss
    R(f) + λ Σ_j (a_j² + ‖w_j‖²); returns the objective before every step and after the last."""
    a = A.clone().requires_grad_()
    w = W.clone().requires_grad_()
    scale = 1.0 if reduction == "sum" else 1.0 / len(y)
    values = []
    for step in range(steps + 1):
        f = torch.relu(x @ w.T) @ a
        loss = scale * torch.nn.functional.softplus(-y * f).sum() + lam * (a @ a + (w * w).sum())
        values.append(float(loss.detach()))
        if step == steps:
            break
        (ga, gw) = torch.autograd.grad(loss, (a, w))
        with torch.no_grad():
            a -= eta * ga
            w -= eta * gw
    return torch.tensor(values, dtype=F64), a.detach(), w.detach()


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_single_particle_is_gradient_descent_on_a_width_one_network(reduction):
    """One particle of mass 1 at θ = (a, w): ∫Φ dρ = a relu(wᵀx) and ∫V dρ = λ‖θ‖², so
    L[δ_θ] is the width-1 network's loss F(θ), and v[δ_θ](θ) = −∇_θ(⟨∇R(Φ(θ)), Φ(θ')⟩ +
    λ‖θ'‖²) at θ' = θ is −∇F(θ): a step of the dynamics is a GD step with the same η."""
    x, y = _data()
    g = torch.Generator().manual_seed(1)
    theta0 = torch.randn(1, 4, generator=g, dtype=F64)
    lam, eta, steps = 0.05, 0.03 if reduction == "sum" else 1.0, 60
    ref, a, w = _gd_standard_network(theta0[:, 0], theta0[:, 1:], x, y, lam, eta, steps, reduction)
    rho = mf.ParticleMeasure(theta0, torch.ones(1, dtype=F64))
    cfg = mf.FlowConfig(lam=lam, eta=eta, steps=steps, reduction=reduction)
    res = mf.simulate(rho, x, y, cfg, progress=False)
    assert torch.allclose(res.objective, ref, rtol=1e-12, atol=1e-12)
    assert torch.allclose(res.measure.theta[0], torch.cat([a, w[0]]), rtol=1e-11, atol=1e-12)
    assert (res.measure.theta[0] - theta0[0]).norm() > 0.1  # the run actually moved
    assert ref[-1] < ref[0]


def test_width_m_network_is_the_particle_flow_with_masses_one_over_m():
    """The standard width-m network f = Σ_j a_j relu(w_jᵀx), loss R(f) + λΣ‖θ_j‖², at
    θ_j = ϑ_j/√m equals the mean-field measure (1/m)Σ δ_{ϑ_j}: by 2-homogeneity
    f = (1/m) Σ Φ(ϑ_j) and λΣ‖θ_j‖² = λ∫‖ϑ‖² dρ. Its gradient ∇_{θ_j} = −v(ϑ_j)/√m, so GD
    with step η moves ϑ_j = √m θ_j by η v(ϑ_j): the same η, no width-dependent rescaling."""
    x, y = _data(n=15)
    m, lam, eta, steps = 7, 0.02, 0.02, 40
    g = torch.Generator().manual_seed(3)
    theta_std = torch.randn(m, 4, generator=g, dtype=F64) / math.sqrt(m)
    ref, a, w = _gd_standard_network(
        theta_std[:, 0], theta_std[:, 1:], x, y, lam, eta, steps, "sum"
    )
    rho = mf.ParticleMeasure(math.sqrt(m) * theta_std, torch.full((m,), 1.0 / m, dtype=F64))
    res = mf.simulate(
        rho, x, y, mf.FlowConfig(lam=lam, eta=eta, steps=steps, chunk_size=3), progress=False
    )
    assert torch.allclose(res.objective, ref, rtol=1e-12, atol=1e-12)
    assert torch.allclose(
        res.measure.theta / math.sqrt(m), torch.cat([a[:, None], w], 1), rtol=1e-10, atol=1e-12
    )


def test_velocity_of_weighted_particles_matches_autograd():
    """v[ρ](θ_j) = −(1/m_j) ∂/∂θ_j of L(Σ_k m_k δ_{θ_k}), the objective as a function of the
    particle positions (L' is the derivative of L along a mass moving with θ_j)."""
    x, y = _data(n=10)
    g = torch.Generator().manual_seed(5)
    theta = torch.randn(6, 4, generator=g, dtype=F64)
    mass = torch.rand(6, generator=g, dtype=F64)
    mass /= mass.sum()
    lam = 0.1
    t = theta.clone().requires_grad_()
    f = torch.relu(x @ t[:, 1:].T) @ (mass * t[:, 0])
    loss = torch.nn.functional.softplus(-y * f).sum() + lam * (mass * (t * t).sum(1)).sum()
    (grad,) = torch.autograd.grad(loss, t)
    v = mf.velocity(mf.ParticleMeasure(theta, mass), x, y, lam)
    assert torch.allclose(v, -grad / mass[:, None], rtol=1e-12, atol=1e-13)
    assert mf.objective(mf.ParticleMeasure(theta, mass), x, y, lam) == pytest.approx(
        float(loss.detach()), rel=1e-14
    )


def test_first_variation_is_the_derivative_along_added_mass():
    """L'[ρ](θ) = d/dε L[ρ + ε δ_θ] at ε = 0, by autograd through the objective written out."""
    x, y = _data(n=10)
    g = torch.Generator().manual_seed(6)
    rho = mf.ParticleMeasure(torch.randn(5, 4, generator=g, dtype=F64), torch.full((5,), 0.2))
    probes = torch.randn(3, 4, generator=g, dtype=F64)
    lam = 0.07
    for reduction, scale in (("sum", 1.0), ("mean", 0.1)):
        eps = torch.zeros(3, dtype=F64, requires_grad=True)
        theta = torch.cat([rho.theta, probes])
        mass = torch.cat([rho.mass, eps])
        f = torch.relu(x @ theta[:, 1:].T) @ (mass * theta[:, 0])
        loss = scale * torch.nn.functional.softplus(-y * f).sum()
        loss = loss + lam * (mass * (theta * theta).sum(1)).sum()
        (grad,) = torch.autograd.grad(loss, eps)
        got = mf.first_variation(rho, x, y, lam, probes, reduction)
        assert torch.allclose(got, grad, rtol=1e-12, atol=1e-14)


def test_mass_stays_one_and_objective_finite_with_pruning():
    x, y = _data(n=20, d=2)
    rho = mf.ParticleMeasure.uniform(50, 2, torch.Generator().manual_seed(0))
    cfg = mf.FlowConfig(
        lam=0.01,
        sigma=0.5,
        eta=0.05,
        steps=400,
        fresh_per_step=3,
        max_particles=120,
        seed=4,
        record_every=7,
    )
    res = mf.simulate(rho, x, y, cfg, progress=False)
    assert torch.isfinite(res.objective).all()
    assert (res.total_mass - 1).abs().max() < 1e-12
    assert res.n_particles.max() == 120 and res.n_particles[0] == 50
    assert res.pruned_effective_mass[-1] > 0  # the budget was hit and particles were moved
    assert res.measure.origin_mass > 0
    assert res.measure.total_mass == pytest.approx(1.0, abs=1e-12)
    assert list(res.step[:3]) == [0, 7, 14] and res.step[-1] == 400
    # The recorded L is L of the measure: check the last one against a direct evaluation.
    assert res.objective[-1] == pytest.approx(mf.objective(res.measure, x, y, 0.01), rel=1e-12)


def test_plain_flow_stalls_and_perturbed_flow_reaches_the_optimum():
    """The experiment's mechanism on a small case: a cone of particles at u ≈ 270° with w > 0
    fits only the positive cluster at 330°. σ = 0 ends at a stationary point (E_ρ‖v‖² ≈ 0) that
    is not optimal (L'[ρ] ≈ −2 on directions that carry no mass); σ > 0 grows fresh mass there
    and gets within ε of the certified L*."""
    x, y = cluster_data(8, 3, 15.0, seed=0)
    lam = 0.01
    ref = mf.reference_optimum(x, y, lam, refinements=0)
    axis = torch.tensor([1.0, 0.0, -1.0], dtype=F64)
    gaps, final = {}, {}
    for sigma in (0.0, 1e-3):
        rho = mf.ParticleMeasure.cone(40, axis, math.radians(3), torch.Generator().manual_seed(7))
        cfg = mf.FlowConfig(
            lam=lam,
            sigma=sigma,
            eta=0.05,
            steps=600,
            fresh_per_step=1,
            max_particles=400,
            seed=7,
            record_every=10,
        )
        res = mf.simulate(rho, x, y, cfg, progress=False)
        gaps[sigma], final[sigma] = (res.objective - ref.value).numpy(), res.measure
    # Plain flow: the 16 points of the two other clusters stay at loss ≈ log 2 each.
    assert gaps[0.0][len(gaps[0.0]) // 2 :].min() > 8.0
    rho = final[0.0]
    v = mf.velocity(rho, x, y, lam)
    assert float(rho.mass @ (v * v).sum(1)) < 1e-3
    # L'[ρ](θ) = ⟨∇R(∫Φ dρ), Φ(θ)⟩ + λ on the unit sphere, at balanced θ = (±1, ū)/√2.
    grad_r = -y * torch.sigmoid(-y * mf.outputs(rho, x))
    phi = torch.linspace(0, 2 * math.pi, 361, dtype=F64)[:-1]
    feats = torch.relu(torch.stack([torch.cos(phi), torch.sin(phi)], 1) @ x.T) @ grad_r / 2
    assert min(float(feats.min()), float(-feats.max())) + lam < -1.0
    assert gaps[1e-3][-1] < 0.02
    assert gaps[1e-3].min() > -1e-8  # never below the certified optimum


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("lam", [0.02, 0.1])
def test_reference_optimum_two_points_closed_form(reduction, lam):
    """x = ±1, y = ±1 (d = 1): L* = min_a Σ c_R log(1 + e^{−a_i}) + 2λ(a_1 + a_2), so
    c_R σ(−a) = 2λ, a = log(c_R/(2λ) − 1) and L* = 2[c_R log(c_R/(c_R − 2λ)) + 2λa]."""
    x = torch.tensor([[1.0], [-1.0]], dtype=F64)
    y = torch.tensor([1.0, -1.0], dtype=F64)
    c = 1.0 if reduction == "sum" else 0.5
    a = math.log(c / (2 * lam) - 1)
    closed = 2 * (c * math.log(c / (c - 2 * lam)) + 2 * lam * a)
    ref = mf.reference_optimum(x, y, lam, reduction=reduction)
    assert ref.certified
    assert ref.value == pytest.approx(closed, rel=1e-12)
    assert ref.lower_bound <= closed + 1e-12 and ref.lower_bound == pytest.approx(closed, rel=1e-9)
    assert sorted(ref.coefficients.abs().tolist()) == pytest.approx([a, a], rel=1e-6)


def test_reference_reduction_matches_the_full_sphere_problem():
    """The 2-homogeneous reduction (mass c on S^d costs λc, gives output weight ≤ c/2) checked
    against the problem as stated: min over c ≥ 0 on a grid of θ_k ∈ S^1 ⊂ ℝ² (d = 1) of
    R(Σ c_k Φ(θ_k)) + λΣ c_k, solved here with SLSQP. The grid holds the balanced directions
    |w| = |u| = 1/√2, so it must reach L* exactly, and no grid point can beat it."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(9, 1, generator=g, dtype=F64)
    y = torch.tensor([1, 1, -1, 1, -1, -1, 1, -1, 1], dtype=F64)
    lam = 0.05
    phi = np.radians(np.arange(0, 360, 15.0))
    Phi = np.cos(phi)[None, :] * np.maximum(x.numpy() * np.sin(phi)[None, :], 0)  # (n, K)
    yn = y.numpy()

    def fun(cvec):
        q = yn * (Phi @ cvec)
        grad = Phi.T @ (-yn / (1 + np.exp(q))) + lam
        return np.logaddexp(0, -q).sum() + lam * cvec.sum(), grad

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = minimize(
            fun,
            np.full(len(phi), 0.1),
            jac=True,
            method="SLSQP",
            bounds=Bounds(0, np.inf),
            options={"ftol": 1e-15, "maxiter": 2000},
        )
    ref = mf.reference_optimum(x, y, lam)
    assert res.success
    assert res.fun == pytest.approx(ref.value, rel=1e-8)
    assert res.fun >= ref.lower_bound - 1e-10


def test_reference_optimum_matches_independent_1d_bias_solver():
    """Inputs (x, 1) in ℝ² (1-D data with a first-layer bias) and the mean reduction: the same
    convex problem as marginlab.regularized_1d.convex_optimum_1d (Wei et al., Appendix F.3), solved
    there by another column generation with an active-set Newton method. Both are certified
    over the whole circle, so the values must agree within the two gaps."""
    g = torch.Generator().manual_seed(11)
    xs = torch.linspace(-2, 2, 14, dtype=F64) + 0.05 * torch.randn(14, generator=g, dtype=F64)
    y = torch.where(torch.cos(2.2 * xs) > 0, 1.0, -1.0).to(F64)
    lam = 1e-3
    other = regularized_1d.convex_optimum_1d(xs.numpy(), y.numpy(), lam, tol=1e-6)
    X = torch.stack([xs, torch.ones_like(xs)], dim=1)
    ref = mf.reference_optimum(X, y, lam, reduction="mean")
    assert ref.certified and other.continuum
    tol = 2 * (ref.gap + other.gap * other.value) + 1e-12
    assert ref.value == pytest.approx(other.value, abs=tol)
    assert ref.gap < 1e-8 * ref.value
    assert ref.lower_bound <= other.value + 1e-12 and other.lower_bound <= ref.value + 1e-12


def test_reference_grid_values_match_liblinear_and_refine_downwards():
    """On a fixed grid of 24 directions in ℝ² the optimum equals scikit-learn's liblinear
    ℓ1-regularized logistic regression (C = 1/2λ, no intercept) on the relu features; finer
    grids contain it, so their values can only be lower, and none below the dual bound."""
    from sklearn.linear_model import LogisticRegression

    x, y = _data(n=25, d=2, seed=4)
    lam = 0.02
    ref = mf.reference_optimum(x, y, lam, n_directions=24, refinements=2)
    U = mf.sphere_directions(2, 24).numpy()
    F = np.maximum(x.numpy() @ U.T, 0)
    kw = {"l1_ratio": 1.0}
    try:
        clf = LogisticRegression(
            C=1 / (2 * lam),
            solver="liblinear",
            fit_intercept=False,
            tol=1e-12,
            max_iter=100_000,
            **kw,
        ).fit(F, y.numpy())
    except TypeError:  # scikit-learn < 1.8
        clf = LogisticRegression(
            C=1 / (2 * lam),
            penalty="l1",
            solver="liblinear",
            fit_intercept=False,
            tol=1e-12,
            max_iter=100_000,
        ).fit(F, y.numpy())
    a = clf.coef_.ravel()
    value = np.logaddexp(0, -y.numpy() * (F @ a)).sum() + 2 * lam * np.abs(a).sum()
    assert ref.grid_values[0] == pytest.approx(value, rel=1e-9)
    assert ref.grid_values[0] >= ref.grid_values[1] - 1e-12 >= ref.grid_values[2] - 2e-12
    assert ref.grid_values[2] >= ref.value - 1e-12 >= ref.lower_bound - 2e-12
    assert ref.certified and ref.gap < 1e-7 * ref.value
    # The measure built from the solution attains the value.
    assert mf.objective(ref.measure(), x, y, lam) == pytest.approx(ref.value, rel=1e-12)
    assert ref.measure().total_mass == pytest.approx(1.0, rel=1e-12)


def test_invalid_settings_are_user_errors():
    x, y = _data()
    with pytest.raises(MarginlabError):
        mf.FlowConfig(lam=0.1, sigma=20.0, eta=0.1)  # ησ > 1
    with pytest.raises(MarginlabError):
        mf.FlowConfig(lam=0.1, steps=0)
    with pytest.raises(MarginlabError):
        mf.FlowConfig(lam=0.1, reduction="max")
    with pytest.raises(MarginlabError):
        mf.simulate(mf.ParticleMeasure.uniform(5, 2), x, y, mf.FlowConfig(lam=0.1))
    with pytest.raises(MarginlabError):
        mf.reference_optimum(x, y, 0.0)
    with pytest.raises(MarginlabError):
        mf.objective(mf.ParticleMeasure.uniform(5, 3), x, y * 2, 0.1)


def test_experiment_writes_outputs_and_refuses_a_used_directory(tmp_path):
    exp = get("wei-meanfield")
    over = {
        "n_per_cluster": 5,
        "steps": 60,
        "seeds": 2,
        "sigmas": [0.0, 0.01],
        "n_init": 20,
        "max_particles": 50,
        "epsilons": [1.0, 0.1],
    }
    out = tmp_path / "mf"
    report = exp.run(exp.request("cpu", out, over))
    assert report == out / "report.html" and (out / "report.md").exists()
    for png in ("gap.png", "atoms.png"):
        assert (out / "plots" / png).stat().st_size > 10_000
    trials = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    assert {(t["sigma"], t["seed"]) for t in trials} == {
        (s, k) for s in (0.0, 0.01) for k in (0, 1)
    }
    assert all(t["max_mass_error"] < 1e-12 for t in trials)
    assert json.loads((out / "reference.json").read_text())["certified"] is True
    from marginlab.claims import read_claims

    claims = read_claims(out)
    assert [c.claim.split(" (")[0] for c in claims][:1] == [
        "Plain Wasserstein gradient flow"]
    stalled = all(t["min_gap"] > 1e-2 and t["final_min_first_variation"] < 0
                  for t in trials if t["sigma"] == 0)
    assert claims[0].verdict == ("reproduced" if stalled else "not reproduced")
    hits = sum(t["min_gap"] <= 1e-2 for t in trials if t["sigma"] == 0.01)
    assert f"in {hits} of 2 seeds" in claims[1].measured
    with pytest.raises(MarginlabError):
        exp.run(exp.request("cpu", out, over))
    # An interrupted run (last trial line lost) is completed by resume, without duplicates.
    lines = (out / "trials.jsonl").read_text().splitlines()
    (out / "trials.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    exp.run(exp.request("cpu", out, over, resume=True))
    again = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    assert sorted((t["sigma"], t["seed"]) for t in again) == sorted(
        (t["sigma"], t["seed"]) for t in trials
    )
    exp.run(exp.request("cpu", out, over, overwrite=True))
    assert len((out / "trials.jsonl").read_text().splitlines()) == 4
