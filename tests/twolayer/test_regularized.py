"""Weakly regularized two-layer networks: margins below and approaching γ_ℓ1/2, and duality
certificates checked against independent computations (Wei et al., Section 2, Prop. 4.1)."""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.optimize import linprog, minimize
from scipy.special import entr

from marginlab import kernels, models, regularized, regularized_1d
from marginlab.errors import MarginlabError


def _random_units(width, seed):
    net = models.two_layer(1, width, bias="first", seed=seed).double()
    gen = torch.Generator().manual_seed(seed)
    t = 2 * math.pi * torch.rand(width, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        net.fc1.weight[:, 0] = torch.cos(t)
        net.fc1.bias[:] = torch.sin(t)
        net.fc2.weight[0] = torch.randn(width, generator=gen, dtype=torch.float64) / width
    return net


def _objective_numpy(net, x, y, lam):
    """L_λ written out directly: mean log(1 + e^{−q}) + λ‖Θ‖²."""
    W = net.fc1.weight.detach().numpy()[:, 0]
    b = net.fc1.bias.detach().numpy()
    a = net.fc2.weight.detach().numpy()[0]
    q = y * (np.maximum(np.outer(x, W) + b, 0) @ a)
    return np.mean(np.logaddexp(0, -q)) + lam * (W @ W + b @ b + a @ a)


TWO_POINTS = (np.array([2.0, 0.0]), np.array([1.0, -1.0]))
GAMMA_TWO_POINTS = 2 / (1 + math.sqrt(5))  # hand-solved in tests/twolayer/test_kernels.py


def test_normalized_margin_never_exceeds_and_approaches_gamma_l1_half():
    x, y = TWO_POINTS
    X, yt = torch.from_numpy(x)[:, None], torch.from_numpy(y)
    net = _random_units(4, seed=0)
    ratios = []
    for lam in (1e-2, 1e-5, 1e-9):
        res = regularized.train(net, X, yt, lam=lam)
        ratios.append(res.normalized_margin / (GAMMA_TWO_POINTS / 2))
        assert res.normalized_margin <= GAMMA_TWO_POINTS / 2 * (1 + 1e-12)
        assert res.lower_bound <= res.objective
        assert res.objective == pytest.approx(_objective_numpy(net, x, y, lam), rel=1e-12)
    assert ratios[-1] > 0.95
    assert all(b >= a - 1e-3 for a, b in itertools.pairwise(ratios))


@pytest.mark.slow
def test_trained_objective_is_certified_optimal_on_six_points():
    rng = np.random.default_rng(1)
    x = np.sort(rng.uniform(-1, 1, 6))
    y = np.array([1.0, 1.0, -1.0, 1.0, -1.0, -1.0])
    gamma = kernels.l1_margin_1d(x, y).upper_bound
    X, yt = torch.from_numpy(x)[:, None], torch.from_numpy(y)
    random_start = _random_units(14, seed=1)
    optimum = None
    for lam in (1e-2, 1e-4, 1e-6):
        optimum = regularized_1d.convex_optimum_1d(x, y, lam, init=optimum)
        assert optimum.gap < 1e-6
        assert optimum.normalized_margin <= gamma / 2 * (1 + 1e-12)
        res = regularized.train(random_start, X, yt, lam=lam, max_reseeds=3)
        # Any network: never below the certified lower bound, never above γ_ℓ1/2.
        assert res.objective >= optimum.lower_bound * (1 - 1e-12)
        assert res.normalized_margin <= gamma / 2 * (1 + 1e-12)
    # The optimum's balanced network, polished, is within 1e-4 of the certified optimum.
    net = models.two_layer(1, 14, bias="first").double()
    regularized.load_measure(net, *regularized.compress_measure(
        optimum.directions, optimum.weights, max_atoms=14))
    res = regularized.train(net, X, yt, lam=1e-6)
    assert res.objective == pytest.approx(_objective_numpy(net, x, y, 1e-6), rel=1e-12)
    assert (res.objective - optimum.lower_bound) / res.objective < 1e-4
    assert res.normalized_margin <= gamma / 2 * (1 + 1e-12)


@pytest.mark.slow
def test_convex_optimum_agrees_with_independent_grid_solution():
    rng = np.random.default_rng(2)
    x = np.sort(rng.uniform(-1, 1, 5))
    y = np.array([1.0, -1.0, -1.0, 1.0, -1.0])
    lam = 1e-3
    opt = regularized_1d.convex_optimum_1d(x, y, lam)
    # Independent: the problem on 720 fixed angles, α = α⁺ − α⁻, solved by SLSQP-free L-BFGS-B
    # on the unscaled objective with a loss written with logaddexp.
    F = kernels.relu_features(kernels.lift_1d(x), kernels.angles_to_directions(
        np.arange(720) * 2 * np.pi / 720))
    m = F.shape[1]

    def fun(z):
        q = y * (F @ (z[:m] - z[m:]))
        s = np.exp(-np.logaddexp(0, q))
        g = -(F.T @ (y * s)) / len(y)
        return np.mean(np.logaddexp(0, -q)) + 2 * lam * z.sum(), np.concatenate(
            [g + 2 * lam, -g + 2 * lam])

    sol = minimize(fun, np.zeros(2 * m), jac=True, method="L-BFGS-B",
                   bounds=[(0, None)] * (2 * m), options={"maxiter": 20000, "ftol": 1e-15,
                                                          "gtol": 1e-12})
    assert opt.lower_bound <= sol.fun * (1 + 1e-12)  # the certificate bounds every solution
    assert opt.value <= sol.fun * (1 + 1e-9)          # the continuum does at least as well
    # Optimal units may put their kink on a data point, which a grid misses to first order.
    assert opt.value == pytest.approx(sol.fun, rel=5e-3)


# ----------------------------------------------------------------------------- 1-D, kink-aware
# Independent references: the dual bound and the ℓ1-SVM are recomputed here from a dense angle
# grid with a Lipschitz allowance (no arcs, no exact pricing), and the LP is solved by HiGHS.

EIGHT_POINTS = (np.linspace(-1.0, 1.0, 8), np.array([1.0, 1.0, -1.0, 1.0, 1.0, -1.0, -1.0, 1.0]))


def _grid_sup(x, c, n_grid=20_000, rel=1e-6):
    """A rigorous upper bound on sup_t |g(t)|, g(t) = Σ_i c_i relu(x_i cos t + sin t), by
    branch and bound on angle cells with the Lipschitz constant L = Σ|c_i|‖(x_i, 1)‖: a cell of
    width Δ holds no value above its endpoints' max + LΔ/2; cells that cannot beat the best
    value found are dropped, the rest split, until LΔ/2 ≤ rel · best."""
    lip = np.abs(c) @ np.hypot(x, 1.0)

    def g(t):
        return np.abs(np.maximum(np.outer(np.cos(t), x) + np.sin(t)[:, None], 0) @ c)

    width = 2 * np.pi / n_grid
    left = np.arange(n_grid) * width
    vals = g(np.append(left, 2 * np.pi))
    lo_v, hi_v = vals[:-1], vals[1:]
    best = float(vals.max())
    while True:
        bound = np.maximum(lo_v, hi_v) + lip * width / 2
        if lip * width / 2 <= rel * best:
            return float(max(best, bound.max()))
        keep = bound > best * (1 + rel)
        left, lo_v, hi_v = left[keep], lo_v[keep], hi_v[keep]
        width /= 16
        left = (left[:, None] + width * np.arange(16)[None, :]).reshape(-1)
        inner = g(left).reshape(-1, 16)
        lo_v = inner.reshape(-1)
        hi_v = np.concatenate([inner[:, 1:], hi_v[:, None]], axis=1).reshape(-1)
        best = max(best, float(lo_v.max()))


def _independent_lower_bound(x, y, q, lam):
    """Fenchel dual bound on min L_λ over all networks: β = σ(−q) scaled into
    (1/n) sup_t |Σ β_i y_i relu(·)| ≤ 2λ, then (1/n) Σ H(β_i)."""
    beta = 1.0 / (1.0 + np.exp(q))
    sup = _grid_sup(x, beta * y) / len(y)
    beta = beta * min(1.0, 2 * lam / sup)
    return float(np.mean(entr(beta) + entr(1 - beta)))


def _gamma_l1_bracket(x, y, n_grid=2000):
    """(lower, upper) bounds on the continuum ℓ1-SVM margin: the HiGHS LP on a set of angles
    (a restriction) and its dual μ priced over the whole circle (weak duality)."""
    # the grid plus the directions ±(1, −x_k) whose kink −b/w is on a data point
    t = np.concatenate([np.arange(n_grid) * 2 * np.pi / n_grid, np.arctan2(-x, 1.0),
                        np.arctan2(x, -1.0)])
    F = np.maximum(np.outer(x, np.cos(t)) + np.sin(t), 0)
    YF = y[:, None] * F
    m = len(t)
    # variables (α⁺, α⁻, γ): max γ s.t. γ − y_i(Fα)_i ≤ 0, Σα± ≤ 1
    A = np.vstack([np.hstack([-YF, YF, np.ones((len(x), 1))]),
                   np.concatenate([np.ones(2 * m), [0.0]])[None, :]])
    res = linprog(np.concatenate([np.zeros(2 * m), [-1.0]]), A_ub=A,
                  b_ub=np.concatenate([np.zeros(len(x)), [1.0]]),
                  bounds=[(0, None)] * (2 * m) + [(None, None)], method="highs")
    assert res.status == 0
    mu = -res.ineqlin.marginals[: len(x)]
    mu = np.maximum(mu, 0) / np.maximum(mu, 0).sum()
    return -res.fun, _grid_sup(x, mu * y)


def _objective_and_margin(net, x, y, lam):
    W = net.fc1.weight.detach().numpy()[:, 0]
    b = net.fc1.bias.detach().numpy()
    a = net.fc2.weight.detach().numpy()[0]
    q = y * (np.maximum(np.outer(x, W) + b, 0) @ a)
    norm_sq = W @ W + b @ b + a @ a
    return np.mean(np.logaddexp(0, -q)) + lam * norm_sq, q, q.min() / norm_sq


def test_gamma_l1_continuum_is_bracketed_by_independent_lp():
    x, y = EIGHT_POINTS
    lower, upper = _gamma_l1_bracket(x, y)
    svm = kernels.l1_margin_1d(x, y)
    assert lower <= svm.margin * (1 + 1e-9) and svm.margin <= upper * (1 + 1e-9)
    assert lower <= svm.upper_bound * (1 + 1e-9)
    assert (upper - lower) / upper < 1e-5  # the bracket is tight enough to mean something


@pytest.mark.parametrize("lam", [1e-4, 1e-6])
def test_train_1d_is_within_1e_4_of_the_certified_optimum(lam):
    """From the certified optimum's network and from a random start: L_λ of the trained
    parameters (ℓ2 penalty) within 1e-4 relative of an independent dual lower bound."""
    x, y = EIGHT_POINTS
    X, yt = torch.from_numpy(x)[:, None], torch.from_numpy(y)
    gamma_upper = _gamma_l1_bracket(x, y)[1]
    svm_upper = kernels.l1_margin_1d(x, y).upper_bound
    opt = regularized_1d.convex_optimum_1d(x, y, lam)
    assert opt.gap < 1e-9 and len(opt.weights) <= len(x)
    starts = {"optimum": models.two_layer(1, 18, bias="first").double(),
              "random": _random_units(18, seed=5)}
    regularized.load_measure(starts["optimum"], opt.directions, opt.weights)
    for name, net in starts.items():
        res = regularized_1d.train_1d(net, X, yt, lam=lam)
        value, q, margin = _objective_and_margin(net, x, y, lam)
        assert res.objective == pytest.approx(value, rel=1e-12), name
        assert regularized.regularized_objective(net, X, yt, lam) == pytest.approx(
            value, rel=1e-12)
        lower = _independent_lower_bound(x, y, q, lam)
        assert lower <= value * (1 + 1e-12)
        assert (value - lower) / value < 1e-4, name
        assert (value - opt.lower_bound) / value < 1e-8, name
        assert opt.lower_bound <= value * (1 + 1e-12)
        assert res.normalized_margin == pytest.approx(margin, rel=1e-10)
        assert margin <= svm_upper / 2 * (1 + 1e-12)
        assert margin <= gamma_upper / 2 * (1 + 1e-12)
    # The optimum's own value is attained (recomputed) and certified independently.
    F = np.maximum(np.outer(x, opt.directions[:, 0]) + opt.directions[:, 1], 0)
    q = y * (F @ opt.weights)
    value = np.mean(np.logaddexp(0, -q)) + 2 * lam * np.abs(opt.weights).sum()
    assert opt.value == pytest.approx(value, rel=1e-12)
    assert (value - _independent_lower_bound(x, y, q, lam)) / value < 1e-4


def test_train_1d_recovers_from_kinks_moved_off_the_data_points():
    """Optimal units put their kink −b/w on data points; perturbed off them, the kink-aware
    local moves alone (no reseeding) return to the certified optimum."""
    x, y = EIGHT_POINTS
    X, yt = torch.from_numpy(x)[:, None], torch.from_numpy(y)
    lam = 1e-6
    opt = regularized_1d.convex_optimum_1d(x, y, lam)
    kinks = -opt.directions[:, 1] / opt.directions[:, 0]
    assert np.isclose(kinks[:, None], x[None, :], atol=1e-9).any(axis=1).sum() >= 1
    net = models.two_layer(1, 18, bias="first").double()
    regularized.load_measure(net, opt.directions, opt.weights)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(1 + 1e-3 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    start = _objective_and_margin(net, x, y, lam)[0]
    res = regularized_1d.train_1d(net, X, yt, lam=lam, reseed=False)
    value, q, _ = _objective_and_margin(net, x, y, lam)
    assert (start - opt.value) / start > 1e-6  # the perturbation mattered
    assert res.reseeds == 0
    assert (value - _independent_lower_bound(x, y, q, lam)) / value < 1e-4
    assert (value - opt.lower_bound) / value < 1e-8


def test_train_1d_rejects_other_networks():
    x, y = EIGHT_POINTS
    with pytest.raises(MarginlabError):
        regularized_1d.train_1d(models.two_layer(2, 4, bias="first"), torch.zeros(8, 2),
                             torch.from_numpy(y), lam=1e-3)
    with pytest.raises(MarginlabError):
        regularized_1d.train_1d(models.two_layer(1, 4, bias="none"),
                             torch.from_numpy(x)[:, None], torch.from_numpy(y), lam=1e-3)
    with pytest.raises(MarginlabError):
        regularized_1d.train_1d(models.two_layer(1, 4, bias="first"),
                             torch.from_numpy(x)[:, None], torch.from_numpy(y), lam=0.0)


def test_dual_lower_bound_is_below_every_network():
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, 7)
    y = rng.choice([-1.0, 1.0], size=7)
    X, yt = torch.from_numpy(x)[:, None], torch.from_numpy(y)
    lam = 1e-3
    opt = regularized_1d.convex_optimum_1d(x, y, lam)
    for seed in range(10):
        net = _random_units(8, seed)
        value = _objective_numpy(net, x, y, lam)
        cert = regularized.certificate(net, X, yt, lam)
        assert cert.continuum
        assert cert.lower_bound <= value
        assert opt.lower_bound <= value


def test_load_measure_builds_the_balanced_network():
    net = models.two_layer(1, 5, bias="first").double()
    angles = np.array([0.3, 2.0, 4.0])
    weights = np.array([0.5, -1.5, 0.25])
    regularized.load_measure(net, kernels.angles_to_directions(angles), weights)
    x = np.linspace(-2, 2, 9)
    with torch.no_grad():
        f = net(torch.from_numpy(x)[:, None]).reshape(-1).numpy()
        norm_sq = float(sum((p * p).sum() for p in net.parameters()))
    expected = np.maximum(np.outer(x, np.cos(angles)) + np.sin(angles), 0) @ weights
    np.testing.assert_allclose(f, expected, rtol=1e-12, atol=1e-12)
    assert norm_sq == pytest.approx(2 * np.abs(weights).sum())


def test_train_in_higher_dimension_uses_the_direction_set():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(30, 3))
    y = np.sign(X[:, 0] * X[:, 1])
    U = rng.normal(size=(50, 3))
    net = models.two_layer(3, 8, bias="none", seed=0)
    res = regularized.train(net, torch.from_numpy(X), torch.from_numpy(y), lam=1e-3,
                            directions=U, max_reseeds=3)
    assert not res.continuum
    assert res.lower_bound <= res.objective
    assert np.isfinite(res.normalized_margin)


def test_bad_arguments_raise():
    net = models.mlp(2, [4, 4], 1)
    with pytest.raises(MarginlabError):
        regularized.train(net, torch.zeros(3, 2), torch.tensor([1.0, -1.0, 1.0]), lam=1e-3)
    net = models.two_layer(2, 4)
    with pytest.raises(MarginlabError):
        regularized.train(net, torch.zeros(3, 2), torch.tensor([1.0, -1.0, 1.0]), lam=0.0)
    with pytest.raises(MarginlabError):
        regularized.train(net, torch.zeros(3, 2), torch.tensor([1.0, 2.0, 1.0]), lam=1e-3)
