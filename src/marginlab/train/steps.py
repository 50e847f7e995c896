"""Step rules: how one epoch moves the parameters (plain SGD, heavy ball).

Every step is taken on the loss rescaled by the frame F = log L̄ of the last kept epoch
(DESIGN.md §3): a step of size ``step`` on R = exp(log L̄_B − F) is a step of size
η = step·e^{−F} on the mean batch loss L̄_B, and R never leaves float range however small L̄ is.
The training loop owns everything else (evaluation, decisions, rollback, recording); a step rule
holds only its own state (the heavy ball's velocity), which the loop checkpoints and restores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from marginlab.core.losses import Loss, log_loss_from_logits, log_loss_from_margins
from marginlab.errors import MarginlabError

__all__ = ["EpochInput", "EpochSteps", "HeavyBall", "SGDStep", "StepRule", "batch_log_loss",
           "heavy_ball_epoch", "sgd_epoch"]

# For full-batch descent on up to this many samples the evaluation keeps its graph, so that the
# next step's gradient needs no second forward pass; above it, memory would grow with N.
GRAPH_SAMPLES = 5000


def batch_log_loss(out: Tensor, yb: Tensor, loss: Loss) -> Tensor:
    """Per-sample log ℓ (float64, shape (B,)) from outputs and labels in the loss's form
    (±1 float64 for one output, class indices otherwise)."""
    out = out.reshape(out.shape[0], -1).to(torch.float64)
    if out.shape[1] == 1:
        return log_loss_from_margins(yb * out[:, 0], loss)
    return log_loss_from_logits(out, yb, loss)


@dataclass
class EpochInput:
    """What a step rule needs for one epoch.

    Attributes:
        model, params: the network and its trainable parameters.
        X, y: training inputs and labels in the loss's form (on the training device).
        loss: the loss. frame: F = log L̄ of the last kept epoch.
        step: the schedule's step on R (``Schedule.relative_step``).
        lam, power: weight decay λ(t) and its power r (λ = 0: none).
        batch_size: mini-batch size, None for full batch. gen: the shuffling generator.
        objective: the loop's evaluator (:class:`~marginlab.train.objective.Objective`).
        log_losses: log ℓ_n at the current parameters (N,); log_loss_sum: log Σ_n ℓ_n.
    """

    model: nn.Module
    params: list[Tensor]
    X: Tensor
    y: Tensor
    loss: Loss
    frame: float
    step: float
    lam: float
    power: float
    batch_size: int | None
    gen: torch.Generator
    objective: object
    log_losses: Tensor
    log_loss_sum: float


@dataclass(frozen=True)
class EpochSteps:
    """What an epoch did: steps taken, and the samples they used (None: all, not recorded)."""

    steps: int
    samples_used: int | None = None


class StepRule:
    """Base class. A rule runs an epoch and keeps whatever state its steps carry over."""

    name = "step"

    def begin(self, params: list[Tensor]) -> None:
        """Allocate the state for ``params`` (called once before training)."""

    def keeps_graph(self, batch_size: int | None, n: int) -> bool:
        """Whether the evaluation should keep its graph for this rule's next step."""
        return False

    def epoch(self, inp: EpochInput) -> EpochSteps:
        raise NotImplementedError

    def accept(self) -> None:
        """The epoch just run was kept."""

    def rollback(self) -> None:
        """The epoch just run was rolled back (the parameters are restored by the loop)."""

    def state_tensors(self) -> dict[str, Tensor]:
        """Tensors to checkpoint (names without prefix)."""
        return {}

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        if tensors:
            raise MarginlabError(f"the {self.name} step rule keeps no state, but the checkpoint "
                                 f"holds {', '.join(sorted(tensors))}")


def _wd_coefficient(lam: float, power: float, frame: float, params: list[Tensor]) -> float:
    """λ r ‖θ‖^{r−2} in R's units (× e^{−frame}); 0 without weight decay."""
    if lam <= 0:
        return 0.0
    if -frame > 700:
        raise MarginlabError("weight decay needs a loss above 1e-300; a run with a loss this "
                             "small is not a weakly regularized one")
    with torch.no_grad():
        norm = torch.sqrt(sum(p.double().pow(2).sum() for p in params))
    return lam * math.exp(-frame) * power * float(norm) ** (power - 2)


