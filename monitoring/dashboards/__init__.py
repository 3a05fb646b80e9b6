"""The three Grafana dashboards, one module each, built from the shared helpers in ``panels``.

They link to one another by uid (``ids``), and the alert rules link to their panels, so the
uids and linked panel ids are defined once in ``ids`` rather than in each dashboard.
"""

from __future__ import annotations

from typing import Any

from forecaster.contract.config import DEFAULT_SIGNALS, Signal
from monitoring.dashboards.fleet import fleet_dashboard
from monitoring.dashboards.health import health_dashboard
from monitoring.dashboards.host import host_dashboard


def all_dashboards(signals: tuple[Signal, ...] = DEFAULT_SIGNALS) -> list[dict[str, Any]]:
    """In a fixed order, so that regenerating writes the files in the same order every time. ``signals``
    give the unit of the panels that draw signal values."""
    return [fleet_dashboard(), host_dashboard(signals), health_dashboard(signals)]


__all__ = ["all_dashboards", "fleet_dashboard", "health_dashboard", "host_dashboard"]
