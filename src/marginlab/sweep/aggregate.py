"""Mean ± std over seeds of a sweep's results, as typed rows, a PNG with error bars and a
report page.

"mean ± std" has one definition in marginlab, :func:`mean_std`: the mean of the finite values
and their sample standard deviation (ddof = 1, Bessel's correction), undefined (NaN) for fewer
than two values.
"""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from marginlab.errors import MarginlabError
from marginlab.io.plots import pyplot, save_figure
from marginlab.io.report import Report, fmt
from marginlab.sweep.spec import TRAIN_REPORT_KEYS

__all__ = ["AggregateRow", "MeanStd", "aggregate", "format_mean_std", "mean_std", "plot_rows",
           "write_report"]

MAX_PANELS = 6


@dataclass(frozen=True)
class MeanStd:
    """Mean ± std of some values (see :func:`mean_std`).

    Attributes:
        mean: mean of the finite values (NaN if none).
        std: their standard deviation with ``ddof`` (NaN if n <= ddof).
        n: number of finite values.
    """

    mean: float
    std: float
    n: int

    def __iter__(self):
        return iter((self.mean, self.std, self.n))


def mean_std(values: Iterable[Any], ddof: int = 1) -> MeanStd:
    """Mean and standard deviation of the finite numbers among ``values``.

    std = sqrt(Σ (v − mean)² / (n − ddof)); the default ddof = 1 is the sample standard deviation
    (Bessel's correction), which marginlab uses for every "mean ± std" over seeds or trials. Sums
    are exact-rounded (``math.fsum``). Booleans count as 0/1; non-numbers, NaN and ±inf are left
    out.

    Returns:
        A :class:`MeanStd` (unpacks as ``mean, std, n``); std is NaN when n <= ddof, mean when
        n = 0.
    """
    v = [float(a) for a in values if isinstance(a, (int, float)) and math.isfinite(a)]
    n = len(v)
    mean = math.fsum(v) / n if n else math.nan
    var = math.fsum((a - mean) ** 2 for a in v) / (n - ddof) if n > ddof else math.nan
    return MeanStd(mean=mean, std=math.sqrt(var), n=n)


def format_mean_std(values: Iterable[Any], digits: int = 3) -> str:
    """``mean ± std`` (:func:`mean_std`, ddof = 1) for a table: ``–`` without finite values and
    the mean alone for one value."""
    m = mean_std(values)
    if not m.n:
        return "–"
    return fmt(m.mean, digits) if m.n == 1 else f"{fmt(m.mean, digits)} ± {fmt(m.std, 2)}"


@dataclass(frozen=True)
class AggregateRow:
    """``y`` over the trials sharing one ``by`` group and one ``x`` value.

    Attributes:
        group: (setting, value) pairs of the ``by`` settings, in the order given.
        x: the x value (as recorded: a number, string or list).
        y: the result key.
        n: trials with a finite value of ``y``.
        n_missing: trials of this point without one (absent, NaN, inf, not a number).
        mean: mean of the finite values (NaN if none).
        std: their standard deviation with ``ddof`` (sample std for ddof=1; NaN if n <= ddof).
        min, max: extremes of the finite values (NaN if none).
    """

    group: tuple[tuple[str, Any], ...]
    x: Any
    y: str
    n: int
    n_missing: int
    mean: float
    std: float
    min: float
    max: float

    @property
    def label(self) -> str:
        """``by`` settings as ``key=value, ...`` (empty without groups)."""
        return ", ".join(f"{k}={_text(v)}" for k, v in self.group)


