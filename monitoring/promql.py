"""PromQL fragments shared by the rules, the alerts and the dashboards.

The breach-probability condition appears in three places (the alert rules, Grafana's copy of
them and the fleet dashboard's "hosts at risk" counts); building it here keeps the dashboard
counting exactly what the alerts fire on.
"""

from __future__ import annotations

from monitoring.settings import SETTINGS


def by_host(*extra: str) -> str:
    """The label list of a per-host ``by``/``on``: ``instance``, the cluster labels (``SETTINGS.cluster_labels``),
    then ``extra`` (``signal``, ``horizon``). Read at render time, so ``--prometheus.cluster-labels`` applies."""
    return ", ".join(("instance", *SETTINGS.cluster_labels, *extra))


def by_fleet(*extra: str) -> str:
    """The label list of a fleet-wide aggregation: the cluster labels (one figure per cluster), then ``extra``."""
    return ", ".join((*SETTINGS.cluster_labels, *extra))


def one_line(expr: str) -> str:
    """Collapse whitespace: Grafana queries and dashboard targets are stored on one line."""
    return " ".join(expr.split())


def num(v: float) -> str:
    """A cut-off as PromQL text: ``1`` rather than ``1.0``, so the rule files read as written by hand."""
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def block(expr: str) -> str:
    """Parenthesise a multi-line expression, indented, so it stays readable in a YAML ``|`` block."""
    return "(\n" + "".join(f"  {ln}\n" for ln in expr.splitlines()) + ")"


def _matchers(sel: str) -> str:
    """Extra label matchers (``job=~"$job", ...``) to put before a selector's own."""
    return f"{sel}, " if sel else ""


def cutoff_expr(horizon: str, sel: str = "") -> str:
    """The breach-probability cut-off at ``horizon``: one series, labelled ``horizon`` only.

    ``max by (horizon)`` makes it one series whatever the number of forecaster replicas
    (shards serve the same model), so the join below never fails on duplicates;
    ``absent_cutoff`` stands in where no replica exports one. ``sel``: further matchers (the dashboards'
    job and cluster variables).
    """
    return (f'max by (horizon) (tft_breach_probability_cutoff{{{_matchers(sel)}horizon="{horizon}"}})\n'
            f'or\nlabel_replace(vector({num(SETTINGS.absent_cutoff)}), "horizon", "{horizon}", "", "")')


def breach_probability(horizon: str, by: str | None = None, sel: str = "") -> str:
    """``max by`` so that forecaster replicas serving the same series count once; ``by`` defaults to
    the host, signal and horizon (:func:`by_host`)."""
    by = by if by is not None else by_host("signal", "horizon")
    return f'max by ({by}) (tft_breach_probability{{{_matchers(sel)}horizon="{horizon}"}})'


def at_or_above_cutoff(value: str, horizon: str, sel: str = "") -> str:
    """PromQL: ``value`` (series labelled ``horizon``) where it reaches that horizon's cut-off."""
    return f"{value} >= on (horizon) group_left () ({one_line(cutoff_expr(horizon, sel))})"
