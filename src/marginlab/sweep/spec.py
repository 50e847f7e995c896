"""What a sweep runs: a typed spec, and the trials it expands to.

A sweep evaluates one trial function on every point of a grid of settings, once per seed. The
trial is either an experiment's ``trial`` (``{"experiment": "wei-f3", "scale": "cpu", ...}``) or
one training run (``{"train": {...TrainSpec fields...}, ...}``) whose result is the final
epoch's record. Each trial has a stable id, :func:`trial_id`: a hash of everything its function
receives.

The sweep knows no experiment: whoever names one (the command line, or the experiment itself)
resolves it into a :class:`TrialSource` — the trial function and the settings it starts from —
and hands that to :func:`expand` / :func:`~marginlab.sweep.runner.run_sweep`.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from marginlab.errors import MarginlabError
from marginlab.io import storage
from marginlab.train.spec import TrainSpec, run_training

__all__ = ["ReportSpec", "SweepSpec", "Trial", "TrialSource", "expand", "load_spec",
           "train_trial", "trial_id"]

# Training metrics shown by default in a training sweep's report, when present.
TRAIN_REPORT_KEYS = ("normalized_margin", "normalized_margin_multi", "test_acc", "train_acc",
                     "log10_loss_mean")


@dataclass(frozen=True)
class ReportSpec:
    """What the sweep's report plots: ``y`` (mean ± std over seeds) against ``x``, one line per
    value of the ``by`` settings.

    Attributes:
        x: a grid setting or ``seed``; default: the first grid setting.
        y: result keys; default: the training margins and accuracies, or an experiment's
            numeric results (at most 6).
        by: grid settings that tell the lines apart; default: the other grid settings.
        logx: logarithmic x axis; default: when positive x values span two decades or more.
    """

    x: str | None = None
    y: list[str] | None = None
    by: list[str] | None = None
    logx: bool | None = None

    @classmethod
    def from_dict(cls, d: Any) -> ReportSpec:
        _require(isinstance(d, dict), f"sweep spec 'report' must be an object, got {d!r}")
        _no_unknown(d, cls, "sweep spec 'report'")
        y = d.get("y")
        if isinstance(y, str):
            y = [y]
        for key, value in (("x", d.get("x")), ("logx", d.get("logx"))):
            want = bool if key == "logx" else str
            _require(value is None or isinstance(value, want),
                     f"sweep spec report.{key} must be a {want.__name__}, got {value!r}")
        for key, value in (("y", y), ("by", d.get("by"))):
            _require(value is None or (isinstance(value, list)
                                       and all(isinstance(v, str) for v in value)),
                     f"sweep spec report.{key} must be a list of names, got {value!r}")
        return cls(x=d.get("x"), y=y, by=d.get("by"), logx=d.get("logx"))


@dataclass(frozen=True)
class SweepSpec:
    """A grid over settings × seeds and the trial to run on each point.

    Exactly one of ``experiment`` and ``train`` is given.

    Attributes:
        experiment: id of a registered experiment with a ``trial`` function.
        scale: the experiment's scale whose settings the trials start from (``cpu``, ``paper``).
        train: :class:`~marginlab.train.spec.TrainSpec` fields shared by every trial (without
            ``seed``); each trial trains once and returns its final epoch's record.
        grid: setting -> list of values; the trials are the product of the lists.
        seeds: seeds run at every grid point (passed to the trial as ``seed``).
        set: overrides of the experiment's scale settings, shared by every trial.
        run_dirs: training sweeps only: write each trial's run directory to ``OUT/runs/ID``
            (resumable from its last checkpoint); otherwise nothing but the result is kept.
        name: title of the report (default: the experiment id or ``training``).
        report: what the report plots, see :class:`ReportSpec`.
    """

    experiment: str | None = None
    scale: str = "cpu"
    train: dict | None = None
    grid: dict[str, list] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=lambda: [0])
    set: dict = field(default_factory=dict)
    run_dirs: bool = False
    name: str | None = None
    report: ReportSpec = field(default_factory=ReportSpec)

    @property
    def kind(self) -> str:
        """``experiment`` or ``train``."""
        return "train" if self.train is not None else "experiment"

    @property
    def identity(self) -> str:
        """What a resumed sweep must share with the one in its directory."""
        return "training" if self.kind == "train" else f"{self.experiment} ({self.scale})"

    @property
    def title(self) -> str:
        return self.name or ("training sweep" if self.kind == "train"
                             else f"{self.experiment} sweep, {self.scale} scale")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["report"] = {k: v for k, v in d["report"].items() if v is not None}
        if self.name is None:
            del d["name"]
        if self.kind == "train":
            for key in ("experiment", "scale", "set"):
                del d[key]
        else:
            del d["train"], d["run_dirs"]
        return d

    @classmethod
    def from_dict(cls, d: Any) -> SweepSpec:
        """Validate a JSON object; unknown keys and wrong types raise one-line errors."""
        _require(isinstance(d, dict), f"a sweep spec is a JSON object, got {type(d).__name__}")
        _no_unknown(d, cls, "sweep spec")
        has_exp, has_train = d.get("experiment") is not None, d.get("train") is not None
        _require(has_exp != has_train,
                 "a sweep spec names either an 'experiment' or a 'train' spec (exactly one)")
        if has_exp:
            _require(isinstance(d["experiment"], str),
                     f"sweep spec 'experiment' must be an id, got {d['experiment']!r}")
            _require("run_dirs" not in d, "'run_dirs' is for training sweeps")
        else:
            _require(isinstance(d["train"], dict),
                     f"sweep spec 'train' must be an object of training settings, "
                     f"got {d['train']!r}")
            _require("seed" not in d["train"], "put the seeds in the sweep's 'seeds', not 'train'")
            for key in ("scale", "set"):
                _require(key not in d, f"'{key}' is for experiment sweeps; put training "
                                       "settings in 'train'")
        scale = d.get("scale", "cpu")
        _require(isinstance(scale, str), f"sweep spec 'scale' must be a string, got {scale!r}")
        grid = d.get("grid", {})
        _require(isinstance(grid, dict), f"sweep spec 'grid' must be an object, got {grid!r}")
        for key, values in grid.items():
            _require(key != "seed", "put the seeds in the sweep's 'seeds', not its grid")
            _require(isinstance(values, list) and values,
                     f"grid setting {key!r} needs a non-empty list of values, got {values!r}")
            canon = [_canonical(v) for v in values]
            _require(len(set(canon)) == len(canon), f"grid setting {key!r} repeats a value")
        seeds = d.get("seeds", [0])
        _require(isinstance(seeds, list) and seeds
                 and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds),
                 f"sweep spec 'seeds' must be a non-empty list of integers, got {seeds!r}")
        _require(len(set(seeds)) == len(seeds), "sweep spec 'seeds' repeats a seed")
        overrides = d.get("set", {})
        _require(isinstance(overrides, dict), f"sweep spec 'set' must be an object, "
                                              f"got {overrides!r}")
        both = sorted(set(overrides) & set(grid))
        _require(not both, f"setting(s) {', '.join(both)} both in 'set' and in 'grid'")
        if has_train:
            both = sorted(set(d["train"]) & set(grid))
            _require(not both, f"setting(s) {', '.join(both)} both in 'train' and in 'grid'")
        run_dirs = d.get("run_dirs", False)
        _require(isinstance(run_dirs, bool), f"sweep spec 'run_dirs' must be true or false, "
                                             f"got {run_dirs!r}")
        name = d.get("name")
        _require(name is None or isinstance(name, str),
                 f"sweep spec 'name' must be a string, got {name!r}")
        report = ReportSpec.from_dict(d.get("report", {}))
        names = [*grid, "seed"]
        for key in [report.x, *(report.by or [])]:
            _require(key is None or key in names,
                     f"report setting {key!r} is not swept; choose from {', '.join(names)}")
        return cls(experiment=d.get("experiment"), scale=scale, train=d.get("train"),
                   grid=dict(grid), seeds=list(seeds), set=dict(overrides), run_dirs=run_dirs,
                   name=name, report=report)


@dataclass(frozen=True)
class Trial:
    """One point of a sweep.

    Attributes:
        id: 12 hex digits of the SHA-256 of what the trial function receives (stable across
            runs, so a resumed sweep knows which trials are done).
        params: the grid point and seed (what varies between trials).
        settings: everything the trial function receives.
    """

    id: str
    params: dict
    settings: dict


def load_spec(path: str | Path) -> SweepSpec:
    """Read a sweep spec from a JSON file."""
    return SweepSpec.from_dict(storage.read_json(path))


@dataclass(frozen=True)
class TrialSource:
    """What a named trial lends a sweep (an experiment resolves itself into one).

    Attributes:
        id: the name a spec's ``experiment`` refers to.
        trial: runs ONE point: takes the full settings (plain JSON-able dict, with ``seed``) and
            returns a flat dict of JSON-able results; it must be picklable for worker processes.
        settings: ``settings(scale, overrides)`` -> the full settings of a point (the scale's
            defaults with the overrides applied and checked).
        grid: default sweep grid per scale: scale -> {setting: [values]}.
    """

    id: str
    trial: Callable[[Mapping[str, Any]], dict]
    settings: Callable[[str, Mapping[str, Any]], Mapping[str, Any]]
    grid: Mapping[str, Mapping[str, list]] = field(default_factory=dict)

    def default_spec(self, scale: str = "cpu", seeds: list[int] | None = None) -> SweepSpec:
        """The source's default sweep: its ``grid`` for ``scale``, seeds 0, 1, 2 by default."""
        if scale not in self.grid:
            raise MarginlabError(f"experiment {self.id} has no sweep grid for scale {scale!r}; "
                                 "write a JSON sweep spec with a 'grid'")
        return SweepSpec.from_dict({"experiment": self.id, "scale": scale,
                                    "grid": {k: list(v) for k, v in self.grid[scale].items()},
                                    "seeds": list(seeds if seeds is not None else [0, 1, 2])})


