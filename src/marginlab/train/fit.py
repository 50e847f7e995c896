"""The training loop: SGD/GD with loss-relative steps in log space, for every schedule.

Each step is taken on R = exp(log L̄_B − F), where L̄_B is the mean batch loss and F the log mean
training loss of the last accepted epoch (DESIGN.md §3); the losses never leave float64 log
space, so training goes on to log10 L = −2000 and beyond with neither underflow nor stall.

One loop owns the bookkeeping: evaluation, rollback of epochs the schedule rejects or that turn
NaN/inf (Lyu & Li, Appendix L.1), recording, snapshots, trajectories, budgets, checkpoints and
exact resume. What varies is in two small objects: the schedule (:mod:`.schedules`) decides
whether to keep an epoch and the next step size; the step rule it names (:mod:`.steps`: plain
SGD, heavy ball) moves the parameters.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from marginlab import models
from marginlab.core import margins, targets
from marginlab.device import configure as configure_device
from marginlab.device import tf32_enabled
from marginlab.errors import MarginlabError, RunDirectoryError
from marginlab.io.environment import environment
from marginlab.progress import Progress
from marginlab.train.config import DEFAULT_SNAPSHOTS, FitConfig, WeightDecay
from marginlab.train.history import EpochRecord, FitResult, History
from marginlab.train.objective import Evaluation, Objective, evaluate_test
from marginlab.train.rundir import RunDir
from marginlab.train.steps import EpochInput

__all__ = ["DEFAULT_SNAPSHOTS", "FitConfig", "FitResult", "History", "WeightDecay", "evaluate_test",
           "finish_run", "fit", "record_epoch", "run_config"]

LN10 = math.log(10.0)
SNAPSHOT_KEYS = ("log10_loss_mean", "normalized_margin", "normalized_margin_multi",
                 "smoothed_margin", "smoothed_margin_multi", "train_acc", "test_acc", "test_loss")


def fit(model: nn.Module, train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor] | None = None,
        config: FitConfig | None = None, *, run_dir: str | Path | None = None,
        resume: bool = False, overwrite: bool = False, data_info: Mapping | None = None,
        extra_config: Mapping | None = None, progress: bool | None = None,
        **settings) -> FitResult:
    """Train ``model`` with SGD (or full-batch GD) and record its margins every epoch.

    Either pass a :class:`FitConfig`, or its fields as keywords::

        fit(model, split.train, split.test, FitConfig(LossBasedLR(), epochs=2000))
        fit(model, split.train, split.test, schedule=LossBasedLR(), epochs=2000,
            run_dir="runs/mlp", stop_at_log10_loss=-100)

    Args:
        model: the network (trained in place, in its own dtype; margins in float64).
        train: (X, y) training tensors. test: optional (X, y) test tensors (or, without a test
            set, the config).
        config: what to train (schedule, epochs, batches, loss, budgets ...).
        run_dir: directory for config, metrics, checkpoint and snapshots (see :class:`RunDir`).
        resume: continue the run in ``run_dir`` from its checkpoint, exactly. Only the fields in
            :data:`~marginlab.train.config.RESUMABLE_FIELDS` may differ from the saved run.
        overwrite: replace the run in ``run_dir``.
        data_info: description of the data recorded in config.json (e.g. name and subset).
        extra_config: more entries for config.json (e.g. the TrainSpec that built the run).
        progress: show a progress bar (default: when attached to a terminal).
        **settings: :class:`FitConfig` fields, building the config (or replacing its fields).

    Returns:
        A :class:`FitResult` with the typed :class:`History` of the accepted epochs.

    Raises:
        StepSizeUnderflowError: the loss-based step fell below its floor (loss stopped decreasing).
        MarginlabError: invalid data, settings, or run directory.
    """
    if isinstance(test, FitConfig) and config is None:  # fit(model, train, config)
        test, config = None, test
    if config is None:
        config = FitConfig.from_keywords(settings)
    elif settings:
        config = FitConfig.from_keywords({**_fields(config), **settings})
    run = RunDir(run_dir) if run_dir is not None else None
    loop = _Loop(model, train, test, config, run, data_info=data_info,
                 extra_config=extra_config)
    return loop.run(resume=resume, overwrite=overwrite, progress=progress)


def _fields(config: FitConfig) -> dict:
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}


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
    training ``fields`` (:meth:`FitConfig.record` for fit) and ``extra_config``."""
    return {
        "model": getattr(model, "marginlab_spec",
                         {"name": "custom", "class": type(model).__name__}),
        "data": dict(data_info or {"n_train": n,
                                   "n_test": None if test is None else len(test[1])}),
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        **fields,
        "tf32": tf32_enabled(fields.get("device", "cpu")),
        "versions": environment(fields.get("device", "cpu")),
        **dict(extra_config or {}),
    }


