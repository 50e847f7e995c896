"""Faster margin maximization: full-batch gradient descent on log L with heavy-ball momentum and
a line search at every step.

The loss-based rate of Lyu & Li (Appendix L.1) takes η(t) = α(t)/L̄(t−1): for full-batch gradient
descent this is exactly a step of size α on log L, since ∇ log L = ∇L̄ / L̄. Its line search acts
once per epoch (α ← α·2^{1/5} if the loss decreased, else restore and α ← α/2^{1/10}); with those
ratios the rule settles where two attempts in three are rejected, and with mini-batches the
end-of-epoch loss is noisy, so α drifts far below what the loss would allow.

:class:`LineSearchGD` keeps what the theory is about — gradient steps on the training loss, a loss
that decreases at every point where it is measured, a smoothed margin that never decreases once
L < ℓ(0) — and changes the rest:

* the step is asked to decrease log L by β to first order: the step on θ is −(β/‖∇ log L‖²)
  ∇ log L. β (nats of log L) is dimensionless and invariant to the scale of θ, of the loss and of
  the data; along the run it stays within a factor of a few of its start, while the equivalent
  α = β/‖∇ log L‖² of the loss-based rate falls by orders of magnitude as ‖θ‖ grows;
* heavy-ball momentum μ (Polyak): the step adds μ times the last accepted displacement. When a
  step fails, it is first retried without momentum (an adaptive restart), then with β halved;
* every step is a line-search trial on the full training set: the forward pass that evaluates the
  trial point is kept and, when the step is accepted, its backward pass gives the next gradient,
  so an accepted step costs one forward and one backward pass and a rejected one a forward pass;
* a trial is accepted only if log L decreased (by ``armijo`` × the first-order prediction) and,
  once L < ℓ(0), neither smoothed margin (Lyu & Li, Def. A.3; multi-homogeneous version,
  Appendix K.1) decreased: the monotonicity that Lyu & Li prove for gradient flow and for gradient
  descent with small steps (their Theorem E.2) is enforced at every step as part of the line
  search, so the margin curve is monotone by construction.

Measured on this machine (one thread, ``benchmarks/bench_schedules.py``) against the loss-based
schedule with SGD (batch 100): see the docstring of :class:`LineSearchGD` for the numbers that
chose the defaults.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn
from tqdm.auto import tqdm

from marginlab import homogeneity, margins, storage
from marginlab.errors import MarginlabError, NotHomogeneousError
from marginlab.losses import Loss, get_loss
from marginlab.train.fit import (
    DEFAULT_SNAPSHOTS,
    LN10,
    FitResult,
    WeightDecay,
    _batch_log_loss,
    _labels_for,
    _snapshot_meta,
)
from marginlab.train.rundir import RunDir, environment
from marginlab.train.schedules import SCHEDULES, Schedule, StepSizeUnderflowError

__all__ = ["LineSearchGD", "fit_steps"]

# Up to this many samples the trial forward pass keeps its graph, so that an accepted trial's
# backward pass needs no second forward pass; above it the gradient is recomputed chunk by chunk
# (one more forward pass per accepted step, memory bounded by one chunk).
GRAPH_SAMPLES = 5000


@dataclass
class LineSearchGD(Schedule):
    """Full-batch gradient descent on log L with heavy-ball momentum and a per-step line search.

    The step on θ is −η ∇ log L + μ v with η = β / ‖∇ log L‖² (β: the decrease of log L the
    gradient part promises to first order, in nats) and v the last accepted displacement. A
    trial is accepted when log L decreased by at least ``armijo``·β and, once L < ℓ(0), neither
    smoothed margin decreased; then β ← β·up. A rejected trial is restored and retried without
    momentum; if that fails too, β ← β/down. For the recorded ``alpha``, η is the loss-based
    schedule's α (Lyu & Li, Eq. (27), with the full training set as the batch), and the true
    learning rate on the mean loss is η / L̄.

    It runs its own loop (:func:`fit_steps`): an "epoch" in the metrics is ``steps_per_epoch``
    accepted steps, each a full pass over the training set.

    Args:
        beta0: initial β (nats of log L per step; dimensionless).
        momentum: heavy-ball coefficient μ in [0, 1); 0 is plain gradient descent.
        up: factor on β after an accepted step (> 1).
        down: divisor on β after a step rejected without momentum (> 1).
        armijo: sufficient-decrease fraction c in [0, 1): accept only if
            log L_new ≤ log L − c·β.
        monotone_margin: once L < ℓ(0), also reject steps that decrease a smoothed margin.
        min_beta: floor; falling below it means the loss no longer decreases, and training
            stops with :class:`StepSizeUnderflowError`.
        max_beta: cap on β.
        steps_per_epoch: accepted steps per recorded epoch (changes what is recorded, not the
            trajectory).
    """

    beta0: float = 0.1
    momentum: float = 0.95
    up: float = 2 ** (1 / 5)
    down: float = 2.0
    armijo: float = 0.0
    monotone_margin: bool = True
    min_beta: float = 1e-12
    max_beta: float = 1e3
    steps_per_epoch: int = 10
    _beta: float = field(init=False, repr=False)
    _use_momentum: bool = field(default=True, init=False, repr=False)
    _eta: float = field(default=math.nan, init=False, repr=False)
    _mu: float = field(default=0.0, init=False, repr=False)
    name = "line_search"
    training_loop = None  # set below to fit_steps: fit() hands the run over to it

    def __post_init__(self):
        values = (self.beta0, self.momentum, self.up, self.down, self.armijo, self.min_beta,
                  self.max_beta)
        checks = [
            (all(math.isfinite(v) for v in values), "parameters must be finite numbers"),
            (self.beta0 > 0, f"beta0 must be > 0, got {self.beta0}"),
            (0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}"),
            (self.up > 1, f"up must be > 1, got {self.up}"),
            (self.down > 1, f"down must be > 1, got {self.down}"),
            (0 <= self.armijo < 1, f"armijo must be in [0, 1), got {self.armijo}"),
            (0 < self.min_beta <= self.beta0 <= self.max_beta,
             "need 0 < min_beta <= beta0 <= max_beta"),
            (isinstance(self.steps_per_epoch, int) and self.steps_per_epoch >= 1,
             f"steps_per_epoch must be a positive integer, got {self.steps_per_epoch}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise MarginlabError(f"invalid line-search schedule: {msg}")
        self.monotone_margin = bool(self.monotone_margin)
        self._beta = float(self.beta0)

    # --- the step ------------------------------------------------------------------------
    @property
    def beta(self) -> float:
        """The first-order decrease of log L asked of the next step (nats)."""
        return self._beta

    def trial(self, grad_sq_norm: float, *, has_velocity: bool) -> tuple[float, float]:
        """(η, μ) of the next trial step θ − η ∇ log L + μ v.

        Args:
            grad_sq_norm: ‖∇ log L‖² at the current point.
            has_velocity: whether there is a last accepted displacement v.
        """
        self._eta = self._beta / grad_sq_norm
        self._mu = self.momentum if (self._use_momentum and has_velocity) else 0.0
        return self._eta, self._mu

    @property
    def alpha(self) -> float:
        """η of the last trial: the loss-based schedule's α for a full-batch step."""
        return self._eta

    def relative_step(self, frame: float) -> float:
        return self._eta

    def log_lr(self, frame: float) -> float:
        """log of the true rate on the mean loss, η / L̄, with ``frame`` = log L̄."""
        return math.log(self._eta) - frame

    # --- the decision --------------------------------------------------------------------
    def decide(self, log_loss_before: float, log_loss_after: float, *,
               margins_before: Sequence[float] = (), margins_after: Sequence[float] = ()) -> bool:
        """Accept (True) or reject (False) the trial step; update β and the momentum switch.

        Args:
            log_loss_before: log L at the current point.
            log_loss_after: log L at the trial point (NaN/inf if it diverged).
            margins_before: smoothed margins at the current point that must not decrease (pass
                none while L ≥ ℓ(0), where they need not be monotone).
            margins_after: the same margins at the trial point.
        """
        ok = (math.isfinite(log_loss_after)
              and log_loss_after < log_loss_before
              and log_loss_after <= log_loss_before - self.armijo * self._beta)
        if ok and self.monotone_margin:
            ok = all(after >= before for before, after in zip(margins_before, margins_after))
        if ok:
            self._beta = min(self._beta * self.up, self.max_beta)
            self._use_momentum = True
            return True
        if self._mu > 0:
            self._use_momentum = False  # retry the same β as a plain gradient step
            self._mu = 0.0
            return False
        self._beta /= self.down
        if self._beta < self.min_beta:
            raise StepSizeUnderflowError(
                f"beta fell below {self.min_beta:g} without the training loss decreasing (stuck "
                f"at log10 loss sum {log_loss_before / LN10:.4g}); is the data separable by "
                "this model?")
        return False

    def state_dict(self) -> dict:
        return {"beta": self._beta, "use_momentum": self._use_momentum, "eta": self._eta,
                "mu": self._mu}

    def load_state_dict(self, state: dict) -> None:
        self._beta = float(state["beta"])
        self._use_momentum = bool(state["use_momentum"])
        self._eta = float(state["eta"])
        self._mu = float(state["mu"])

    def config(self) -> dict:
        return {"name": self.name, "beta0": self.beta0, "momentum": self.momentum,
                "up": self.up, "down": self.down, "armijo": self.armijo,
                "monotone_margin": self.monotone_margin, "min_beta": self.min_beta,
                "max_beta": self.max_beta, "steps_per_epoch": self.steps_per_epoch}


