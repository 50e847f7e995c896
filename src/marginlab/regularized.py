"""The former path of the weakly regularized two-layer networks, kept so that existing imports
work: they live in :mod:`marginlab.twolayer.regularized` and :mod:`marginlab.twolayer.convex`."""

from marginlab.twolayer.convex import Certificate, ConvexOptimum, convex_optimum
from marginlab.twolayer.regularized import (
    RegularizedResult,
    certificate,
    compress_measure,
    load_measure,
    regularized_objective,
    train,
)

__all__ = [
    "Certificate",
    "ConvexOptimum",
    "RegularizedResult",
    "certificate",
    "compress_measure",
    "convex_optimum",
    "load_measure",
    "regularized_objective",
    "train",
]
