"""Audits of a run: monotone smoothed margin (Lyu & Li, Theorem 4.1/A.7, H) and direction
convergence (Theorem 4.4).

Monotonicity: once the training loss L = Σ_n ℓ(q_n) is below ℓ(0) (log 2 for logistic and
cross-entropy, 1 for exponential), the smoothed normalized margin γ̃ = ℓ^{-1}(L)/ρ^L is
non-decreasing along gradient flow (Theorem A.7), and its multi-homogeneous version
γ̃_multi = ℓ^{-1}(L)/Π‖w_i‖^{k_i} too (Appendix H). Discrete steps (SGD, large learning rates)
can break this; :func:`audit_monotonicity` counts where, and by how much.

Direction convergence: the cosine between normalized parameter vectors k epochs apart, and to
the last checkpoint, from ``RUN_DIR/trajectory/epoch-NNNNNN.safetensors`` (every tensor of a
checkpoint flattened in sorted key order).
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from marginlab.core.losses import Loss, get_loss
from marginlab.errors import MarginlabError, RunDirectoryError
from marginlab.train.rundir import RunDir

__all__ = [
    "DirectionCosines",
    "MonotonicityAudit",
    "audit_monotonicity",
    "direction_cosines",
    "trajectory_checkpoints",
]

MARGIN_FIELDS = ("smoothed_margin", "smoothed_margin_multi")


@dataclass(frozen=True)
class MonotonicityAudit:
    """Decreases of one smoothed-margin series after the loss fell below ℓ(0).

    Attributes:
        field: the metrics field audited (``smoothed_margin`` or ``smoothed_margin_multi``).
        start_epoch: first epoch with L < ℓ(0) (None if never).
        n_checked: consecutive pairs of epochs compared (both at or after ``start_epoch``).
        n_decreases: pairs where the value fell by more than ``rel_tol`` relative.
        max_relative_decrease: largest (v_{k−1} − v_k)/|v_{k−1}| over those pairs (0 if none).
        decrease_epochs: the later epoch of each such pair.
        rel_tol: relative tolerance below which a decrease is treated as rounding.
    """

    field: str
    start_epoch: int | None
    n_checked: int
    n_decreases: int
    max_relative_decrease: float
    decrease_epochs: list[int]
    rel_tol: float

    @property
    def monotone(self) -> bool:
        return self.n_decreases == 0

    def as_dict(self) -> dict:
        return {**asdict(self), "monotone": self.monotone}


def audit_monotonicity(records: Sequence[dict], loss: str | Loss, *, rel_tol: float = 1e-9,
                       fields: Sequence[str] = MARGIN_FIELDS) -> list[MonotonicityAudit]:
    """Where the smoothed margins decreased after L < ℓ(0) (Theorem A.7; Appendix H).

    Args:
        records: metrics records in epoch order (``epoch``, ``log_loss_sum`` and the fields).
        loss: the run's loss (sets ℓ(0)).
        rel_tol: decreases smaller than this relative to the previous value are ignored.
        fields: the series to audit.

    Returns:
        One :class:`MonotonicityAudit` per field.
    """
    if rel_tol < 0:
        raise MarginlabError(f"rel_tol must be ≥ 0, got {rel_tol}")
    log_l0 = get_loss(loss).log_loss_at_zero
    start = next((int(r["epoch"]) for r in records
                  if _finite(r.get("log_loss_sum")) and float(r["log_loss_sum"]) < log_l0),
                 None)
    audits = []
    for name in fields:
        checked, where, worst = 0, [], 0.0
        if start is not None:
            series = [(int(r["epoch"]), float(r[name])) for r in records
                      if int(r["epoch"]) >= start and _finite(r.get(name))]
            for (_, prev), (epoch, cur) in itertools.pairwise(series):
                checked += 1
                drop = (prev - cur) / abs(prev) if prev != 0 else (math.inf if cur < 0 else 0)
                if drop > rel_tol:
                    where.append(epoch)
                    worst = max(worst, drop)
        audits.append(MonotonicityAudit(field=name, start_epoch=start, n_checked=checked,
                                        n_decreases=len(where), max_relative_decrease=worst,
                                        decrease_epochs=where, rel_tol=rel_tol))
    return audits


@dataclass(frozen=True)
class DirectionCosines:
    """Cosines between normalized parameter vectors of a trajectory.

    Attributes:
        epochs: epochs of the trajectory checkpoints, increasing.
        k: the epoch gap of ``pairs``.
        pairs: (e − k, e) for every checkpoint e whose e − k is also a checkpoint.
        cosines: cos∠(θ(e − k), θ(e)) per pair.
        cosine_to_final: cos∠(θ(e), θ(last)) per epoch in ``epochs``.
    """

    epochs: list[int]
    k: int
    pairs: list[tuple[int, int]]
    cosines: list[float]
    cosine_to_final: list[float]

    def as_dict(self) -> dict:
        return asdict(self)


def trajectory_checkpoints(run_dir: str | os.PathLike) -> dict[int, Path]:
    """epoch → path of ``RUN_DIR/trajectory/epoch-NNNNNN.safetensors``, sorted by epoch."""
    return RunDir(run_dir).trajectory_paths()


def _direction(path: Path) -> torch.Tensor:
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise RunDirectoryError(f"{path} is not a readable safetensors file ({exc})") from None
    flat = torch.cat([tensors[k].detach().reshape(-1).to(torch.float64)
                      for k in sorted(tensors)])
    norm = flat.norm()
    if not torch.isfinite(norm) or norm == 0:
        raise RunDirectoryError(f"{path}: parameters are zero or not finite")
    return flat / norm


def direction_cosines(run_dir: str | os.PathLike, k: int | None = None) -> DirectionCosines:
    """Cosines between normalized parameter vectors ``k`` epochs apart and to the last one.

    Args:
        run_dir: the run directory (reads ``trajectory/``).
        k: epoch gap; default the smallest gap between consecutive checkpoints.

    Raises:
        RunDirectoryError: fewer than two trajectory checkpoints, or unreadable ones.
        MarginlabError: k < 1.
    """
    ckpts = trajectory_checkpoints(run_dir)
    if len(ckpts) < 2:
        raise RunDirectoryError(f"{run_dir} has {len(ckpts)} trajectory checkpoints; the "
                                "direction audit needs at least two (train with "
                                "trajectory_every)")
    epochs = list(ckpts)
    if k is None:
        k = min(b - a for a, b in itertools.pairwise(epochs))
    if k < 1:
        raise MarginlabError(f"k must be ≥ 1, got {k}")
    final = _direction(ckpts[epochs[-1]])
    window: dict[int, torch.Tensor] = {}
    pairs, cosines, to_final = [], [], []
    for e in epochs:
        v = _direction(ckpts[e]) if e != epochs[-1] else final
        if v.numel() != final.numel():
            raise RunDirectoryError(f"trajectory checkpoint of epoch {e} has {v.numel()} "
                                    f"parameters, the last one {final.numel()}")
        to_final.append(float(v @ final))
        if e - k in window:
            pairs.append((e - k, e))
            cosines.append(float(window[e - k] @ v))
        window[e] = v
        for old in [x for x in window if x < e - k]:
            del window[old]
    return DirectionCosines(epochs=epochs, k=k, pairs=pairs, cosines=cosines,
                            cosine_to_final=to_final)


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)
