"""The one place for every selector, cut-off and duration the rules and dashboards use.

This is the "_config" of a monitoring mixin: change a value here, re-run ``tft-monitoring``,
and the Prometheus rules, the Grafana-managed alert rules and the dashboards all follow, so no
number is typed twice. ``benchmarks/early_warning.py`` reads it too, so the benchmark scores
the rules as shipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Settings:
    """Frozen, so that a module-level constant derived from it (colour steps) cannot go stale; only the
    deployment fields below change, for one run of ``tft-monitoring``, through :func:`overridden`."""

    # Deployment: where the files go, not what the rules test. ``tft-monitoring`` takes each from its
    # command line too (DEPLOYMENT_FLAGS); docs/OPERATIONS.md, "Next to an existing Grafana".
    # The Prometheus datasource the Grafana-managed alert rules query, and the default of the dashboards'
    # `datasource` variable (grafana/provisioning/datasources/ creates it for docker-compose.yml).
    datasource_uid: str = "tft-prometheus"
    # The same default for the dashboards deployed to Kubernetes (deploy/kubernetes/base/dashboards/):
    # kube-prometheus-stack's Grafana provisions its Prometheus under this uid.
    kubernetes_datasource_uid: str = "prometheus"
    # Absolute Grafana URL used in alert annotations (dashboard and panel links in notifications).
    grafana_url: str = "http://localhost:3000"
    # Where docs/runbooks.md is read: each alert's runbook_url is this plus "#<alert name, lower case>".
    # Relative to the repository by default; point it at your Git server's rendering of the file
    # (e.g. https://git.example.com/ops/tft-monitor/blob/main/docs/runbooks.md) for links that work
    # in a notification.
    runbook_base_url: str = "docs/runbooks.md"
    # Labels that tell apart hosts of one instance name in different clusters: the forecaster's
    # prometheus.cluster_labels. Every per-host aggregation and join of the rules and alerts is then
    # ``by (instance, <these>, ...)`` and the fleet accuracy figures are per cluster. ``tft-monitoring``
    # takes them from --prometheus.cluster-labels or the config file; docs/OPERATIONS.md, "Several clusters".
    cluster_labels: tuple[str, ...] = ()
    # Selects the forecaster's own series (its scrape job).
    forecaster_selector: str = 'job="tft-forecaster"'
    folder: str = "TFT Monitor"
    # Predicted breach. The probability alerts compare tft_breach_probability with the served
    # model's own per-horizon cut-off, chosen F1-optimally on its training run's validation
    # windows (model.json "calibration.breach.cutoffs", exported by the forecaster as
    # tft_breach_probability_cutoff{horizon}). See docs/OPERATIONS.md, "Alert cut-offs".
    critical_horizon: str = "1h"
    critical_eta_seconds: int = 3600
    critical_for: str = "5m"
    warning_horizon: str = "8h"
    warning_for: str = "15m"
    # Used only where no tft_breach_probability_cutoff series exists for a horizon: a forecaster
    # older than the cut-off series, per-host models served while no global model is loaded,
    # or a model file without a cut-off for that horizon. The same default the trainer picks
    # when a validation slice holds no breach.
    absent_cutoff: float = 0.5
    # Dashboards: the colour scale of breach probabilities (red from here); a fixed scale, not
    # the alert cut-off, which is per horizon and per model.
    risk_probability: float = 0.5
    # Forecaster health.
    down_for: str = "5m"
    stale_after_seconds: int = 900  # three default 300 s cycles
    stale_for: str = "5m"
    fallback_for: str = "15m"
    model_max_age_seconds: int = 7 * 86400
    model_age_for: str = "1h"
    # Forecast series vanishing: the number of tft_forecast_p50 series below this share of what
    # it was series_drop_window ago (a cycle that skips most series is not a failed cycle).
    series_drop_ratio: float = 0.5
    series_drop_window: str = "1h"
    series_drop_for: str = "10m"
    # Live accuracy.
    accuracy_interval: str = "1m"
    coverage_target: float = 0.8  # nominal coverage of the p10-p90 band
    coverage_tolerance: float = 0.15
    coverage_for: str = "1h"
    naive_ratio: float = 1.0  # live error / seasonal-naive error above this fires
    naive_for: str = "1h"
    seasonal_period: str = "1d"  # the seasonal-naive forecast is the value one period earlier


SETTINGS = Settings()

#: The deployment settings ``tft-monitoring`` takes from its command line: flag -> field. They are strings read
#: while the files are rendered (no module-level constant derives from them), so changing them for one run
#: cannot leave anything stale.
DEPLOYMENT_FLAGS = {
    "--grafana.url": "grafana_url",
    "--grafana.datasource-uid": "datasource_uid",
    "--kubernetes.datasource-uid": "kubernetes_datasource_uid",
    "--runbook.base-url": "runbook_base_url",
}


#: Deployment settings that are not one string (no module-level constant derives from them either).
DEPLOYMENT_LISTS = ("cluster_labels",)


@contextmanager
def overridden(**changes: str | tuple[str, ...]) -> Iterator[Settings]:
    """``SETTINGS`` with some deployment fields changed until the block ends (``tft-monitoring --grafana.url ...``).

    In place, because every module holds the one ``SETTINGS`` object; restored afterwards, even on error.
    """
    allowed = {*DEPLOYMENT_FLAGS.values(), *DEPLOYMENT_LISTS}
    unknown = set(changes) - allowed
    if unknown:
        raise ValueError(f"not a deployment setting: {sorted(unknown)} (allowed: {sorted(allowed)})")
    saved = {f.name: getattr(SETTINGS, f.name) for f in fields(SETTINGS) if f.name in changes}
    try:
        for name, value in changes.items():
            object.__setattr__(SETTINGS, name, value)
        yield SETTINGS
    finally:
        for name, value in saved.items():
            object.__setattr__(SETTINGS, name, value)
