"""Numerical, model-agnostic test of (multi-)homogeneity in the parameters (DESIGN.md §1).

A network is L-homogeneous if Φ(cθ; x) = c^L Φ(θ; x) for c > 0 (Lyu & Li, Eq. (2)); it is
multi-homogeneous with degrees (k_1..k_m) in parameter groups (w_1..w_m) if
Φ(c_1 w_1, …, c_m w_m; x) = Π c_i^{k_i} Φ(w; x) (Lyu & Li, Eq. (4)). The check scales all
parameters (then each group alone) by c ∈ {0.5, 2, 3} on a float64 copy of the model, fits the
exponent from the outputs, and accepts when the fit is exact to ``tol`` relative.
"""

from __future__ import annotations

import copy
import math
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from marginlab.errors import MarginlabError

__all__ = ["HomogeneityReport", "ParameterGroups", "cached_check", "check", "default_groups"]

ParameterGroups = Mapping[str, Sequence[str]]
"""Group name -> names of the parameters (as in ``model.named_parameters()``) in the group."""

SCALES = (0.5, 2.0, 3.0)
LAYER_TYPES = (nn.Linear, nn.modules.conv._ConvNd)


@dataclass(frozen=True)
class HomogeneityReport:
    """Result of :func:`check`.

    Attributes:
        order: fitted degree L of homogeneity in all parameters (rounded to an integer when the
            fit is within 1e-6 of one); meaningful when ``is_homogeneous``.
        is_homogeneous: whether Φ(cθ) = c^L Φ(θ) held to ``tol`` relative for every c.
        layer_orders: group name -> fitted degree k_i (None where the group is not homogeneous).
        max_residual: worst relative residual ‖Φ(cθ) − c^L Φ(θ)‖ / ‖c^L Φ(θ)‖ over c.
        group_residuals: group name -> worst relative residual of that group's fit.
        groups: group name -> parameter names, as checked.
        ungrouped: parameters in no group (e.g. biases of later layers).
    """

    order: float
    is_homogeneous: bool
    layer_orders: dict[str, float | None]
    max_residual: float
    group_residuals: dict[str, float] = field(default_factory=dict)
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    ungrouped: tuple[str, ...] = ()

    @property
    def is_multi_homogeneous(self) -> bool:
        """Homogeneous in every group separately, with degrees summing to the overall order."""
        orders = list(self.layer_orders.values())
        return (
            self.is_homogeneous
            and not self.ungrouped
            and all(k is not None for k in orders)
            and abs(sum(orders) - self.order) < 1e-6  # type: ignore[arg-type]
        )

    def summary(self) -> str:
        """One line per fact, for the CLI."""
        if self.is_homogeneous:
            head = f"homogeneous of order {_fmt(self.order)} (max residual {self.max_residual:.1e})"
        else:
            head = f"not homogeneous (worst residual {self.max_residual:.1e})"
        lines = [head]
        for name, k in self.layer_orders.items():
            r = self.group_residuals.get(name, float("nan"))
            deg = "not homogeneous" if k is None else f"order {_fmt(k)}"
            lines.append(f"  {name}: {deg} (residual {r:.1e})")
        if self.ungrouped:
            lines.append(f"  in no group: {', '.join(self.ungrouped)}")
        return "\n".join(lines)


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.6g}"


def default_groups(model: nn.Module) -> dict[str, tuple[str, ...]]:
    """One group per Linear/Conv layer: its weight, plus its bias for the first layer only.

    Layers are taken in registration order; the first layer's bias counts as part of its weight
    (Lyu & Li, Appendix K.1). Other biases are in no group.
    """
    groups: dict[str, tuple[str, ...]] = {}
    for name, module in model.named_modules():
        if not isinstance(module, LAYER_TYPES) or module.weight is None:
            continue
        prefix = f"{name}." if name else ""
        members = [prefix + "weight"]
        if not groups and getattr(module, "bias", None) is not None:
            members.append(prefix + "bias")
        groups[name or "layer"] = tuple(members)
    return groups


def _outputs(model: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        return model(x).reshape(x.shape[0], -1)


def _fit(model: nn.Module, x: Tensor, params: list[nn.Parameter], base: Tensor, tol: float):
    """Fit the exponent k in Φ(c·params) = c^k Φ; return (k, worst relative residual)."""
    saved = [p.detach().clone() for p in params]
    outs = []
    try:
        for c in SCALES:
            with torch.no_grad():
                for p, s in zip(params, saved):
                    p.copy_(s * c)
            outs.append(_outputs(model, x))
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)
    base_norm = base.norm().item()
    ks = [math.log(o.norm().item() / base_norm) / math.log(c) if o.norm() > 0 else math.nan
          for c, o in zip(SCALES, outs)]
    k = sum(ks) / len(ks)
    if math.isfinite(k) and abs(k - round(k)) < 1e-6:
        k = float(round(k))
    if not math.isfinite(k):
        return k, math.inf
    residual = max(
        ((o - (c**k) * base).norm() / ((c**k) * base_norm)).item() for c, o in zip(SCALES, outs)
    )
    return k, residual