def record_epoch(run: RunDir | None, model: nn.Module, record: Mapping,
                 thresholds: Sequence[float], snapshots_done: int,
                 trajectory_every: int | None) -> int:
    """Append an epoch's record to ``metrics.jsonl`` and save the snapshots whose loss threshold
    (mean-loss values, largest first) it crossed and, every ``trajectory_every`` epochs, the
    parameters. Returns the number of snapshots saved so far."""
    if run is None:
        return snapshots_done
    epoch = record["epoch"]
    run.append_metrics(dict(record))
    while (snapshots_done < len(thresholds)
           and record["log10_loss_mean"] < math.log10(thresholds[snapshots_done])):
        models.save(model, run.snapshot_path(snapshots_done + 1),
                    extra=_snapshot_meta(record, thresholds[snapshots_done]))
        snapshots_done += 1
    if trajectory_every and epoch % trajectory_every == 0:
        models.save(model, run.trajectory_path(epoch), extra={"epoch": epoch})
    return snapshots_done


def finish_run(run: RunDir, model: nn.Module, history: Sequence[Mapping],
               thresholds: Sequence[float], stop_reason: str, epoch: int) -> None:
    """Save the final model as the last snapshot and record why training stopped."""
    if len(history):
        models.save(model, run.snapshot_path(len(thresholds) + 1),
                    extra=_snapshot_meta(history[-1], None))
    run.append_event({"event": "stop", "reason": stop_reason, "epoch": epoch})


