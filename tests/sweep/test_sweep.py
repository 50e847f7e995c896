"""The sweep runner: every trial once on 2 worker processes, results appended as they finish,
resumable after an interrupt or a crash, failures recorded, mean ± std checked against numpy.

The cheap trial is a registered dummy experiment with a known answer, y = a·x + ε with
ε = numpy.random.default_rng(seed).normal(); each call appends a line to a side-effect file so
that the tests count how often each trial ran.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from marginlab import experiments, storage
from marginlab.cli import main
from marginlab.errors import MarginlabError
from marginlab.sweep import (
    SweepSpec,
    aggregate,
    expand,
    read_records,
    run_sweep,
)
from marginlab.sweep.spec import train_trial

DUMMY = "test-sweep-dummy"


def dummy_trial(settings: dict) -> dict:
    """y = a·x + N(0, 1) noise drawn from the seed; fails (ValueError) or is interrupted
    (KeyboardInterrupt) at x = 3, seed 0 while the flag files exist."""
    x, seed = settings["x"], settings["seed"]
    storage.append_jsonl(settings["calls"], {"x": x, "seed": seed})
    if x == 3 and Path(settings["fail_flag"]).exists():
        raise ValueError(f"x = {x} fails by design")
    if x == 3 and seed == 0 and Path(settings["interrupt_flag"]).exists():
        raise KeyboardInterrupt
    if x == 5:
        return "not a dict"
    noise = np.random.default_rng(seed).normal()
    return {"y": settings["a"] * x + noise, "x2": float(x * x), "never": math.nan}


def _noop_run(request):
    return request.out


if DUMMY not in experiments.all_experiments():
    experiments.register(experiments.Experiment(
        id=DUMMY, title="dummy", reference="tests", run=_noop_run, trial=dummy_trial,
        scales={"cpu": {"x": 0, "a": 2.0, "calls": "", "fail_flag": "", "interrupt_flag": ""}},
        grid={"cpu": {"x": [1, 2, 3]}},
    ))
SOURCE = experiments.trial_source(DUMMY)  # what the command line resolves the id into


def _spec(tmp_path: Path, xs, seeds=(0, 1, 2), **extra) -> SweepSpec:
    return SweepSpec.from_dict({
        "experiment": DUMMY, "grid": {"x": list(xs)}, "seeds": list(seeds),
        "set": {"calls": str(tmp_path / "calls.jsonl"),
                "fail_flag": str(tmp_path / "fail.flag"),
                "interrupt_flag": str(tmp_path / "interrupt.flag")}, **extra})


def _calls(tmp_path: Path) -> list[tuple[int, int]]:
    return [(c["x"], c["seed"]) for c in storage.read_jsonl(tmp_path / "calls.jsonl")]


def _expected_y(x: int, seed: int, a: float = 2.0) -> float:
    return a * x + np.random.default_rng(seed).normal()


def test_two_workers_every_trial_once_failures_recorded_then_rerun(tmp_path):
    (tmp_path / "fail.flag").touch()
    spec = _spec(tmp_path, [1, 2, 3, 4])
    out = tmp_path / "sweep"
    result = run_sweep(spec, out, workers=2, progress=False, source=SOURCE)

    calls = _calls(tmp_path)
    assert sorted(calls) == sorted((x, s) for x in [1, 2, 3, 4] for s in [0, 1, 2])
    assert result.total == 12 and result.ran == 12 and result.skipped == 0
    assert result.backend == "local" and result.workers == 2
    lines = read_records(out)
    assert len(lines) == 12 and len({r.id for r in lines}) == 12
    assert len({r.host for r in lines}) == 2  # both worker processes ran trials
    failed = [r for r in lines if not r.ok]
    assert sorted(r.params["seed"] for r in failed) == [0, 1, 2]
    assert all(r.params["x"] == 3 and r.error == "ValueError: x = 3 fails by design"
               and r.result is None and "ValueError" in r.traceback for r in failed)
    assert not result.ok and len(result.failed) == 3
    assert "3 failed" in result.summary()
    for r in lines:
        if r.ok:
            assert r.result["y"] == pytest.approx(_expected_y(r.params["x"], r.params["seed"]),
                                                  abs=1e-12)
            assert r.result["never"] == "nan"  # stored JSON-safe
    report = result.report.read_text()
    assert "x = 3 fails by design" in report and (out / "plots" / "sweep.png").stat().st_size
    md = (out / "report.md").read_text()
    assert "| x | trials | y (mean ± std) | x2 (mean ± std) |" in md

    # Resume: only the failed trials run again (the flag is gone, so they now succeed). In this
    # process, to save starting another pool: which trials rerun does not depend on the backend.
    (tmp_path / "fail.flag").unlink()
    again = run_sweep(spec, out, workers=0, resume=True, progress=False, source=SOURCE)
    assert sorted(_calls(tmp_path)[12:]) == [(3, 0), (3, 1), (3, 2)]
    assert again.ok and again.skipped == 9 and again.ran == 3
    assert len(read_records(out)) == 15 and len(again.records) == 12


def test_interrupt_then_resume_runs_each_unfinished_trial_once(tmp_path):
    (tmp_path / "interrupt.flag").touch()
    spec = _spec(tmp_path, [1, 2, 3, 4, 6, 7])
    out = tmp_path / "sweep"
    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, out, workers=2, progress=False, source=SOURCE)
    first = read_records(out)
    done = {(r.params["x"], r.params["seed"]) for r in first}
    assert all(r.ok for r in first) and (3, 0) not in done and len(done) < 18
    n_first = len(_calls(tmp_path))

    (tmp_path / "interrupt.flag").unlink()
    result = run_sweep(spec, out, workers=0, resume=True, progress=False, source=SOURCE)
    everything = {(x, s) for x in [1, 2, 3, 4, 6, 7] for s in [0, 1, 2]}
    rerun = _calls(tmp_path)[n_first:]
    assert sorted(rerun) == sorted(everything - done)  # finished trials were not run again
    assert result.ok and result.skipped == len(done)
    records = read_records(out)
    assert len(records) == 18 and {(r.params["x"], r.params["seed"]) for r in records} == \
        everything


def test_subset_then_full_grid_and_truncated_last_line(tmp_path):
    out = tmp_path / "sweep"
    run_sweep(_spec(tmp_path, [1, 2], seeds=[0, 1]), out, workers=0, progress=False, source=SOURCE)
    assert len(_calls(tmp_path)) == 4
    # A crash in the middle of an append leaves a cut-off last line.
    with open(out / "trials.jsonl", "a") as fh:
        fh.write('{"id": "abc", "status": "o')
    full = _spec(tmp_path, [1, 2, 4, 5], seeds=[0, 1])
    with pytest.raises(MarginlabError, match="already holds a sweep of test-sweep-dummy"):
        run_sweep(full, out, workers=0, progress=False, source=SOURCE)
    result = run_sweep(full, out, workers=0, resume=True, progress=False, source=SOURCE)
    assert sorted(_calls(tmp_path)[4:]) == [(4, 0), (4, 1), (5, 0), (5, 1)]
    assert result.skipped == 4 and result.ran == 4
    text = (out / "trials.jsonl").read_text()
    assert text.endswith("\n") and all(json.loads(line) for line in text.splitlines())
    bad = [r for r in result.failed]
    assert [r.params["x"] for r in bad] == [5, 5]
    assert bad[0].error == "TypeError: a trial function returns a dict, got str"
    # The sweep's ids are a hash of the settings: the same spec expands to the same ids.
    assert [t.id for t in expand(full, SOURCE)[0]] == [r.id for r in result.records]


def test_aggregate_matches_numpy(tmp_path):
    seeds = [0, 1, 2, 3]
    spec = _spec(tmp_path, [4, 1, 2], seeds=seeds)
    result = run_sweep(spec, tmp_path / "sweep", workers=0, progress=False, source=SOURCE)
    rows = aggregate(result.records, x="x", y="y")
    assert [r.x for r in rows] == [1, 2, 4]  # ascending numeric x
    for row in rows:
        ref = np.array([_expected_y(row.x, s) for s in seeds])
        assert row.n == 4 and row.n_missing == 0
        assert row.mean == pytest.approx(ref.mean(), rel=1e-13)
        assert row.std == pytest.approx(ref.std(ddof=1), rel=1e-12)
        assert (row.min, row.max) == (pytest.approx(ref.min()), pytest.approx(ref.max()))

    # Flat records, groups, and values that are missing, non-finite, or stored as strings.
    flat = [{"lam": lam, "w": w, "m": m} for lam, w, m in [
        (1e-2, 8, 1.0), (1e-2, 8, 3.0), (1e-2, 8, "nan"), (1e-4, 8, 2.5),
        (1e-2, 16, 5.0), (1e-2, 16, 7.0), (1e-2, 16, 9.0), (1e-4, 16, "inf"), (1e-4, 16, None)]]
    rows = aggregate(flat, x="lam", y="m", by=["w"], ddof=0)
    got = {(r.group, r.x): r for r in rows}
    r = got[((("w", 8),), 1e-2)]
    assert (r.n, r.n_missing, r.mean, r.std) == (2, 1, 2.0, pytest.approx(np.std([1.0, 3.0])))
    r = got[((("w", 16),), 1e-2)]
    assert r.mean == pytest.approx(7.0) and r.std == pytest.approx(np.std([5.0, 7.0, 9.0]))
    r = got[((("w", 16),), 1e-4)]
    assert r.n == 0 and r.n_missing == 2 and math.isnan(r.mean) and r.label == "w=16"
    r = got[((("w", 8),), 1e-4)]
    assert r.n == 1 and r.std == 0.0
    assert math.isnan(aggregate(flat[3:4], x="lam", y="m")[0].std)  # ddof 1, one value
    with pytest.raises(MarginlabError, match="no 'nope' in a sweep record"):
        aggregate(flat, x="nope", y="m")


def test_training_sweep_matches_direct_runs(tmp_path):
    train = {"model": "mlp", "data": "digits", "n_train": 100, "n_test": 100, "epochs": 2,
             "batch_size": 50, "schedule": {"name": "constant", "lr": 0.05}}
    spec = SweepSpec.from_dict({"train": train, "grid": {"widths": [[8], [16]]},
                                "seeds": [0, 1], "run_dirs": True, "name": "widths"})
    out = tmp_path / "sweep"
    # In this process: the worker pool is covered above (and with training trials in
    # tests/sweep/test_ray.py); starting one costs seconds on a loaded machine.
    result = run_sweep(spec, out, workers=0, progress=False, source=SOURCE)
    assert result.ok and len(result.records) == 4, result.failed
    rec = result.records[3]
    assert rec.params == {"widths": [16], "seed": 1}
    direct = train_trial({**train, "widths": [16], "seed": 1})
    for key in ("log10_loss_mean", "normalized_margin", "train_acc", "test_acc", "epochs"):
        assert rec.result[key] == direct[key]
    run_dir = out / "runs" / rec.id
    last = storage.read_jsonl(run_dir / "metrics.jsonl")[-1]
    assert last["epoch"] == 2 and last["q_min"] == rec.result["q_min"]
    assert storage.read_json(run_dir / "config.json")["seed"] == 1
    assert "| widths | trials | normalized_margin (mean ± std) |" in \
        (out / "report.md").read_text()


@pytest.mark.parametrize("raw, message", [
    ({"experiment": DUMMY, "grid": {"x": [1]}, "seedz": [0]}, "unknown sweep spec key(s) 'seedz'"),
    ({"grid": {"x": [1]}}, "either an 'experiment' or a 'train'"),
    ({"experiment": DUMMY, "train": {}}, "either an 'experiment' or a 'train'"),
    ({"experiment": DUMMY, "grid": {"seed": [1, 2]}}, "put the seeds in the sweep's 'seeds'"),
    ({"experiment": DUMMY, "grid": {"x": [1, 1]}}, "grid setting 'x' repeats a value"),
    ({"experiment": DUMMY, "grid": {"x": []}}, "needs a non-empty list"),
    ({"experiment": DUMMY, "seeds": [0, "1"]}, "'seeds' must be a non-empty list of integers"),
    ({"experiment": DUMMY, "set": {"x": 1}, "grid": {"x": [2]}}, "both in 'set' and in 'grid'"),
    ({"train": {"epochs": 2}, "scale": "cpu"}, "'scale' is for experiment sweeps"),
    ({"train": {"seed": 3}}, "put the seeds in the sweep's 'seeds'"),
    ({"experiment": DUMMY, "report": {"x": "a"}}, "report setting 'a' is not swept"),
    ({"experiment": DUMMY, "report": {"colour": "red"}}, "unknown sweep spec 'report' key(s)"),
])
def test_spec_errors(raw, message):
    with pytest.raises(MarginlabError) as err:
        SweepSpec.from_dict(raw)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("raw, message", [
    ({"experiment": DUMMY, "grid": {"b": [1]}}, "unknown setting 'b' for test-sweep-dummy"),
    ({"experiment": DUMMY, "grid": {"x": [1.5]}}, "setting 'x' takes an integer"),
    ({"experiment": "no-such", "grid": {"x": [1]}}, "unknown experiment 'no-such'"),
    ({"train": {"epochs": "3"}}, "training setting 'epochs' takes int, got '3'"),
    ({"train": {"widths": [8, "x"]}}, "training setting 'widths' takes list[int]"),
    ({"train": {"epoch": 3}}, "unknown training setting(s) epoch"),
])
def test_settings_checked_before_running(raw, message):
    with pytest.raises(MarginlabError) as err:
        spec = SweepSpec.from_dict(raw)  # an experiment id is resolved as the command line does
        source = experiments.trial_source(spec.experiment) if spec.kind == "experiment" else None
        expand(spec, source)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_trial_ids_are_stable_hashes_of_settings():
    a = SweepSpec.from_dict({"train": {"weight_decay": 0, "epochs": 3}, "seeds": [0, 1]})
    b = SweepSpec.from_dict({"train": {"epochs": 3, "weight_decay": 0.0}, "seeds": [0, 1]})
    ids_a = [t.id for t in expand(a, SOURCE)[0]]
    assert ids_a == [t.id for t in expand(b, SOURCE)[0]]  # 0 and 0.0 are the same float setting
    assert len(set(ids_a)) == 2 and all(len(i) == 12 for i in ids_a)
    c = SweepSpec.from_dict({"train": {"epochs": 4}, "seeds": [0, 1]})
    assert not set(ids_a) & {t.id for t in expand(c, SOURCE)[0]}


def _cli(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli(tmp_path, capsys):
    calls = str(tmp_path / "calls.jsonl")
    sets = ["--set", f"calls={calls}", "--set", f"fail_flag={tmp_path / 'fail.flag'}",
            "--set", f"interrupt_flag={tmp_path / 'i.flag'}"]
    out = tmp_path / "by-id"
    rc, text, err = _cli(capsys, "sweep", DUMMY, "--out", str(out), "--workers", "0",
                         "--seeds", "0,1", *sets)
    assert rc == 0, err
    assert "6 trials: 6 ran, 0 already done, 0 failed" in text and len(_calls(tmp_path)) == 6
    assert "report:" in text and (out / "report.html").exists()

    # The same directory again: an error unless --resume (nothing to do) or --overwrite.
    rc, _, err = _cli(capsys, "sweep", DUMMY, "--out", str(out), "--workers", "0", *sets)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "--resume" in err
    rc, text, _ = _cli(capsys, "sweep", DUMMY, "--out", str(out), "--workers", "0",
                       "--seeds", "0,1", "--resume", *sets)
    assert rc == 0 and "6 already done" in text and len(_calls(tmp_path)) == 6

    # A JSON spec with a failing trial: exit code 1 and the failure listed.
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps({"experiment": DUMMY, "grid": {"x": [3]}, "seeds": [0]}))
    (tmp_path / "fail.flag").touch()
    rc, text, _ = _cli(capsys, "sweep", str(spec_file), "--out", str(out), "--workers", "0",
                       "--overwrite", *sets)
    assert rc == 1 and "1 failed" in text and "ValueError: x = 3 fails by design" in text

    # Bad specs and directories: one line, exit 2.
    (tmp_path / "bad.json").write_text(json.dumps({"experiment": DUMMY, "grdi": {}}))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "precious.txt").write_text("keep")
    for argv, message in [
        ([str(tmp_path / "bad.json")], "unknown sweep spec key(s) 'grdi'"),
        ([str(tmp_path / "missing.json")], "missing file"),
        (["lyu-li-mnist"], "has no trial function"),
        ([DUMMY, "--scale", "paper"], "has no sweep grid for scale 'paper'"),
        ([DUMMY, "--seeds", "0,x"], "--seeds must be an integer, got 'x'"),
        ([DUMMY, "--out", str(tmp_path / "other"), "--overwrite", *sets],
         "holds no marginlab sweep"),
        ([DUMMY, "--workers", "-1", *sets, "--out", str(tmp_path / "w")],
         "--workers: must be at least 0"),
        ([DUMMY, "--address", "auto", *sets, "--out", str(tmp_path / "a")],
         "--address is for the ray backend"),
    ]:
        rc, _, err = _cli(capsys, "sweep", *argv)
        lines = err.strip().splitlines()
        assert rc == 2 and len(lines) == 1 and message in lines[0], (argv, err)
    assert (tmp_path / "other" / "precious.txt").read_text() == "keep"


def test_ray_missing_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    with pytest.raises(MarginlabError, match=r"pip install 'marginlab\[ray\]'"):
        run_sweep(_spec(tmp_path, [1]), tmp_path / "sweep", backend="ray", progress=False,
                  source=SOURCE)


def test_mean_std_is_the_sample_std_of_the_finite_values():
    import statistics

    from marginlab.sweep import format_mean_std, mean_std

    values = [0.1, 2.5, -1.25, 3.0, math.nan, math.inf, "text", None, True]
    finite = [0.1, 2.5, -1.25, 3.0, 1.0]
    m = mean_std(values)
    assert m.n == 5
    assert m.mean == pytest.approx(statistics.fmean(finite), rel=1e-15)
    assert m.std == pytest.approx(statistics.stdev(finite), rel=1e-14)  # ddof 1
    assert mean_std(finite, ddof=0).std == pytest.approx(statistics.pstdev(finite), rel=1e-14)
    mean, std, n = mean_std([4.0])
    assert (mean, n) == (4.0, 1) and math.isnan(std)
    assert math.isnan(mean_std([]).mean)
    assert format_mean_std([]) == "–"
    assert format_mean_std([4.0]) == "4"
    assert format_mean_std([1.0, 3.0]) == f"2 ± {statistics.stdev([1.0, 3.0]):.2g}"


def test_an_experiment_sweep_needs_its_trial_source(tmp_path):
    spec = _spec(tmp_path, [1])
    with pytest.raises(MarginlabError, match="needs its trial source"):
        expand(spec)
    with pytest.raises(MarginlabError, match="needs its trial source"):
        run_sweep(spec, tmp_path / "sweep", workers=0, progress=False)
    assert not (tmp_path / "sweep").exists()
