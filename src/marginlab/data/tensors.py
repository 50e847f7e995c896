"""A data set stored as tensors in one safetensors file, for runs on a user's own data.

A run directory written by :class:`marginlab.Tracker` holds the tracked training (and test)
set in ``RUN_DIR/data.safetensors`` and names it in ``config.json`` as
``{"name": "tensors", "root": "<that file>"}``, so ``marginlab analyze`` and ``attack`` rebuild
the data through :func:`marginlab.data.load` like any registered data set.

The file holds ``X_train``, ``y_train``, ``X_test``, ``y_test`` and the metadata ``task``,
``num_classes`` and ``name``; safetensors stores raw tensors and JSON, nothing executable.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor

from marginlab.data.split import DataSplit, Task, balanced_first
from marginlab.errors import MarginlabError

__all__ = ["FORMAT", "load_tensors", "save_tensors", "split_from_tensors"]

FORMAT = "marginlab-data/1"


def split_from_tensors(train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor] | None,
                       out_dim: int, name: str = "tensors") -> DataSplit:
    """A :class:`DataSplit` of user tensors for a model with ``out_dim`` outputs.

    Inputs become float32; labels of a one-output model in {−1, +1} or {0, 1} become int64
    ±1 (``binary``), class labels int64 (``multiclass`` with ``out_dim`` classes). Without a
    test set the training set stands in for it.
    """
    def labels(y: Tensor) -> Tensor:
        if out_dim == 1:
            values = set(torch.unique(y).tolist())
            if values <= {-1, 1}:
                return y.to(torch.int64)
            if values <= {0, 1}:
                return 2 * y.to(torch.int64) - 1
            raise MarginlabError("a model with one output needs labels in {-1, +1} or {0, 1}")
        return y.to(torch.int64)

    X, y = train
    Xt, yt = test if test is not None else (X.clone(), y.clone())  # one file, no shared storage
    task: Task = "binary" if out_dim == 1 else "multiclass"
    return DataSplit(X.detach().cpu().float().contiguous(), labels(y.detach().cpu()),
                     Xt.detach().cpu().float().contiguous(), labels(yt.detach().cpu()),
                     name, 2 if out_dim == 1 else out_dim, task)


def save_tensors(path: str | os.PathLike, split: DataSplit) -> Path:
    """Write ``split`` to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {"X_train": split.X_train, "y_train": split.y_train,
               "X_test": split.X_test, "y_test": split.y_test}
    meta = {"format": FORMAT, "name": split.name, "task": split.task,
            "num_classes": json.dumps(split.num_classes)}
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=meta)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def load_tensors(root: str | os.PathLike | None, n_train: int | None = None,
                 n_test: int | None = None) -> DataSplit:
    """Read a file written by :func:`save_tensors` (``root``: the file, or a directory holding
    ``data.safetensors``); ``n_train``/``n_test`` take class-balanced subsets."""
    if root is None:
        raise MarginlabError("data set 'tensors' is read from a file: give its path as root")
    path = Path(root).expanduser()
    if path.is_dir():
        path = path / "data.safetensors"
    if not path.is_file():
        raise MarginlabError(f"no data file at {path}")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        num_classes = int(json.loads(meta["num_classes"]))
        task = meta["task"]
        X, y, Xt, yt = (tensors[k] for k in ("X_train", "y_train", "X_test", "y_test"))
    except (SafetensorError, OSError, KeyError, ValueError) as exc:
        raise MarginlabError(f"{path} is not a marginlab data file ({exc})") from None
    if meta.get("format") != FORMAT:
        raise MarginlabError(f"{path} is not a marginlab data file (format "
                             f"{meta.get('format')!r})")

    def subset(Xp: Tensor, yp: Tensor, n: int | None) -> tuple[Tensor, Tensor]:
        if n is None:
            return Xp, yp
        classes = yp.numpy() if task == "multiclass" else (yp.numpy() + 1) // 2
        idx = torch.from_numpy(balanced_first(classes, n, num_classes))
        return Xp[idx], yp[idx]

    X, y = subset(X, y, n_train)
    Xt, yt = subset(Xt, yt, n_test)
    return DataSplit(X, y, Xt, yt, meta.get("name", "tensors"), num_classes, task)
