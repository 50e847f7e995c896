"""Training far past 100% accuracy: SGD/GD with loss-relative steps in log space.

Each mini-batch step is taken on R = exp(log L̄_B − F), where L̄_B is the mean batch loss and F
the log mean training loss of the last accepted epoch (DESIGN.md §3); the losses never leave
float64 log space, so training goes on to log10 L = −2000 and beyond with neither underflow nor
stall. Epochs whose loss does not decrease (loss-based schedule) or turns NaN/inf are rolled
back and redone (Lyu & Li, Appendix L.1).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from marginlab.core import margins, targets
from marginlab.core.losses import Loss, get_loss, log_loss_from_logits, log_loss_from_margins
from marginlab.device import configure as configure_device
from marginlab.device import tf32_enabled
from marginlab.errors import MarginlabError
from marginlab.io import storage
from marginlab.models import save
from marginlab.progress import Progress
from marginlab.train.rundir import RunDir, environment
from marginlab.train.schedules import Schedule

__all__ = ["DEFAULT_SNAPSHOTS", "FitResult", "WeightDecay", "fit"]

DEFAULT_SNAPSHOTS = (1e-10, 1e-15, 1e-20, 1e-120)
LN10 = math.log(10.0)


@dataclass(frozen=True)
class WeightDecay:
    """Penalty λ(t)·‖θ‖^power added to the mean loss; λ(t) = lam × Π factors of milestones ≤ t.

    Args:
        lam: λ at epoch 1.
        power: r in λ‖θ‖^r (Wei et al., Eq. (2.1)); 2 is ordinary weight decay.
        milestones: epoch -> factor, e.g. ``{60: 0.2, 90: 0.5}`` (Wei et al., Appendix F.4).
    """

    lam: float
    power: float = 2.0
    milestones: Mapping[int, float] = field(default_factory=dict)

    def __post_init__(self):
        if not (math.isfinite(self.lam) and self.lam >= 0):
            raise MarginlabError(f"weight decay must be >= 0, got {self.lam}")
        if not (math.isfinite(self.power) and self.power >= 1):
            raise MarginlabError(f"weight decay power must be >= 1, got {self.power}")

    def at(self, epoch: int) -> float:
        return self.lam * math.prod(f for e, f in self.milestones.items() if epoch >= int(e))

    def config(self) -> dict:
        return {"lam": self.lam, "power": self.power,
                "milestones": {str(k): v for k, v in self.milestones.items()}}


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        model: the trained model (the same object that was passed in).
        history: one dict per accepted epoch: MarginStats fields plus ``epoch``, ``alpha``,
            ``lr``, ``log10_lr``, ``steps``, ``retries``, ``wall_time``, ``cpu_time``, and
            ``test_loss`` (log10 of the mean test loss) / ``test_acc`` with a test set.
        run_dir: where the run was written, if anywhere.
        stop_reason: ``epochs``, ``time``, ``target`` (loss threshold reached).
    """

    model: nn.Module
    history: list[dict]
    run_dir: Path | None = None
    stop_reason: str = "epochs"

    @property
    def last(self) -> dict:
        return self.history[-1] if self.history else {}


def _batch_log_loss(out: Tensor, yb: Tensor, loss: Loss) -> Tensor:
    out = out.reshape(out.shape[0], -1).to(torch.float64)
    if out.shape[1] == 1:
        return log_loss_from_margins(yb * out[:, 0], loss)
    return log_loss_from_logits(out, yb, loss)


def _params_finite(model: nn.Module) -> bool:
    return all(torch.isfinite(p).all() for p in model.parameters())


def _snapshot_meta(stats: dict, epoch: int, threshold: float | None) -> dict:
    keys = ("log10_loss_mean", "normalized_margin", "normalized_margin_multi",
            "smoothed_margin", "smoothed_margin_multi", "train_acc", "test_acc", "test_loss")
    meta = {k: stats[k] for k in keys if k in stats}
    meta.update(epoch=epoch, threshold=threshold)
    return meta


