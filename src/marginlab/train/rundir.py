"""The run directory: resolved config, metrics, checkpoint and snapshots of one training run.

Layout (this module is the only place that names these files)::

    RUN_DIR/config.json              resolved config, versions, seed, device, git commit
    RUN_DIR/metrics.jsonl            one JSON object per accepted epoch
    RUN_DIR/events.jsonl             rolled-back epochs, resumes, stops
    RUN_DIR/.lock                    held (flock) by the one process writing the run
    RUN_DIR/checkpoints/last.safetensors   everything needed to continue (see below)
    RUN_DIR/snapshots/model-K.safetensors  loss-threshold snapshots and the final model
    RUN_DIR/trajectory/epoch-NNNNNN.safetensors   parameters every few epochs (optional)
    RUN_DIR/data.safetensors         the data of a run on tensors of no registered data set
    RUN_DIR/plots/*.png, RUN_DIR/report.html, RUN_DIR/report.md
    RUN_DIR/report/*.html, *.md      sections other analyses add to the run's page
    RUN_DIR/analysis.json, RUN_DIR/robustness.json   ``marginlab analyze`` / ``attack`` results

The checkpoint is one safetensors file written atomically (temporary file, fsync, rename): the
model (``model.*``), the step rule's state (``step.*``, e.g. the heavy ball's velocity), the
per-sample log-losses of the last kept epoch, the shuffling generator's state, and in its
metadata the epoch, the schedule's state, the identity of the run's config and a SHA-256 of all
of it, verified on load. A fresh run writes one at epoch 0 before any metrics, so metrics
without a checkpoint mean files were lost, and resuming refuses.

Writes of one epoch, in order: the metrics line (appended whole and fsynced), snapshots,
trajectory, checkpoint. A resumed run checks that config, checkpoint and metrics agree and then
drops the metrics lines past the checkpoint's epoch (they are recomputed, bit for bit); anything
else that does not fit is refused with one line naming it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import time
from pathlib import Path

import torch

from marginlab.errors import MarginlabError, RunDirectoryError
from marginlab.io import storage
from marginlab.io.environment import environment
from marginlab.train import checkpoint
from marginlab.train.checkpoint import CHECKPOINT_FORMAT, Checkpoint

__all__ = ["CHECKPOINT_FORMAT", "IDENTITY_KEYS", "Checkpoint", "RunDir", "environment"]

# Config entries that define a run: a directory holding a run that differs in any of these is
# another run. The others (budgets: epochs, max_time, max_cpu_time, stop_at_log10_loss; and
# checkpoint_every, trajectory_every, max_retries, device) may change on resume.
IDENTITY_KEYS = ("model", "data", "schedule", "loss", "batch_size", "seed", "dtype",
                 "weight_decay", "snapshots_at", "margin_convention", "eval_batch_size")
LOCK_NAME = ".lock"
_TRAJECTORY_FILE = re.compile(r"^epoch-(\d+)\.safetensors$")
TAIL_BYTES = 65536  # read by last_metrics: many times the longest metrics line


def identity(config: dict) -> str:
    """SHA-256 of the config entries that define the run (:data:`IDENTITY_KEYS`)."""
    ident = {k: storage.to_jsonable(config.get(k)) for k in IDENTITY_KEYS}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


class RunDir:
    """Reads and writes one run directory; while it trains, holds the directory's lock."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock_fd: int | None = None
        self._resume_config: dict | None = None

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
    def lock_path(self) -> Path:
        return self.path / LOCK_NAME

    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoints" / "last.safetensors"

    @property
    def snapshots_dir(self) -> Path:
        return self.path / "snapshots"

    @property
    def trajectory_dir(self) -> Path:
        return self.path / "trajectory"

    @property
    def plots_dir(self) -> Path:
        return self.path / "plots"

    @property
    def fragments_dir(self) -> Path:
        """Sections (``NAME.html`` with ``NAME.md``) that analyses add to the run's page."""
        return self.path / "report"

    @property
    def data_path(self) -> Path:
        return self.path / "data.safetensors"

    @property
    def analysis_path(self) -> Path:
        return self.path / "analysis.json"

    @property
    def robustness_path(self) -> Path:
        return self.path / "robustness.json"

    def snapshot_path(self, k: int) -> Path:
        return self.snapshots_dir / f"model-{k}.safetensors"

    def snapshot_paths(self) -> list[Path]:
        """model-1, model-2, ... in numeric order."""
        paths = self.snapshots_dir.glob("model-*.safetensors")
        return sorted(paths, key=lambda p: int(p.stem.split("-")[1])
                      if p.stem.split("-")[1].isdigit() else 10**9)

    def trajectory_path(self, epoch: int) -> Path:
        return self.trajectory_dir / f"epoch-{epoch:06d}.safetensors"

    def trajectory_paths(self) -> dict[int, Path]:
        """epoch -> path of every trajectory file, sorted by epoch."""
        found = {}
        if self.trajectory_dir.is_dir():
            for path in self.trajectory_dir.iterdir():
                m = _TRAJECTORY_FILE.match(path.name)
                if m:
                    found[int(m.group(1))] = path
        return dict(sorted(found.items()))

    # --- the lock ------------------------------------------------------------------------
    def lock(self, *, sign: bool = True) -> None:
        """Take the directory's exclusive lock (created with the directory if need be).

        Args:
            sign: write this process's id into the lock file (see :meth:`sign_lock`).

        Raises:
            RunDirectoryError: another process holds it, or the directory cannot be made.
        """
        if self._lock_fd is not None:
            return
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise RunDirectoryError(f"cannot create the run directory {self.path}: "
                                    f"{exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "unknown"
            os.close(fd)
            raise RunDirectoryError(f"{self.path} is in use by another process ({holder}); wait "
                                    "for it to finish or choose another directory") from None
        self._lock_fd = fd
        if sign:
            self.sign_lock()

    def sign_lock(self) -> None:
        """Write who holds the lock into the lock file, for the message another process gets."""
        fd = self._lock_fd
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since "
                      f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')}".encode(), 0)

    def confirm_resume(self) -> None:
        """Record the resumed run's new budgets in config.json (after verification)."""
        if self._resume_config is not None:
            storage.write_json(self.config_path, self._resume_config)
            self._resume_config = None

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    # --- lifecycle -----------------------------------------------------------------------
    def _foreign(self) -> bool:
        """The directory holds files but no marginlab run."""
        entries = [p for p in self.path.iterdir() if p.name != LOCK_NAME]
        return bool(entries) and not self.config_path.exists()

    def _clear(self) -> None:
        for entry in self.path.iterdir():
            if entry.name == LOCK_NAME:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    def prepare(self, config: dict, *, resume: bool, overwrite: bool) -> bool:
        """Lock the directory and set it up for ``config``; return True when resuming a run
        from its checkpoint. The lock is held until :meth:`unlock`.

        Raises:
            RunDirectoryError: the directory holds a different run (without ``overwrite``), holds
                this run and neither ``resume`` nor ``overwrite`` was given, holds files that are
                no marginlab run, is in use, or holds metrics but no checkpoint.
        """
        if self.path.exists() and not self.path.is_dir():
            raise RunDirectoryError(f"{self.path} exists and is not a directory")
        if self.path.exists() and self._foreign():
            # Refuse to touch, let alone wipe, a directory that marginlab did not write.
            raise RunDirectoryError(
                f"{self.path} is not empty and holds no marginlab run; choose another directory")
        had_lock_file = self.lock_path.exists()
        self.lock(sign=False)  # a refused run leaves the directory as it was
        try:
            resumed = self._prepare_locked(config, resume=resume, overwrite=overwrite)
        except BaseException:
            if not had_lock_file:  # removed while still held, so no other process locks it
                self.lock_path.unlink(missing_ok=True)
            self.unlock()
            raise
        self.sign_lock()
        return resumed

    def _prepare_locked(self, config: dict, *, resume: bool, overwrite: bool) -> bool:
        if self._foreign():  # written by someone else since the check above
            raise RunDirectoryError(
                f"{self.path} is not empty and holds no marginlab run; choose another directory")
        if self.config_path.exists():
            old = self.config()
            diff = [k for k in IDENTITY_KEYS if old.get(k) != storage.to_jsonable(config.get(k))]
            if overwrite:
                self._clear()
            elif diff:
                raise RunDirectoryError(
                    f"{self.path} holds a different run (differs in {', '.join(diff)}); "
                    "use --overwrite to replace it or choose another directory")
            elif not resume:
                raise RunDirectoryError(
                    f"{self.path} already holds this run; use --resume to continue it or "
                    "--overwrite to start again")
            elif self.checkpoint_path.exists():
                # written by confirm_resume, once checkpoint and metrics are verified
                self._resume_config = {**old, **{k: v for k, v in config.items()
                                                 if k not in IDENTITY_KEYS}}
                return True
            elif self.metrics_path.exists() and self.metrics_path.stat().st_size > 0:
                raise RunDirectoryError(
                    f"{self.path} holds metrics but no checkpoint ({self.checkpoint_path.name} "
                    "is missing); refusing to resume: restore it, or use --overwrite to start "
                    "again")
            # else: stopped before its first checkpoint, so nothing was recorded: start afresh.
        storage.write_json(self.config_path, config)
        for f in (self.metrics_path, self.events_path):
            f.unlink(missing_ok=True)
        return False

    # --- checkpoints -----------------------------------------------------------------------
    def save_checkpoint(self, tensors: dict[str, torch.Tensor], state: dict) -> None:
        """Write the checkpoint atomically, with its config identity and checksum."""
        checkpoint.write(self.checkpoint_path, tensors, state, identity(self.config()))

    def load_checkpoint(self) -> Checkpoint:
        """The checkpoint, verified: readable, of this format, with a matching checksum, and of
        the run that config.json describes.

        Raises:
            RunDirectoryError: any of these fails (one line naming it).
        """
        ck = checkpoint.read(self.checkpoint_path)
        if ck.identity != identity(self.config()):
            raise RunDirectoryError(f"checkpoint {self.checkpoint_path} belongs to another run "
                                    f"than {self.config_path.name} describes")
        return ck

    # --- metrics ---------------------------------------------------------------------------
    def _metrics_lines(self, checkpoint_epoch: int) -> tuple[list[str], bool]:
        """The complete lines of metrics.jsonl, and whether an incomplete last line (a write
        cut off by a crash or a full disk) followed them. Such a line is dropped when at least
        ``checkpoint_epoch`` complete lines precede it: it belongs to an epoch past the
        checkpoint, which a resumed run computes again. Otherwise it is refused."""
        if not self.metrics_path.exists():
            return [], False
        raw = self.metrics_path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RunDirectoryError(f"{self.metrics_path} is not UTF-8 text (byte "
                                    f"{exc.start})") from None
        lines = text.split("\n")
        cut = lines.pop()
        if cut and len(lines) < checkpoint_epoch:
            raise RunDirectoryError(
                f"{self.metrics_path} ends in an incomplete line ({len(cut)} bytes after "
                f"epoch line {len(lines)}) before the checkpoint's epoch {checkpoint_epoch}; "
                "refusing to resume")
        return lines, bool(cut)

    def metrics_until(self, epoch: int, expect: dict | None = None) -> list[dict]:
        """Verify that metrics.jsonl holds epochs 1..``epoch`` (at least) and that the record of
        ``epoch`` has the values ``expect`` (the checkpoint's); then drop the lines past
        ``epoch``, an incomplete last one included (they are recomputed on resume, bit for
        bit). Returns the records 1..``epoch``.

        Raises:
            RunDirectoryError: a line is not a JSON record, the epochs are not 1, 2, ..., the
                file ends before ``epoch``, or the record of ``epoch`` disagrees.
        """
        lines, cut = self._metrics_lines(epoch)
        records = []
        for i, line in enumerate(lines, start=1):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                raise RunDirectoryError(f"{self.metrics_path}: line {i} is not valid JSON") \
                    from None
            if not isinstance(rec, dict) or rec.get("epoch") != i:
                raise RunDirectoryError(f"{self.metrics_path}: line {i} is not the record of "
                                        f"epoch {i}")
            records.append(rec)
        if len(records) < epoch:
            raise RunDirectoryError(f"{self.metrics_path} ends at epoch {len(records)} but the "
                                    f"checkpoint is at epoch {epoch}; refusing to resume")
        for key, value in (expect or {}).items() if epoch else ():
            if storage.to_jsonable(value) != records[epoch - 1].get(key):
                raise RunDirectoryError(f"{self.metrics_path}: epoch {epoch} does not match the "
                                        f"checkpoint ({key} differs); refusing to resume")
        if len(records) > epoch or cut:
            storage.atomic_write_text(self.metrics_path,
                                      "".join(s + "\n" for s in lines[:epoch]))
        return records[:epoch]

    def truncate_metrics(self, last_epoch: int) -> list[dict]:
        """Keep the metrics of epochs ≤ ``last_epoch`` (written again atomically); for runs
        that record some epochs only (:class:`marginlab.Tracker`)."""
        records = [r for r in storage.read_jsonl(self.metrics_path) if r["epoch"] <= last_epoch]
        storage.atomic_write_text(self.metrics_path,
                                  "".join(json.dumps(r) + "\n" for r in records))
        return records

    # --- reading -----------------------------------------------------------------------
    def config(self) -> dict:
        if not self.config_path.exists():
            raise RunDirectoryError(
                f"{self.path} is not a marginlab run directory (no config.json)")
        if not self.config_path.is_file():
            raise RunDirectoryError(f"{self.config_path} is not a file")
        try:
            config = storage.read_json(self.config_path)
        except OSError as exc:
            raise RunDirectoryError(f"cannot read {self.config_path}: {exc.strerror}") from None
        except MarginlabError as exc:  # not JSON: say it as a run-directory error
            raise RunDirectoryError(str(exc)) from None
        if not isinstance(config, dict):
            raise RunDirectoryError(f"{self.config_path} does not hold a JSON object")
        return config

    def metrics(self) -> list[dict]:
        if not self.metrics_path.exists():
            raise RunDirectoryError(f"{self.path} has no metrics.jsonl")
        return storage.read_jsonl(self.metrics_path)

    def last_metrics(self) -> dict | None:
        """The last complete record of metrics.jsonl, read from the end of the file (cheap
        while another process appends to it); None before the first epoch or when unreadable."""
        try:
            with open(self.metrics_path, "rb") as fh:
                size = fh.seek(0, os.SEEK_END)
                fh.seek(max(0, size - TAIL_BYTES))
                lines = fh.read().split(b"\n")[:-1]  # a line still being written has no \n
            record = json.loads(lines[-1]) if lines else None
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def append_metrics(self, record: dict) -> None:
        storage.append_jsonl(self.metrics_path, record)

    def append_event(self, event: dict) -> None:
        storage.append_jsonl(self.events_path, event)

    @contextlib.contextmanager
    def locked(self):
        """Hold the lock for the duration of a block (for readers that must not race a
        writer)."""
        self.lock()
        try:
            yield self
        finally:
            self.unlock()
