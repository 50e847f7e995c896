"""Multi-class (P) with one constraint per pair (Lyu & Li, Appendix G), against a dense
reference built in the test: every pair's gradient by autograd, the residual by
``scipy.optimize.nnls`` on the explicit Jacobian."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize
import torch
from torch import nn

from marginlab.analysis import kkt_residual
from marginlab.losses import log_loss_from_logits, log_sum


class _Power(nn.Module):
    def __init__(self, power: int):
        super().__init__()
        self.power = power

    def forward(self, x):
        return torch.relu(x) ** self.power


def _net(d: int, m: int, c: int, power: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(d, m, bias=False), _Power(power),
                        nn.Linear(m, c, bias=False)).double()
    return net


def _trained(power: int, c: int = 4, n: int = 16, steps: int = 300, seed: int = 0):
    """A net labelled by its own arg-max at initialization (so it separates the data), then
    trained by GD on log L (cross-entropy, log space), which brings competitors together."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 5, generator=g, dtype=torch.float64)
    net = _net(5, 8, c, power, seed)
    with torch.no_grad():
        y = net(X).argmax(1)
    for _ in range(steps):
        log_loss = log_sum(log_loss_from_logits(net(X), y))
        net.zero_grad()
        log_loss.backward()  # GD on log L: the step η = α/L on L
        with torch.no_grad():
            for p in net.parameters():
                p -= 0.02 * p.grad
    return net, X, y


def _dense_residual(net: nn.Module, X: torch.Tensor, y: torch.Tensor, order: float, tau: float,
                    c: int):
    """ε/‖θ‖ of (P) over all near-active pairs, by explicit gradients and scipy's NNLS."""
    params = list(net.parameters())
    with torch.no_grad():
        out = net(X)
    pairs = [(i, j) for i in range(X.shape[0]) for j in range(c) if j != int(y[i])]
    s = np.array([float(out[i, y[i]] - out[i, j]) for i, j in pairs])
    q_min = s.min()
    assert q_min > 0
    scale = q_min ** (-1.0 / order)
    theta = torch.cat([p.detach().reshape(-1) for p in params]).numpy() * scale
    rows = []
    for i, j in pairs:
        o = net(X[i : i + 1])[0]
        gr = torch.autograd.grad(o[y[i]] - o[j], params)
        rows.append(torch.cat([g.reshape(-1) for g in gr]).numpy())
    # ∇s is homogeneous of order L − 1: the gradient at the rescaled θ
    J = np.array(rows) * scale ** (order - 1)
    s = s / q_min
    near = np.nonzero(s <= 1 + tau)[0]
    _, eps = scipy.optimize.nnls(J[near].T, theta, maxiter=100 * len(pairs))
    return eps / np.linalg.norm(theta), len(near), s


@pytest.mark.parametrize("power,order", [(2, 3.0), (1, 2.0)])
def test_pair_kkt_matches_dense_reference(power, order):
    c = 4
    net, X, y = _trained(power, c=c)
    for tau in (0.05, 0.5, 3.0):
        ref, n_near, s = _dense_residual(net, X, y, order, tau, c)
        res = kkt_residual(net, X, y, tau=tau, method="gram")
        assert res.order == order
        assert res.n_constraints == X.shape[0] * (c - 1)
        assert res.near_active.numel() == n_near
        np.testing.assert_allclose(res.constraint_margins.numpy(), s, rtol=1e-12)
        assert res.eps_relative == pytest.approx(ref, rel=1e-8, abs=1e-12)
        pg = kkt_residual(net, X, y, tau=tau, method="projected-gradient", max_iter=20000,
                          tol=1e-13)
        assert pg.eps_relative == pytest.approx(ref, rel=1e-5, abs=1e-9)
        # constraints are (n, j ≠ y_n); per-sample margins are their minima
        assert (res.constraints[:, 1] != y[res.constraints[:, 0]]).all()
        np.testing.assert_allclose(res.margins.numpy(), s.reshape(-1, c - 1).min(1),
                                   rtol=1e-12)


