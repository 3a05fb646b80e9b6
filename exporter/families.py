"""The metric families the simulator exposes: names, types and HELP text as node_exporter has them.

Kept in one table so the live ``/probe`` page and the backfill file can never disagree about a
family's name, type or help text.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    name: str
    type: str  # "counter" or "gauge"
    help: str

    @property
    def base_name(self) -> str:
        """OpenMetrics family name: counters drop ``_total`` (samples keep it)."""
        if self.type == "counter" and self.name.endswith("_total"):
            return self.name[: -len("_total")]
        return self.name


_ALL = (
    Family("node_boot_time_seconds", "gauge", "Node boot time, in unixtime."),
    Family("node_cpu_seconds_total", "counter", "Seconds the CPUs spent in each mode."),
    Family("node_disk_io_time_seconds_total", "counter", "Total seconds spent doing I/Os."),
    Family("node_disk_read_bytes_total", "counter", "The total number of bytes read successfully."),
    Family("node_disk_written_bytes_total", "counter", "The total number of bytes written successfully."),
    Family("node_filesystem_avail_bytes", "gauge", "Filesystem space available to non-root users in bytes."),
    Family("node_filesystem_free_bytes", "gauge", "Filesystem free space in bytes."),
    Family("node_filesystem_size_bytes", "gauge", "Filesystem size in bytes."),
    Family("node_load1", "gauge", "1m load average."),
    Family("node_load15", "gauge", "15m load average."),
    Family("node_load5", "gauge", "5m load average."),
    Family("node_memory_Buffers_bytes", "gauge", "Memory information field Buffers_bytes."),
    Family("node_memory_Cached_bytes", "gauge", "Memory information field Cached_bytes."),
    Family("node_memory_MemAvailable_bytes", "gauge", "Memory information field MemAvailable_bytes."),
    Family("node_memory_MemFree_bytes", "gauge", "Memory information field MemFree_bytes."),
    Family("node_memory_MemTotal_bytes", "gauge", "Memory information field MemTotal_bytes."),
    Family("node_network_receive_bytes_total", "counter", "Network device statistic receive_bytes."),
    Family("node_network_speed_bytes", "gauge", "speed_bytes value of /sys/class/net/<iface>."),
    Family("node_network_transmit_bytes_total", "counter", "Network device statistic transmit_bytes."),
    Family("node_time_seconds", "gauge", "System time in seconds since epoch (1970)."),
    Family("node_uname_info", "gauge", "Labeled system information as provided by the uname system call."),
    Family("tft_sim_incident_active", "gauge",
           "Ground truth of the simulator: 1 while an incident of this kind breaches its signal's threshold."),
)

#: Every family, sorted by name as node_exporter sorts them.
FAMILIES: dict[str, Family] = {f.name: f for f in sorted(_ALL, key=lambda f: f.name)}

#: The families a default backfill writes: what the default signals read, plus ground truth.
#: Only these keep 30 days x 20 hosts fast to import; ``--series all`` writes everything.
SIGNAL_FAMILIES: tuple[str, ...] = (
    "node_cpu_seconds_total",  # modes idle and iowait only, see SIGNAL_CPU_MODES
    "node_filesystem_avail_bytes",  # mountpoint "/" only
    "node_filesystem_size_bytes",
    "node_memory_MemAvailable_bytes",
    "node_memory_MemTotal_bytes",
    "tft_sim_incident_active",
)
SIGNAL_CPU_MODES: tuple[str, ...] = ("idle", "iowait")
