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

Operator norms: power iteration converges to ‖A‖₂ from below, so it is reported but never used
as a certificate. The certified upper bound is the exact spectral norm (SVD, float64) for a
linear layer; for a zero-padded 2-D convolution (any stride and dilation, groups = 1) it is
max_ω ‖K̂(ω)‖₂ over the 2-D DFT of the kernel on the padded grid: the convolution is a
coordinate selection (norm ≤ 1) of the circular convolution on that grid composed with the
zero-padding embedding (an isometry), and the circular convolution's singular values are those
of the per-frequency c_out × c_in matrices K̂(ω) (Sedghi, Gupta & Long 2019, Theorem 6).

Everything is computed in float64; rounding errors of float64 arithmetic (relative ~1e-15) are
ignored, apart from a 1e-9 relative slack on the operator norms.

Limits: the Lipschitz certificates need a plain feed-forward stack (``nn.Sequential``, nested
allowed) of Linear, Conv2d (groups = 1, zero padding), ReLU, LeakyReLU, MaxPool2d, Flatten,
Identity and Dropout (eval). The local certificate additionally needs no pooling and dense
weight matrices of at most ``DENSE_LIMIT`` entries per layer: it covers MLPs and small
pooling-free CNNs, not the paper's MNIST CNN (max-pooling; its first two conv layers have
2·10^7 and 8·10^7 dense entries, and a CROWN pass costs (neurons)² × input dimension).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "CERTIFICATES",
    "DENSE_LIMIT",
    "Certificate",
    "LipschitzBound",
    "OperatorNorm",
    "UnsupportedModelError",
    "certify",
    "conv2d_norm_upper",
    "crown_radius",
    "lipschitz_bound",
    "power_iteration",
]

CERTIFICATES = ("global", "row", "local")
DENSE_LIMIT = 4_000_000
NORM_SLACK = 1e-9
_IDENTITY = (nn.Flatten, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d)


class UnsupportedModelError(Exception):
    """The model's structure is outside what a certificate handles (message says why)."""


@dataclass(frozen=True)
class OperatorNorm:
    """One layer's factor in the Lipschitz product.

    Attributes:
        name: module name in the model.
        kind: ``linear``, ``conv2d``, ``maxpool2d`` or ``activation``.
        input_shape: per-sample input shape of the layer.
        power: power-iteration estimate of ‖A‖₂ (a lower bound; NaN for non-linear layers).
        upper: certified upper bound on the layer's Lipschitz constant, used in certificates.
        how: how ``upper`` was obtained (``svd``, ``fft``, ``window count``, ``slope``).
    """

    name: str
    kind: str
    input_shape: tuple[int, ...]
    power: float
    upper: float
    how: str


@dataclass(frozen=True)
class LipschitzBound:
    """Certified Lipschitz bound of the logits, layer by layer.

    Attributes:
        layers: the factors, in forward order.
        product: Π upper over all layers: a bound on the L2→L2 Lipschitz constant of x ↦ Φ(x).
        product_before_last: the same product without the last linear layer (NaN when the last
            linear layer is not a Linear followed only by shape-only modules).
        last_weight: (C, n) float64 weight of that last Linear, or None.
    """

    layers: tuple[OperatorNorm, ...]
    product: float
    product_before_last: float
    last_weight: Tensor | None = field(default=None, repr=False)


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


# --------------------------------------------------------------------------- layer structure


