"""ℓ1/ℓ2 SVMs over ReLU features, checked against closed forms, an independent QP solver and
Monte Carlo (Wei, Lee, Liu & Ma, Section 4 and Appendix D)."""

import math

import numpy as np
import pytest
from scipy.optimize import minimize

from marginlab import kernels
from marginlab.errors import MarginlabError


def _theorem43_sample(n, d, seed):
    """The Theorem 4.3 distribution, drawn here independently of marginlab.data."""
    rng = np.random.default_rng(seed)
    x12 = rng.choice([-1.0, 1.0], size=(n, 2))
    X = np.hstack([x12, rng.standard_normal((n, d - 2))])
    return X, np.where(x12[:, 0] == x12[:, 1], 1.0, -1.0)


def test_lemma_d1_four_relus_have_l1_margin_sqrt2_over_4():
    X, y = _theorem43_sample(200, 7, seed=1)
    s = 1 / math.sqrt(2)
    U = np.zeros((4, 7))
    U[:, :2] = [[s, s], [-s, -s], [-s, s], [s, -s]]
    res = kernels.l1_margin(X, y, U)
    assert res.margin == pytest.approx(math.sqrt(2) / 4, abs=1e-9)
    # The LP optimum is Lemma D.1's network, f = ¼(relu + relu − relu − relu).
    np.testing.assert_allclose(res.weights, [0.25, 0.25, -0.25, -0.25], atol=1e-9)
    margins = y * (kernels.relu_features(X, U) @ res.weights)
    assert margins.min() == pytest.approx(math.sqrt(2) / 4, abs=1e-9)
    assert res.dual.sum() == pytest.approx(1.0) and np.all(res.dual >= 0)


@pytest.mark.parametrize("s", [0.3, 1.0, 2.0])
def test_two_point_continuum_l1_svm_matches_hand_solution(s):
    # x = s labelled +1 and x = 0 labelled −1, units relu(w x + b), w² + b² = 1.
    # Unit (1, 0) fires on s only (value s); the unit with its kink at s, (−1, s)/√(1+s²), fires
    # on 0 only (value s/√(1+s²)); the dual weights λ ∝ (B, A) certify that no unit firing on both
    # does better, so γ_ℓ1 = AB/(A+B) = s / (1 + √(1+s²)).
    res = kernels.l1_margin_1d([s, 0.0], [1, -1])
    expected = s / (1 + math.sqrt(1 + s * s))
    assert res.margin == pytest.approx(expected, rel=1e-10)
    assert res.upper_bound == pytest.approx(expected, rel=1e-9)
    assert res.gap <= 1e-9
    t = np.sort(np.mod(res.angles, 2 * np.pi))
    np.testing.assert_allclose(t, [0.0, math.atan2(s, -1.0)], atol=1e-9)
    # An even grid misses the kink-at-data-point direction and underestimates.
    grid = kernels.l1_margin(kernels.lift_1d([s, 0.0]), [1, -1],
                             kernels.angles_to_directions(kernels.grid_angles(1000)))
    assert grid.margin <= res.margin + 1e-12


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_continuum_l1_margin_brackets_fine_grids(seed):
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(-1, 1, 9))
    y = rng.choice([-1.0, 1.0], size=9)
    y[:2] = [1, -1]
    res = kernels.l1_margin_1d(x, y)
    assert res.gap <= 1e-9
    prev = 0.0
    for k in (250, 2000, 16000):
        g = kernels.l1_margin(kernels.lift_1d(x), y,
                              kernels.angles_to_directions(kernels.grid_angles(k))).margin
        assert g <= res.upper_bound * (1 + 1e-9)
        prev = g
    assert prev == pytest.approx(res.margin, rel=2e-3)
    # The returned weights achieve the margin on the data.
    q = y * res.decision_function(x)
    assert q.min() == pytest.approx(res.margin, rel=1e-8)
    assert np.abs(res.weights).sum() <= 1 + 1e-9


def test_sup_relu_correlation_matches_dense_evaluation():
    rng = np.random.default_rng(3)
    x, c = rng.normal(size=7), rng.normal(size=7)
    sup, cand, _ = kernels.sup_relu_correlation_1d(x, c)
    t = np.linspace(0, 2 * np.pi, 200001)
    dense = np.abs(np.maximum(np.outer(np.cos(t), x) + np.sin(t)[:, None], 0) @ c).max()
    assert dense <= sup + 1e-12
    # The grid step is 3e-5 rad and the maximum may sit at a kink (first-order loss there).
    assert sup == pytest.approx(dense, rel=1e-5)
    t0 = cand[0]
    assert sup == pytest.approx(abs(np.maximum(x * np.cos(t0) + np.sin(t0), 0) @ c), rel=1e-12)


def _arccos_reference(x, z):
    d = len(x)
    nx, nz = np.linalg.norm(x), np.linalg.norm(z)
    theta = math.acos(np.clip(x @ z / (nx * nz), -1, 1))
    return nx * nz * (math.sin(theta) + (math.pi - theta) * math.cos(theta)) / (2 * math.pi * d)


def test_arccos_kernel_equals_monte_carlo_over_the_sphere():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(3, 4))
    X[2] = -0.7 * X[0] + 0.1 * X[1]  # an obtuse pair as well
    K = kernels.arccos_kernel(X)
    u = rng.normal(size=(400_000, 4))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    F = np.maximum(u @ X.T, 0)
    for i in range(3):
        for j in range(3):
            prod = F[:, i] * F[:, j]
            se = prod.std() / math.sqrt(len(prod))
            assert abs(K[i, j] - prod.mean()) < 4 * se + 1e-12
            assert K[i, j] == pytest.approx(_arccos_reference(X[i], X[j]), rel=1e-12)


