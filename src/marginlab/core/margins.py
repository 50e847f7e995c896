"""Margins, normalized margins and smoothed normalized margins (DESIGN.md §2).

Binary (one output, y ∈ {±1} or {0, 1}): q_n = y_n Φ(θ; x_n).
Multi-class (C ≥ 2 outputs, y ∈ [C]): q_n = Φ_{y_n} − max_{j≠y_n} Φ_j.
Normalized margin γ = q_min / ρ^L (Lyu & Li, Eq. (3)); multi-homogeneous γ_multi =
q_min / Π‖w_i‖^{k_i} (Appendix K.1); smoothed γ̃ = ℓ^{-1}(L) / ρ^L (Def. A.3, G.1), with the
logistic inverse for cross-entropy. Everything is evaluated in float64 and in batches.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from marginlab.core import homogeneity, targets
from marginlab.core.losses import Loss, get_loss, log_sum, multiclass_soft_margin
from marginlab.errors import MarginlabError, NotHomogeneousError

__all__ = ["MarginStats", "NonFiniteOutputError", "Norms", "Outputs", "measure",
           "model_outputs", "per_sample", "scaled", "stats_from", "validate_data"]

Convention = Literal["homogeneous", "paper_with_bias"]
LOG10_E = 1.0 / math.log(10.0)


@dataclass(frozen=True)
class MarginStats:
    """Margin statistics of a model on a data set.

    Attributes:
        q_min: smallest margin min_n q_n (unnormalized).
        rho: ‖θ‖₂ over the parameters that enter the norm (all, or the groups' under
            the ``paper_with_bias`` convention).
        norm_product: Π_i ‖w_i‖₂^{k_i} over the parameter groups.
        order: homogeneity order L.
        normalized_margin: q_min / ρ^L.
        normalized_margin_multi: q_min / Π‖w_i‖^{k_i}.
        smoothed_margin: ℓ^{-1}(L) / ρ^L.
        smoothed_margin_multi: ℓ^{-1}(L) / Π‖w_i‖^{k_i}.
        log_loss_sum: natural log of L = Σ_n ℓ(q_n).
        log10_loss_mean: log10 of L / N.
        train_acc: fraction of samples with q_n > 0 (on whatever set was measured).
        n: number of samples.
    """

    q_min: float
    rho: float
    norm_product: float
    order: float
    normalized_margin: float
    normalized_margin_multi: float
    smoothed_margin: float
    smoothed_margin_multi: float
    log_loss_sum: float
    log10_loss_mean: float
    train_acc: float
    n: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class Outputs:
    """Per-sample float64 quantities of one pass over a data set (shape (N,) each).

    Attributes:
        q: margins q_n.
        log_loss: log ℓ(q_n) (binary) or log ℓ(q̃_n) (multi-class).
    """

    q: Tensor
    log_loss: Tensor


class NonFiniteOutputError(MarginlabError):
    """The model produced NaN or inf outputs (e.g. float32 overflow of huge logits)."""


def validate_data(X: Tensor, y: Tensor) -> None:
    """Reject data no model should see: empty, NaN/inf inputs, mismatched or non-integer labels."""
    if not isinstance(X, Tensor) or not isinstance(y, Tensor):
        raise MarginlabError("inputs and labels must be torch tensors")
    if X.dim() == 0:
        raise MarginlabError("inputs must have a leading sample dimension, got a scalar")
    if X.shape[0] == 0:
        raise MarginlabError("the data set is empty")
    if y.dim() != 1:
        raise MarginlabError(f"labels must be a 1-D tensor, got shape {tuple(y.shape)}")
    if X.shape[0] != y.shape[0]:
        raise MarginlabError(f"{X.shape[0]} inputs but {y.shape[0]} labels")
    if X.is_floating_point() and not torch.isfinite(X).all():
        bad = (~torch.isfinite(X.reshape(X.shape[0], -1))).any(1).nonzero()[:, 0]
        raise MarginlabError(
            f"inputs contain NaN or inf ({bad.numel()} samples, first at index {bad[0].item()})"
        )
    if y.is_floating_point():
        if not torch.isfinite(y).all() or not torch.equal(y, y.round()):
            raise MarginlabError("labels must be integers")


def model_outputs(
    model: nn.Module,
    X: Tensor,
    y: Tensor,
    loss: str | Loss = "cross_entropy",
    *,
    batch_size: int = 1000,
    check_inputs: bool = True,
) -> Outputs:
    """Margins and log-losses per sample, in batches and without gradients.

    ``check_inputs=False`` skips :func:`validate_data` for data already validated (the trainer
    checks its data once, not every epoch).

    Raises:
        MarginlabError: on invalid data, labels out of range, or an output shape that does not
            fit the labels.
        NonFiniteOutputError: the model's outputs are NaN or inf.
    """
    if check_inputs:
        validate_data(X, y)
    if batch_size < 1:
        raise MarginlabError(f"batch_size must be a positive integer, got {batch_size}")
    loss_fn = get_loss(loss)
    device = next(iter(model.parameters()), torch.empty(0)).device
    dtype = next(iter(model.parameters()), torch.empty(0, dtype=torch.float32)).dtype
    qs, lls = [], []
    target = None
    with torch.no_grad():
        for start in range(0, X.shape[0], batch_size):
            xb = X[start : start + batch_size].to(device=device, dtype=dtype)
            try:
                out = model(xb)
            except torch.cuda.OutOfMemoryError:  # (an alias of torch.OutOfMemoryError)
                raise
            except RuntimeError as exc:  # typically inputs of a shape the model cannot take
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise MarginlabError(
                    f"the model cannot be applied to inputs of shape {tuple(xb.shape[1:])}: "
                    f"{first}"
                ) from None
            if out.shape[0] != xb.shape[0]:
                raise MarginlabError(
                    f"the model returned {out.shape[0]} outputs for {xb.shape[0]} inputs"
                )
            out = out.reshape(out.shape[0], -1).to(torch.float64)
            if target is None:
                target = targets.targets(y, out.shape[1]).to(device)
            tb = target[start : start + batch_size]
            q = targets.margins(out, tb)
            q_soft = q if out.shape[1] == 1 else multiclass_soft_margin(out, tb)
            if not torch.isfinite(out).all():
                raise NonFiniteOutputError("the model's outputs are not finite (overflow?)")
            qs.append(q.cpu())
            lls.append(loss_fn.log_loss(q_soft).cpu())
    return Outputs(q=torch.cat(qs), log_loss=torch.cat(lls))


def per_sample(
    model: nn.Module, X: Tensor, y: Tensor, *, batch_size: int = 1000
) -> Tensor:
    """Margins q_n (float64, shape (N,)): y_n Φ(x_n) for one output, Φ_y − max_{j≠y} Φ_j else."""
    return model_outputs(model, X, y, batch_size=batch_size).q


def measure(
    model: nn.Module,
    X: Tensor,
    y: Tensor,
    loss: str | Loss = "cross_entropy",
    groups: homogeneity.ParameterGroups | None = None,
    *,
    batch_size: int = 1000,
    convention: Convention = "homogeneous",
    check_inputs: bool = True,
) -> MarginStats:
    """Margin statistics of ``model`` on (X, y) (DESIGN.md §2).

    Args:
        model: a homogeneous network (checked once per model, see :mod:`marginlab.homogeneity`).
        X: inputs (N, ...). y: labels (N,).
        loss: ``cross_entropy``, ``logistic``, ``exponential`` or an ExpTailLoss.
        groups: parameter groups for the multi-homogeneous margin; default one per layer.
        batch_size: samples per forward pass.
        convention: ``homogeneous`` (refuses non-homogeneous models), or ``paper_with_bias``:
            Lyu & Li's convention for models with biases (Appendix K.1) — order = number of
            groups, each of degree 1, and every norm over the groups' parameters only (biases
            past the first layer left out).
        check_inputs: validate X and y (skip only for data validated before).

    Returns:
        A :class:`MarginStats`.

    Raises:
        NotHomogeneousError: the model is not homogeneous and ``convention`` is ``homogeneous``.
        MarginlabError: invalid data or labels.
    """
    out = model_outputs(model, X, y, loss, batch_size=batch_size, check_inputs=check_inputs)
    norms = Norms(model, X[:8], convention, groups)
    return stats_from(out.q, float(log_sum(out.log_loss)), norms, loss)


class Norms:
    """ρ, log ρ^L and log Π_i ‖w_i‖^{k_i} of a model's current parameters under a margin
    convention (DESIGN.md §2). The convention — order, groups, degrees — is resolved once; the
    norms are read from the parameters at every call, so one object serves a whole training run.

    Args:
        model: the network.
        example: a few inputs, for the homogeneity check of the ``homogeneous`` convention.
        convention: as for :func:`measure`.
        groups: parameter groups for the multi-homogeneous margin; default one per layer.

    Raises:
        NotHomogeneousError: the model is not homogeneous and ``convention`` is ``homogeneous``.
    """

    def __init__(self, model: nn.Module, example: Tensor, convention: Convention = "homogeneous",
                 groups: homogeneity.ParameterGroups | None = None):
        self.named = dict(model.named_parameters())
        if convention == "paper_with_bias":
            self.groups = {k: tuple(v)
                           for k, v in (groups or homogeneity.default_groups(model)).items()}
            if not self.groups:
                raise MarginlabError("the model has no Linear/Conv layers to form parameter "
                                     "groups")
            self.order = float(len(self.groups))
            self.degrees = dict.fromkeys(self.groups, 1.0)
            self.rho_members = [m for ms in self.groups.values() for m in ms]
        elif convention == "homogeneous":
            report = homogeneity.cached_check(model, example, groups)
            if not report.is_homogeneous:
                raise NotHomogeneousError(
                    "the model is not homogeneous in its parameters (residual "
                    f"{report.max_residual:.1e}); normalized margins are undefined — remove the "
                    "biases past the first layer, or ask for convention='paper_with_bias'"
                )
            self.order, self.groups = report.order, report.groups
            self.degrees = {k: (v if v is not None else math.nan)
                            for k, v in report.layer_orders.items()}
            self.rho_members = list(self.named)
        else:
            raise MarginlabError(f"unknown convention {convention!r}")

    def squares(self) -> dict[str, float]:
        """‖p‖² of every parameter of the model, read back from the device at once (one
        synchronization however many layers)."""
        names = list(self.named)
        with torch.no_grad():
            values = torch.stack([self.named[m].detach().double().pow(2).sum()
                                  for m in names]).tolist()
        return dict(zip(names, values))

    def values(self) -> tuple[float, float]:
        """(ρ, log Π_i ‖w_i‖^{k_i}) from one read of the parameters' squared norms; NaN or inf
        when a parameter is not finite."""
        sq = self.squares()
        rho = math.sqrt(sum(sq[m] for m in self.rho_members))
        log_product = sum(self.degrees[g] * math.log(max(math.sqrt(sum(sq[m] for m in ms)),
                                                         1e-300))
                          for g, ms in self.groups.items())
        return rho, log_product

    def rho(self) -> float:
        """‖θ‖₂ over the convention's parameters."""
        return self.values()[0]

    def log_product(self) -> float:
        """log Π_i ‖w_i‖^{k_i}."""
        return self.values()[1]

    def logs(self) -> tuple[float, float]:
        """(log ρ^L, log Π_i ‖w_i‖^{k_i})."""
        rho, log_product = self.values()
        return self.order * math.log(max(rho, 1e-300)), log_product


