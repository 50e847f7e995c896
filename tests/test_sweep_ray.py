"""The Ray backend on a real local Ray instance (2 CPUs): the same sweeps as the local process
pool, with the same results. Slow (starting Ray takes seconds to tens of seconds)."""

from __future__ import annotations

import json
import sys

import pytest

from marginlab import storage
from marginlab.cli import main
from marginlab.sweep import SweepSpec, read_records, run_sweep

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow

from test_sweep import DUMMY, _calls, _expected_y, _spec, dummy_trial  # noqa: E402

TRAIN = {"model": "mlp", "data": "digits", "n_train": 100, "n_test": 100, "epochs": 2,
         "batch_size": 50, "schedule": {"name": "constant", "lr": 0.05}}
TIMING = {"wall_time", "cpu_time"}


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
def ray_instance():
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def test_training_sweep_equals_local_backend(tmp_path, ray_instance):
    spec = SweepSpec.from_dict({"train": TRAIN, "grid": {"widths": [[8], [16]]},
                                "seeds": [0, 1], "run_dirs": True})
    local = run_sweep(spec, tmp_path / "local", workers=2, progress=False)
    remote = run_sweep(spec, tmp_path / "ray", backend="ray", progress=False)
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


def test_failures_and_resume_on_ray(tmp_path, ray_instance):
    (tmp_path / "fail.flag").touch()
    spec = _spec(tmp_path, [1, 2, 3], seeds=[0, 1])
    out = tmp_path / "sweep"
    # Ray's workers cannot import this test module: every trial fails, each with that error.
    lost = run_sweep(spec, out, backend="ray", progress=False)
    assert len(lost.failed) == 6 and not (tmp_path / "calls.jsonl").exists()
    assert all("No module named 'test_sweep'" in r.error and "\n" not in r.error
               for r in lost.failed), lost.failed[0].error
    # Shipped by value, the trial runs on the workers; the resumed sweep reruns every trial.
    ray.cloudpickle.register_pickle_by_value(sys.modules[dummy_trial.__module__])
    try:
        result = run_sweep(spec, out, backend="ray", resume=True, progress=False)
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
        again = run_sweep(spec, out, backend="ray", resume=True, progress=False)
    finally:
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[dummy_trial.__module__])
    assert again.ok and again.skipped == 4 and sorted(_calls(tmp_path)[6:]) == [(3, 0), (3, 1)]
    assert len(read_records(out)) == 6 + 6 + 2
    assert DUMMY in storage.read_json(out / "sweep.json")["identity"]
