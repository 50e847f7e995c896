"""A tighter KKT residual for bias-free two-layer ReLU networks: h_r over Clarke's hull at kinks.

:func:`~marginlab.analysis.kkt_residual` uses autograd's gradient, relu'(0) = 0, one element of
each Clarke subdifferential ∂°s_r (Lyu & Li, Def. C.5). Where a hidden unit's pre-activation at
a support sample tends to 0 along training, the limit's subdifferential contains every
relu' ∈ [0, 1] for that unit, and Theorem 4.4 (gradient flow, A1) only promises some element
h_r ∈ ∂°s_r. For f(x) = W₂ relu(W₁x) and a pair r = (n, j), the W₁-row-k block of ∇s_r is
(W₂[y_n, k] − W₂[j, k]) relu'(w_k·x_n) x_n, so letting μ_rk ∈ [0, 1] replace relu' for the
near-kink units (|w_k·x_n| ≤ rel·‖w_k‖‖x_n‖) and writing ν_rk = λ_r μ_rk gives the convex problem

    min ‖θ − Σ_r λ_r h⁰_r − Σ_{r,k} ν_rk d_rk‖²   s.t.  λ ≥ 0,  0 ≤ ν_rk ≤ λ_r,

with h⁰_r the gradient with relu' = 0 on those units and d_rk = (W₂[y,k] − W₂[j,k]) x_n in the
W₁-row-k block; its optimum is the best ε over the hull (an upper bound still, since only
near-kink units are relaxed). Solved by SLSQP on the explicit (small) Jacobian.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.optimize
import torch
from torch import nn

from marginlab.core import targets
from marginlab.errors import MarginlabError, NotSeparatedError

__all__ = ["HullResult", "relu_hull_residual"]


@dataclass(frozen=True)
class HullResult:
    """ε of (P) with h_r over Clarke's hull at near-kink units.

    Attributes:
        eps_relative: the hull's ε / ‖θ‖ (θ rescaled to q_min = 1).
        eps_relative_fixed: the same problem with relu' = 0 on the near-kink units (at an
            exact kink, autograd's element), for comparison.
        n_near_active: near-active pairs. n_kinks: relaxed (pair, unit) entries.
        converged: whether SLSQP reported success.
    """

    eps_relative: float
    eps_relative_fixed: float
    n_near_active: int
    n_kinks: int
    converged: bool


def _layers(net: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    mods = list(net.children()) if isinstance(net, nn.Sequential) else []
    lin = [m for m in mods if isinstance(m, nn.Linear)]
    if (len(mods) != 3 or len(lin) != 2 or any(m.bias is not None for m in lin)
            or mods[0] is not lin[0] or mods[2] is not lin[1]):
        raise MarginlabError("the hull residual needs Sequential(Linear, ReLU, Linear) without "
                             "biases")
    return lin[0].weight.detach().double(), lin[1].weight.detach().double()


def relu_hull_residual(net: nn.Module, X: torch.Tensor, y: torch.Tensor, *, tau: float = 1e-2,
                       rel: float = 1e-3, max_iter: int = 500) -> HullResult:
    """ε/‖θ‖ of (P) (pairs, Appendix G) with relu' ∈ [0, 1] at near-kink units.

    Args:
        net: Sequential(Linear(d, m), ReLU-like, Linear(m, C)) without biases (order 2); the
            middle module must compute relu.
        X: (N, d) inputs. y: (N,) labels in [C].
        tau: near-active tolerance on the pairs. rel: near-kink tolerance.
        max_iter: SLSQP iterations.
    """
    W1, W2 = _layers(net)
    X = X.double().reshape(X.shape[0], -1)
    with torch.no_grad():
        H = X @ W1.T
        out = torch.relu(H) @ W2.T
    t = targets.targets(y, out.shape[1])
    n, c = out.shape
    pairs = [(i, j) for i in range(n) for j in range(c) if j != int(t[i])]
    s = torch.tensor([float(out[i, t[i]] - out[i, j]) for i, j in pairs], dtype=torch.float64)
    q_min = float(s.min())
    if not q_min > 0:
        raise NotSeparatedError(f"q_min = {q_min:.3g} ≤ 0")
    scale = q_min ** (-0.5)  # order 2, one factor per layer
    W1, W2, H = W1 * scale, W2 * scale, H * scale
    s = s / q_min
    near = [r for r, v in enumerate(s.tolist()) if v <= 1.0 + tau]
    m, d = W1.shape
    theta = torch.cat([W1.reshape(-1), W2.reshape(-1)]).numpy()
    kink = (H.abs() <= rel * X.norm(dim=1, keepdim=True) * W1.norm(dim=1)[None, :]).numpy()
    active = (H > 0).numpy() & ~kink
    cols0, cols_d, owner = [], [], []
    for a, r in enumerate(near):
        i, j = pairs[r]
        yi = int(t[i])
        coef = (W2[yi] - W2[j]).numpy()  # (m,)
        g1 = (coef * active[i])[:, None] * X[i].numpy()[None, :]
        g2 = np.zeros((c, m))
        relu_h = np.maximum(H[i].numpy(), 0.0)
        g2[yi] += relu_h
        g2[j] -= relu_h
        cols0.append(np.concatenate([g1.ravel(), g2.ravel()]))
        for k in np.nonzero(kink[i])[0]:
            dk = np.zeros((m, d))
            dk[k] = coef[k] * X[i].numpy()
            cols_d.append(np.concatenate([dk.ravel(), np.zeros(c * m)]))
            owner.append(a)
    H0 = np.array(cols0).T if cols0 else np.zeros((theta.size, 0))
    D = np.array(cols_d).T if cols_d else np.zeros((theta.size, 0))
    tn = float(np.linalg.norm(theta))
    lam0, res0 = scipy.optimize.nnls(H0, theta, maxiter=50 * max(1, H0.shape[1]) + 100)
    if D.shape[1] == 0:
        return HullResult(res0 / tn, res0 / tn, len(near), 0, True)
    M = np.hstack([H0, D])
    na, nk = H0.shape[1], D.shape[1]
    G = np.zeros((nk, na + nk))  # λ_owner − ν ≥ 0
    G[np.arange(nk), np.array(owner)] = 1.0
    G[np.arange(nk), na + np.arange(nk)] = -1.0

    def fun(z):
        rvec = M @ z - theta
        return 0.5 * float(rvec @ rvec) / tn**2, (M.T @ rvec) / tn**2

    z0 = np.concatenate([lam0, np.zeros(nk)])
    sol = scipy.optimize.minimize(fun, z0, jac=True, method="SLSQP",
                                  bounds=[(0.0, None)] * (na + nk),
                                  constraints=[{"type": "ineq", "fun": lambda z: G @ z,
                                                "jac": lambda z: G}],
                                  options={"maxiter": max_iter, "ftol": 1e-14})
    z = np.maximum(sol.x, 0.0)
    z[na:] = np.minimum(z[na:], z[np.array(owner)])  # project onto ν ≤ λ_owner
    eps = float(np.linalg.norm(M @ z - theta))
    return HullResult(min(eps, res0) / tn, res0 / tn, len(near), nk, bool(sol.success))
