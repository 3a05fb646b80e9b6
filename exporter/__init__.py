"""tft-exporter: a simulated fleet of hosts that looks like node_exporter to Prometheus.

Public API (everything a test, a demo or another component needs)::

    from exporter import Fleet, start_server, stop_server

    fleet = Fleet(5, seed=42, scenario="degrading", anchor=1_750_000_000)
    fleet.model("web-01").signals(times)          # cpu/memory/filesystem/iowait as PromQL computes them
    fleet.signal_frame(start, end, step=300)      # wide pandas frame, as written to Parquet
    fleet.incidents(start, end)                   # ground-truth IncidentRecord list
    server, thread, url = start_server(fleet)     # /probe, /sd, /metrics, /incidents on 127.0.0.1
    stop_server(server, thread)

Importing the package does no work and loads neither pandas nor pyarrow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Fleet": "exporter.simulation",
    "HostModel": "exporter.simulation",
    "DEFAULT_SIGNAL_NAMES": "exporter.simulation",
    "Incident": "exporter.incidents",
    "IncidentRecord": "exporter.incidents",
    "THRESHOLDS": "exporter.incidents",
    "SIGNAL_QUERIES": "exporter.incidents",
    "SCENARIOS": "exporter.incidents",
    "KIND_NAMES": "exporter.incidents",
    "host_names": "exporter.profiles",
    "start_server": "exporter.http",
    "stop_server": "exporter.http",
    "ExporterSection": "exporter.config",
    "load_exporter_config": "exporter.config",
    "backfill": "exporter.backfill",
}

__all__ = [
    "DEFAULT_SIGNAL_NAMES", "KIND_NAMES", "SCENARIOS", "SIGNAL_QUERIES", "THRESHOLDS", "ExporterSection", "Fleet",
    "HostModel", "Incident", "IncidentRecord", "backfill", "host_names", "load_exporter_config",
    "start_server", "stop_server",
]

if TYPE_CHECKING:
    from exporter.backfill import backfill
    from exporter.config import ExporterSection, load_exporter_config
    from exporter.http import start_server, stop_server
    from exporter.incidents import KIND_NAMES, SCENARIOS, SIGNAL_QUERIES, THRESHOLDS, Incident, IncidentRecord
    from exporter.profiles import host_names
    from exporter.simulation import DEFAULT_SIGNAL_NAMES, Fleet, HostModel


def __getattr__(name: str) -> Any:
    """Import on first use, so ``import exporter`` stays instant (the STYLE rule: no import-time work)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'exporter' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