# --- the objective ------------------------------------------------------------------------
class _Objective:
    """log L = log Σ_n ℓ(q_n) over the training set, with its gradient and margin statistics."""

    def __init__(self, model: nn.Module, X: Tensor, y: Tensor, loss: Loss, chunk: int,
                 convention: margins.Convention):
        self.model, self.X, self.y, self.loss = model, X, y, loss
        self.chunk, self.convention = chunk, convention
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.keep_graph = X.shape[0] <= GRAPH_SAMPLES
        self._graph: Tensor | None = None
        self.norms = _Norms(model, X[:8], convention)

    def evaluate(self) -> tuple[float, Tensor]:
        """log L at the current parameters and the margins q_n (float64, shape (N,)).

        When the graph is kept, the next :meth:`gradient` reuses this forward pass.
        """
        log_losses, qs = [], []
        with torch.set_grad_enabled(self.keep_graph):
            for start in range(0, self.X.shape[0], self.chunk):
                out = self.model(self.X[start:start + self.chunk])
                yb = self.y[start:start + self.chunk]
                log_losses.append(_batch_log_loss(out, yb, self.loss))
                qs.append(_margins(out.detach(), yb))
            log_L = torch.logsumexp(torch.cat(log_losses), 0)
        self._graph = log_L if self.keep_graph else None
        return float(log_L.detach()), torch.cat(qs)

    def gradient(self, log_L: float) -> list[Tensor]:
        """∇ log L at the parameters of the last :meth:`evaluate` (which gave ``log_L``)."""
        for p in self.params:
            p.grad = None
        if self._graph is not None:
            self._graph.backward()
            self._graph = None
        else:  # chunk by chunk: ∇ log L = Σ_n e^{log ℓ_n − log L} ∇ log ℓ_n
            for start in range(0, self.X.shape[0], self.chunk):
                out = self.model(self.X[start:start + self.chunk])
                log_l = _batch_log_loss(out, self.y[start:start + self.chunk], self.loss)
                torch.exp(torch.logsumexp(log_l, 0) - log_L).backward()
        return [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
                for p in self.params]

    def smoothed_margins(self, log_L: float) -> tuple[float, float]:
        """(γ̃, γ̃_multi) = ℓ^{-1}(L) / (ρ^L, Π‖w_i‖^{k_i}) at the current parameters."""
        inv = self.loss.inverse(log_L)
        log_rho_l, log_prod = self.norms.logs()
        return inv * _safe_exp(-log_rho_l), inv * _safe_exp(-log_prod)

    def stats(self, log_L: float, q: Tensor) -> dict:
        """The :class:`~marginlab.margins.MarginStats` fields, from one evaluation's outputs.

        The same quantities as :func:`marginlab.margins.measure`, without its forward pass.
        """
        log_rho_l, log_prod = self.norms.logs()
        inv = self.loss.inverse(log_L)
        q_min = float(q.min())
        n = q.shape[0]
        return margins.MarginStats(
            q_min=q_min, rho=self.norms.rho(), norm_product=_safe_exp(log_prod),
            order=self.norms.order, normalized_margin=q_min * _safe_exp(-log_rho_l),
            normalized_margin_multi=q_min * _safe_exp(-log_prod),
            smoothed_margin=inv * _safe_exp(-log_rho_l),
            smoothed_margin_multi=inv * _safe_exp(-log_prod), log_loss_sum=log_L,
            log10_loss_mean=(log_L - math.log(n)) / LN10,
            train_acc=float((q > 0).double().mean()), n=int(n)).as_dict()


