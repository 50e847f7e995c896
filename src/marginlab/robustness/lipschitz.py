"""Certified Lipschitz bounds of feed-forward networks, layer by layer (L2 → L2).

Lip(Φ) ≤ Π_k Lip(layer_k). Linear maps contribute their spectral norm ‖A_k‖₂; ReLU and
LeakyReLU with |slope| ≤ 1 are 1-Lipschitz; a max-pool whose windows cover each input at most
m times is √m-Lipschitz (|max a − max b| ≤ max |a − b| per window, windows summed).

Power iteration converges to ‖A‖₂ from below, so it is reported but never used as a
certificate. The certified upper bound is the exact spectral norm (SVD, float64) for a linear
layer; for a zero-padded 2-D convolution (any stride and dilation, groups = 1) it is
max_ω ‖K̂(ω)‖₂ over the 2-D DFT of the kernel on the padded grid: the convolution is a
coordinate selection (norm ≤ 1) of the circular convolution on that grid composed with the
zero-padding embedding (an isometry), and the circular convolution's singular values are those
of the per-frequency c_out × c_in matrices K̂(ω) (Sedghi, Gupta & Long 2019, Theorem 6). A
relative slack of 1e-9 covers float64 rounding.

Supported: an ``nn.Sequential`` stack (nested allowed) of Linear, Conv2d (groups = 1, zero
padding), ReLU, LeakyReLU, MaxPool2d, Flatten, Identity and Dropout (eval).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from marginlab.errors import MarginlabError

__all__ = [
    "LipschitzBound",
    "OperatorNorm",
    "UnsupportedModelError",
    "conv2d_norm_upper",
    "lipschitz_bound",
    "power_iteration",
]

NORM_SLACK = 1e-9
IDENTITY_LAYERS = (nn.Flatten, nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d)


class UnsupportedModelError(MarginlabError):
    """The model's structure is outside what a certificate handles (the message says why)."""


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


# --------------------------------------------------------------------------- layer structure


def layers_of(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model as a flat list of (name, module); nested Sequentials are expanded."""
    if not isinstance(model, nn.Sequential):
        if isinstance(model, (nn.Linear, nn.Conv2d)):
            return [("", model)]
        raise UnsupportedModelError(
            f"{type(model).__name__} is not an nn.Sequential stack of layers")
    out: list[tuple[str, nn.Module]] = []
    for name, child in model.named_children():
        if isinstance(child, nn.Sequential):
            out += [(f"{name}.{n}" if n else name, m) for n, m in layers_of(child)]
        else:
            out.append((name, child))
    return out


def check_layer(name: str, module: nn.Module) -> None:
    if isinstance(module, nn.Conv2d):
        if module.groups != 1 or module.padding_mode != "zeros" or isinstance(
                module.padding, str):
            raise UnsupportedModelError(
                f"conv layer {name}: only groups=1 and numeric zero padding")
    elif isinstance(module, nn.LeakyReLU):
        if not 0.0 <= module.negative_slope <= 1.0:
            raise UnsupportedModelError(f"LeakyReLU {name}: slope must be in [0, 1]")
    elif not isinstance(module, (nn.Linear, nn.ReLU, nn.MaxPool2d, *IDENTITY_LAYERS)):
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
    layers = layers_of(model)
    shape = tuple(int(s) for s in input_shape)
    x = torch.zeros((1, *shape), dtype=torch.float64)
    factors: list[OperatorNorm] = []
    last_linear = -1  # index in ``layers`` of the last linear layer
    last_factor = -1  # index of its factor in ``factors``
    with torch.no_grad():
        for i, (name, module) in enumerate(layers):
            check_layer(name, module)
            in_shape = tuple(x.shape[1:])
            if isinstance(module, nn.Linear):
                w = module.weight.detach().double().cpu()
                power = power_iteration(lambda v, w=w: v @ w.T, lambda u, w=w: u @ w,
                                        (w.shape[1],), iters=iters, seed=seed)
                upper = float(torch.linalg.matrix_norm(w, ord=2))
                factors.append(OperatorNorm(name, "linear", in_shape, power,
                                            upper * (1 + NORM_SLACK), "svd"))
                last_linear, last_factor = i, len(factors) - 1
                x = F.linear(x, w)
            elif isinstance(module, nn.Conv2d):
                fwd, adj = _conv_ops(module, in_shape)
                power = power_iteration(fwd, adj, in_shape, iters=iters, seed=seed)
                upper = conv2d_norm_upper(module.weight, in_shape[1:], module.padding,
                                          module.dilation)
                factors.append(OperatorNorm(name, "conv2d", in_shape, power,
                                            max(upper, power) * (1 + NORM_SLACK), "fft"))
                last_linear, last_factor = i, len(factors) - 1
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
            isinstance(m, IDENTITY_LAYERS) for _, m in layers[last_linear + 1:]):
        last_weight = layers[last_linear][1].weight.detach().double().cpu()
        before_last = math.prod(f.upper for i, f in enumerate(factors) if i != last_factor)
    return LipschitzBound(tuple(factors), product, before_last, last_weight)
