"""Every registered experiment in turn, and one table of every claim they measured.

``marginlab reproduce --all --scale cpu --out DIR`` runs each experiment into ``DIR/<id>/``,
collects the ``claims.json`` files and writes ``DIR/index.html`` and ``DIR/index.md``: one row per
claim of both papers (the paper's number, what was measured, the computed verdict, a link to the
experiment's report). It is resumable: an experiment whose directory holds a readable
``claims.json`` is not run again, and an interrupted one is continued (``resume``). An
experiment that fails, or whose data is missing, still appears in the table, as a claim
``not testable at this scale`` saying why, and the others go on. ``DIR/suite.json`` records what
each experiment did and how long it took.
"""

from __future__ import annotations

import dataclasses
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from marginlab.claims import (
    CLAIMS_FILE,
    Claim,
    not_testable,
    read_claims,
    render_table_html,
    render_table_md,
)
from marginlab.errors import MarginlabError
from marginlab.experiments import Experiment, all_experiments
from marginlab.io import storage
from marginlab.io.report import Report

__all__ = ["ExperimentOutcome", "SuiteResult", "run_all", "write_index"]

STATUS_FILE = "suite.json"


@dataclasses.dataclass(frozen=True)
class ExperimentOutcome:
    """What happened to one experiment of the suite.

    Attributes:
        id: experiment id.
        status: ``done`` (ran now), ``skipped`` (claims already there), ``failed``,
            ``no data`` (the data check failed before anything was created), ``no scale``,
            ``no claims`` (it ran but wrote no ``claims.json``).
        seconds: wall time spent on it now (0 when skipped).
        message: the error, for ``failed`` and ``no data``.
        claims: its claims (for a failure, one ``not testable`` claim saying why).
    """

    id: str
    status: str
    seconds: float
    message: str
    claims: list[Claim]


@dataclasses.dataclass(frozen=True)
class SuiteResult:
    out: Path
    scale: str
    outcomes: list[ExperimentOutcome]
    index: Path

    @property
    def claims(self) -> list[Claim]:
        return [c for o in self.outcomes for c in o.claims]


def _failure(exp: Experiment, why: str) -> list[Claim]:
    claim = not_testable(f"every claim of {exp.id} ({exp.title})", exp.reference, "—", why)
    return [dataclasses.replace(claim, experiment=exp.id)]


def _finished(folder: Path) -> list[Claim] | None:
    """The claims of a finished experiment directory, or None (absent or unreadable)."""
    if not (folder / CLAIMS_FILE).is_file():
        return None
    try:
        return read_claims(folder)
    except (MarginlabError, OSError, ValueError):
        return None


def _one(exp: Experiment, out: Path, scale: str, *, device: str, root: Path | None,
         seed: int) -> ExperimentOutcome:
    folder = out / exp.id
    if scale not in exp.scales:
        why = f"{exp.id} has no {scale} scale"
        return ExperimentOutcome(exp.id, "no scale", 0.0, why, _failure(exp, why))
    done = _finished(folder)
    if done is not None:
        return ExperimentOutcome(exp.id, "skipped", 0.0, "", done)
    start = time.perf_counter()
    try:
        request = exp.request(scale, folder, device=device, root=root, seed=seed,
                              resume=folder.exists())
        exp.check_data(request)
    except MarginlabError as exc:
        why = f"not run: {exc}"
        return ExperimentOutcome(exp.id, "no data", time.perf_counter() - start, str(exc),
                                 _failure(exp, why))
    try:
        exp.run(request)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # one experiment's failure must not stop the others
        kind = "" if isinstance(exc, MarginlabError) else f"{type(exc).__name__}: "
        msg = f"{kind}{exc}".strip().splitlines()[0] if str(exc) else type(exc).__name__
        storage.atomic_write_text(out / f"{exp.id}.error.txt", traceback.format_exc())
        return ExperimentOutcome(exp.id, "failed", time.perf_counter() - start, msg,
                                 _failure(exp, f"failed at this scale: {msg} (traceback in "
                                                f"{exp.id}.error.txt)"))
    seconds = time.perf_counter() - start
    claims = _finished(folder)
    if claims is None:
        return ExperimentOutcome(exp.id, "no claims", seconds, "wrote no claims.json",
                                 _failure(exp, "the experiment ran but wrote no claims.json, "
                                               "so none of its claims has a verdict"))
    return ExperimentOutcome(exp.id, "done", seconds, "", claims)