class _Norms:
    """ρ^L and Π‖w_i‖^{k_i} in log space, under a margin convention (as margins.measure)."""

    def __init__(self, model: nn.Module, example: Tensor, convention: margins.Convention):
        self.named = dict(model.named_parameters())
        if convention == "paper_with_bias":
            self.groups = {k: tuple(v) for k, v in homogeneity.default_groups(model).items()}
            if not self.groups:
                raise MarginlabError("the model has no Linear/Conv layers to form parameter "
                                     "groups")
            self.order = float(len(self.groups))
            self.degrees = dict.fromkeys(self.groups, 1.0)
            self.rho_members = [m for ms in self.groups.values() for m in ms]
        elif convention == "homogeneous":
            report = homogeneity.cached_check(model, example)
            if not report.is_homogeneous:
                raise NotHomogeneousError(
                    "the model is not homogeneous in its parameters (residual "
                    f"{report.max_residual:.1e}); remove the biases past the first layer, or use "
                    "convention='paper_with_bias'")
            self.order, self.groups = report.order, report.groups
            self.degrees = {k: (v if v is not None else math.nan)
                            for k, v in report.layer_orders.items()}
            self.rho_members = list(self.named)
        else:
            raise MarginlabError(f"unknown convention {convention!r}")

    def _sq(self, members) -> float:
        return sum(float(self.named[m].detach().double().pow(2).sum()) for m in members)

    def rho(self) -> float:
        return math.sqrt(self._sq(self.rho_members))

    def logs(self) -> tuple[float, float]:
        """(L·log ρ, Σ_i k_i log ‖w_i‖)."""
        log_rho_l = self.order * math.log(max(self.rho(), 1e-300))
        log_prod = sum(self.degrees[g] * math.log(max(math.sqrt(self._sq(m)), 1e-300))
                       for g, m in self.groups.items())
        return log_rho_l, log_prod


