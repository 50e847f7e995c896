"""Data sets as tensors: bundled MNIST subset and digits, full MNIST/CIFAR-10/CIFAR-100 from files,
and the synthetic data of Wei et al. (DESIGN.md §6).

Image inputs are float32 in [0, 1], shaped N × C × H × W; labels are int64. Nothing is
downloaded: the full data sets are read from a directory the user names. :func:`load` returns a
validated :class:`DataSplit` for any registered name.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

import numpy as np

from marginlab import validate
from marginlab.data import bundled, files
from marginlab.data.files import SafeUnpickler, read_cifar_batch, read_idx
from marginlab.data.split import DataSplit, Task, balanced_first, validate_split
from marginlab.data.synthetic import (
    InputDistribution,
    TeacherNetwork,
    ground_truth_network,
    one_dimensional,
    teacher_classification,
    teacher_regression,
    theorem43,
)
from marginlab.data.tensors import load_tensors
from marginlab.errors import MarginlabError

__all__ = [
    "DATASETS",
    "DataSplit",
    "SafeUnpickler",
    "Task",
    "TeacherNetwork",
    "balanced_first",
    "ground_truth_network",
    "load",
    "one_dimensional",
    "options",
    "read_cifar_batch",
    "read_idx",
    "teacher_classification",
    "teacher_regression",
    "theorem43",
    "validate_split",
]

Root = str | Path | None


def _sizes(name: str, n_train: int | None, n_test: int | None) -> tuple[int, int]:
    """Synthetic sets have no natural size: n_train is required, n_test defaults to n_train."""
    if n_train is None:
        raise MarginlabError(f"synthetic data set {name!r} needs n_train")
    return n_train, n_train if n_test is None else n_test


def _test_seed(seed: int) -> int:
    """The seed of a synthetic test set: derived from the training seed, never equal to it."""
    return int(np.random.SeedSequence([int(seed), 1]).generate_state(1)[0])


def _mnist5k(root: Root, n_train: int | None, n_test: int | None) -> DataSplit:
    return bundled.mnist5k(n_train, n_test)


def _digits(root: Root, n_train: int | None, n_test: int | None) -> DataSplit:
    return bundled.digits(n_train, n_test)


def _thm43(root: Root, n_train: int | None, n_test: int | None, *, d: int = 20,
           seed: int = 0) -> DataSplit:
    """Theorem 4.3 distribution: train = theorem43(n_train, d, seed), test from a derived seed."""
    n_train, n_test = _sizes("thm43", n_train, n_test)
    X, y = theorem43(n_train, d, seed=seed)
    Xt, yt = theorem43(n_test, d, seed=_test_seed(seed))
    return DataSplit(X, y, Xt, yt, "thm43", 2, "binary")


def _teacher_classification(root: Root, n_train: int | None, n_test: int | None, *,
                            d: int = 20, hidden: int = 6, min_margin: float = 0.1,
                            seed: int = 0, teacher_seed: int | None = None,
                            inputs: InputDistribution = "sphere") -> DataSplit:
    """Appendix F.1 classification: teacher ground_truth_network(d, hidden, teacher_seed or seed),
    train = teacher_classification(n_train, …, seed), test from a derived seed."""
    n_train, n_test = _sizes("teacher_classification", n_train, n_test)
    net = ground_truth_network(d, hidden, seed=seed if teacher_seed is None else teacher_seed)
    X, y = teacher_classification(n_train, net, min_margin, seed=seed, inputs=inputs)
    Xt, yt = teacher_classification(n_test, net, min_margin, seed=_test_seed(seed), inputs=inputs)
    return DataSplit(X, y, Xt, yt, "teacher_classification", 2, "binary")


def _teacher_regression(root: Root, n_train: int | None, n_test: int | None, *, d: int = 20,
                        hidden: int = 6, seed: int = 0, teacher_seed: int | None = None,
                        inputs: InputDistribution = "sphere", noise: float = 0.0) -> DataSplit:
    """Appendix F.1 regression: as ``teacher_classification`` with real targets f(x) + noise."""
    n_train, n_test = _sizes("teacher_regression", n_train, n_test)
    net = ground_truth_network(d, hidden, seed=seed if teacher_seed is None else teacher_seed)
    X, y = teacher_regression(n_train, net, seed=seed, inputs=inputs, noise=noise)
    Xt, yt = teacher_regression(n_test, net, seed=_test_seed(seed), inputs=inputs, noise=noise)
    return DataSplit(X, y, Xt, yt, "teacher_regression", 1, "regression")


# name → loader(root, n_train, n_test, **options); a loader's keyword-only parameters are the
# options load() accepts for it.
DATASETS: dict[str, Callable[..., DataSplit]] = {
    "mnist5k": _mnist5k,
    "digits": _digits,
    "mnist": files.mnist,
    "cifar10": files.cifar10,
    "cifar100": files.cifar100,
    "thm43": _thm43,
    "teacher_classification": _teacher_classification,
    "teacher_regression": _teacher_regression,
    "tensors": load_tensors,
}


def options(name: str) -> dict[str, object]:
    """The extra keyword options ``load(name, …)`` accepts, with their defaults."""
    if name not in DATASETS:
        raise MarginlabError(f"unknown data set {name!r}; expected one of {', '.join(DATASETS)}")
    params = inspect.signature(DATASETS[name]).parameters.values()
    return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


def load(name: str, root: str | Path | None = None, *, n_train: int | None = None,
         n_test: int | None = None, flatten: bool = False, **kwargs: object) -> DataSplit:
    """Load a data set by name.

    Args:
        name: ``mnist5k``, ``digits`` (bundled), ``mnist``, ``cifar10``, ``cifar100`` (read from
            ``root``), the synthetic ``thm43``, ``teacher_classification``,
            ``teacher_regression``, or ``tensors`` (a file of a run on its own data, see
            :mod:`marginlab.data.tensors`).
        root: directory with the standard files (``mnist``, ``cifar10``, ``cifar100``); ignored
            otherwise.
        n_train: training set size: a class-balanced subset (first images of each class) for
            the real data sets; the number of samples drawn (required) for synthetic ones.
        n_test: the same for the test set (synthetic: defaults to n_train).
        flatten: return inputs as (N, D) instead of images.
        **kwargs: options of the data set (see :func:`options`), e.g.
            ``load("thm43", n_train=100, d=50, seed=3)`` or
            ``load("cifar100", root, labels="coarse")``.

    Returns:
        A DataSplit that passed :func:`validate_split`.
    """
    allowed = options(name)
    n_train = validate.optional_integer(n_train, "n_train", minimum=1)
    n_test = validate.optional_integer(n_test, "n_test", minimum=1)
    if root is not None and not isinstance(root, (str, Path)):
        raise MarginlabError(f"root must be a directory path, got {root!r}")
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        accepts = f"; it accepts {', '.join(allowed)}" if allowed else ""
        raise MarginlabError(f"data set {name!r} has no option {', '.join(unknown)}{accepts}")
    split = DATASETS[name](root, n_train, n_test, **kwargs)
    if flatten:
        split = DataSplit(split.X_train.reshape(len(split.X_train), -1), split.y_train,
                          split.X_test.reshape(len(split.X_test), -1), split.y_test,
                          split.name, split.num_classes, split.task)
    return validate_split(split)
