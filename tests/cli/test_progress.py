"""Long commands write plain progress lines when their output goes to a file, and none with
--quiet."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from marginlab.cli import main

TINY = ["--model", "mlp", "--widths", "16", "--data", "digits", "--n-train", "100",
        "--n-test", "50", "--batch-size", "25", "--threads", "1"]
SRC = Path(__file__).resolve().parents[2] / "src"


def _lines(text: str, desc: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith(f"[{desc}]")]


def test_train_into_a_log_file_leaves_progress_lines(tmp_path):
    run, log = tmp_path / "run", tmp_path / "log"
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.pop("MARGINLAB_QUIET", None)
    with open(log, "w") as fh:  # `marginlab train ... > log 2>&1`
        proc = subprocess.run(
            [sys.executable, "-m", "marginlab.cli", "train", *TINY, "--epochs", "4",
             "--trajectory-every", "1", "--out", str(run), "--progress-every", "0.05"],
            stdout=fh, stderr=subprocess.STDOUT, env=env, timeout=300, check=False)
    text = log.read_text()
    assert proc.returncode == 0, text
    lines = _lines(text, "train mlp")
    assert lines[0] == "[train mlp] epoch 0/4 (0%) elapsed 0:00:00 - started", text
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert lines[-1].startswith(
        f"[train mlp] epoch 4/4 (100%) log10 L={last['log10_loss_mean']:.4g} "
        f"margin={last['normalized_margin_multi']:.4g} ")
    assert lines[-1].endswith("- done")
    assert re.search(r"elapsed \d:\d\d:\d\d", lines[-1])
    # the bar's carriage returns never reach a file
    assert "\r" not in text


def test_analyze_and_attack_progress_and_quiet(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "3", "--trajectory-every", "1", "--out", str(run),
                 "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    assert main(["analyze", str(run), "--no-svm", "--n", "30"]) == 0
    err = capsys.readouterr().err
    lines = _lines(err, "analyze KKT")
    assert lines[0].startswith("[analyze KKT] checkpoint 0/3 (0%)")
    assert lines[-1].startswith("[analyze KKT] checkpoint 3/3 (100%)") and "done" in lines[-1]
    assert main(["attack", str(run), "--n", "10", "--steps", "5", "--certificates", "global",
                 "--snapshots", "model-5"]) == 0
    err = capsys.readouterr().err
    lines = _lines(err, "attack train model-5")
    assert lines[-1].startswith("[attack train model-5] pt 10/10 (100%)"), err
    assert os.environ.get("MARGINLAB_QUIET") in (None, "0")  # --quiet ended with its command
