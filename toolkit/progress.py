"""A one-line progress report with a total, a rate and an ETA, redrawn in place on a terminal.

A long command (a backfill of weeks of history) should say how far it is and how long is left.
On a terminal that is one line redrawn in place; in a log file it would be thousands of lines, so
a command draws it only when asked (``--progress``, by default when stderr is a terminal) and logs
its milestones as usual otherwise. Log lines still reach the terminal while the line is drawn:
it is wiped before each one and drawn again at the next update, so the two never share a line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

_PREFIXES = ((1e9, "G"), (1e6, "M"), (1e3, "k"))


def _amount(value: float) -> str:
    for size, prefix in _PREFIXES:
        if abs(value) >= size:
            return f"{value / size:.1f}{prefix}"
    return f"{value:.0f}" if float(value).is_integer() or abs(value) >= 100 else f"{value:.1f}"


def _clock_text(seconds: float) -> str:
    whole = max(round(seconds), 0)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


class Progress:
    """``label  42% 8.1M/19.3M samples [00:12<00:16, 675.0k samples/s] note`` on ``stream``.

    Use it as a context manager: while it is open, log records written to the same stream wipe
    the line first. Redraws are at most every ``min_interval`` seconds (the last one always
    shows). ``total`` may be an estimate: :meth:`close` draws the final count as the total.
    """

    def __init__(self, total: float, stream: TextIO, *, unit: str, label: str = "", min_interval: float = 0.2,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total = max(float(total), 0.0)
        self.stream, self.unit, self.label = stream, unit, label
        self.min_interval, self.clock = min_interval, clock
        self.started = clock()
        self.done = 0.0
        self.note = ""
        self._drawn_at: float | None = None  # None: nothing of ours on the current line
        self._handlers: list[logging.Handler] = []
        self._wipe = _WipeBeforeLogs(self)

    def text(self) -> str:
        """The line as it would be drawn now."""
        elapsed = self.clock() - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        share = min(self.done / self.total, 1.0) if self.total else 1.0
        eta = _clock_text((self.total - self.done) / rate) if rate > 0 and self.total >= self.done else "?"
        head = f"{self.label} " if self.label else ""
        tail = f" {self.note}" if self.note else ""
        return (f"{head}{share * 100:3.0f}% {_amount(self.done)}/{_amount(self.total)} {self.unit} "
                f"[{_clock_text(elapsed)}<{eta}, {_amount(rate)} {self.unit}/s]{tail}")

    def update(self, done: float, note: str | None = None) -> None:
        self.done = float(done)
        if note is not None:
            self.note = note
        now = self.clock()
        if self._drawn_at is None or now - self._drawn_at >= self.min_interval:
            self._draw(now)

    def close(self, done: float | None = None, note: str | None = None) -> None:
        """The final line, with the final count as the total, and a newline."""
        if done is not None:
            self.done = float(done)
        self.total = max(self.total, self.done)
        if note is not None:
            self.note = note
        self._draw(self.clock())
        self.stream.write("\n")
        self.stream.flush()
        self._drawn_at = None

    def wipe(self) -> None:
        """Clear the drawn line (before someone else writes to the stream)."""
        if self._drawn_at is not None:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._drawn_at = None

    def _draw(self, now: float) -> None:
        self.stream.write("\r\x1b[K" + self.text())
        self.stream.flush()
        self._drawn_at = now

    def __enter__(self) -> Progress:
        self._handlers = [h for h in logging.getLogger().handlers
                          if isinstance(h, logging.StreamHandler) and h.stream is self.stream]
        for handler in self._handlers:
            handler.addFilter(self._wipe)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for handler in self._handlers:
            handler.removeFilter(self._wipe)
        if kind is None:
            if self._drawn_at is not None:
                self.stream.write("\n")
                self.stream.flush()
        else:
            self.wipe()  # the error's own line follows on a clean line


class _WipeBeforeLogs(logging.Filter):
    """Wipes the progress line before a record is written to its stream; filters nothing out."""

    def __init__(self, progress: Progress) -> None:
        super().__init__()
        self.progress = progress

    def filter(self, record: logging.LogRecord) -> bool:
        self.progress.wipe()
        return True