def run_all(out: str | Path, scale: str = "cpu", *, device: str = "cpu",
            root: Path | None = None, seed: int = 0, ids: Sequence[str] | None = None,
            log: Callable[[str], None] = print) -> SuiteResult:
    """Run every registered experiment (or those in ``ids``) at ``scale`` into ``out/<id>``
    and write the index of all their claims after each one.

    Raises:
        MarginlabError: ``out`` exists and is not a directory, or ``ids`` names an unknown
            experiment.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise MarginlabError(f"{out} exists and is not a directory")
    experiments = all_experiments()
    chosen = list(experiments) if ids is None else list(ids)
    unknown = [i for i in chosen if i not in experiments]
    if unknown:
        raise MarginlabError(f"unknown experiment {unknown[0]!r}; known: "
                             f"{', '.join(experiments)}")
    out.mkdir(parents=True, exist_ok=True)
    outcomes: list[ExperimentOutcome] = []
    start = time.perf_counter()
    for k, exp_id in enumerate(chosen, 1):
        log(f"[{k}/{len(chosen)}] {exp_id} ({scale}) ...")
        outcome = _one(experiments[exp_id], out, scale, device=device, root=root, seed=seed)
        outcomes.append(outcome)
        extra = f": {outcome.message}" if outcome.message else ""
        log(f"[{k}/{len(chosen)}] {exp_id}: {outcome.status} in {outcome.seconds:.0f} s, "
            f"{len(outcome.claims)} claims{extra}")
        index = write_index(out, scale, outcomes, time.perf_counter() - start)
    if not chosen:
        index = write_index(out, scale, outcomes, 0.0)
    return SuiteResult(out=out, scale=scale, outcomes=outcomes, index=index)


def _paper_order(c: Claim) -> tuple[int, str]:
    return (0 if c.source.startswith("Lyu") else 1, c.source)


def write_index(out: Path, scale: str, outcomes: Sequence[ExperimentOutcome],
                seconds: float) -> Path:
    """Write ``index.html``, ``index.md`` and ``suite.json`` into ``out``; returns the HTML."""
    links = {o.id: f"{o.id}/report.html" for o in outcomes
             if (out / o.id / "report.html").is_file()}
    md_links = {o.id: f"{o.id}/report.md" for o in outcomes
                if (out / o.id / "report.md").is_file()}
    claims = sorted((c for o in outcomes for c in o.claims), key=_paper_order)
    counts: dict[str, int] = {}
    for c in claims:
        counts[c.verdict] = counts.get(c.verdict, 0) + 1
    rep = Report(f"marginlab: every claim of Lyu & Li and Wei et al., {scale} scale")
    if scale == "cpu":
        rep.paragraph("CPU scale: smaller networks and data than the papers'; the verdicts say "
                      "what these runs show, not what the papers' runs showed.", note=True)
    rep.paragraph(f"{len(claims)} claims from {len(outcomes)} experiments: " + ", ".join(
        f"{v} {k}" for k, v in counts.items()) + ". Verdicts are computed from each run's own "
        "numbers (reproduced: an effect of at least 3 standard errors in the paper's "
        "direction, or an exact comparison that holds).")
    rep.raw(render_table_html(claims, links), render_table_md(claims, md_links))
    rep.heading("Experiments")
    rep.table(["experiment", "status", "seconds", "claims", "message"],
              [[o.id, o.status, round(o.seconds, 1), len(o.claims), o.message]
               for o in outcomes])
    rep.paragraph(f"Wall time of this invocation: {seconds:.0f} s (experiments skipped because "
                  "they had finished earlier count 0).")
    storage.write_json(out / STATUS_FILE, {
        "scale": scale, "seconds": seconds,
        "experiments": [{"id": o.id, "status": o.status, "seconds": o.seconds,
                         "message": o.message, "claims": len(o.claims)} for o in outcomes]})
    return rep.write(out, name="index")
