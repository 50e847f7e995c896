"""Lifted ReLU features of two-layer networks (Wei, Lee, Liu & Ma, Section 4, Eq. (4.1)) and the
direction sets they are evaluated on.

The lifted feature of an input x is φ(x)[u] = relu(uᵀx) for u on the unit sphere. A first-layer
bias is a constant input: 1-D data x become (x, 1) (:func:`lift_1d`), and a direction is an
angle on the circle of (w, b). The kernel of infinitely many random features is the arc-cosine
kernel K̄(x, x') = E_{u~Unif(S^{d−1})} relu(uᵀx) relu(uᵀx') (Eq. (4.3)).

Labels are ±1 (or 0/1, read as ±1 by :func:`marginlab.core.targets.signs`). Everything is
float64.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from marginlab.core import targets
from marginlab.errors import MarginlabError

__all__ = ["angles_to_directions", "arccos_kernel", "as_data", "as_labels", "grid_angles",
           "lift_1d", "random_relu_features", "relu_features", "signs", "sphere_directions",
           "uniform_sphere"]

_F64 = torch.float64


def signs(y) -> np.ndarray:
    """Binary labels (a tensor or array in {−1, +1} or {0, 1}) as a float64 array of ±1.

    Raises:
        MarginlabError: labels that are not binary (:func:`marginlab.core.targets.signs`).
    """
    t = y.detach().cpu() if isinstance(y, Tensor) else torch.as_tensor(np.asarray(y))
    return targets.signs(t.reshape(-1)).numpy()


def as_data(X, y=None) -> tuple[np.ndarray, np.ndarray | None]:
    """Inputs as a finite (n, d) float64 array and labels, if given, as an (n,) array.

    Raises:
        MarginlabError: an empty or non-finite X, or a label count that does not match.
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] == 0:
        raise MarginlabError(f"X must be a non-empty (n, d) array, got shape {X.shape}")
    if not np.all(np.isfinite(X)):
        raise MarginlabError("X holds NaN or inf")
    if y is None:
        return X, None
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if y.shape[0] != X.shape[0]:
        raise MarginlabError(f"{X.shape[0]} inputs but {y.shape[0]} labels")
    return X, y


def as_labels(X, y) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) checked by :func:`as_data`, with labels strictly in {−1, +1}."""
    X, y = as_data(X, y)
    if not np.all(np.isin(y, (-1.0, 1.0))):
        raise MarginlabError("labels must be -1 or +1")
    return X, y


def lift_1d(x) -> np.ndarray:
    """Scalar inputs x ∈ ℝ as (x, 1) ∈ ℝ², so that relu(w x + b) = relu((w, b)ᵀ(x, 1));
    shape (n, 2)."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    return np.stack([x, np.ones_like(x)], axis=1)


def angles_to_directions(t) -> np.ndarray:
    """Angles t on the circle as unit directions (w, b) = (cos t, sin t); shape (k, 2)."""
    t = np.asarray(t, dtype=np.float64).reshape(-1)
    return np.stack([np.cos(t), np.sin(t)], axis=1)


def grid_angles(k: int) -> np.ndarray:
    """k evenly spaced angles in [0, 2π): the (w, b) grid of Wei et al., Appendix F.3."""
    return 2.0 * np.pi * np.arange(k) / k


def relu_features(X, directions) -> np.ndarray:
    """Lifted features relu(X Uᵀ) on a finite direction set; (n, d), (m, d) → (n, m)."""
    X, _ = as_data(X)
    U = np.asarray(directions, dtype=np.float64)
    if U.ndim != 2 or U.shape[1] != X.shape[1]:
        raise MarginlabError(f"directions must be (m, {X.shape[1]}), got shape {U.shape}")
    return np.maximum(X @ U.T, 0.0)


def arccos_kernel(X, Z=None) -> np.ndarray:
    """K̄(x, z) = E_{u~Unif(S^{d−1})} relu(uᵀx) relu(uᵀz) = ‖x‖‖z‖(sin θ + (π − θ)cos θ)/(2πd).

    The degree-1 arc-cosine kernel (Cho & Saul) divided by d, since a Gaussian u = ‖g‖ ū has
    E‖g‖² = d; this is the kernel of Wei et al., Eq. (4.3), up to the constant κ = Vol(S^{d−1})
    that cancels in γ_ℓ2 (DESIGN.md §6). (n, d), (k, d) → (n, k).
    """
    X, _ = as_data(X)
    Z = X if Z is None else as_data(Z)[0]
    if Z.shape[1] != X.shape[1]:
        raise MarginlabError(f"inputs of dimension {X.shape[1]} and {Z.shape[1]}")
    nx, nz = np.linalg.norm(X, axis=1), np.linalg.norm(Z, axis=1)
    outer = nx[:, None] * nz[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(outer > 0, (X @ Z.T) / outer, 1.0)
    cos = np.clip(cos, -1.0, 1.0)
    theta = np.arccos(cos)
    J = np.sqrt(np.maximum(1.0 - cos * cos, 0.0)) + (np.pi - theta) * cos
    return outer * J / (2.0 * np.pi * X.shape[1])


def random_relu_features(X, n_features: int, *, seed: int = 0) -> np.ndarray:
    """relu(u_mᵀx)/√M with u_1..u_M uniform on the sphere; their Gram matrix → K̄ as M → ∞.
    (n, d) → (n, M)."""
    X, _ = as_data(X)
    if n_features <= 0:
        raise MarginlabError(f"n_features must be positive, got {n_features}")
    U = np.random.default_rng(seed).standard_normal((n_features, X.shape[1]))
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    return np.maximum(X @ U.T, 0.0) / math.sqrt(n_features)


def uniform_sphere(k: int, dim: int, generator: torch.Generator | None = None) -> Tensor:
    """k independent points uniform on the unit sphere of ℝ^dim; (k, dim) float64."""
    z = torch.randn(k, dim, dtype=_F64, generator=generator)
    return z / z.norm(dim=1, keepdim=True)


def sphere_directions(d: int, k: int, generator: torch.Generator | None = None) -> Tensor:
    """About k unit directions on S^{d−1} ⊂ ℝ^d for the reference grid; (k', d) float64.

    d = 1: {+1, −1} (the whole sphere); d = 2: k evenly spaced angles (a grid of k·4^j contains
    the grid of k); d ≥ 3: k independent uniform points.
    """
    if d == 1:
        return torch.tensor([[1.0], [-1.0]], dtype=_F64)
    if d == 2:
        phi = 2 * math.pi * torch.arange(k, dtype=_F64) / k
        return torch.stack([torch.cos(phi), torch.sin(phi)], dim=1)
    return uniform_sphere(k, d, generator)
