"""Training homogeneous networks far past 100% accuracy (Lyu & Li, Appendix K–L)."""

from marginlab.train import fast  # noqa: F401  (registers the faster schedules)
from marginlab.train.fit import DEFAULT_SNAPSHOTS, FitResult, WeightDecay, fit
from marginlab.train.rundir import RunDir
from marginlab.train.schedules import (
    SCHEDULES,
    ConstantLR,
    LossBasedLR,
    Schedule,
    StepSizeUnderflowError,
    make_schedule,
)

__all__ = [
    "DEFAULT_SNAPSHOTS",
    "SCHEDULES",
    "ConstantLR",
    "FitResult",
    "LossBasedLR",
    "RunDir",
    "Schedule",
    "StepSizeUnderflowError",
    "WeightDecay",
    "fit",
    "make_schedule",
]
