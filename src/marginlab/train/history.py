"""Typed training results: one :class:`EpochRecord` per accepted epoch, a :class:`History` of them,
and the :class:`FitResult` that :func:`marginlab.train.fit` returns.

A record reads like the line of ``metrics.jsonl`` it is written as (``record["log10_loss_mean"]``,
``dict(record)``), and as typed attributes (``record.log10_loss_mean``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, overload

from torch import nn

from marginlab.core.margins import MarginStats
from marginlab.errors import MarginlabError

__all__ = ["EpochRecord", "FitResult", "History"]


@dataclass(frozen=True, kw_only=True)
class EpochRecord(MarginStats, Mapping):
    """One accepted epoch: the :class:`~marginlab.core.margins.MarginStats` of the training set
    after it (its fields, inherited: q_min … n; log_loss_sum = log Σ_n ℓ_n, log10_loss_mean =
    log10 of the mean loss), and what the epoch was.

    Attributes:
        epoch: 1-based index of the accepted epoch.
        test_loss: log10 of the mean test loss; test_acc: test accuracy (with a test set only).
        alpha: the schedule's relative step α after its decision (NaN for constant rates).
        lr: the learning rate η used on the mean loss (inf past float range); log10_lr: log10 η.
        steps: optimizer steps taken; retries: rolled-back attempts before this one was kept.
        samples_used: samples the steps used (step rules that choose them only).
        wall_time, cpu_time: seconds since the run started, counting a resumed run's.
        weight_decay: λ(t) of this epoch (with weight decay only).

    Its mapping view and ``metrics.jsonl`` lines list ``epoch``, then the margin statistics,
    then the other fields in the order above.
    """

    epoch: int
    test_loss: float | None = None
    test_acc: float | None = None
    alpha: float
    lr: float
    log10_lr: float
    steps: int
    retries: int
    samples_used: int | None = None
    wall_time: float
    cpu_time: float
    weight_decay: float | None = None

    # --- the mapping view: the fields that are set, in file order -------------------------
    def __getitem__(self, key: str) -> Any:
        if key not in _NAMES or getattr(self, key) is None:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return (k for k in _ORDER if getattr(self, k) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def as_dict(self) -> dict[str, Any]:
        """The record as written to ``metrics.jsonl`` (unset optional fields left out)."""
        return {k: getattr(self, k) for k in self}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EpochRecord:
        """A record from a ``metrics.jsonl`` line (NaN/inf stored as strings)."""
        if not isinstance(d, Mapping):
            raise MarginlabError(f"a metrics record must be a JSON object, got {d!r:.60}")
        missing = [k for k in _REQUIRED if k not in d]
        if missing:
            raise MarginlabError(f"metrics record without {', '.join(missing)}")
        values = {}
        for k, kind in _KINDS.items():
            if k not in d or d[k] is None:
                continue
            v = d[k]
            try:
                if isinstance(v, bool) or isinstance(v, (list, dict)):
                    raise ValueError
                values[k] = int(v) if kind is int else float(v)
                if kind is int and values[k] != float(v):
                    raise ValueError
            except (TypeError, ValueError):
                raise MarginlabError(f"metrics record field {k} is not a number: {v!r:.40}") \
                    from None
        return cls(**values)


_STATS = [f.name for f in fields(MarginStats)]
_ORDER = ["epoch", *_STATS, *(f.name for f in fields(EpochRecord)
                               if f.name != "epoch" and f.name not in _STATS)]
_NAMES = frozenset(_ORDER)
_TYPES = {f.name: str(f.type) for f in fields(EpochRecord)}
_KINDS = {k: (int if _TYPES[k] in ("int", "int | None") else float) for k in _ORDER}
_REQUIRED = [k for k in _ORDER if "None" not in _TYPES[k]]


class History(Sequence[EpochRecord]):
    """The accepted epochs of a run, in order."""

    def __init__(self, records: Sequence[EpochRecord] = ()):
        self._records = list(records)

    @overload
    def __getitem__(self, i: int) -> EpochRecord: ...

    @overload
    def __getitem__(self, i: slice) -> History: ...

    def __getitem__(self, i):
        if isinstance(i, slice):
            return History(self._records[i])
        return self._records[i]

    def __len__(self) -> int:
        return len(self._records)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, History):
            return self._records == other._records
        return NotImplemented

    def __repr__(self) -> str:
        return f"History({len(self)} epochs)"

    def append(self, record: EpochRecord) -> None:
        self._records.append(record)

    def column(self, name: str) -> list:
        """One field over the epochs, e.g. ``history.column("normalized_margin")`` (None where a
        record lacks an optional field)."""
        if name not in _NAMES:
            raise MarginlabError(f"no metrics field {name!r}; fields: {', '.join(_ORDER)}")
        return [getattr(r, name) for r in self._records]

    def as_dicts(self) -> list[dict[str, Any]]:
        return [r.as_dict() for r in self._records]

    @classmethod
    def from_dicts(cls, records: Sequence[Mapping]) -> History:
        return cls([EpochRecord.from_dict(r) for r in records])


@dataclass
class FitResult:
    """What :func:`marginlab.train.fit` returns.

    Attributes:
        model: the trained model (the same object that was passed in).
        history: one :class:`EpochRecord` per accepted epoch, a resumed run's included.
        run_dir: where the run was written, if anywhere.
        stop_reason: ``epochs``, ``time`` (wall-clock budget), ``cpu_time`` (CPU budget) or
            ``target`` (loss threshold reached).
    """

    model: nn.Module
    history: History
    run_dir: Path | None = None
    stop_reason: str = "epochs"

    @property
    def last(self) -> Mapping[str, Any]:
        """The last epoch's record, or an empty mapping before any epoch."""
        return self.history[-1] if len(self.history) else {}

