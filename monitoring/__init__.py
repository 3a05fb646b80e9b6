"""Generator of the monitoring configuration: Prometheus rules, Grafana alert rules and dashboards.

One package renders everything an operator loads into Prometheus and Grafana, from one set of
settings, so a cut-off or a series name is never typed twice:

* ``settings``: ``SETTINGS``, every selector, cut-off and duration, and the deployment settings
  (datasource uid, Grafana and runbook URLs) the CLI can override;
* ``promql``: PromQL fragments used by more than one output (the breach-probability condition);
* ``rules``: the recording rules (signals, live accuracy) and the names of the recorded series;
* ``alerts``: the alert table, rendered as Prometheus and as Grafana-managed alert rules;
* ``dashboards``: the three dashboards (``fleet``, ``host``, ``health``) and their helpers;
* ``files``: every generated file's path and content;
* ``cli``: ``tft-monitoring`` (also ``python3 -m monitoring``), which writes or checks them.

It imports only ``forecaster.contract.config`` (the signal definitions) from the rest of the
project: generating configuration must not need torch or the serving code.
"""