def check(
    model: nn.Module,
    example_inputs: Tensor,
    groups: ParameterGroups | None = None,
    *,
    tol: float = 1e-6,
    n_inputs: int = 8,
) -> HomogeneityReport:
    """Test whether ``model`` is homogeneous in its parameters, overall and per group.

    Args:
        model: any module mapping a batch of inputs to outputs; it is not modified (the check
            runs on a float64 copy).
        example_inputs: a batch of inputs (N, ...); the first ``n_inputs`` are used.
        groups: group name -> parameter names; defaults to :func:`default_groups`.
        tol: relative residual below which a fit counts as exact.
        n_inputs: how many example inputs to evaluate.

    Returns:
        A :class:`HomogeneityReport` (DESIGN.md §1).

    Raises:
        MarginlabError: if the model has no parameters, a group names a parameter the model does
            not have, or the outputs are identically zero (no exponent can be fitted).
    """
    probe = copy.deepcopy(model).to(torch.float64).eval()
    named = dict(probe.named_parameters())
    if not named:
        raise MarginlabError("the model has no parameters; homogeneity in parameters is undefined")
    group_map = {k: tuple(v) for k, v in (groups or default_groups(probe)).items()}
    for gname, members in group_map.items():
        missing = [m for m in members if m not in named]
        if missing:
            raise MarginlabError(f"group {gname!r} names unknown parameters: {', '.join(missing)}")
    device = next(iter(named.values())).device
    x = example_inputs[:n_inputs].to(device=device, dtype=torch.float64)
    # Homogeneity is a property of the parameterization, so it must hold at every θ: check at
    # the given parameters and at a random perturbation of them (zero-initialized biases would
    # otherwise make a network with biases look homogeneous).
    gen = torch.Generator().manual_seed(0)
    given = [p.detach().clone() for p in named.values()]
    orders, residuals = [], []
    group_fits: dict[str, list[tuple[float, float]]] = {g: [] for g in group_map}
    for perturb in (False, True):
        with torch.no_grad():
            for p, p0 in zip(named.values(), given):
                noise = (torch.randn(p.shape, generator=gen, dtype=p.dtype).to(p.device)
                         if perturb else 0.0)
                scale = p0.pow(2).mean().sqrt().item() if p0.numel() else 0.0
                p.copy_(p0 + 0.5 * (scale if scale > 0 else 0.1) * noise)
        base = _outputs(probe, x)
        if not torch.isfinite(base).all():
            raise MarginlabError("the model's outputs on the example inputs are not finite")
        if base.norm().item() == 0.0:
            raise MarginlabError("the model's outputs are all zero on the example inputs; "
                                 "give other inputs or parameters to fit an exponent")
        k, r = _fit(probe, x, list(named.values()), base, tol)
        orders.append(k)
        residuals.append(r)
        for gname, members in group_map.items():
            group_fits[gname].append(_fit(probe, x, [named[m] for m in members], base, tol))
    order = orders[0]
    residual = max([*residuals, abs(orders[1] - orders[0]) / max(abs(order), 1e-12)])
    layer_orders: dict[str, float | None] = {}
    group_residuals: dict[str, float] = {}
    for gname, fits in group_fits.items():
        (k0, r0), (k1, r1) = fits
        r = max(r0, r1, abs(k1 - k0) / max(abs(k0), 1e-12))
        layer_orders[gname] = k0 if r <= tol else None
        group_residuals[gname] = r
    grouped = {m for members in group_map.values() for m in members}
    return HomogeneityReport(
        order=order,
        is_homogeneous=residual <= tol,
        layer_orders=layer_orders,
        max_residual=residual,
        group_residuals=group_residuals,
        groups=group_map,
        ungrouped=tuple(n for n in named if n not in grouped),
    )


_CACHE: weakref.WeakKeyDictionary[nn.Module, tuple[object, HomogeneityReport]] = (
    weakref.WeakKeyDictionary()
)


def cached_check(
    model: nn.Module, example_inputs: Tensor, groups: ParameterGroups | None = None
) -> HomogeneityReport:
    """:func:`check`, computed once per model (and groups): homogeneity is structural."""
    key = None if groups is None else tuple((k, tuple(v)) for k, v in groups.items())
    hit = _CACHE.get(model)
    if hit is not None and hit[0] == key:
        return hit[1]
    report = check(model, example_inputs, groups)
    _CACHE[model] = (key, report)
    return report