def expand(spec: SweepSpec, source: TrialSource | None = None
           ) -> tuple[list[Trial], Callable[[dict], dict]]:
    """The trials of ``spec`` (grid product in spec order, seeds innermost) and the function
    that runs one trial, ``fn(settings) -> dict``.

    Setting names and value types are checked here, before anything runs.

    Args:
        spec: the sweep.
        source: the trial an experiment sweep names (``source.id == spec.experiment``); not
            used by training sweeps.

    Raises:
        MarginlabError: a bad setting, or an experiment sweep without its source.
    """
    points = [dict(zip(spec.grid, values))
              for values in itertools.product(*spec.grid.values())]
    trials = []
    if spec.kind == "experiment":
        if source is None or source.id != spec.experiment:
            raise MarginlabError(f"the sweep of experiment {spec.experiment} needs its trial "
                                 "source (resolve the experiment before running the sweep)")
        fn = source.trial
        for point in points:
            settings = dict(source.settings(spec.scale, {**spec.set, **point}))
            for seed in spec.seeds:
                full = {**settings, "seed": seed}
                key = {"experiment": source.id, "scale": spec.scale, "settings": full}
                trials.append(Trial(trial_id(key), {**point, "seed": seed}, full))
    else:
        for point in points:
            for seed in spec.seeds:
                full = _train_settings({**spec.train, **point, "seed": seed})
                trials.append(Trial(trial_id({"train": full}), {**point, "seed": seed}, full))
        fn = train_trial
    return trials, fn


