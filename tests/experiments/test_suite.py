"""``reproduce --all``: every experiment in turn, resumable, failures in the table, one index."""

import json

import pytest

from marginlab import experiments
from marginlab.claims import by_effect, read_claims, write_claims
from marginlab.cli import main
from marginlab.errors import MarginlabError
from marginlab.experiments import Experiment, RunRequest
from marginlab.experiments.suite import run_all

CALLS: list[str] = []


def _good(request: RunRequest):
    CALLS.append(f"good resume={request.resume}")
    request.out.mkdir(parents=True, exist_ok=True)
    (request.out / "report.html").write_text("<p>report</p>")
    (request.out / "report.md").write_text("report")
    write_claims(request.out, "good", [
        by_effect("margin grows", "Lyu & Li, Theorem 4.2", "21x", "5x ± 1", 5.0, 1.0)])
    return request.out / "report.html"


def _broken(request: RunRequest):
    CALLS.append("broken")
    raise ZeroDivisionError("division by zero in the trainer")


def _interrupted(request: RunRequest):
    CALLS.append(f"interrupted resume={request.resume}")
    request.out.mkdir(parents=True, exist_ok=True)
    if not request.resume:
        raise KeyboardInterrupt
    write_claims(request.out, "interrupted", [
        by_effect("loss falls", "Wei et al., Theorem 2.1", "→ 0", "ok", 1.0, 0.1)])
    return request.out / "report.html"


@pytest.fixture
def registry(monkeypatch):
    fake = {
        "good": Experiment(id="good", title="g", reference="Lyu & Li, Table 1",
                           scales={"cpu": {"data": "mnist5k"}}, run=_good),
        "broken": Experiment(id="broken", title="b", reference="Wei et al., Figure 2",
                             scales={"cpu": {}}, run=_broken),
        "needs-files": Experiment(id="needs-files", title="n", reference="Lyu & Li, Figure 5",
                                  scales={"cpu": {"data": "cifar10"}}, run=_good),
        "paper-only": Experiment(id="paper-only", title="p", reference="Wei et al., F.4",
                                 scales={"paper": {}}, run=_good),
        "interrupted": Experiment(id="interrupted", title="i", reference="Wei et al., 2.1",
                                  scales={"cpu": {}}, run=_interrupted),
    }
    monkeypatch.setattr(experiments, "_REGISTRY", fake)
    monkeypatch.setattr(experiments, "_LOADED", True)
    CALLS.clear()
    return fake


def test_run_all_tables_every_claim_and_failure_and_resumes(tmp_path, registry):
    out = tmp_path / "all"
    ids = ["good", "broken", "needs-files", "paper-only"]
    res = run_all(out, "cpu", ids=ids, log=lambda s: None)
    status = {o.id: o.status for o in res.outcomes}
    assert status == {"good": "done", "broken": "failed", "needs-files": "no data",
                      "paper-only": "no scale"}
    assert not (out / "needs-files").exists()  # the data check ran before anything was made
    by_exp = {c.experiment: c for c in res.claims}
    assert by_exp["good"].verdict == "reproduced"
    for bad in ("broken", "needs-files", "paper-only"):
        assert by_exp[bad].verdict == "not testable at this scale"
    assert "ZeroDivisionError" in by_exp["broken"].criterion
    assert "--root" in by_exp["needs-files"].criterion
    md = (out / "index.md").read_text()
    html = (out / "index.html").read_text()
    assert "[good](good/report.md)" in md and 'href="good/report.html"' in html
    assert md.count("\n| ") == 1 + 4 + 1 + 4  # claims header, 4 claims, status header, 4 rows
    suite = json.loads((out / "suite.json").read_text())
    assert [e["status"] for e in suite["experiments"]] == ["done", "failed", "no data",
                                                          "no scale"]
    # Again: the finished experiment is skipped, the failed one is tried again.
    CALLS.clear()
    res = run_all(out, "cpu", ids=ids, log=lambda s: None)
    assert CALLS == ["broken"]
    assert {o.id: o.status for o in res.outcomes}["good"] == "skipped"
    assert len(read_claims(out / "good")) == 1


def test_interrupted_experiment_resumes(tmp_path, registry):
    out = tmp_path / "all"
    with pytest.raises(KeyboardInterrupt):
        run_all(out, "cpu", ids=["interrupted"], log=lambda s: None)
    res = run_all(out, "cpu", ids=["interrupted"], log=lambda s: None)
    assert CALLS == ["interrupted resume=False", "interrupted resume=True"]
    assert res.outcomes[0].status == "done" and res.claims[0].verdict == "reproduced"


def test_cli_all_and_bad_names(tmp_path, registry, capsys):
    registry.pop("interrupted")
    assert main(["reproduce", "--all", "--out", str(tmp_path / "x")]) == 0
    out = capsys.readouterr().out
    assert "index:" in out and "[4/4]" in out
    with pytest.raises(MarginlabError, match="unknown experiment"):
        run_all(tmp_path / "y", ids=["nope"], log=lambda s: None)
    (tmp_path / "file").write_text("")
    assert main(["reproduce", "--all", "--out", str(tmp_path / "file")]) == 2