def stats_from(q: Tensor, log_loss_sum: float, norms: Norms,
               loss: str | Loss = "cross_entropy", *,
               values: tuple[float, float] | None = None) -> MarginStats:
    """:class:`MarginStats` from per-sample margins q_n, log L and the parameter norms.

    Args:
        q: margins q_n, shape (N,). log_loss_sum: log L. norms: the model's norms.
        loss: the loss whose inverse gives the smoothed margins.
        values: ``norms.values()`` read when q was computed (default: read them now).
    """
    rho, log_norm_product = norms.values() if values is None else values
    log_rho_l = norms.order * math.log(max(rho, 1e-300))
    q_min = float(q.min())
    inv = get_loss(loss).inverse(log_loss_sum)
    n = int(q.shape[0])
    return MarginStats(
        q_min=q_min,
        rho=rho,
        norm_product=_safe_exp(log_norm_product),
        order=norms.order,
        normalized_margin=scaled(q_min, log_rho_l),
        normalized_margin_multi=scaled(q_min, log_norm_product),
        smoothed_margin=scaled(inv, log_rho_l),
        smoothed_margin_multi=scaled(inv, log_norm_product),
        log_loss_sum=log_loss_sum,
        log10_loss_mean=(log_loss_sum - math.log(n)) * LOG10_E,
        train_acc=float((q > 0).double().mean()),
        n=n,
    )


def scaled(value: float, log_scale: float) -> float:
    """value / e^{log_scale}, formed as sign · e^{log|value| − log_scale} so that a margin q and
    a norm ρ^L far outside float64's range still give their (finite) ratio.

    Args:
        value: a margin q_min or ℓ^{-1}(L) (any sign).
        log_scale: log ρ^L or log Π‖w_i‖^{k_i}.
    """
    if value == 0.0 or not math.isfinite(value):
        return value
    return math.copysign(_safe_exp(math.log(abs(value)) - log_scale), value)


def _safe_exp(x: float) -> float:
    """e^x, or inf past float64's range (never an OverflowError)."""
    if math.isnan(x):
        return math.nan
    return math.exp(x) if x < 709.78 else math.inf
