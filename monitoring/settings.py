"""The one place for every selector, cut-off and duration the rules and dashboards use.

This is the "_config" of a monitoring mixin: change a value here, re-run ``tft-monitoring``,
and the Prometheus rules, the Grafana-managed alert rules and the dashboards all follow, so no
number is typed twice. ``benchmarks/early_warning.py`` reads it too, so the benchmark scores
the rules as shipped.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    """Frozen, so that a module-level constant derived from it (colour steps, the datasource) cannot go stale."""

    datasource_uid: str = "tft-prometheus"
    # Absolute Grafana URL used in alert annotations (dashboard links in notifications).
    grafana_url: str = "http://localhost:3000"
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
    # Live accuracy.
    accuracy_interval: str = "1m"
    coverage_target: float = 0.8  # nominal coverage of the p10-p90 band
    coverage_tolerance: float = 0.15
    coverage_for: str = "1h"
    naive_ratio: float = 1.0  # live error / seasonal-naive error above this fires
    naive_for: str = "1h"
    seasonal_period: str = "1d"  # the seasonal-naive forecast is the value one period earlier


SETTINGS = Settings()
