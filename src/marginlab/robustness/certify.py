"""Certified lower bounds on the L2 robustness R(z) (Lyu & Li, Appendix K.2).

For a point z = (x, y) of a multi-class network Φ, write g_j(x) = Φ_y(x) − Φ_j(x) for each
competitor j ≠ y; the margin is q(x) = min_j g_j(x) (DESIGN.md §2). For a one-output binary
network f with label y = ±1 there is a single g(x) = y·f(x). A point x' is misclassified only if
some g_j(x') ≤ 0.

Soundness. If each g_j is β_j-Lipschitz in ‖·‖₂ on ℝ^d, then g_j(x') ≥ g_j(x) − β_j‖x' − x‖₂ > 0
whenever ‖x' − x‖₂ < g_j(x)/β_j, so R(z) ≥ min_j g_j(x)/β_j (Lyu & Li, K.2: R(z) ≥ q(z)/β).
Restricting x' to the data domain [0, 1]^d only makes R larger, so bounds over all of ℝ^d stay
sound. The three certificates differ in β_j:

- ``global``: β_j = ‖e_y − e_j‖₂ · Π_k Lip(layer_k) = √2 · Π_k ‖A_k‖₂ (1 · Π for binary), the
  product over layers of certified upper bounds on the operator norms of the linear maps A_k
  (ReLU and LeakyReLU with |slope| ≤ 1 are 1-Lipschitz; a max-pool whose windows cover each
  input at most m times is √m-Lipschitz).
- ``row``: β_j = ‖W_lastᵀ(e_y − e_j)‖₂ · Π_{k<last} ‖A_k‖₂, since g_j = (e_y − e_j)ᵀ W_last h(x)
  + const with h the network below the last layer. Never larger than the global β_j.
- ``local``: CROWN (Zhang et al. 2018): on the set S_r = {x' : ‖x' − x‖₂ ≤ r} ∩ [0, 1]^d, a
  backward pass through linear relaxations of each ReLU (valid on the pre-activation intervals
  of S_r, themselves computed the same way) gives, for each j, a linear function ℓ_j ≤ g_j on
  S_r; its exact minimum over the ball is ℓ_j(x) − r‖∇ℓ_j‖₂, and any Lagrange multiplier of
  the ball constraint gives a lower bound of its minimum over ball ∩ box (weak duality). If all
  these minima are > 0, no point of S_r is misclassified, so R(z) ≥ r. Bisection on r keeps
  only radii at which that check succeeded.

The operator-norm bounds are in :mod:`marginlab.robustness.lipschitz` (exact SVD for linear
layers, a DFT bound for convolutions; power iteration, which converges from below, is only
reported), the local bound in :mod:`marginlab.robustness.crown`. Everything is computed in
float64 on a float64 copy of the model; float64 rounding (relative ~1e-15) is ignored apart from
a 1e-9 relative slack on the operator norms.

Limits: the Lipschitz certificates need an ``nn.Sequential`` stack of Linear, Conv2d, ReLU,
LeakyReLU, MaxPool2d and shape-only layers; the local one also needs no pooling and small dense
layers — MLPs and small pooling-free CNNs, not the paper's MNIST CNN. A model outside these
gets no such certificate (a note says why), never a wrong one.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from marginlab.robustness.crown import class_indices, crown_radius, margin_spec
from marginlab.robustness.lipschitz import LipschitzBound, UnsupportedModelError, lipschitz_bound

__all__ = ["CERTIFICATES", "Certificate", "certify"]

CERTIFICATES = ("global", "row", "local")


@dataclass(frozen=True)
class Certificate:
    """Certified lower bounds on R(z) per point.

    Attributes:
        lower: certificate name -> (N,) float64 lower bounds (0 where q ≤ 0); only the
            certificates that apply to the model appear.
        best: (N,) float64, the largest of them (0 if none applies).
        margin: (N,) float64 margin q(x) of the float64 model.
        lipschitz: the layer-wise bound, or None for unsupported models.
        notes: certificate name -> why it was not computed.
    """

    lower: dict[str, np.ndarray]
    best: np.ndarray
    margin: np.ndarray
    lipschitz: LipschitzBound | None
    notes: dict[str, str]


def _safe_ratio(num: Tensor, den: Tensor) -> Tensor:
    """num / den with num > 0, den = 0 giving +inf and num ≤ 0 giving 0."""
    ratio = torch.where(den > 0, num / den.clamp_min(1e-300), torch.inf)
    return torch.where(num > 0, ratio, torch.zeros_like(ratio))


def certify(model: nn.Module, X: Tensor, y: Tensor, *, hi: Tensor | np.ndarray | None = None,
            bounds: tuple[float, float] | None = (0.0, 1.0),
            which: tuple[str, ...] = CERTIFICATES, batch_size: int = 500,
            lipschitz: LipschitzBound | None = None) -> Certificate:
    """Certified lower bounds on R(z) per point (soundness argument: the module docstring).

    Args:
        model: logit model (N, C) or one-output binary model.
        X: (N, ...) inputs. y: (N,) class indices, or ±1 / 0-1 labels for one output.
        hi: (N,) upper bounds on R (the attack's distances) to bracket the local bisection;
            default: the diameter of the box.
        bounds: the data domain [lower, upper]^d used by the local certificate (None: ℝ^d).
        which: certificates to compute, from ``global``, ``row``, ``local``.
        batch_size: points per float64 forward pass.
        lipschitz: a precomputed :func:`lipschitz_bound` of this model, to reuse across calls.

    Returns:
        A :class:`Certificate`; certificates the model's structure does not allow are left
        out, with the reason in ``notes``.
    """
    net = copy.deepcopy(model).double().cpu().eval()
    with torch.no_grad():
        logits = torch.cat([net(X[i:i + batch_size].double().cpu()).reshape(
            min(batch_size, X.shape[0] - i), -1) for i in range(0, X.shape[0], batch_size)])
    n_out = logits.shape[1]
    labels = class_indices(y, n_out)
    spec = margin_spec(labels, n_out)
    g = torch.einsum("nrc,nc->nr", spec, logits)  # g_j(x) per competitor
    margin = g.min(1).values
    lower: dict[str, np.ndarray] = {}
    notes: dict[str, str] = {}
    if lipschitz is None and ({"global", "row"} & set(which)):
        try:
            lipschitz = lipschitz_bound(net, tuple(X.shape[1:]))
        except UnsupportedModelError as exc:
            notes["global"] = notes["row"] = str(exc)
    if lipschitz is not None:
        if "global" in which:
            coef = spec[0, 0].norm() * lipschitz.product
            lower["global"] = _safe_ratio(margin, coef.expand_as(margin)).numpy()
        if "row" in which:
            if lipschitz.last_weight is None:
                notes["row"] = "the last layer is not a Linear layer"
            else:
                beta = (spec @ lipschitz.last_weight).norm(dim=2) * lipschitz.product_before_last
                lower["row"] = _safe_ratio(g, beta).min(1).values.numpy()
    if "local" in which:
        hi = torch.full((X.shape[0],), math.inf) if hi is None else torch.as_tensor(hi)
        try:
            local = crown_radius(net, X, y, hi, bounds=bounds)
            lower["local"] = np.where(margin.numpy() > 0, local, 0.0)
        except UnsupportedModelError as exc:
            notes["local"] = str(exc)
    best = np.zeros(X.shape[0])
    for v in lower.values():
        best = np.maximum(best, v)
    return Certificate(lower, best, margin.numpy(), lipschitz, notes)
