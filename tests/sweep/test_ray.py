"""The Ray backend on a real local Ray instance (2 CPUs), started and stopped here: a worker
killed mid-trial whose trial Ray retries, and a sweep whose driver is stopped and then resumed
(run by `make test`); and, marked slow, the same sweeps as the local process pool with the
same results."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from marginlab import storage
from marginlab.cli import main
from marginlab.sweep import SweepSpec, read_records, run_sweep
from marginlab.sweep.runner import run_trials
from marginlab.sweep.spec import Trial

ray = pytest.importorskip("ray")
SRC = Path(__file__).resolve().parents[2] / "src"

from tests.sweep.test_sweep import DUMMY, SOURCE, _calls, _expected_y, _spec, dummy_trial  # noqa: E402

TRAIN = {"model": "mlp", "data": "digits", "n_train": 100, "n_test": 100, "epochs": 2,
         "batch_size": 50, "schedule": {"name": "constant", "lr": 0.05}}
TIMING = {"wall_time", "cpu_time"}


@pytest.mark.slow
def test_cli_starts_and_stops_its_own_ray_instance(tmp_path, capsys):
    assert not ray.is_initialized()
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps({"train": TRAIN, "grid": {"widths": [[8]]}, "seeds": [0]}))
    rc = main(["sweep", str(spec_file), "--out", str(tmp_path / "out"), "--backend", "ray",
               "--workers", "2"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "1 trials: 1 ran, 0 already done, 0 failed" in out
    assert not ray.is_initialized()
    assert storage.read_json(tmp_path / "out" / "sweep.json")["identity"] == "training"


@pytest.fixture(scope="module")
def ray_instance(tmp_path_factory):
    # Started away from the checkout, as on a cluster, Ray's workers see the installed package
    # but not the test modules (which the tests ship by value where they need them).
    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("ray"))
    try:
        ray.init(num_cpus=2, include_dashboard=False)
    finally:
        os.chdir(cwd)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def hang_once(settings: dict) -> dict:
    """Leaves a file named after its process; the first attempt at x = 1 then hangs (until its
    worker is killed)."""
    folder, x = Path(settings["dir"]), settings["x"]
    earlier = list(folder.glob(f"x{x}-*"))
    (folder / f"x{x}-{os.getpid()}").touch()
    if x == 1 and not earlier:
        time.sleep(300)
    return {"y": 2 * x, "pid": os.getpid()}


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_ray_retries_the_trial_of_a_killed_worker(tmp_path, ray_instance):
    trials = [Trial(f"t{x}", {"x": x}, {"x": x, "dir": str(tmp_path)}) for x in (1, 2, 3)]
    killed = []

    def kill_the_hanging_worker():
        found = _wait_for(lambda: list(tmp_path.glob("x1-*")), 120, "the first attempt")
        pid = int(found[0].name.split("-")[1])
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    killer = threading.Thread(target=kill_the_hanging_worker, daemon=True)
    killer.start()
    ray.cloudpickle.register_pickle_by_value(sys.modules[hang_once.__module__])
    try:
        run = run_trials(tmp_path / "trials.jsonl", trials, lambda t: hang_once,
                         backend="ray", progress=False)
    finally:
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[hang_once.__module__])
    killer.join(timeout=10)
    assert len(killed) == 1
    assert [(r.id, r.status, r.result["y"]) for r in run.records] == \
        [("t1", "ok", 2), ("t2", "ok", 4), ("t3", "ok", 6)]
    attempts = sorted(int(p.name.split("-")[1]) for p in tmp_path.glob("x1-*"))
    assert len(attempts) == 2 and killed[0] in attempts  # retried in another worker
    assert run.records[0].result["pid"] == next(p for p in attempts if p != killed[0])
    assert len(read_records_file(tmp_path / "trials.jsonl")) == 3  # one line per trial


def read_records_file(path: Path) -> list[dict]:
    return storage.read_jsonl(path)


def test_sweep_resumed_after_its_driver_is_stopped(tmp_path, ray_instance):
    spec_file, out = tmp_path / "spec.json", tmp_path / "out"
    train = {**TRAIN, "epochs": 5}
    spec_file.write_text(json.dumps({"train": train, "grid": {"widths": [[4], [6], [8], [10]]},
                                     "seeds": [0]}))
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "MARGINLAB_QUIET": "1"}
    driver = subprocess.Popen(
        [sys.executable, "-m", "marginlab.cli", "sweep", str(spec_file), "--out", str(out),
         "--backend", "ray", "--address", ray_instance],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_for(lambda: (out / "trials.jsonl").exists()
                  and storage.read_jsonl(out / "trials.jsonl"), 120, "a first finished trial")
    finally:
        driver.send_signal(signal.SIGKILL)  # the driver dies; its tasks die with it
        driver.wait(timeout=30)
    first = storage.read_jsonl(out / "trials.jsonl")
    assert 1 <= len(first) < 4 and all(r["status"] == "ok" for r in first)
    spec = SweepSpec.from_dict(json.loads(spec_file.read_text()))
    resumed = run_sweep(spec, out, backend="ray", resume=True, progress=False, report=False)
    assert resumed.ok and resumed.total == 4
    assert resumed.skipped >= len(first) and resumed.ran == 4 - resumed.skipped
    lines = storage.read_jsonl(out / "trials.jsonl")
    assert sorted(r["id"] for r in lines if r["status"] == "ok") == \
        sorted(r.id for r in resumed.records)  # each trial finished exactly once
    assert all(r.result["epochs"] == 5 for r in resumed.records)


@pytest.mark.slow
def test_training_sweep_equals_local_backend(tmp_path, ray_instance):
    spec = SweepSpec.from_dict({"train": TRAIN, "grid": {"widths": [[8], [16]]},
                                "seeds": [0, 1], "run_dirs": True})
    local = run_sweep(spec, tmp_path / "local", workers=2, progress=False, source=SOURCE)
    remote = run_sweep(spec, tmp_path / "ray", backend="ray", progress=False, source=SOURCE)
    assert local.ok and remote.ok, (local.failed, remote.failed)
    assert remote.backend == "ray" and remote.workers == 2
    assert [r.id for r in remote.records] == [r.id for r in local.records]
    for a, b in zip(local.records, remote.records):
        assert a.params == b.params and a.settings == b.settings
        assert {k: v for k, v in a.result.items() if k not in TIMING} == \
            {k: v for k, v in b.result.items() if k not in TIMING}
    assert {r.host for r in remote.records}.isdisjoint({r.host for r in local.records})
    assert (tmp_path / "ray" / "plots" / "sweep.png").exists()
    for rec in remote.records:  # each Ray task wrote its own run directory
        last = storage.read_jsonl(tmp_path / "ray" / "runs" / rec.id / "metrics.jsonl")[-1]
        assert last["epoch"] == 2 and last["q_min"] == rec.result["q_min"]


@pytest.mark.slow
def test_failures_and_resume_on_ray(tmp_path, ray_instance):
    (tmp_path / "fail.flag").touch()
    spec = _spec(tmp_path, [1, 2, 3], seeds=[0, 1])
    out = tmp_path / "sweep"
    # Ray's workers cannot import this test module: every trial fails, each with that error.
    lost = run_sweep(spec, out, backend="ray", progress=False, source=SOURCE)
    assert len(lost.failed) == 6 and not (tmp_path / "calls.jsonl").exists()
    assert all("No module named 'tests'" in r.error and "\n" not in r.error
               for r in lost.failed), lost.failed[0].error
    # Shipped by value, the trial runs on the workers; the resumed sweep reruns every trial.
    ray.cloudpickle.register_pickle_by_value(sys.modules[dummy_trial.__module__])
    try:
        result = run_sweep(spec, out, backend="ray", resume=True, progress=False, source=SOURCE)
    finally:
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[dummy_trial.__module__])
    assert sorted(_calls(tmp_path)) == sorted((x, s) for x in [1, 2, 3] for s in [0, 1])
    assert [r.error for r in result.failed] == ["ValueError: x = 3 fails by design"] * 2
    for r in result.records:
        if r.ok:
            assert r.result["y"] == pytest.approx(_expected_y(r.params["x"], r.params["seed"]),
                                                  abs=1e-12)
    (tmp_path / "fail.flag").unlink()
    ray.cloudpickle.register_pickle_by_value(sys.modules[dummy_trial.__module__])
    try:
        again = run_sweep(spec, out, backend="ray", resume=True, progress=False, source=SOURCE)
    finally:
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[dummy_trial.__module__])
    assert again.ok and again.skipped == 4 and sorted(_calls(tmp_path)[6:]) == [(3, 0), (3, 1)]
    assert len(read_records(out)) == 6 + 6 + 2
    assert DUMMY in storage.read_json(out / "sweep.json")["identity"]