def aggregate(records: Iterable[Any], *, x: str, y: str, by: Sequence[str] = (),
              ddof: int = 1) -> list[AggregateRow]:
    """Group ``records`` by the ``by`` settings and ``x``, and summarize ``y`` over each group.

    Args:
        records: :class:`~marginlab.sweep.runner.TrialRecord` objects or their dicts (failed
            trials are left out), or flat dicts of values. A key is looked up in the record's
            ``params``, then ``result``, then ``settings``, then the record itself.
        x: key of the x values.
        y: key of the values summarized.
        by: keys whose values tell groups apart.
        ddof: delta degrees of freedom of the standard deviation.

    Returns:
        One row per (group, x): groups in order of first appearance, x ascending when every x
        is a number (else in order of first appearance).
    """
    cells: dict[tuple, dict] = {}
    xs: dict[str, Any] = {}
    groups: dict[str, tuple] = {}
    for rec in records:
        d = rec.to_dict() if hasattr(rec, "to_dict") else rec
        if d.get("status", "ok") != "ok":
            continue
        group = tuple((k, _lookup(d, k)) for k in by)
        xv = _lookup(d, x)
        gkey, xkey = _key(group), _key(xv)
        groups.setdefault(gkey, group)
        xs.setdefault(xkey, xv)
        cells.setdefault((gkey, xkey), {"values": [], "missing": 0})
        value = _number(_lookup(d, y, required=False))
        if value is None:
            cells[(gkey, xkey)]["missing"] += 1
        else:
            cells[(gkey, xkey)]["values"].append(value)
    order = list(xs)
    if all(_is_number(v) for v in xs.values()):
        order.sort(key=lambda k: xs[k])
    rows = []
    for gkey, group in groups.items():
        for xkey in order:
            cell = cells.get((gkey, xkey))
            if cell is None:
                continue
            v = cell["values"]
            m = mean_std(v, ddof)
            rows.append(AggregateRow(group=group, x=xs[xkey], y=y, n=m.n,
                                     n_missing=cell["missing"], mean=m.mean, std=m.std,
                                     min=min(v) if v else math.nan,
                                     max=max(v) if v else math.nan))
    return rows


def plot_rows(panels: Mapping[str, list[AggregateRow]], path: str | os.PathLike, *,
              x: str, title: str = "", logx: bool | None = None) -> Path:
    """One panel per y key: mean ± std (error bars) against x, one line per group.

    Args:
        panels: y key -> its rows from :func:`aggregate`.
        path: PNG to write.
        x: name of the x axis.
        logx: logarithmic x axis (None: when positive x values span two decades or more).
    """
    plt = pyplot()
    n = max(1, len(panels))
    cols = min(n, 3)
    rows_n = math.ceil(n / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(5.2 * cols, 4.0 * rows_n), squeeze=False)
    all_x = [r.x for rows in panels.values() for r in rows]
    numeric = bool(all_x) and all(_is_number(v) for v in all_x)
    if logx is None:
        pos = [float(v) for v in all_x if numeric and v > 0]
        logx = numeric and len(pos) == len(all_x) and bool(pos) and max(pos) / min(pos) >= 100
    categories = list(dict.fromkeys(_key(v) for v in all_x))
    labels = {_key(v): _text(v) for v in all_x}
    for ax, (y, rows) in zip(axes.flat, panels.items()):
        by_group: dict[str, list[AggregateRow]] = {}
        for r in rows:
            by_group.setdefault(r.label, []).append(r)
        for i, (label, grp) in enumerate(by_group.items()):
            pts = [r for r in grp if r.n]
            # Categorical x: shift the groups apart a little so that error bars do not overlap.
            shift = 0.04 * (i - (len(by_group) - 1) / 2)
            xv = [float(r.x) if numeric else categories.index(_key(r.x)) + shift for r in pts]
            err = [0.0 if math.isnan(r.std) else r.std for r in pts]
            ax.errorbar(xv, [r.mean for r in pts], yerr=err, marker="o", ms=4, capsize=3,
                        lw=1.4, color=f"C{i % 10}", label=label or None)
        ax.set_title(f"{y} (mean ± std)", fontsize=10)
        ax.set_xlabel(x)
        if logx:
            ax.set_xscale("log")
        if not numeric:
            ax.set_xticks(range(len(categories)), [labels[c] for c in categories])
        ax.grid(alpha=0.3)
        if any(by_group):
            ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    return save_figure(fig, path, title=title)


