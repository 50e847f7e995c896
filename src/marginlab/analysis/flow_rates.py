"""Gradient flow and constant-step GD on small smooth homogeneous models, for Theorem 4.3.

Three binary models on inputs x ∈ ℝ^d, all C^∞ and homogeneous in θ of order L:

- ``linear``, L = 1: Φ(θ; x) = w·x;
- ``deep-linear``, L = 2: Φ = a·(W x) (a two-layer linear network);
- ``quadratic``, L = 3: Φ = a·(W x)² (quadratic activation, Lyu & Li Section 4.1's example of
  an (S1) model).

Loss: exponential, L(θ) = Σ_n e^{−q_n}, q_n = y_n Φ(θ; x_n) (assumption A3). Gradients are
written out in numpy (the tests check them against autograd) so that gradient flow can be
integrated by an adaptive Runge–Kutta method over many decades of time, where the steps grow
with t, and constant-step GD can take 10⁵ steps in seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.integrate import solve_ivp

from marginlab.errors import MarginlabError

__all__ = ["ORDERS", "SmoothModel", "flow_path", "gd_path", "separable_data"]

ORDERS = {"linear": 1, "deep-linear": 2, "quadratic": 3}


@dataclass(frozen=True)
class SmoothModel:
    """One of :data:`ORDERS`, with d inputs and m hidden units (ignored for ``linear``)."""

    kind: str
    d: int
    m: int = 8

    def __post_init__(self):
        if self.kind not in ORDERS:
            raise MarginlabError(f"unknown model {self.kind!r}; expected one of "
                                 f"{', '.join(ORDERS)}")

    @property
    def order(self) -> int:
        return ORDERS[self.kind]

    @property
    def size(self) -> int:
        return self.d if self.kind == "linear" else self.m * self.d + self.m

    def init(self, rng: np.random.Generator, scale: float) -> np.ndarray:
        """θ0 with He-normal entries times ``scale``, flattened (W row-major, then a)."""
        if self.kind == "linear":
            return scale * rng.normal(size=self.d) * math.sqrt(1.0 / self.d)
        W = rng.normal(size=(self.m, self.d)) * math.sqrt(2.0 / self.d)
        a = rng.normal(size=self.m) * math.sqrt(2.0 / self.m)
        return scale * np.concatenate([W.ravel(), a])

    def outputs(self, theta: np.ndarray, X: np.ndarray) -> np.ndarray:
        if self.kind == "linear":
            return X @ theta
        W, a = theta[: -self.m].reshape(self.m, self.d), theta[-self.m :]
        H = X @ W.T
        return (H if self.kind == "deep-linear" else H * H) @ a

    def loss_and_grad(self, theta: np.ndarray, X: np.ndarray,
                      y: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """(log L, ∇L, q): the exponential loss summed over samples, float64."""
        if self.kind == "linear":
            q = y * (X @ theta)
            e = np.exp(-q)
            return float(np.log(e.sum())), X.T @ (-y * e), q
        W, a = theta[: -self.m].reshape(self.m, self.d), theta[-self.m :]
        H = X @ W.T  # (N, m)
        Z, dZ = (H, np.ones_like(H)) if self.kind == "deep-linear" else (H * H, 2.0 * H)
        q = y * (Z @ a)
        e = np.exp(-q)
        g = -y * e  # dL/dΦ_n
        grad_W = ((g[:, None] * dZ) * a[None, :]).T @ X
        return float(np.log(e.sum())), np.concatenate([grad_W.ravel(), Z.T @ g]), q


def separable_data(n: int, d: int, seed: int, *, gap: float = 0.5) -> tuple[np.ndarray,
                                                                            np.ndarray]:
    """n points in ℝ^d: d − 1 Gaussian coordinates and a constant 1 (so that all three models
    can separate them), labels y = sign(w0·z + 0.1) with a margin ``gap`` added along w0."""
    rng = np.random.default_rng(seed)
    w0 = rng.normal(size=d - 1)
    w0 /= np.linalg.norm(w0)
    Z = rng.normal(size=(n, d - 1))
    y = np.sign(Z @ w0 + 0.1)
    y[y == 0] = 1.0
    Z += gap * y[:, None] * w0
    return np.column_stack([Z, np.ones(n)]), y


def _records(model: SmoothModel, X, y, times, thetas) -> dict[str, np.ndarray]:
    log_l, rho, gamma = [], [], []
    for th in thetas:
        ll, _, q = model.loss_and_grad(th, X, y)
        r = float(np.linalg.norm(th))
        log_l.append(ll)
        rho.append(r)
        gamma.append(float(q.min()) / r**model.order)
    return {"T": np.asarray(times, dtype=float), "log_loss": np.array(log_l),
            "rho": np.array(rho), "normalized_margin": np.array(gamma)}


def flow_path(model: SmoothModel, X: np.ndarray, y: np.ndarray, theta0: np.ndarray, *,
              t_max: float, n_points: int = 200, rtol: float = 1e-10,
              atol: float = 1e-13) -> dict[str, np.ndarray]:
    """Gradient flow dθ/dt = −∇L(θ) from θ0 up to ``t_max`` (T = t), sampled at log-spaced
    times from 10⁻² (DOP853; its steps grow with t as the flow slows down)."""
    times = np.geomspace(1e-2, t_max, n_points)
    sol = solve_ivp(lambda t, th: -model.loss_and_grad(th, X, y)[1], (0.0, t_max), theta0,
                    method="DOP853", rtol=rtol, atol=atol, t_eval=times)
    if sol.status != 0:
        raise MarginlabError(f"the gradient-flow integration failed: {sol.message}")
    out = _records(model, X, y, sol.t, sol.y.T)
    out["nfev"] = np.array([sol.nfev])
    return out


def gd_path(model: SmoothModel, X: np.ndarray, y: np.ndarray, theta0: np.ndarray, *,
            lr: float, steps: int, n_points: int = 200) -> dict[str, np.ndarray]:
    """Constant-step GD θ ← θ − lr ∇L(θ) for ``steps`` steps (T = lr·t), sampled at
    log-spaced steps."""
    marks = np.unique(np.geomspace(1, steps, n_points).astype(int))
    theta, keep, k = theta0.copy(), [], 0
    for t in range(1, steps + 1):
        _, grad, _ = model.loss_and_grad(theta, X, y)
        theta -= lr * grad
        if k < marks.size and t == marks[k]:
            keep.append(theta.copy())
            k += 1
    return _records(model, X, y, lr * marks, keep)
