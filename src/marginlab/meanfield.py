"""The former path of the mean-field tools, kept so that existing imports work: the particle
flow is :mod:`marginlab.twolayer.meanfield`, its reference optimum
:mod:`marginlab.twolayer.reference`."""

from marginlab.twolayer.features import sphere_directions, uniform_sphere
from marginlab.twolayer.meanfield import (
    FlowConfig,
    FlowResult,
    ParticleMeasure,
    first_variation,
    objective,
    outputs,
    simulate,
    velocity,
)
from marginlab.twolayer.reference import ReferenceOptimum, reference_optimum

__all__ = [
    "FlowConfig",
    "FlowResult",
    "ParticleMeasure",
    "ReferenceOptimum",
    "first_variation",
    "objective",
    "outputs",
    "reference_optimum",
    "simulate",
    "sphere_directions",
    "uniform_sphere",
    "velocity",
]