class SGDStep(StepRule):
    """Plain SGD over a fresh shuffle, in batches of ``batch_size`` (the last one shorter)."""

    name = "sgd"

    def epoch(self, inp: EpochInput) -> EpochSteps:
        n = inp.X.shape[0]
        bs = n if inp.batch_size is None else min(inp.batch_size, n)
        return EpochSteps(sgd_epoch(inp.model, inp.params, inp.X, inp.y, inp.loss, inp.frame,
                                    inp.step, inp.lam, inp.power, bs, inp.gen))


def sgd_epoch(model: nn.Module, params: list[Tensor], X: Tensor, y: Tensor, loss: Loss,
              frame: float, step: float, lam: float, power: float, bs: int,
              gen: torch.Generator) -> int:
    """One pass of SGD over a fresh shuffle; returns the number of steps taken.

    The step on R = exp(log L̄_B − frame) with size ``step`` is the step of size
    η = step·e^{−frame} on the mean batch loss L̄_B. The weight-decay gradient
    λ r ‖θ‖^{r−2} θ is added with the true rate η (scaled into R's units). Plain SGD is written
    out: torch.optim's first use imports torch._dynamo, seconds of start-up for every run.
    """
    n = X.shape[0]
    order = torch.randperm(n, generator=gen).to(X.device)
    if lam > 0 and -frame > 700:
        _wd_coefficient(lam, power, frame, params)  # raises
    steps = 0
    for start in range(0, n, bs):
        idx = order[start:start + bs]
        log_l = batch_log_loss(model(X[idx]), y[idx], loss)
        log_mean = torch.logsumexp(log_l, 0) - math.log(idx.numel())
        rescaled = torch.exp(log_mean - frame)
        for p in params:
            p.grad = None
        rescaled.backward()
        if lam > 0:
            with torch.no_grad():
                with_grad = [p for p in params if p.grad is not None]
                coef = _wd_coefficient(lam, power, frame, with_grad)
                for p in with_grad:
                    p.grad.add_(p, alpha=coef)
        with torch.no_grad():
            stepped = [p for p in params if p.grad is not None]
            if stepped:
                torch._foreach_add_(stepped, [p.grad for p in stepped], alpha=-step)
        steps += 1
    return steps


class HeavyBall(StepRule):
    """Heavy-ball momentum on the loss-relative step: v ← μ v − α ∇R, θ ← θ + v.

    With mini-batches, each epoch steps only on the samples within ``active_gap`` nats of the
    total loss, cut into equal batches; with ``batch_size=None`` (or ≥ N) an epoch is one
    gradient step on log L, reusing the evaluation's forward pass for N ≤ 5000. The velocity is
    zeroed when an epoch is rolled back (a restart) and checkpointed with the run.

    Args:
        momentum: μ in [0, 1).
        active_gap: nats; None uses every sample.
    """

    name = "heavy_ball"

    def __init__(self, momentum: float = 0.9, active_gap: float | None = 30.0):
        self.momentum, self.active_gap = momentum, active_gap
        self.velocity: list[Tensor] = []
        self._grad_cache: list[Tensor] | None = None  # full batch: ∇ log L at θ

    def begin(self, params: list[Tensor]) -> None:
        self.velocity = [torch.zeros_like(p) for p in params]
        self._grad_cache = None

    def keeps_graph(self, batch_size: int | None, n: int) -> bool:
        return _full(batch_size, n) and n <= GRAPH_SAMPLES

    def active_samples(self, log_losses: Tensor, log_L: float) -> Tensor:
        """Indices of the samples with ℓ_n ≥ e^{−gap}·L (log_losses: log ℓ_n, shape (N,))."""
        if self.active_gap is None:
            return torch.arange(log_losses.numel())
        return torch.nonzero(log_losses >= log_L - self.active_gap)[:, 0]

    def epoch(self, inp: EpochInput) -> EpochSteps:
        n = inp.X.shape[0]
        if _full(inp.batch_size, n):
            if self._grad_cache is None:
                inp.objective.gradient()
                self._grad_cache = [_grad(p) for p in inp.params]
            grads = self._grad_cache
            coef = _wd_coefficient(inp.lam, inp.power, inp.frame, inp.params)
            if coef:
                grads = [g + coef * p.detach() for g, p in zip(grads, inp.params)]
            _heavy_ball(inp.params, self.velocity, grads, inp.step, self.momentum)
            return EpochSteps(1, n)
        indices = self.active_samples(inp.log_losses, inp.log_loss_sum)
        steps = heavy_ball_epoch(inp.model, inp.params, self.velocity, inp.X, inp.y, indices,
                                 inp.loss, inp.frame, inp.step, self.momentum, inp.batch_size,
                                 inp.gen, lam=inp.lam, power=inp.power)
        return EpochSteps(steps, indices.numel())

    def accept(self) -> None:
        self._grad_cache = None

    def rollback(self) -> None:
        for v in self.velocity:  # a restart: the momentum buffer is dropped
            v.zero_()

    def state_tensors(self) -> dict[str, Tensor]:
        return {f"velocity.{i}": v for i, v in enumerate(self.velocity)}

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        names = {f"velocity.{i}" for i in range(len(self.velocity))}
        if set(tensors) != names:
            raise MarginlabError("the checkpoint's momentum buffer does not fit the model "
                                 f"({len(tensors)} tensors for {len(names)} parameters)")
        for i, v in enumerate(self.velocity):
            t = tensors[f"velocity.{i}"]
            if t.shape != v.shape:
                raise MarginlabError(f"the checkpoint's momentum buffer {i} has shape "
                                     f"{tuple(t.shape)}, the parameter {tuple(v.shape)}")
            v.copy_(t)