def test_l2_margin_two_points_closed_form():
    # Two points of opposite labels, no bias: both are support vectors and
    # γ² = (K_aa K_bb − K_ab²) / (K_aa + K_bb + 2 K_ab).
    xa, xb = np.array([1.0, 0.5, -0.2]), np.array([0.3, 1.0, 0.4])
    Kaa, Kbb, Kab = (_arccos_reference(xa, xa), _arccos_reference(xb, xb),
                     _arccos_reference(xa, xb))
    expected = math.sqrt((Kaa * Kbb - Kab ** 2) / (Kaa + Kbb + 2 * Kab))
    res = kernels.l2_margin(np.stack([xa, xb]), [1, -1])
    assert res.margin == pytest.approx(expected, rel=1e-10)
    assert res.upper_bound == pytest.approx(expected, rel=1e-10)
    assert res.n_support == 2


def test_l2_margin_random_features_matches_primal_qp():
    X, y = _theorem43_sample(10, 5, seed=5)
    F = kernels.random_relu_features(X, 40, seed=2)
    res = kernels.l2_margin(X, y, kernel="random", n_features=40, seed=2)
    # Independent: the primal min ‖w‖² s.t. y_i ⟨w, F_i⟩ ≥ 1 with SLSQP.
    cons = {"type": "ineq", "fun": lambda w: y * (F @ w) - 1, "jac": lambda w: y[:, None] * F}
    w0 = np.linalg.lstsq(y[:, None] * F, np.ones(10), rcond=None)[0]
    sol = minimize(lambda w: w @ w, w0, jac=lambda w: 2 * w, constraints=[cons],
                   method="SLSQP", options={"ftol": 1e-14, "maxiter": 2000})
    assert np.min(y * (F @ sol.x)) > 1 - 1e-9  # SLSQP's point is feasible
    assert res.margin == pytest.approx(1 / np.linalg.norm(sol.x), rel=1e-7)
    assert res.gap < 1e-10


def test_l2_margin_of_theorem43_sample_is_certified_and_below_l1():
    X, y = _theorem43_sample(300, 8, seed=6)
    res = kernels.l2_margin(X, y)
    assert res.gap < 1e-10
    U = np.vstack([np.eye(8), -np.eye(8)])
    U[:4, :2] = [[1, 1], [-1, -1], [-1, 1], [1, -1]]
    assert res.margin < kernels.l1_margin(X, y, U).margin


def test_l1_interpolation_recovers_a_single_unit():
    rng = np.random.default_rng(7)
    X = rng.normal(size=(12, 3))
    U = rng.normal(size=(60, 3))
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    y = 0.7 * np.maximum(X @ U[5], 0) - 0.3 * np.maximum(X @ U[17], 0)
    res = kernels.l1_interpolation(X, y, U)
    np.testing.assert_allclose(res.predict(X), y, atol=1e-8)
    assert res.norm <= 1.0 + 1e-9  # the generating measure has ‖α‖₁ = 1


def test_l2_interpolation_matches_kernel_ridge_limit():
    from sklearn.kernel_ridge import KernelRidge

    rng = np.random.default_rng(8)
    X, y = rng.normal(size=(15, 4)), rng.normal(size=15)
    res = kernels.l2_interpolation(X, y)
    np.testing.assert_allclose(res.predict(X), y, atol=1e-8)
    K = np.array([[_arccos_reference(a, b) for b in X] for a in X])
    assert res.norm == pytest.approx(math.sqrt(y @ np.linalg.solve(K, y)), rel=1e-9)
    Xn = rng.normal(size=(5, 4))
    Kn = np.array([[_arccos_reference(a, b) for b in X] for a in Xn])
    ridge = KernelRidge(alpha=1e-10, kernel="precomputed").fit(K, y)
    np.testing.assert_allclose(res.predict(Xn), ridge.predict(Kn), rtol=1e-5, atol=1e-7)


def test_bound_leading_terms():
    assert kernels.network_margin_bound(0.5, C=2.0, n=100) == pytest.approx(
        2.0 / (0.5 * math.sqrt(2) * 10))
    assert kernels.network_margin_bound(0.5, C=2.0, n=100, depth=3) == pytest.approx(
        2.0 / (0.5 * 3 * 10))
    assert kernels.kernel_margin_bound(0.1, C=3.0, n=50, d=8) == pytest.approx(
        3.0 / (0.1 * 20))
    X = np.ones((4, 2))
    assert kernels.l1_regression_bound(2.0, X=X) == pytest.approx(12 * 2 * math.sqrt(8) / 4)
    assert kernels.l2_regression_bound(2.0, X=X) == pytest.approx(
        2 * math.sqrt(8) / (4 * math.sqrt(2)))


def test_bad_inputs_raise_marginlab_error():
    with pytest.raises(MarginlabError):
        kernels.l1_margin(np.ones((3, 2)), [1, 0, -1], np.eye(2))
    with pytest.raises(MarginlabError):
        kernels.l1_margin(np.ones((3, 2)), [1, 1, -1], np.eye(3))
    with pytest.raises(MarginlabError):
        kernels.l2_margin(np.ones((3, 2)), [1, 1, -1], kernel="rbf")
    with pytest.raises(MarginlabError):
        kernels.arccos_kernel(np.array([[np.nan, 1.0]]))
