"""Report fragment of a run's robustness analysis: Table 1 and Figure 8 of Lyu & Li (K.2).

Reads the document written by ``marginlab attack`` (RUN_DIR/robustness.json) and writes
RUN_DIR/plots/robustness.png, RUN_DIR/report/robustness.html and RUN_DIR/report/robustness.md.
"""

from __future__ import annotations

import html
import math
import os
from pathlib import Path

import numpy as np

from marginlab.io.storage import atomic_write_text
from marginlab.robustness.evaluate import RobustCurve, RobustnessResult
from marginlab.robustness.plots import eps_grid, plot_curves
from marginlab.train.rundir import RunDir

__all__ = ["PLOT_NAME", "write_report"]

PLOT_NAME = "robustness.png"
SPLIT_ORDER = ("train", "test")
EPS_COLUMNS = 3


def _num(v, fmt: str) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "—"
    return "—" if math.isnan(f) else format(f, fmt)


def _pct(v) -> str:
    s = _num(v, ".1%")
    return s


def _loss(v) -> str:
    s = _num(v, ".2f")
    return "—" if s == "—" else f"10^{s}"


def _table1(snapshots: dict[str, dict]) -> tuple[list[str], list[list[str]]]:
    head = ["model", "epoch", "train loss", "normalized margin", "train acc", "test acc"]
    rows = []
    for name, meta in snapshots.items():
        rows.append([name, _num(meta.get("epoch"), ".0f"), _loss(meta.get("log10_loss_mean")),
                     _num(meta.get("normalized_margin"), ".3g"), _pct(meta.get("train_acc")),
                     _pct(meta.get("test_acc"))])
    return head, rows


def _summary_table(splits: dict[str, dict], eps_marks: dict[str, np.ndarray]
                   ) -> tuple[list[str], list[list[str]]]:
    head = ["split", "model", "n", "accuracy", "median upper (attack)",
            "median lower (certified)", "median lower/upper", "attack failures",
            "robust acc at ε (certified–attack)", "attack time (s)"]
    rows = []
    for split, entry in splits.items():
        for name, snap in entry["snapshots"].items():
            res = RobustnessResult.from_dict(snap["points"])
            s = res.summary()
            ok = res.correct & np.isfinite(res.upper) & (res.upper > 0)
            ratio = float(np.median(res.lower[ok] / res.upper[ok])) if ok.any() else math.nan
            c = res.curve(eps_marks[split])
            marks = "; ".join(f"{e:.2g}: {lo:.0%}–{up:.0%}"
                              for e, lo, up in zip(c.eps, c.certified, c.attack))
            rows.append([split, name, str(s["n"]), _pct(s["accuracy"]),
                         _num(s["median_upper"], ".4g"), _num(s["median_lower"], ".4g"),
                         _num(ratio, ".3f"), str(s["attack_failures"]), marks,
                         _num(s["attack_seconds"], ".1f")])
    return head, rows


def _html_table(head: list[str], rows: list[list[str]]) -> str:
    out = ["<table>", "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    for r in rows:
        out.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _ordered_splits(doc: dict) -> dict[str, dict]:
    splits = doc.get("splits", {})
    names = [s for s in SPLIT_ORDER if s in splits] + [s for s in splits if s not in SPLIT_ORDER]
    return {s: splits[s] for s in names}


def write_report(run_dir: str | os.PathLike, doc: dict) -> tuple[Path, Path, Path]:
    """Write the figure and the HTML/markdown fragments for the document ``doc``.

    Args:
        run_dir: the run directory.
        doc: the content of RUN_DIR/robustness.json.

    Returns:
        Paths of the PNG, the HTML fragment and the markdown fragment.
    """
    run_dir = Path(run_dir)
    splits = _ordered_splits(doc)
    curves: dict[str, dict[str, RobustCurve]] = {}
    n_points: dict[str, int] = {}
    eps_marks: dict[str, np.ndarray] = {}
    snapshots_meta: dict[str, dict] = {}
    for split, entry in splits.items():
        results = {name: RobustnessResult.from_dict(s["points"])
                   for name, s in entry["snapshots"].items()}
        grid = eps_grid([b for r in results.values() for b in (r.upper, r.lower)])
        curves[split] = {name: r.curve(grid) for name, r in results.items()}
        n_points[split] = max((r.n for r in results.values()), default=1)
        eps_marks[split] = grid[-1] / 1.05 * np.arange(1, EPS_COLUMNS + 1) / (EPS_COLUMNS + 1)
        for name, s in entry["snapshots"].items():
            snapshots_meta.setdefault(name, s.get("meta", {}))
    methods = sorted({f"{e['method']} ({e['steps']} steps)" for e in splits.values()})
    png = plot_curves(curves, RunDir(run_dir).plots_dir / PLOT_NAME, n_points=n_points,
                      title=f"L2 robustness, attack: {', '.join(methods)}")
    t1 = _table1(snapshots_meta)
    t2 = _summary_table(splits, eps_marks)
    intro = (
        "Robustness R(z) is the L2 distance from x to the nearest misclassified point of "
        "[0, 1]^d (Lyu & Li, Appendix K.2); a misclassified point has R = 0. For every point, "
        "lower ≤ R ≤ upper: upper is the distance of an adversarial found by the attack and "
        "verified by the model, lower a certified bound (best of the Lipschitz-product, "
        "last-layer row-difference and, for MLPs, CROWN bounds). Robust accuracy at ε counts "
        "points with R ≥ ε: the certified curve (dashed) is a lower bound on it, the attack "
        f"curve (solid) an upper bound. Attack: {', '.join(methods)}."
    )
    notes = sorted({f"{k}: {v}" for e in splits.values() for s in e["snapshots"].values()
                    for k, v in s["points"].get("notes", {}).items()})
    note_html = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    fragment = "\n".join([
        '<section id="robustness">',
        "<h2>L2 robustness of the snapshots (Lyu &amp; Li, Table 1 and Figure 8)</h2>",
        f"<p>{html.escape(intro)}</p>",
        "<h3>Snapshots</h3>",
        _html_table(*t1),
        "<h3>Robustness</h3>",
        _html_table(*t2),
        f'<img src="plots/{PLOT_NAME}" alt="robust accuracy against epsilon">',
        f"<p>Certificates not computed:</p><ul>{note_html}</ul>" if notes else "",
        "</section>",
        "",
    ])
    note_md = "".join(f"- {n}\n" for n in notes)
    markdown = "\n\n".join([
        "## L2 robustness of the snapshots (Lyu & Li, Table 1 and Figure 8)",
        intro,
        "### Snapshots",
        _md_table(*t1),
        "### Robustness",
        _md_table(*t2),
        f"![robust accuracy against epsilon](plots/{PLOT_NAME})",
        (f"Certificates not computed:\n\n{note_md}" if notes else ""),
    ]).rstrip() + "\n"
    sections = RunDir(run_dir).fragments_dir
    html_path = atomic_write_text(sections / "robustness.html", fragment)
    md_path = atomic_write_text(sections / "robustness.md", markdown)
    return png, html_path, md_path
