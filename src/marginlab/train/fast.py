"""A faster loss-based schedule: heavy-ball momentum, asymmetric step adaptation, a smoothed-margin
guard, and a training loop that evaluates each trial once.

The loss-based rate of Lyu & Li (Appendix L.1) sets η(t) = α(t)/L̄(t−1) and, after each epoch,
keeps it (α ← α·2^{1/5}) if the training loss decreased, or restores the parameters and redoes it
(α ← α/2^{1/10}). Measured here (``benchmarks/bench_schedules.py``), most of its compute goes to
epochs it throws away: with those ratios α settles where two attempts in three fail, and the
end-of-epoch loss of SGD is noisy enough that α drifts orders of magnitude below what the loss
allows. :class:`LossBasedMomentum` keeps the paper's decision — run an epoch, measure the full
training loss, keep the epoch only if the loss decreased — and changes three things:

* heavy-ball momentum μ = 0.9 on the loss-relative step: θ ← θ + v, v ← μ v − (α/L̄) ∇L̄_B, the
  momentum buffer zeroed whenever an epoch is rolled back (a restart);
* asymmetric ratios, up 2^{1/10} on success and down 2 on failure: at equilibrium one attempt in
  eleven fails instead of two in three;
* the epoch is also rejected if, once L < ℓ(0), it decreased the smoothed margin γ̃ or γ̃_multi
  (Lyu & Li, Def. A.3 and Appendix K.1): the monotonicity that the theory proves for gradient flow
  (Theorem 4.1) and small-step gradient descent (Theorem E.2) becomes part of the acceptance test,
  so the recorded γ̃ never decreases.

:func:`fit_fast` runs it: the same arguments, run directory and result as
:func:`marginlab.train.fit` (which hands these schedules over to it), with a cheaper evaluation
(chunked forward passes, margin statistics from the same pass) and, for full-batch descent,
the evaluation's forward pass reused as the next step's.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from marginlab.core import margins, targets
from marginlab.core.losses import Loss, get_loss
from marginlab.errors import MarginlabError
from marginlab.io import storage
from marginlab.progress import Progress
from marginlab.train.fit import (
    DEFAULT_SNAPSHOTS,
    LN10,
    FitResult,
    WeightDecay,
    _batch_log_loss,
    evaluate_test,
    finish_run,
    prepare_data,
    record_epoch,
    record_retry,
    run_config,
)
from marginlab.train.rundir import RunDir
from marginlab.train.schedules import SCHEDULES, LossBasedLR

__all__ = ["LossBasedMomentum", "fit_fast"]

# For full-batch descent on up to this many samples the evaluation keeps its graph, so that the
# next step's gradient needs no second forward pass; above it, memory would grow with N.
GRAPH_SAMPLES = 5000


@dataclass
class LossBasedMomentum(LossBasedLR):
    """The loss-based rate α/L̄ with heavy-ball momentum and asymmetric, guarded line search.

    Each epoch runs SGD (or, with ``batch_size=None``, one gradient-descent step) with the
    displacement v ← μ v − (α/L̄) ∇L̄_B, θ ← θ + v, where L̄ is the mean training loss at the last
    kept epoch; the full training loss is then evaluated. The epoch is kept if log L decreased
    and, once L < ℓ(0), neither smoothed margin decreased; then α ← α·up. Otherwise the
    parameters are restored, the momentum buffer zeroed, α ← α/down, and the epoch redone.

    How the defaults were chosen: prototype runs of the same update rule, one thread, 60 CPU-s,
    seed 0 (* seed 1), on the paper's CNN at width 1/4 with 1000 MNIST-subset images — CPU
    seconds to reach log10 L̄ = −10, and γ̃_multi after 60 s:

    ======================================  ============  ================  ========================
    variant                                 to −10        γ̃ at 60 s        note
    ======================================  ============  ================  ========================
    paper: μ 0, up 2^{1/5}, down 2^{1/10}   56 s          2.8e-3            75% of attempts rejected
    μ 0, up 2^{1/10}, down 2                not reached   0.9e-3            α collapses to 1e-4
    μ 0.9, up 2^{1/10}, down 2 (default)    12 s, 12 s*   5.8e-3, 6.4e-3*   12% rejected
    μ 0.95                                  24 s
    μ 0.8                                   11 s, 22 s    4.4e-3
    μ 0.5                                   not reached   0.9e-3
    μ 0.9, up 2^{1/5}                       14 s                            20% rejected
    μ 0.9 without the margin guard          12 s                            the guard costs nothing
    momentum on the part ⊥ θ only           21 s          5.8e-3            same margin, slower loss
    batch 50                                10 s, 10 s*   5.5e-3, 3.4e-3*   lower margin
    full-batch GD, momentum, per-step LS    not reached                     −5.7 at 60 s
    ======================================  ============  ================  ========================

    Steps only on the samples that carry the loss (``active_gap``), measured on the full-width
    CNN with 1000 images, seed 2, one thread: after 300 CPU-s log10 L̄ = −80.3 and
    γ̃_multi = 2.58e-3, against −51.8 and 1.94e-3 with every sample. Cutting that subset into
    equal batches matters: with batches of 100 and a last batch of the remainder (one sample,
    often), the step that fits the full batches overshoots on the last one, α falls to 1e-8 and
    the loss stalls for hundreds of seconds (at −35.2 from 170 s to 350 s, with or without the
    margin guard).

    Full-batch gradient descent on log L (heavy ball, a line search at every step on a
    β = first-order decrease of log L, the evaluation's forward pass reused for the next step)
    matched this schedule on the 200-image MLP but lost on the CNN even to the paper's schedule
    (log10 L̄ = −4.3 after 200 CPU-s at full width, where the paper's is at −7.8): ten SGD steps
    per pass beat one full gradient step there; hence mini-batches (``batch_size=None`` still
    gives full-batch descent). Momentum speeds the loss up more than the margin: at equal loss
    γ̃ is lower than with the paper's schedule (about 0.7x on the CNN at log10 L̄ = −10), but at
    equal CPU time it is higher (``benchmarks/bench_schedules.py``).

    Args:
        alpha0: initial α, the step relative to the loss (dimensionless; paper: 0.1).
        momentum: heavy-ball coefficient μ in [0, 1).
        up: factor on α after a kept epoch (> 1).
        down: divisor on α after a rolled-back epoch (> 1).
        monotone_margin: also roll back epochs that decrease a smoothed margin once L < ℓ(0).
        min_alpha: floor; falling below it means the loss no longer decreases, and training
            stops with :class:`StepSizeUnderflowError`. α shrinks naturally as ‖θ‖ grows
            (about as ‖θ‖^{−2(L−1)}), so the floor is far below the paper's.
        max_alpha: cap on α.
        active_gap: the SGD steps of an epoch use only the samples with ℓ_n ≥ e^{−gap}·L, in
            nats (default 30): together the others carry less than N·e^{−30} ≈ 1e-10 of the
            gradient's weight at N = 1000, and skipping them makes late epochs cheaper as the
            margins spread. ``None`` uses every sample. The full-loss evaluation that decides
            acceptance always uses every sample.
    """

    alpha0: float = 0.1
    up: float = 2 ** (1 / 10)
    down: float = 2.0
    min_alpha: float = 1e-20
    max_alpha: float = 1e2
    momentum: float = 0.9
    monotone_margin: bool = True
    active_gap: float | None = 30.0
    name = "loss_based_momentum"
    training_loop = None  # set below to fit_fast: fit() hands the run over to it

    def __post_init__(self):
        super().__post_init__()
        checks = [
            (math.isfinite(self.momentum) and 0 <= self.momentum < 1,
             f"momentum must be in [0, 1), got {self.momentum}"),
            (self.active_gap is None or (math.isfinite(self.active_gap) and self.active_gap > 0),
             f"active_gap must be a positive number or None, got {self.active_gap}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise MarginlabError(f"invalid loss-based momentum schedule: {msg}")
        self.monotone_margin = bool(self.monotone_margin)

    def active_samples(self, log_losses: Tensor, log_L: float) -> Tensor:
        """Indices of the samples the next epoch's steps use: those with ℓ_n ≥ e^{−gap}·L.

        Args:
            log_losses: log ℓ_n at the current parameters, shape (N,).
            log_L: log Σ_n ℓ_n.
        """
        if self.active_gap is None:
            return torch.arange(log_losses.numel())
        return torch.nonzero(log_losses >= log_L - self.active_gap)[:, 0]

    def decide(self, log_loss_before: float, log_loss_after: float, *,
               margins_before: Sequence[float] = (), margins_after: Sequence[float] = ()) -> bool:
        """Keep (True) or roll back (False) the epoch just run; update α.

        Args:
            log_loss_before: log of the training loss before the epoch.
            log_loss_after: log of the training loss after it (NaN/inf if it diverged).
            margins_before: smoothed margins before the epoch that must not decrease (pass none
                while L ≥ ℓ(0), where the theory does not make them monotone).
            margins_after: the same margins after the epoch.
        """
        keep = math.isfinite(log_loss_after) and log_loss_after < log_loss_before
        if keep and self.monotone_margin:
            keep = all(a >= b for b, a in zip(margins_before, margins_after, strict=True))
        return self._update(keep, log_loss_before)

    def config(self) -> dict:
        return {"name": self.name, "alpha0": self.alpha0, "momentum": self.momentum,
                "up": self.up, "down": self.down, "monotone_margin": self.monotone_margin,
                "active_gap": self.active_gap, "min_alpha": self.min_alpha,
                "max_alpha": self.max_alpha}


# --- the objective ------------------------------------------------------------------------
class _Objective:
    """log L = log Σ_n ℓ(q_n) over the training set, its margins, and smoothed margins."""

    def __init__(self, model: nn.Module, X: Tensor, y: Tensor, loss: Loss, chunk: int,
                 convention: margins.Convention, keep_graph: bool):
        self.model, self.X, self.y, self.loss = model, X, y, loss
        self.chunk, self.keep_graph = chunk, keep_graph
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.norms = margins.Norms(model, X[:8], convention)
        self._graph: Tensor | None = None

    def evaluate(self) -> tuple[float, Tensor, Tensor]:
        """log L at the current parameters, the margins q_n and the log-losses log ℓ_n
        (float64, shape (N,) each).

        With ``keep_graph``, :meth:`gradient` then reuses this forward pass.
        """
        log_losses, qs = [], []
        with torch.set_grad_enabled(self.keep_graph):
            for start in range(0, self.X.shape[0], self.chunk):
                out = self.model(self.X[start:start + self.chunk])
                yb = self.y[start:start + self.chunk]
                log_losses.append(_batch_log_loss(out, yb, self.loss))
                qs.append(targets.margins(out.detach(), yb))
            per_sample = torch.cat(log_losses)
            log_L = torch.logsumexp(per_sample, 0)
        self._graph = log_L if self.keep_graph else None
        return float(log_L.detach()), torch.cat(qs), per_sample.detach()

    def gradient(self) -> None:
        """Put ∇ log L at the parameters of the last :meth:`evaluate` into ``p.grad``."""
        for p in self.params:
            p.grad = None
        if self._graph is None:
            log_losses = []
            for start in range(0, self.X.shape[0], self.chunk):
                out = self.model(self.X[start:start + self.chunk])
                log_losses.append(_batch_log_loss(out, self.y[start:start + self.chunk],
                                                  self.loss))
            self._graph = torch.logsumexp(torch.cat(log_losses), 0)
        self._graph.backward()
        self._graph = None

    def forget(self) -> None:
        """Drop the kept graph: the parameters changed since the last evaluation."""
        self._graph = None

    def smoothed_margins(self, log_L: float) -> tuple[float, float]:
        """(γ̃, γ̃_multi) = ℓ^{-1}(L) / (ρ^L, Π‖w_i‖^{k_i}) at the current parameters."""
        inv = self.loss.inverse(log_L)
        log_rho_l, log_prod = self.norms.logs()
        return margins.scaled(inv, log_rho_l), margins.scaled(inv, log_prod)

    def stats(self, log_L: float, q: Tensor) -> dict:
        """The :class:`~marginlab.margins.MarginStats` fields from one evaluation's outputs: the
        same quantities as :func:`marginlab.margins.measure`, without another forward pass."""
        return margins.stats_from(q, log_L, self.norms, self.loss).as_dict()


# --- the training loop --------------------------------------------------------------------
def fit_fast(
    model: nn.Module,
    train: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor] | None = None,
    *,
    schedule: LossBasedMomentum,
    epochs: int,
    batch_size: int | None = 100,
    loss: str | Loss = "cross_entropy",
    weight_decay: WeightDecay | float | None = None,
    run_dir: str | Path | None = None,
    snapshots_at: Sequence[float] = DEFAULT_SNAPSHOTS,
    seed: int = 0,
    device: str = "cpu",
    resume: bool = False,
    overwrite: bool = False,
    max_time: float | None = None,
    stop_at_log10_loss: float | None = None,
    margin_convention: margins.Convention = "homogeneous",
    checkpoint_every: int = 1,
    trajectory_every: int | None = None,
    eval_batch_size: int = 1000,
    max_retries: int = 200,
    data_info: Mapping | None = None,
    extra_config: Mapping | None = None,
    progress: bool | None = None,
    max_cpu_time: float | None = None,
) -> FitResult:
    """Train ``model`` with :class:`LossBasedMomentum`: the arguments, run directory and result of
    :func:`marginlab.train.fit`, which hands such schedules over to this loop.

    Differences from :func:`~marginlab.train.fit`: the momentum buffer is saved with the resume
    checkpoint (``checkpoints/momentum.safetensors``); the evaluation runs in chunks of
    ``min(eval_batch_size, batch_size)`` samples and takes the margin statistics from the same
    forward pass; weight decay is not supported; a CPU-time budget can be given.

    Args:
        model: the network (trained in place; margins in float64).
        train: (X, y) training tensors. test: optional (X, y) test tensors.
        schedule: a :class:`LossBasedMomentum`.
        epochs: accepted epochs to run (in total, counting a resumed run's).
        batch_size: mini-batch size (paper: 100); ``None`` for full-batch gradient descent, one
            step per epoch.
        loss: ``cross_entropy``, ``logistic``, ``exponential`` or an ExpTailLoss.
        weight_decay: must be None or 0.
        run_dir, snapshots_at, seed, device, resume, overwrite, max_time, stop_at_log10_loss,
            margin_convention, checkpoint_every, trajectory_every, max_retries, data_info,
            extra_config, progress: as for :func:`~marginlab.train.fit`.
        eval_batch_size: largest chunk of the evaluation's forward passes.
        max_cpu_time: CPU-time budget of this process in seconds (``time.process_time``),
            checked between epochs like ``max_time``.

    Returns:
        A :class:`~marginlab.train.FitResult`.

    Raises:
        StepSizeUnderflowError: α fell below its floor (the loss stopped decreasing).
        MarginlabError: invalid data, settings, or run directory.
    """
    if not isinstance(schedule, LossBasedMomentum):
        raise MarginlabError("fit_fast runs LossBasedMomentum schedules; use train.fit")
    if weight_decay:
        raise MarginlabError("the loss-based momentum schedule does not support weight decay")
    if epochs < 0 or (batch_size is not None and batch_size <= 0) or eval_batch_size <= 0:
        raise MarginlabError("epochs must be >= 0 and batch sizes positive")
    if checkpoint_every < 1:
        raise MarginlabError("checkpoint_every must be >= 1")
    loss_fn = get_loss(loss)
    thresholds = sorted((float(t) for t in snapshots_at), reverse=True)
    X_dev, _, y_dev = prepare_data(model, train, test, device)
    n = X_dev.shape[0]
    full_batch = batch_size is None or batch_size >= n
    config = run_config(
        model, test, n=n, data_info=data_info, extra_config=extra_config,
        schedule=schedule.config(), loss=loss if isinstance(loss, str) else loss_fn.name,
        batch_size=batch_size, seed=seed, weight_decay=None, snapshots_at=thresholds,
        margin_convention=margin_convention, epochs=epochs, max_time=max_time,
        max_cpu_time=max_cpu_time, stop_at_log10_loss=stop_at_log10_loss, device=device)
    run = RunDir(run_dir) if run_dir is not None else None
    gen = torch.Generator().manual_seed(seed)
    history: list[dict] = []
    state = {"epoch": 0, "wall_time": 0.0, "cpu_time": 0.0, "snapshots_done": 0,
             "schedule": schedule.state_dict()}
    velocity: list[Tensor] | None = None
    if run is not None and run.prepare(config, resume=resume, overwrite=overwrite):
        state = run.load_checkpoint(model, gen)
        schedule.load_state_dict(state["schedule"])
        history = run.truncate_metrics(state["epoch"])
        velocity = _load_velocity(run, model, state["epoch"])
        storage.append_jsonl(run.events_path, {"event": "resume", "epoch": state["epoch"]})

    t_start = time.perf_counter() - state["wall_time"]
    c_start = time.process_time() - state["cpu_time"]
    chunk = min(eval_batch_size, n if full_batch else batch_size)
    objective = _Objective(model, X_dev, y_dev, loss_fn, chunk, margin_convention,
                           keep_graph=full_batch and n <= GRAPH_SAMPLES)
    params = objective.params
    if velocity is None:
        velocity = [torch.zeros_like(p) for p in params]
    log_zero = loss_fn.log_loss_at_zero

    log_L, _, log_losses = objective.evaluate()
    if not math.isfinite(log_L):
        raise MarginlabError("the initial training loss is not finite")
    smoothed = objective.smoothed_margins(log_L)
    grad_cache: list[Tensor] | None = None  # full batch: ∇ log L at the current parameters
    stop_reason = "epochs"
    bar = Progress(f"train {config['model'].get('name', 'model')}", total=epochs,
                   initial=state["epoch"], unit="epoch", max_time=max_time,
                   elapsed=state["wall_time"], quiet=None if progress is None else not progress)
    epoch = state["epoch"]
    try:
        while epoch < epochs:
            if max_time is not None and time.perf_counter() - t_start >= max_time:
                stop_reason = "time"
                break
            if max_cpu_time is not None and time.process_time() - c_start >= max_cpu_time:
                stop_reason = "cpu_time"
                break
            epoch += 1
            retries = diverged = 0
            while True:
                schedule.start_epoch(epoch)
                frame = log_L - math.log(n)  # log L̄ of the last kept epoch
                alpha = schedule.relative_step(frame)
                saved = [p.detach().clone() for p in params]
                if full_batch:
                    if grad_cache is None:
                        objective.gradient()
                        grad_cache = [_grad(p) for p in params]
                    _heavy_ball(params, velocity, grad_cache, alpha, schedule.momentum)
                    steps, used = 1, n
                else:
                    indices = schedule.active_samples(log_losses, log_L)
                    steps = _sgd_epoch(model, params, velocity, X_dev, y_dev, indices, loss_fn,
                                       frame, alpha, schedule.momentum, batch_size, gen)
                    used = indices.numel()
                new_log_L, new_q, new_log_losses = objective.evaluate()
                guarded = log_L < log_zero  # γ̃ is monotone only once L < ℓ(0)
                new_smoothed = (objective.smoothed_margins(new_log_L)
                                if math.isfinite(new_log_L) else (math.nan, math.nan))
                keep = False
                try:  # a schedule may give up (raise); the failed epoch is rolled back first
                    keep = schedule.decide(log_L, new_log_L,
                                           margins_before=smoothed if guarded else (),
                                           margins_after=new_smoothed if guarded else ())
                finally:
                    if not keep:
                        _copy_into(params, saved)
                        for v in velocity:  # a restart: the momentum buffer is dropped
                            v.zero_()
                        objective.forget()
                if keep:
                    break
                retries += 1
                diverged += not math.isfinite(new_log_L)
                record_retry(run, epoch, frame, new_log_L - math.log(n), schedule.alpha,
                             diverged, max_retries)
            log_L, log_losses, smoothed = new_log_L, new_log_losses, new_smoothed
            grad_cache = None
            log_lr = math.log(alpha) - frame
            stats = objective.stats(log_L, new_q)
            record = {"epoch": epoch, **stats,
                      **evaluate_test(model, test, loss_fn, eval_batch_size), "alpha": alpha,
                      "lr": math.exp(log_lr) if log_lr < 709 else math.inf,
                      "log10_lr": log_lr / LN10, "steps": steps, "retries": retries,
                      "samples_used": used, "wall_time": time.perf_counter() - t_start,
                      "cpu_time": time.process_time() - c_start}
            history.append(record)
            state_before = state["snapshots_done"]
            snapshots_done = record_epoch(run, model, record, thresholds, state_before,
                                          trajectory_every)
            state = {"epoch": epoch, "wall_time": record["wall_time"],
                     "cpu_time": record["cpu_time"], "snapshots_done": snapshots_done,
                     "schedule": schedule.state_dict()}
            if run is not None and (epoch % checkpoint_every == 0 or epoch == epochs):
                _save_checkpoint(run, model, gen, state, velocity)
            bar.update(1, log10_loss=stats["log10_loss_mean"],
                       margin=stats["normalized_margin_multi"], alpha=schedule.alpha,
                       retries=retries)
            if snapshots_done > state_before:
                bar.note(f"snapshot model-{snapshots_done} at epoch {epoch}")
            if stop_at_log10_loss is not None and stats["log10_loss_mean"] <= stop_at_log10_loss:
                stop_reason = "target"
                break
    finally:
        bar.close()
    if run is not None:
        _save_checkpoint(run, model, gen, state, velocity)
        finish_run(run, model, history, thresholds, stop_reason, epoch)
    return FitResult(model=model, history=history, run_dir=None if run is None else run.path,
                     stop_reason=stop_reason)


LossBasedMomentum.training_loop = staticmethod(fit_fast)
SCHEDULES[LossBasedMomentum.name] = LossBasedMomentum


def _sgd_epoch(model: nn.Module, params: list[Tensor], velocity: list[Tensor], X: Tensor,
               y: Tensor, indices: Tensor, loss: Loss, frame: float, alpha: float, mu: float,
               bs: int, gen: torch.Generator) -> int:
    """One pass of heavy-ball SGD over a fresh shuffle of ``indices``; returns the step count.

    The shuffle is cut into ⌈|A|/bs⌉ batches of equal size (±1), A the samples in use: a
    last batch of a few samples would weigh each of them up to bs times more than the others,
    and the step that fits the full batches overshoots on it. Each step differentiates
    R = exp(log((|A|/N)·L̄_B) − frame), where (|A|/N)·L̄_B estimates the mean loss L̄ over all N
    samples (the others carry less than e^{−gap} of it), so that v ← μ v − α ∇R is the
    loss-based step −(α/L̄) ∇L̄ (DESIGN.md §3) whatever the size of A, and never leaves float
    range.
    """
    n = indices.numel()
    order = indices[torch.randperm(n, generator=gen)].to(X.device)
    share = math.log(n / X.shape[0])
    steps = 0
    for idx in torch.tensor_split(order, math.ceil(n / bs)):
        log_l = _batch_log_loss(model(X[idx]), y[idx], loss)
        rescaled = torch.exp(torch.logsumexp(log_l, 0) - math.log(idx.numel()) + share - frame)
        for p in params:
            p.grad = None
        rescaled.backward()
        _heavy_ball(params, velocity, [_grad(p) for p in params], alpha, mu)
        steps += 1
    return steps


def _heavy_ball(params: list[Tensor], velocity: list[Tensor], grads: list[Tensor],
                alpha: float, mu: float) -> None:
    """v ← μ v − α g; θ ← θ + v (in place)."""
    with torch.no_grad():
        for p, v, g in zip(params, velocity, grads):
            v.mul_(mu).add_(g, alpha=-alpha)
            p.add_(v)


def _grad(p: Tensor) -> Tensor:
    return p.grad if p.grad is not None else torch.zeros_like(p)


def _copy_into(params: list[Tensor], values: list[Tensor]) -> None:
    with torch.no_grad():
        for p, v in zip(params, values):
            p.copy_(v)


def _velocity_path(run: RunDir) -> Path:
    return run.checkpoint_path.with_name("momentum.safetensors")


def _save_checkpoint(run: RunDir, model: nn.Module, gen: torch.Generator, state: dict,
                     velocity: list[Tensor]) -> None:
    """The trainer's checkpoint, then the momentum buffer tagged with the checkpoint's epoch."""
    run.save_checkpoint(model, gen, state)
    path = _velocity_path(run)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    save_file({f"v{i}": v.detach().cpu().contiguous() for i, v in enumerate(velocity)}, str(tmp),
              metadata={"epoch": str(state["epoch"])})
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _load_velocity(run: RunDir, model: nn.Module, epoch: int) -> list[Tensor] | None:
    """The momentum buffer saved with the checkpoint of ``epoch``; None (a restart) if the file
    is missing, unreadable, or from another epoch (a crash between the two writes)."""
    path = _velocity_path(run)
    if not path.exists():
        return None
    try:
        with safe_open(str(path), framework="pt") as fh:
            if fh.metadata().get("epoch") != str(epoch):
                return None
            params = [p for p in model.parameters() if p.requires_grad]
            return [fh.get_tensor(f"v{i}").to(p.device, p.dtype) for i, p in enumerate(params)]
    except (SafetensorError, OSError, KeyError, ValueError):
        return None
