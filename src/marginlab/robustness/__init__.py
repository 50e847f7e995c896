"""L2 robustness of classifiers (Lyu & Li, Appendix K.2): lower ≤ R(z) ≤ upper per point.

``upper`` comes from verified minimum-norm attacks (:mod:`.attacks`, foolbox 3.3.4), ``lower``
from certified Lipschitz and CROWN bounds (:mod:`.certify`); :func:`evaluate` does both on a
data set and :meth:`RobustnessResult.curve` gives the robust-accuracy sandwich of Figure 8.
"""

from marginlab.robustness.attacks import AttackResult, L2FMNAttack, TwoLogits, attack
from marginlab.robustness.certify import (
    Certificate,
    LipschitzBound,
    OperatorNorm,
    certify,
    lipschitz_bound,
)
from marginlab.robustness.evaluate import RobustCurve, RobustnessResult, evaluate

__all__ = [
    "AttackResult",
    "Certificate",
    "L2FMNAttack",
    "LipschitzBound",
    "OperatorNorm",
    "RobustCurve",
    "RobustnessResult",
    "TwoLogits",
    "attack",
    "certify",
    "evaluate",
    "lipschitz_bound",
]
