"""`marginlab train`, in-process through marginlab.cli.main: an end-to-end run on digits, the
errors a user can cause (exit 2, one line, nothing written), and --resume, which continues a
run with its own settings."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from marginlab.cli import main

TINY = ["--model", "mlp", "--widths", "16", "--data", "digits", "--n-train", "100",
        "--n-test", "50", "--batch-size", "25", "--threads", "1"]
TIME_KEYS = {"wall_time", "cpu_time"}


def _run(capsys, *argv):
    rc = main(["train", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _assert_user_error(rc, out, err, fragment):
    assert rc == 2, (out, err)
    assert "Traceback" not in err + out
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("marginlab train: error: ") and fragment in lines[0], lines[0]


def _metrics(run: Path) -> list[dict]:
    records = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(1, len(records) + 1))
    return records


def _strip(records):
    return [{k: v for k, v in r.items() if k not in TIME_KEYS} for r in records]


def test_train_end_to_end(capsys, tmp_path):
    out = tmp_path / "run"
    rc, stdout, err = _run(capsys, *TINY, "--epochs", "3", "--out", str(out))
    assert rc == 0, err
    metrics = _metrics(out)
    assert len(metrics) == 3
    last = metrics[-1]
    lines = stdout.strip().splitlines()
    assert lines[0] == (
        f"epoch 3: log10 loss {last['log10_loss_mean']:.4g}, normalized margin "
        f"{last['normalized_margin_multi']:.4g}, train acc {last['train_acc']:.4f}; "
        "stopped by epochs")
    assert lines[1] == f"report: {out / 'report.html'}"
    config = json.loads((out / "config.json").read_text())
    spec = config["spec"]
    assert (spec["model"], spec["widths"], spec["data"], spec["n_train"], spec["n_test"]) == \
        ("mlp", [16], "digits", 100, 50)
    assert spec["schedule"]["name"] == "loss_based" and spec["schedule"]["alpha0"] == 0.1
    assert config["data"] == {"name": "digits", "root": None, "n_train": 100, "n_test": 50}
    assert config["batch_size"] == 25 and config["seed"] == 0
    assert all(r["steps"] == 4 and 0 <= r["test_acc"] <= 1 for r in metrics)
    png = out / "plots" / "training.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    html = (out / "report.html").read_text()
    assert "plots/training.png" in html and "Final epoch" in html
    assert (out / "report.md").read_text().strip()
    assert (out / "snapshots" / "model-5.safetensors").is_file()


def test_train_full_batch_and_stop_target(capsys, tmp_path):
    out = tmp_path / "run"
    rc, stdout, err = _run(capsys, *TINY[:-4], "--batch-size", "full", "--stop-at", "-0.5",
                           "--epochs", "200", "--loss", "cross_entropy", "--out", str(out))
    assert rc == 0, err
    metrics = _metrics(out)
    assert metrics[-1]["log10_loss_mean"] <= -0.5 < metrics[-2]["log10_loss_mean"]
    assert all(r["steps"] == 1 for r in metrics)
    assert "stopped by target" in stdout
    assert json.loads((out / "config.json").read_text())["batch_size"] is None


@pytest.mark.parametrize("argv,fragment", [
    (["--schedule", "cosine"], "unknown schedule 'cosine'"),
    (["--alpha0", "-1"], "alpha0"),
    (["--up", "1"], "up must be"),
    (["--schedule", "constant", "--lr", "0"], "learning rate"),
    (["--batch-size", "x"], "--batch-size"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--widths", "16,a"], "--widths"),
    (["--model", "resnet"], "unknown model 'resnet'"),
    (["--model", "mnist_cnn"], "1x28x28"),  # digits are 8×8 images
    (["--data", "imagenet"], "unknown data set"),
    (["--loss", "hinge"], "unknown loss"),
    (["--epochs", "-1"], "epochs"),
    (["--momentum", "0.5"], "--momentum applies only to --schedule loss_based_momentum"),
    (["--schedule", "loss_based_momentum", "--momentum", "1.5"], "momentum must be in [0, 1)"),
    (["--schedule", "loss_based_momentum", "--active-gap", "wide"], "--active-gap"),
    (["--schedule", "loss_based_momentum", "--active-gap", "0"], "active_gap must be"),
])
def test_bad_input_exits_2_with_one_line(capsys, tmp_path, argv, fragment):
    out = tmp_path / "run"
    rc, stdout, err = _run(capsys, *TINY, "--epochs", "1", *argv, "--out", str(out))
    _assert_user_error(rc, stdout, err, fragment)
    assert not out.exists()


def test_momentum_schedule_takes_its_parameters(capsys, tmp_path):
    out = tmp_path / "run"
    rc, _, err = _run(capsys, *TINY, "--epochs", "5", "--schedule", "loss_based_momentum",
                           "--momentum", "0.8", "--down", "4", "--active-gap", "none",
                           "--no-margin-guard", "--out", str(out))
    assert rc == 0, err
    schedule = json.loads((out / "config.json").read_text())["schedule"]
    assert schedule["name"] == "loss_based_momentum"
    assert (schedule["momentum"], schedule["down"], schedule["active_gap"]) == (0.8, 4.0, None)
    assert schedule["up"] == pytest.approx(2 ** 0.1) and schedule["monotone_margin"] is False
    metrics = _metrics(out)
    assert len(metrics) == 5 and all(r["samples_used"] == 100 for r in metrics)


def test_unparsable_number_is_a_usage_error(capsys, tmp_path):
    rc = main(["train", *TINY, "--epochs", "three", "--out", str(tmp_path / "run")])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--epochs" in err[0]


def test_existing_run_is_not_replaced(capsys, tmp_path):
    out = tmp_path / "run"
    assert _run(capsys, *TINY, "--epochs", "1", "--out", str(out))[0] == 0
    before = (out / "metrics.jsonl").read_bytes()
    rc, stdout, err = _run(capsys, *TINY, "--epochs", "1", "--seed", "5", "--out", str(out))
    _assert_user_error(rc, stdout, err, "different run (differs in")
    rc, stdout, err = _run(capsys, *TINY, "--epochs", "2", "--out", str(out))
    _assert_user_error(rc, stdout, err, "--resume")
    assert (out / "metrics.jsonl").read_bytes() == before
    rc, stdout, err = _run(capsys, *TINY, "--epochs", "1", "--seed", "5", "--overwrite",
                           "--out", str(out))
    assert rc == 0, err
    assert json.loads((out / "config.json").read_text())["seed"] == 5


def test_resume_uses_the_runs_own_settings(capsys, tmp_path):
    own = ["--model", "mlp", "--widths", "8", "--data", "digits", "--n-train", "60",
           "--n-test", "30", "--schedule", "constant", "--lr", "0.05", "--batch-size", "20",
           "--seed", "3", "--threads", "1"]
    ref = tmp_path / "ref"
    assert _run(capsys, *own, "--epochs", "4", "--out", str(ref))[0] == 0

    out = tmp_path / "run"
    assert _run(capsys, *own, "--epochs", "2", "--out", str(out))[0] == 0
    # only the budget on the command line; model, data, schedule, seed come from the run
    rc, stdout, err = _run(capsys, "--out", str(out), "--resume", "--epochs", "4")
    assert rc == 0, err
    assert stdout.startswith("epoch 4: ")
    assert _strip(_metrics(out)) == _strip(_metrics(ref))
    spec = json.loads((out / "config.json").read_text())["spec"]
    assert (spec["model"], spec["widths"], spec["schedule"], spec["seed"], spec["epochs"]) == \
        ("mlp", [8], {"name": "constant", "lr": 0.05}, 3, 4)

    # without --epochs the run keeps its own budget: nothing to add
    rc, stdout, err = _run(capsys, "--out", str(out), "--resume")
    assert rc == 0, err
    assert re.match(r"epoch 4: .*stopped by epochs", stdout)
    assert len(_metrics(out)) == 4


def test_resume_refuses_options_that_conflict_with_the_saved_run(capsys, tmp_path):
    out = tmp_path / "run"
    assert _run(capsys, *TINY, "--epochs", "2", "--out", str(out))[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".lock"}
    for argv, key in ((["--widths", "32"], "widths"), (["--seed", "4"], "seed"),
                      (["--schedule", "constant"], "schedule"), (["--batch-size", "50"],
                                                                  "batch_size")):
        rc, stdout, err = _run(capsys, *TINY, "--epochs", "3", *argv, "--out", str(out),
                               "--resume")
        _assert_user_error(rc, stdout, err, f"gives {key}=")
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".lock"}
    assert after == before
    # the same options as the run's, and a new budget: fine
    rc, _, err = _run(capsys, *TINY, "--epochs", "3", "--out", str(out), "--resume")
    assert rc == 0, err
    assert len(_metrics(out)) == 3
