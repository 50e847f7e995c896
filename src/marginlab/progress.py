"""Progress of long commands, on a terminal or in a log file.

One facility for every long-running loop (training epochs, sweep trials, attacked points):

* on a terminal (stderr is a tty) it draws a tqdm bar;
* otherwise (a batch job writing to a file) it writes plain lines on stderr: one when the work
  starts, one every ``interval`` seconds (default 30, a steady heartbeat that also runs between
  updates), one on demand (:meth:`Progress.note`, e.g. at every snapshot) and one at the end.
  Each line says what is running, the counts, the latest metrics (log10 L, margin), the elapsed
  time and, where the budget is known, an estimate of the time left;
* ``quiet`` turns both off.

Defaults for the whole process are set once with :func:`configure` (the CLI's ``--quiet``) or
the environment variables ``MARGINLAB_QUIET=1`` and ``MARGINLAB_PROGRESS_INTERVAL=SECONDS``,
which worker processes inherit.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TextIO, TypeVar

from marginlab.errors import MarginlabError

__all__ = ["Progress", "configure", "configured", "format_duration", "is_quiet",
           "progress_interval"]

DEFAULT_INTERVAL = 30.0
_QUIET_ENV = "MARGINLAB_QUIET"
_INTERVAL_ENV = "MARGINLAB_PROGRESS_INTERVAL"
T = TypeVar("T")


def configure(*, quiet: bool | None = None, interval: float | None = None) -> None:
    """Set the process-wide defaults (inherited by worker processes through the environment).

    Args:
        quiet: no bars and no progress lines.
        interval: seconds between plain progress lines when stderr is not a terminal.
    """
    if quiet is not None:
        os.environ[_QUIET_ENV] = "1" if quiet else "0"
    if interval is not None:
        if not (math.isfinite(interval) and interval > 0):
            raise MarginlabError(f"the progress interval must be > 0 seconds, got {interval}")
        os.environ[_INTERVAL_ENV] = repr(float(interval))


@contextlib.contextmanager
def configured(*, quiet: bool | None = None, interval: float | None = None) -> Iterator[None]:
    """:func:`configure` for the duration of a ``with`` block, then restore the defaults."""
    saved = {k: os.environ.get(k) for k in (_QUIET_ENV, _INTERVAL_ENV)}
    try:
        configure(quiet=quiet, interval=interval)
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def is_quiet() -> bool:
    """True when progress output is switched off for this process."""
    return os.environ.get(_QUIET_ENV, "0").strip().lower() in ("1", "true", "yes")


def progress_interval() -> float:
    """Seconds between plain progress lines (``MARGINLAB_PROGRESS_INTERVAL``, default 30)."""
    try:
        value = float(os.environ.get(_INTERVAL_ENV, DEFAULT_INTERVAL))
    except ValueError:
        return DEFAULT_INTERVAL
    return value if math.isfinite(value) and value > 0 else DEFAULT_INTERVAL


def format_duration(seconds: float) -> str:
    """``H:MM:SS`` (``D days, H:MM:SS`` past a day)."""
    if not math.isfinite(seconds):
        return "?"
    s = max(0, round(seconds))
    days, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    text = f"{h}:{m:02d}:{s:02d}"
    return f"{days} day{'s' if days > 1 else ''}, {text}" if days else text


_LABELS = {"log10_loss": "log10 L", "margin": "margin"}


def _format_value(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class Progress:
    """A progress display: a tqdm bar on a terminal, plain timed lines otherwise.

    Args:
        desc: what is running (e.g. ``train mnist_cnn``).
        total: the number of units when known (epochs, trials, points).
        initial: units already done (a resumed run).
        unit: name of a unit (``epoch``, ``trial``, ``pt``).
        quiet: no output; None: the process default (:func:`configure`).
        interval: seconds between plain lines; None: the process default.
        max_time: a wall-clock budget in seconds, when the work stops at one; the estimate of
            the time left is the smaller of the count-based one and the budget's remainder.
        elapsed: seconds already spent (a resumed run), counted in the elapsed time.
        stream: where to write (default: ``sys.stderr`` at creation).
        terminal: force the bar (True) or the plain lines (False); None: ``stream.isatty()``.
        clock: monotonic clock in seconds (tests pass a fake one; with a custom clock no
            background heartbeat runs, lines come from :meth:`update` and :meth:`poll`).
    """

    def __init__(self, desc: str, total: int | None = None, *, initial: int = 0,
                 unit: str = "it", quiet: bool | None = None, interval: float | None = None,
                 max_time: float | None = None, elapsed: float = 0.0,
                 stream: TextIO | None = None, terminal: bool | None = None,
                 clock: Callable[[], float] | None = None):
        self.desc, self.total, self.unit = desc, total, unit
        self.n = self._initial = int(initial)
        self.max_time = max_time
        self.interval = progress_interval() if interval is None else float(interval)
        self.quiet = is_quiet() if quiet is None else bool(quiet)
        self.stream = sys.stderr if stream is None else stream
        self.metrics: dict = {}
        self._clock = clock or time.monotonic
        self._t0 = self._clock() - float(elapsed)
        self._elapsed0 = float(elapsed)
        self._lock = threading.RLock()
        self._bar = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        if self.quiet:
            return
        if terminal is None:
            isatty = getattr(self.stream, "isatty", None)
            terminal = bool(isatty and isatty())
        if terminal:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=self.n, desc=desc, unit=unit,
                             file=self.stream, dynamic_ncols=True)
            return
        self._last = self._clock()
        self._emit("started")
        if clock is None:
            self._thread = threading.Thread(target=self._heartbeat, daemon=True,
                                            name="marginlab-progress")
            self._thread.start()

    # --- updates -----------------------------------------------------------------------
    def update(self, n: int = 1, **metrics) -> None:
        """Count ``n`` more units done and record the latest ``metrics`` (e.g.
        ``log10_loss=...``, ``margin=...``); writes a line if one is due."""
        with self._lock:
            self.n += n
            self.set(**metrics)
            if self._bar is not None:
                self._bar.update(n)
            else:
                self.poll()

    def set(self, **metrics) -> None:
        """Record the latest metrics without counting a unit (None values are dropped)."""
        with self._lock:
            for k, v in metrics.items():
                if v is None:
                    self.metrics.pop(k, None)
                else:
                    self.metrics[k] = v
            if self._bar is not None and metrics:
                self._bar.set_postfix_str(self._metrics_text(), refresh=False)

    def note(self, message: str = "") -> None:
        """Write a line now (e.g. at a snapshot), with the current counts and metrics."""
        if self.quiet or self._closed:
            return
        with self._lock:
            if self._bar is not None:
                if message:
                    self._bar.write(f"{self.desc}: {message}", file=self.stream)
                return
            self._emit(message)

    def poll(self) -> None:
        """Write a line if ``interval`` seconds passed since the last one."""
        if self.quiet or self._bar is not None or self._closed:
            return
        with self._lock:
            if self._clock() - self._last >= self.interval:
                self._emit("")

    def close(self, message: str = "done") -> None:
        """Stop the heartbeat and write the last line (or close the bar)."""
        if self._closed:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            if self._bar is not None:
                self._bar.close()
            elif not self.quiet:
                self._emit(message)
            self._closed = True

    def iterate(self, items: Iterable[T]) -> Iterator[T]:
        """Yield ``items``, counting one unit after each, and close at the end."""
        try:
            for item in items:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close("done" if exc_type is None else f"stopped ({exc_type.__name__})")

    # --- text --------------------------------------------------------------------------
    @property
    def elapsed(self) -> float:
        return self._clock() - self._t0

    def eta(self) -> float | None:
        """Seconds left, from the rate of this session's units and the time budget; None when
        neither is known."""
        elapsed = self.elapsed
        candidates = []
        done = self.n - self._initial
        if self.total is not None and done > 0:
            spent = elapsed - self._elapsed0
            candidates.append(max(0.0, spent / done * (self.total - self.n)))
        if self.max_time is not None:
            candidates.append(max(0.0, self.max_time - elapsed))
        return min(candidates) if candidates else None

    def _metrics_text(self) -> str:
        return " ".join(f"{_LABELS.get(k, k)}={_format_value(v)}" for k, v in self.metrics.items())

    def line(self, message: str = "") -> str:
        """The plain progress line for the current state."""
        parts = [f"[{self.desc}]"]
        if self.total is not None:
            pct = 100.0 * self.n / self.total if self.total else 100.0
            parts.append(f"{self.unit} {self.n}/{self.total} ({pct:.0f}%)")
        else:
            parts.append(f"{self.unit} {self.n}")
        metrics = self._metrics_text()
        if metrics:
            parts.append(metrics)
        parts.append(f"elapsed {format_duration(self.elapsed)}")
        eta = self.eta()
        if eta is not None and message not in ("done",):
            parts.append(f"eta {format_duration(eta)}")
        if message:
            parts.append(f"- {message}")
        return " ".join(parts)

    def _emit(self, message: str) -> None:
        text = self.line(message)
        try:
            self.stream.write(text + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken stream must not stop the work
            pass
        self._last = self._clock()

    def _heartbeat(self) -> None:
        while not self._stop.wait(min(self.interval, 1.0)):
            self.poll()
