"""The run directory: resolved config, metrics, checkpoints and snapshots of one training run.

Layout::

    RUN_DIR/config.json              resolved config, versions, seed, device, git commit
    RUN_DIR/metrics.jsonl            one JSON object per accepted epoch
    RUN_DIR/events.jsonl             rolled-back epochs and other events
    RUN_DIR/checkpoints/last.safetensors   parameters + RNG state + trainer state (resume)
    RUN_DIR/snapshots/model-K.safetensors  loss-threshold snapshots and the final model
    RUN_DIR/trajectory/epoch-NNNNNN.safetensors   parameters every few epochs (optional)
    RUN_DIR/plots/*.png, RUN_DIR/report/*.html|md, RUN_DIR/report.html, RUN_DIR/report.md

Every file is written atomically (temporary file, fsync, rename); metrics lines are appended
whole and fsynced, and a resumed run first drops any line past its last checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from marginlab.errors import RunDirectoryError
from marginlab.io import storage
from marginlab.io.environment import environment
from marginlab.models import load_state

__all__ = ["IDENTITY_KEYS", "RunDir", "environment"]

# Config entries that define a run: a directory holding a run that differs in any of these is
# another run. The budget (epochs, time, stop target) may change on resume.
IDENTITY_KEYS = ("model", "data", "schedule", "loss", "batch_size", "seed", "dtype",
                 "weight_decay", "snapshots_at", "margin_convention")


class RunDir:
    """Reads and writes one run directory."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    # --- paths -------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def events_path(self) -> Path:
        return self.path / "events.jsonl"

    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoints" / "last.safetensors"

    def snapshot_path(self, k: int) -> Path:
        return self.path / "snapshots" / f"model-{k}.safetensors"

    def trajectory_path(self, epoch: int) -> Path:
        return self.path / "trajectory" / f"epoch-{epoch:06d}.safetensors"

    # --- lifecycle -----------------------------------------------------------------------
    def prepare(self, config: dict, *, resume: bool, overwrite: bool) -> bool:
        """Create the directory for ``config``; return True when resuming an existing run.

        Raises:
            RunDirectoryError: the directory holds a different run (without ``overwrite``), or
                holds this run and neither ``resume`` nor ``overwrite`` was given.
        """
        if self.path.exists() and not self.path.is_dir():
            raise RunDirectoryError(f"{self.path} exists and is not a directory")
        exists = self.path.exists() and any(self.path.iterdir())
        if exists and overwrite:
            if not self.config_path.exists():
                # Refuse to wipe a directory that marginlab did not write.
                raise RunDirectoryError(
                    f"{self.path} is not empty and holds no marginlab run; choose another "
                    "directory"
                )
            shutil.rmtree(self.path)
            exists = False
        if exists:
            if not self.config_path.exists():
                raise RunDirectoryError(
                    f"{self.path} is not empty and holds no marginlab run; choose another directory"
                )
            old = storage.read_json(self.config_path)
            diff = [k for k in IDENTITY_KEYS if old.get(k) != storage.to_jsonable(config.get(k))]
            if diff:
                raise RunDirectoryError(
                    f"{self.path} holds a different run (differs in {', '.join(diff)}); "
                    "use --overwrite to replace it or choose another directory"
                )
            if not resume:
                raise RunDirectoryError(
                    f"{self.path} already holds this run; use --resume to continue it or "
                    "--overwrite to start again"
                )
            merged = dict(old)
            merged.update({k: v for k, v in config.items() if k not in IDENTITY_KEYS})
            storage.write_json(self.config_path, merged)
            if not self.checkpoint_path.exists():
                # Interrupted before its first checkpoint: start afresh in place, dropping any
                # metrics written past it.
                self.metrics_path.unlink(missing_ok=True)
                return False
            return True
        self.path.mkdir(parents=True, exist_ok=True)
        storage.write_json(self.config_path, config)
        for f in (self.metrics_path, self.events_path):
            f.unlink(missing_ok=True)
        return False

    # --- checkpoints -----------------------------------------------------------------------
    def save_checkpoint(self, model: nn.Module, generator: torch.Generator, state: dict) -> None:
        tensors = {f"model.{k}": v.detach().cpu().contiguous()
                   for k, v in model.state_dict().items()}
        tensors["rng_state"] = generator.get_state()
        path = self.checkpoint_path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        save_file(tensors, str(tmp), metadata={"state": json.dumps(storage.to_jsonable(state))})
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def load_checkpoint(self, model: nn.Module, generator: torch.Generator) -> dict:
        path = self.checkpoint_path
        try:
            with safe_open(str(path), framework="pt") as fh:
                state = json.loads(fh.metadata()["state"])
                tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        except (SafetensorError, OSError, KeyError, ValueError) as exc:
            raise RunDirectoryError(f"checkpoint {path} is unreadable ({exc})") from None
        generator.set_state(tensors.pop("rng_state"))
        load_state(model, {k[len("model."):]: v for k, v in tensors.items()}, source=str(path))
        return state

    def truncate_metrics(self, last_epoch: int) -> list[dict]:
        """Keep the metrics of epochs ≤ ``last_epoch`` (written again atomically)."""
        records = [r for r in storage.read_jsonl(self.metrics_path) if r["epoch"] <= last_epoch]
        text = "".join(json.dumps(r) + "\n" for r in records)
        storage.atomic_write_text(self.metrics_path, text)
        return records

    # --- reading -----------------------------------------------------------------------
    def config(self) -> dict:
        if not self.config_path.exists():
            raise RunDirectoryError(
                f"{self.path} is not a marginlab run directory (no config.json)")
        return storage.read_json(self.config_path)

    def metrics(self) -> list[dict]:
        if not self.metrics_path.exists():
            raise RunDirectoryError(f"{self.path} has no metrics.jsonl")
        return storage.read_jsonl(self.metrics_path)
