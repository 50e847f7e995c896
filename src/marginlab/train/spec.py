"""A training run described by one typed, JSON-able spec: model, data, schedule and budget.

:class:`TrainSpec` is the one place of a run's defaults, their help text and their checks: the
``train`` command generates its options from its fields, and every path that builds a spec (the
command line, :meth:`TrainSpec.from_dict` for sweeps, experiments and resumed runs) validates it
with :meth:`TrainSpec.validated`. A run directory's config says exactly what produced it.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from marginlab import data as data_mod
from marginlab import models, validate
from marginlab.core.losses import LOSS_NAMES
from marginlab.device import configure as configure_device
from marginlab.errors import MarginlabError
from marginlab.train.checks import check_milestones
from marginlab.train.config import CONVENTIONS, DEFAULT_SNAPSHOTS, FitConfig, WeightDecay
from marginlab.train.fit import fit
from marginlab.train.history import FitResult
from marginlab.train.schedules import SCHEDULES, make_schedule
from marginlab.train.settings import default_of, info, option_name, setting

__all__ = ["DEFAULT_WIDTHS", "TrainSpec", "build_model", "fit_config", "run_training"]

DEFAULT_WIDTHS = (100, 100)  # the hidden widths of a run whose model declares none of its own


def _users(name: str) -> str:
    return ", ".join(n for n, e in models.REGISTRY.items() if name in e.uses)


def _own_widths() -> str:
    return "".join(f"{n} {','.join(map(str, e.default_widths))}, "
                   for n, e in models.REGISTRY.items() if e.default_widths is not None)


def _fit(name: str) -> Any:
    """FitConfig's default of ``name``: the loop and the spec share one."""
    return default_of(FitConfig, name)


