"""Render one simulated host as a node_exporter ``/metrics`` page.

Metric families are rebuilt from a snapshot at every probe (the client_python custom-collector
pattern), so the page always shows exactly the host's current state, and prometheus_client
does the text and OpenMetrics formatting.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS_CONTENT_TYPE
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from exporter.families import FAMILIES
from exporter.simulation import HostModel

#: What node_exporter sends; every Prometheus version parses it.
TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class HostCollector:
    """A collector for one host at one instant; ``collect`` builds fresh families each call."""

    def __init__(self, model: HostModel, t: float) -> None:
        self.model = model
        self.t = float(t)

    def collect(self) -> Iterator[Metric]:
        series = self.model.series(np.array([self.t]))
        for name, family in FAMILIES.items():
            samples = series.get(name)
            if not samples:
                continue
            label_names = [k for k, _ in samples[0][0]]
            cls = CounterMetricFamily if family.type == "counter" else GaugeMetricFamily
            metric = cls(family.name, family.help, labels=label_names)
            for labels, values in samples:
                metric.add_metric([v for _, v in labels], float(values[0]))
            yield metric


def render(model: HostModel, t: float, openmetrics: bool = False) -> tuple[bytes, str]:
    """``(body, content type)`` of the host's page at time ``t``."""
    collector = HostCollector(model, t)
    if openmetrics:
        return generate_openmetrics(collector), OPENMETRICS_CONTENT_TYPE  # type: ignore[arg-type]
    return generate_latest(collector), TEXT_CONTENT_TYPE  # type: ignore[arg-type]


def wants_openmetrics(accept: str | None) -> bool:
    """Prometheus asks for OpenMetrics first; honour that as node_exporter does."""
    return bool(accept) and "application/openmetrics-text" in accept  # type: ignore[operator]
