"""PyTorch Lightning: record margins of a LightningModule's network with a callback.

::

    from marginlab.integrations.lightning import MarginCallback

    callback = MarginCallback("runs/lit", X_train, y_train, test=(X_test, y_test),
                              module="net", snapshots_at=(-10, -15), trajectory_every=10)
    lightning.Trainer(max_epochs=E, callbacks=[callback]).fit(lit_module, loader)

At the end of every training epoch the callback hands the network to a
:class:`marginlab.Tracker`, which writes the run directory of ``marginlab train`` (metrics,
snapshots, trajectory, report), so ``marginlab plot``, ``analyze`` and ``attack`` read it. The
tracked network is ``module`` (an attribute path of the LightningModule, e.g. ``"net"``), or
the LightningModule itself. A fit resumed from a Lightning checkpoint continues the run
directory (``resume=True``). Only the global-zero process records. Needs the ``lightning``
extra: ``pip install 'marginlab[lightning]'``.
"""

from __future__ import annotations

import os

from torch import Tensor, nn

from marginlab.errors import MarginlabError
from marginlab.tracker import Tracker

try:
    import lightning.pytorch as pl
except ImportError as exc:  # the optional extra is missing
    raise MarginlabError(
        "marginlab.integrations.lightning needs Lightning: pip install 'marginlab[lightning]'"
    ) from exc

__all__ = ["MarginCallback"]


class MarginCallback(pl.Callback):
    """Margin tracking of a Lightning fit through :class:`marginlab.Tracker`.

    Args:
        run_dir: the run directory.
        X_train, y_train: the training set whose margins are tracked (or part of it, with
            ``subset=``).
        module: attribute path of the tracked network in the LightningModule (``"net"``,
            ``"model.backbone"``); None: the LightningModule itself.
        record_lr: add the first optimizer's learning rate and the epoch's optimizer steps to
            each record (``lr``, ``log10_lr``, ``steps``), which ``analyze`` uses for rates.
        **tracker: the other arguments of :class:`marginlab.Tracker` (``test``, ``every``,
            ``snapshots_at``, ``trajectory_every``, ``resume``, ``subset``, ``loss``,
            ``tensorboard``, ...); ``total_epochs`` defaults to the trainer's ``max_epochs``.
    """

    def __init__(self, run_dir: str | os.PathLike, X_train: Tensor, y_train: Tensor, *,
                 module: str | None = None, record_lr: bool = True, **tracker):
        super().__init__()
        self.run_dir, self.X, self.y = run_dir, X_train, y_train
        self.module, self.record_lr = module, record_lr
        self.options = tracker
        self.tracker = None
        self._steps_at_epoch_start = 0

    def network(self, pl_module: pl.LightningModule) -> nn.Module:
        """The tracked network of ``pl_module``."""
        net: object = pl_module
        for name in (self.module.split(".") if self.module else []):
            net = getattr(net, name, None)
            if not isinstance(net, nn.Module):
                raise MarginlabError(f"the LightningModule has no network at {self.module!r}")
        return net  # type: ignore[return-value]

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or self.tracker is not None:
            return
        options = dict(self.options)
        max_epochs = trainer.max_epochs if (trainer.max_epochs or -1) > 0 else None
        options.setdefault("total_epochs", max_epochs)
        self.tracker = Tracker(self.run_dir, self.X, self.y, **options)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._steps_at_epoch_start = trainer.global_step

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.tracker is None:
            return
        extra: dict = {}
        if self.record_lr and trainer.optimizers:
            extra["lr"] = float(trainer.optimizers[0].param_groups[0]["lr"])
            extra["steps"] = int(trainer.global_step - self._steps_at_epoch_start)
        self.tracker.record(self.network(pl_module), epoch=trainer.current_epoch + 1, **extra)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.tracker is not None:
            self.tracker.close(self.network(pl_module))
            self.tracker = None

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     exception: BaseException) -> None:
        if self.tracker is not None:
            self.tracker.close(self.network(pl_module), reason="error")
            self.tracker = None
