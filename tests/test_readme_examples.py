"""The README's "Use it with your own training loop" examples run as written and write complete
run directories (that `analyze` and `attack` read such directories is tested in
test_tracker.py and test_lightning.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from marginlab.cli import main
from marginlab.train.rundir import RunDir

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Use it with your own training loop"


def _examples() -> list[str]:
    text = README.read_text(encoding="utf-8")
    start = text.index(SECTION)
    end = text.index("\n## ", start + len(SECTION))
    return re.findall(r"```python\n(.*?)```", text[start:end], flags=re.S)


def test_the_section_has_the_two_examples():
    blocks = _examples()
    assert len(blocks) == 2
    assert "ml.Tracker(" in blocks[0] and "MarginCallback(" in blocks[1]


def _small(code: str) -> str:
    """The example with 10 epochs instead of 30."""
    small = code.replace("range(1, 31)", "range(1, 11)").replace("max_epochs=30", "max_epochs=10")
    small = small.replace("total_epochs=30", "total_epochs=10")
    assert small != code
    return small


def _run(code: str, where: Path, monkeypatch) -> None:
    monkeypatch.chdir(where)
    monkeypatch.setenv("MARGINLAB_QUIET", "1")
    exec(compile(code, str(README), "exec"), {"__name__": "__readme__"})


def test_own_loop_example(tmp_path, monkeypatch, capsys):
    _run(_small(_examples()[0]), tmp_path, monkeypatch)
    run = tmp_path / "runs" / "own-loop"
    records = RunDir(run).metrics()
    assert [r["epoch"] for r in records] == list(range(1, 11))
    assert records[-1]["train_acc"] > 0.9 and records[-1]["log10_loss_mean"] < -0.5
    assert (run / "snapshots" / "model-1.safetensors").exists()  # below 10^-0.5
    assert (run / "snapshots" / "model-3.safetensors").exists()  # the final model
    assert capsys.readouterr().out.strip() == str(Path("runs/own-loop/report.html"))
    assert main(["plot", str(run)]) == 0  # analyze and attack: see test_tracker.py


def test_lightning_example(tmp_path, monkeypatch):
    pytest.importorskip("lightning.pytorch")
    pytest.importorskip("tensorboard")
    _run(_small(_examples()[1]), tmp_path, monkeypatch)
    run = tmp_path / "runs" / "lightning"
    assert [r["epoch"] for r in RunDir(run).metrics()] == list(range(1, 11))
    assert (run / "report.html").exists() and list((run / "tensorboard").iterdir())
    assert main(["plot", str(run)]) == 0