@dataclass
class TrainSpec:
    """Everything that defines a training run.

    Each field's help text (what it means, its units) is in its metadata, see
    ``marginlab train --help``; :func:`dataclasses.fields` lists them.
    ``widths`` and ``margin_convention`` default to ``None``, which the spec resolves when it
    is made: the model's own hidden widths (its registry entry's ``default_widths``, else
    :data:`DEFAULT_WIDTHS`) and ``paper_with_bias`` for ``bias="all"`` (else ``homogeneous``).
    They are resolved once: :func:`dataclasses.replace` of a made spec keeps them, so pass
    ``widths=None`` or ``margin_convention=None`` again to resolve them for the new model or
    bias. (Before this rule, a spec with ``bias="all"`` defaulted to ``homogeneous`` and a
    ``two_layer`` spec to widths ``[100, 100]``; sweeps written then that leave these out get
    other trial ids now and run those trials again on ``--resume``.)
    """

    model: str = setting("mnist_cnn", help=f"zoo model: {', '.join(models.MODELS)}")
    bias: str = setting("none", choices=models.BIAS_MODES,
                        help="none or first (homogeneous networks), or all (a bias in every "
                             "layer)")
    widths: list[int] | None = setting(
        None, minimum=1,
        help=f"hidden widths, comma-separated ({_users('widths')}); default: the model's own "
             f"({_own_widths()}else {','.join(map(str, DEFAULT_WIDTHS))})")
    width: float = setting(1.0, help=f"width multiplier of every hidden layer "
                                     f"({_users('width')})")
    data: str = setting("mnist5k", help=f"data set: {', '.join(data_mod.DATASETS)}")
    root: str | None = setting(None, help="directory with the data files (mnist, cifar10, "
                                          "cifar100)")
    n_train: int | None = setting(None, minimum=1,
                                  help="class-balanced training subset size (default: all)")
    n_test: int | None = setting(None, minimum=1, help="test subset size (default: all)")
    schedule: dict = setting(
        default_factory=lambda: {"name": "loss_based"},
        help=f"the learning-rate schedule, a name ({', '.join(SCHEDULES)}) and its parameters")
    epochs: int = setting(100, minimum=1, help="accepted epochs in total")
    batch_size: int | None = setting(_fit("batch_size"), minimum=1, none="full",
                                     help="mini-batch size, or full for full-batch gradient "
                                          "descent")
    loss: str = setting(_fit("loss"), help=f"loss: {', '.join(LOSS_NAMES)}")
    weight_decay: float = setting(0.0, minimum=0, help="lambda of lambda*|theta|^r (0: none)")
    weight_decay_power: float = setting(default_of(WeightDecay, "power"), positive=True,
                                        help="the power r of the weight decay")
    weight_decay_milestones: dict = setting(
        default_factory=dict, help="factors on lambda from given epochs on, EPOCH:FACTOR,... "
                                   "(e.g. 60:0.2,120:0.2)")
    seed: int = setting(_fit("seed"), minimum=0, maximum=2**63 - 1,
                        help="initialization and shuffling seed")
    device: str = setting(_fit("device"), help="torch device: cpu, cuda, cuda:N or mps")
    max_time: float | None = setting(None, positive=True,
                                     help="wall-clock budget in seconds")
    stop_at_log10_loss: float | None = setting(
        None, option="--stop-at",
        help="stop once log10 of the mean training loss is at or below this")
    margin_convention: str | None = setting(
        None, option="--convention", choices=CONVENTIONS,
        help="the norms of normalized margins; default: paper_with_bias for bias all, else "
             "homogeneous")
    checkpoint_every: int = setting(_fit("checkpoint_every"), minimum=1,
                                    help="epochs between resume checkpoints")
    trajectory_every: int | None = setting(
        None, minimum=1, help="save the parameters every K epochs (for marginlab analyze)")
    snapshots_at: list[float] = setting(
        default_factory=lambda: list(DEFAULT_SNAPSHOTS), positive=True,
        help="mean-loss thresholds (e.g. 1e-10, not log10) of the snapshots model-1, "
             "model-2, ..., comma-separated")
    allow_tf32: bool = setting(False, help="allow TF32 matrix products and convolutions on "
                                           "CUDA (faster, about 1e-3 relative precision)")

    def __post_init__(self):
        if self.widths is None:
            entry = models.REGISTRY.get(self.model) if isinstance(self.model, str) else None
            own = entry.default_widths if entry is not None else None
            self.widths = list(DEFAULT_WIDTHS if own is None else own)
        if self.margin_convention is None:
            self.margin_convention = "paper_with_bias" if self.bias == "all" else "homogeneous"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping, *, label: Callable[[str], str] | None = None) -> TrainSpec:
        """The validated spec of ``d`` (field -> value; absent fields take their defaults).

        Args:
            d: the settings, e.g. a sweep's ``train`` or a run's saved ``spec``.
            label: how error messages name a field (default: by its name).

        Raises:
            MarginlabError: an unknown field or a bad value, in one line.
        """
        if not isinstance(d, Mapping):
            raise MarginlabError(f"training settings must be an object, got {d!r}")
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise MarginlabError(f"unknown training settings: {', '.join(sorted(unknown))}")
        return cls(**d).validated(label)

    @classmethod
    def option(cls, name: str) -> str:
        """The ``marginlab train`` option that sets field ``name``, e.g. ``--stop-at``."""
        return option_name(cls.__dataclass_fields__[name])

    def model_settings(self) -> models.ModelSettings:
        """The settings the model is built from."""
        return models.ModelSettings(bias=self.bias, widths=self.widths, width=self.width,
                                    seed=self.seed)

    def validated(self, label: Callable[[str], str] | None = None) -> TrainSpec:
        """This spec with every field checked and normalized (ints, floats, the device).

        The model's registry entry checks the settings it is built from (bias, widths, width);
        the schedule is built once to check its parameters; the data set checks ``n_train``
        and ``n_test`` against its size when it loads.

        Args:
            label: how error messages name a field (default: its name; the command line
                passes :meth:`option`).

        Raises:
            MarginlabError: one line naming the field and the bad value.
        """
        name = label or str
        entry = models.entry(self.model, name("model") if label else None)
        own = entry.check(self.model_settings(), name)
        out = dataclasses.replace(self, bias=own.bias, widths=own.widths, width=own.width)
        hints = _hints()
        for f in dataclasses.fields(self):
            if f.name in _CHECKS:
                setattr(out, f.name, _CHECKS[f.name](getattr(out, f.name), name(f.name)))
            else:
                setattr(out, f.name, _check(getattr(out, f.name), f, hints[f.name],
                                            name(f.name)))
        return out


@functools.cache
def _hints() -> dict[str, Any]:
    return typing.get_type_hints(TrainSpec)


