"""Benchmark: how long the simulator takes to answer one scrape, ``/probe?target=`` and ``/metrics``.

    python3 benchmarks/exporter_scrape.py                  # 20 hosts, 300 requests per endpoint
    python3 benchmarks/exporter_scrape.py --hosts 200 --requests 1000

The exporter runs in-process on 127.0.0.1 (``exporter.start_server``, the same server
``tft-exporter`` runs) and is scraped over real HTTP with one keep-alive connection, as Prometheus
does, asking for OpenMetrics like Prometheus does. Each probe is a different host of the fleet
(round-robin) at the current time, so nothing is cached between requests except each host's
model, which is built on its first probe (the first pass over the fleet is reported separately).
Times are client-side wall time per request (rendering plus HTTP), and the server-side rendering
time alone from the exporter's own ``tft_exporter_probe_duration_seconds`` histogram: the
difference is the HTTP round trip, which includes TCP's delayed-ACK wait when the server writes
headers and body in separate packets without ``TCP_NODELAY``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

OPENMETRICS = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _render_seconds(session: object, url: str) -> tuple[float, float]:
    """(sum, count) of the exporter's own ``tft_exporter_probe_duration_seconds`` histogram."""
    from prometheus_client.parser import text_string_to_metric_families

    text = session.get(url + "/metrics", timeout=30).text  # type: ignore[attr-defined]
    values = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    return values["tft_exporter_probe_duration_seconds_sum"], values["tft_exporter_probe_duration_seconds_count"]


def run(hosts: int, requests_per_endpoint: int) -> list[dict[str, object]]:
    import requests

    from exporter import Fleet, start_server, stop_server

    fleet = Fleet(hosts, seed=42, scenario="degrading", anchor=time.time() // 60 * 60)
    server, thread, url = start_server(fleet)
    rows: list[dict[str, object]] = []
    try:
        with requests.Session() as session:
            session.headers["Accept"] = OPENMETRICS
            first: list[float] = []
            for name in fleet.names:  # first probe of each host builds its model
                t0 = time.perf_counter()
                session.get(f"{url}/probe", params={"target": name}, timeout=30).raise_for_status()
                first.append(time.perf_counter() - t0)
            before = _render_seconds(session, url)
            for endpoint in ("/probe", "/metrics"):
                times: list[float] = []
                size = 0
                for n in range(requests_per_endpoint):
                    params = {"target": fleet.names[n % hosts]} if endpoint == "/probe" else None
                    t0 = time.perf_counter()
                    resp = session.get(url + endpoint, params=params, timeout=30)
                    times.append(time.perf_counter() - t0)
                    resp.raise_for_status()
                    size = len(resp.content)
                rows.append({"endpoint": endpoint + ("?target=HOST" if endpoint == "/probe" else ""),
                             "requests": requests_per_endpoint, "p50_ms": 1000 * statistics.median(times),
                             "p99_ms": 1000 * _percentile(times, 0.99), "mean_ms": 1000 * statistics.fmean(times),
                             "bytes": size})
            render_sum, render_count = (a - b for a, b in zip(_render_seconds(session, url), before, strict=True))
            rows.append({"endpoint": "/probe, server-side rendering only", "requests": int(render_count),
                         "p50_ms": None, "p99_ms": None, "mean_ms": 1000 * render_sum / max(render_count, 1),
                         "bytes": 0})
            rows.append({"endpoint": "/probe, first probe of a host", "requests": hosts,
                         "p50_ms": 1000 * statistics.median(first), "p99_ms": 1000 * _percentile(first, 0.99),
                         "mean_ms": 1000 * statistics.fmean(first), "bytes": 0})
    finally:
        stop_server(server, thread)
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hosts", type=int, default=20)
    p.add_argument("--requests", type=int, default=300, help="requests per endpoint (default: 300)")
    args = p.parse_args()
    if args.hosts < 1 or args.requests < 1:
        p.error("--hosts and --requests must be at least 1")
    rows = run(args.hosts, args.requests)
    print(f"Exporter scrape time, {args.hosts} simulated hosts (client wall time per request, keep-alive, "
          "OpenMetrics)\n")
    print("| endpoint | requests | p50 (ms) | p99 (ms) | mean (ms) | response bytes |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        cells = [f"{r[k]:.2f}" if r[k] is not None else "-" for k in ("p50_ms", "p99_ms", "mean_ms")]
        print(f"| {r['endpoint']} | {r['requests']} | {' | '.join(cells)} | {r['bytes'] or '-'} |")
    print(f"\ncpu: {os.cpu_count()} cores; python {sys.version.split()[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