def _full(batch_size: int | None, n: int) -> bool:
    return batch_size is None or batch_size >= n


def heavy_ball_epoch(model: nn.Module, params: list[Tensor], velocity: list[Tensor], X: Tensor,
                     y: Tensor, indices: Tensor, loss: Loss, frame: float, alpha: float,
                     mu: float, bs: int, gen: torch.Generator, *, lam: float = 0.0,
                     power: float = 2.0) -> int:
    """One pass of heavy-ball SGD over a fresh shuffle of ``indices``; returns the step count.

    The shuffle is cut into ⌈|A|/bs⌉ batches of equal size (±1), A the samples in use: a
    last batch of a few samples would weigh each of them up to bs times more than the others,
    and the step that fits the full batches overshoots on it. Each step differentiates
    R = exp(log((|A|/N)·L̄_B) − frame), where (|A|/N)·L̄_B estimates the mean loss L̄ over all N
    samples (the others carry less than e^{−gap} of it), so that v ← μ v − α ∇R is the
    loss-based step −(α/L̄) ∇L̄ (DESIGN.md §3) whatever the size of A, and never leaves float
    range. Weight decay adds λ r ‖θ‖^{r−2} θ e^{−frame} to ∇R.
    """
    n = indices.numel()
    order = indices[torch.randperm(n, generator=gen)].to(X.device)
    share = math.log(n / X.shape[0])
    steps = 0
    for idx in torch.tensor_split(order, math.ceil(n / bs)):
        log_l = batch_log_loss(model(X[idx]), y[idx], loss)
        rescaled = torch.exp(torch.logsumexp(log_l, 0) - math.log(idx.numel()) + share - frame)
        for p in params:
            p.grad = None
        rescaled.backward()
        grads = [_grad(p) for p in params]
        coef = _wd_coefficient(lam, power, frame, params)
        if coef:
            with torch.no_grad():
                for g, p in zip(grads, params):
                    g.add_(p, alpha=coef)
        _heavy_ball(params, velocity, grads, alpha, mu)
        steps += 1
    return steps


def _heavy_ball(params: list[Tensor], velocity: list[Tensor], grads: list[Tensor],
                alpha: float, mu: float) -> None:
    """v ← μ v − α g; θ ← θ + v (in place, one fused call per operation over all tensors)."""
    with torch.no_grad():
        torch._foreach_mul_(velocity, mu)
        torch._foreach_add_(velocity, grads, alpha=-alpha)
        torch._foreach_add_(params, velocity)


def _grad(p: Tensor) -> Tensor:
    return p.grad if p.grad is not None else torch.zeros_like(p)
