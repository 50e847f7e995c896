"""Figure 8 of Lyu & Li (Appendix K.2): robust accuracy against the L2 radius ε.

One row per split (train, test), two panels per row with the same curves (linear and
logarithmic accuracy axis), one colour per snapshot; the attack-based accuracy (an upper bound
on the true robust accuracy) is solid, the certified accuracy (a lower bound) dashed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from marginlab.io.plots import pyplot, save_figure
from marginlab.robustness.evaluate import RobustCurve

__all__ = ["eps_grid", "plot_curves"]


def eps_grid(bounds: list[np.ndarray], num: int = 400) -> np.ndarray:
    """ε from 0 to a little past the largest finite value among the per-point bounds."""
    finite = [u[np.isfinite(u)] for u in bounds]
    top = max((float(f.max()) for f in finite if f.size), default=1.0)
    return np.linspace(0.0, 1.05 * max(top, 1e-12), num)


def plot_curves(curves: Mapping[str, Mapping[str, RobustCurve]], path: str | os.PathLike, *,
                n_points: Mapping[str, int] | None = None, title: str = "") -> Path:
    """Draw Figure-8-style panels and save them as a PNG.

    Args:
        curves: split name -> snapshot name -> curve (rows in the order given).
        path: output PNG.
        n_points: split name -> number of points (sets the floor of the log axis to 1/(2n)).
        title: figure title.
    """
    from matplotlib.lines import Line2D

    plt = pyplot()

    splits = list(curves)
    snaps = list(dict.fromkeys(s for split in splits for s in curves[split]))
    colors = dict(zip(snaps, plt.cm.viridis(np.linspace(0.0, 0.9, max(len(snaps), 2)))))
    fig, axes = plt.subplots(len(splits), 2, figsize=(12.5, 3.8 * len(splits)), squeeze=False)
    for row, split in enumerate(splits):
        for col, scale in enumerate(("linear", "log")):
            ax = axes[row, col]
            for snap, c in curves[split].items():
                ax.plot(c.eps, c.attack, color=colors[snap], lw=1.6)
                ax.plot(c.eps, c.certified, color=colors[snap], lw=1.2, ls="--")
            ax.set_xlabel("ε (L2 radius)")
            ax.set_ylabel("robust accuracy")
            ax.set_yscale(scale)
            if scale == "log":
                n = (n_points or {}).get(split, 1000)
                ax.set_ylim(0.5 / max(n, 1), 1.2)
            else:
                ax.set_ylim(-0.02, 1.02)
            ax.set_title(f"{split} set, {scale} scale")
            ax.grid(alpha=0.3, which="both" if scale == "log" else "major")
    handles = [Line2D([], [], color=colors[s], lw=1.6, label=s) for s in snaps]
    handles += [Line2D([], [], color="k", lw=1.6, label="attack\n(upper bound)"),
                Line2D([], [], color="k", lw=1.2, ls="--", label="certified\n(lower bound)")]
    fig.legend(handles=handles, fontsize=8, loc="center right")
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 0.88, 1))
    return save_figure(fig, path, layout=False)
