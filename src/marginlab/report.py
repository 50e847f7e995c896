"""Report pages a person would rather look at than read JSON: HTML with the PNGs, plus markdown.

A :class:`Report` collects headings, paragraphs, tables and images and renders both formats.
:func:`write_run_report` builds the page of one training run from its directory, including the
fragments other analyses left in ``RUN_DIR/report/`` (robustness, convergence analysis).
"""

from __future__ import annotations

import html
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from marginlab import storage

__all__ = ["Report", "fmt", "write_run_report"]

CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222;
       line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; }
table { border-collapse: collapse; margin: 1em 0; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .3em .6em; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; margin: .5em 0; }
code, pre { background: #f6f6f6; padding: .1em .3em; font-size: .9em; }
pre { padding: .6em; overflow-x: auto; }
.note { background: #fff8e0; border-left: 4px solid #e0b000; padding: .5em 1em; }
"""


def fmt(value, digits: int = 4) -> str:
    """Format a number for a table: integers as is, floats to ``digits`` significant digits."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.{digits}g}"
    return str(value)


@dataclass
class Report:
    """An HTML + markdown page built block by block."""

    title: str
    _html: list[str] = field(default_factory=list)
    _md: list[str] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> Report:
        self._html.append(f"<h{level}>{html.escape(text)}</h{level}>")
        self._md.append(f"{'#' * level} {text}\n")
        return self

    def paragraph(self, text: str, *, note: bool = False) -> Report:
        cls = ' class="note"' if note else ""
        self._html.append(f"<p{cls}>{html.escape(text)}</p>")
        self._md.append(f"{'> ' if note else ''}{text}\n")
        return self

    def code(self, text: str) -> Report:
        self._html.append(f"<pre>{html.escape(text)}</pre>")
        self._md.append(f"```\n{text}\n```\n")
        return self

    def table(self, headers: list[str], rows: list[list]) -> Report:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(fmt(c))}</td>" for c in row) + "</tr>"
            for row in rows
        )
        self._html.append(f"<table><tr>{head}</tr>{body}</table>")
        md = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        md += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
        self._md.append("\n".join(md) + "\n")
        return self

    def image(self, path: str, alt: str = "") -> Report:
        """An image, by path relative to the page."""
        self._html.append(f'<img src="{html.escape(path)}" alt="{html.escape(alt)}">')
        self._md.append(f"![{alt}]({path})\n")
        return self

    def raw(self, html_text: str, md_text: str = "") -> Report:
        self._html.append(html_text)
        if md_text:
            self._md.append(md_text)
        return self

    def html(self) -> str:
        body = "\n".join(self._html)
        return (f"<!doctype html>\n<html><head><meta charset='utf-8'>"
                f"<title>{html.escape(self.title)}</title><style>{CSS}</style></head>\n"
                f"<body><h1>{html.escape(self.title)}</h1>\n{body}\n</body></html>\n")

    def markdown(self) -> str:
        return f"# {self.title}\n\n" + "\n".join(self._md)

    def fragment(self) -> tuple[str, str]:
        """HTML and markdown without the page around them, for inclusion in another report."""
        return "\n".join(self._html), "\n".join(self._md)

    def write(self, directory: str | os.PathLike, name: str = "report") -> Path:
        """Write ``name.html`` and ``name.md`` into ``directory``; return the HTML path."""
        directory = Path(directory)
        storage.atomic_write_text(directory / f"{name}.md", self.markdown())
        return storage.atomic_write_text(directory / f"{name}.html", self.html())


SNAPSHOT_HEADERS = ["snapshot", "epoch", "log10 train loss", "normalized margin (multi)",
                    "normalized margin", "train acc", "test acc"]


def snapshot_rows(run_dir: Path) -> list[list]:
    """Table-1-style rows from the snapshots' metadata."""
    from marginlab import models

    rows = []
    for path in sorted((run_dir / "snapshots").glob("model-*.safetensors"),
                       key=lambda p: int(p.stem.split("-")[1])):
        extra = models.metadata(path).get("extra", {})
        rows.append([path.stem, extra.get("epoch"), extra.get("log10_loss_mean"),
                     extra.get("normalized_margin_multi"), extra.get("normalized_margin"),
                     extra.get("train_acc"), extra.get("test_acc")])
    return rows


def write_run_report(run_dir: str | os.PathLike) -> Path:
    """Write ``RUN_DIR/report.html`` and ``report.md`` from what the run directory holds."""
    from marginlab.train.rundir import RunDir

    run = RunDir(run_dir)
    config = run.config()
    metrics = run.metrics()
    rep = Report(f"marginlab run: {run.path.name}")
    model = config.get("model", {})
    rep.paragraph(
        f"Model {model.get('name')} {model.get('kwargs', {})}; data {config.get('data')}; "
        f"schedule {config.get('schedule')}; loss {config.get('loss')}; batch size "
        f"{config.get('batch_size')}; seed {config.get('seed')}; device {config.get('device')}."
    )
    if metrics:
        last = metrics[-1]
        rep.heading("Final epoch")
        keys = ["epoch", "log10_loss_mean", "normalized_margin", "normalized_margin_multi",
                "smoothed_margin", "smoothed_margin_multi", "q_min", "rho", "train_acc",
                "test_acc", "alpha", "wall_time"]
        rep.table(["quantity", "value"], [[k, last.get(k)] for k in keys if k in last])
    rows = snapshot_rows(run.path)
    if rows:
        rep.heading("Snapshots (Lyu & Li, Table 1 style)")
        rep.table(SNAPSHOT_HEADERS, rows)
    for png in sorted((run.path / "plots").glob("*.png")):
        if not png.name.startswith(("robust", "analysis")):
            rep.image(f"plots/{png.name}", png.stem)
    for frag in sorted((run.path / "report").glob("*.html")):
        md = frag.with_suffix(".md")
        rep.raw(frag.read_text(encoding="utf-8"),
                md.read_text(encoding="utf-8") if md.exists() else "")
    rep.heading("Configuration")
    rep.code(run.config_path.read_text(encoding="utf-8"))
    return rep.write(run.path)
