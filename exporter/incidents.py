"""Incident kinds, the incident schedule, and the ground-truth records written for evaluation.

The schedule is a pure function of ``(seed, scenario, host, anchor)``:

* history: time is cut into 2-day slots counted from the anchor; each slot holds at most one
  incident (probability 0.45, or 0.55 for ``critical``), placed wholly inside the slot, so
  incidents of one host never overlap. That is about one incident every 4-5 days per host,
  before the anchor (so a backfill holds many) and after it (so a long run stays interesting).
* scripted: in every block of four consecutive hosts one host (two for ``critical``) gets an
  incident whose breach starts 20-60 minutes after the anchor, with a ramp that began hours
  earlier; ``critical`` adds one later incident per block, breaching 1.5-4 hours after it.
  The exact ramp start is solved numerically by :mod:`exporter.simulation`.

An incident blends the affected signals from their healthy shape towards a target
(``(1 - w) * base + w * target``, ``w`` a linear ramp), holds the target (the breach), then
recovers: the memory leak ends in an OOM-like drop, the disk fill in a cleanup.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from exporter.profiles import DAY, HOUR, MINUTE, HostSpec
from exporter.waves import Segment, SinSum, rng_for, stable_hash

SCENARIOS: tuple[str, ...] = ("healthy", "degrading", "critical")
SLOT_SECONDS = 2 * DAY
HISTORY_SLOTS = 200  # 400 days of incidents before the anchor; hosts boot before that
_RATE = {"healthy": 0.0, "degrading": 0.45, "critical": 0.55}
_RAMP_FACTOR = {"healthy": 1.0, "degrading": 1.0, "critical": 0.6}

#: Thresholds of the signals incidents breach. cpu/memory/filesystem/iowait mirror
#: ``forecaster.contract.config.DEFAULT_SIGNALS`` (a test keeps them equal); the exporter must not
#: import the forecaster, hence the copy. ``network`` (transmit rate / link speed) is ours.
THRESHOLDS: dict[str, float] = {"cpu": 0.9, "memory": 0.9, "filesystem": 0.9, "iowait": 0.3, "network": 0.9}

#: PromQL that computes each signal from the simulated series, as the forecaster does.
SIGNAL_QUERIES: dict[str, str] = {
    "cpu": '1 - avg by (instance) (rate(node_cpu_seconds_total{mode="idle"}[5m]))',
    "memory": "max by (instance) (1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes)",
    "filesystem": 'max by (instance) (1 - node_filesystem_avail_bytes{mountpoint="/",fstype!="tmpfs"}'
    ' / node_filesystem_size_bytes{mountpoint="/",fstype!="tmpfs"})',
    "iowait": 'avg by (instance) (rate(node_cpu_seconds_total{mode="iowait"}[5m]))',
    "network": 'max by (instance) (rate(node_network_transmit_bytes_total{device="eth0"}[5m])'
    ' / node_network_speed_bytes{device="eth0"})',
}


@dataclass(frozen=True)
class Kind:
    signal: str
    ramp: tuple[float, float]
    plateau: tuple[float, float]
    recovery: tuple[float, float]
    level: tuple[float, float]


KINDS: dict[str, Kind] = {
    "memory_leak": Kind("memory", (3 * HOUR, 8 * HOUR), (20 * MINUTE, 50 * MINUTE), (30 * MINUTE, 90 * MINUTE),
                        (0.94, 0.965)),
    "disk_fill": Kind("filesystem", (6 * HOUR, 12 * HOUR), (25 * MINUTE, 80 * MINUTE),
                      (5 * MINUTE, 15 * MINUTE), (0.95, 0.975)),
    "cpu_saturation": Kind("cpu", (1 * HOUR, 2 * HOUR), (25 * MINUTE, 60 * MINUTE), (15 * MINUTE, 30 * MINUTE),
                           (0.93, 0.95)),
    "iowait_storm": Kind("iowait", (30 * MINUTE, 60 * MINUTE), (25 * MINUTE, 45 * MINUTE),
                         (10 * MINUTE, 20 * MINUTE), (0.38, 0.46)),
    "network_saturation": Kind("network", (1 * HOUR, 2 * HOUR), (25 * MINUTE, 60 * MINUTE),
                               (15 * MINUTE, 30 * MINUTE), (0.94, 0.96)),
}
KIND_NAMES: tuple[str, ...] = tuple(sorted(KINDS))

#: Led incidents (``led_incidents``, off by default): one signal of the host leads the breached one.
#: ``io_led_cpu``: I/O wait climbs to 0.14-0.22 (well above its normal 0.005-0.05, below its 0.3
#: threshold) and stays there for 60-90 minutes while tasks stall on the disk (CPU busy share sags by
#: a third), then the backlog is worked off and CPU saturates over ``_LED_CPU_RAMP`` (the breach). Its
#: ``ramp`` runs from the start of the I/O climb to the CPU target; ``aux`` is the I/O wait level.
#: Kept apart from ``KINDS`` so that with the option off nothing (not even the kinds exposed on
#: ``tft_sim_incident_active``) changes.
LED_KINDS: dict[str, Kind] = {
    "io_led_cpu": Kind("cpu", (60 * MINUTE + 10 * MINUTE + 25 * MINUTE, 90 * MINUTE + 10 * MINUTE + 25 * MINUTE),
                       (25 * MINUTE, 50 * MINUTE), (15 * MINUTE, 30 * MINUTE), (0.93, 0.95)),
}
LED_KIND_NAMES: tuple[str, ...] = tuple(sorted(LED_KINDS))
#: The signal that leads each led kind (recorded in the ground truth as ``leading``).
LEADING: dict[str, str] = {"io_led_cpu": "iowait"}
#: Probability that a history slot without an incident gets a led one (when they are on).
LED_RATE = 0.45
_LED_IO_RISE = 10 * MINUTE
_LED_CPU_RAMP = 25 * MINUTE
_LED_IO_LEVEL = (0.14, 0.22)
_LED_BUSY_SAG = 1 / 3
_ALL_KINDS: dict[str, Kind] = {**KINDS, **LED_KINDS}

#: Ramp ranges of the scripted early incidents: long enough to be visible at the anchor, even
#: after ``critical`` shortens them.
_SCRIPTED_RAMP = {"memory_leak": (3 * HOUR, 6 * HOUR), "disk_fill": (6 * HOUR, 10 * HOUR),
                  "cpu_saturation": (3 * HOUR, 4 * HOUR)}
#: Window (seconds after the anchor) in which scripted breaches start.
EARLY_BREACH = (20 * MINUTE, 60 * MINUTE)
LATE_BREACH = (90 * MINUTE, 240 * MINUTE)

# Fixed parts of the incident targets.
_CPU_SAT_IOWAIT = 0.012
_NET_SAT_CPU_EXTRA = 0.08


def check_scenario(scenario: str) -> str:
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r} (choose one of {', '.join(SCENARIOS)})")
    return scenario


@dataclass(frozen=True)
class Incident:
    """One scheduled incident; times are unix seconds.

    ``ramp_start -> ramp_end``: the signal drifts towards ``level``; ``ramp_end -> peak_end``:
    it stays there (breach); ``peak_end -> end``: recovery (OOM drop, cleanup, calming down).
    ``aux`` is a kind-specific extra: the post-OOM memory level for a leak, the CPU busy level
    during an I/O-wait storm, the leading I/O-wait level of an ``io_led_cpu``.
    """

    instance: str
    kind: str
    ramp_start: float
    ramp_end: float
    peak_end: float
    end: float
    level: float
    aux: float = 0.0
    scripted: bool = False

    @property
    def signal(self) -> str:
        return _ALL_KINDS[self.kind].signal

    @property
    def leading(self) -> str | None:
        """The signal that leads a led incident (``io_led_cpu``: iowait); None for the others."""
        return LEADING.get(self.kind)

    @property
    def threshold(self) -> float:
        return THRESHOLDS[self.signal]


def _lerp(bounds: tuple[float, float], u: float) -> float:
    return bounds[0] + (bounds[1] - bounds[0]) * u


def _choose(mix: dict[str, float], u: float) -> str:
    names = list(mix)
    cum = np.cumsum([mix[n] for n in names])
    return names[int(np.searchsorted(cum / cum[-1], u, side="right").clip(0, len(names) - 1))]


def _make(spec: HostSpec, kind: str, ramp_start: float, ramp: float, plateau: float, recovery: float,
          level: float, u_aux: float, scripted: bool) -> Incident:
    r0 = float(round(ramp_start))
    r1 = float(round(r0 + ramp))
    p1 = float(round(r1 + plateau))
    end = float(round(p1 + recovery))
    if kind == "memory_leak":
        aux = max(0.12, spec.memory.c - (0.15 + 0.15 * u_aux))
    elif kind == "iowait_storm":
        aux = 0.25 + 0.1 * u_aux
    elif kind == "io_led_cpu":
        aux = _lerp(_LED_IO_LEVEL, u_aux)
    else:
        aux = 0.0
    return Incident(spec.name, kind, r0, r1, p1, end, float(level), float(aux), scripted)


def slot_incident(spec: HostSpec, scenario: str, anchor: float, slot: int) -> Incident | None:
    """The history incident of ``slot`` (2-day slots counted from the anchor), if any."""
    rate = _RATE[scenario]
    if rate == 0.0:
        return None
    u = rng_for(spec.seed, spec.name, "slot", slot).random(8)
    if u[0] >= rate:
        return None
    kind = _choose(spec.profile.incident_mix, float(u[1]))
    k = KINDS[kind]
    ramp = _lerp(k.ramp, float(u[2])) * _RAMP_FACTOR[scenario]
    plateau, recovery = _lerp(k.plateau, float(u[3])), _lerp(k.recovery, float(u[4]))
    lo = anchor + slot * SLOT_SECONDS + HOUR
    hi = anchor + (slot + 1) * SLOT_SECONDS - HOUR - (ramp + plateau + recovery)
    start = lo + float(u[6]) * (hi - lo)
    return _make(spec, kind, start, ramp, plateau, recovery, _lerp(k.level, float(u[5])), float(u[7]), False)


def led_slot_incident(spec: HostSpec, scenario: str, anchor: float, slot: int) -> Incident | None:
    """The led incident of a history slot that :func:`slot_incident` left empty, if any.

    Drawn from a stream of its own, ``(seed, host, "led", slot)``, so the other incidents stay as
    they are; none in ``healthy``. Call it only for slots without an incident."""
    if _RATE[scenario] == 0.0:
        return None
    u = rng_for(spec.seed, spec.name, "led", slot).random(8)
    if u[0] >= LED_RATE:
        return None
    kind = LED_KIND_NAMES[int(u[1] * len(LED_KIND_NAMES)) % len(LED_KIND_NAMES)]
    k = LED_KINDS[kind]
    ramp = _lerp(k.ramp, float(u[2]))  # the lead is the point: ``critical`` does not shorten it
    plateau, recovery = _lerp(k.plateau, float(u[3])), _lerp(k.recovery, float(u[4]))
    lo = anchor + slot * SLOT_SECONDS + HOUR
    hi = anchor + (slot + 1) * SLOT_SECONDS - HOUR - (ramp + plateau + recovery)
    start = lo + float(u[6]) * (hi - lo)
    return _make(spec, kind, start, ramp, plateau, recovery, _lerp(k.level, float(u[5])), float(u[7]), False)


@dataclass(frozen=True)
class ScriptedPlan:
    """A scripted incident before its ramp start is solved: when it should breach, and how."""

    kind: str
    breach_at: float  # target breach start, unix seconds
    window: tuple[float, float]  # acceptable breach start range, unix seconds
    ramp: float
    plateau: float
    recovery: float
    level: float
    u_aux: float


def _script_position(seed: int, block: int) -> int:
    return 0 if block == 0 else stable_hash(seed, "scripted-position", block) % 4


def scripted_plans(spec: HostSpec, scenario: str, anchor: float) -> list[ScriptedPlan]:
    """Scripted incidents of this host (zero or one), decided by its index within a block of 4.

    Block 0 always scripts its first host, so even a one-host fleet shows an incident.
    """
    if scenario == "healthy":
        return []
    block, pos = divmod(spec.index, 4)
    base = _script_position(spec.seed, block)
    early = {base} if scenario == "degrading" else {base, (base + 2) % 4}
    late = {(base + 1) % 4} if scenario == "critical" else set()
    if pos not in early | late:
        return []
    u = rng_for(spec.seed, spec.name, scenario, "scripted").random(8)
    factor = _RAMP_FACTOR[scenario]
    if pos in early:
        kinds = spec.profile.scripted_kinds
        kind = kinds[int(u[0] * len(kinds)) % len(kinds)]
        ramp = _lerp(_SCRIPTED_RAMP[kind], float(u[1])) * factor
        lo, hi = EARLY_BREACH
        target = _lerp((lo + 8 * MINUTE, hi - 8 * MINUTE), float(u[2]))
    else:
        kind = _choose(spec.profile.incident_mix, float(u[0]))
        ramp = _lerp(KINDS[kind].ramp, float(u[1])) * factor
        lo, hi = LATE_BREACH
        target = _lerp((lo + 10 * MINUTE, hi - 10 * MINUTE), float(u[2]))
    k = KINDS[kind]
    return [ScriptedPlan(kind, anchor + target, (anchor + lo, anchor + hi), ramp,
                         _lerp(k.plateau, float(u[3])), _lerp(k.recovery, float(u[4])),
                         _lerp(k.level, float(u[5])), float(u[6]))]


def plan_incident(spec: HostSpec, plan: ScriptedPlan, ramp_start: float) -> Incident:
    return _make(spec, plan.kind, ramp_start, plan.ramp, plan.plateau, plan.recovery, plan.level,
                 plan.u_aux, True)


def _target(incident: Incident, level: float, amplitude: float) -> SinSum:
    """A target level with a little movement of its own, so a breach plateau is not a flat line."""
    rng = rng_for(incident.instance, incident.kind, incident.ramp_start, "target")
    terms = [(amplitude * 0.6, float(rng.uniform(7, 19)) * MINUTE, float(rng.uniform(0, 6.3))),
             (amplitude * 0.4, float(rng.uniform(2, 5)) * MINUTE, float(rng.uniform(0, 6.3)))]
    return SinSum.of(level, terms)


def _trapezoid(inc: Incident, q: SinSum) -> list[Segment]:
    return [Segment(inc.ramp_start, inc.ramp_end, 0.0, 1.0, q),
            Segment(inc.ramp_end, inc.peak_end, 1.0, 1.0, q),
            Segment(inc.peak_end, inc.end, 1.0, 0.0, q)]


def incident_effects(spec: HostSpec, inc: Incident) -> dict[str, list[Segment]]:
    """What an incident adds to each simulation channel (see :mod:`exporter.simulation`)."""
    if inc.kind == "cpu_saturation":
        return {"cpu": _trapezoid(inc, _target(inc, inc.level, 0.008) - spec.cpu),
                "iowait": _trapezoid(inc, SinSum.const(_CPU_SAT_IOWAIT) - spec.iowait)}
    if inc.kind == "iowait_storm":
        return {"iowait": _trapezoid(inc, _target(inc, inc.level, 0.02) - spec.iowait),
                "cpu": _trapezoid(inc, SinSum.const(inc.aux) - spec.cpu)}
    if inc.kind == "network_saturation":
        return {"network": _trapezoid(inc, _target(inc, inc.level, 0.01) - spec.network),
                "cpu": _trapezoid(inc, SinSum.const(_NET_SAT_CPU_EXTRA))}
    if inc.kind == "io_led_cpu":
        io_top, cpu_start = inc.ramp_start + _LED_IO_RISE, inc.ramp_end - _LED_CPU_RAMP
        io = SinSum.const(inc.aux) - spec.iowait
        sag = spec.cpu.scaled(-_LED_BUSY_SAG)
        # At the CPU target busy + iowait (what the cpu PromQL counts) is ``level``.
        sat = _target(inc, inc.level, 0.008) - spec.cpu - SinSum.const(inc.aux)
        return {"iowait": [Segment(inc.ramp_start, io_top, 0.0, 1.0, io),
                           Segment(io_top, inc.peak_end, 1.0, 1.0, io),
                           Segment(inc.peak_end, inc.end, 1.0, 0.0, io)],
                "cpu": [Segment(inc.ramp_start, io_top, 0.0, 1.0, sag),
                        Segment(io_top, cpu_start, 1.0, 1.0, sag),
                        Segment(cpu_start, inc.ramp_end, 1.0, 0.0, sag),
                        Segment(cpu_start, inc.ramp_end, 0.0, 1.0, sat),
                        Segment(inc.ramp_end, inc.peak_end, 1.0, 1.0, sat),
                        Segment(inc.peak_end, inc.end, 1.0, 0.0, sat)]}
    if inc.kind == "memory_leak":
        q = _target(inc, inc.level, 0.005) - spec.memory
        return {"memory": [Segment(inc.ramp_start, inc.ramp_end, 0.0, 1.0, q),
                           Segment(inc.ramp_end, inc.peak_end, 1.0, 1.0, q),
                           Segment(inc.peak_end, inc.end, 1.0, 0.0, SinSum.const(inc.aux) - spec.memory)]}
    if inc.kind == "disk_fill":
        delta = inc.level - float(spec.fs_base(np.array([inc.ramp_end]))[0])
        rate = delta * spec.fs_size / max(inc.ramp_end - inc.ramp_start, 1.0)
        return {"fs": _trapezoid(inc, SinSum.const(delta)),
                "write": [Segment(inc.ramp_start, inc.ramp_end, 1.0, 1.0, SinSum.const(rate))]}
    raise ValueError(f"unknown incident kind {inc.kind!r}")


# --------------------------------------------------------------------------- ground truth


def iso(ts: float) -> str:
    """UTC ISO 8601 with a ``Z``, whole seconds: the format of every time in the JSON."""
    return datetime.fromtimestamp(round(ts), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class IncidentRecord:
    """Ground truth for one incident; ``breach_*`` come from the simulated signal itself.

    ``breach_start`` is the first 60 s grid time at which the signal, computed as the default
    PromQL computes it, exceeds its threshold; ``breach_end`` is the grid time after the last
    such sample.
    """

    instance: str
    profile: str
    kind: str
    signal: str
    threshold: float
    scripted: bool
    ramp_start: float
    breach_start: float | None
    breach_end: float | None
    end: float
    peak: float
    leading: str | None = None  # led incidents (io_led_cpu): the signal that leads the breached one

    def active(self, t: float) -> bool:
        return self.breach_start is not None and self.breach_end is not None and \
            self.breach_start <= t < self.breach_end

    def to_json(self) -> dict[str, Any]:
        return {
            "instance": self.instance, "profile": self.profile, "kind": self.kind, "signal": self.signal,
            "threshold": self.threshold, "scripted": self.scripted,
            "ramp_start": iso(self.ramp_start),
            "breach_start": iso(self.breach_start) if self.breach_start is not None else None,
            "breach_end": iso(self.breach_end) if self.breach_end is not None else None,
            "end": iso(self.end), "peak": round(self.peak, 4),
            **({} if self.leading is None else {"leading": self.leading}),
        }


def incidents_document(records: Sequence[IncidentRecord], *, seed: int, scenario: str, anchor: float,
                       start: float, end: float, hosts: Iterable[str],
                       jobs: Sequence[Any] | None = None) -> dict[str, Any]:
    """The JSON document served on ``/incidents`` and written by ``backfill``/``incidents``.

    With scheduled jobs on (``jobs``, exporter.jobs.JobRun), their runs are listed under ``jobs``,
    apart from the incidents: planned load is not an incident."""
    extra: dict[str, Any] = {} if jobs is None else {"jobs": [r.to_json() for r in jobs]}
    return {
        "generator": "tft-exporter",
        "seed": seed, "scenario": scenario, "anchor": iso(anchor),
        "from": iso(start), "to": iso(end), "hosts": list(hosts),
        "thresholds": dict(THRESHOLDS),
        "incidents": [r.to_json() for r in records],
        **extra,
    }


def write_incidents(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
