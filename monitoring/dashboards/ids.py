"""Dashboard uids, URL slugs and the panel ids that alert rules link to.

They live apart from the dashboards because the alerts need them too (``dashboardUid``,
``panelId`` and the ``dashboard_url`` annotation): changing one here moves both sides. The
panel ids are kept stable on purpose, so links in old notifications keep working.
"""

from __future__ import annotations

from monitoring.settings import SETTINGS

DASH_FLEET = "tft-fleet"
DASH_HOST = "tft-host"
DASH_HEALTH = "tft-health"
DASH_SLUGS = {DASH_FLEET: "tft-fleet-overview", DASH_HOST: "tft-host-drill-down",
              DASH_HEALTH: "tft-model-and-forecaster-health"}

# Panel ids that alert rules link to (kept stable on purpose).
PANEL_HOST_FORECAST = 2
PANEL_HOST_ETA = 3
PANEL_HOST_PROBABILITY = 4
PANEL_HEALTH_UP = 2
PANEL_HEALTH_CYCLES = 3
PANEL_HEALTH_MODEL = 11
PANEL_HEALTH_COVERAGE = 21
PANEL_HEALTH_RELATIVE = 23


def dashboard_url(uid: str, params: str = "") -> str:
    """Absolute, because a notification is read outside Grafana."""
    return f"{SETTINGS.grafana_url}/d/{uid}/{DASH_SLUGS[uid]}" + (f"?{params}" if params else "")