def _margins(out: Tensor, y: Tensor) -> Tensor:
    """q_n (float64): y_n Φ_n for one output (y ±1), Φ_y − max_{j≠y} Φ_j otherwise."""
    out = out.reshape(out.shape[0], -1).to(torch.float64)
    if out.shape[1] == 1:
        return y * out[:, 0]
    z_y = out.gather(1, y.view(-1, 1))[:, 0]
    return z_y - out.scatter(1, y.view(-1, 1), -math.inf).max(1).values


def _safe_exp(x: float) -> float:
    return math.exp(min(x, 709.0)) if math.isfinite(x) else (math.inf if x > 0 else 0.0)


# --- the training loop --------------------------------------------------------------------
def fit_steps(
    model: nn.Module,
    train: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor] | None = None,
    *,
    schedule: LineSearchGD,
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
    """Train ``model`` with :class:`LineSearchGD`; the same arguments, run directory and result
    as :func:`marginlab.train.fit`, which hands such schedules over to this loop.

    Differences from :func:`~marginlab.train.fit`: every step is a full-batch gradient step
    (``batch_size`` only sets how many samples go through the network at once); an epoch is
    ``schedule.steps_per_epoch`` accepted steps; ``retries`` counts rejected trial steps; each
    metrics record also has ``beta``. Weight decay is not supported (the line search is on
    log L itself).

    Args:
        model: the network (trained in place; margins in float64).
        train: (X, y) training tensors. test: optional (X, y) test tensors.
        schedule: a :class:`LineSearchGD`.
        epochs: recorded epochs to run (in total, counting a resumed run's).
        batch_size: samples per forward/backward chunk; ``None``: all at once.
        loss: ``cross_entropy``, ``logistic``, ``exponential`` or an ExpTailLoss.
        weight_decay: must be None or 0.
        run_dir, snapshots_at, seed, device, resume, overwrite, max_time, stop_at_log10_loss,
            margin_convention, checkpoint_every, trajectory_every, data_info, extra_config,
            progress: as for :func:`~marginlab.train.fit` (budgets and the loss target are
            checked at every step).
        eval_batch_size: batch size of the test-set evaluation.
        max_retries: rejected trials in a row before giving up.
        max_cpu_time: CPU-time budget of this process in seconds (``time.process_time``).

    Returns:
        A :class:`~marginlab.train.FitResult`.

    Raises:
        StepSizeUnderflowError: β fell below its floor (the loss stopped decreasing).
        MarginlabError: invalid data, settings, or run directory.
    """
    if not isinstance(schedule, LineSearchGD):
        raise MarginlabError("fit_steps runs LineSearchGD schedules only; use train.fit")
    if weight_decay:
        raise MarginlabError("the line-search schedule does not support weight decay")
    X, y = train
    margins.validate_data(X, y)
    if test is not None:
        margins.validate_data(*test)
    if epochs < 0 or (batch_size is not None and batch_size <= 0):
        raise MarginlabError("epochs must be >= 0 and batch_size positive")
    if checkpoint_every < 1:
        raise MarginlabError("checkpoint_every must be >= 1")
    loss_fn = get_loss(loss)
    thresholds = sorted((float(t) for t in snapshots_at), reverse=True)
    dtype = next(model.parameters()).dtype
    model.to(device)
    X_dev, y_raw = X.to(device=device, dtype=dtype), y.to(device)
    with torch.no_grad():
        out_dim = model(X_dev[:1]).reshape(1, -1).shape[1]
    y_dev = _labels_for(out_dim, y_raw)
    n = X.shape[0]
    config = {
        "model": getattr(model, "marginlab_spec",
                         {"name": "custom", "class": type(model).__name__}),
        "data": dict(data_info or {"n_train": n,
                                   "n_test": None if test is None else len(test[1])}),
        "schedule": schedule.config(),
        "loss": getattr(loss_fn, "name", str(loss)),
        "batch_size": batch_size,
        "seed": seed,
        "dtype": str(dtype).replace("torch.", ""),
        "weight_decay": None,
        "snapshots_at": thresholds,
        "margin_convention": margin_convention,
        "epochs": epochs,
        "max_time": max_time,
        "max_cpu_time": max_cpu_time,
        "stop_at_log10_loss": stop_at_log10_loss,
        "device": device,
        "versions": environment(device),
        **dict(extra_config or {}),
    }
    run = RunDir(run_dir) if run_dir is not None else None
    gen = torch.Generator().manual_seed(seed)  # unused by full-batch steps; kept by checkpoints
    history: list[dict] = []
    state = {"epoch": 0, "steps": 0, "wall_time": 0.0, "cpu_time": 0.0, "snapshots_done": 0,
             "schedule": schedule.state_dict()}
    velocity: list[Tensor] | None = None
    if run is not None and run.prepare(config, resume=resume, overwrite=overwrite):
        state = run.load_checkpoint(model, gen)
        schedule.load_state_dict(state["schedule"])
        history = run.truncate_metrics(state["epoch"])
        velocity = _load_velocity(run, model, state["steps"])
        storage.append_jsonl(run.events_path, {"event": "resume", "epoch": state["epoch"]})


    def test_stats() -> dict:
        if test is None:
            return {}
        o = margins.model_outputs(model, test[0], test[1], loss_fn, batch_size=eval_batch_size,
                                  check_inputs=False)
        return {"test_loss": (float(torch.logsumexp(o.log_loss, 0)) - math.log(len(o.q))) / LN10,
                "test_acc": float((o.q > 0).double().mean())}

    t_start = time.perf_counter() - state["wall_time"]
    c_start = time.process_time() - state["cpu_time"]
    objective = _Objective(model, X_dev, y_dev, loss_fn, batch_size or n,
                           margin_convention)
    params = objective.params
    log_zero = loss_fn.log_loss_at_zero
    log_L, q = objective.evaluate()
    if not math.isfinite(log_L):
        raise MarginlabError("the initial training loss is not finite")
    smoothed = objective.smoothed_margins(log_L)
    stop_reason = "epochs"
    bar = tqdm(total=epochs, initial=state["epoch"], desc="train", unit="epoch",
               disable=(None if progress is None else not progress), dynamic_ncols=True)
    epoch, total_steps = state["epoch"], state["steps"]
    try:
        while epoch < epochs and stop_reason == "epochs":
            steps = retries = 0
            log_lr = math.nan
            while steps < schedule.steps_per_epoch:
                if max_time is not None and time.perf_counter() - t_start >= max_time:
                    stop_reason = "time"
                    break
                if max_cpu_time is not None and time.process_time() - c_start >= max_cpu_time:
                    stop_reason = "cpu_time"
                    break
                grad = objective.gradient(log_L)
                grad_sq = sum(float(g.double().pow(2).sum()) for g in grad)
                if not (math.isfinite(grad_sq) and grad_sq > 0):
                    raise MarginlabError(f"the gradient of log L is {grad_sq} at step "
                                         f"{total_steps + 1}; nothing left to descend")
                saved = [p.detach().clone() for p in params]
                in_a_row = 0
                while True:
                    eta, mu = schedule.trial(grad_sq, has_velocity=velocity is not None)
                    with torch.no_grad():
                        for i, (p, s, g) in enumerate(zip(params, saved, grad)):
                            p.copy_(s - eta * g)
                            if mu:
                                p.add_(velocity[i], alpha=mu)
                    new_log_L, new_q = objective.evaluate()
                    active = log_L < log_zero  # γ̃ is monotone only once L < ℓ(0)
                    new_smoothed = (objective.smoothed_margins(new_log_L)
                                    if active and math.isfinite(new_log_L) else ())
                    try:
                        accepted = schedule.decide(
                            log_L, new_log_L, margins_before=smoothed if active else (),
                            margins_after=new_smoothed)
                    except StepSizeUnderflowError:
                        _copy_into(params, saved)
                        raise
                    if accepted:
                        break
                    retries += 1
                    in_a_row += 1
                    if in_a_row >= max_retries:
                        _copy_into(params, saved)
                        raise MarginlabError(
                            f"step {total_steps + 1} was rejected {in_a_row} times in a row")
                with torch.no_grad():
                    velocity = [p.detach() - s for p, s in zip(params, saved)]
                log_lr = schedule.log_lr(log_L - math.log(n))
                log_L, q = new_log_L, new_q
                smoothed = (objective.smoothed_margins(log_L) if not new_smoothed
                            else new_smoothed)
                steps += 1
                total_steps += 1
                if (stop_at_log10_loss is not None
                        and (log_L - math.log(n)) / LN10 <= stop_at_log10_loss):
                    stop_reason = "target"
                    break
            if steps == 0:
                break
            epoch += 1
            stats = objective.stats(log_L, q)
            record = {"epoch": epoch, **stats, **test_stats(), "alpha": schedule.alpha,
                      "beta": schedule.beta,
                      "lr": math.exp(log_lr) if log_lr < 709 else math.inf,
                      "log10_lr": log_lr / LN10, "steps": steps, "retries": retries,
                      "wall_time": time.perf_counter() - t_start,
                      "cpu_time": time.process_time() - c_start}
            history.append(record)
            snapshots_done = state["snapshots_done"]
            if run is not None:
                storage.append_jsonl(run.metrics_path, record)
                if retries:
                    storage.append_jsonl(run.events_path, {
                        "event": "retry", "epoch": epoch, "rejected_steps": retries,
                        "beta_next": schedule.beta})
                while (snapshots_done < len(thresholds)
                       and stats["log10_loss_mean"] < math.log10(thresholds[snapshots_done])):
                    from marginlab.models import save

                    save(model, run.snapshot_path(snapshots_done + 1),
                         extra=_snapshot_meta(record, epoch, thresholds[snapshots_done]))
                    snapshots_done += 1
                if trajectory_every and epoch % trajectory_every == 0:
                    from marginlab.models import save

                    save(model, run.trajectory_path(epoch), extra={"epoch": epoch})
            state = {"epoch": epoch, "steps": total_steps, "wall_time": record["wall_time"],
                     "cpu_time": record["cpu_time"], "snapshots_done": snapshots_done,
                     "schedule": schedule.state_dict()}
            if run is not None and (epoch % checkpoint_every == 0 or epoch == epochs):
                _save_checkpoint(run, model, gen, state, velocity)
            bar.update(1)
            bar.set_postfix_str(
                f"log10L={stats['log10_loss_mean']:.4g} γ̃={stats['smoothed_margin']:.3g} "
                f"β={schedule.beta:.3g} rejected={retries}", refresh=False)
    finally:
        bar.close()
    if run is not None:
        _save_checkpoint(run, model, gen, state, velocity)
        if history:
            from marginlab.models import save

            save(model, run.snapshot_path(len(thresholds) + 1),
                 extra=_snapshot_meta(history[-1], history[-1]["epoch"], None))
        storage.append_jsonl(run.events_path, {"event": "stop", "reason": stop_reason,
                                               "epoch": epoch})
    return FitResult(model=model, history=history, run_dir=None if run is None else run.path,
                     stop_reason=stop_reason)