def _layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model as a flat list of (name, module); nested Sequentials are expanded."""
    if not isinstance(model, nn.Sequential):
        if isinstance(model, (nn.Linear, nn.Conv2d)):
            return [("", model)]
        raise UnsupportedModelError(
            f"{type(model).__name__} is not an nn.Sequential stack of layers")
    out: list[tuple[str, nn.Module]] = []
    for name, child in model.named_children():
        if isinstance(child, nn.Sequential):
            out += [(f"{name}.{n}" if n else name, m) for n, m in _layers(child)]
        else:
            out.append((name, child))
    return out


def _check_layer(name: str, module: nn.Module) -> None:
    if isinstance(module, nn.Conv2d):
        if module.groups != 1 or module.padding_mode != "zeros" or isinstance(
                module.padding, str):
            raise UnsupportedModelError(
                f"conv layer {name}: only groups=1 and numeric zero padding")
    elif isinstance(module, nn.LeakyReLU):
        if not 0.0 <= module.negative_slope <= 1.0:
            raise UnsupportedModelError(f"LeakyReLU {name}: slope must be in [0, 1]")
    elif not isinstance(module, (nn.Linear, nn.ReLU, nn.MaxPool2d, *_IDENTITY)):
        raise UnsupportedModelError(f"layer {name} ({type(module).__name__}) is not supported")


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


# --------------------------------------------------------------------------- operator norms


def power_iteration(forward, adjoint, shape: tuple[int, ...], *, iters: int = 500,
                    tol: float = 1e-10, seed: int = 0) -> float:
    """Estimate ‖A‖₂ by power iteration on AᵀA (a lower bound on ‖A‖₂).

    Args:
        forward: v ↦ A v on a batch of one, shape (1, *shape).
        adjoint: u ↦ Aᵀ u, returning shape (1, *shape).
        shape: per-sample input shape of A.
    """
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn((1, *shape), generator=gen, dtype=torch.float64)
    v /= v.norm()
    sigma = 0.0
    for _ in range(iters):
        u = forward(v)
        new = float(u.norm())
        w = adjoint(u)
        nw = w.norm()
        if nw == 0:
            return new
        v = w / nw
        if abs(new - sigma) <= tol * max(new, 1e-300):
            sigma = new
            break
        sigma = new
    return float(forward(v).norm())


def conv2d_norm_upper(weight: Tensor, input_hw: tuple[int, int], padding, dilation) -> float:
    """Certified upper bound on the spectral norm of a zero-padded 2-D convolution.

    max_ω ‖K̂(ω)‖₂ over the DFT of the (dilated) kernel on the padded grid (module docstring;
    Sedghi, Gupta & Long 2019, Theorem 6). Valid for every stride.

    Args:
        weight: (c_out, c_in, kh, kw) kernel.
        input_hw: (H, W) input size.
        padding, dilation: the layer's (int or pair) settings.
    """
    ph, pw = _pair(padding)
    dh, dw = _pair(dilation)
    c_out, c_in, kh, kw = weight.shape
    eh, ew = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    n_h = max(input_hw[0] + 2 * ph, eh)
    n_w = max(input_hw[1] + 2 * pw, ew)
    kernel = torch.zeros((c_out, c_in, n_h, n_w), dtype=torch.float64)
    kernel[:, :, 0:eh:dh, 0:ew:dw] = weight.detach().double().cpu()
    spectrum = torch.fft.fft2(kernel)  # (c_out, c_in, n_h, n_w)
    per_freq = spectrum.permute(2, 3, 0, 1).reshape(-1, c_out, c_in)
    norms = torch.linalg.matrix_norm(per_freq, ord=2)
    return float(norms.max())


def _conv_ops(module: nn.Conv2d, in_shape: tuple[int, ...]):
    w = module.weight.detach().double().cpu()
    stride, padding, dilation = module.stride, module.padding, module.dilation
    out_hw = F.conv2d(torch.zeros((1, *in_shape), dtype=torch.float64), w, None, stride,
                      padding, dilation).shape[2:]
    # output_padding makes conv_transpose2d return exactly the input's spatial size
    extra = []
    for i in range(2):
        full = ((out_hw[i] - 1) * stride[i] - 2 * padding[i] + dilation[i] *
                (w.shape[2 + i] - 1) + 1)
        extra.append(in_shape[1 + i] - full)

    def fwd(v):
        return F.conv2d(v, w, None, stride, padding, dilation)

    def adj(u):
        return F.conv_transpose2d(u, w, None, stride, padding, tuple(extra), 1, dilation)

    return fwd, adj


def _maxpool_factor(module: nn.MaxPool2d) -> float:
    k, s, d = _pair(module.kernel_size), _pair(module.stride or module.kernel_size), _pair(
        module.dilation)
    windows = 1
    for i in range(2):  # windows containing one input position, per axis
        windows *= (d[i] * (k[i] - 1)) // s[i] + 1
    return math.sqrt(windows)


def lipschitz_bound(model: nn.Module, input_shape: tuple[int, ...], *,
                    iters: int = 500, seed: int = 0) -> LipschitzBound:
    """Layer-by-layer certified Lipschitz bound of x ↦ Φ(x) (module docstring).

    Args:
        model: an ``nn.Sequential`` stack of supported layers (see the module docstring).
        input_shape: per-sample input shape, e.g. (1, 28, 28).
        iters: power-iteration steps per linear layer.

    Raises:
        UnsupportedModelError: a layer outside the supported set.
    """
    layers = _layers(model)
    shape = tuple(int(s) for s in input_shape)
    x = torch.zeros((1, *shape), dtype=torch.float64)
    factors: list[OperatorNorm] = []
    last_linear = -1
    with torch.no_grad():
        for i, (name, module) in enumerate(layers):
            _check_layer(name, module)
            in_shape = tuple(x.shape[1:])
            if isinstance(module, nn.Linear):
                w = module.weight.detach().double().cpu()
                power = power_iteration(lambda v, w=w: v @ w.T, lambda u, w=w: u @ w,
                                        (w.shape[1],), iters=iters, seed=seed)
                upper = float(torch.linalg.matrix_norm(w, ord=2))
                factors.append(OperatorNorm(name, "linear", in_shape, power,
                                            upper * (1 + NORM_SLACK), "svd"))
                last_linear = i
                x = F.linear(x, w)
            elif isinstance(module, nn.Conv2d):
                fwd, adj = _conv_ops(module, in_shape)
                power = power_iteration(fwd, adj, in_shape, iters=iters, seed=seed)
                upper = conv2d_norm_upper(module.weight, in_shape[1:], module.padding,
                                          module.dilation)
                factors.append(OperatorNorm(name, "conv2d", in_shape, power,
                                            max(upper, power) * (1 + NORM_SLACK), "fft"))
                last_linear = i
                x = fwd(x)
            elif isinstance(module, nn.MaxPool2d):
                factors.append(OperatorNorm(name, "maxpool2d", in_shape, math.nan,
                                            _maxpool_factor(module), "window count"))
                x = module(x)
            elif isinstance(module, nn.LeakyReLU):
                factors.append(OperatorNorm(name, "activation", in_shape, math.nan,
                                            max(1.0, abs(module.negative_slope)), "slope"))
                x = module(x)
            else:
                x = module(x)
    product = math.prod(f.upper for f in factors)
    last_weight = None
    before_last = math.nan
    if last_linear >= 0 and isinstance(layers[last_linear][1], nn.Linear) and all(
            isinstance(m, _IDENTITY) for _, m in layers[last_linear + 1:]):
        last_weight = layers[last_linear][1].weight.detach().double().cpu()
        last_name = layers[last_linear][0]
        before_last = math.prod(f.upper for f in factors if f.name != last_name)
    return LipschitzBound(tuple(factors), product, before_last, last_weight)


# --------------------------------------------------------------------------- specifications


def _spec(y: Tensor, num_outputs: int) -> Tensor:
    """Rows c_j with g_j = c_jᵀ Φ: (N, C−1, C) rows e_y − e_j, or (N, 1, 1) rows [±1]."""
    if num_outputs == 1:
        sign = torch.where(y > 0, 1.0, -1.0).double()
        return sign.view(-1, 1, 1)
    eye = torch.eye(num_outputs, dtype=torch.float64)
    rows = eye[y].unsqueeze(1) - eye.unsqueeze(0)  # (N, C, C): e_y − e_j for every j
    keep = ~torch.nn.functional.one_hot(y, num_outputs).bool()
    return rows[keep].view(y.shape[0], num_outputs - 1, num_outputs)


# --------------------------------------------------------------------------- CROWN


@dataclass(frozen=True)
class _Affine:
    weight: Tensor  # (n_out, n_in) float64
    bias: Tensor  # (n_out,)


def _dense_chain(model: nn.Module, input_shape: tuple[int, ...]
                 ) -> tuple[list[_Affine], list[float]]:
    """The network as affine maps with activations between: z_0 = A_0 x, a_k = σ_k(z_k),
    z_{k+1} = A_{k+1} a_k, …, Φ = z_L. Returns the affine maps and the activations' negative
    slopes (0 for ReLU). Consecutive affine maps are merged."""
    layers = _layers(model)
    for name, module in layers:
        _check_layer(name, module)
        if isinstance(module, nn.MaxPool2d):
            raise UnsupportedModelError(f"max-pooling ({name}) has no linear relaxation here")
    shape = tuple(int(s) for s in input_shape)
    affines: list[_Affine] = []
    slopes: list[float] = []
    pending: _Affine | None = None
    for name, module in layers:
        if isinstance(module, _IDENTITY):
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
    spec_all = _spec(_labels(y, n_out), n_out)
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


# --------------------------------------------------------------------------- certificates


def _labels(y: Tensor, n_out: int) -> Tensor:
    y = y.long().cpu()
    return (y > 0).long() if n_out == 1 else y


def _safe_ratio(num: Tensor, den: Tensor) -> Tensor:
    """num / den with num > 0, den = 0 giving +inf and num ≤ 0 giving 0."""
    ratio = torch.where(den > 0, num / den.clamp_min(1e-300), torch.inf)
    return torch.where(num > 0, ratio, torch.zeros_like(ratio))


def certify(model: nn.Module, X: Tensor, y: Tensor, *, hi: Tensor | np.ndarray | None = None,
            bounds: tuple[float, float] | None = (0.0, 1.0),
            which: tuple[str, ...] = CERTIFICATES, batch_size: int = 500,
            lipschitz: LipschitzBound | None = None) -> Certificate:
    """Certified lower bounds on R(z) for each point (module docstring for the argument).

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
    labels = _labels(y, n_out)
    spec = _spec(labels, n_out)
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
