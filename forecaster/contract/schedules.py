"""Declared schedules (maintenance, backups, batch jobs, deploys): when each host expects planned load.

Operators declare them in the config (``schedules:``, :class:`forecaster.contract.config.ScheduleEntry`)
as a 5-field cron expression (UTC) or a PromQL query, plus a duration, for the hosts whose ``instance``
matches a regex and the signals the job is expected to load. From them this module computes, for any
host, signal and timestamps, whether a declared window covers each time: the model's known-future
``scheduled`` input (:func:`forecaster.contract.features.build_windows`, history and horizon alike) and
the forecaster's paging hint (a forecast breach that lies wholly inside declared windows).

A query schedule names a series per host whose value is the unix time of the job's next planned start
(``kube_cronjob_next_schedule_time``, a textfile gauge ``backup_next_start_timestamp_seconds``). Every
distinct value the series took over a queried range is one window start: the past runs for training,
the upcoming one (a value in the future) for serving. Its windows are known only once resolved
(:meth:`ScheduleSet.resolved`, from :func:`planned_by_host` over Prometheus's answers or a Parquet
column); from then on it is a list of starts per host key, and :meth:`ScheduleSet.active`,
:meth:`ScheduleSet.applying` and :meth:`ScheduleSet.breach_explained` treat it as they treat a cron.
Unresolved, or for a host its series does not name, it declares no window and does not apply.

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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from forecaster.contract.hosts import HostIdentity
    from forecaster.contract.prometheus import PrometheusAPI

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


#: Planned window starts of a query schedule: ``((host key, (unix second, ...)), ...)``, sorted, hashable.
Planned = tuple[tuple[str, tuple[int, ...]], ...]
_NO_STARTS = np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class Schedule:
    """One declared schedule, compiled: when (a cron, or a query's planned starts), for which hosts and signals.

    Exactly one of ``cron`` and ``query`` is set (the config checks it). A query schedule's windows are
    its ``planned`` starts per host key, filled in by :meth:`with_starts`; until then (``None``) it has none.
    """

    name: str
    cron: str | None
    duration_seconds: int
    hosts: str = ".*"  # regex, matched in full against the ``instance`` label
    signals: tuple[str, ...] | None = None  # None: every signal
    query: str | None = None  # PromQL: per host, the unix time of the next planned start
    planned: Planned | None = None

    @cached_property
    def _starts_by_key(self) -> dict[str, np.ndarray]:
        return {key: np.asarray(starts, dtype=np.int64) for key, starts in self.planned or ()}

    def with_starts(self, starts: Mapping[str, np.ndarray]) -> Schedule:
        """This query schedule resolved: ``starts`` (unix seconds) per host key; hosts absent have no window."""
        planned = tuple(sorted((key, tuple(int(t) for t in np.unique(np.asarray(ts, dtype=np.int64))))
                               for key, ts in starts.items() if len(ts)))
        return replace(self, planned=planned)

    def starts(self, lo: float, hi: float, key: str | None = None) -> np.ndarray:
        """Unix seconds of the window starts in ``[lo, hi]`` (ascending); for a query schedule, host ``key``'s."""
        if self.cron is None:
            planned = self._starts_by_key.get(key, _NO_STARTS) if key is not None else _NO_STARTS
            return planned[(planned >= lo) & (planned <= hi)]
        first, last = int(np.floor(lo / 60)), int(np.floor(hi / 60))
        if last < first:
            return np.zeros(0, dtype=np.int64)
        minutes = np.arange(first, last + 1, dtype=np.int64)
        return minutes[compile_cron(self.cron).matches_minutes(minutes)] * 60

    def active(self, times: np.ndarray, after: float = 0.0, key: str | None = None) -> np.ndarray:
        """True where a window (extended by ``after`` seconds past its end) covers each unix time; a query
        schedule's windows are those of host ``key``."""
        t = np.asarray(times, dtype=np.float64)
        if t.size == 0:
            return np.zeros(t.shape, dtype=bool)
        reach = self.duration_seconds + after
        starts = self.starts(float(np.nanmin(t)) - reach, float(np.nanmax(t)), key)
        if not len(starts):
            return np.zeros(t.shape, dtype=bool)
        idx = np.searchsorted(starts, t, side="right") - 1
        ok = idx >= 0
        return ok & (t < starts[np.clip(idx, 0, None)] + reach)

    def applies(self, instance: str, signal: str) -> bool:
        return _host_pattern(self.hosts).fullmatch(instance) is not None and (
            self.signals is None or signal in self.signals)

    def applies_to(self, key: str, signal: str) -> bool:
        """Whether it declares windows for this host key and signal: the regex and signals, and for a query
        schedule a series of that host (one host's backup gauge says nothing about the others)."""
        return self.applies(instance_of(key), signal) and (self.cron is not None or key in self._starts_by_key)

    def window_host(self, key: str) -> str | None:
        """Whose windows a row of host ``key`` reads: ``None`` for a cron (the same for every host)."""
        return None if self.cron is not None else key


def planned_starts(values: np.ndarray) -> np.ndarray:
    """The window starts a query series says: each distinct finite, positive value (unix seconds), ascending.

    A "next start" gauge holds one value until the job starts, then the next one; every value it took is
    a run, past or planned, however many samples repeat it.
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v) & (v > 0)]
    return np.unique(np.rint(v).astype(np.int64))


def planned_by_host(series: Iterable[tuple[str | None, np.ndarray]]) -> dict[str, np.ndarray]:
    """Window starts per host key from ``(key, values)`` pairs, several series of one host merged; a series
    naming no host (key None) is dropped."""
    out: dict[str, np.ndarray] = {}
    for key, values in series:
        if key is None:
            continue
        starts = planned_starts(values)
        out[key] = np.union1d(out[key], starts) if key in out else starts
    return out


def query_planned(client: PrometheusAPI, schedule: Schedule, hosts: HostIdentity, start: float, end: float,
                  step: float) -> dict[str, np.ndarray]:
    """A query schedule's starts per host over ``[start, end]``, as training and serving both ask them.

    The range begins ``duration`` earlier, so a run that started just before ``start`` and still covers
    it is seen. Prometheus errors propagate: serving counts them and goes on, training stops.
    """
    if schedule.query is None:
        raise ValueError(f"schedule {schedule.name} has no query")
    found = client.query_range(schedule.query, start - schedule.duration_seconds, end, step)
    return planned_by_host((hosts.key(s.labels), s.values) for s in found)


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

    @property
    def queried(self) -> tuple[Schedule, ...]:
        """The query schedules, whose windows come from Prometheus (or a Parquet column), not the config."""
        return tuple(s for s in self.schedules if s.query is not None)

    def resolved(self, planned: Mapping[str, Mapping[str, np.ndarray]]) -> ScheduleSet:
        """A copy whose query schedules hold ``planned[name]`` (starts per host key); one not in ``planned``
        (its query failed, its column is missing) has no windows. Cron schedules are kept as they are; without
        query schedules this set itself."""
        if not self.queried:
            return self
        return ScheduleSet(tuple(s.with_starts(planned.get(s.name, {})) if s.query is not None else s
                                 for s in self.schedules))

    def applying(self, key: str, signal: str) -> list[Schedule]:
        """The schedules that declare windows for this host key and signal."""
        return [s for s in self.schedules if s.applies_to(key, signal)]

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
            # A cron's windows are every host's: one call for all its rows; a query's, one per host.
            groups: dict[str | None, list[int]] = {}
            for (key, sig), idx in pairs.items():
                if sched.applies_to(key, sig):
                    groups.setdefault(sched.window_host(key), []).extend(idx)
            for host, rows in groups.items():
                r = np.array(rows, dtype=np.int64)
                out[r] = np.maximum(out[r], sched.active(t[r], after, host).astype(np.float32))
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
