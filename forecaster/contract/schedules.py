"""Declared schedules (maintenance, backups, batch jobs, deploys): when each host expects planned load.

Operators declare them in the config (``schedules:``, :class:`forecaster.contract.config.ScheduleEntry`)
as a 5-field cron expression (UTC) plus a duration, for the hosts whose ``instance`` matches a regex
and the signals the job is expected to load. From them this module computes, for any host, signal
and timestamps, whether a declared window covers each time: the model's known-future ``scheduled``
input (:func:`forecaster.contract.features.build_windows`, history and horizon alike) and the
forecaster's paging hint (a forecast breach that lies wholly inside declared windows).

The cron matcher is written here rather than taken from a dependency: it is small, it must run
vectorised over weeks of minutes for training, and its semantics are pinned by tests:

* fields ``minute hour day-of-month month day-of-week``; ``*``, ``a``, ``a-b``, ``*/n``, ``a-b/n``,
  ``a/n`` (from a to the end), comma lists; month and weekday names (``jan``, ``mon``); weekday 0 or 7
  is Sunday;
* as in Vixie cron, when both day-of-month and day-of-week are restricted (neither is ``*``), a day
  matches if either does; otherwise both must;
* every time is UTC; a window starts at each matching minute and lasts ``duration`` seconds, so a
  window that crosses midnight (``30 23 * * *`` for 1h) covers 23:30-00:30.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

_MONTHS = {m: i + 1 for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct",
                                           "nov", "dec"))}
_DAYS = {d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
#: (name, low, high, names) of the five fields.
_FIELDS = (("minute", 0, 59, {}), ("hour", 0, 23, {}), ("day-of-month", 1, 31, {}), ("month", 1, 12, _MONTHS),
           ("day-of-week", 0, 7, _DAYS))
_DURATION = re.compile(r"(\d+)(w|d|h|m|s)")
_UNIT = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
#: How long after a declared window a forecast breach still counts as the window's (the signal settles:
#: a backup's archive is shipped and deleted, an I/O queue drains); see :meth:`ScheduleSet.breach_explained`.
GRACE_SECONDS = 900
_KEY_INSTANCE = re.compile(r'^\{instance="((?:[^"\\]|\\.)*)"')


def parse_duration(text: str) -> int:
    """Seconds of a Prometheus-style duration (``45m``, ``2h``, ``1h30m``); ValueError with one line otherwise."""
    value = str(text).strip()
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise ValueError(f"invalid duration {text!r} (use e.g. 30m, 2h, 1h30m)")
    seconds = sum(int(n) * _UNIT[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"duration must be positive, not {text!r}")
    return seconds


def _field(text: str, name: str, low: int, high: int, names: dict[str, int]) -> tuple[np.ndarray, bool]:
    """The allowed values of one field as a boolean table indexed by value, and whether it was ``*``."""
    allowed = np.zeros(high + 1, dtype=bool)

    def number(token: str) -> int:
        token = token.lower()
        if token in names:
            return names[token]
        if not token.isdigit():
            raise ValueError(f"{name} field: {token!r} is not a number" + (" or a name" if names else ""))
        value = int(token)
        if not low <= value <= high:
            raise ValueError(f"{name} field: {value} is outside {low}-{high}")
        return value

    for part in text.split(","):
        if not part:
            raise ValueError(f"{name} field: empty list item in {text!r}")
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(f"{name} field: step {step_text!r} must be a positive number")
            step = int(step_text)
        if base == "*":
            lo, hi = low, high
        elif "-" in base:
            a, _, b = base.partition("-")
            lo, hi = number(a), number(b)
            if lo > hi:
                raise ValueError(f"{name} field: range {base!r} runs backwards")
        else:
            lo = number(base)
            hi = high if step_text else lo
        allowed[lo:hi + 1:step] = True
    return allowed, text == "*"


@dataclass(frozen=True)
class Cron:
    """A parsed 5-field cron expression (UTC)."""

    text: str
    minute: np.ndarray
    hour: np.ndarray
    dom: np.ndarray
    month: np.ndarray
    dow: np.ndarray
    dom_any: bool
    dow_any: bool

    @classmethod
    def parse(cls, text: str) -> Cron:
        parts = str(text).split()
        if len(parts) != 5:
            raise ValueError(f"cron {text!r} must have 5 fields (minute hour day-of-month month day-of-week), "
                             f"not {len(parts)}")
        tables = []
        for part, (name, low, high, names) in zip(parts, _FIELDS, strict=True):
            try:
                tables.append(_field(part, name, low, high, names))
            except ValueError as exc:
                raise ValueError(f"cron {text!r}: {exc}") from None
        (minute, _), (hour, _), (dom, dom_any), (month, _), (dow, dow_any) = tables
        dow = dow.copy()
        dow[0] |= dow[7]  # 7 is Sunday too
        return cls(str(text), minute, hour, dom, month, dow[:7], dom_any, dow_any)

    def matches_minutes(self, minutes: np.ndarray) -> np.ndarray:
        """True for each unix minute (seconds // 60) at which the expression fires."""
        m = np.asarray(minutes, dtype=np.int64)
        days = m // 1440
        day = days.astype("datetime64[D]")
        month_start = day.astype("datetime64[M]")
        month = month_start.astype(np.int64) % 12 + 1
        dom = (day - month_start.astype("datetime64[D]")).astype(np.int64) + 1
        dow = (days + 4) % 7  # 1970-01-01 was a Thursday (Sunday = 0)
        day_dom, day_dow = self.dom[dom], self.dow[dow]
        on_day = day_dom & day_dow if self.dom_any or self.dow_any else day_dom | day_dow
        return self.minute[m % 60] & self.hour[(m // 60) % 24] & self.month[month] & on_day

    def matches(self, seconds: float) -> bool:
        """Whether the expression fires at the minute holding ``seconds`` (unix time)."""
        return bool(self.matches_minutes(np.array([int(seconds // 60)]))[0])


@lru_cache(maxsize=256)
def compile_cron(text: str) -> Cron:
    return Cron.parse(text)


@dataclass(frozen=True)
class Schedule:
    """One declared schedule, compiled: when (cron, duration), for which hosts and signals."""

    name: str
    cron: str
    duration_seconds: int
    hosts: str = ".*"  # regex, matched in full against the ``instance`` label
    signals: tuple[str, ...] | None = None  # None: every signal

    def starts(self, lo: float, hi: float) -> np.ndarray:
        """Unix seconds of the window starts in ``[lo, hi]`` (ascending)."""
        first, last = int(np.floor(lo / 60)), int(np.floor(hi / 60))
        if last < first:
            return np.zeros(0, dtype=np.int64)
        minutes = np.arange(first, last + 1, dtype=np.int64)
        return minutes[compile_cron(self.cron).matches_minutes(minutes)] * 60

    def active(self, times: np.ndarray, after: float = 0.0) -> np.ndarray:
        """True where a window (extended by ``after`` seconds past its end) covers each unix time."""
        t = np.asarray(times, dtype=np.float64)
        if t.size == 0:
            return np.zeros(t.shape, dtype=bool)
        reach = self.duration_seconds + after
        starts = self.starts(float(np.nanmin(t)) - reach, float(np.nanmax(t)))
        if not len(starts):
            return np.zeros(t.shape, dtype=bool)
        idx = np.searchsorted(starts, t, side="right") - 1
        ok = idx >= 0
        return ok & (t < starts[np.clip(idx, 0, None)] + reach)

    def applies(self, instance: str, signal: str) -> bool:
        return _host_pattern(self.hosts).fullmatch(instance) is not None and (
            self.signals is None or signal in self.signals)


@lru_cache(maxsize=256)
def _host_pattern(text: str) -> re.Pattern[str]:
    return re.compile(text)


def instance_of(key: str) -> str:
    """The ``instance`` label of a host key (forecaster.contract.hosts): the key itself, or the first
    pair of a ``{instance="...",cluster="..."}`` key, which always leads with it."""
    m = _KEY_INSTANCE.match(key)
    if m is None:
        return key
    return re.sub(r"\\(.)", lambda g: "\n" if g.group(1) == "n" else g.group(1), m.group(1))


@dataclass(frozen=True)
class ScheduleSet:
    """The declared schedules of a config (possibly none): what the pipeline and the forecaster ask."""

    schedules: tuple[Schedule, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.schedules)

    def applying(self, key: str, signal: str) -> list[Schedule]:
        """The schedules that declare windows for this host key and signal."""
        inst = instance_of(key)
        return [s for s in self.schedules if s.applies(inst, signal)]

    def active(self, keys: Sequence[str], signals: Sequence[str], times: np.ndarray,
               after: float = 0.0) -> np.ndarray:
        """float32 [B, N]: 1 where a declared window for row b's host (``keys[b]``) and signal covers
        ``times[b, n]``, else 0. The model's ``scheduled`` input; ``after`` extends each window."""
        t = np.asarray(times, dtype=np.float64)
        out = np.zeros(t.shape, dtype=np.float32)
        if not self.schedules or not len(keys):
            return out
        pairs: dict[tuple[str, str], list[int]] = {}
        for b, pair in enumerate(zip(keys, signals, strict=True)):
            pairs.setdefault(pair, []).append(b)
        for sched in self.schedules:
            rows = [b for (key, sig), idx in pairs.items() if sched.applies(instance_of(key), sig) for b in idx]
            if rows:
                r = np.array(rows, dtype=np.int64)
                out[r] = np.maximum(out[r], sched.active(t[r], after).astype(np.float32))
        return out

    def breach_explained(self, keys: Sequence[str], signals: Sequence[str], times: np.ndarray,
                         above: np.ndarray) -> np.ndarray:
        """float64 [B]: whether each forecast breach is the declared windows' own. 1 when a declared window
        for the row's host and signal lies within the forecast (``times[b]``) and every step whose path is
        ``above`` the threshold lies inside a window or :data:`GRACE_SECONDS` after one; 0 when some step
        above lies outside them (a breach the schedule does not explain, which must still page); NaN when
        no schedule applies to the row at all."""
        n = len(keys)
        out = np.full(n, np.nan)
        if not self.schedules or not n:
            return out
        applies = np.array([bool(self.applying(k, s)) for k, s in zip(keys, signals, strict=True)])
        if not applies.any():
            return out
        inside = self.active(keys, signals, times) > 0
        explained = self.active(keys, signals, times, after=GRACE_SECONDS) > 0
        ok = inside.any(axis=1) & ~(np.asarray(above, dtype=bool) & ~explained).any(axis=1)
        out[applies] = ok[applies].astype(np.float64)
        return out
