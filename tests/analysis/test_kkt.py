"""KKT residuals of (P) and the tangent-kernel SVM, against independent references: scikit-learn's
SVC, scipy's SLSQP on the primal QP, and an explicit Jacobian (in the test only)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.optimize
import torch
from sklearn.svm import SVC
from torch import nn
from torch.func import functional_call, jacrev

from marginlab import models
from marginlab.analysis import MarginJacobian, kkt_curve, kkt_residual, tangent_svm
from marginlab.errors import MarginlabError, NotHomogeneousError, NotSeparatedError


def linear_data(n: int = 40, d: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    w0 = rng.normal(size=d)
    y = np.sign(X @ w0)
    X += 0.3 * y[:, None] * w0 / np.linalg.norm(w0)  # a clear gap
    return X, y, w0


def hard_margin_svm_no_bias(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Hard-margin SVM without bias via scikit-learn: on the data plus its mirror image (−x, −y)
    the optimal bias is 0 by symmetry, and the constraints are those of the original data."""
    Xm, ym = np.vstack([X, -X]), np.concatenate([y, -y])
    svc = SVC(kernel="linear", C=1e10, tol=1e-12).fit(Xm, ym)
    assert abs(svc.intercept_[0]) < 1e-8
    return svc.coef_[0]


def linear_model(w: np.ndarray) -> nn.Module:
    m = nn.Linear(w.size, 1, bias=False).double()
    with torch.no_grad():
        m.weight.copy_(torch.tensor(w)[None])
    return m


def test_linear_svm_solution_is_a_kkt_point():
    X, y, _ = linear_data()
    w = hard_margin_svm_no_bias(X, y)
    res = kkt_residual(linear_model(w), torch.tensor(X), torch.tensor(y).long(), tau=1e-2)
    assert res.method == "gram" and res.order == 1.0
    assert res.eps_relative <= 1e-6
    assert res.delta <= 1e-6
    assert res.margins.min() == pytest.approx(1.0, abs=1e-12)
    # L = 1: θ = Σ λ_n y_n x_n; the multipliers are the SVM's dual variables
    assert torch.equal(res.active, res.near_active)
    recon = (res.lambdas * torch.tensor(y)) @ torch.tensor(X)
    np.testing.assert_allclose(recon.numpy(), w / res.q_min, rtol=1e-6)


def test_projected_gradient_agrees_with_gram():
    X, y, _ = linear_data(n=20, seed=3)
    w = hard_margin_svm_no_bias(X, y)
    Xt, yt = torch.tensor(X), torch.tensor(y).long()
    a = kkt_residual(linear_model(w), Xt, yt, tau=0.5, method="gram")
    b = kkt_residual(linear_model(w), Xt, yt, tau=0.5, method="projected-gradient",
                     max_iter=3000, tol=1e-12)
    assert b.method == "projected-gradient" and b.iterations > 0
    assert a.near_active.numel() > X.shape[1]  # more candidates than dimensions: λ not unique
    assert a.eps_relative <= 1e-9 and b.eps_relative <= 1e-6
    assert b.nnls_gap <= 1e-9


def test_direction_away_from_the_svm_is_far_from_kkt():
    X, y, _ = linear_data()
    w = hard_margin_svm_no_bias(X, y)
    # rotate w by 0.35 rad in a random plane; check it still separates
    rng = np.random.default_rng(1)
    v = rng.normal(size=w.size)
    v -= (v @ w) / (w @ w) * w
    away = math.cos(0.35) * w / np.linalg.norm(w) + math.sin(0.35) * v / np.linalg.norm(v)
    assert (y * (X @ away)).min() > 0
    res = kkt_residual(linear_model(away), torch.tensor(X), torch.tensor(y).long(), tau=1e-2)
    assert res.eps_relative >= 0.1