def train_trial(settings: Mapping[str, Any], run_dir: str | None = None) -> dict:
    """Train once (:func:`~marginlab.train.spec.run_training`) and return the final epoch's
    record, with ``epochs`` (accepted epochs) and ``stop_reason``.

    With ``run_dir`` the run is written there and continued from its last checkpoint if an
    earlier attempt was interrupted.
    """
    result = run_training(TrainSpec.from_dict(dict(settings)), run_dir, resume=True,
                          progress=False)
    return {**result.last, "epochs": len(result.history), "stop_reason": result.stop_reason}


def bind_run_dir(fn: Callable, run_dir: Path) -> Callable:
    """``fn`` with its run directory bound (picklable, for worker processes)."""
    return functools.partial(fn, run_dir=str(run_dir))


# --------------------------------------------------------------------------- validation


def _train_settings(d: dict) -> dict:
    """The full TrainSpec of ``d`` as a dict, with every value checked against its field type
    (ints are accepted for floats and become floats, so the trial id does not depend on how a
    number was written)."""
    hints = typing.get_type_hints(TrainSpec)
    unknown = sorted(set(d) - set(hints))
    if unknown:
        raise MarginlabError(f"unknown training setting(s) {', '.join(unknown)}; "
                             f"known: {', '.join(hints)}")
    checked = {}
    for key, value in d.items():
        ok, value = _conform(value, hints[key])
        if not ok:
            raise MarginlabError(f"training setting {key!r} takes {_type_name(hints[key])}, "
                                 f"got {value!r}")
        checked[key] = value
    return TrainSpec.from_dict(checked).to_dict()


def _conform(value: Any, tp: Any) -> tuple[bool, Any]:
    """(value matches the type annotation ``tp``, value with ints widened to floats)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            ok, v = _conform(value, arg)
            if ok:
                return True, v
        return False, value
    if tp is type(None):
        return value is None, value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if tp in (str, dict):
        return isinstance(value, tp), value
    if origin is list:
        if not isinstance(value, list):
            return False, value
        (arg,) = typing.get_args(tp) or (Any,)
        out = []
        for v in value:
            ok, v = _conform(v, arg) if arg is not Any else (True, v)
            if not ok:
                return False, value
            out.append(v)
        return True, out
    return True, value


def _type_name(tp: Any) -> str:
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__name__
    return str(tp).replace("typing.", "").replace("NoneType", "None")


def _canonical(value: Any) -> str:
    return json.dumps(storage.to_jsonable(value), sort_keys=True, separators=(",", ":"))


def trial_id(settings: Any) -> str:
    """12 hex digits of the SHA-256 of ``settings`` written as canonical JSON (sorted keys, no
    spaces, numpy values as plain ones): stable across runs and machines, so a resumed run knows
    which trials are done."""
    return hashlib.sha256(_canonical(settings).encode("utf-8")).hexdigest()[:12]


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise MarginlabError(message)


def _no_unknown(d: dict, cls: type, what: str) -> None:
    unknown = sorted(set(d) - set(cls.__dataclass_fields__))
    if unknown:
        raise MarginlabError(f"unknown {what} key(s) {', '.join(map(repr, unknown))}; known: "
                             f"{', '.join(cls.__dataclass_fields__)}")
