"""The engine under experiments, ``run_trials``: the periodic status callback (in this process and
on the worker pool), a training trial interrupted mid-run by raising from a write and continued
from its checkpoint by the next call, and failures recorded while the other trials finish."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from marginlab import storage
from marginlab.progress import configured
from marginlab.sweep import Trial, read_records, run_trials, trial_id
from marginlab.sweep.spec import bind_run_dir, train_trial
from marginlab.train.rundir import RunDir

TIME_KEYS = {"wall_time", "cpu_time"}
TRAIN = {"model": "mlp", "widths": [16], "data": "digits", "n_train": 60, "n_test": 30,
         "epochs": 6, "batch_size": 20, "seed": 3,
         "schedule": {"name": "loss_based", "alpha0": 1.0}, "trajectory_every": 2}


def _trial(settings: dict, params: dict | None = None) -> Trial:
    return Trial(trial_id(settings), params or dict(settings), settings)


def stepping_trial(settings: dict) -> dict:
    """Writes ``step 1`` … into its step file, then waits for the go file (at most 60 s)."""
    folder = Path(settings["dir"])
    step_file = folder / f"step-{settings['x']}.txt"
    step_file.write_text("step 1")
    deadline = time.monotonic() + 60
    while not (folder / "go").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    step_file.write_text("step 2")
    return {"x": settings["x"], "went": (folder / "go").exists()}


def failing_trial(settings: dict) -> dict:
    if settings["x"] == 2:
        raise ValueError("x = 2 fails by design")
    return {"y": 10 * settings["x"]}


class _StepStatus:
    """A status callback: each running trial's step file. Once it has seen ``n`` trials running
    at step 1 together in 5 calls (time for progress lines to show them), it creates the go
    file. Remembers the trials it was called with."""

    def __init__(self, folder: Path, n: int):
        self.folder, self.n = folder, n
        self.calls: list[list[str]] = []
        self.together = 0

    def __call__(self, running: list[Trial]) -> dict[str, str]:
        self.calls.append(sorted(t.id for t in running))
        values = {}
        for t in running:
            path = self.folder / f"step-{t.settings['x']}.txt"
            if path.exists():
                values[f"x{t.settings['x']}"] = path.read_text()
        self.together += list(values.values()).count("step 1") == self.n
        if self.together >= 5:
            (self.folder / "go").touch()
        return values


@pytest.mark.parametrize("workers", [0, 2])
def test_status_shows_the_running_trials_on_the_progress_line(tmp_path, capsys, workers):
    trials = [_trial({"x": x, "dir": str(tmp_path)}) for x in (1, 2)]
    status = _StepStatus(tmp_path, n=1 if workers == 0 else 2)
    with configured(quiet=False, interval=0.05):
        run = run_trials(tmp_path / "trials.jsonl", trials, lambda t: stepping_trial,
                         workers=workers, progress=True, desc="steps", unit="step",
                         status=status, status_every=0.05)
    assert [r.result["x"] for r in run.records] == [1, 2] and all(r.ok for r in run.records)
    assert all(r.result["went"] for r in run.records)  # released by the status callback
    ids = [t.id for t in trials]
    # Called with the trials in flight only: in this process one at a time, on the pool both.
    assert status.calls and all(set(c) <= set(ids) for c in status.calls)
    assert (sorted(ids) in status.calls) == (workers == 2)
    err = capsys.readouterr().err
    assert "[steps] step 0/2" in err and "x1=step 1" in err
    assert "failed" not in err


def test_a_raising_status_is_noted_once_and_the_trials_go_on(tmp_path, capsys):
    calls = []

    def broken(running):
        calls.append(len(running))
        raise RuntimeError("cannot read")

    def slow(settings):
        time.sleep(0.5)
        return {"x": settings["x"]}

    trials = [_trial({"x": x}) for x in (1, 2)]
    with configured(quiet=False, interval=0.05):
        run = run_trials(tmp_path / "trials.jsonl", trials, lambda t: slow, workers=0,
                         progress=True, status=broken, status_every=0.05)
    assert [r.result for r in run.records] == [{"x": 1}, {"x": 2}] and calls == [1]
    assert capsys.readouterr().err.count("status display stopped: RuntimeError: cannot read") == 1


def test_failures_are_recorded_while_the_other_trials_finish(tmp_path):
    trials = [_trial({"x": x}) for x in (1, 2, 3)]
    path = tmp_path / "trials.jsonl"
    run = run_trials(path, trials, lambda t: failing_trial, workers=0, progress=False)
    assert [r.ok for r in run.records] == [True, False, True]
    assert run.records[1].error == "ValueError: x = 2 fails by design"
    assert [r.result for r in run.records if r.ok] == [{"y": 10}, {"y": 30}]
    # resumed: the failed trial alone runs again
    again = run_trials(path, trials, lambda t: failing_trial, workers=0, progress=False)
    assert again.skipped == 2 and again.ran == 1 and not again.records[1].ok
    assert len(read_records(tmp_path)) == 4


class _Killed(BaseException):
    """Stands for SIGKILL: not an Exception, so neither the engine nor the trainer catches it."""


def _kill_at_metrics_write(monkeypatch, n: int) -> None:
    real, calls = RunDir.append_metrics, []

    def wrapped(self, record):
        real(self, record)
        calls.append(1)
        if len(calls) == n:
            raise _Killed

    monkeypatch.setattr(RunDir, "append_metrics", wrapped)


def _metrics(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIME_KEYS}
            for r in storage.read_jsonl(RunDir(run_dir).metrics_path)]


def test_an_interrupted_training_trial_continues_from_its_checkpoint(tmp_path, monkeypatch):
    reference = tmp_path / "reference"
    expected = train_trial(TRAIN, str(reference))
    assert expected["epochs"] == TRAIN["epochs"]

    trial = _trial(TRAIN)
    run_dir, path = tmp_path / "runs" / trial.id, tmp_path / "trials.jsonl"
    fn = lambda t: bind_run_dir(train_trial, run_dir)  # noqa: E731
    with monkeypatch.context() as m:
        _kill_at_metrics_write(m, 4)
        with pytest.raises(_Killed):
            run_trials(path, [trial], fn, workers=0, progress=False)
    assert len(_metrics(run_dir)) == 4 and not read_records(tmp_path)

    run = run_trials(path, [trial], fn, workers=0, progress=False)
    assert run.ran == 1 and run.records[0].ok
    events = storage.read_jsonl(RunDir(run_dir).events_path)
    assert [e["epoch"] for e in events if e["event"] == "resume"] == [3]  # its last checkpoint
    assert _metrics(run_dir) == _metrics(reference)
    result = {k: v for k, v in run.records[0].result.items() if k not in TIME_KEYS}
    assert result == json.loads(json.dumps(
        {k: v for k, v in expected.items() if k not in TIME_KEYS}))
    # finished: skipped from now on
    assert run_trials(path, [trial], fn, workers=0, progress=False).ran == 0
