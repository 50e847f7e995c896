"""Products with the margin Jacobian J (rows ∇_θ s_r(θ), r a constraint) that never form it.

The KKT residual and the tangent-kernel SVM (Lyu & Li, Appendix C) need three things of
J ∈ ℝ^{N×P}: Jᵀw (one vector–Jacobian product: the gradient of Σ_n w_n q_n), Jv (one
Jacobian–vector product, forward mode) and the Gram matrix G = J_A J_Aᵀ over a subset A with
b = J_A θ. G is built by one of two products, chosen per model:

- ``layer-products``: when every parameter is the weight or bias of an ``nn.Linear`` (2-D input)
  or ``nn.Conv2d`` (groups 1, zero padding) called once per forward, one forward and one
  backward pass over the samples give each layer's inputs a_n and output cotangents g_n. A
  Linear weight's per-sample gradient is the outer product g_n a_nᵀ, so its Gram block is
  (g_n·g_m)(a_n·a_m) and never needs the P-vector; a Conv2d's per-sample gradient is
  g_n·unfold(a_n)ᵀ (Cout × Cin·k·k, small) and is formed explicitly
  (:mod:`marginlab.analysis.layer_factors`).
- ``per-sample-gradients``: any other model. Rows of J are formed a chunk at a time with
  ``torch.func.vmap(grad)`` (B×P with B set by the memory budget) and contracted into G chunk
  pair by chunk pair; the whole of J is never held.

The rows of J are constraints r = 1..R, each a sample n(r) with a fixed output coefficient
vector c_r, s_r(θ) = ⟨c_r, Φ(θ; x_{n(r)})⟩. With one output there is one row per sample,
c_r = y_n ∈ {±1}. With C outputs, ``constraints`` chooses the rows:

- ``arg-max``: one row per sample, c_n = e_{y_n} − e_{j*} with j* the first index
  (torch.argmax's rule) attaining max_{j≠y_n} Φ_j at the θ the object was built at, so s_n = q_n
  there. At a tie between competitors this picks one active piece of the max, whose gradient is
  an element of the Clarke subdifferential ∂°q_n (Lyu & Li, Def. C.5 allows any element).
- ``pairs``: one row per pair (n, j), j ≠ y_n, in order of n then j, c_nj = e_{y_n} − e_j: the
  constraints s_nj = Φ_{y_n} − Φ_j ≥ 1 of the multi-class problem (P) (Lyu & Li, Appendix G).

Every product works per row (a sample with several rows is passed through the network once per
row), so the layer-product Gram below applies to pairs unchanged. ReLU kinks take autograd's
relu'(0) = 0. Everything runs on a float64 copy of the model in eval mode, which is assumed to
treat samples independently (no batch statistics).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp, vmap

from marginlab.analysis.layer_factors import (
    FLOAT_BYTES,
    LayerFactors,
    concat_factors,
    factor_block,
    factor_floats,
    layer_factors,
    layer_plan,
)
from marginlab.core import targets
from marginlab.core.margins import validate_data
from marginlab.errors import MarginlabError

__all__ = ["MarginJacobian"]

Constraints = Literal["arg-max", "pairs"]


class MarginJacobian:
    """The margins q(θ) = (q_1..q_N) of a model on a data set, with products by their Jacobian.

    Args:
        model: the network; a float64 copy is made, the original is not touched.
        X: inputs (N, ...). y: labels (N,), in {±1}/{0,1} for one output, [C] for C outputs.
        constraints: the rows of J for C outputs, ``arg-max`` (one per sample) or ``pairs``
            (one per pair (n, j ≠ y_n)); one output always has one row per sample.
        batch_size: samples per forward/backward pass.
        memory_limit: bytes the Gram builder may use for per-sample rows and factors.

    Raises:
        MarginlabError: invalid data, or labels that do not fit the model's outputs.
    """

    def __init__(self, model: nn.Module, X: Tensor, y: Tensor, *,
                 constraints: Constraints = "arg-max", batch_size: int = 256,
                 memory_limit: float = 2 * 2**30):
        validate_data(X, y)
        if constraints not in ("arg-max", "pairs"):
            raise MarginlabError(f"unknown constraints {constraints!r}; expected arg-max or "
                                 "pairs")
        self.constraints = constraints
        self.model = copy.deepcopy(model).to(torch.float64).eval()
        self.params = dict(self.model.named_parameters())
        if not self.params:
            raise MarginlabError("the model has no parameters")
        self.names = tuple(self.params)
        self.shapes = [p.shape for p in self.params.values()]
        self.sizes = [p.numel() for p in self.params.values()]
        self.n_params = sum(self.sizes)
        self.X = X.to(torch.float64)
        self.batch_size = max(1, int(batch_size))
        self.memory_limit = float(memory_limit)
        # set by _coefficients: per row, its sample n(r), competitor j (−1 for one output),
        # and s_r(θ) at construction
        self.sample: Tensor
        self.competitor: Tensor
        self.initial_margins: Tensor
        self.coef = self._coefficients(y)
        self._plan: list[tuple[str, nn.Module]] | bool | None = False  # False: not yet probed

    # ---- set-up -------------------------------------------------------------------------

    def _forward(self, xb: Tensor) -> Tensor:
        out = self.model(xb)
        if out.shape[0] != xb.shape[0]:
            raise MarginlabError(f"the model returned {out.shape[0]} outputs for "
                                 f"{xb.shape[0]} inputs")
        return out.reshape(out.shape[0], -1)

    def _coefficients(self, y: Tensor) -> Tensor:
        outs = []
        with torch.no_grad():
            for idx in self._chunks(torch.arange(self.X.shape[0])):
                outs.append(self._forward(self.X[idx]))
        out = torch.cat(outs)
        if not torch.isfinite(out).all():
            raise MarginlabError("the model's outputs are not finite")
        sample, competitor, coef = self._coefficients_from(out, y, self.constraints)
        self.sample, self.competitor = sample, competitor
        self.initial_margins = (out[sample] * coef).sum(1)
        return coef

    @staticmethod
    def _coefficients_from(out: Tensor, y: Tensor,
                           constraints: Constraints) -> tuple[Tensor, Tensor, Tensor]:
        """(sample, competitor, coefficient) per row; see the module docstring."""
        n = out.shape[0]
        target = targets.targets(y, out.shape[1])
        if out.shape[1] == 1:
            return torch.arange(n), torch.full((n,), -1), target.view(-1, 1)
        n_cls = out.shape[1]
        if constraints == "pairs":
            grid = torch.arange(n_cls).expand(n, n_cls)
            keep = grid != target.view(-1, 1)
            sample = torch.arange(n).view(-1, 1).expand(n, n_cls)[keep]
            rival = grid[keep]
        else:  # the first index attaining the max: the tie rule
            sample, rival = torch.arange(n), targets.rivals(out, target)
        coef = nn.functional.one_hot(target[sample], n_cls) - nn.functional.one_hot(rival, n_cls)
        return sample, rival, coef.double()

    @property
    def n_rows(self) -> int:
        """R, the number of rows (constraints)."""
        return int(self.sample.numel())

    def _inputs(self, rows: Tensor) -> Tensor:
        return self.X[self.sample[rows]]

    def _chunks(self, idx: Tensor, size: int | None = None) -> Iterator[Tensor]:
        size = size or self.batch_size
        for start in range(0, idx.numel(), size):
            yield idx[start : start + size]

    # ---- parameters -----------------------------------------------------------------------

    def theta(self) -> Tensor:
        """θ flattened in ``named_parameters`` order, (P,)."""
        return torch.cat([p.detach().reshape(-1) for p in self.params.values()])

    def scale_(self, c: float) -> None:
        """θ ← c·θ in place."""
        with torch.no_grad():
            for p in self.params.values():
                p.mul_(c)

    def _unflatten(self, v: Tensor) -> dict[str, Tensor]:
        return {n: t.view(s) for n, t, s in zip(self.names, v.split(self.sizes), self.shapes)}

    # ---- products -------------------------------------------------------------------------

    def margins(self, idx: Tensor | None = None) -> Tensor:
        """s_r(θ) for rows r in ``idx`` (all by default), float64."""
        idx = torch.arange(self.n_rows) if idx is None else idx
        qs = []
        with torch.no_grad():
            for chunk in self._chunks(idx):
                qs.append((self._forward(self._inputs(chunk)) * self.coef[chunk]).sum(1))
        return torch.cat(qs) if qs else torch.zeros(0, dtype=torch.float64)

    def vjp(self, idx: Tensor, w: Tensor) -> Tensor:
        """Jᵀw = Σ_r w_r ∇s_r(θ) over rows r in ``idx``, (P,): one backward pass per batch."""
        total = torch.zeros(self.n_params, dtype=torch.float64)
        params = list(self.params.values())
        for pos in self._chunks(torch.arange(idx.numel())):
            chunk = idx[pos]
            q = (self._forward(self._inputs(chunk)) * self.coef[chunk]).sum(1)
            grads = torch.autograd.grad((q * w[pos]).sum(), params, allow_unused=True)
            total += torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                                for g, p in zip(grads, params)])
        return total

    def jvp(self, idx: Tensor, v: Tensor) -> Tensor:
        """Jv = (⟨∇s_r(θ), v⟩)_{r ∈ idx}, (len(idx),): forward-mode, one pass per batch."""
        primals = {n: p.detach() for n, p in self.params.items()}
        tangents = self._unflatten(v)
        out = []
        for chunk in self._chunks(idx):
            xb, cb = self._inputs(chunk), self.coef[chunk]

            def q_of(p, xb=xb, cb=cb):
                return (functional_call(self.model, p, (xb,)).reshape(xb.shape[0], -1)
                        * cb).sum(1)

            with warnings.catch_warnings():  # torch.func's first jvp scripts decompositions
                warnings.filterwarnings("ignore", message=".*torch.jit.script.*",
                                        category=DeprecationWarning)
                out.append(jvp(q_of, (primals,), (tangents,))[1].detach())
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)

    # ---- Gram matrix ----------------------------------------------------------------------

    def _layer_plan(self) -> list[tuple[str, nn.Module]] | None:
        """Linear/Conv2d layers holding every parameter, each called once; None if not so."""
        if self._plan is not False:
            return self._plan  # type: ignore[return-value]
        self._plan = layer_plan(self.model, self.params, lambda: self._forward(self.X[:1]))
        return self._plan

    @property
    def gram_builder(self) -> str:
        """``layer-products`` or ``per-sample-gradients`` (see the module docstring)."""
        return "layer-products" if self._layer_plan() is not None else "per-sample-gradients"

    def factor_bytes_per_sample(self) -> int:
        """Bytes of per-sample data the Gram builder holds for each sample."""
        plan = self._layer_plan()
        if plan is None:
            return self.n_params * FLOAT_BYTES
        return factor_floats(plan) * FLOAT_BYTES

    def _factors(self, chunk: Tensor) -> tuple[list[LayerFactors], Tensor]:
        """Layer factors for the samples in ``chunk`` and b = J_chunk θ, one batch at a time."""
        return concat_factors([self._factors_batch(batch) for batch in self._chunks(chunk)])

    def _factors_batch(self, chunk: Tensor) -> tuple[list[LayerFactors], Tensor]:
        plan = self._layer_plan()
        if plan is None:
            raise MarginlabError("layer products need every parameter in a Linear/Conv2d layer "
                                 "called once per forward")
        return layer_factors(
            plan, lambda: (self._forward(self._inputs(chunk)) * self.coef[chunk]).sum(1))

    def _per_sample_rows(self, chunk: Tensor) -> Tensor:
        primals = {n: p.detach() for n, p in self.params.items()}

        def q_one(p, x, c):
            return (functional_call(self.model, p, (x.unsqueeze(0),)).reshape(-1) * c).sum()

        g = vmap(grad(q_one), in_dims=(None, 0, 0))(primals, self._inputs(chunk), self.coef[chunk])
        return torch.cat([g[n].reshape(chunk.numel(), -1) for n in self.names], 1)

    def gram(self, idx: Tensor, *, builder: str | None = None) -> tuple[Tensor, Tensor]:
        """G = J_A J_Aᵀ and b = J_A θ over A = ``idx``.

        Args:
            idx: row indices (n,).
            builder: ``layer-products`` or ``per-sample-gradients``; default
                :attr:`gram_builder`.

        Returns:
            (G, b): float64 tensors of shapes (n, n) and (n,).
        """
        builder = builder or self.gram_builder
        if builder not in ("layer-products", "per-sample-gradients"):
            raise MarginlabError(f"unknown Gram builder {builder!r}")
        n = idx.numel()
        G = torch.zeros(n, n, dtype=torch.float64)
        b = torch.zeros(n, dtype=torch.float64)
        if n == 0:
            return G, b
        per_sample = max(1, self.factor_bytes_per_sample() if builder == "layer-products"
                         else self.n_params * FLOAT_BYTES)
        # Two chunks of per-sample data live at once; the rest of the budget is for G.
        room = max(self.memory_limit - 3 * n * n * FLOAT_BYTES, 0.0) / 2
        size = int(min(n, max(1, room // per_sample)))
        if builder == "per-sample-gradients":
            size = min(size, self.batch_size)
        chunks = list(self._chunks(torch.arange(n), size))
        theta = self.theta()

        def data(pos: Tensor):
            if builder == "layer-products":
                return self._factors(idx[pos])
            rows = self._per_sample_rows(idx[pos])
            return rows, rows @ theta

        def block(di, dj) -> Tensor:
            if builder == "layer-products":
                return factor_block(di, dj)
            return di @ dj.T

        for i, pi in enumerate(chunks):
            di, bi = data(pi)
            b[pi] = bi
            G[pi[:, None], pi[None, :]] = block(di, di)
            for pj in chunks[i + 1 :]:
                dj, _ = data(pj)
                Gij = block(di, dj)
                G[pi[:, None], pj[None, :]] = Gij
                G[pj[:, None], pi[None, :]] = Gij.T
        return G, b

    # ---- helpers for solvers --------------------------------------------------------------

    def gram_fits(self, n: int) -> bool:
        """Whether an n×n Gram matrix, its eigenvectors and one chunk of per-sample data fit in
        the memory budget."""
        return 3 * n * n * FLOAT_BYTES + 2 * self.factor_bytes_per_sample() <= self.memory_limit


def as_numpy(t: Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float64)