def test_multiclass_linear_matches_crammer_singer_svm():
    """(P) for a linear C-class model is the multi-class hard-margin SVM
    min ½‖W‖² s.t. (w_y − w_j)ᵀx_n ≥ 1 for j ≠ y_n; solved here by SLSQP on the primal."""
    rng = np.random.default_rng(1)
    C, d, n = 3, 4, 30
    X = rng.normal(size=(n, d))
    y = (X @ rng.normal(size=(C, d)).T).argmax(1)
    rows = []
    for i in range(n):
        for j in range(C):
            if j != y[i]:
                r = np.zeros((C, d))
                r[y[i]] += X[i]
                r[j] -= X[i]
                rows.append(r.ravel())
    A = np.array(rows)
    sol = scipy.optimize.minimize(
        lambda w: 0.5 * w @ w, 10 * rng.normal(size=C * d), jac=lambda w: w, method="SLSQP",
        constraints=[{"type": "ineq", "fun": lambda w: A @ w - 1, "jac": lambda w: A}],
        options={"ftol": 1e-16, "maxiter": 1000})
    assert (A @ sol.x).min() > 1 - 1e-9
    model = nn.Linear(d, C, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor(sol.x.reshape(C, d)))
    Xt, yt = torch.tensor(X), torch.tensor(y)
    res = kkt_residual(model, Xt, yt, tau=1e-3)
    assert res.eps_relative <= 1e-6 and res.delta <= 1e-6
    svm = tangent_svm(model, Xt, yt)
    assert svm.cosine >= 1 - 1e-9


def test_tangent_svm_of_a_linear_model_is_the_linear_svm():
    X, y, w0 = linear_data()
    w = hard_margin_svm_no_bias(X, y)
    res = tangent_svm(linear_model(w0), torch.tensor(X), torch.tensor(y).long())
    expected = float(w @ w0 / (np.linalg.norm(w) * np.linalg.norm(w0)))
    assert res.cosine == pytest.approx(expected, abs=1e-7)
    assert res.svm_margin == pytest.approx(1 / np.linalg.norm(w), rel=1e-6)
    assert res.duality_gap < 1e-6


class _Tiny(nn.Module):
    """Conv (with bias) – ReLU – max-pool – conv – ReLU – flatten – linear: 4×4 → C outputs."""

    def __init__(self, c_out: int):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.ReLU(),
                                 nn.Flatten(), nn.Linear(16, c_out, bias=False))
        with torch.no_grad():
            for p in self.net.parameters():
                p.copy_(torch.randn(p.shape, generator=g))

    def forward(self, x):
        return self.net(x)


class _Shared(nn.Module):
    """A layer applied twice: the layer-product Gram does not apply."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(5, 5, bias=False)
        self.out = nn.Linear(5, 1, bias=False)

    def forward(self, x):
        return self.out(torch.relu(self.fc(torch.relu(self.fc(x)))))


def _explicit_jacobian(model: nn.Module, X: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    model = model.double()
    params = {k: v.detach() for k, v in model.named_parameters()}

    def q(p):
        return (functional_call(model, p, (X,)).reshape(X.shape[0], -1) * coef).sum(1)

    jac = jacrev(q)(params)
    return torch.cat([jac[k].reshape(X.shape[0], -1) for k in params], 1)


@pytest.mark.parametrize("case", ["conv-multiclass", "mlp-binary", "shared-layer"])
def test_gram_by_products_equals_explicit_jacobian(case):
    g = torch.Generator().manual_seed(2)
    if case == "conv-multiclass":
        model, X = _Tiny(3), torch.randn(7, 1, 4, 4, generator=g, dtype=torch.float64)
        y = torch.randint(0, 3, (7,), generator=g)
        builders = ["layer-products", "per-sample-gradients"]
    elif case == "mlp-binary":
        model = models.mlp(6, [5, 4], 1, bias="first", seed=3)
        X = torch.randn(9, 6, generator=g, dtype=torch.float64)
        y = torch.randint(0, 2, (9,), generator=g)
        builders = ["layer-products", "per-sample-gradients"]
    else:
        model, X = _Shared(), torch.randn(6, 5, generator=g, dtype=torch.float64)
        y = torch.randint(0, 2, (6,), generator=g) * 2 - 1
        builders = ["per-sample-gradients"]
    jac = MarginJacobian(model, X, y, batch_size=4)  # batches smaller than N on purpose
    assert jac.gram_builder == builders[0]
    J = _explicit_jacobian(jac.model, X, jac.coef)
    theta = jac.theta()
    idx = torch.tensor([5, 0, 3, 2, 1])
    for builder in builders:
        G, b = jac.gram(idx, builder=builder)
        torch.testing.assert_close(G, J[idx] @ J[idx].T, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(b, J[idx] @ theta, rtol=1e-12, atol=1e-12)
    w = torch.randn(idx.numel(), generator=g, dtype=torch.float64)
    v = torch.randn(theta.numel(), generator=g, dtype=torch.float64)
    torch.testing.assert_close(jac.vjp(idx, w), J[idx].T @ w, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(jac.jvp(idx, v), J[idx] @ v, rtol=1e-12, atol=1e-12)


def _train_two_layer(steps: int, marks: list[int], alpha: float = 0.01):
    """Bias-free two-layer ReLU net, full-batch GD on the exponential loss with the loss-based
    step η = α/L (a step of α on L/L_frozen), float64."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(8, 2, generator=g, dtype=torch.float64)
    y = torch.sign(X[:, 0] + 0.3 * X[:, 1]).long()
    net = models.two_layer(2, 6, bias="none", seed=1).double()
    saved = {}
    for step in range(1, steps + 1):
        q = y.double() * net(X)[:, 0]
        log_loss = torch.logsumexp(-q, 0).detach()
        net.zero_grad()
        torch.exp(-q - log_loss).sum().backward()
        with torch.no_grad():
            for p in net.parameters():
                p -= alpha * p.grad
        if step in marks:
            saved[step] = {k: v.clone() for k, v in net.state_dict().items()}
    return net, X, y, saved


