"""Which data files an experiment reads, checked before it creates anything.

An experiment's settings name its data sets under ``data`` or keys ending in ``_data`` (several
joined by ``+``). Those read from files (``mnist``, ``cifar10``, ``cifar100``) need ``--root``;
:func:`check_data` loads one image of each from it, so a missing or malformed file is one
:class:`~marginlab.errors.MarginlabError` before any output directory or worker exists.
:func:`not_paper_data` tells whether the files hold the whole data set the paper used: a claim
measured on a few test-written images is no evidence about the paper.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from marginlab import data
from marginlab.errors import MarginlabError

__all__ = ["FILE_DATA", "check_data", "file_data", "needs_root", "not_paper_data"]

# data sets read from files under --root -> (train images, test images) of the real data set
FILE_DATA = {"mnist": (60000, 10000), "cifar10": (50000, 10000), "cifar100": (50000, 10000)}


def _names(settings: Mapping) -> list[str]:
    names: list[str] = []
    for key, value in settings.items():
        if key == "data" or key.endswith("_data"):
            values = value if isinstance(value, (list, tuple)) else [value]
            for v in values:
                if isinstance(v, str):
                    names += [n for n in v.split("+") if n]
    return names


def file_data(settings: Mapping) -> list[str]:
    """The data sets of ``settings`` that are read from files, in order, without repeats."""
    return list(dict.fromkeys(n for n in _names(settings) if n in FILE_DATA))


def needs_root(settings: Mapping) -> bool:
    """Whether a run with these settings reads data files (and so needs ``--root``)."""
    return bool(file_data(settings))


def check_data(experiment: str, scale: str, settings: Mapping, root: Path | None) -> None:
    """Raise a one-line MarginlabError unless every data file the settings need is readable."""
    for name in file_data(settings):
        if root is None:
            raise MarginlabError(f"{experiment} at scale {scale} reads {name} from files: pass "
                                 "--root DIR (the directory holding them)")
        try:
            data.load(name, root, n_train=1, n_test=1)
        except MarginlabError as exc:
            raise MarginlabError(f"{experiment} at scale {scale}: {exc}") from None


def not_paper_data(settings: Mapping, root: Path | None) -> str | None:
    """Why the data files are not the paper's whole data set (None when they are, or when the
    settings read no files): fewer images than the real set means test or partial files."""

    for name in file_data(settings):
        split = data.load(name, root)
        n, nt = len(split.y_train), len(split.y_test)
        if (n, nt) != FILE_DATA[name]:
            return (f"the {name} files under --root hold {n} training and {nt} test images, not "
                    f"the real set's {FILE_DATA[name][0]} and {FILE_DATA[name][1]}: a check of "
                    "the pipeline, not evidence about the paper")
    return None
