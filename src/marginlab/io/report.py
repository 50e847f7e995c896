"""Report pages a person would rather look at than read JSON: HTML with the PNGs, plus markdown.

A :class:`Report` collects headings, paragraphs, tables and images and renders both formats
(the page of one training run is :func:`marginlab.run_report.write_run_report`).
"""

from __future__ import annotations

import html
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from marginlab.io import storage

__all__ = ["Report", "fmt"]

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
