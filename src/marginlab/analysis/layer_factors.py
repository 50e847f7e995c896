"""Per-sample gradients of ``nn.Linear`` and ``nn.Conv2d`` layers as factors, and their Gram
blocks, without the P-vector of any sample's gradient.

For a sum of per-sample scalars q_n (here the margins of
:class:`~marginlab.analysis.margin_jacobian.MarginJacobian`), one forward and one backward pass
over the samples give each layer's inputs a_n and output cotangents g_n. A Linear weight's
per-sample gradient is the outer product g_n a_nᵀ, so its Gram block is (g_n·g_m)(a_n·a_m) (plus
g_n·g_m for the bias) and never needs the P-vector; a Conv2d's per-sample gradient is
g_n·unfold(a_n)ᵀ (Cout × Cin·k·k, small) and is formed explicitly (with the summed cotangents for
its bias). This applies when every parameter of the model is the weight or bias of such a layer,
called once per forward (:func:`layer_plan` checks it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["FLOAT_BYTES", "LayerFactors", "concat_factors", "factor_block", "factor_floats",
           "layer_factors", "layer_plan"]

FLOAT_BYTES = 8

Plan = list[tuple[str, nn.Module]]


@dataclass
class LayerFactors:
    """Per-sample factors of one layer's gradient, for the samples of one chunk."""

    kind: str  # "linear" (outer product g aᵀ, plus g for the bias) or "rows" (explicit rows)
    a: Tensor | None = None  # (B, in) Linear inputs
    g: Tensor | None = None  # (B, out) Linear output cotangents
    bias: bool = False
    rows: Tensor | None = None  # (B, k) explicit per-sample gradient rows (Conv2d)


def layer_plan(model: nn.Module, params: dict[str, nn.Parameter],
               probe: Callable[[], object]) -> Plan | None:
    """Linear/Conv2d layers holding every parameter, each called once; None if not so.

    Args:
        model: the network.
        params: its parameters by name (those the Gram matrix is over).
        probe: runs one forward pass of ``model`` (on one sample), to count the layers' calls.
    """
    plan: Plan = []
    owned: set[int] = set()
    for name, mod in model.named_modules():
        direct = list(mod.parameters(recurse=False))
        if not direct:
            continue
        ok = (isinstance(mod, nn.Linear)
              or (isinstance(mod, nn.Conv2d) and mod.groups == 1
                  and mod.padding_mode == "zeros" and not isinstance(mod.padding, str)))
        if not ok:
            return None
        plan.append((name, mod))
        owned.update(id(p) for p in direct)
    if owned != {id(p) for p in params.values()}:
        return None
    calls: dict[str, list[int]] = {name: [] for name, _ in plan}
    handles = [mod.register_forward_hook(
        lambda m, inp, out, name=name: calls[name].append(inp[0].dim()))
        for name, mod in plan]
    try:
        with torch.no_grad():
            probe()
    finally:
        for h in handles:
            h.remove()
    good = all(len(c) == 1 and (c[0] == 2 if isinstance(mod, nn.Linear) else c[0] == 4)
               for (name, mod), c in zip(plan, calls.values()))
    return plan if good else None


def factor_floats(plan: Plan) -> int:
    """Numbers of per-sample factors the layers of ``plan`` hold for each sample."""
    total = 0
    for _, mod in plan:
        if isinstance(mod, nn.Linear):
            total += mod.in_features + mod.out_features
        else:
            total += mod.weight.numel() + (mod.out_channels if mod.bias is not None else 0)
    return total


def layer_factors(plan: Plan, margins: Callable[[], Tensor]) -> tuple[list[LayerFactors], Tensor]:
    """The layer factors of the samples ``margins`` computes, and b = J θ.

    Args:
        plan: from :func:`layer_plan`.
        margins: runs the forward pass of one batch and returns its per-sample scalars q (B,).

    Returns:
        (factors, b): one :class:`LayerFactors` per layer of ``plan``, and b = (⟨∇q_n, θ⟩)_n,
        float64 (B,).
    """
    inputs: dict[str, Tensor] = {}
    outputs: dict[str, Tensor] = {}

    def hook(mod, inp, out, name):
        inputs[name] = inp[0].detach()
        outputs[name] = out

    handles = [mod.register_forward_hook(lambda m, i, o, name=name: hook(m, i, o, name))
               for name, mod in plan]
    try:
        q = margins()
    finally:
        for h in handles:
            h.remove()
    names = [name for name, _ in plan]
    # Samples are independent, so d(Σ_n q_n)/d(output of sample n) = dq_n/d(output n).
    cot = torch.autograd.grad(q.sum(), [outputs[n] for n in names], allow_unused=True)
    factors, b = [], torch.zeros(q.numel(), dtype=torch.float64)
    for (name, mod), g in zip(plan, cot):
        a = inputs[name]
        g = torch.zeros_like(outputs[name]) if g is None else g.detach()
        if isinstance(mod, nn.Linear):
            has_bias = mod.bias is not None
            b += (g * (a @ mod.weight.detach().T)).sum(1)
            if has_bias:
                b += g @ mod.bias.detach()
            factors.append(LayerFactors("linear", a=a, g=g, bias=has_bias))
        else:
            cols = nn.functional.unfold(a, mod.kernel_size, dilation=mod.dilation,
                                        padding=mod.padding, stride=mod.stride)
            g2 = g.reshape(g.shape[0], g.shape[1], -1)
            rows = torch.einsum("bot,bkt->bok", g2, cols).reshape(g.shape[0], -1)
            flat_w = mod.weight.detach().reshape(-1)
            if mod.bias is not None:
                rows = torch.cat([rows, g2.sum(2)], 1)
                flat_w = torch.cat([flat_w, mod.bias.detach()])
            b += rows @ flat_w
            factors.append(LayerFactors("rows", rows=rows))
    return factors, b


def concat_factors(parts: list[tuple[list[LayerFactors], Tensor]]
                   ) -> tuple[list[LayerFactors], Tensor]:
    """The factors and b of several batches, joined along the samples."""
    if len(parts) == 1:
        return parts[0]
    factors = []
    for layer in zip(*(fs for fs, _ in parts)):
        first = layer[0]
        if first.kind == "linear":
            factors.append(LayerFactors("linear", a=torch.cat([f.a for f in layer]),
                                        g=torch.cat([f.g for f in layer]), bias=first.bias))
        else:
            factors.append(LayerFactors("rows", rows=torch.cat([f.rows for f in layer])))
    return factors, torch.cat([b for _, b in parts])


def factor_block(fi: list[LayerFactors], fj: list[LayerFactors]) -> Tensor:
    """The Gram block (⟨∇q_n, ∇q_m⟩)_{n ∈ i, m ∈ j} from two chunks' factors."""
    block = None
    for a, c in zip(fi, fj):
        if a.kind == "linear":
            gg = a.g @ c.g.T
            part = gg * (a.a @ c.a.T) + (gg if a.bias else 0.0)
        else:
            part = a.rows @ c.rows.T
        block = part if block is None else block + part
    return block
