"""The former path of the mean-field tools, kept so that existing imports work: the particle
flow is :mod:`marginlab.twolayer.meanfield`, the measure and its objective
:mod:`marginlab.twolayer.particles`, its reference optimum :mod:`marginlab.twolayer.reference`."""

from marginlab.twolayer.features import sphere_directions, uniform_sphere
from marginlab.twolayer.meanfield import FlowConfig, FlowResult, simulate
from marginlab.twolayer.particles import (
    ParticleMeasure,
    first_variation,
    objective,
    outputs,
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
