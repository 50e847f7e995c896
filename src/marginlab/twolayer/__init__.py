"""Wei, Lee, Liu & Ma, *On the Margin Theory of Feedforward Neural Networks*: two-layer ReLU
networks, their margins and the convex problem behind them.

- :mod:`~marginlab.twolayer.features`: lifted ReLU features, direction sets, the arc-cosine kernel.
- :mod:`~marginlab.twolayer.pricing`: the direction of largest correlation (the pricing step of
  every column generation and dual certificate below).
- :mod:`~marginlab.twolayer.margins`: ℓ1-SVM (finite set, continuum in 1-D), kernel margin,
  minimum-norm interpolation.
- :mod:`~marginlab.twolayer.convex`: the ℓ1-regularized convex problem, its one solver and its
  one :class:`~marginlab.twolayer.convex.Certificate`.
- :mod:`~marginlab.twolayer.regularized`: networks trained on L_λ, certified.
- :mod:`~marginlab.twolayer.onedim`: 1-D inputs with a bias, exactly over the circle;
  :mod:`~marginlab.twolayer.arcs`: that circle cut at the kinks, units as atoms on its arcs.
- :mod:`~marginlab.twolayer.particles`: a measure over neurons as weighted particles, the
  mean-field objective L[ρ], its first variation and velocity field;
  :mod:`~marginlab.twolayer.meanfield`: the perturbed Wasserstein flow of the particles;
  :mod:`~marginlab.twolayer.reference`: its certified optimum L*.
- :mod:`~marginlab.twolayer.bounds`: leading terms of the generalization bounds.
"""

from marginlab.twolayer.convex import Certificate, ConvexOptimum, convex_optimum

__all__ = ["Certificate", "ConvexOptimum", "convex_optimum"]
