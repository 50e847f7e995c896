"""Convergence analyses of trained homogeneous networks (Lyu & Li, Section 4; DESIGN.md §5).

- :func:`kkt_residual` / :func:`kkt_curve`: (ε, δ)-KKT certificates of problem (P).
- :func:`tangent_svm`: the tangent-kernel SVM of Corollary 4.5.
- :func:`fit_rates`: loss and norm rates against Theorem 4.3.
- :func:`audit_monotonicity`, :func:`direction_cosines`: Theorem A.7 and direction convergence
  from a run's metrics and trajectory.
- :mod:`~marginlab.analysis.mexican_hat`: Appendix J's non-converging direction.
- :func:`analyze_run`: all of the above for a run directory (``marginlab analyze``).
"""

from marginlab.analysis.audit import (
    DirectionCosines,
    MonotonicityAudit,
    audit_monotonicity,
    direction_cosines,
    trajectory_checkpoints,
)
from marginlab.analysis.kkt import KKTCurve, KKTResult, kkt_curve, kkt_residual
from marginlab.analysis.margin_jacobian import MarginJacobian
from marginlab.analysis.mexican_hat import (
    MexicanHatFlow,
    MexicanHatResult,
    simulate,
    simulate_polar,
)
from marginlab.analysis.rates import RateFit, fit_rates, log_flow_times, loss_sets_step
from marginlab.analysis.run import RunAnalysis, analyze_run
from marginlab.analysis.tangent_svm import TangentSVMResult, tangent_svm

__all__ = [
    "DirectionCosines",
    "KKTCurve",
    "KKTResult",
    "MarginJacobian",
    "MexicanHatFlow",
    "MexicanHatResult",
    "MonotonicityAudit",
    "RateFit",
    "RunAnalysis",
    "TangentSVMResult",
    "analyze_run",
    "audit_monotonicity",
    "direction_cosines",
    "fit_rates",
    "kkt_curve",
    "kkt_residual",
    "log_flow_times",
    "loss_sets_step",
    "simulate",
    "simulate_polar",
    "tangent_svm",
    "trajectory_checkpoints",
]
