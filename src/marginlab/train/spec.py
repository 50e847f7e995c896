"""A training run described by one typed, JSON-able spec: model, data, schedule and budget.

The ``train`` command and the experiment registry build runs from a :class:`TrainSpec`, so a
run directory's config says exactly what produced it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from marginlab import data as data_mod
from marginlab import models
from marginlab.device import configure as configure_device
from marginlab.errors import MarginlabError
from marginlab.train.config import FitConfig, WeightDecay
from marginlab.train.fit import fit
from marginlab.train.history import FitResult
from marginlab.train.schedules import make_schedule

__all__ = ["TrainSpec", "build_model", "run_training"]


@dataclass
class TrainSpec:
    """Everything that defines a training run.

    Attributes:
        model: zoo name (``mnist_cnn``, ``mlp``, ``two_layer``, ``vgg16``, ``wrn16``).
        bias: ``none``, ``first`` or ``all``.
        widths: hidden widths for ``mlp`` (for ``two_layer``: one width).
        width: width multiplier for ``mnist_cnn`` and ``vgg16``.
        data: data set name (see :func:`marginlab.data.load`).
        root: directory of the full data set files, if needed.
        n_train: class-balanced training subset size (None: all).
        n_test: test subset size (None: all).
        schedule: schedule config, e.g. ``{"name": "loss_based", "alpha0": 0.1}``.
        epochs: accepted epochs to run.
        batch_size: mini-batch size; None for full-batch gradient descent.
        loss: ``cross_entropy``, ``logistic`` or ``exponential``.
        weight_decay: λ of λ‖θ‖^power (0: none). weight_decay_power: the power r.
        weight_decay_milestones: epoch -> factor on λ.
        seed: initialization and shuffling seed.
        device: torch device.
        max_time: wall-clock budget in seconds (None: unlimited).
        stop_at_log10_loss: stop when log10 mean training loss ≤ this.
        margin_convention: ``homogeneous`` or ``paper_with_bias``.
        checkpoint_every: epochs between resume checkpoints.
        trajectory_every: epochs between saved parameter vectors (None: none).
        snapshots_at: mean-loss thresholds of the model-1.. snapshots.
        allow_tf32: allow TF32 matrix products and convolutions on CUDA (faster, about 1e-3
            relative precision; off by default, see :mod:`marginlab.device`).
    """

    model: str = "mnist_cnn"
    bias: str = "none"
    widths: list[int] = field(default_factory=lambda: [100, 100])
    width: float = 1.0
    data: str = "mnist5k"
    root: str | None = None
    n_train: int | None = None
    n_test: int | None = None
    schedule: dict = field(default_factory=lambda: {"name": "loss_based"})
    epochs: int = 100
    batch_size: int | None = 100
    loss: str = "cross_entropy"
    weight_decay: float = 0.0
    weight_decay_power: float = 2.0
    weight_decay_milestones: dict = field(default_factory=dict)
    seed: int = 0
    device: str = "cpu"
    max_time: float | None = None
    stop_at_log10_loss: float | None = None
    margin_convention: str = "homogeneous"
    checkpoint_every: int = 1
    trajectory_every: int | None = None
    snapshots_at: list[float] = field(default_factory=lambda: [1e-10, 1e-15, 1e-20, 1e-120])
    allow_tf32: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainSpec:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise MarginlabError(f"unknown training settings: {', '.join(sorted(unknown))}")
        return cls(**d)


def build_model(spec: TrainSpec, split: data_mod.DataSplit) -> torch.nn.Module:
    """The zoo model of ``spec``, shaped for ``split``'s inputs and classes."""
    out_dim = getattr(split, "out_dim", split.num_classes)
    in_dim = int(math.prod(split.X_train.shape[1:]))
    if spec.model == "mlp":
        return models.mlp(in_dim, spec.widths, out_dim, bias=spec.bias, seed=spec.seed)
    if spec.model == "two_layer":
        return models.two_layer(in_dim, spec.widths[0], out_dim, bias=spec.bias, seed=spec.seed)
    if spec.model == "mnist_cnn":
        if tuple(split.X_train.shape[1:]) != (1, 28, 28):
            raise MarginlabError("mnist_cnn needs 1x28x28 images (data mnist5k or mnist)")
        return models.mnist_cnn(spec.bias, num_classes=out_dim, width=spec.width, seed=spec.seed)
    if spec.model == "vgg16":
        return models.vgg16(spec.bias, num_classes=out_dim, width=spec.width,
                            in_channels=split.X_train.shape[1], seed=spec.seed)
    if spec.model == "wrn16":
        if spec.bias != "none":
            raise MarginlabError("wrn16 is built without biases; use --bias none")
        return models.wrn16(out_dim, in_channels=split.X_train.shape[1], seed=spec.seed)
    raise MarginlabError(f"unknown model {spec.model!r}")


def run_training(spec: TrainSpec, out: str | Path | None, *, resume: bool = False,
                 overwrite: bool = False, progress: bool | None = None) -> FitResult:
    """Load the data, build the model and schedule, and :func:`fit` — writing to ``out``."""
    schedule = make_schedule(spec.schedule)
    wd = None
    if spec.weight_decay:
        wd = WeightDecay(spec.weight_decay, spec.weight_decay_power,
                         spec.weight_decay_milestones)
    data_info = {"name": spec.data, "root": spec.root, "n_train": spec.n_train,
                 "n_test": spec.n_test}
    config = FitConfig(
        schedule=schedule, epochs=spec.epochs, batch_size=spec.batch_size, loss=spec.loss,
        weight_decay=wd, snapshots_at=spec.snapshots_at, seed=spec.seed, device=spec.device,
        max_time=spec.max_time, stop_at_log10_loss=spec.stop_at_log10_loss,
        margin_convention=spec.margin_convention, checkpoint_every=spec.checkpoint_every,
        trajectory_every=spec.trajectory_every)
    configure_device(spec.device, allow_tf32=spec.allow_tf32)
    split = data_mod.load(spec.data, spec.root, n_train=spec.n_train, n_test=spec.n_test)
    model = build_model(spec, split)
    return fit(model, split.train, split.test, config, run_dir=out, resume=resume,
               overwrite=overwrite, data_info=data_info, extra_config={"spec": spec.to_dict()},
               progress=progress)
