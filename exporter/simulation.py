"""The simulated fleet: every value is a pure function of (seed, scenario, anchor, host, time).

A host is a handful of *channels*: CPU busy share, I/O-wait share, network utilisation, extra
disk writes (rates, whose counters are their exact closed-form integrals since boot) and memory
and root-filesystem usage (gauges). Every exposed series derives from these channels, rounded
as the kernel rounds it (CPU seconds to 10 ms, memory to KiB, filesystems to 4 KiB blocks),
and the ground-truth breach times are measured on the very signals the default PromQL computes
from those series. Nothing here iterates over time, so ``/probe`` at ``t`` and a backfill sample
at ``t`` are the same number.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from exporter.families import FAMILIES
from exporter.incidents import (
    HISTORY_SLOTS,
    KIND_NAMES,
    KINDS,
    LED_KIND_NAMES,
    SLOT_SECONDS,
    THRESHOLDS,
    Incident,
    IncidentRecord,
    ScriptedPlan,
    check_scenario,
    incident_effects,
    led_slot_incident,
    plan_incident,
    scripted_plans,
    slot_incident,
)
from exporter.jobs import JobRun, job_effects, job_runs
from exporter.profiles import BUSY_MODES, CPU_MODES, DAY, HostSpec, host_names, host_spec, parse_host
from exporter.waves import GridNoise, Segment, SinSum

if TYPE_CHECKING:
    import pandas as pd

RATE_WINDOW = 300.0  # the [5m] of the default signal queries
GRID_STEP = 60.0  # ground-truth breach times are measured on this grid
DEFAULT_SIGNAL_NAMES: tuple[str, ...] = ("cpu", "memory", "filesystem", "iowait")
ALL_SIGNAL_NAMES: tuple[str, ...] = (*DEFAULT_SIGNAL_NAMES, "network")
_SLOT_CHUNK = 32
_ZERO = SinSum.const(0.0)
ROOT_DEVICE, ROOT_FSTYPE = "/dev/sda1", "ext4"
DISK_DEVICE, NET_DEVICE = "sda", "eth0"
UNAME_VERSION = "#1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)"

Labels = tuple[tuple[str, str], ...]
Series = list[tuple[Labels, np.ndarray]]


def _floor_to(x: np.ndarray, per_unit: float) -> np.ndarray:
    """Round down to a resolution of ``1/per_unit`` (monotone, so counters stay monotonic)."""
    return np.floor(x * per_unit) / per_unit


def _floor_multiple(x: np.ndarray, multiple: float) -> np.ndarray:
    return np.floor(x / multiple) * multiple


class Channel:
    """``base(t) + noise(t) + sum(segments)``, with its exact integral since ``origin``."""

    def __init__(self, base: SinSum | Callable[[np.ndarray], np.ndarray], noise: GridNoise | None,
                 segments: Iterable[Segment], origin: float) -> None:
        self.base = base
        self.noise = noise
        self.origin = origin
        self.segments = sorted(segments, key=lambda s: s.start)
        self._starts = np.array([s.start for s in self.segments])
        self._ends = np.array([s.end for s in self.segments])
        self._completed: tuple[np.ndarray, np.ndarray] | None = None

    def _overlapping(self, lo: float, hi: float) -> list[Segment]:
        if not self.segments:
            return []
        return [self.segments[i] for i in np.nonzero((self._starts <= hi) & (self._ends > lo))[0]]

    def value(self, t: np.ndarray) -> np.ndarray:
        out = np.array(self.base(t), dtype=np.float64)
        if self.noise is not None:
            out += self.noise(t)
        for seg in self._overlapping(float(t.min()), float(t.max())):
            out += seg.value(t)
        return out

    def integral(self, t: np.ndarray) -> np.ndarray:
        """``integral_{origin}^{t}``; segments must start after ``origin`` (they do: after boot)."""
        if not isinstance(self.base, SinSum):
            raise TypeError("only channels with a SinSum base have an integral")
        out = self.base.integral(self.origin, t)
        if self.noise is not None:
            out += self.noise.integral(self.origin, t)
        if self.segments:
            if self._completed is None:
                order = np.argsort(self._ends, kind="stable")
                totals = np.array([self.segments[i].total for i in order])
                self._completed = (self._ends[order], np.concatenate([[0.0], np.cumsum(totals)]))
            ends, cum = self._completed
            out += cum[np.searchsorted(ends, t, side="right")]
            for seg in self._overlapping(float(t.min()), float(t.max())):
                inside = np.nonzero((t > seg.start) & (t < seg.end))[0]
                if inside.size:
                    out[inside] += seg.integral_to(t[inside])
        return out


class HostModel:
    """One simulated host under a scenario and anchor. Thread-safe; cheap to query at any time."""

    def __init__(self, seed: int, name: str, scenario: str, anchor: float, jobs: bool = False,
                 led: bool = False) -> None:
        check_scenario(scenario)
        self.seed, self.name, self.scenario, self.anchor = seed, name, scenario, float(anchor)
        self.jobs = jobs  # scheduled jobs (exporter.jobs) on top of the scenario
        self.led = led  # led incidents (io_led_cpu) in history slots the scenario left empty
        self.kind_names: tuple[str, ...] = KIND_NAMES + (LED_KIND_NAMES if led else ())
        self._job_runs: tuple[JobRun, ...] = ()
        self.spec: HostSpec = host_spec(seed, name)
        # Boot before the oldest possible history incident, so counters never see a reset.
        self.boot = float(math.floor(self.anchor - HISTORY_SLOTS * SLOT_SECONDS - DAY - self.spec.boot_jitter))
        self._lock = threading.Lock()
        self._records: dict[tuple[str, float], IncidentRecord] = {}
        self._scripted = [self._solve(plan) for plan in scripted_plans(self.spec, scenario, self.anchor)]
        self._quiet_slots = {-1, 0} if self._scripted else set()
        self._slot_incidents: list[Incident] = []
        self._slots_until = -HISTORY_SLOTS - 1
        self._incidents: tuple[Incident, ...] = ()
        self._channels: dict[str, Channel] = {}
        self._extend_to_slot(_SLOT_CHUNK - 1)

    # ---------------------------------------------------------------- schedule

    @property
    def profile(self) -> str:
        return self.spec.profile.name

    def _build_channels(self, incidents: Iterable[Incident], runs: Iterable[JobRun] = ()) -> dict[str, Channel]:
        s, o = self.spec, self.boot
        effects: dict[str, list[Segment]] = {k: [] for k in ("cpu", "iowait", "network", "write", "memory", "fs")}
        for inc in incidents:
            for channel, segments in incident_effects(s, inc).items():
                effects[channel].extend(segments)
        for run in runs:
            for channel, segments in job_effects(s, run).items():
                effects[channel].extend(segments)
        return {
            "cpu": Channel(s.cpu, s.cpu_noise, effects["cpu"], o),
            "iowait": Channel(s.iowait, None, effects["iowait"], o),
            "network": Channel(s.network, s.network_noise, effects["network"], o),
            "write": Channel(_ZERO, None, effects["write"], o),
            "disk": Channel(_ZERO, s.disk_noise, (), o),
            "rx": Channel(_ZERO, s.rx_noise, (), o),
            "memory": Channel(s.memory, s.memory_noise, effects["memory"], o),
            "fs": Channel(s.fs_base, None, effects["fs"], o),
        }

    def _extend_to_slot(self, last: int) -> None:
        for slot in range(self._slots_until + 1, last + 1):
            if slot in self._quiet_slots:
                continue
            inc = slot_incident(self.spec, self.scenario, self.anchor, slot)
            if inc is None and self.led:
                inc = led_slot_incident(self.spec, self.scenario, self.anchor, slot)
            if inc is not None:
                self._slot_incidents.append(inc)
        incidents = tuple(sorted([*self._slot_incidents, *self._scripted], key=lambda i: i.ramp_start))
        if self.jobs:  # the scripted incidents were placed without them (so jobs leave incidents as they are)
            self._job_runs = tuple(job_runs(self.spec, self.boot + DAY, self.anchor + (last + 1) * SLOT_SECONDS))
        self._channels = self._build_channels(incidents, self._job_runs)
        self._incidents = incidents
        self._slots_until = last

    def _ensure(self, t_max: float) -> dict[str, Channel]:
        """Channels valid up to ``t_max``; incidents further in the future are added lazily."""
        needed = math.floor((t_max - self.anchor) / SLOT_SECONDS) + 1
        if needed > self._slots_until:
            with self._lock:
                if needed > self._slots_until:
                    self._extend_to_slot(needed + _SLOT_CHUNK)
        return self._channels

    def _solve(self, plan: ScriptedPlan) -> Incident:
        """Place a scripted incident so its measured breach starts at ``plan.breach_at``.

        First guess from the blend formula (the breach comes when the ramp weight ``w``
        satisfies ``(1-w)*base + w*target = threshold``), then a few numeric corrections
        because noise moves the crossing by a few minutes.
        """
        signal, threshold = KINDS[plan.kind].signal, THRESHOLDS[KINDS[plan.kind].signal]
        base_channels = self._build_channels(())
        base = float(self._signal(base_channels, signal, np.array([plan.breach_at]))[0])
        target = plan.level + (0.012 if signal == "cpu" else 0.0)
        weight = min(max((threshold - base) / max(target - base, 1e-6), 0.05), 0.98)
        ramp_start = plan.breach_at - weight * plan.ramp
        inc = plan_incident(self.spec, plan, ramp_start)
        for _ in range(8):
            inc = plan_incident(self.spec, plan, ramp_start)
            found = self._measure(self._build_channels([inc]), inc)[0]
            if found is None:
                ramp_start -= 10 * 60.0
                continue
            if plan.window[0] <= found <= plan.window[1] and abs(found - plan.breach_at) <= 300:
                break
            ramp_start += plan.breach_at - found
        return inc

    def incidents(self, start: float | None = None, end: float | None = None) -> list[Incident]:
        """Scheduled incidents overlapping ``[start, end]`` (default: all generated so far)."""
        if end is not None:
            self._ensure(end)
        lo = -math.inf if start is None else start
        hi = math.inf if end is None else end
        return [i for i in self._incidents if i.end >= lo and i.ramp_start <= hi]

    def job_runs(self, start: float, end: float) -> list[JobRun]:
        """Runs of scheduled jobs overlapping ``[start, end]`` (none unless jobs are on): planned load,
        not incidents."""
        if not self.jobs:
            return []
        self._ensure(end)
        return [r for r in self._job_runs if r.end >= start and r.start <= end]

    # ---------------------------------------------------------------- ground truth

    def _measure(self, channels: dict[str, Channel], inc: Incident) -> tuple[float | None, float | None, float]:
        lo = math.floor(inc.ramp_start / GRID_STEP) * GRID_STEP - 10 * GRID_STEP
        hi = math.ceil(inc.end / GRID_STEP) * GRID_STEP + 15 * GRID_STEP
        grid = np.arange(lo, hi + GRID_STEP / 2, GRID_STEP)
        values = self._signal(channels, inc.signal, grid)
        above = np.nonzero(values > inc.threshold)[0]
        if above.size == 0:
            return None, None, float(values.max())
        return float(grid[above[0]]), float(grid[above[-1]] + GRID_STEP), float(values.max())

    def record(self, inc: Incident) -> IncidentRecord:
        """Ground truth of one incident, measured on the signal itself (cached)."""
        key = (inc.kind, inc.ramp_start)
        rec = self._records.get(key)
        if rec is None:
            start, end, peak = self._measure(self._ensure(inc.end + DAY), inc)
            rec = IncidentRecord(inc.instance, self.profile, inc.kind, inc.signal, inc.threshold, inc.scripted,
                                 inc.ramp_start, start, end, inc.end, peak, inc.leading)
            self._records[key] = rec
        return rec

    def records(self, start: float, end: float) -> list[IncidentRecord]:
        return [self.record(i) for i in self.incidents(start, end)]

    def incident_active(self, t: np.ndarray) -> dict[str, np.ndarray]:
        """Per kind, 1.0 where an incident of that kind is in breach at ``t``, else 0.0."""
        out = {kind: np.zeros(t.shape) for kind in self.kind_names}
        for rec in self.records(float(t.min()), float(t.max())):
            if rec.breach_start is not None and rec.breach_end is not None:
                out[rec.kind][(t >= rec.breach_start) & (t < rec.breach_end)] = 1.0
        return out

    # ---------------------------------------------------------------- counters and gauges

    def _idle(self, ch: dict[str, Channel], t: np.ndarray) -> np.ndarray:
        return _floor_to((t - self.boot) - ch["cpu"].integral(t) - ch["iowait"].integral(t), 100.0)

    def _mem_available(self, ch: dict[str, Channel], t: np.ndarray) -> np.ndarray:
        used = np.clip(ch["memory"].value(t), 0.0, 0.995)
        return _floor_multiple(self.spec.mem_total * (1.0 - used), 1024.0)

    def _fs_avail(self, ch: dict[str, Channel], t: np.ndarray) -> np.ndarray:
        used = np.clip(ch["fs"].value(t), 0.0, 0.995)
        return _floor_multiple(self.spec.fs_size * (1.0 - used), 4096.0)

    def _tx(self, ch: dict[str, Channel], t: np.ndarray) -> np.ndarray:
        return np.floor(self.spec.link_bytes * ch["network"].integral(t))

    def _signal(self, ch: dict[str, Channel], name: str, t: np.ndarray) -> np.ndarray:
        """A signal exactly as its PromQL computes it from the exposed (rounded) series."""
        t = np.asarray(t, dtype=np.float64)
        if name == "memory":
            return 1.0 - self._mem_available(ch, t) / self.spec.mem_total
        if name == "filesystem":
            return 1.0 - self._fs_avail(ch, t) / self.spec.fs_size
        both = np.concatenate([t - RATE_WINDOW, t])
        n = t.size
        if name == "cpu":
            idle = self._idle(ch, both)
            return 1.0 - (idle[n:] - idle[:n]) / RATE_WINDOW
        if name == "iowait":
            w = _floor_to(ch["iowait"].integral(both), 100.0)
            return (w[n:] - w[:n]) / RATE_WINDOW
        if name == "network":
            tx = self._tx(ch, both)
            return (tx[n:] - tx[:n]) / RATE_WINDOW / self.spec.link_bytes
        raise ValueError(f"unknown signal {name!r}")

    def signals(self, t: np.ndarray, names: Iterable[str] = DEFAULT_SIGNAL_NAMES) -> dict[str, np.ndarray]:
        """Signal values at ``t`` (unix seconds) as the default PromQL would return them."""
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        ch = self._ensure(float(t.max()))
        return {name: self._signal(ch, name, t) for name in names}

    def series(self, t: np.ndarray, families: Collection[str] | None = None,
               cpu_modes: Collection[str] | None = None, root_only: bool = False) -> dict[str, Series]:
        """Every exposed series of the requested families at times ``t``.

        This one function feeds both the live ``/probe`` page (one time) and the backfill (a
        whole grid of times), which is what makes their join seamless.
        """
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        ch = self._ensure(float(t.max()))
        s = self.spec
        want = set(FAMILIES) if families is None else set(families)
        modes = CPU_MODES if cpu_modes is None else tuple(m for m in CPU_MODES if m in cpu_modes)
        cache: dict[str, np.ndarray] = {}

        def get(key: str) -> np.ndarray:
            if key not in cache:
                cache[key] = _COMPUTE[key](self, ch, t, get)
            return cache[key]

        out: dict[str, Series] = {}
        ones = np.ones(t.shape)
        if "node_boot_time_seconds" in want:
            out["node_boot_time_seconds"] = [((), ones * self.boot)]
        if "node_cpu_seconds_total" in want:
            cpu_series: Series = []
            for cpu in range(s.ncpu):
                for mode in modes:
                    if mode == "idle":
                        values = get("idle")
                    elif mode == "iowait":
                        values = get("iowait_seconds")
                    else:
                        values = _floor_to(s.busy_split[cpu, BUSY_MODES.index(mode)] * get("U"), 100.0)
                    cpu_series.append(((("cpu", str(cpu)), ("mode", mode)), values))
            out["node_cpu_seconds_total"] = cpu_series
        disk = (("device", DISK_DEVICE),)
        if "node_disk_io_time_seconds_total" in want:
            out["node_disk_io_time_seconds_total"] = [(disk, _floor_to(get("D"), 1000.0))]
        if "node_disk_read_bytes_total" in want:
            out["node_disk_read_bytes_total"] = [
                (disk, np.floor(s.disk_read_bytes * (0.03 * get("tau") + 0.5 * get("D"))))]
        if "node_disk_written_bytes_total" in want:
            out["node_disk_written_bytes_total"] = [
                (disk, np.floor(s.disk_write_bytes * (0.04 * get("tau") + 0.35 * get("D")) + get("E")))]
        root = (("device", ROOT_DEVICE), ("fstype", ROOT_FSTYPE), ("mountpoint", "/"))
        run = (("device", "tmpfs"), ("fstype", "tmpfs"), ("mountpoint", "/run"))
        run_avail = ones * (s.run_size - s.run_used)
        if "node_filesystem_avail_bytes" in want:
            out["node_filesystem_avail_bytes"] = [(root, get("fs_avail"))] + ([] if root_only else [(run, run_avail)])
        if "node_filesystem_free_bytes" in want:
            reserved = _floor_multiple(np.array(0.05 * s.fs_size), 4096.0)
            free = np.minimum(get("fs_avail") + reserved, s.fs_size)
            out["node_filesystem_free_bytes"] = [(root, free)] + ([] if root_only else [(run, run_avail)])
        if "node_filesystem_size_bytes" in want:
            out["node_filesystem_size_bytes"] = [(root, ones * s.fs_size)] + (
                [] if root_only else [(run, ones * s.run_size)])
        for minutes in (1, 5, 15):
            name = f"node_load{minutes}"
            if name in want:
                out[name] = [((), get(f"load{minutes}"))]
        mem_total = ones * s.mem_total
        if "node_memory_Buffers_bytes" in want:
            out["node_memory_Buffers_bytes"] = [((), get("buffers"))]
        if "node_memory_Cached_bytes" in want:
            out["node_memory_Cached_bytes"] = [((), get("cached"))]
        if "node_memory_MemAvailable_bytes" in want:
            out["node_memory_MemAvailable_bytes"] = [((), get("mem_avail"))]
        if "node_memory_MemFree_bytes" in want:
            free = get("mem_avail") - _floor_multiple(0.8 * (get("cached") + get("buffers")), 1024.0)
            out["node_memory_MemFree_bytes"] = [((), free)]
        if "node_memory_MemTotal_bytes" in want:
            out["node_memory_MemTotal_bytes"] = [((), mem_total)]
        net = (("device", NET_DEVICE),)
        if "node_network_receive_bytes_total" in want:
            rx = s.link_bytes * (s.rx_ratio * get("N") + 0.005 * get("tau") + get("RX"))
            out["node_network_receive_bytes_total"] = [(net, np.floor(rx))]
        if "node_network_speed_bytes" in want:
            out["node_network_speed_bytes"] = [(net, ones * s.link_bytes)]
        if "node_network_transmit_bytes_total" in want:
            out["node_network_transmit_bytes_total"] = [(net, get("tx"))]
        if "node_time_seconds" in want:
            out["node_time_seconds"] = [((), t.copy())]
        if "node_uname_info" in want:
            uname = (("domainname", "(none)"), ("machine", "x86_64"), ("nodename", self.name),
                     ("release", s.kernel), ("sysname", "Linux"), ("version", UNAME_VERSION))
            out["node_uname_info"] = [(uname, ones.copy())]
        if "tft_sim_incident_active" in want:
            active = self.incident_active(t)
            out["tft_sim_incident_active"] = [((("kind", k),), active[k]) for k in self.kind_names]
        return out


def _load(minutes: int) -> Callable[[HostModel, dict[str, Channel], np.ndarray, Callable], np.ndarray]:
    def compute(m: HostModel, ch: dict[str, Channel], t: np.ndarray, get: Callable) -> np.ndarray:
        window = 60.0 * minutes
        past = t - window
        runnable = (get("U") + get("W") - ch["cpu"].integral(past) - ch["iowait"].integral(past)) / window
        return np.round(m.spec.ncpu * 1.1 * runnable, 2)
    return compute


def _cached_frac(m: HostModel, ch: dict[str, Channel], t: np.ndarray, get: Callable) -> np.ndarray:
    free_share = get("mem_avail") / m.spec.mem_total
    return _floor_multiple(m.spec.mem_total * 0.5 * free_share * (0.6 + 0.3 * (m.spec.index % 2)), 1024.0)


# How each intermediate quantity is computed; ``get`` memoises them within one ``series`` call.
_COMPUTE: dict[str, Callable[[HostModel, dict[str, Channel], np.ndarray, Callable], np.ndarray]] = {
    "tau": lambda m, ch, t, get: t - m.boot,
    "U": lambda m, ch, t, get: ch["cpu"].integral(t),
    "W": lambda m, ch, t, get: ch["iowait"].integral(t),
    "N": lambda m, ch, t, get: ch["network"].integral(t),
    "E": lambda m, ch, t, get: ch["write"].integral(t),
    "RX": lambda m, ch, t, get: ch["rx"].integral(t),
    # Disk busy share d = 0.02 + 1.2*iowait + 0.1*busy + noise, so its integral is linear in U, W.
    "D": lambda m, ch, t, get: 0.02 * get("tau") + 1.2 * get("W") + 0.1 * get("U") + ch["disk"].integral(t),
    "idle": lambda m, ch, t, get: m._idle(ch, t),
    "iowait_seconds": lambda m, ch, t, get: _floor_to(get("W"), 100.0),
    "tx": lambda m, ch, t, get: m._tx(ch, t),
    "fs_avail": lambda m, ch, t, get: m._fs_avail(ch, t),
    "mem_avail": lambda m, ch, t, get: m._mem_available(ch, t),
    "cached": _cached_frac,
    "buffers": lambda m, ch, t, get: _floor_multiple(0.03 * get("mem_avail"), 1024.0),
    "load1": _load(1),
    "load5": _load(5),
    "load15": _load(15),
}


class Fleet:
    """The simulated hosts of one run: names, models (built lazily) and fleet-wide helpers."""

    def __init__(self, hosts: int | Sequence[str] = 20, *, seed: int = 42, scenario: str = "degrading",
                 anchor: float, jobs: bool = False, led: bool = False) -> None:
        check_scenario(scenario)
        if isinstance(hosts, int):
            if hosts < 1:
                raise ValueError("the number of hosts must be at least 1")
            names = host_names(hosts)
        else:
            names = list(hosts)
            for name in names:
                parse_host(name)
        self.names: tuple[str, ...] = tuple(names)
        self.seed, self.scenario, self.anchor = seed, scenario, float(anchor)
        self.jobs = jobs
        self.led = led  # led incidents (exporter.incidents.LED_KINDS), off by default
        self._models: dict[str, HostModel] = {}
        self._lock = threading.Lock()

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def __len__(self) -> int:
        return len(self.names)

    def profile(self, name: str) -> str:
        return parse_host(name)[0]

    def model(self, name: str) -> HostModel:
        if name not in self.names:
            raise KeyError(name)
        model = self._models.get(name)
        if model is None:
            with self._lock:
                model = self._models.get(name)
                if model is None:
                    model = HostModel(self.seed, name, self.scenario, self.anchor, self.jobs, self.led)
                    self._models[name] = model
        return model

    def incidents(self, start: float, end: float, hosts: Iterable[str] | None = None) -> list[IncidentRecord]:
        """Ground truth of every incident overlapping ``[start, end]``, in time order."""
        records = [r for name in (self.names if hosts is None else hosts)
                   for r in self.model(name).records(start, end)]
        return sorted(records, key=lambda r: (r.ramp_start, r.instance))

    def job_runs(self, start: float, end: float, hosts: Iterable[str] | None = None) -> list[JobRun] | None:
        """Ground truth of the scheduled jobs' runs overlapping ``[start, end]``; None when jobs are off."""
        if not self.jobs:
            return None
        runs = [r for name in (self.names if hosts is None else hosts) for r in self.model(name).job_runs(start, end)]
        return sorted(runs, key=lambda r: (r.start, r.instance, r.job))

    def signal_frame(self, start: float, end: float, step: float = 300.0,
                     names: Sequence[str] = DEFAULT_SIGNAL_NAMES) -> pd.DataFrame:
        """Wide table ``instance, timestamp, <signal>...`` on multiples of ``step`` in [start, end]."""
        import pandas as pd

        first = math.ceil(start / step) * step
        grid = np.arange(first, end + step / 2, step)
        grid = grid[grid <= end]
        frames = []
        for name in self.names:
            values = self.model(name).signals(grid, names)
            frames.append(pd.DataFrame({"instance": name, "timestamp": pd.to_datetime(grid, unit="s", utc=True),
                                        **{k: values[k] for k in names}}))
        frame = pd.concat(frames, ignore_index=True)
        frame["instance"] = frame["instance"].astype(str)
        return frame
