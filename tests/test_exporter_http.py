"""The exporter's HTTP server in-process, and a real Prometheus scraping it through /sd."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from exporter.http import start_server, stop_server
from exporter.simulation import Fleet
from tests.test_toolkit import ipv6_loopback

ANCHOR = 1_750_000_000 // 60 * 60
CPU_QUERY = '1 - avg by (instance) (rate(node_cpu_seconds_total{mode="idle"}[5m]))'


@pytest.fixture
def served() -> Iterator[tuple[Fleet, str]]:
    fleet = Fleet(5, seed=7, scenario="degrading", anchor=time.time() // 60 * 60)
    server, thread, url = start_server(fleet)
    try:
        yield fleet, url
    finally:
        stop_server(server, thread)


def _sample(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and (labels is None or all(sample.labels.get(k) == v for k, v in labels.items())):
                return sample.value
    raise KeyError(name)


def test_probe_serves_a_host_and_rejects_bad_targets(served: tuple[Fleet, str]) -> None:
    _, url = served
    ok = requests.get(f"{url}/probe", params={"target": "db-02"}, timeout=10)
    assert ok.status_code == 200
    assert ok.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert _sample(ok.text, "node_memory_MemTotal_bytes") > 0
    om = requests.get(f"{url}/probe", params={"target": "db-02"}, timeout=10,
                      headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert om.headers["Content-Type"].startswith("application/openmetrics-text")
    assert om.text.endswith("# EOF\n")
    missing = requests.get(f"{url}/probe", timeout=10)
    assert missing.status_code == 400 and missing.text.count("\n") == 1
    unknown = requests.get(f"{url}/probe", params={"target": "db-99"}, timeout=10)
    assert unknown.status_code == 404 and "db-99" in unknown.text and unknown.text.count("\n") == 1


def test_self_metrics_count_probes_by_result(served: tuple[Fleet, str]) -> None:
    _, url = served
    before = requests.get(f"{url}/metrics", timeout=10).text
    assert _sample(before, "tft_exporter_probes_total", {"result": "unknown_target"}) == 0
    assert _sample(before, "tft_exporter_hosts_simulated") == 5
    assert _sample(before, "tft_exporter_build_info") == 1
    requests.get(f"{url}/probe", params={"target": "web-01"}, timeout=10)
    requests.get(f"{url}/probe", params={"target": "nope-01"}, timeout=10)
    after = requests.get(f"{url}/metrics", timeout=10).text
    assert _sample(after, "tft_exporter_probes_total", {"result": "success"}) == 1
    assert _sample(after, "tft_exporter_probes_total", {"result": "unknown_target"}) == 1
    assert _sample(after, "tft_exporter_probe_duration_seconds_count") == 1


def test_sd_incidents_and_health(served: tuple[Fleet, str]) -> None:
    fleet, url = served
    groups = requests.get(f"{url}/sd", timeout=10).json()
    assert sorted(t for g in groups for t in g["targets"]) == sorted(fleet.names)
    assert {g["labels"]["profile"] for g in groups} == {"web", "database", "batch", "cache"}
    doc = requests.get(f"{url}/incidents", params={"from": fleet.anchor - 3600, "to": fleet.anchor + 7200},
                       timeout=30).json()
    assert doc["scenario"] == "degrading" and doc["seed"] == 7
    scripted = [i for i in doc["incidents"] if i["scripted"]]
    assert scripted and {"instance", "kind", "signal", "ramp_start", "breach_start", "breach_end",
                         "end"} <= set(scripted[0])
    bad = requests.get(f"{url}/incidents", params={"from": "yesterday"}, timeout=10)
    assert bad.status_code == 400
    assert requests.get(f"{url}/-/healthy", timeout=10).text == "OK\n"


def test_incidents_refuse_ranges_beyond_their_bounds(served: tuple[Fleet, str]) -> None:
    """The ground truth is computed on request: an open range kept the exporter busy for tens of minutes."""
    from exporter.http import INCIDENTS_MAX_FUTURE_SECONDS, INCIDENTS_MAX_PAST_SECONDS

    _, url = served
    now = time.time()
    for params in ({"from": now, "to": now + INCIDENTS_MAX_FUTURE_SECONDS + 86400},  # cheap even unbounded
                   {"from": now - INCIDENTS_MAX_PAST_SECONDS - 86400, "to": now},
                   {"from": 0, "to": 99999999999},
                   {"from": now, "to": now - 60}):
        began = time.monotonic()
        resp = requests.get(f"{url}/incidents", params=params, timeout=10)
        assert resp.status_code == 400, params
        assert resp.text.count("\n") == 1 and time.monotonic() - began < 2
    assert "days" in requests.get(f"{url}/incidents", params={"from": 0}, timeout=10).text
    edge = {"from": now - INCIDENTS_MAX_PAST_SECONDS + 60, "to": now + INCIDENTS_MAX_FUTURE_SECONDS - 60}
    assert requests.get(f"{url}/incidents", params=edge, timeout=30).status_code == 200
    assert requests.get(f"{url}/incidents", timeout=30).status_code == 200  # the default range is inside


def test_get_and_head_only(served: tuple[Fleet, str]) -> None:
    _, url = served
    head = requests.head(f"{url}/sd", timeout=10)
    get = requests.get(f"{url}/sd", timeout=10)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["Content-Length"] == get.headers["Content-Length"] == str(len(get.content))
    post = requests.post(f"{url}/sd", data=b"x", timeout=10)
    assert post.status_code == 405 and post.headers["Allow"] == "GET, HEAD"


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_serves_and_is_scraped_over_ipv6() -> None:
    fleet = Fleet(2, seed=7, scenario="degrading", anchor=ANCHOR)
    server, thread, url = start_server(fleet, "[::1]:0")
    try:
        assert url.startswith("http://[::1]:")
        with requests.Session() as session:  # one keep-alive connection, as Prometheus scrapes
            for target in fleet.names:
                page = session.get(f"{url}/probe", params={"target": target}, timeout=10)
                assert page.status_code == 200 and _sample(page.text, "node_memory_MemTotal_bytes") > 0
            assert sorted(t for g in session.get(f"{url}/sd", timeout=10).json() for t in g["targets"]) == sorted(
                fleet.names)
    finally:
        stop_server(server, thread)


def test_incident_gauge_follows_the_ground_truth() -> None:
    fleet = Fleet(1, seed=42, scenario="degrading", anchor=ANCHOR)
    rec = next(r for r in fleet.incidents(ANCHOR, ANCHOR + 7200) if r.scripted)
    clock = [rec.breach_start + 60.0]
    server, thread, url = start_server(fleet, clock=lambda: clock[0])
    try:
        page = requests.get(f"{url}/probe", params={"target": "web-01"}, timeout=10).text
        assert _sample(page, "tft_sim_incident_active", {"kind": rec.kind}) == 1
        assert _sample(page, "node_time_seconds") == clock[0]
        clock[0] = rec.ramp_start - 60.0
        page = requests.get(f"{url}/probe", params={"target": "web-01"}, timeout=10).text
        assert _sample(page, "tft_sim_incident_active", {"kind": rec.kind}) == 0
    finally:
        stop_server(server, thread)


@pytest.mark.integration
def test_prometheus_discovers_and_scrapes_every_host(served: tuple[Fleet, str], prometheus_factory) -> None:
    fleet, url = served
    address = url.removeprefix("http://")
    prom = prometheus_factory(scrape_configs=[{
        "job_name": "node",
        "metrics_path": "/probe",
        "http_sd_configs": [{"url": f"{url}/sd", "refresh_interval": "5s"}],
        "relabel_configs": [
            {"source_labels": ["__address__"], "target_label": "__param_target"},
            {"source_labels": ["__param_target"], "target_label": "instance"},
            {"target_label": "__address__", "replacement": address},
        ],
    }])
    prom.start()
    result = prom.wait_for(CPU_QUERY, min_series=len(fleet), timeout=60)
    assert sorted(r["metric"]["instance"] for r in result) == sorted(fleet.names)
    for series in result:
        assert 0.0 <= float(series["value"][1]) <= 1.0
    up = prom.query('up{job="node"}')
    assert len(up) == len(fleet) and all(r["value"][1] == "1" for r in up)
    assert {r["metric"]["profile"] for r in up} == {"web", "database", "batch", "cache"}