def fit(
    model: nn.Module,
    train: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor] | None = None,
    *,
    schedule: Schedule,
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
) -> FitResult:
    """Train ``model`` with SGD (or full-batch GD) and record its margins every epoch.

    Args:
        model: the network (trained in place, in its own dtype; margins in float64).
        train: (X, y) training tensors. test: optional (X, y) test tensors.
        schedule: :class:`ConstantLR`, :class:`LossBasedLR` or another
            :class:`~marginlab.train.schedules.Schedule`.
        epochs: number of accepted epochs to run (in total, counting a resumed run's).
        batch_size: mini-batch size (paper: 100); ``None`` for full-batch gradient descent.
        loss: ``cross_entropy`` (multi-class, or logistic for one output), ``logistic``,
            ``exponential`` or an ExpTailLoss.
        weight_decay: a :class:`WeightDecay` or a plain λ (power 2).
        run_dir: directory for config, metrics, checkpoints and snapshots.
        snapshots_at: mean-loss thresholds; the model is saved the first epoch below each
            (model-1..), and at the end (model-K+1).
        seed: seeds the shuffling.
        device: torch device for training.
        resume: continue the run in ``run_dir`` from its last checkpoint, exactly.
        overwrite: replace a different run in ``run_dir``.
        max_time: wall-clock budget in seconds (checked between epochs).
        stop_at_log10_loss: stop once log10 of the mean training loss is at or below this.
        margin_convention: ``homogeneous`` or ``paper_with_bias`` (see margins.measure).
        checkpoint_every: epochs between resume checkpoints.
        trajectory_every: save the parameters every this many epochs (for direction analysis).
        eval_batch_size: batch size of the end-of-epoch evaluation.
        max_retries: diverged (NaN/inf) attempts at one epoch before giving up. Finite epochs
            that a schedule rolls back are bounded by the schedule itself (the loss-based one
            stops at its ``min_alpha`` with :class:`StepSizeUnderflowError`).
        data_info: description of the data recorded in config.json (e.g. name and subset).
        extra_config: more entries for config.json (e.g. the TrainSpec that built the run).
        progress: show a progress bar (default: when attached to a terminal).

    Returns:
        A :class:`FitResult`.

    Raises:
        StepSizeUnderflowError: the loss-based step fell below its floor (loss stopped decreasing).
        MarginlabError: invalid data, settings, or run directory.
    """
    if getattr(schedule, "training_loop", None) is not None:
        # A schedule with its own loop (e.g. train/fast.py) takes these same arguments.
        return schedule.training_loop(**locals())
    if epochs < 0 or (batch_size is not None and batch_size <= 0):
        raise MarginlabError("epochs must be >= 0 and batch_size positive")
    if checkpoint_every < 1:
        raise MarginlabError("checkpoint_every must be >= 1")
    loss_fn = get_loss(loss)
    if isinstance(weight_decay, (int, float)):
        weight_decay = WeightDecay(float(weight_decay)) if weight_decay else None
    thresholds = sorted((float(t) for t in snapshots_at), reverse=True)
    X_dev, y_raw, y_dev = prepare_data(model, train, test, device)
    n = X_dev.shape[0]
    bs = n if batch_size is None else min(batch_size, n)
    config = run_config(
        model, test, n=n, data_info=data_info, extra_config=extra_config,
        schedule=schedule.config(), loss=loss if isinstance(loss, str) else loss_fn.name,
        batch_size=batch_size, seed=seed,
        weight_decay=None if weight_decay is None else weight_decay.config(),
        snapshots_at=thresholds, margin_convention=margin_convention, epochs=epochs,
        max_time=max_time, stop_at_log10_loss=stop_at_log10_loss, device=device)
    run = RunDir(run_dir) if run_dir is not None else None
    gen = torch.Generator().manual_seed(seed)
    history: list[dict] = []
    state = {"epoch": 0, "wall_time": 0.0, "cpu_time": 0.0, "snapshots_done": 0,
             "schedule": schedule.state_dict(), "frame": None}
    if run is not None and run.prepare(config, resume=resume, overwrite=overwrite):
        state = run.load_checkpoint(model, gen)
        schedule.load_state_dict(state["schedule"])
        history = run.truncate_metrics(state["epoch"])
        storage.append_jsonl(run.events_path, {"event": "resume", "epoch": state["epoch"]})

    def evaluate() -> dict:
        """MarginStats on the training set (+ test loss/acc); NaN loss if anything overflowed."""
        if not _params_finite(model):
            return {"log_loss_sum": math.nan}
        try:
            stats = margins.measure(model, X_dev, y_raw, loss_fn, batch_size=eval_batch_size,
                                    convention=margin_convention, check_inputs=False).as_dict()
            stats.update(evaluate_test(model, test, loss_fn, eval_batch_size))
        except margins.NonFiniteOutputError:
            return {"log_loss_sum": math.nan}  # overflow counts as "did not decrease"
        return stats

    t_start = time.perf_counter() - state["wall_time"]
    c_start = time.process_time() - state["cpu_time"]
    if state["frame"] is None:
        current = evaluate()
        if not math.isfinite(current["log_loss_sum"]):
            raise MarginlabError("the initial training loss is not finite")
        state["frame"] = current["log_loss_sum"] - math.log(n)
    frame = state["frame"]
    # Plain SGD (no momentum) written out: torch.optim's first use imports torch._dynamo,
    # seconds of start-up for every run.
    params = [p for p in model.parameters() if p.requires_grad]
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
            epoch += 1
            retries = diverged = 0
            while True:
                schedule.start_epoch(epoch)
                step = schedule.relative_step(frame)
                log_lr = schedule.log_lr(frame)
                lam = weight_decay.at(epoch) if weight_decay is not None else 0.0
                saved = [p.detach().clone() for p in model.parameters()]
                steps = _run_epoch(model, params, X_dev, y_dev, loss_fn, frame, step, log_lr, lam,
                                   weight_decay.power if weight_decay else 2.0, bs, gen)
                stats = evaluate()
                new_frame = stats["log_loss_sum"] - math.log(n)
                keep = False
                try:  # a schedule may give up (raise); the failed epoch is rolled back first
                    keep = schedule.decide(frame, new_frame) and math.isfinite(new_frame)
                finally:
                    if not keep:
                        _restore(model, saved)
                if keep:
                    break
                retries += 1
                diverged += not math.isfinite(new_frame)
                record_retry(run, epoch, frame, new_frame, schedule.alpha, diverged, max_retries)
            frame = new_frame
            record = {"epoch": epoch, **stats, "alpha": schedule.alpha,
                      "lr": math.exp(log_lr) if log_lr < 709 else math.inf,
                      "log10_lr": log_lr / LN10, "steps": steps, "retries": retries,
                      "wall_time": time.perf_counter() - t_start,
                      "cpu_time": time.process_time() - c_start}
            if weight_decay is not None:
                record["weight_decay"] = lam
            history.append(record)
            state_before = state["snapshots_done"]
            snapshots_done = record_epoch(run, model, record, thresholds, state_before,
                                          trajectory_every)
            state = {"epoch": epoch, "wall_time": record["wall_time"],
                     "cpu_time": record["cpu_time"], "snapshots_done": snapshots_done,
                     "schedule": schedule.state_dict(), "frame": frame}
            if run is not None and (epoch % checkpoint_every == 0 or epoch == epochs):
                run.save_checkpoint(model, gen, state)
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
        run.save_checkpoint(model, gen, state)
        finish_run(run, model, history, thresholds, stop_reason, epoch)
    return FitResult(model=model, history=history, run_dir=None if run is None else run.path,
                     stop_reason=stop_reason)


