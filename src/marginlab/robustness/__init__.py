"""L2 robustness of classifiers (Lyu & Li, Appendix K.2): lower ≤ R(z) ≤ upper per point.

``upper`` comes from verified minimum-norm attacks (:mod:`.attacks`, foolbox 3.3.4), ``lower``
from certified bounds (:mod:`.certify`: Lipschitz products from :mod:`.lipschitz`, CROWN from
:mod:`.crown`); :func:`evaluate` does both on a data set and :meth:`RobustnessResult.curve`
gives the robust-accuracy sandwich of Figure 8.
"""

from marginlab.robustness.attacks import AttackResult, L2FMNAttack, TwoLogits, attack
from marginlab.robustness.certify import Certificate, certify
from marginlab.robustness.crown import crown_radius
from marginlab.robustness.evaluate import RobustCurve, RobustnessResult, evaluate
from marginlab.robustness.lipschitz import LipschitzBound, OperatorNorm, lipschitz_bound

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
    "crown_radius",
    "evaluate",
    "lipschitz_bound",
]
