"""Figure-1-style plots of training runs (Lyu & Li, Figures 1, 3, 4), several runs overlaid."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["LINESTYLES", "MARKERS", "coincidence_note", "coinciding", "plot_margin_vs_time",
           "plot_training"]

# Each series gets its own colour, line style and marker, so that a series lying on another
# stays visible (the markers are spread along the line; see ``_style``).
LINESTYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "v", "D", "x", "+", "*")


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (every plot of marginlab)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike, *, title: str = "", dpi: int = 110,
                layout: bool = True, bbox_inches: str | None = None) -> Path:
    """Title, lay out and write ``fig`` as a PNG (creating the folder), then close it.

    The file is written next to ``path`` and renamed onto it, so a reader never sees half a
    figure and an interrupted write leaves the former one.

    Args:
        fig: the figure. path: the PNG to write. title: a suptitle. dpi: resolution.
        layout: call ``tight_layout`` first (False when the caller laid the figure out).
        bbox_inches: passed to ``savefig`` (``"tight"`` crops to the drawn area).
    """
    plt = pyplot()
    if title:
        fig.suptitle(title)
    if layout:
        fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.png")
    try:
        fig.savefig(tmp, dpi=dpi, bbox_inches=bbox_inches)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path


def _null_formatter():
    from matplotlib.ticker import NullFormatter

    return NullFormatter()


def _style(i: int, n_points: int) -> dict:
    """Line style and marker of the i-th series; about 12 markers per line, offset per series."""
    every = max(1, n_points // 12)
    return {"ls": LINESTYLES[i % len(LINESTYLES)], "marker": MARKERS[i % len(MARKERS)],
            "markevery": (min(i * max(1, every // 5), every - 1) if every > 1 else 0, every),
            "markersize": 4, "markerfacecolor": "none"}


def coinciding(runs: Mapping[str, Sequence[dict]], key: str = "log10_loss_mean",
               rtol: float = 0.01) -> list[tuple[str, str]]:
    """Pairs of series whose ``key`` agrees within ``rtol`` (relative to the series' range) at
    every shared epoch: lines that would hide one another without distinct styles."""
    series = {}
    for name, records in runs.items():
        xs, ys = _series(records, key)
        series[name] = dict(zip(xs, ys))
    names, out = list(series), []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            shared = sorted(set(series[a]) & set(series[b]))
            if len(shared) < 2:
                continue
            va = [series[a][e] for e in shared]
            vb = [series[b][e] for e in shared]
            span = max(max(va) - min(va), max(vb) - min(vb), 1e-300)
            if max(abs(x - y) for x, y in zip(va, vb)) <= rtol * span:
                out.append((a, b))
    return out


def coincidence_note(runs: Mapping[str, Sequence[dict]]) -> str:
    """One sentence for a caption: which series coincide in the loss plot, or that none do."""
    pairs = coinciding(runs)
    if not pairs:
        return "No two loss curves coincide within 1% of their range."
    return ("These loss curves coincide within 1% of their range (their markers tell them "
            "apart): " + "; ".join(f"{a} and {b}" for a, b in pairs) + ".")


def _series(records: Sequence[dict], key: str, *, positive: bool = False
            ) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for r in records:
        v = r.get(key)
        if isinstance(v, (int, float)) and math.isfinite(v) and (v > 0 or not positive):
            xs.append(r["epoch"])
            ys.append(v)
    return xs, ys


def _number(value: object) -> float:
    """A metrics value as a float for plotting; missing or non-numeric values become NaN (a gap),
    and the strings "inf"/"-inf"/"nan" that JSON needs for non-finite floats are read back."""
    if isinstance(value, bool):
        return math.nan
    if isinstance(value, (int, float)):
        return float(value)
    if value in ("inf", "-inf", "nan"):
        return float(value)
    return math.nan


def plot_training(runs: Mapping[str, Sequence[dict]], path: str | os.PathLike,
                  *, title: str = "") -> Path:
    """Six panels per run set: log10 loss, smoothed and plain normalized margin (multi and
    global), train/test accuracy and α(t), against epochs (log x where the paper uses it).

    Args:
        runs: label -> metrics records (as in metrics.jsonl).
        path: PNG to write.
    """
    plt = pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    panels = [
        ("log10_loss_mean", "log10 mean training loss", False, "linear"),
        ("smoothed_margin_multi", "smoothed normalized margin (per-layer norms), > 0",
         True, "linear"),
        ("normalized_margin_multi", "normalized margin (per-layer norms), > 0", True, "linear"),
        ("normalized_margin", "normalized margin q_min / ρ^L, > 0", True, "linear"),
        ("train_acc", "accuracy (train; thin dotted: test)", True, "linear"),
        ("alpha", "relative step α(t) (loss-based schedule)", True, "log"),
    ]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (key, label, logx, yscale) in zip(axes.flat, panels):
        for i, (name, records) in enumerate(runs.items()):
            c = colors[i % len(colors)]
            xs, ys = _series(records, key, positive="margin" in key)
            if key == "alpha" and not ys:
                continue
            style = _style(i, len(xs))
            ax.plot(xs, ys, color=c, label=name, lw=1.4, **style)
            if key == "train_acc":
                tx, ty = _series(records, "test_acc")
                ax.plot(tx, ty, color=c, lw=0.8, alpha=0.6,
                        **{**_style(i, len(tx)), "ls": (0, (1, 2))})
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
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, (name, records) in enumerate(runs.items()):
        t = [_number(r.get("wall_time")) for r in records]
        style = _style(i, len(t))
        axes[0].plot(t, [_number(r.get("normalized_margin_multi")) for r in records],
                     label=name, **style)
        axes[1].plot(t, [_number(r.get("log10_loss_mean")) for r in records], label=name,
                     **style)
    axes[0].set_title("normalized margin (per-layer norms) vs wall time", fontsize=10)
    axes[1].set_title("log10 mean training loss vs wall time", fontsize=10)
    for ax in axes:
        ax.set_xlabel("wall-clock seconds")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return save_figure(fig, path, title=title)
