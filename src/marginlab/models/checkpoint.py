"""Pickle-free checkpoints of models: safetensors files whose metadata names the zoo model.

The metadata holds the zoo constructor's name and arguments (``marginlab_spec``), so
:func:`load` rebuilds the model through the registry without unpickling anything.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from marginlab.errors import MarginlabError
from marginlab.models.registry import build

__all__ = ["load", "load_state", "metadata", "save"]


def save(model: nn.Module, path: str | os.PathLike, *, extra: dict | None = None) -> Path:
    """Write the model's parameters and buffers to a safetensors file, atomically.

    The metadata records the zoo constructor and its arguments (when the model came from the
    zoo), so :func:`load` can rebuild it; ``extra`` adds JSON-serializable metadata.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": "marginlab-model/1"}
    spec = getattr(model, "marginlab_spec", None)
    if spec is not None:
        meta["spec"] = json.dumps(spec)
    if extra:
        meta["extra"] = json.dumps(extra)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not path.is_file():
        raise MarginlabError(f"no checkpoint at {path}")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise MarginlabError(f"{path} is not a readable safetensors checkpoint ({exc})") from None
    return tensors, meta


def load(path: str | os.PathLike, model: nn.Module | None = None) -> nn.Module:
    """Rebuild a model saved by :func:`save`.

    Args:
        path: the safetensors file.
        model: for models outside the zoo, a module of the right architecture to load the
            weights into; for zoo checkpoints it may be omitted.

    Raises:
        MarginlabError: missing or corrupt file, or weights that do not fit the model.
    """
    path = Path(path)
    tensors, meta = _read(path)
    fmt = meta.get("format")
    if fmt is not None and not fmt.startswith("marginlab-model/"):
        raise MarginlabError(f"{path}: metadata format {fmt[:40]!r} is not a marginlab model")
    if model is None:
        if "spec" not in meta:
            raise MarginlabError(
                f"{path} holds weights of a model outside the zoo; pass the module to load into"
            )
        spec = _json_metadata(meta, "spec", path)
        if not (isinstance(spec, dict) and isinstance(spec.get("name"), str)
                and isinstance(spec.get("kwargs"), dict)):
            raise MarginlabError(f"{path}: the model spec in its metadata is malformed")
        try:
            model = build(spec["name"], **spec["kwargs"])
        except MarginlabError as exc:
            raise MarginlabError(f"{path}: the model spec in its metadata is invalid: {exc}"
                                 ) from None
        dtypes = {v.dtype for v in tensors.values() if v.is_floating_point()}
        if len(dtypes) == 1:  # rebuild in the dtype it was saved in (e.g. float64)
            model.to(dtypes.pop())
    load_state(model, tensors, source=str(path))
    return model


def load_state(model: nn.Module, tensors: dict[str, torch.Tensor], *, source: str = "") -> None:
    """Copy ``tensors`` into ``model`` in place, with a one-line error on any mismatch."""
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    if missing or unexpected:
        raise MarginlabError(
            f"checkpoint {source} does not fit the model (missing: {missing[:3]}, "
            f"unexpected: {unexpected[:3]})"
        )
    for k, v in tensors.items():
        if own[k].shape != v.shape:
            raise MarginlabError(
                f"checkpoint {source}: {k} has shape {tuple(v.shape)}, model expects "
                f"{tuple(own[k].shape)}"
            )
        if own[k].is_floating_point() and not v.is_floating_point():
            raise MarginlabError(f"checkpoint {source}: {k} holds {v.dtype} values, model "
                                 f"expects floating point")
    model.load_state_dict(tensors)


def metadata(path: str | os.PathLike) -> dict:
    """The JSON metadata of a checkpoint: ``spec`` and ``extra`` decoded."""
    _, meta = _read(Path(path))
    out: dict = {}
    for key in ("spec", "extra"):
        if key in meta:
            out[key] = _json_metadata(meta, key, Path(path))
    return out


def _json_metadata(meta: dict[str, str], key: str, path: Path):
    try:
        return json.loads(meta[key])
    except (json.JSONDecodeError, RecursionError):
        raise MarginlabError(f"{path}: metadata field {key!r} is not valid JSON") from None