def _check(value: Any, f: dataclasses.Field, hint: Any, name: str) -> Any:
    """A number, optional number, bool or choice field of TrainSpec, by its type and bounds."""
    meta = info(f)
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    if optional and value is None:
        return None
    bounds = {"minimum": meta.minimum, "maximum": meta.maximum}
    if base is bool:
        if not isinstance(value, bool):
            raise MarginlabError(f"{name} must be true or false, got {value!r}")
        return value
    if base is int:
        return validate.integer(value, name, **bounds)
    if base is float:
        return validate.number(value, name, positive=meta.positive, **bounds)
    if meta.choices is not None and value not in meta.choices:
        raise MarginlabError(f"{name} must be one of {', '.join(meta.choices)}, got {value!r}")
    return value


def _model_checked(value: Any, name: str) -> Any:
    return value  # bias, widths, width: checked by the model's registry entry


def _root(value: Any, name: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise MarginlabError(f"{name} must be a directory path, got {value!r}")
    return value


def _data(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise MarginlabError(f"{name} must be a data set name, got {value!r}")
    data_mod.options(value)  # a known data set
    return value


def _schedule(value: Any, name: str) -> dict:
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise MarginlabError(f"the schedule must be a dict with a name, got {value!r}")
    make_schedule(value)  # a known schedule with valid parameters
    return value


def _loss(value: Any, name: str) -> str:
    if not isinstance(value, str) or value not in LOSS_NAMES:
        raise MarginlabError(f"unknown loss {value!r} ({name}); expected one of "
                             f"{', '.join(LOSS_NAMES)}")
    return value


def _milestones(value: Any, name: str) -> dict:
    check_milestones(name, value)
    return value  # as given: a saved spec holds its keys as strings


def _snapshots(value: Any, name: str) -> list[float]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise MarginlabError(f"{name} must be a list of mean-loss thresholds, got {value!r}")
    return [validate.number(t, name, positive=True) for t in value]


_CHECKS: dict[str, Callable[[Any, str], Any]] = {
    "model": _model_checked, "bias": _model_checked, "widths": _model_checked,
    "width": _model_checked, "root": _root, "data": _data, "schedule": _schedule,
    "loss": _loss, "weight_decay_milestones": _milestones, "device": validate.device,
    "snapshots_at": _snapshots,
}


def build_model(spec: TrainSpec, split: data_mod.DataSplit) -> torch.nn.Module:
    """The zoo model of ``spec``, shaped for ``split``'s inputs and outputs (its registry
    entry says how)."""
    n_outputs = getattr(split, "out_dim", split.num_classes)
    return models.entry(spec.model).build(spec.model_settings(),
                                          tuple(split.X_train.shape[1:]), n_outputs)


def fit_config(spec: TrainSpec) -> FitConfig:
    """The :class:`FitConfig` of a (validated) spec, with its device configured (TF32 as the
    spec says); for callers that load the data themselves."""
    wd = None
    if spec.weight_decay:
        wd = WeightDecay(spec.weight_decay, spec.weight_decay_power,
                         spec.weight_decay_milestones)
    configure_device(spec.device, allow_tf32=spec.allow_tf32)
    return FitConfig(
        schedule=make_schedule(spec.schedule), epochs=spec.epochs, batch_size=spec.batch_size,
        loss=spec.loss, weight_decay=wd, snapshots_at=spec.snapshots_at, seed=spec.seed,
        device=spec.device, max_time=spec.max_time, stop_at_log10_loss=spec.stop_at_log10_loss,
        margin_convention=spec.margin_convention, checkpoint_every=spec.checkpoint_every,
        trajectory_every=spec.trajectory_every)


def run_training(spec: TrainSpec, out: str | Path | None, *, resume: bool = False,
                 overwrite: bool = False, progress: bool | None = None) -> FitResult:
    """Load the data, build the model and schedule, and :func:`fit` — writing to ``out``."""
    spec = spec.validated()
    data_info = {"name": spec.data, "root": spec.root, "n_train": spec.n_train,
                 "n_test": spec.n_test}
    config = fit_config(spec)
    split = data_mod.load(spec.data, spec.root, n_train=spec.n_train, n_test=spec.n_test)
    model = build_model(spec, split)
    return fit(model, split.train, split.test, config, run_dir=out, resume=resume,
               overwrite=overwrite, data_info=data_info, extra_config={"spec": spec.to_dict()},
               progress=progress)
