"""The train/test split every loader returns, its consistency check, and balanced subsets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from marginlab.errors import MarginlabError

__all__ = ["TASKS", "DataSplit", "Task", "balanced_first", "validate_split"]

Task = Literal["multiclass", "binary", "regression"]
TASKS = ("multiclass", "binary", "regression")


@dataclass(frozen=True)
class DataSplit:
    """A train/test split.

    Attributes:
        X_train: (N, ...) float32 inputs; images are (N, C, H, W) in [0, 1], synthetic vectors
            (N, d).
        y_train: (N,) labels: int64 in 0..num_classes−1 (``multiclass``), int64 in {−1, +1}
            (``binary``, for a model with one output), or float32 targets (``regression``).
        X_test: (M, ...) float32 inputs, same trailing shape as ``X_train``.
        y_test: (M,) labels, as ``y_train``.
        name: data set name.
        num_classes: number of classes (2 for ``binary``, 1 for regression targets).
        task: ``multiclass``, ``binary`` or ``regression``; says how to read the labels.
    """

    X_train: Tensor
    y_train: Tensor
    X_test: Tensor
    y_test: Tensor
    name: str = ""
    num_classes: int = 10
    task: Task = "multiclass"

    @property
    def train(self) -> tuple[Tensor, Tensor]:
        return self.X_train, self.y_train

    @property
    def test(self) -> tuple[Tensor, Tensor]:
        return self.X_test, self.y_test

    @property
    def out_dim(self) -> int:
        """Number of model outputs the labels call for: num_classes, or 1 (binary, regression)."""
        return self.num_classes if self.task == "multiclass" else 1


def balanced_first(y: np.ndarray, n: int | None, num_classes: int, *,
                   what: str = "subset size", of: str = "the data set") -> np.ndarray:
    """Indices of the first ⌈n/C⌉ samples of each class (in file order), at most n in total.

    ``n=None`` keeps everything. An n larger than the data set, or than the classes can fill
    with ⌈n/C⌉ samples each, is an error naming what is available (never clamped silently).
    """
    if n is None:
        return np.arange(len(y))
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise MarginlabError(f"{what} must be an integer, got {n!r}")
    if n <= 0:
        raise MarginlabError(f"{what} must be positive, got {n}")
    if n > len(y):
        raise MarginlabError(f"{what}={n} exceeds the {len(y)} samples of {of}")
    if n == len(y):
        return np.arange(len(y))
    per = -(-n // num_classes)
    idx = np.concatenate([np.flatnonzero(y == c)[:per] for c in range(num_classes)])
    if len(idx) < n:
        raise MarginlabError(f"{what}={n} asks for {per} samples of each class of {of}, but "
                             f"some have fewer: {len(idx)} class-balanced samples at most")
    return np.sort(idx)[:n] if len(idx) > n else np.sort(idx)


def _check_part(X: Tensor, y: Tensor, part: str, split: DataSplit) -> None:
    where = f"{split.name or 'data set'} {part}"
    if not isinstance(X, Tensor) or not isinstance(y, Tensor):
        raise MarginlabError(f"{where}: inputs and labels must be torch tensors")
    if X.shape[0] == 0:
        raise MarginlabError(f"{where}: the data set is empty")
    if y.dim() != 1 or y.shape[0] != X.shape[0]:
        raise MarginlabError(f"{where}: {X.shape[0]} inputs but labels of shape {tuple(y.shape)}")
    if X.dtype != torch.float32:
        raise MarginlabError(f"{where}: inputs must be float32, got {X.dtype}")
    if not torch.isfinite(X).all():
        raise MarginlabError(f"{where}: inputs contain NaN or inf")
    if split.task == "regression":
        if not y.is_floating_point() or not torch.isfinite(y).all():
            raise MarginlabError(f"{where}: regression targets must be finite floats")
        return
    if y.dtype != torch.int64:
        raise MarginlabError(f"{where}: labels must be int64, got {y.dtype}")
    allowed = set(range(split.num_classes)) if split.task == "multiclass" else {-1, 1}
    bad = set(torch.unique(y).tolist()) - allowed
    if bad:
        expected = f"0..{split.num_classes - 1}" if split.task == "multiclass" else "{-1, +1}"
        raise MarginlabError(f"{where}: labels must be in {expected}, found {sorted(bad)[:5]}")


def validate_split(split: DataSplit) -> DataSplit:
    """Check a split is usable: non-empty parts, matching shapes, finite float32 inputs, labels
    that fit ``task`` and ``num_classes``. Returns the split; raises MarginlabError otherwise."""
    if split.task not in TASKS:
        raise MarginlabError(f"task must be one of {', '.join(TASKS)}, got {split.task!r}")
    if split.num_classes < 1 or (split.task == "binary" and split.num_classes != 2):
        raise MarginlabError(f"num_classes={split.num_classes} does not fit task {split.task!r}")
    _check_part(split.X_train, split.y_train, "train", split)
    _check_part(split.X_test, split.y_test, "test", split)
    if split.X_train.shape[1:] != split.X_test.shape[1:]:
        raise MarginlabError(f"{split.name}: train inputs {tuple(split.X_train.shape[1:])} and "
                             f"test inputs {tuple(split.X_test.shape[1:])} differ in shape")
    return split
