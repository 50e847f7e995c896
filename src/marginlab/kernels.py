"""The former path of the ℓ1/ℓ2 margin tools, kept so that existing imports work: they live in
:mod:`marginlab.twolayer` (features, pricing, margins, bounds)."""

from marginlab.twolayer.bounds import (
    kernel_margin_bound,
    l1_regression_bound,
    l2_regression_bound,
    network_margin_bound,
)
from marginlab.twolayer.features import (
    angles_to_directions,
    arccos_kernel,
    grid_angles,
    lift_1d,
    random_relu_features,
    relu_features,
)
from marginlab.twolayer.margins import (
    ContinuumL1Result,
    InterpolationResult,
    L1MarginResult,
    L2MarginResult,
    l1_interpolation,
    l1_margin,
    l1_margin_1d,
    l2_interpolation,
    l2_margin,
)
from marginlab.twolayer.pricing import sup_relu_correlation_1d

__all__ = [
    "ContinuumL1Result",
    "InterpolationResult",
    "L1MarginResult",
    "L2MarginResult",
    "angles_to_directions",
    "arccos_kernel",
    "grid_angles",
    "kernel_margin_bound",
    "l1_interpolation",
    "l1_margin",
    "l1_margin_1d",
    "l1_regression_bound",
    "l2_interpolation",
    "l2_margin",
    "l2_regression_bound",
    "lift_1d",
    "network_margin_bound",
    "random_relu_features",
    "relu_features",
    "sup_relu_correlation_1d",
]
