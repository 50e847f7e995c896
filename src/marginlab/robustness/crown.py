"""CROWN lower bounds of a ReLU network's margins over L2 balls (∩ the data box).

On the set S_r = {x' : ‖x' − x‖₂ ≤ r} ∩ [lower, upper]^d, a backward pass through linear
relaxations of each ReLU (Zhang et al. 2018, "CROWN"; valid on the pre-activation intervals of
S_r, themselves computed the same way) gives, for each row c_j of the specification, a linear
function ℓ_j ≤ c_jᵀΦ on S_r. Its exact minimum over the ball is ℓ_j(x) − r‖∇ℓ_j‖₂, and any
Lagrange multiplier of the ball constraint gives a lower bound of its minimum over ball ∩ box
(weak duality). If all these minima are > 0, no point of S_r is misclassified, so R(z) ≥ r.
:func:`crown_radius` bisects on r and keeps only radii at which that check succeeded.

Limits: the network must be a stack of Linear / Conv2d layers with ReLU or LeakyReLU
(0 ≤ slope ≤ 1) between them and no pooling; convolutions are turned into dense matrices of at
most ``DENSE_LIMIT`` entries. That covers MLPs and small pooling-free CNNs, not the paper's
MNIST CNN (max-pooling; its first two conv layers have 2·10^7 and 8·10^7 dense entries, and a
pass costs about (hidden neurons)² × input dimension per point).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from marginlab.robustness.lipschitz import (
    IDENTITY_LAYERS,
    UnsupportedModelError,
    check_layer,
    layers_of,
)

__all__ = ["DENSE_LIMIT", "class_indices", "crown_radius", "margin_spec"]

DENSE_LIMIT = 4_000_000


def class_indices(y: Tensor, num_outputs: int) -> Tensor:
    """Labels as class indices: for one output, y > 0 is class 1 (±1 and 0/1 labels alike)."""
    y = y.long().cpu()
    return (y > 0).long() if num_outputs == 1 else y


def margin_spec(y: Tensor, num_outputs: int) -> Tensor:
    """Rows c_j with g_j = c_jᵀ Φ: (N, C−1, C) rows e_y − e_j, or (N, 1, 1) rows [±1]."""
    if num_outputs == 1:
        sign = torch.where(y > 0, 1.0, -1.0).double()
        return sign.view(-1, 1, 1)
    eye = torch.eye(num_outputs, dtype=torch.float64)
    rows = eye[y].unsqueeze(1) - eye.unsqueeze(0)  # (N, C, C): e_y − e_j for every j
    keep = ~torch.nn.functional.one_hot(y, num_outputs).bool()
    return rows[keep].view(y.shape[0], num_outputs - 1, num_outputs)


@dataclass(frozen=True)
class _Affine:
    """z ↦ W z + b."""

    weight: Tensor  # (n_out, n_in) float64
    bias: Tensor  # (n_out,)


def _dense_chain(model: nn.Module, input_shape: tuple[int, ...]
                 ) -> tuple[list[_Affine], list[float]]:
    """The network as affine maps with activations between: z_0 = A_0 x, a_k = σ_k(z_k),
    z_{k+1} = A_{k+1} a_k, …, Φ = z_L. Returns the affine maps and the activations' negative
    slopes (0 for ReLU). Consecutive affine maps are merged."""
    layers = layers_of(model)
    for name, module in layers:
        check_layer(name, module)
        if isinstance(module, nn.MaxPool2d):
            raise UnsupportedModelError(f"max-pooling ({name}) has no linear relaxation here")
    shape = tuple(int(s) for s in input_shape)
    affines: list[_Affine] = []
    slopes: list[float] = []
    pending: _Affine | None = None
    for name, module in layers:
        if isinstance(module, IDENTITY_LAYERS):
            if isinstance(module, nn.Flatten):
                shape = (math.prod(shape),)
            continue
        if isinstance(module, (nn.ReLU, nn.LeakyReLU)):
            if pending is None:
                raise UnsupportedModelError(f"activation {name} does not follow a linear layer")
            affines.append(pending)
            pending = None
            slopes.append(float(getattr(module, "negative_slope", 0.0)))
            continue
        d_in = math.prod(shape)
        m = copy.deepcopy(module).double().cpu()
        if isinstance(module, nn.Linear):
            if len(shape) != 1:
                raise UnsupportedModelError(f"Linear layer {name} on a non-flat input")
            w = m.weight.detach()
            b = m.bias.detach() if m.bias is not None else torch.zeros(w.shape[0],
                                                                      dtype=torch.float64)
            shape = (w.shape[0],)
        else:
            with torch.no_grad():
                zero = m(torch.zeros((1, *shape), dtype=torch.float64))
                if zero[0].numel() * d_in > DENSE_LIMIT:
                    raise UnsupportedModelError(
                        f"conv layer {name} is too large for a dense relaxation")
                basis = torch.eye(d_in, dtype=torch.float64).view(d_in, *shape)
                out = m(basis) - zero
            w = out.reshape(d_in, -1).T.contiguous()
            b = zero.reshape(-1)
            shape = tuple(zero.shape[1:])
        step = _Affine(w, b)
        if pending is not None:  # two affine maps in a row
            step = _Affine(step.weight @ pending.weight, step.weight @ pending.bias + step.bias)
        pending = step
    if pending is None:
        raise UnsupportedModelError("the network ends with an activation")
    affines.append(pending)
    return affines, slopes


def _min_linear(A: Tensor, x0: Tensor, r: Tensor, dlo: Tensor | None, dhi: Tensor | None,
                dual_steps: int = 25) -> Tensor:
    """Lower bound of min A x' over ‖x' − x0‖₂ ≤ r (∩ x0 + [dlo, dhi]).

    Ball only: A x0 − r‖A‖ (exact). With the box, weak duality: for every λ > 0,
    min_{δ ∈ box} A δ + λ(‖δ‖² − r²) is a lower bound; its minimizer per coordinate is
    clip(−A/(2λ), dlo, dhi). λ is found by bisection on log λ (any λ is sound), and the box-only
    minimum (λ = 0) and the ball-only bound are also valid; the largest is returned.

    Shapes: A (B, R, d), x0 (B, d), r (B,), dlo/dhi (B, d) -> (B, R).
    """
    base = torch.einsum("brd,bd->br", A, x0)
    norm = A.norm(dim=2)
    ball = -r[:, None] * norm
    if dlo is None:
        return base + ball
    lo, hi = dlo[:, None, :], dhi[:, None, :]
    box_only = torch.minimum(A * lo, A * hi).sum(2)
    rr = (r * r)[:, None]

    def value(lam):
        delta = torch.clamp(-A / (2 * lam[..., None]), lo, hi)
        return (A * delta).sum(2) + lam * ((delta * delta).sum(2) - rr), delta

    lam_hi = torch.log(norm.clamp_min(1e-300) / (2 * r[:, None].clamp_min(1e-300)))
    lam_lo = lam_hi - 30.0
    for _ in range(dual_steps):
        mid = (lam_lo + lam_hi) / 2
        delta = torch.clamp(-A / (2 * torch.exp(mid)[..., None]), lo, hi)
        inside = (delta * delta).sum(2) <= rr  # derivative in λ ≤ 0: optimum at smaller λ
        lam_hi = torch.where(inside, mid, lam_hi)
        lam_lo = torch.where(inside, lam_lo, mid)
    dual = torch.maximum(value(torch.exp(lam_lo))[0], value(torch.exp(lam_hi))[0])
    return base + torch.maximum(torch.maximum(ball, box_only), dual)


def _relax(l: Tensor, u: Tensor, slope: float) -> tuple[Tensor, Tensor, Tensor]:
    """Linear bounds α z ≤ σ(z) ≤ β z + γ of σ(z) = max(z, s z), 0 ≤ s ≤ 1, on [l, u].

    Stable neurons are exact; an unstable one (l < 0 < u) takes the chord through (l, s l) and
    (u, u) as upper line and α ∈ {s, 1} (whichever is closer, CROWN-adaptive) as lower slope:
    α z ≤ σ(z) holds for every z when s ≤ α ≤ 1.
    """
    active, inactive = l >= 0, u <= 0
    unstable = ~(active | inactive)
    one, s = torch.ones_like(l), torch.full_like(l, slope)
    width = torch.where(unstable, u - l, one)
    chord = (u - s * l) / width
    beta = torch.where(active, one, torch.where(inactive, s, chord))
    gamma = torch.where(unstable, l * (s - chord), torch.zeros_like(l))
    alpha = torch.where(active, one, torch.where(inactive, s, torch.where(u >= -l, one, s)))
    return alpha, beta, gamma


class _Crown:
    """CROWN lower bounds of linear functions of a dense ReLU chain over ball (∩ box) sets.

    Pre-activation bounds of the hidden layers are taken over the ball alone (a superset of
    ball ∩ box, so still sound, and computable through the Gram matrix of the first layer);
    the final specification uses the box when one is given.
    """

    def __init__(self, affines: list[_Affine], slopes: list[float]):
        self.affines = affines
        self.slopes = slopes
        w0 = affines[0].weight
        self.row_norms0 = w0.norm(dim=1)
        self.gram0 = w0 @ w0.T  # (n_0, n_0): ‖Aᵀ W_0‖² = A G Aᵀ without forming A W_0

    def _backward(self, spec: Tensor, k: int, relax, z0: Tensor, x0: Tensor, r: Tensor,
                  box: tuple[Tensor, Tensor] | None) -> Tensor:
        """Lower bounds of spec · z_k, spec (B, R, n_k), using relaxations of layers < k.

        z0 (B, n_0) is W_0 x0 + b_0, the first pre-activation at the centre.
        """
        A = spec
        const = torch.zeros(spec.shape[:2], dtype=spec.dtype)
        if k > 0:  # the bias of z_0 is added at the end
            const = const + torch.einsum("brn,n->br", A, self.affines[k].bias)
        for j in range(k - 1, -1, -1):
            A = torch.einsum("brn,nm->brm", A, self.affines[j + 1].weight)
            alpha, beta, gamma = relax[j]
            pos, neg = A.clamp_min(0), A.clamp_max(0)
            const = const + torch.einsum("brm,bm->br", neg, gamma)
            A = pos * alpha[:, None, :] + neg * beta[:, None, :]
            if j > 0:
                const = const + torch.einsum("brm,m->br", A, self.affines[j].bias)
        # A now multiplies z_0 = W_0 x + b_0
        if box is None:  # exact minimum over the ball: A z0 − r ‖Aᵀ W_0‖
            sq = torch.einsum("brn,nm,brm->br", A, self.gram0, A).clamp_min(0)
            return const + torch.einsum("brn,bn->br", A, z0) - r[:, None] * sq.sqrt()
        const = const + torch.einsum("brn,n->br", A, self.affines[0].bias)
        A = torch.einsum("brn,nm->brm", A, self.affines[0].weight)
        return const + _min_linear(A, x0, r, *box)

    def lower(self, spec: Tensor, x0: Tensor, r: Tensor,
              box: tuple[Tensor, Tensor] | None) -> Tensor:
        """Lower bounds (B, R) of spec · Φ(x') over the input sets around x0 (B, d)."""
        z0 = x0 @ self.affines[0].weight.T + self.affines[0].bias
        relax = []
        for k in range(len(self.slopes)):
            if k == 0:  # exact over the ball: W_0 x0 + b_0 ± r‖(W_0)_i‖
                radius = r[:, None] * self.row_norms0
                l, u = z0 - radius, z0 + radius
            else:
                n = self.affines[k].weight.shape[0]
                eye = torch.eye(n, dtype=torch.float64).expand(x0.shape[0], n, n)
                both = self._backward(torch.cat([eye, -eye], 1), k, relax, z0, x0, r, None)
                l, u = both[:, :n], -both[:, n:]
            relax.append(_relax(l, u, self.slopes[k]))
        return self._backward(spec, len(self.slopes), relax, z0, x0, r, box)


def crown_radius(model: nn.Module, X: Tensor, y: Tensor, hi: Tensor, *,
                 bounds: tuple[float, float] | None = (0.0, 1.0), steps: int = 20,
                 chunk: int = 16) -> np.ndarray:
    """Largest radius (by bisection on [0, hi]) at which CROWN certifies each point.

    Args:
        model: a supported stack without pooling (module docstring).
        X: (N, ...) inputs. y: (N,) labels (class indices; ±1 or 0/1 for one output).
        hi: (N,) upper end of the search, e.g. the attack's distance; +inf or NaN entries are
            replaced by the diameter of the box (no local certificate without a box).
        bounds: data domain intersected with the ball (None: the ball only).
        steps: bisection steps.
        chunk: points per CROWN pass.

    Returns:
        (N,) float64 certified radii (0 where nothing is certified).

    Raises:
        UnsupportedModelError: the model has pooling, unsupported layers, or layers too large.
    """
    affines, slopes = _dense_chain(model, tuple(X.shape[1:]))
    crown = _Crown(affines, slopes)
    n_out = affines[-1].weight.shape[0]
    X64 = X.reshape(X.shape[0], -1).double().cpu()
    spec_all = margin_spec(class_indices(y, n_out), n_out)
    diam = math.inf if bounds is None else (bounds[1] - bounds[0]) * math.sqrt(X64.shape[1])
    hi = torch.as_tensor(hi, dtype=torch.float64).reshape(-1).clone()
    hi = torch.where(torch.isfinite(hi), hi, torch.full_like(hi, diam))
    hi = torch.where(torch.isfinite(hi) & (hi > 0), hi, torch.zeros_like(hi))
    out = np.zeros(X.shape[0])
    for start in range(0, X.shape[0], chunk):
        x0 = X64[start:start + chunk]
        spec = spec_all[start:start + chunk]
        box = None if bounds is None else (bounds[0] - x0, bounds[1] - x0)
        lo_r = torch.zeros(x0.shape[0], dtype=torch.float64)
        hi_r = hi[start:start + chunk]
        for _ in range(steps):
            mid = (lo_r + hi_r) / 2
            ok = crown.lower(spec, x0, mid, box).min(1).values > 0
            lo_r = torch.where(ok, mid, lo_r)
            hi_r = torch.where(ok, hi_r, mid)
        out[start:start + chunk] = lo_r.numpy()
    return out
