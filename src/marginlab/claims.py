"""Claims as data: one record per claim of a paper, its verdict computed from a run's numbers.

Every experiment writes ``claims.json`` in its output directory: a JSON list of objects with the
keys of :class:`Claim`. A verdict is never written by hand; it comes from one of the rules below,
applied to numbers the experiment measured:

- :func:`by_effect`: an effect with its standard error; ``reproduced`` when the effect lies at
  least ``z`` (default 3) standard errors from zero in the paper's direction, ``partly`` when it
  lies in the paper's direction but closer than that, ``not reproduced`` otherwise.
- :func:`by_certificate`: an exact or certified comparison (a duality gap, a closed form, a bound
  that holds or fails); ``reproduced`` or ``not reproduced``.
- :func:`not_testable`: the run cannot test the claim (the scale is too small, the data is
  absent); says why.

A quantity that the experiment's construction fixes (a rate forced by the schedule, a start at
the optimum) is never passed to these rules as evidence.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from marginlab.errors import MarginlabError
from marginlab.io.storage import read_json, write_json

__all__ = [
    "CLAIMS_FILE",
    "VERDICTS",
    "Claim",
    "by_certificate",
    "by_effect",
    "not_testable",
    "paired_effect",
    "read_claims",
    "render_table_html",
    "render_table_md",
    "write_claims",
]

CLAIMS_FILE = "claims.json"
VERDICTS = ("reproduced", "partly", "not reproduced", "not testable at this scale")


@dataclass(frozen=True)
class Claim:
    """One claim of a paper and what a run measured of it.

    Attributes:
        claim: the claim in one sentence, e.g. "γ̃ increases along training".
        source: where the paper makes it, e.g. "Lyu & Li, Theorem 4.4".
        paper: the paper's number or statement, as text.
        measured: what this run measured, as text (with its spread).
        effect: the effect the verdict rests on (signed so that the paper's direction is
            positive), or ``None`` for certificate and not-testable claims.
        se: standard error of ``effect``, or ``None``.
        criterion: the rule that decided the verdict, as text.
        verdict: one of :data:`VERDICTS`.
        experiment: id of the experiment that measured it (filled in by :func:`write_claims`).
    """

    claim: str
    source: str
    paper: str
    measured: str
    effect: float | None
    se: float | None
    criterion: str
    verdict: str
    experiment: str = ""

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")


def by_effect(claim: str, source: str, paper: str, measured: str, effect: float, se: float,
              *, z: float = 3.0) -> Claim:
    """Verdict of an effect measured with a standard error.

    Args:
        effect: the effect, signed so that the paper's direction is positive.
        se: its standard error (> 0); a zero, negative or non-finite ``se`` with a finite
            effect cannot support ``reproduced`` and gives ``partly`` at best.
        z: how many standard errors make the effect decisive.
    """
    effect, se = float(effect), float(se)
    decisive = math.isfinite(effect) and math.isfinite(se) and se > 0 and effect >= z * se
    if decisive:
        verdict = "reproduced"
    elif math.isfinite(effect) and effect > 0:
        verdict = "partly"
    else:
        verdict = "not reproduced"
    criterion = f"effect ≥ {z:g} standard errors in the paper's direction"
    return Claim(claim, source, paper, measured, effect, se, criterion, verdict)


def paired_effect(differences: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error (ddof=1) of paired differences; se is NaN for fewer than 2."""
    values = [float(v) for v in differences if math.isfinite(float(v))]
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def by_certificate(claim: str, source: str, paper: str, measured: str, passed: bool,
                   criterion: str) -> Claim:
    """Verdict of an exact or certified comparison (``criterion`` says what was compared)."""
    verdict = "reproduced" if passed else "not reproduced"
    return Claim(claim, source, paper, measured, None, None, criterion, verdict)


def not_testable(claim: str, source: str, paper: str, why: str) -> Claim:
    """A claim this run cannot test; ``why`` says what would (a scale, data, a device)."""
    return Claim(claim, source, paper, "—", None, None, why, "not testable at this scale")


def write_claims(out: str | Path, experiment: str, claims: Iterable[Claim]) -> Path:
    """Write ``claims.json`` into the directory ``out``; returns its path."""
    records = [asdict(Claim(**{**asdict(c), "experiment": experiment})) for c in claims]
    return write_json(Path(out) / CLAIMS_FILE, records)


def read_claims(path: str | Path) -> list[Claim]:
    """Read a ``claims.json`` file (or the one in a directory) back into claims."""
    path = Path(path)
    if path.is_dir():
        path = path / CLAIMS_FILE
    records = read_json(path)
    if not isinstance(records, list):
        raise MarginlabError(f"{path}: expected a JSON list of claims")
    claims = []
    fields = set(Claim.__dataclass_fields__)
    for i, rec in enumerate(records):
        if not isinstance(rec, dict) or not {"claim", "verdict"} <= set(rec):
            raise MarginlabError(f"{path}: claim {i} is not a claim record")
        rec = {k: v for k, v in rec.items() if k in fields}
        for key in ("effect", "se"):
            if isinstance(rec.get(key), str):  # non-finite floats are stored as strings
                rec[key] = float(rec[key])
        try:
            claims.append(Claim(**rec))
        except (TypeError, ValueError) as exc:
            raise MarginlabError(f"{path}: claim {i}: {exc}") from None
    return claims


_COLUMNS = ("source", "claim", "paper", "measured", "verdict")


def _effect_text(c: Claim) -> str:
    if c.effect is None or c.se is None or not math.isfinite(c.se) or c.se <= 0:
        return ""
    return f" ({c.effect / c.se:+.1f} se)"


def render_table_md(claims: Sequence[Claim], links: dict[str, str] | None = None) -> str:
    """A Markdown table of claims; ``links`` maps an experiment id to its report's address."""
    links = links or {}
    lines = ["| experiment | source | claim | paper | measured | verdict |",
             "|---|---|---|---|---|---|"]
    for c in claims:
        exp = f"[{c.experiment}]({links[c.experiment]})" if c.experiment in links else c.experiment
        cells = [exp, c.source, c.claim, c.paper, c.measured, c.verdict + _effect_text(c)]
        lines.append("| " + " | ".join(s.replace("|", "\\|").replace("\n", " ")
                                        for s in cells) + " |")
    return "\n".join(lines) + "\n"


def render_table_html(claims: Sequence[Claim], links: dict[str, str] | None = None) -> str:
    """An HTML table of claims (escaped), one row each, verdicts as CSS classes."""
    links = links or {}
    rows = ["<tr><th>experiment</th>" + "".join(f"<th>{h}</th>" for h in _COLUMNS) + "</tr>"]
    for c in claims:
        exp = html.escape(c.experiment)
        if c.experiment in links:
            exp = f'<a href="{html.escape(links[c.experiment])}">{exp}</a>'
        cells = [c.source, c.claim, c.paper, c.measured]
        verdict = html.escape(c.verdict) + html.escape(_effect_text(c))
        css = c.verdict.replace(" ", "-")
        rows.append(f"<tr><td>{exp}</td>" + "".join(f"<td>{html.escape(s)}</td>" for s in cells)
                    + f'<td class="{css}" title="{html.escape(c.criterion)}">{verdict}</td></tr>')
    return "<table class=\"claims\">\n" + "\n".join(rows) + "\n</table>\n"