def prepare_data(model: nn.Module, train: tuple[Tensor, Tensor],
                 test: tuple[Tensor, Tensor] | None, device: str) -> tuple[Tensor, Tensor, Tensor]:
    """Validate the data, move model and inputs to ``device`` (channels-last for images on CPU,
    which runs convolutions and max-pooling 10-25% faster; benchmarks/), and return the inputs,
    the raw labels and the labels in the form the loss takes."""
    X, y = train
    margins.validate_data(X, y)
    if test is not None:
        margins.validate_data(*test)
    dtype = next(model.parameters()).dtype
    configure_device(device)  # TF32 off on CUDA unless allowed explicitly
    model.to(device)
    X_dev, y_raw = X.to(device=device, dtype=dtype), y.to(device)
    if X_dev.dim() == 4 and X_dev.device.type == "cpu":
        model.to(memory_format=torch.channels_last)
        X_dev = X_dev.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        out_dim = model(X_dev[:1]).reshape(1, -1).shape[1]
    return X_dev, y_raw, targets.targets(y_raw, out_dim)


def run_config(model: nn.Module, test: tuple[Tensor, Tensor] | None, *, n: int,
               data_info: Mapping | None, extra_config: Mapping | None, **fields) -> dict:
    """The run directory's ``config.json``: model spec, data, dtype, versions, the given
    training ``fields`` and ``extra_config``."""
    device = fields["device"]
    return {
        "model": getattr(model, "marginlab_spec",
                         {"name": "custom", "class": type(model).__name__}),
        "data": dict(data_info or {"n_train": n,
                                   "n_test": None if test is None else len(test[1])}),
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        **fields,
        "tf32": tf32_enabled(device),
        "versions": environment(device),
        **dict(extra_config or {}),
    }