def test_pairs_certify_what_one_competitor_per_sample_cannot():
    """Two samples, each with two tied competitors, and the closed-form optimum of (P) for a
    linear 3-class model: W = [[2/3, −1/3], [−1/3, 2/3], [−1/3, −1/3]], every pair tight with
    λ = 1/3. One competitor per sample leaves a residual, all pairs leave none."""
    X = torch.eye(2, dtype=torch.float64)
    y = torch.tensor([0, 1])
    model = nn.Linear(2, 3, bias=False).double()
    W = torch.tensor([[2.0, -1.0], [-1.0, 2.0], [-1.0, -1.0]], dtype=torch.float64) / 3
    with torch.no_grad():
        model.weight.copy_(W)
    pairs = kkt_residual(model, X, y, tau=1e-9)
    assert pairs.eps_relative <= 1e-12
    assert pairs.near_active.numel() == 4
    np.testing.assert_allclose(pairs.lambdas.numpy(), np.full(4, 1 / 3), rtol=1e-12)
    one = kkt_residual(model, X, y, tau=1e-9, constraints="arg-max")
    assert one.n_constraints == 2
    # the arg-max rows (first rival on ties): ∇s_{0,1} and ∇s_{1,0} in W's row-major layout
    J = np.array([[1, 0, -1, 0, 0, 0], [0, -1, 0, 1, 0, 0]], dtype=float)
    _, ref = scipy.optimize.nnls(J.T, W.numpy().ravel())
    assert one.eps == pytest.approx(ref, rel=1e-12)
    assert one.eps_relative > 0.3


def test_binary_rows_are_the_samples():
    g = torch.Generator().manual_seed(1)
    X = torch.randn(10, 3, generator=g, dtype=torch.float64)
    y = torch.sign(X[:, 0]).long()
    model = nn.Linear(3, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0.0, 0.0]]))
    res = kkt_residual(model, X, y, tau=0.2)
    assert res.n_constraints == 10
    assert torch.equal(res.constraints[:, 0], torch.arange(10))
    assert (res.constraints[:, 1] == -1).all()
    q = (y.double() * (X @ torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)))
    np.testing.assert_allclose(res.margins.numpy(), (q / q.min()).numpy(), rtol=1e-12)


def test_relu_hull_residual_against_nnls_and_extremes():
    from marginlab.analysis.clarke import relu_hull_residual

    net, X, y = _trained(1)
    # no unit counted as near a kink: the hull problem is (P)'s NNLS with autograd's gradients
    plain = relu_hull_residual(net, X, y, tau=0.5, rel=0.0)
    ref = kkt_residual(net, X, y, tau=0.5)
    assert plain.n_kinks == 0
    assert plain.eps_relative == pytest.approx(ref.eps_relative, rel=1e-8)
    # a generous kink tolerance: the hull contains relu' = 0 and relu' = 1 for those units,
    # so its ε is at most either extreme's (scipy's NNLS on the explicit Jacobians)
    hull = relu_hull_residual(net, X, y, tau=0.5, rel=0.3)
    assert hull.n_kinks > 0 and hull.eps_relative <= hull.eps_relative_fixed + 1e-12
    W1, W2 = net[0].weight.detach(), net[2].weight.detach()
    out = net(X).detach()
    pairs = [(i, j) for i in range(X.shape[0]) for j in range(4) if j != int(y[i])]
    s = np.array([float(out[i, y[i]] - out[i, j]) for i, j in pairs])
    c = s.min() ** -0.5
    W1s, W2s = W1 * c, W2 * c
    H = X @ W1s.T
    kink = H.abs() <= 0.3 * X.norm(dim=1, keepdim=True) * W1s.norm(dim=1)[None, :]
    theta = torch.cat([W1s.reshape(-1), W2s.reshape(-1)]).numpy()
    cols = []
    for (i, j), v in zip(pairs, s / s.min()):
        if v <= 1.5:
            slope = ((H[i] > 0) | kink[i]).double()  # relu' = 1 on every near-kink unit
            g1 = ((W2s[y[i]] - W2s[j]) * slope)[:, None] * X[i][None, :]
            g2 = torch.zeros(4, W1.shape[0], dtype=torch.float64)
            g2[y[i]] += torch.relu(H[i])
            g2[j] -= torch.relu(H[i])
            cols.append(torch.cat([g1.reshape(-1), g2.reshape(-1)]).numpy())
    _, res_one = scipy.optimize.nnls(np.array(cols).T, theta, maxiter=5000)
    assert hull.eps_relative <= res_one / np.linalg.norm(theta) + 1e-9
