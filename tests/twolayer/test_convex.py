"""The one solver and the one certificate of the two-layer convex problem
(marginlab.twolayer.convex), against scikit-learn's liblinear and weak duality."""

import math

import numpy as np
import pytest
from scipy.special import entr, expit
from sklearn.linear_model import LogisticRegression

from marginlab.twolayer import convex, features, onedim, reference


def _problem(seed: int = 3, n: int = 30, d: int = 3, m: int = 40):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = np.where(X[:, 0] * X[:, 1] + 0.2 * rng.standard_normal(n) > 0, 1.0, -1.0)
    U = rng.standard_normal((m, d))
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    return X, y, features.relu_features(X, U)


def _liblinear(F, y, C):
    kw = {"l1_ratio": 1.0}
    try:
        clf = LogisticRegression(C=C, solver="liblinear", fit_intercept=False, tol=1e-12,
                                 max_iter=100_000, **kw).fit(F, y)
    except TypeError:  # scikit-learn < 1.8
        clf = LogisticRegression(C=C, penalty="l1", solver="liblinear", fit_intercept=False,
                                 tol=1e-12, max_iter=100_000).fit(F, y)
    return clf.coef_.ravel()


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("lam", [1e-2, 1e-3])
def test_solver_matches_liblinear_and_is_certified_by_the_dual(reduction, lam):
    _, y, F = _problem()
    n = len(y)
    c_r = 1.0 if reduction == "sum" else 1.0 / n

    def objective(a):
        return c_r * np.logaddexp(0, -y * (F @ a)).sum() + 2 * lam * np.abs(a).sum()

    a = convex.solve_l1_logistic(F, y, lam, reduction=reduction)
    # liblinear minimizes ‖w‖₁ + C Σ log(1 + e^{−y wᵀf}): C = c_R / (2λ)
    ref = _liblinear(F, y, c_r / (2 * lam))
    assert objective(a) <= objective(ref) + 1e-9 * abs(objective(ref))
    assert objective(a) == pytest.approx(objective(ref), rel=1e-7)
    # Weak duality on the direction set: β = σ(−q) scaled into feasibility bounds every α.
    q = y * (F @ a)
    ratio = np.abs((c_r * y * expit(-q)) @ F).max() / (2 * lam)
    lower = convex.dual_bound(q, ratio, c_r)
    p = expit(-q) / max(1.0, ratio)
    assert lower == pytest.approx(c_r * (entr(p) + entr(1 - p)).sum(), rel=1e-12)
    assert lower <= objective(a) + 1e-15
    assert (objective(a) - lower) / objective(a) < 1e-10  # KKT met: the gap closes
    for other in (ref, np.zeros_like(a), 0.5 * a):
        assert lower <= objective(other) + 1e-15


def test_every_convex_result_carries_the_same_certificate_type():
    X, y, _ = _problem(n=12, d=2)
    U = features.sphere_directions(2, 64).numpy()
    fixed = convex.convex_optimum(X, y, 1e-2, U)
    assert isinstance(fixed.certificate, convex.Certificate)
    assert fixed.certificate.lower_bound == fixed.lower_bound and not fixed.continuum
    rng = np.random.default_rng(0)
    x1 = np.sort(rng.uniform(-1, 1, 8))
    y1 = np.where(np.cos(3 * x1) > 0, 1.0, -1.0)
    exact = onedim.convex_optimum_1d(x1, y1, 1e-2)
    assert isinstance(exact.certificate, convex.Certificate) and exact.certificate.continuum
    assert exact.certificate.sup_ratio == pytest.approx(1.0, abs=1e-6)  # dual-feasible at 1
    ref = reference.reference_optimum(np.stack([x1, np.ones_like(x1)], 1), y1, 1e-2,
                                      reduction="mean")
    assert isinstance(ref.certificate, convex.Certificate) and ref.certificate.continuum
    assert ref.certificate.lower_bound == ref.lower_bound
    # The two exact solvers of the same problem agree within their certified gaps.
    tol = (ref.value - ref.lower_bound) + (exact.value - exact.lower_bound) + 1e-12
    assert math.isclose(ref.value, exact.value, abs_tol=tol)
