"""Analyses of trained homogeneous networks (DESIGN.md §5)."""

from marginlab.analysis.kkt import KKTCurve, KKTResult, kkt_curve, kkt_residual

__all__ = ["KKTCurve", "KKTResult", "kkt_curve", "kkt_residual"]
