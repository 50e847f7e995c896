"""Progress lines when stderr is not a terminal, with a fake clock."""

from __future__ import annotations

import io
import re

import pytest

from marginlab import progress
from marginlab.errors import MarginlabError
from marginlab.progress import Progress, format_duration


class FakeClock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_at_a_steady_interval_with_counts_metrics_and_eta():
    clock, out = FakeClock(), io.StringIO()
    p = Progress("train mlp", total=100, unit="epoch", interval=30, stream=out, clock=clock)
    assert out.getvalue().splitlines() == ["[train mlp] epoch 0/100 (0%) elapsed 0:00:00 - started"]
    for _ in range(10):  # 10 epochs of 2 s: nothing until 30 s have passed
        clock.t += 2.0
        p.update(1, log10_loss=-3.25, margin=0.0125)
    assert len(out.getvalue().splitlines()) == 1
    for _ in range(5):  # epoch 15 at 30 s: one line, ETA = 2 s × 85 epochs left
        clock.t += 2.0
        p.update(1, log10_loss=-4.5, margin=0.02)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[1] == ("[train mlp] epoch 15/100 (15%) log10 L=-4.5 margin=0.02 "
                        "elapsed 0:00:30 eta 0:02:50")
    clock.t += 29.0
    p.poll()
    assert len(out.getvalue().splitlines()) == 2
    clock.t += 1.0
    p.poll()
    assert len(out.getvalue().splitlines()) == 3
    p.note("snapshot model-1 at log10 L < -10")  # on demand, whatever the clock
    assert out.getvalue().splitlines()[-1].endswith("- snapshot model-1 at log10 L < -10")
    p.close()
    last = out.getvalue().splitlines()[-1]
    assert last.startswith("[train mlp] epoch 15/100") and last.endswith("- done")
    assert "eta" not in last


def test_eta_uses_the_time_budget_and_a_resumed_runs_own_rate():
    clock, out = FakeClock(), io.StringIO()
    # resumed at epoch 50 after 500 s; budget 600 s in all
    p = Progress("train", total=1000, initial=50, unit="epoch", max_time=600.0, elapsed=500.0,
                 interval=30, stream=out, clock=clock)
    clock.t += 10.0
    p.update(10)  # 1 s / epoch now: 940 epochs would need 940 s, but 90 s of budget are left
    assert p.eta() == pytest.approx(90.0)
    assert p.elapsed == pytest.approx(510.0)
    p2 = Progress("sweep", total=4, unit="trial", interval=30, stream=io.StringIO(), clock=clock)
    assert p2.eta() is None  # no rate yet and no budget
    clock.t += 8.0
    p2.update(1)
    assert p2.eta() == pytest.approx(24.0)


def test_quiet_writes_nothing_and_the_process_default(monkeypatch):
    monkeypatch.setenv("MARGINLAB_QUIET", "0")
    out = io.StringIO()
    with Progress("x", total=3, quiet=True, stream=out, clock=FakeClock()) as p:
        p.update(3)
        p.note("snapshot")
    assert out.getvalue() == ""
    progress.configure(quiet=True)
    try:
        out = io.StringIO()
        with Progress("x", total=3, stream=out, clock=FakeClock()) as p:
            p.update(1)
        assert out.getvalue() == ""
    finally:
        progress.configure(quiet=False)
    assert not progress.is_quiet()


def test_interval_from_configure_and_environment(monkeypatch):
    monkeypatch.setenv("MARGINLAB_PROGRESS_INTERVAL", "5")
    clock, out = FakeClock(), io.StringIO()
    p = Progress("x", stream=out, clock=clock)
    assert p.interval == 5.0
    clock.t += 5.0
    p.update(2)
    assert out.getvalue().splitlines()[-1] == "[x] it 2 elapsed 0:00:05"
    monkeypatch.setenv("MARGINLAB_PROGRESS_INTERVAL", "garbage")
    assert progress.progress_interval() == 30.0
    with pytest.raises(MarginlabError):
        progress.configure(interval=0)


def test_terminal_draws_a_tqdm_bar_not_lines():
    out = Terminal()
    with Progress("train", total=4, unit="epoch", stream=out) as p:
        for _ in range(4):
            p.update(1, log10_loss=-2.0)
    text = out.getvalue()
    assert "\r" in text and "4/4" in text and "log10 L=-2" in text
    assert "started" not in text


def test_real_clock_heartbeat_writes_between_updates():
    import time

    out = io.StringIO()
    p = Progress("slow epoch", total=2, interval=0.2, stream=out)
    time.sleep(1.6)  # no update at all: the heartbeat still writes lines
    p.close()
    lines = out.getvalue().splitlines()
    assert len(lines) >= 3
    assert all(re.match(r"\[slow epoch\] it 0/2 \(0%\) elapsed \d:\d\d:\d\d", ln) for ln in lines)


def test_format_duration():
    assert format_duration(0) == "0:00:00"
    assert format_duration(3725.4) == "1:02:05"
    assert format_duration(2 * 86400 + 61) == "2 days, 0:01:01"
    assert format_duration(float("inf")) == "?"