def evaluate_test(model: nn.Module, test: tuple[Tensor, Tensor] | None, loss: Loss,
                 batch_size: int) -> dict:
    """``test_loss`` (log10 of the mean loss) and ``test_acc`` on the test set; {} without one."""
    if test is None:
        return {}
    o = margins.model_outputs(model, test[0], test[1], loss, batch_size=batch_size,
                              check_inputs=False)
    log_mean = float(torch.logsumexp(o.log_loss, 0)) - math.log(len(o.q))
    return {"test_loss": log_mean / LN10, "test_acc": float((o.q > 0).double().mean())}


def record_retry(run: RunDir | None, epoch: int, log_mean_before: float, log_mean_after: float,
                 alpha_next: float, diverged: int, max_retries: int) -> None:
    """Log a rolled-back attempt (log10 of the mean training loss before and after it) to
    ``events.jsonl``, and give up once ``diverged`` attempts of this epoch reached NaN/inf."""
    if run is not None:
        storage.append_jsonl(run.events_path, {
            "event": "retry", "epoch": epoch, "log10_loss_before": log_mean_before / LN10,
            "log10_loss_after": log_mean_after / LN10, "alpha_next": alpha_next})
    if diverged >= max_retries:
        raise MarginlabError(f"epoch {epoch} diverged (NaN/inf loss) in {diverged} attempts; "
                             "training diverges at this step size")


def record_epoch(run: RunDir | None, model: nn.Module, record: dict, thresholds: Sequence[float],
                 snapshots_done: int, trajectory_every: int | None) -> int:
    """Append an accepted epoch's record to ``metrics.jsonl`` and save the snapshots whose loss
    threshold it crossed and, every ``trajectory_every`` epochs, the parameters. Returns the
    number of snapshots saved so far."""
    if run is None:
        return snapshots_done
    epoch = record["epoch"]
    storage.append_jsonl(run.metrics_path, record)
    while (snapshots_done < len(thresholds)
           and record["log10_loss_mean"] < math.log10(thresholds[snapshots_done])):
        save(model, run.snapshot_path(snapshots_done + 1),
             extra=_snapshot_meta(record, epoch, thresholds[snapshots_done]))
        snapshots_done += 1
    if trajectory_every and epoch % trajectory_every == 0:
        save(model, run.trajectory_path(epoch), extra={"epoch": epoch})
    return snapshots_done


def finish_run(run: RunDir, model: nn.Module, history: list[dict], thresholds: Sequence[float],
               stop_reason: str, epoch: int) -> None:
    """Save the final model as the last snapshot and record why training stopped."""
    if history:
        save(model, run.snapshot_path(len(thresholds) + 1),
             extra=_snapshot_meta(history[-1], history[-1]["epoch"], None))
    storage.append_jsonl(run.events_path, {"event": "stop", "reason": stop_reason,
                                           "epoch": epoch})


def _restore(model: nn.Module, saved: list[Tensor]) -> None:
    with torch.no_grad():
        for p, s in zip(model.parameters(), saved):
            p.copy_(s)


def _run_epoch(model: nn.Module, params: list[Tensor], X: Tensor, y: Tensor, loss: Loss,
               frame: float, step: float, log_lr: float, lam: float, power: float, bs: int,
               gen: torch.Generator) -> int:
    """One pass of SGD over a fresh shuffle; returns the number of steps taken.

    The step on R = exp(log L̄_B − frame) with size ``step`` is the step of size
    η = step·e^{−frame} on the mean batch loss L̄_B. The weight-decay gradient
    λ r ‖θ‖^{r−2} θ is added with the true rate η (scaled into R's units).
    """
    n = X.shape[0]
    order = torch.randperm(n, generator=gen).to(X.device)
    # λ's gradient enters R's units scaled by η/step = e^{−frame}.
    if lam > 0 and -frame > 700:
        raise MarginlabError("weight decay needs a loss above 1e-300; a run with a loss this "
                             "small is not a weakly regularized one")
    wd_scale = lam * math.exp(-frame) if lam > 0 else 0.0
    steps = 0
    for start in range(0, n, bs):
        idx = order[start:start + bs]
        log_l = _batch_log_loss(model(X[idx]), y[idx], loss)
        log_mean = torch.logsumexp(log_l, 0) - math.log(idx.numel())
        rescaled = torch.exp(log_mean - frame)
        for p in params:
            p.grad = None
        rescaled.backward()
        if wd_scale:
            with torch.no_grad():
                with_grad = [p for p in params if p.grad is not None]
                norm = torch.sqrt(sum(p.double().pow(2).sum() for p in with_grad))
                coef = wd_scale * power * float(norm) ** (power - 2)
                for p in with_grad:
                    p.grad.add_(p, alpha=coef)
        with torch.no_grad():
            for p in params:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-step)
        steps += 1
    return steps
