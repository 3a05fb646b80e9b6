"""Host profiles and the static description of one simulated host.

A host's name carries its profile (``web-01``, ``db-02``, ``batch-03``, ``cache-04``), and
everything static about it (CPU count, memory, disk, the shape of its daily and weekly cycles)
is drawn from a generator seeded by ``(seed, name)`` alone. The same host therefore looks the
same whether the fleet has 3 hosts or 300, and in every process.

Healthy-state bounds are guaranteed by construction (:meth:`SinSum.fit_within` plus the known
noise amplitude), not by clipping: CPU busy+iowait stays <= 0.75, memory <= 0.8,
filesystem <= 0.8, iowait <= 0.15, network <= 0.6.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from exporter.waves import GridNoise, SinSum, rng_for, stable_hash

DAY = 86400.0
WEEK = 7 * DAY
HOUR = 3600.0
MINUTE = 60.0
GIB = 1024**3

#: Round-robin order of profiles over host indices, and the name prefix of each.
PROFILE_ORDER: tuple[str, ...] = ("web", "database", "batch", "cache")
PREFIXES: dict[str, str] = {"web": "web", "database": "db", "batch": "batch", "cache": "cache"}
_PROFILE_OF_PREFIX = {v: k for k, v in PREFIXES.items()}
_NAME_RE = re.compile(r"^(web|db|batch|cache)-(\d{2,})$")

#: CPU modes in node_exporter's order; "busy" time is split over all but idle and iowait.
CPU_MODES: tuple[str, ...] = ("idle", "iowait", "irq", "nice", "softirq", "steal", "system", "user")
BUSY_MODES: tuple[str, ...] = ("irq", "nice", "softirq", "steal", "system", "user")

# Healthy upper bounds of the base shapes (noise comes on top, see the module docstring).
CPU_BUSY_MAX = 0.58
CPU_BUSY_MIN = 0.04
CPU_BUSY_NOISE = 0.012  # GridNoise sigma, amplitude <= 0.024
IOWAIT_MAX = 0.12
IOWAIT_MIN = 0.004
MEMORY_MAX = 0.78
MEMORY_NOISE = 0.002
FS_MAX = 0.78
NET_MAX = 0.55
NET_NOISE = 0.008
DISK_NOISE = 0.008
RX_NOISE = 0.002


@dataclass(frozen=True)
class Shape:
    """Parameters of one base signal for a profile: level, daily/weekly cycle, noise."""

    level: tuple[float, float]
    daily: tuple[float, float]
    peak_hour: float
    weekly: float
    noise: float
    lo: float
    hi: float


@dataclass(frozen=True)
class Profile:
    name: str
    cpus: tuple[int, ...]
    memory_gib: tuple[int, ...]
    disk_gib: tuple[int, ...]
    link_bytes: float
    disk_read_bytes: float
    disk_write_bytes: float
    rx_ratio: tuple[float, float]
    busy_split: dict[str, float]
    cpu: Shape
    iowait: Shape
    memory: Shape
    network: Shape
    fs_level: tuple[float, float]
    fs_sawtooth: tuple[float, float]
    fs_period: float
    fs_reset_hour: float
    incident_mix: dict[str, float]
    scripted_kinds: tuple[str, ...]


PROFILES: dict[str, Profile] = {
    "web": Profile(
        name="web", cpus=(2, 4), memory_gib=(8, 16), disk_gib=(40, 80), link_bytes=125e6,
        disk_read_bytes=150e6, disk_write_bytes=120e6, rx_ratio=(0.25, 0.45),
        busy_split={"user": 0.64, "system": 0.24, "nice": 0.01, "irq": 0.0, "softirq": 0.07, "steal": 0.04},
        cpu=Shape((0.22, 0.30), (0.12, 0.17), 15.0, 0.04, 0.05, CPU_BUSY_MIN, CPU_BUSY_MAX),
        iowait=Shape((0.01, 0.02), (0.004, 0.008), 15.0, 0.002, 0.004, IOWAIT_MIN, IOWAIT_MAX),
        memory=Shape((0.45, 0.58), (0.04, 0.06), 15.0, 0.01, 0.01, 0.1, MEMORY_MAX),
        network=Shape((0.12, 0.20), (0.08, 0.12), 15.0, 0.02, 0.03, 0.005, NET_MAX),
        fs_level=(0.30, 0.50), fs_sawtooth=(0.02, 0.04), fs_period=DAY, fs_reset_hour=3.0,
        incident_mix={"memory_leak": 0.3, "cpu_saturation": 0.35, "network_saturation": 0.2,
                      "disk_fill": 0.15},
        scripted_kinds=("memory_leak", "cpu_saturation"),
    ),
    "database": Profile(
        name="database", cpus=(4, 8), memory_gib=(32, 64), disk_gib=(200, 500), link_bytes=125e6,
        disk_read_bytes=500e6, disk_write_bytes=400e6, rx_ratio=(0.6, 0.9),
        busy_split={"user": 0.58, "system": 0.3, "nice": 0.0, "irq": 0.0, "softirq": 0.04, "steal": 0.08},
        cpu=Shape((0.18, 0.26), (0.08, 0.12), 15.0, 0.03, 0.04, CPU_BUSY_MIN, CPU_BUSY_MAX),
        iowait=Shape((0.03, 0.05), (0.015, 0.025), 3.0, 0.005, 0.01, IOWAIT_MIN, IOWAIT_MAX),
        memory=Shape((0.62, 0.70), (0.015, 0.03), 15.0, 0.005, 0.008, 0.1, MEMORY_MAX),
        network=Shape((0.04, 0.08), (0.02, 0.04), 15.0, 0.01, 0.02, 0.005, NET_MAX),
        fs_level=(0.45, 0.60), fs_sawtooth=(0.04, 0.06), fs_period=WEEK, fs_reset_hour=2.0,
        incident_mix={"disk_fill": 0.35, "iowait_storm": 0.35, "memory_leak": 0.2, "cpu_saturation": 0.1},
        scripted_kinds=("disk_fill", "memory_leak"),
    ),
    "batch": Profile(
        name="batch", cpus=(4,), memory_gib=(16, 32), disk_gib=(100, 200), link_bytes=125e6,
        disk_read_bytes=250e6, disk_write_bytes=200e6, rx_ratio=(0.4, 0.8),
        busy_split={"user": 0.78, "system": 0.15, "nice": 0.03, "irq": 0.0, "softirq": 0.02, "steal": 0.02},
        cpu=Shape((0.25, 0.32), (0.15, 0.22), 2.0, 0.02, 0.06, CPU_BUSY_MIN, CPU_BUSY_MAX),
        iowait=Shape((0.03, 0.05), (0.02, 0.03), 2.0, 0.003, 0.01, IOWAIT_MIN, IOWAIT_MAX),
        memory=Shape((0.40, 0.50), (0.08, 0.12), 2.0, 0.01, 0.015, 0.1, MEMORY_MAX),
        network=Shape((0.05, 0.10), (0.05, 0.08), 2.0, 0.01, 0.03, 0.005, NET_MAX),
        fs_level=(0.35, 0.55), fs_sawtooth=(0.05, 0.08), fs_period=DAY, fs_reset_hour=6.0,
        incident_mix={"cpu_saturation": 0.35, "disk_fill": 0.25, "iowait_storm": 0.25, "memory_leak": 0.15},
        scripted_kinds=("cpu_saturation", "disk_fill"),
    ),
    "cache": Profile(
        name="cache", cpus=(2,), memory_gib=(16, 32), disk_gib=(20, 40), link_bytes=1.25e9,
        disk_read_bytes=100e6, disk_write_bytes=80e6, rx_ratio=(0.2, 0.4),
        busy_split={"user": 0.5, "system": 0.32, "nice": 0.0, "irq": 0.0, "softirq": 0.15, "steal": 0.03},
        cpu=Shape((0.12, 0.20), (0.06, 0.10), 15.0, 0.03, 0.03, CPU_BUSY_MIN, CPU_BUSY_MAX),
        iowait=Shape((0.005, 0.01), (0.002, 0.004), 15.0, 0.001, 0.002, IOWAIT_MIN, IOWAIT_MAX),
        memory=Shape((0.62, 0.70), (0.02, 0.03), 15.0, 0.005, 0.008, 0.1, MEMORY_MAX),
        network=Shape((0.15, 0.25), (0.08, 0.12), 15.0, 0.02, 0.03, 0.005, NET_MAX),
        fs_level=(0.25, 0.40), fs_sawtooth=(0.01, 0.02), fs_period=DAY, fs_reset_hour=4.0,
        incident_mix={"memory_leak": 0.4, "network_saturation": 0.3, "cpu_saturation": 0.3},
        scripted_kinds=("memory_leak", "cpu_saturation"),
    ),
}


def host_name(index: int) -> str:
    """Name of the host at 0-based ``index``: profiles go round-robin, numbers start at 01."""
    profile = PROFILE_ORDER[index % len(PROFILE_ORDER)]
    return f"{PREFIXES[profile]}-{index + 1:02d}"


def host_names(count: int) -> list[str]:
    return [host_name(i) for i in range(count)]


def parse_host(name: str) -> tuple[str, int]:
    """``(profile, 0-based index)`` of a simulated host name; ValueError if it is not one."""
    match = _NAME_RE.match(name)
    if match is None or int(match.group(2)) < 1:
        raise ValueError(f"not a simulated host name: {name!r} (expected e.g. web-01, db-02)")
    return _PROFILE_OF_PREFIX[match.group(1)], int(match.group(2)) - 1


@dataclass(frozen=True)
class HostSpec:
    """Everything about a host that does not depend on the scenario or on time."""

    name: str
    index: int
    profile: Profile
    seed: int
    ncpu: int
    mem_total: float
    fs_size: float
    run_size: float
    run_used: float
    link_bytes: float
    disk_read_bytes: float
    disk_write_bytes: float
    rx_ratio: float
    busy_split: np.ndarray  # (ncpu, len(BUSY_MODES)), rows sum to 1
    cpu: SinSum
    iowait: SinSum
    memory: SinSum
    network: SinSum
    fs_level: float
    fs_sawtooth: float
    fs_phase: float
    fs_noise: SinSum
    cpu_noise: GridNoise
    memory_noise: GridNoise
    network_noise: GridNoise
    disk_noise: GridNoise
    rx_noise: GridNoise
    boot_jitter: float
    kernel: str

    def fs_base(self, t: np.ndarray) -> np.ndarray:
        """Root filesystem usage without incidents: a level plus a sawtooth (log rotation)."""
        period = self.profile.fs_period
        phase = np.mod(np.asarray(t, dtype=np.float64) - self.fs_phase, period) / period
        return self.fs_level + self.fs_sawtooth * phase + self.fs_noise(t)


def _shape(rng: np.random.Generator, shape: Shape, hour_jitter: float = 1.0) -> SinSum:
    level = rng.uniform(*shape.level)
    daily = rng.uniform(*shape.daily)
    peak = (shape.peak_hour + rng.uniform(-hour_jitter, hour_jitter)) * HOUR
    terms = [
        SinSum.cosine_peak(daily, DAY, peak),
        SinSum.cosine_peak(daily * rng.uniform(0.2, 0.35), DAY / 2, peak + rng.uniform(-2, 2) * HOUR),
        SinSum.cosine_peak(shape.weekly, WEEK, 6.5 * DAY),  # peaks mid-week, dips at the weekend
    ]
    # Slow "noise": a few incommensurate sinusoids with periods of 10 minutes to 4 hours.
    periods = np.exp(rng.uniform(np.log(600.0), np.log(4 * HOUR), size=4))
    weights = rng.uniform(0.5, 1.0, size=4)
    weights *= shape.noise / weights.sum()
    terms += [(float(a), float(p), float(rng.uniform(0, 2 * np.pi))) for a, p in zip(weights, periods,
                                                                                        strict=True)]
    return SinSum.of(level, terms).fit_within(shape.lo, shape.hi)


@lru_cache(maxsize=4096)
def host_spec(seed: int, name: str) -> HostSpec:
    """The static description of host ``name`` under ``seed`` (cached; it is immutable)."""
    profile_name, index = parse_host(name)
    p = PROFILES[profile_name]
    rng = rng_for(seed, name, "spec")
    ncpu = int(rng.choice(p.cpus))
    mem_total = float(int(rng.choice(p.memory_gib)) * GIB - int(rng.integers(100, 400)) * 1024**2)
    fs_size = float(int(rng.choice(p.disk_gib)) * GIB // 4096 * 4096 - 4096 * int(rng.integers(10000, 40000)))
    split = np.array([p.busy_split[m] for m in BUSY_MODES])
    rows = np.tile(split, (ncpu, 1)) * rng.uniform(0.9, 1.1, size=(ncpu, len(BUSY_MODES)))
    rows[0, BUSY_MODES.index("softirq")] *= 2.0  # NIC interrupts land on cpu0, as on real hosts
    rows /= rows.sum(axis=1, keepdims=True)
    fs_level = rng.uniform(*p.fs_level)
    fs_saw = min(rng.uniform(*p.fs_sawtooth), FS_MAX - 0.004 - fs_level)
    key = stable_hash(seed, name)
    return HostSpec(
        name=name, index=index, profile=p, seed=seed, ncpu=ncpu, mem_total=mem_total, fs_size=fs_size,
        run_size=float((mem_total // 10) // 4096 * 4096), run_used=float(int(rng.integers(300, 3000)) * 4096),
        link_bytes=p.link_bytes, disk_read_bytes=p.disk_read_bytes, disk_write_bytes=p.disk_write_bytes,
        rx_ratio=float(rng.uniform(*p.rx_ratio)), busy_split=rows,
        cpu=_shape(rng, p.cpu), iowait=_shape(rng, p.iowait), memory=_shape(rng, p.memory),
        network=_shape(rng, p.network),
        fs_level=fs_level, fs_sawtooth=fs_saw,
        fs_phase=p.fs_reset_hour * HOUR + (rng.integers(0, 7) * DAY if p.fs_period == WEEK else 0.0),
        fs_noise=SinSum.of(0.0, [(0.002, 47 * MINUTE, float(rng.uniform(0, 6.3))),
                                 (0.001, 13 * MINUTE, float(rng.uniform(0, 6.3)))]),
        cpu_noise=GridNoise(key ^ 0x1, CPU_BUSY_NOISE),
        memory_noise=GridNoise(key ^ 0x2, MEMORY_NOISE),
        network_noise=GridNoise(key ^ 0x3, NET_NOISE),
        disk_noise=GridNoise(key ^ 0x4, DISK_NOISE),
        rx_noise=GridNoise(key ^ 0x5, RX_NOISE),
        boot_jitter=float(rng.uniform(0, 30 * DAY)) // 1,
        kernel=str(rng.choice(["6.1.0-18-amd64", "6.1.0-21-amd64", "5.15.0-105-generic"])),
    )
