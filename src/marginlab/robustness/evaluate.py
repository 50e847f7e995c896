"""L2 robustness of a classifier on a data set: a sandwich of certified and attack bounds.

For each point z = (x, y), R(z) = inf {‖x − x'‖₂ : x' ∈ [0, 1]^d misclassified} (Lyu & Li,
Appendix K.2) is bracketed by ``lower`` ≤ R(z) ≤ ``upper``: ``upper`` is the distance of a
verified adversarial (:mod:`marginlab.robustness.attacks`), ``lower`` a certified bound
(:mod:`marginlab.robustness.certify`). A misclassified point has R(z) = 0 = lower = upper.

Robust accuracy at ε is the fraction of points that are correctly classified and have no
misclassified point strictly closer than ε, i.e. R(z) ≥ ε. (The paper counts R(z) > ε; the two
differ only at ε = R(z) exactly.) From the bounds:

    certified (mean of lower ≥ ε)  ≤  true robust accuracy  ≤  attack-based (mean of upper ≥ ε),

with misclassified points counted as not robust at every ε ≥ 0.

Adversarials are verified by the model in its own dtype, certificates computed on a float64
copy; for a float32 model whose bounds are tight to ~1e-6 (a linear model, say) float32 rounding
can put ``upper`` a hair below ``lower``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from marginlab.core.margins import validate_data
from marginlab.errors import MarginlabError
from marginlab.progress import Progress
from marginlab.robustness.attacks import METHODS, Method, _check_bounds, attack
from marginlab.robustness.certify import CERTIFICATES, certify
from marginlab.robustness.lipschitz import LipschitzBound, UnsupportedModelError, lipschitz_bound

__all__ = ["RobustCurve", "RobustnessResult", "evaluate"]


@dataclass(frozen=True)
class RobustCurve:
    """Robust accuracy as a function of ε (Lyu & Li, Figure 8).

    Attributes:
        eps: (K,) radii.
        certified: (K,) fraction of points correct with lower ≥ ε — a lower bound on the true
            robust accuracy.
        attack: (K,) fraction of points correct with upper ≥ ε — an upper bound on it.
        by_certificate: certificate name -> (K,) certified accuracy from that bound alone.
    """

    eps: np.ndarray
    certified: np.ndarray
    attack: np.ndarray
    by_certificate: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class RobustnessResult:
    """Per-point bounds lower ≤ R(z) ≤ upper on the L2 robustness of a data set.

    Attributes:
        upper: (N,) float64 attack distances; 0 for misclassified points, +inf where the attack
            found no adversarial.
        lower: (N,) float64 best certified bound; 0 for misclassified points.
        correct: (N,) bool, the model classifies x correctly (margin > 0).
        margin: (N,) float64 margin q(x) (float64 forward pass).
        lower_by: certificate name -> (N,) float64 bound of that certificate alone.
        found_by: (N,) which attack produced ``upper`` ("" where none).
        method: attack method (``fast`` or ``cw``).
        steps: attack iterations (see :func:`marginlab.robustness.attack`).
        attack_seconds: wall time of the attacks.
        attack_cpu_seconds: CPU time of the attacks (see :class:`AttackResult`).
        certify_seconds: wall time of the certificates.
        notes: certificate name -> why it was not computed for this model.
        lipschitz: layer-wise Lipschitz bound, or None.
    """

    upper: np.ndarray
    lower: np.ndarray
    correct: np.ndarray
    margin: np.ndarray
    lower_by: dict[str, np.ndarray]
    found_by: np.ndarray
    method: str
    steps: int
    attack_seconds: float
    certify_seconds: float
    attack_cpu_seconds: float = math.nan
    notes: dict[str, str] = field(default_factory=dict)
    lipschitz: LipschitzBound | None = field(default=None, repr=False)

    @property
    def n(self) -> int:
        return int(self.upper.shape[0])

    @property
    def failures(self) -> int:
        """Correctly classified points the attack could not break (upper = +inf)."""
        return int(np.isinf(self.upper).sum())

    def curve(self, eps_grid) -> RobustCurve:
        """Certified and attack-based robust accuracy at each ε of ``eps_grid``."""
        eps = np.asarray(eps_grid, dtype=np.float64).reshape(-1)
        if np.any(eps < 0) or not np.all(np.isfinite(eps)):
            raise MarginlabError("eps values must be finite and non-negative")

        def acc(bound: np.ndarray) -> np.ndarray:
            ok = self.correct[None, :] & (bound[None, :] >= eps[:, None])
            return ok.mean(axis=1)

        return RobustCurve(
            eps=eps,
            certified=acc(self.lower),
            attack=acc(self.upper),
            by_certificate={k: acc(v) for k, v in self.lower_by.items()},
        )

    def summary(self) -> dict:
        """Medians over correctly classified points, accuracy and timings (JSON-ready)."""
        ok = self.correct
        out = {
            "n": self.n,
            "accuracy": float(ok.mean()),
            "method": self.method,
            "steps": self.steps,
            "attack_failures": self.failures,
            "median_upper": _median(self.upper[ok]),
            "median_lower": _median(self.lower[ok]),
            "attack_seconds": self.attack_seconds,
            "attack_cpu_seconds": self.attack_cpu_seconds,
            "certify_seconds": self.certify_seconds,
        }
        for k, v in self.lower_by.items():
            out[f"median_lower_{k}"] = _median(v[ok])
            ratio = v[ok] / self.upper[ok]
            out[f"median_ratio_{k}"] = _median(ratio[np.isfinite(self.upper[ok])])
        return out

    def as_dict(self) -> dict:
        """Per-point arrays and metadata, for JSON."""
        return {
            "method": self.method,
            "steps": self.steps,
            "upper": self.upper,
            "lower": self.lower,
            "correct": self.correct,
            "margin": self.margin,
            "lower_by": self.lower_by,
            "found_by": [str(s) for s in self.found_by],
            "attack_seconds": self.attack_seconds,
            "attack_cpu_seconds": self.attack_cpu_seconds,
            "certify_seconds": self.certify_seconds,
            "notes": self.notes,
        }

    @classmethod
    def from_dict(cls, d: dict) -> RobustnessResult:
        """Rebuild a result written by :meth:`as_dict` (and read back from JSON)."""
        try:
            return cls(
                upper=_floats(d["upper"]),
                lower=_floats(d["lower"]),
                correct=np.asarray(d["correct"], dtype=bool),
                margin=_floats(d["margin"]),
                lower_by={k: _floats(v) for k, v in d.get("lower_by", {}).items()},
                found_by=np.asarray(d.get("found_by", [""] * len(d["upper"])), dtype=object),
                method=str(d["method"]),
                steps=int(d["steps"]),
                attack_seconds=float(d.get("attack_seconds", math.nan)),
                certify_seconds=float(d.get("certify_seconds", math.nan)),
                attack_cpu_seconds=float(d.get("attack_cpu_seconds", math.nan)),
                notes=dict(d.get("notes", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise MarginlabError(f"not a robustness result ({exc})") from None


def _floats(values) -> np.ndarray:
    """Floats from JSON, where non-finite values were written as strings ("inf", "nan")."""
    return np.asarray([float(v) for v in values], dtype=np.float64)


def _median(v: np.ndarray) -> float:
    return float(np.median(v)) if v.size else float("nan")


def evaluate(
    model: nn.Module,
    X: Tensor,
    y: Tensor,
    method: Method = "fast",
    *,
    steps: int | None = None,
    bounds: tuple[float, float] = (0.0, 1.0),
    certificates: tuple[str, ...] = CERTIFICATES,
    batch_size: int = 100,
    seed: int = 0,
    progress: bool | None = None,
    desc: str = "robustness",
) -> RobustnessResult:
    """Attack and certify every point: lower ≤ R(z) ≤ upper (Lyu & Li, Appendix K.2).

    Args:
        model: a module mapping (N, ...) inputs to logits (N, C), or a one-output binary model
            (seen as two logits [−f/2, f/2], so margins and distances are those of f).
        X: (N, ...) inputs inside ``bounds``. y: (N,) labels.
        method: ``fast`` or ``cw`` (see :func:`marginlab.robustness.attack`).
        steps: attack iterations (default 100 for ``fast``, 10000 for ``cw``).
        bounds: the data domain [lower, upper]^d.
        certificates: which certified bounds to compute (``global``, ``row``, ``local``);
            those the model's structure does not allow are skipped with a note.
        batch_size: points per attack batch (CW's early abort looks at the batch's total loss).
        seed: seed of the attacks' random choices.
        progress: show a tqdm bar per batch (None: only on a terminal).
        desc: label of the progress bar.

    Returns:
        A :class:`RobustnessResult`.

    Raises:
        MarginlabError: invalid data, labels, bounds, method or certificate names.
    """
    validate_data(X, y)
    _check_bounds(X, bounds)
    if method not in METHODS:
        raise MarginlabError(f"unknown attack method {method!r}; expected one of "
                             f"{', '.join(METHODS)}")
    unknown = set(certificates) - set(CERTIFICATES)
    if unknown:
        raise MarginlabError(f"unknown certificates {sorted(unknown)}; expected some of "
                             f"{', '.join(CERTIFICATES)}")
    if batch_size <= 0:
        raise MarginlabError(f"batch_size must be positive, got {batch_size}")
    n = X.shape[0]
    notes: dict[str, str] = {}
    lipschitz = None
    t_cert = 0.0
    if {"global", "row"} & set(certificates):
        t0 = time.perf_counter()
        try:
            lipschitz = lipschitz_bound(model, tuple(X.shape[1:]))
        except UnsupportedModelError as exc:
            notes["global"] = notes["row"] = str(exc)
        t_cert += time.perf_counter() - t0
    uppers, lowers, corrects, margins, found = [], [], [], [], []
    lower_by: dict[str, list[np.ndarray]] = {}
    t_attack = c_attack = 0.0
    with Progress(desc, total=n, unit="pt",
                  quiet=None if progress is None else not progress) as bar:
        for start in range(0, n, batch_size):
            xb, yb = X[start:start + batch_size], y[start:start + batch_size]
            res = attack(model, xb, yb, method=method, steps=steps, bounds=bounds,
                         seed=seed + start)
            t_attack += res.seconds
            c_attack += res.cpu_seconds
            t0 = time.perf_counter()
            which = tuple(c for c in certificates if c not in notes)
            cert = certify(model, xb, yb, hi=torch.from_numpy(res.distance), bounds=bounds,
                           which=which, lipschitz=lipschitz)
            t_cert += time.perf_counter() - t0
            notes.update(cert.notes)
            ok = res.correct
            uppers.append(np.where(ok, res.distance, 0.0))
            lowers.append(np.where(ok, cert.best, 0.0))
            for k, v in cert.lower.items():
                lower_by.setdefault(k, []).append(np.where(ok, v, 0.0))
            corrects.append(ok)
            margins.append(cert.margin)
            found.append(res.found_by)
            bar.update(xb.shape[0])
    return RobustnessResult(
        upper=np.concatenate(uppers),
        lower=np.concatenate(lowers),
        correct=np.concatenate(corrects),
        margin=np.concatenate(margins),
        lower_by={k: np.concatenate(v) for k, v in lower_by.items()},
        found_by=np.concatenate(found),
        method=method,
        steps=res.steps,
        attack_seconds=t_attack,
        certify_seconds=t_cert,
        attack_cpu_seconds=c_attack,
        notes=notes,
        lipschitz=lipschitz,
    )
