"""Margin tracking for any training loop: the run directory of :func:`marginlab.train.fit`,
written from the user's own loop.

::

    tracker = ml.Tracker("runs/mine", X_train, y_train, test=(X_test, y_test),
                         snapshots_at=(-10, -15, -20, -120), trajectory_every=100)
    for epoch in range(1, E + 1):
        ...                                   # the user's own training step(s)
        tracker.record(model, epoch=epoch)    # MarginStats in float64, as fit records them
    tracker.close()                           # final snapshot, plots/training.png, report.html

Every ``record`` costs one forward pass over the tracked set (and one over the test set, if
given), without gradients, in float64: a float64 shadow copy of the network, refreshed from its
weights at each record, gives margins q_n exact to float64 rounding (``precision="model"``
measures in the network's own dtype instead, as ``fit`` does); log-losses stay in float64 log
space (DESIGN.md §2; Lyu & Li, Eqs. (5)–(6) and Section 4.1). The normalized margin is defined for
homogeneous networks only: like everything in marginlab, the tracker refuses a
non-homogeneous model unless ``margin_convention="paper_with_bias"`` (Lyu & Li, Appendix K.1).

The run directory has fit's layout (:mod:`marginlab.train.rundir`): ``config.json``,
``metrics.jsonl`` (one line per record), ``snapshots/model-K.safetensors`` at the loss
thresholds and at the end, ``trajectory/`` every ``trajectory_every`` epochs and a checkpoint of
the model's weights at each record, all written atomically. When the data is not a registered
data set, the tracked tensors go to ``data.safetensors`` (:mod:`marginlab.data.tensors`), so
``marginlab plot``, ``analyze`` and ``attack`` work on the directory as on one of ``train``'s
(``analyze`` and ``attack`` rebuild the network from a snapshot, which needs a zoo model, e.g.
:func:`marginlab.models.build`). ``resume=True`` continues a run: records from an epoch onwards
replace those of a previous session at that epoch and later.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from marginlab import models
from marginlab.core import margins
from marginlab.core.losses import get_loss
from marginlab.data.split import balanced_first
from marginlab.data.tensors import save_tensors, split_from_tensors
from marginlab.errors import MarginlabError
from marginlab.io import plots, storage
from marginlab.progress import Progress
from marginlab.run_report import write_run_report
from marginlab.train.config import DEFAULT_SNAPSHOTS
from marginlab.train.fit import evaluate_test, finish_run, record_epoch, run_config
from marginlab.train.rundir import RunDir

__all__ = ["DEFAULT_SNAPSHOTS_LOG10", "TENSORBOARD_DIR", "Tracker"]

DEFAULT_SNAPSHOTS_LOG10 = tuple(float(round(math.log10(t))) for t in DEFAULT_SNAPSHOTS)
TENSORBOARD_DIR = "tensorboard"
# metrics field -> TensorBoard tag
TENSORBOARD_TAGS = {
    "log10_loss_mean": "loss/log10_train",
    "test_loss": "loss/log10_test",
    "normalized_margin": "margin/normalized",
    "normalized_margin_multi": "margin/normalized_multi",
    "smoothed_margin": "margin/smoothed",
    "smoothed_margin_multi": "margin/smoothed_multi",
    "train_acc": "accuracy/train",
    "test_acc": "accuracy/test",
    "rho": "norm/rho",
}


class Tracker:
    """Records margins of a model trained by any loop into a marginlab run directory.

    Args:
        run_dir: the run directory.
        X_train, y_train: the training set (labels: classes 0..C−1, or ±1 / {0, 1} for a
            one-output model).
        test: optional (X, y) test set; its log10 mean loss and accuracy are recorded.
        every: measure at epochs divisible by ``every`` (others are skipped at no cost).
        snapshots_at: log10 mean-loss thresholds; the model is saved the first record below
            each (``model-1``…), and at :meth:`close` (``model-K+1``).
        trajectory_every: save the parameters every this many epochs (for ``analyze``).
        resume: continue the run already in ``run_dir``.
        overwrite: replace a run in ``run_dir``.
        subset: track only part of the training set: a number of samples (class-balanced,
            the first of each class) or the indices.
        loss: the loss whose margins are recorded (``cross_entropy``, ``logistic``,
            ``exponential``).
        margin_convention: ``homogeneous`` (refuses non-homogeneous models) or
            ``paper_with_bias``.
        eval_batch_size: samples per forward pass of a record.
        data: the config's data entry when the tensors are a registered data set, e.g.
            ``{"name": "digits", "n_train": 100, "n_test": 50}``; otherwise the tracked tensors
            are written to ``data.safetensors``.
        config: more entries for ``config.json`` (e.g. the optimizer's settings).
        total_epochs: the planned number of epochs, for the progress estimate.
        tensorboard: also write TensorBoard scalars (True: into ``RUN_DIR/tensorboard``, or
            a directory).
        precision: ``float64`` (measure a float64 copy of the network) or ``model`` (its own
            dtype, cheaper on GPUs).
        progress: progress lines/bar (None: the process default, see :mod:`marginlab.progress`).

    Raises:
        MarginlabError: invalid data or settings.
    """

    def __init__(self, run_dir: str | os.PathLike, X_train: Tensor, y_train: Tensor, *,
                 test: tuple[Tensor, Tensor] | None = None, every: int = 1,
                 snapshots_at: Sequence[float] = DEFAULT_SNAPSHOTS_LOG10,
                 trajectory_every: int | None = None, resume: bool = False,
                 overwrite: bool = False, subset: int | Sequence[int] | Tensor | None = None,
                 loss: str = "cross_entropy",
                 margin_convention: margins.Convention = "homogeneous",
                 eval_batch_size: int = 1000, data: Mapping | None = None,
                 config: Mapping | None = None, total_epochs: int | None = None,
                 tensorboard: bool | str | os.PathLike = False,
                 precision: str = "float64", progress: bool | None = None):
        if every < 1:
            raise MarginlabError(f"every must be >= 1, got {every}")
        if trajectory_every is not None and trajectory_every < 1:
            raise MarginlabError(f"trajectory_every must be >= 1, got {trajectory_every}")
        if eval_batch_size < 1:
            raise MarginlabError(f"eval_batch_size must be >= 1, got {eval_batch_size}")
        if margin_convention not in ("homogeneous", "paper_with_bias"):
            raise MarginlabError(f"unknown margin convention {margin_convention!r}")
        if precision not in ("float64", "model"):
            raise MarginlabError(f"precision must be 'float64' or 'model', got {precision!r}")
        thresholds = [float(t) for t in snapshots_at]
        if any(not math.isfinite(t) for t in thresholds):
            raise MarginlabError("snapshots_at takes finite log10 loss thresholds, e.g. -10")
        margins.validate_data(X_train, y_train)
        if test is not None:
            margins.validate_data(*test)
        if subset is not None:
            if data is not None:
                raise MarginlabError("subset= tracks part of the data; a data= entry describes "
                                     "all of it: give one of them")
            X_train, y_train = _subset(X_train, y_train, subset)
        self.run = RunDir(run_dir)
        self.X, self.y, self.test = X_train, y_train, test
        self.every, self.trajectory_every = int(every), trajectory_every
        # fit's thresholds are mean-loss values, largest first
        self.thresholds = sorted((10.0 ** t for t in thresholds), reverse=True)
        self.loss = get_loss(loss)
        self.loss_name = getattr(self.loss, "name", str(loss))
        self.convention = margin_convention
        self.eval_batch_size = eval_batch_size
        self.data = None if data is None else dict(data)
        self.extra_config = dict(config or {})
        self.tracker_config = {"precision": precision, "every": self.every,
                               "trajectory_every": trajectory_every,
                               "subset": _describe_subset(subset),
                               "eval_batch_size": eval_batch_size}
        self.resume, self.overwrite = resume, overwrite
        self.total_epochs = total_epochs
        self.tensorboard = tensorboard
        self.progress_flag = progress
        self.precision = precision
        self._shadow: tuple[nn.Module, nn.Module] | None = None  # (model, its float64 copy)
        self.history: list[dict] = []
        self.last_epoch = 0
        self.snapshots_done = 0
        self._prepared = False
        self._resumed = False
        self._closed = False
        self._writer = None
        self._bar: Progress | None = None
        self._model: nn.Module | None = None
        self._t0 = time.perf_counter()
        self._c0 = time.process_time()
        self._time_offset = (0.0, 0.0)

    # --- the run directory ---------------------------------------------------------------
    def _prepare(self, model: nn.Module) -> None:
        device = str(next(model.parameters()).device)
        with torch.no_grad():
            out_dim = model(self.X[:1].to(device=device, dtype=_dtype(model))).reshape(1, -1)
        data = self.data
        if data is None:
            data = {"name": "tensors", "root": str(self.run.data_path.resolve()),
                    "n_train": None, "n_test": None}
        config = run_config(
            model, self.test, n=len(self.y), data_info=data, extra_config=self.extra_config,
            schedule={"name": "external"}, loss=self.loss_name, batch_size=None, seed=None,
            weight_decay=None, snapshots_at=self.thresholds,
            margin_convention=self.convention, epochs=self.total_epochs, max_time=None,
            stop_at_log10_loss=None, device=device, tracker=self.tracker_config)
        resuming = self.run.prepare(config, resume=self.resume, overwrite=self.overwrite)
        if self.data is None and not self.run.data_path.exists():
            save_tensors(self.run.data_path,
                         split_from_tensors((self.X, self.y), self.test, out_dim.shape[1]))
        if resuming:
            self.run.confirm_resume()  # the new budget (total_epochs ...) into config.json
            self.history = self.run.metrics()
            if self.history:
                last = self.history[-1]
                self.last_epoch = int(last["epoch"])
                self._time_offset = (float(last.get("wall_time", 0.0)),
                                     float(last.get("cpu_time", 0.0)))
            storage.append_jsonl(self.run.events_path, {"event": "resume",
                                                        "epoch": self.last_epoch})
            self._resumed = True
        self._prepared = True
        self._bar = Progress(f"track {config['model'].get('name', 'model')}",
                             total=self.total_epochs, initial=self.last_epoch, unit="epoch",
                             elapsed=self._time_offset[0],
                             quiet=None if self.progress_flag is None else not self.progress_flag)

    def restore(self, model: nn.Module) -> int:
        """Load the weights of the last record of a resumed run into ``model``; returns that
        record's epoch (0 when there is none)."""
        if not self._prepared:
            self._prepare(model)
        if not self.run.checkpoint_path.exists():
            return 0
        checkpoint = self.run.load_checkpoint()
        models.load_state(model, checkpoint.group("model"), source=str(self.run.checkpoint_path))
        return int(checkpoint.state.get("epoch", 0))

    # --- recording -----------------------------------------------------------------------
    def record(self, model: nn.Module, epoch: int | None = None, **extra) -> dict | None:
        """Measure ``model`` after ``epoch`` (default: the next one) and record it.

        Args:
            model: the network being trained (measured as it is, without gradients, in eval
                mode; its mode is restored).
            epoch: the epoch number, increasing; epochs not divisible by ``every`` are skipped.
            **extra: more JSON numbers for the epoch's record, e.g. ``lr=0.1, steps=50``
                (``log10_lr`` and ``steps`` let ``analyze`` fit the convergence rates).

        Returns:
            The record written, or None when the epoch was skipped.

        Raises:
            NotHomogeneousError: the model is not homogeneous (convention ``homogeneous``).
            MarginlabError: an epoch not after the last one, or invalid extra values.
        """
        if self._closed:
            raise MarginlabError("the tracker is closed")
        if epoch is None:
            epoch = self.last_epoch + 1
        epoch = int(epoch)
        if epoch < 1:
            raise MarginlabError(f"epochs count from 1, got {epoch}")
        if epoch % self.every:
            return None
        # measure first: a model without margins is refused before anything is written
        stats = self._measure(model)
        if not self._prepared:
            self._prepare(model)
        if self._resumed:  # a resumed loop may restart before the last recorded epoch
            self.history = self.run.truncate_metrics(epoch - 1)
            self.snapshots_done = _snapshots_crossed(self.history, self.thresholds)
            self._resumed = False
        elif self.history and epoch <= self.last_epoch:
            raise MarginlabError(f"epoch {epoch} was already recorded (last: {self.last_epoch})")
        for k, v in extra.items():
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise MarginlabError(f"extra record value {k}={v!r} is not a number")
        if "lr" in extra and "log10_lr" not in extra and extra["lr"] > 0:
            extra["log10_lr"] = math.log10(extra["lr"])
        wall = time.perf_counter() - self._t0 + self._time_offset[0]
        cpu = time.process_time() - self._c0 + self._time_offset[1]
        record = {"epoch": epoch, **stats, **extra, "wall_time": wall, "cpu_time": cpu}
        before = self.snapshots_done
        self.snapshots_done = record_epoch(self.run, model, record, self.thresholds, before,
                                           self.trajectory_every)
        self.run.save_checkpoint({f"model.{k}": v for k, v in model.state_dict().items()}, {
            "epoch": epoch, "wall_time": wall, "cpu_time": cpu,
            "snapshots_done": self.snapshots_done})
        self.history.append(record)
        self.last_epoch = epoch
        self._model = model
        self._tensorboard(record)
        assert self._bar is not None
        self._bar.update(epoch - self._bar.n, log10_loss=record["log10_loss_mean"],
                         margin=record["normalized_margin_multi"])
        if self.snapshots_done > before:
            self._bar.note(f"snapshot model-{self.snapshots_done} at epoch {epoch}")
        return record

    def _measured_model(self, model: nn.Module) -> nn.Module:
        """The network to measure: ``model``, or its float64 shadow holding its weights now."""
        if self.precision == "model" or _dtype(model) == torch.float64:
            return model
        if self._shadow is None or self._shadow[0] is not model:
            import copy

            self._shadow = (model, copy.deepcopy(model).to(torch.float64))
        shadow = self._shadow[1]
        with torch.no_grad():
            for mine, theirs in zip(shadow.state_dict().values(), model.state_dict().values()):
                mine.copy_(theirs)
        return shadow

    def _measure(self, model: nn.Module) -> dict:
        was_training = model.training
        model.eval()
        try:
            measured = self._measured_model(model)
            measured.eval()
            stats = margins.measure(measured, self.X, self.y, self.loss,
                                    batch_size=self.eval_batch_size,
                                    convention=self.convention, check_inputs=False).as_dict()
            stats.update(evaluate_test(measured, self.test, self.loss, self.eval_batch_size))
        finally:
            model.train(was_training)
        return stats

    def _tensorboard(self, record: dict) -> None:
        if not self.tensorboard:
            return
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            log_dir = (self.run.path / TENSORBOARD_DIR if self.tensorboard is True
                       else Path(self.tensorboard))
            self._writer = SummaryWriter(log_dir=str(log_dir))
        for key, tag in TENSORBOARD_TAGS.items():
            value = record.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                self._writer.add_scalar(tag, value, global_step=record["epoch"])
        self._writer.flush()

    # --- the end ---------------------------------------------------------------------------
    def close(self, model: nn.Module | None = None, reason: str = "closed") -> Path | None:
        """Save the final snapshot (``model``, default the last one recorded, as it is now),
        draw ``plots/training.png`` and write ``report.html``; returns the report's path (None
        when nothing was recorded)."""
        if self._closed:
            return None
        self._closed = True
        if self._writer is not None:
            self._writer.close()
        if self._bar is not None:
            self._bar.close()
        if not self._prepared:
            return None
        if not self.history:
            self.run.unlock()
            return None
        model = model if model is not None else self._model
        if model is not None:
            finish_run(self.run, model, self.history, self.thresholds, reason, self.last_epoch)
        try:
            plots.plot_training({self.run.path.name: self.history},
                                self.run.plots_dir / "training.png",
                                title=f"{self.run.path.name}")
            return write_run_report(self.run.path)
        finally:
            self.run.unlock()

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(reason="closed" if exc_type is None else "error")


def _dtype(model: nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype


def _subset(X: Tensor, y: Tensor, subset) -> tuple[Tensor, Tensor]:
    if isinstance(subset, int):
        if subset <= 0:
            raise MarginlabError(f"subset must be a positive number of samples, got {subset}")
        labels = y.cpu()
        values = torch.unique(labels)
        classes = torch.searchsorted(values, labels).numpy()  # 0..C−1 whatever the labels
        idx = torch.from_numpy(balanced_first(classes, subset, len(values)))
    else:
        idx = torch.as_tensor(subset, dtype=torch.int64).reshape(-1)
        if idx.numel() == 0 or int(idx.min()) < 0 or int(idx.max()) >= len(y):
            raise MarginlabError(f"subset indices must lie in 0..{len(y) - 1}")
    return X[idx.to(X.device)], y[idx.to(y.device)]


def _describe_subset(subset) -> int | list[int] | None:
    if subset is None or isinstance(subset, int):
        return subset
    return torch.as_tensor(subset).reshape(-1).tolist()


def _snapshots_crossed(history: list[dict], thresholds: Sequence[float]) -> int:
    """How many of the (decreasing) thresholds the records' lowest loss went below."""
    if not history:
        return 0
    low = min(float(r["log10_loss_mean"]) for r in history)
    k = 0
    while k < len(thresholds) and low < math.log10(thresholds[k]):
        k += 1
    return k
