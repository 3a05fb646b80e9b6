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

# Panel ids, kept stable on purpose (links in old notifications keep working).
PANEL_HOST_FORECAST = 2
PANEL_HOST_ETA = 3
PANEL_HOST_PROBABILITY = 4
PANEL_HEALTH_UP = 2
PANEL_HEALTH_CYCLES = 3
PANEL_HEALTH_MODEL = 11
# The panels alert rules link to (dashboardUid/panelId, panel_url): time series of the alerted quantity,
# on which Grafana draws the alert's state changes; a stat, table or bar gauge cannot show them.
PANEL_HOST_PROBABILITY_HISTORY = 41
PANEL_HOST_ETA_HISTORY = 42
PANEL_HOST_DRIVERS = 43
PANEL_HEALTH_MODEL_AGE = 14
PANEL_HEALTH_FALLBACK = 15
PANEL_HEALTH_COVERAGE = 21
PANEL_HEALTH_RELATIVE = 23
PANEL_HEALTH_SERIES = 32
PANEL_HEALTH_UP_HISTORY = 35
PANEL_HEALTH_CYCLES_HISTORY = 36


def dashboard_url(uid: str, params: str = "") -> str:
    """Absolute, because a notification is read outside Grafana."""
    return f"{SETTINGS.grafana_url}/d/{uid}/{DASH_SLUGS[uid]}" + (f"?{params}" if params else "")


def panel_url(uid: str, panel_id: int, params: str = "") -> str:
    """The dashboard with one panel opened alone (Grafana's ``viewPanel``), as Grafana's own PanelURL."""
    return dashboard_url(uid, "&".join(p for p in (params, f"viewPanel={panel_id}") if p))