def default_y(spec, records: Sequence[Any]) -> list[str]:
    """The result keys a report shows when the spec names none."""
    present: dict[str, None] = {}
    for rec in records:
        for k, v in (rec.result or {}).items():
            if k not in rec.params and _number(v) is not None:
                present.setdefault(k)
    if spec.kind == "train":
        return [k for k in TRAIN_REPORT_KEYS if k in present]
    return list(present)[:MAX_PANELS]


def write_report(spec, result) -> Path:
    """``OUT/report.html`` and ``report.md`` with the table of mean ± std and
    ``plots/sweep.png``; failures listed with their errors.

    Args:
        spec: the :class:`~marginlab.sweep.spec.SweepSpec`.
        result: the :class:`~marginlab.sweep.runner.SweepResult` (its records and counts).
    """
    out = result.out
    ok = [r for r in result.records if r.ok]
    names = [*spec.grid, "seed"]
    x = spec.report.x or names[0]
    by = spec.report.by if spec.report.by is not None else [k for k in spec.grid if k != x]
    ys = spec.report.y or default_y(spec, ok)
    rep = Report(spec.title)
    rep.paragraph(
        f"{result.summary()}. Mean ± sample std (ddof 1) over seeds {spec.seeds}; n = trials "
        f"with a finite value. Backend {result.backend}, workers {result.workers}; "
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}."
    )
    if not result.ok:
        unrecorded = result.total - len(result.records)
        rep.paragraph(f"{len(result.failed)} of {result.total} trials failed"
                      + (f" and {unrecorded} have not run" if unrecorded else "")
                      + ": the numbers below cover the others only.", note=True)
    panels = {y: aggregate(ok, x=x, y=y, by=by) for y in ys}
    panels = {y: rows for y, rows in panels.items() if any(r.n for r in rows)}
    missing = [y for y in ys if y not in panels]
    if missing:
        rep.paragraph(f"No finite values of {', '.join(missing)} in any trial.", note=True)
    if panels:
        png = plot_rows(panels, out / "plots" / "sweep.png", x=x,
                        title=f"{spec.title}: mean ± std over {len(spec.seeds)} seed(s)",
                        logx=spec.report.logx)
        rep.image(f"plots/{png.name}", "mean ± std of the results against " + x)
        first = next(iter(panels.values()))
        headers = [*by, x, "trials", *(f"{y} (mean ± std)" for y in panels)]
        table = []
        for i, row in enumerate(first):
            cells = [_text(v) for _, v in row.group] + [_text(row.x), row.n + row.n_missing]
            for rows in panels.values():
                r = rows[i]
                cells.append(f"{fmt(r.mean)} ± {fmt(r.std, 2)}" if r.n else "–")
            table.append(cells)
        rep.heading("Results")
        rep.table(headers, table)
    if result.failed:
        rep.heading("Failed trials")
        rep.table(["trial", "settings", "error"],
                  [[r.id, _text(r.params), r.error] for r in result.failed])
    rep.heading("Spec")
    rep.code("{\n" + ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}"
                                  for k, v in spec.to_dict().items()) + "\n}")
    return rep.write(out)


# --------------------------------------------------------------------------- helpers


def _lookup(d: Mapping, key: str, *, required: bool = True) -> Any:
    for part in ("params", "result", "settings"):
        sub = d.get(part)
        if isinstance(sub, Mapping) and key in sub:
            return sub[key]
    if key in d or not required:
        return d.get(key)
    raise MarginlabError(f"no {key!r} in a sweep record; it has "
                         f"{', '.join(sorted({*d.get('params', {}), *(d.get('result') or {})}))}")


def _number(v: Any) -> float | None:
    """A finite float, or None (inf/NaN are stored as the strings "inf", "nan")."""
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return float(v) if math.isfinite(v) else None
    return None


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _key(v: Any) -> str:
    return json.dumps(v, sort_keys=True)


def _text(v: Any) -> str:
    if isinstance(v, float):
        return fmt(v)
    if isinstance(v, dict):
        return ", ".join(f"{k}={_text(x)}" for k, x in v.items())
    return v if isinstance(v, str) else json.dumps(v)