def test_kkt_residual_falls_along_gradient_descent():
    marks = [150, 250, 400, 700, 1000, 1500, 2000]
    net, X, y, saved = _train_two_layer(2000, marks)
    eps, cosines = [], []
    for step in marks:
        net.load_state_dict(saved[step])
        # τ = 0.1: in the hard-min regime discrete steps zig-zag between support vectors, whose
        # margins then differ by a few percent
        res = kkt_residual(net, X, y, tau=0.1)
        assert res.order == 2.0 and res.delta <= 0.1 * float(res.lambdas.max()) + 1e-12
        eps.append(res.eps_relative)
        cosines.append(tangent_svm(net, X, y).cosine)
    assert eps[0] > 0.9 and eps[-1] < 0.05
    assert all(b <= 1.05 * a for a, b in itertools.pairwise(eps))
    # Corollary 4.5: the tangent-kernel SVM direction lines up with θ as θ nears a KKT point
    assert cosines[0] < 0.5 and cosines[-1] > 0.999


def test_kkt_curve_is_monotone_in_tau():
    net, X, y, saved = _train_two_layer(1500, [1500])
    net.load_state_dict(saved[1500])
    taus = [0.0, 1e-3, 1e-2, 0.1, 1.0, 10.0]
    curve = kkt_curve(net, X, y, taus)
    # a larger near-active set can only lower the NNLS residual
    assert all(b <= a * (1 + 1e-9) + 1e-12 for a, b in itertools.pairwise(curve.eps))
    assert curve.n_near_active == sorted(curve.n_near_active)
    assert curve.n_near_active[-1] == X.shape[0]
    for tau, res in zip(taus, curve.results):
        single = kkt_residual(net, X, y, tau=tau)
        assert single.eps == pytest.approx(res.eps, rel=1e-9, abs=1e-12)
        assert res.delta <= tau * float(res.lambdas.max()) + 1e-12


def test_bad_inputs_raise_one_line_errors():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(10, 3, generator=g, dtype=torch.float64)
    y = torch.sign(X[:, 0]).long()
    with pytest.raises(NotHomogeneousError):
        kkt_residual(models.two_layer(3, 4, bias="all"), X, y)
    w = np.array([1.0, 0.0, 0.0])
    with pytest.raises(NotSeparatedError, match="undefined"):
        kkt_residual(linear_model(w), X, -y)
    with pytest.raises(NotSeparatedError):
        tangent_svm(linear_model(w), X, -y)
    with pytest.raises(MarginlabError, match="tau"):
        kkt_residual(linear_model(w), X, y, tau=-1.0)
    with pytest.raises(MarginlabError, match="labels"):
        kkt_residual(linear_model(w), X, y[:5])
    with pytest.raises(MarginlabError, match="labels"):
        kkt_residual(linear_model(w), X, y + 5)
    with pytest.raises(MarginlabError, match="method"):
        kkt_residual(linear_model(w), X, y, method="magic")
    for err in (NotHomogeneousError, NotSeparatedError):
        assert issubclass(err, MarginlabError)
