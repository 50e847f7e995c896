"""Full-batch gradient descent on tiny data sets, in log space, for the Lyu & Li theory checks.

Shared by ``lyu-li-kkt`` and ``lyu-li-rates``: small homogeneous networks (bias-free layers with
activation relu(z)^p, homogeneous of order (p + 1) for two layers), data sets of a few dozen
points, and one GD step that records η and log L exactly, so that T = Σ_t η(t) (Theorem 4.3)
can be accumulated in log space.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
from torch import Tensor, nn

from marginlab import data
from marginlab.core.losses import log_loss_from_logits, log_loss_from_margins, log_sum
from marginlab.errors import MarginlabError

__all__ = ["PowerReLU", "cluster_data", "digits_data", "gd_step", "log_add", "power_net"]


class PowerReLU(nn.Module):
    """σ(z) = max(z, 0)^p: positively homogeneous of degree p, C^{p−1} (C² needs p ≥ 3)."""
    def __init__(self, power: int):
        super().__init__()
        if power < 1:
            raise MarginlabError(f"power must be ≥ 1, got {power}")
        self.power = int(power)

    def forward(self, z: Tensor) -> Tensor:
        return torch.relu(z) if self.power == 1 else torch.relu(z) ** self.power

    def extra_repr(self) -> str:
        return f"power={self.power}"


def power_net(d: int, widths: list[int], out: int, power: int, seed: int, *,
              init_scale: float = 1.0) -> nn.Module:
    """Bias-free MLP d → widths → out with PowerReLU(p) between layers, float64; weights
    He-normal times ``init_scale``.

    Homogeneous of order Π over layers: each hidden layer multiplies the degree by p and adds
    1, so a two-layer net (one hidden layer) has order p + 1; no hidden layer is linear
    (order 1).
    """
    gen = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = []
    dims = [d, *widths, out]
    for i, (a, b) in enumerate(itertools.pairwise(dims)):
        lin = nn.Linear(a, b, bias=False).double()
        with torch.no_grad():
            lin.weight.copy_(torch.randn(b, a, generator=gen, dtype=torch.float64)
                             * init_scale * math.sqrt(2.0 / a))
        layers.append(lin)
        if i < len(dims) - 2:
            layers.append(PowerReLU(power))
    return nn.Sequential(*layers)


def cluster_data(n_per_class: int, classes: int, dim: int, seed: int, *, sep: float = 2.0,
                 noise: float = 0.7) -> tuple[Tensor, Tensor]:
    """Gaussian clusters around sep·e_k (k < classes) in ℝ^dim, float64; labels k.

    With ``classes`` = 2 the labels are ±1 (one output)."""
    if classes > dim:
        raise MarginlabError(f"need dim ≥ classes, got {dim} < {classes}")
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), n_per_class)
    X = sep * np.eye(dim)[y] + noise * rng.normal(size=(y.size, dim))
    yt = torch.from_numpy(2 * y - 1 if classes == 2 else y)
    return torch.from_numpy(X), yt


def digits_data(n_per_class: int, classes: int) -> tuple[Tensor, Tensor]:
    """The first ``n_per_class`` training images of digits 0..classes−1 (8×8 → 64), float64."""
    split = data.load("digits")
    X, y = split.train
    idx = torch.cat([torch.nonzero(y == k).reshape(-1)[:n_per_class] for k in range(classes)])
    return X[idx].reshape(idx.numel(), -1).double(), y[idx].long()


def log_loss(net: nn.Module, X: Tensor, y: Tensor) -> Tensor:
    """log L(θ), L the summed exponential-tail loss: cross-entropy for C outputs (Appendix G),
    logistic for one output; float64, differentiable."""
    out = net(X)
    if out.shape[1] == 1:
        return log_sum(log_loss_from_margins(y.double() * out[:, 0], "logistic"))
    return log_sum(log_loss_from_logits(out, y))


def gd_step(net: nn.Module, X: Tensor, y: Tensor, *, lr: float | None = None,
            nats: float | None = None, max_relative_step: float = math.inf
            ) -> tuple[float, float]:
    """One full-batch GD step θ ← θ − η ∇L(θ); returns (log L before the step, log η).

    Either a constant ``lr`` (η on L), or a step that lowers log L by about ``nats`` to first
    order, η = nats / (L ‖∇ log L‖²), a time change of gradient flow whose steps stay small
    on the scale over which the loss's weights over samples change. Either way the step's
    length is capped at ``max_relative_step``·‖θ‖. Computed from ∇ log L, so no L underflows.
    """
    params = list(net.parameters())
    log_l = log_loss(net, X, y)
    grads = torch.autograd.grad(log_l, params)  # ∇ log L = ∇L / L
    log_l = float(log_l.detach())
    with torch.no_grad():
        g2 = float(sum((g * g).sum() for g in grads))
        rho = math.sqrt(float(sum((p * p).sum() for p in params)))
        if (lr is None) == (nats is None):
            raise MarginlabError("give exactly one of lr and nats")
        # step on ∇ log L: s = η L
        if lr is not None:
            log_s = math.log(lr) + log_l
        else:
            log_s = math.log(nats / max(g2, 1e-300))
        cap = max_relative_step * rho / max(math.sqrt(g2), 1e-300)
        if math.log(cap) < log_s:
            log_s = math.log(cap)
        s = math.exp(log_s)
        for p, g in zip(params, grads):
            p.sub_(s * g)
    return log_l, log_s - log_l


def log_add(a: float, b: float) -> float:
    """log(e^a + e^b) without overflow (−inf is the empty sum)."""
    if a == -math.inf:
        return b
    hi, lo = max(a, b), min(a, b)
    return hi + math.log1p(math.exp(lo - hi))
