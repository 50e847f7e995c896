"""Synthetic data of Wei, Lee, Liu & Ma (DESIGN.md §6): the Theorem 4.3 distribution, data
labelled by a random two-layer teacher (Appendix F.1, F.2), and 1-D points (Appendix F.3).

Every generator is a function of its arguments and an integer ``seed``: the same call gives the
same tensors on any machine (numpy's PCG64 stream, seeded from ``(generator, seed)`` so that one
seed used for two generators gives independent draws). Inputs are float32; binary labels are
int64 in {−1, +1}, for a model with one output (margin q = y f(x)).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from marginlab.errors import MarginlabError

__all__ = ["InputDistribution", "TeacherNetwork", "ground_truth_network", "one_dimensional",
           "teacher_classification", "teacher_regression", "theorem43"]

InputDistribution = Literal["sphere", "gaussian"]
# One stream per generator: the same integer seed never reuses draws across generators.
_STREAM = {"theorem43": 43, "teacher": 1, "classification": 2, "regression": 3, "1d": 4}


def _rng(seed: int, generator: str) -> np.random.Generator:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise MarginlabError(f"seed must be a non-negative integer, got {seed!r}")
    return np.random.default_rng([_STREAM[generator], int(seed)])


def _positive(value: int, what: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise MarginlabError(f"{what} must be an integer ≥ {minimum}, got {value!r}")
    return int(value)


def theorem43(n: int, d: int, *, seed: int) -> tuple[Tensor, Tensor]:
    """The distribution D of Wei et al., Theorem 4.3 (proof sketch, Section 4 and Appendix D.1).

    x₁, x₂ are independent and uniform on {−1, +1}, x₃ … x_d are i.i.d. N(0, 1), and
    y = +1 if x₁ = x₂, y = −1 otherwise (y = x₁x₂: no linear separator exists, four ReLUs along
    (±e₁ ± e₂)/√2 separate it with ℓ1 margin ≥ √2/4). The theorem's p_data additionally rejects
    the rare samples with ‖x‖² ≳ d log n; that truncation is not applied here.

    Args:
        n: number of samples.
        d: input dimension, at least 2.
        seed: random seed.

    Returns:
        X: (n, d) float32 inputs. y: (n,) int64 labels in {−1, +1}.
    """
    n, d = _positive(n, "n"), _positive(d, "d", 2)
    rng = _rng(seed, "theorem43")
    signs = rng.integers(0, 2, size=(n, 2)) * 2 - 1
    X = np.concatenate([signs.astype(np.float64), rng.standard_normal((n, d - 2))], axis=1)
    y = signs[:, 0] * signs[:, 1]
    return torch.from_numpy(X.astype(np.float32)), torch.from_numpy(y.astype(np.int64))


@dataclass(frozen=True)
class TeacherNetwork:
    """A two-layer ReLU network f(x) = Σ_j a_j relu(w_jᵀx) without biases (Wei et al., §4).

    Attributes:
        W: (hidden, d) float64 first-layer weights; each row has unit norm.
        a: (hidden,) float64 output weights.
    """

    W: Tensor
    a: Tensor

    @property
    def d(self) -> int:
        return self.W.shape[1]

    @property
    def hidden(self) -> int:
        return self.W.shape[0]

    def __call__(self, X: Tensor) -> Tensor:
        """(N, d) inputs → (N,) float64 outputs f(x), evaluated in float64."""
        X = X.to(torch.float64).reshape(len(X), -1)
        if X.shape[1] != self.d:
            raise MarginlabError(f"teacher takes inputs of dimension {self.d}, got {X.shape[1]}")
        return torch.relu(X @ self.W.T) @ self.a


def ground_truth_network(d: int, hidden: int, *, seed: int) -> TeacherNetwork:
    """A random ground-truth network of Wei et al., Appendix F.1 (6 hidden units) and F.2 (10).

    The paper says only "a random neural network". Here the directions w_j are i.i.d. uniform on
    the unit sphere S^{d−1} and the output weights are a_j = +1 for the first ⌈hidden/2⌉ units and
    −1 for the rest, so that both labels occur for every seed (with random signs, all-equal
    signs would label every input +1 with probability 2^{1−hidden}).

    Args:
        d: input dimension.
        hidden: number of hidden units, at least 2.
        seed: random seed.
    """
    d, hidden = _positive(d, "d"), _positive(hidden, "hidden", 2)
    W = _rng(seed, "teacher").standard_normal((hidden, d))
    W /= np.linalg.norm(W, axis=1, keepdims=True)
    a = np.where(np.arange(hidden) < -(-hidden // 2), 1.0, -1.0)
    return TeacherNetwork(torch.from_numpy(W), torch.from_numpy(a))


def _inputs(rng: np.random.Generator, n: int, d: int, inputs: str) -> np.ndarray:
    """(n, d) float32 inputs: uniform on S^{d−1} (``sphere``) or N(0, I_d) (``gaussian``)."""
    X = rng.standard_normal((n, d))
    if inputs == "sphere":
        X /= np.linalg.norm(X, axis=1, keepdims=True)
    elif inputs != "gaussian":
        raise MarginlabError(f"inputs must be 'sphere' or 'gaussian', got {inputs!r}")
    return X.astype(np.float32)


def teacher_classification(n: int, net: TeacherNetwork, min_margin: float, *, seed: int,
                           inputs: InputDistribution = "sphere") -> tuple[Tensor, Tensor]:
    """Inputs labelled y = sign f(x) by a teacher, kept only if |f(x)| ≥ min_margin.

    Wei et al., Appendix F.1: "rejection sampling to obtain datapoints with unnormalized margin of
    at least 0.1 on the ground truth network" (0.01 in F.2). The margin is the teacher's plain
    output y f(x) = |f(x)|, with the teacher's scale fixed by :func:`ground_truth_network`. The
    paper does not name its input distribution; the default is uniform on the unit sphere
    (bounded inputs, C = max‖x‖ = 1 in the bound of Proposition 3.1). The margin is checked on
    the float32 inputs that are returned, evaluated in float64.

    Args:
        n: number of samples.
        net: the teacher.
        min_margin: smallest accepted |f(x)|, ≥ 0 (points with f(x) = 0 are always rejected).
        seed: random seed.
        inputs: ``sphere`` (uniform on S^{d−1}) or ``gaussian`` (N(0, I_d)).

    Returns:
        X: (n, d) float32 inputs. y: (n,) int64 labels in {−1, +1}.

    Raises:
        MarginlabError: if fewer than n points pass within 1000·n + 100000 draws.
    """
    n = _positive(n, "n")
    if not min_margin >= 0:
        raise MarginlabError(f"min_margin must be ≥ 0, got {min_margin!r}")
    rng = _rng(seed, "classification")
    batch, limit = max(1024, 2 * n), 1000 * n + 100_000
    kept_X, kept_f, count, draws, largest = [], [], 0, 0, 0.0
    while count < n:
        if draws >= limit:
            raise MarginlabError(
                f"rejection sampling kept {count} of {n} points in {draws} draws: no input "
                f"reaches margin {min_margin} often enough (largest |f(x)| seen {largest:.3g})")
        X = _inputs(rng, batch, net.d, inputs)
        f = net(torch.from_numpy(X)).numpy()
        keep = (np.abs(f) >= min_margin) & (f != 0)
        kept_X.append(X[keep])
        kept_f.append(f[keep])
        count += int(keep.sum())
        draws += batch
        largest = max(largest, float(np.abs(f).max()))
    X, f = np.concatenate(kept_X)[:n], np.concatenate(kept_f)[:n]
    return torch.from_numpy(X), torch.from_numpy(np.sign(f).astype(np.int64))


def teacher_regression(n: int, net: TeacherNetwork, *, seed: int,
                       inputs: InputDistribution = "sphere",
                       noise: float = 0.0) -> tuple[Tensor, Tensor]:
    """Inputs with real targets y = f(x) + noise·ε, ε ~ N(0, 1) (Wei et al., Appendix F.1 and D.2,
    the regression half of Figure 2).

    Args:
        n: number of samples.
        net: the teacher.
        seed: random seed.
        inputs: ``sphere`` (uniform on S^{d−1}) or ``gaussian`` (N(0, I_d)).
        noise: standard deviation of the additive Gaussian noise, ≥ 0 (0: noiseless targets).

    Returns:
        X: (n, d) float32 inputs. y: (n,) float32 targets.
    """
    n = _positive(n, "n")
    if not noise >= 0:
        raise MarginlabError(f"noise must be ≥ 0, got {noise!r}")
    rng = _rng(seed, "regression")
    X = _inputs(rng, n, net.d, inputs)
    y = net(torch.from_numpy(X)).numpy() + noise * rng.standard_normal(n)
    return torch.from_numpy(X), torch.from_numpy(y.astype(np.float32))


def one_dimensional(n: int = 10, *, seed: int = 0, low: float = -1.0,
                    high: float = 1.0) -> tuple[Tensor, Tensor]:
    """A few labelled points on a line, for Wei et al., Appendix F.3 and Figure 4.

    The paper trains units a·relu(w x + b) on one-dimensional inputs and compares with the ℓ1-SVM
    over features relu(w x + b), w² + b² = 1, but does not list its points. Here: n evenly spaced
    x in [low, high] with labels i.i.d. uniform on {−1, +1}, redrawn until both occur. Each input
    is augmented with a constant 1, x̃ = (x, 1), so a unit is the homogeneous a·relu(uᵀx̃) with
    u = (w, b) and the SVM's directions are u on the unit circle.

    Args:
        n: number of points, at least 2.
        seed: random seed (it chooses the labels).
        low: left end of the interval.
        high: right end of the interval, > low.

    Returns:
        X: (n, 2) float32, columns (x, 1), x increasing. y: (n,) int64 labels in {−1, +1}.
    """
    n = _positive(n, "n", 2)
    if not high > low:
        raise MarginlabError(f"need low < high, got [{low}, {high}]")
    rng = _rng(seed, "1d")
    y = rng.integers(0, 2, size=n) * 2 - 1
    while abs(int(y.sum())) == n:
        y = rng.integers(0, 2, size=n) * 2 - 1
    x = np.linspace(low, high, n)
    X = np.stack([x, np.ones(n)], axis=1)
    return torch.from_numpy(X.astype(np.float32)), torch.from_numpy(y.astype(np.int64))