class _Loop:
    """One training run: set up once, then :meth:`run`."""

    def __init__(self, model: nn.Module, train, test, config: FitConfig, run: RunDir | None, *,
                 data_info: Mapping | None, extra_config: Mapping | None):
        self.model, self.test, self.cfg, self.run_dir = model, test, config, run
        self.loss = config.loss_fn
        self.schedule = config.schedule
        self.rule = config.schedule.step_rule()
        self.X, _, self.y = prepare_data(model, train, test, config.device)
        self.n = self.X.shape[0]
        self.config_record = run_config(model, test, n=self.n, data_info=data_info,
                                        extra_config=extra_config, **config.record())
        self.gen = torch.Generator().manual_seed(config.seed)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.rule.begin(self.params)
        self.objective = Objective(model, self.X, self.y, self.loss, config.eval_batch_size,
                                   config.margin_convention,
                                   keep_graph=self.rule.keeps_graph(config.batch_size, self.n))
        self.history = History()
        self.epoch, self.snapshots_done = 0, 0
        self.wall_time = self.cpu_time = 0.0
        self.current: Evaluation | None = None

    # --- the run -------------------------------------------------------------------------
    def run(self, *, resume: bool, overwrite: bool, progress: bool | None) -> FitResult:
        run = self.run_dir
        resumed = run is not None and run.prepare(self.config_record, resume=resume,
                                                  overwrite=overwrite)
        try:
            if resumed:
                self._restore()
                run.confirm_resume()
                run.append_event({"event": "resume", "epoch": self.epoch})
            else:
                self.current = self.objective.evaluate()
                if not self.current.finite:
                    raise MarginlabError("the initial training loss is not finite")
                if run is not None:
                    self._checkpoint()  # epoch 0: metrics never exist without a checkpoint
            stop_reason = self._train(progress)
            if run is not None:
                self._checkpoint()
                finish_run(run, self.model, self.history, self.cfg.snapshots_at, stop_reason,
                           self.epoch)
        except OSError as exc:  # a full disk, a read-only file system ...: one line, exit 2
            where = exc.filename or run.path
            raise RunDirectoryError(f"cannot write the run directory ({where}: "
                                    f"{exc.strerror or exc}); its checkpoint is the last "
                                    "complete one") from None
        finally:
            if run is not None:
                run.unlock()
        return FitResult(model=self.model, history=self.history,
                         run_dir=None if run is None else run.path, stop_reason=stop_reason)

    def _train(self, progress: bool | None) -> str:
        cfg = self.cfg
        t_start = time.perf_counter() - self.wall_time
        c_start = time.process_time() - self.cpu_time
        name = self.config_record["model"].get("name", "model")
        self.bar = bar = Progress(f"train {name}", total=cfg.epochs, initial=self.epoch,
                                  unit="epoch", max_time=cfg.max_time, elapsed=self.wall_time,
                                  quiet=None if progress is None else not progress)
        try:
            while self.epoch < cfg.epochs:
                if cfg.max_time is not None and time.perf_counter() - t_start >= cfg.max_time:
                    return "time"
                if cfg.max_cpu_time is not None and \
                        time.process_time() - c_start >= cfg.max_cpu_time:
                    return "cpu_time"
                epoch = self.epoch + 1
                lam = cfg.weight_decay.at(epoch) if cfg.weight_decay is not None else 0.0
                new, log_lr, done, retries = self._attempts(epoch, lam)
                self.current, self.epoch = new, epoch
                record = EpochRecord(
                    epoch=epoch, **self.objective.stats(new).as_dict(),
                    **evaluate_test(self.model, self.test, self.loss, cfg.eval_batch_size),
                    alpha=self.schedule.alpha,
                    lr=math.exp(log_lr) if log_lr < 709 else math.inf, log10_lr=log_lr / LN10,
                    steps=done.steps, retries=retries, samples_used=done.samples_used,
                    wall_time=time.perf_counter() - t_start,
                    cpu_time=time.process_time() - c_start,
                    weight_decay=lam if cfg.weight_decay is not None else None)
                self.history.append(record)
                self.wall_time, self.cpu_time = record.wall_time, record.cpu_time
                self._record(record)
                if self.run_dir is not None and (epoch % cfg.checkpoint_every == 0
                                                 or epoch == cfg.epochs):
                    self._checkpoint()
                bar.update(1, log10_loss=record.log10_loss_mean,
                           margin=record.normalized_margin_multi, alpha=self.schedule.alpha,
                           retries=retries)
                if cfg.stop_at_log10_loss is not None and \
                        record.log10_loss_mean <= cfg.stop_at_log10_loss:
                    return "target"
        finally:
            bar.close()
        return "epochs"

    def _attempts(self, epoch: int, lam: float):
        """Run ``epoch`` until the schedule keeps it; roll back every other attempt."""
        cur, log_n = self.current, math.log(self.n)
        power = self.cfg.weight_decay.power if self.cfg.weight_decay is not None else 2.0
        guarded = cur.log_loss_sum < self.loss.log_loss_at_zero  # γ̃ is monotone only once L < ℓ(0)
        retries = diverged = 0
        while True:
            self.schedule.start_epoch(epoch)
            frame = cur.log_loss_sum - log_n
            step, log_lr = self.schedule.relative_step(frame), self.schedule.log_lr(frame)
            saved = [p.detach().clone() for p in self.model.parameters()]
            done = self.rule.epoch(EpochInput(
                model=self.model, params=self.params, X=self.X, y=self.y, loss=self.loss,
                frame=frame, step=step, lam=lam, power=power, batch_size=self.cfg.batch_size,
                gen=self.gen, objective=self.objective, log_losses=cur.log_losses,
                log_loss_sum=cur.log_loss_sum))
            new = self.objective.evaluate()
            new_frame = new.log_loss_sum - log_n
            keep = False
            try:  # a schedule may give up (raise); the failed epoch is rolled back first
                keep = self.schedule.decide(
                    frame, new_frame, margins_before=cur.smoothed if guarded else (),
                    margins_after=new.smoothed if guarded else ()) and new.finite
            finally:
                if not keep:
                    with torch.no_grad():
                        for p, s in zip(self.model.parameters(), saved):
                            p.copy_(s)
                    self.rule.rollback()
                    self.objective.forget()
            if keep:
                self.rule.accept()
                return new, log_lr, done, retries
            retries += 1
            diverged += not new.finite
            if self.run_dir is not None:
                self.run_dir.append_event({
                    "event": "retry", "epoch": epoch, "log10_loss_before": frame / LN10,
                    "log10_loss_after": new_frame / LN10, "alpha_next": self.schedule.alpha})
            if diverged >= self.cfg.max_retries:
                raise MarginlabError(f"epoch {epoch} diverged (NaN/inf loss) in {diverged} "
                                     "attempts; training diverges at this step size")

    # --- recording -----------------------------------------------------------------------
    def _record(self, record: EpochRecord) -> None:
        before = self.snapshots_done
        self.snapshots_done = record_epoch(self.run_dir, self.model, record.as_dict(),
                                           self.cfg.snapshots_at, before,
                                           self.cfg.trajectory_every)
        if self.snapshots_done > before:
            self.bar.note(f"snapshot model-{self.snapshots_done} at epoch {record.epoch}")

    # --- checkpoint ----------------------------------------------------------------------
    def _checkpoint(self) -> None:
        cur = self.current
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        tensors.update({f"step.{k}": v for k, v in self.rule.state_tensors().items()})
        tensors["train.log_losses"] = cur.log_losses
        tensors["rng_state"] = self.gen.get_state()
        self.run_dir.save_checkpoint(tensors, {
            "epoch": self.epoch, "wall_time": self.wall_time, "cpu_time": self.cpu_time,
            "snapshots_done": self.snapshots_done, "schedule": self.schedule.state_dict(),
            "log_loss_sum": cur.log_loss_sum, "smoothed": list(cur.smoothed)})

    def _restore(self) -> None:
        """Load the checkpoint, verify the metrics against it and continue from it."""
        run = self.run_dir
        ck = run.load_checkpoint()
        source = str(run.checkpoint_path)
        try:
            state = ck.state
            self.epoch = state["epoch"]
            self.wall_time, self.cpu_time = float(state["wall_time"]), float(state["cpu_time"])
            self.snapshots_done = int(state["snapshots_done"])
            log_L, smoothed = float(state["log_loss_sum"]), [float(v) for v in state["smoothed"]]
            self.schedule.load_state_dict(state["schedule"])
            log_losses = ck.tensors["train.log_losses"].to(self.X.device)
            rng = ck.tensors["rng_state"]
        except (KeyError, TypeError, ValueError) as exc:
            raise RunDirectoryError(f"checkpoint {source} lacks a valid trainer state ({exc})") \
                from None
        if log_losses.shape != (self.n,):
            raise RunDirectoryError(f"checkpoint {source} is of a run on {log_losses.numel()} "
                                    f"samples, not {self.n}")
        try:
            self.gen.set_state(rng)
            models.load_state(self.model, ck.group("model"), source=source)
            self.rule.load_state_tensors(ck.group("step"))
        except (RuntimeError, TypeError) as exc:
            raise RunDirectoryError(f"checkpoint {source} cannot be restored "
                                    f"({str(exc).splitlines()[0]})") from None
        except MarginlabError as exc:
            raise RunDirectoryError(str(exc)) from None
        records = run.metrics_until(self.epoch, {
            "log_loss_sum": log_L, "smoothed_margin": smoothed[0],
            "smoothed_margin_multi": smoothed[1]})
        try:
            self.history = History.from_dicts(records)
        except MarginlabError as exc:
            raise RunDirectoryError(f"{run.metrics_path}: {exc}") from None
        self.current = Evaluation(log_L, log_losses, (smoothed[0], smoothed[1]))


def _snapshot_meta(record: Mapping, threshold: float | None) -> dict:
    meta = {k: record[k] for k in SNAPSHOT_KEYS if k in record}
    meta.update(epoch=record["epoch"], threshold=threshold)
    return meta
