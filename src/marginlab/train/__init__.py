"""Training homogeneous networks far past 100% accuracy (Lyu & Li, Appendix K–L)."""

from marginlab.train.config import DEFAULT_SNAPSHOTS, FitConfig, WeightDecay
from marginlab.train.fit import fit
from marginlab.train.history import EpochRecord, FitResult, History
from marginlab.train.rundir import RunDir
from marginlab.train.schedules import (
    SCHEDULES,
    ConstantLR,
    LossBasedLR,
    LossBasedMomentum,
    Schedule,
    StepSizeUnderflowError,
    make_schedule,
)
from marginlab.train.steps import HeavyBall, SGDStep, StepRule

__all__ = [
    "DEFAULT_SNAPSHOTS",
    "SCHEDULES",
    "ConstantLR",
    "EpochRecord",
    "FitConfig",
    "FitResult",
    "HeavyBall",
    "History",
    "LossBasedLR",
    "LossBasedMomentum",
    "RunDir",
    "SGDStep",
    "Schedule",
    "StepRule",
    "StepSizeUnderflowError",
    "WeightDecay",
    "fit",
    "make_schedule",
]
