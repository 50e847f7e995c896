"""Registry of the papers' experiments: one entry per figure or table, with its scales.

Each module in this package registers its experiments with :func:`register`; the ``reproduce``
command and the sweep runner look them up with :func:`get`. An experiment has a ``paper`` scale
(the paper's settings, for GPU users with the full data) and a ``cpu`` scale (the same procedure
at a size that finishes in minutes on 2 CPU cores).
"""

from __future__ import annotations

import importlib
import math
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from marginlab.errors import MarginlabError
from marginlab.experiments import datacheck
from marginlab.sweep.spec import SweepSpec, TrialSource

__all__ = ["Experiment", "RunRequest", "all_experiments", "get", "register", "sweep_spec",
           "trial_source"]

SCALES = ("cpu", "paper")


@dataclass(frozen=True)
class RunRequest:
    """What the user asked of one experiment run.

    Attributes:
        scale: ``cpu`` or ``paper``.
        out: output directory (runs, plots, report).
        device: torch device string, e.g. ``cpu`` or ``cuda``.
        root: directory holding the full data sets (``paper`` scale), if any.
        seed: base seed.
        overwrite: replace an existing output directory holding a different run.
        resume: continue an interrupted run in ``out``.
        settings: the scale's settings merged with the user's overrides.
    """

    scale: str
    out: Path
    device: str = "cpu"
    root: Path | None = None
    seed: int = 0
    overwrite: bool = False
    resume: bool = False
    settings: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Experiment:
    """A registered experiment.

    Attributes:
        id: name used on the command line, e.g. ``lyu-li-mnist``.
        title: one line.
        reference: the paper figure/table it reproduces.
        scales: scale name -> settings (plain JSON-able values).
        run: callable taking a :class:`RunRequest`; returns the path of its report.
        trial: optional callable running ONE point of the experiment: it takes the scale's
            settings merged with a sweep point (plain JSON-able dict, including ``seed``) and
            returns a flat dict of JSON-able results; used by ``marginlab sweep``.
        grid: optional default sweep grid per scale: scale -> {setting: [values]}.
        data_check: optional check of a request's data, raising a one-line MarginlabError
            when it is missing; the default (:func:`~marginlab.experiments.datacheck.check_data`)
            reads one image of every data set the settings name from files (``data`` or
            ``*_data`` keys). It runs before anything is created (:meth:`check_data`).
    """

    id: str
    title: str
    reference: str
    scales: Mapping[str, Mapping[str, Any]]
    run: Callable[[RunRequest], Path]
    trial: Callable[[Mapping[str, Any]], dict] | None = None
    grid: Mapping[str, Mapping[str, list]] = field(default_factory=dict)
    data_check: Callable[[RunRequest], None] | None = None

    def needs_root(self, scale: str) -> bool:
        """Whether ``scale`` reads data files, so that a run needs ``--root``."""
        return datacheck.needs_root(self.scales.get(scale, {}))

    def check_data(self, request: RunRequest) -> None:
        """Raise a one-line MarginlabError when the data of ``request`` is missing; call it
        before creating the output directory or starting workers."""
        if self.data_check is not None:
            self.data_check(request)
        else:
            datacheck.check_data(self.id, request.scale, request.settings, request.root)

    def request(self, scale: str, out: Path, overrides: Mapping[str, Any] | None = None,
                **kwargs) -> RunRequest:
        """Build a :class:`RunRequest` for ``scale``, validating the override keys."""
        if scale not in self.scales:
            raise MarginlabError(
                f"experiment {self.id} has no scale {scale!r}; expected {', '.join(self.scales)}"
            )
        settings = dict(self.scales[scale])
        for key, value in (overrides or {}).items():
            if key not in settings:
                raise MarginlabError(
                    f"unknown setting {key!r} for {self.id}; known: {', '.join(sorted(settings))}"
                )
            settings[key] = _coerce(key, settings[key], value)
        return RunRequest(scale=scale, out=Path(out), settings=settings, **kwargs)

    def settings(self, scale: str, overrides: Mapping[str, Any] | None = None) -> dict:
        """The settings of ``scale`` with ``overrides`` applied and checked."""
        return dict(self.request(scale, Path("."), overrides).settings)

    def trial_source(self) -> TrialSource:
        """The experiment as a sweep sees it: its trial function, settings and grid.

        Raises:
            MarginlabError: the experiment has no trial function.
        """
        if self.trial is None:
            raise MarginlabError(f"experiment {self.id} has no trial function to sweep")
        return TrialSource(id=self.id, trial=self.trial, settings=self.settings,
                           grid=self.grid)


COUNTS_FROM_ZERO = frozenset({"workers"})  # integer settings for which 0 means something


def _coerce(key: str, default: Any, value: Any) -> Any:
    """Give an override the type of the setting's default (None and lists pass as they are)."""
    if value is None or default is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, (int, float)) and isinstance(value, (int, float)) \
            and not isinstance(value, bool):
        if not math.isfinite(value):
            raise MarginlabError(f"setting {key!r} takes a finite number, got {value!r}")
        if isinstance(default, int) and not float(value).is_integer():
            raise MarginlabError(f"setting {key!r} takes an integer, got {value!r}")
        # every numeric default is positive: a count stays >= 1 (workers: 0 is "in this
        # process"), a rate or size >= 0
        least = 1 if isinstance(default, int) and key not in COUNTS_FROM_ZERO else 0
        if default > 0 and value < least:
            raise MarginlabError(f"setting {key!r} must be at least {least}, got {value!r}")
        return type(default)(value)
    elif isinstance(default, (list, tuple)) and isinstance(value, (list, tuple)):
        return list(value)
    elif isinstance(default, str) and isinstance(value, str):
        return value
    raise MarginlabError(f"setting {key!r} takes a {type(default).__name__}, got {value!r}")


_REGISTRY: dict[str, Experiment] = {}
_LOADED = False


def register(experiment: Experiment) -> Experiment:
    if experiment.id in _REGISTRY:
        raise RuntimeError(f"experiment {experiment.id} registered twice")
    _REGISTRY[experiment.id] = experiment
    return experiment


def _load_all() -> None:
    global _LOADED
    if not _LOADED:
        for info in pkgutil.iter_modules(__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{__name__}.{info.name}")
        _LOADED = True


def all_experiments() -> dict[str, Experiment]:
    _load_all()
    return dict(sorted(_REGISTRY.items()))


def get(experiment_id: str) -> Experiment:
    _load_all()
    if experiment_id not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise MarginlabError(f"unknown experiment {experiment_id!r}; known: {known}")
    return _REGISTRY[experiment_id]


def trial_source(experiment_id: str) -> TrialSource:
    """The registered experiment ``experiment_id`` as a sweep's :class:`TrialSource`."""
    return get(experiment_id).trial_source()


def sweep_spec(experiment_id: str, scale: str = "cpu", seeds: list[int] | None = None
               ) -> SweepSpec:
    """The default sweep of a registered experiment: its ``grid`` for ``scale``."""
    return trial_source(experiment_id).default_spec(scale, seeds)
