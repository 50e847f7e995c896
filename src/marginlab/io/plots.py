"""Figure-1-style plots of training runs (Lyu & Li, Figures 1, 3, 4), several runs overlaid."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["plot_training", "plot_margin_vs_time"]


def _mpl():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike, *, title: str = "", dpi: int = 110) -> Path:
    """Title, lay out and write ``fig`` as a PNG (creating the folder), then close it."""
    plt = _mpl()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def _null_formatter():
    from matplotlib.ticker import NullFormatter

    return NullFormatter()


def _series(records: Sequence[dict], key: str, *, positive: bool = False
            ) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for r in records:
        v = r.get(key)
        if isinstance(v, (int, float)) and math.isfinite(v) and (v > 0 or not positive):
            xs.append(r["epoch"])
            ys.append(v)
    return xs, ys


def plot_training(runs: Mapping[str, Sequence[dict]], path: str | os.PathLike,
                  *, title: str = "") -> Path:
    """Six panels per run set: log10 loss, smoothed and plain normalized margin (multi and
    global), train/test accuracy and α(t), against epochs (log x where the paper uses it).

    Args:
        runs: label -> metrics records (as in metrics.jsonl).
        path: PNG to write.
    """
    plt = _mpl()
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    panels = [
        ("log10_loss_mean", "log10 mean training loss", False, "linear"),
        ("smoothed_margin_multi", "smoothed normalized margin (per-layer norms), > 0",
         True, "linear"),
        ("normalized_margin_multi", "normalized margin (per-layer norms), > 0", True, "linear"),
        ("normalized_margin", "normalized margin q_min / ρ^L, > 0", True, "linear"),
        ("train_acc", "accuracy (solid: train, dashed: test)", True, "linear"),
        ("alpha", "relative step α(t) (loss-based schedule)", True, "log"),
    ]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (key, label, logx, yscale) in zip(axes.flat, panels):
        for i, (name, records) in enumerate(runs.items()):
            c = colors[i % len(colors)]
            xs, ys = _series(records, key, positive="margin" in key)
            if key == "alpha" and not ys:
                continue
            ax.plot(xs, ys, color=c, label=name, lw=1.4)
            if key == "train_acc":
                tx, ty = _series(records, "test_acc")
                ax.plot(tx, ty, color=c, ls="--", lw=1.2)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("epoch")
        if logx:
            ax.set_xscale("log")
            lo, hi = ax.get_xlim()
            if hi > 20 * max(lo, 1e-12):  # minor labels crowd spans of more than a decade
                ax.xaxis.set_minor_formatter(_null_formatter())
        if yscale == "log" and ax.lines:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    return save_figure(fig, path, title=title)


def plot_margin_vs_time(runs: Mapping[str, Sequence[dict]], path: str | os.PathLike,
                        *, title: str = "") -> Path:
    """Normalized margin and log10 loss against wall-clock seconds: schedules compared at equal
    compute."""
    plt = _mpl()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, records in runs.items():
        t = [r["wall_time"] for r in records]
        axes[0].plot(t, [r["normalized_margin_multi"] for r in records], label=name)
        axes[1].plot(t, [r["log10_loss_mean"] for r in records], label=name)
    axes[0].set_title("normalized margin (per-layer norms) vs wall time", fontsize=10)
    axes[1].set_title("log10 mean training loss vs wall time", fontsize=10)
    for ax in axes:
        ax.set_xlabel("wall-clock seconds")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return save_figure(fig, path, title=title)