LineSearchGD.training_loop = staticmethod(fit_steps)
SCHEDULES[LineSearchGD.name] = LineSearchGD


def _copy_into(params: list[Tensor], values: list[Tensor]) -> None:
    with torch.no_grad():
        for p, v in zip(params, values):
            p.copy_(v)


def _velocity_path(run: RunDir) -> Path:
    return run.checkpoint_path.with_name("momentum.safetensors")


def _save_checkpoint(run: RunDir, model: nn.Module, gen: torch.Generator, state: dict,
                     velocity: list[Tensor] | None) -> None:
    """The trainer's checkpoint plus the momentum buffer (tagged with the step count)."""
    run.save_checkpoint(model, gen, state)
    path = _velocity_path(run)
    if velocity is None:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    save_file({f"v{i}": v.detach().cpu().contiguous() for i, v in enumerate(velocity)}, str(tmp),
              metadata={"steps": str(state["steps"])})
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _load_velocity(run: RunDir, model: nn.Module, steps: int) -> list[Tensor] | None:
    """The momentum buffer saved with the checkpoint at ``steps``, or None (restart momentum)."""
    path = _velocity_path(run)
    if not path.exists():
        return None
    try:
        with safe_open(str(path), framework="pt") as fh:
            if fh.metadata().get("steps") != str(steps):
                return None
            params = [p for p in model.parameters() if p.requires_grad]
            return [fh.get_tensor(f"v{i}").to(p.device, p.dtype) for i, p in enumerate(params)]
    except (SafetensorError, OSError, KeyError, ValueError):
        return None
