"""Scheduled jobs of the simulated fleet: planned load, with ground truth kept apart from incidents.

Switched on with ``exporter.scheduled_jobs: true`` (``--scheduled-jobs``); off, the fleet is exactly
what it was without this module. Two jobs, at fixed UTC times so that an operator can declare them
as cron schedules (docs/OPERATIONS.md, "Declaring schedules", gives the matching config):

* ``backup``, every host, daily at 02:00 for 45 minutes: a local archive grows on the root
  filesystem (usage up by 4-15 points over 35 minutes, then shipped off and deleted in the last 10)
  while I/O wait climbs to 0.16-0.38. On the hosts with the heaviest backups (about a quarter) the
  archive takes the filesystem past its 0.9 threshold for a few minutes, and I/O wait crosses 0.3 on
  some: breaches that are planned.
* ``batch``, database and batch hosts, Saturdays at 22:00 for 2 hours: CPU near saturation
  (0.86-0.96 busy, 10-minute ramps).

How strong a run is depends on the host (its share of each range) and a little on the run, all drawn
from ``(seed, host, job, start)``: the pure-function rule of the rest of the simulator. The jobs
are not incidents: ``/incidents`` lists them under ``jobs`` and the early-warning scoring never
counts them as incidents. This module knows nothing of the forecaster (exporter imports only toolkit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from exporter.profiles import DAY, HOUR, MINUTE, HostSpec
from exporter.waves import Segment, SinSum, rng_for

WEEK = 7 * DAY
_SATURDAY = 5  # days since Monday


@dataclass(frozen=True)
class JobKind:
    """When a job runs (UTC), for how long, on which profiles, and which signals it loads."""

    name: str
    cron: str  # the schedule an operator declares for it (documentation and /incidents)
    hour: float  # start, hours after midnight UTC
    weekday: int | None  # None: daily; else days since Monday
    duration: float
    profiles: tuple[str, ...]
    signals: tuple[str, ...]
    hosts: str  # the regex on instance that selects ``profiles`` (the declared ``hosts``)


JOB_KINDS: dict[str, JobKind] = {
    "backup": JobKind("backup", "0 2 * * *", 2.0, None, 45 * MINUTE, ("web", "database", "batch", "cache"),
                      ("filesystem", "iowait"), ".*"),
    "batch": JobKind("batch", "0 22 * * sat", 22.0, _SATURDAY, 2 * HOUR, ("database", "batch"), ("cpu",),
                     "(db|batch)-.*"),
}
_BACKUP_FILL = 35 * MINUTE  # the archive grows for this long, then is deleted
_RAMP = 10 * MINUTE
_BATCH_IOWAIT = 0.012


@dataclass(frozen=True)
class JobRun:
    """One run of a scheduled job on one host (unix seconds): the ground truth of planned load."""

    instance: str
    job: str
    start: float
    end: float
    signals: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        from exporter.incidents import iso

        return {"instance": self.instance, "job": self.job, "start": iso(self.start), "end": iso(self.end),
                "signals": list(self.signals)}


def job_runs(spec: HostSpec, start: float, end: float) -> list[JobRun]:
    """The runs of this host's jobs that overlap ``[start, end]``, in time order."""
    runs = []
    for kind in JOB_KINDS.values():
        if spec.profile.name not in kind.profiles:
            continue
        first_day = math.floor((start - kind.duration) / DAY)
        for day in range(first_day, math.floor(end / DAY) + 1):
            if kind.weekday is not None and (day + 3) % 7 != kind.weekday:  # 1970-01-01 was a Thursday
                continue
            t0 = day * DAY + kind.hour * HOUR
            if t0 + kind.duration >= start and t0 <= end:
                runs.append(JobRun(spec.name, kind.name, t0, t0 + kind.duration, kind.signals))
    return sorted(runs, key=lambda r: (r.start, r.job))


def _strength(spec: HostSpec, job: str) -> float:
    """The host's share of its job's range: some hosts back up much more than others."""
    return float(rng_for(spec.seed, spec.name, "job", job).random())


def job_effects(spec: HostSpec, run: JobRun) -> dict[str, list[Segment]]:
    """What one run adds to the simulation channels (see :mod:`exporter.simulation`)."""
    u = float(np.clip(_strength(spec, run.job) + 0.15 * (rng_for(spec.seed, spec.name, run.job, run.start).random()
                                                          - 0.5), 0.0, 1.0))
    if run.job == "backup":
        fill = 0.04 + 0.11 * u
        if u > 0.7:  # the heaviest backups fill the disk past its 0.9 threshold, whatever its usage
            fill = max(fill, 0.91 + 0.12 * (u - 0.7) - float(spec.fs_base(np.array([run.start]))[0]))
        level = 0.16 + 0.22 * u
        mid = run.start + _BACKUP_FILL
        rate = fill * spec.fs_size / _BACKUP_FILL
        io = SinSum.const(level) - spec.iowait
        return {"fs": [Segment(run.start, mid, 0.0, 1.0, SinSum.const(fill)),
                       Segment(mid, run.end, 1.0, 0.0, SinSum.const(fill))],
                "write": [Segment(run.start, mid, 1.0, 1.0, SinSum.const(rate))],
                "iowait": [Segment(run.start, run.start + 5 * MINUTE, 0.0, 1.0, io),
                           Segment(run.start + 5 * MINUTE, run.end - 5 * MINUTE, 1.0, 1.0, io),
                           Segment(run.end - 5 * MINUTE, run.end, 1.0, 0.0, io)]}
    if run.job == "batch":
        busy = SinSum.const(0.86 + 0.10 * u) - spec.cpu
        io = SinSum.const(_BATCH_IOWAIT) - spec.iowait
        segments: dict[str, list[Segment]] = {"cpu": [], "iowait": []}
        for channel, q in (("cpu", busy), ("iowait", io)):
            segments[channel] = [Segment(run.start, run.start + _RAMP, 0.0, 1.0, q),
                                 Segment(run.start + _RAMP, run.end - _RAMP, 1.0, 1.0, q),
                                 Segment(run.end - _RAMP, run.end, 1.0, 0.0, q)]
        return segments
    raise ValueError(f"unknown job {run.job!r}")
