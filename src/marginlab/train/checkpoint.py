"""The training checkpoint file: one safetensors file, written atomically, verified on read.

Its tensors are named by group (``model.*``, ``step.*``, ``train.log_losses``, ``rng_state``);
its metadata holds the format, the trainer's state as JSON, the identity of the run's config
and a SHA-256 over every tensor and the metadata. :class:`~marginlab.train.rundir.RunDir` says
where the file lives and checks that its identity is the run's.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from marginlab.errors import RunDirectoryError
from marginlab.io import storage

__all__ = ["CHECKPOINT_FORMAT", "Checkpoint", "read", "write"]

CHECKPOINT_FORMAT = "marginlab-checkpoint/2"


@dataclass
class Checkpoint:
    """A loaded checkpoint: its tensors by name, the trainer's state and the run's identity."""

    tensors: dict[str, torch.Tensor]
    state: dict
    identity: str | None = None

    def group(self, prefix: str) -> dict[str, torch.Tensor]:
        """The tensors named ``prefix.*``, without the prefix."""
        return {k[len(prefix) + 1:]: v for k, v in self.tensors.items()
                if k.startswith(prefix + ".")}


def digest(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, and the metadata."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    for key in sorted(metadata):
        h.update(f"{key}\0{metadata[key]}\0".encode())
    return h.hexdigest()


def write(path: Path, tensors: dict[str, torch.Tensor], state: dict, identity: str) -> None:
    """Write a checkpoint: a temporary file beside ``path``, fsynced, renamed onto it.

    Args:
        path: the checkpoint file. tensors: every tensor to keep, by name.
        state: the trainer's state (JSON-able). identity: the run's config identity.
    """
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    metadata = {"format": CHECKPOINT_FORMAT,
                "state": json.dumps(storage.to_jsonable(state)),
                "identity": identity}
    metadata["sha256"] = digest(tensors, metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read(path: Path) -> Checkpoint:
    """A checkpoint, verified: readable, of this format, with a matching checksum and a valid
    trainer state.

    Raises:
        RunDirectoryError: any of these fails (one line naming it).
    """
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = dict(fh.metadata() or {})
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RunDirectoryError(f"checkpoint {path} is unreadable ({first})") from None
    if metadata.get("format") != CHECKPOINT_FORMAT:
        raise RunDirectoryError(f"checkpoint {path} is not a {CHECKPOINT_FORMAT} checkpoint "
                                f"(format {metadata.get('format')!r})")
    stored = metadata.pop("sha256", None)
    if stored != digest(tensors, metadata):
        raise RunDirectoryError(f"checkpoint {path} is corrupt: its SHA-256 does not match "
                                "its contents")
    try:
        state = json.loads(metadata["state"])
        epoch = state["epoch"]
    except (KeyError, TypeError, ValueError):
        raise RunDirectoryError(f"checkpoint {path} has no valid trainer state") from None
    if not isinstance(state, dict) or isinstance(epoch, bool) or not isinstance(epoch, int) \
            or epoch < 0:
        raise RunDirectoryError(f"checkpoint {path} has an invalid epoch {epoch!r}")
    return Checkpoint(tensors, state, metadata.get("identity"))
