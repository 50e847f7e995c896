"""The training objective as the loop measures it: log L = log Σ_n ℓ(q_n) over the training set.

One chunked forward pass gives the per-sample log-losses, the margins q_n and so every
:class:`~marginlab.margins.MarginStats` field (Lyu & Li, Def. A.3; DESIGN.md §2), in float64
log space. For full-batch steps it can keep its graph so that the next gradient needs no second
forward pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from marginlab.core import margins, targets
from marginlab.core.losses import Loss
from marginlab.train.steps import batch_log_loss

__all__ = ["Evaluation", "Objective", "evaluate_test"]

LN10 = math.log(10.0)


@dataclass(frozen=True)
class Evaluation:
    """One evaluation of the training set.

    Attributes:
        log_loss_sum: log L = log Σ_n ℓ_n (NaN if the parameters or outputs are not finite).
        log_losses: log ℓ_n, float64, shape (N,) (None when not finite).
        smoothed: (γ̃, γ̃_multi), the margins a guarded schedule compares (NaN when not finite).
        q: the margins q_n, float64, shape (N,) (None when not finite, or restored from a
            checkpoint).
        norm_values: (ρ, log Π_i ‖w_i‖^{k_i}) at the evaluated parameters (see
            :meth:`marginlab.margins.Norms.values`).
    """

    log_loss_sum: float
    log_losses: Tensor | None = None
    smoothed: tuple[float, float] = (math.nan, math.nan)
    q: Tensor | None = None
    norm_values: tuple[float, float] | None = None

    @property
    def finite(self) -> bool:
        return math.isfinite(self.log_loss_sum)


NOT_FINITE = Evaluation(math.nan)


class Objective:
    """log L over (X, y), its margins and statistics at the model's current parameters.

    Args:
        model: the network. X, y: inputs and labels in the loss's form.
        loss: the loss. chunk: samples per forward pass.
        convention: margin convention (see :class:`marginlab.margins.Norms`).
        keep_graph: keep the evaluation's graph for :meth:`gradient`.
    """

    def __init__(self, model: nn.Module, X: Tensor, y: Tensor, loss: Loss, chunk: int,
                 convention: margins.Convention, keep_graph: bool):
        self.model, self.X, self.y, self.loss = model, X, y, loss
        self.chunk, self.keep_graph = chunk, keep_graph
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.norms = margins.Norms(model, X[:8], convention)
        self._graph: Tensor | None = None

    def evaluate(self) -> Evaluation:
        """The training set's log L, per-sample log-losses, margins and smoothed margins.

        Every attempt of an epoch is evaluated, so this computes only what a schedule decides
        on; :meth:`stats` completes the statistics of an epoch that is kept.
        """
        self._graph = None
        values = self.norms.values()
        if not all(map(math.isfinite, values)):
            return NOT_FINITE  # a parameter is not finite
        log_losses, qs, finite = [], [], []
        with torch.set_grad_enabled(self.keep_graph):
            for start in range(0, self.X.shape[0], self.chunk):
                out = self.model(self.X[start:start + self.chunk])
                out = out.reshape(out.shape[0], -1)
                finite.append(torch.isfinite(out).all())
                yb = self.y[start:start + self.chunk]
                log_losses.append(batch_log_loss(out, yb, self.loss))
                qs.append(targets.margins(out.detach(), yb))
            per_sample = torch.cat(log_losses)
            log_L = torch.logsumexp(per_sample, 0)
        if not bool(torch.stack(finite).all()):
            return NOT_FINITE  # overflow counts as "did not decrease"
        value = float(log_L.detach())
        if not math.isfinite(value):
            return NOT_FINITE
        if self.keep_graph:
            self._graph = log_L
        inv = self.loss.inverse(value)
        log_rho_l = self.norms.order * math.log(max(values[0], 1e-300))
        smoothed = (margins.scaled(inv, log_rho_l), margins.scaled(inv, values[1]))
        return Evaluation(value, per_sample.detach(), smoothed, torch.cat(qs), values)

    def stats(self, evaluation: Evaluation) -> margins.MarginStats:
        """Every :class:`~marginlab.margins.MarginStats` field of a (finite) evaluation."""
        return margins.stats_from(evaluation.q, evaluation.log_loss_sum, self.norms, self.loss,
                                  values=evaluation.norm_values)

    def gradient(self) -> None:
        """Put ∇ log L at the parameters of the last :meth:`evaluate` into ``p.grad``."""
        for p in self.params:
            p.grad = None
        if self._graph is None:
            log_losses = []
            for start in range(0, self.X.shape[0], self.chunk):
                out = self.model(self.X[start:start + self.chunk])
                log_losses.append(batch_log_loss(out, self.y[start:start + self.chunk],
                                                 self.loss))
            self._graph = torch.logsumexp(torch.cat(log_losses), 0)
        self._graph.backward()
        self._graph = None

    def forget(self) -> None:
        """Drop the kept graph: the parameters changed since the last evaluation."""
        self._graph = None


def evaluate_test(model: nn.Module, test: tuple[Tensor, Tensor] | None, loss: Loss,
                  batch_size: int) -> dict:
    """``test_loss`` (log10 of the mean loss) and ``test_acc`` on the test set; {} without one."""
    if test is None:
        return {}
    o = margins.model_outputs(model, test[0], test[1], loss, batch_size=batch_size,
                              check_inputs=False)
    log_mean = float(torch.logsumexp(o.log_loss, 0)) - math.log(len(o.q))
    return {"test_loss": log_mean / LN10, "test_acc": float((o.q > 0).double().mean())}
