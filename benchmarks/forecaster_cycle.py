"""Benchmark: one full forecaster cycle (queries, preprocessing, inference, publish) by fleet size.

    python3 benchmarks/forecaster_cycle.py                 # 100, 1,000 and 5,000 hosts x 4 signals
    python3 benchmarks/forecaster_cycle.py --hosts 1000    # one size
    python3 benchmarks/forecaster_cycle.py --hosts 1000 --seasonal-days 7   # + a week in hourly buckets
    python3 benchmarks/forecaster_cycle.py --hosts 1000 --seasonal-days 7 --bucket-seconds 0  # 8 days at 5 min
    python3 benchmarks/forecaster_cycle.py --hosts 1000 --prometheus-process   # the fake in a process of its own
    python3 benchmarks/forecaster_cycle.py --hosts 5000 --shard.count 2     # shard 0 of 2 (docs/OPERATIONS.md)

Each size runs in a fresh subprocess, so peak RSS (``resource.getrusage``) is that size's own.
Prometheus is ``devkit/fakeprom.py`` serving pre-rendered ``query_range`` JSON over real HTTP
(288 points per series at 300 s), so the query stage includes transfer, JSON decoding and
parsing as against a real Prometheus, but not Prometheus's own evaluation time (with
``--seasonal-days``, the hourly bucket queries of forecaster/contract/seasonal.py are answered
the same way, 2 x 24 points per series and day). The model is
the registry's ``latest`` when ``--model.dir`` holds one, else a default-size TFT (hidden 32,
8 heads, 288 + 96 steps) with random weights, saved and loaded through a registry like a real
one: speed does not depend on the weights. Two cycles run; the table shows the second (the
first also pays one-off warm-up), plus a ``/metrics`` scrape over HTTP after it.

With ``--shard.count N`` the process is shard 0 of N: it still queries (and decodes) the whole
fleet, then forecasts only its share, which is what sizing a sharded deployment needs to know.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIGNALS = ("cpu", "memory", "filesystem", "iowait")
NOW = 1_750_000_000.0


def _matrix_body(hosts: int, start: float, end: float, step: int, signal: int) -> bytes:
    import numpy as np

    ts = np.arange(math.ceil(start / step) * step, end + 1, step)
    stamps = [str(int(t)) for t in ts]
    rng = np.random.default_rng(signal)
    parts = []
    for h in range(hosts):
        base = 0.3 + 0.1 * signal + 0.15 * np.sin(2 * np.pi * ts / 86400 + h)
        vals = np.clip(base + 0.02 * rng.standard_normal(len(ts)), 0, 1)
        points = ",".join(f'[{s},"{v:.6g}"]' for s, v in zip(stamps, vals.tolist(), strict=True))
        parts.append(f'{{"metric":{{"instance":"host-{h:05d}"}},"values":[{points}]}}')
    return ('{"status":"success","data":{"resultType":"matrix","result":[' + ",".join(parts) + "]}}").encode()


def _registry(tmp: Path, model_dir: Path | None, seasonal_days: int, bucket_seconds: int) -> Path:
    if model_dir is not None:
        return model_dir
    from forecaster.contract.model import ForecastModel, ModelSpec, build_network
    from forecaster.contract.registry import Registry

    spec = ModelSpec(signals=list(SIGNALS), seasonal_days=seasonal_days,
                     seasonal_bucket_seconds=bucket_seconds if seasonal_days else 0)
    registry = Registry(tmp / "registry")
    version = registry.add(ForecastModel(spec, build_network(spec), metadata={"trained_at": "2025-01-01T00:00:00Z"}))
    registry.promote(version)
    return registry.root


@contextlib.contextmanager
def _serving(bodies: dict[str, bytes], own_process: bool) -> Iterator[str]:
    """The fake Prometheus's URL, answering each query with its pre-rendered body: in a thread of this
    process (sending competes with the forecaster for the interpreter, as no real Prometheus does), or in a
    forked process of its own, as a real one runs."""
    import multiprocessing

    from devkit.fakeprom import QUERY_RANGE, FakePrometheus, Reply

    def serve(port: int = 0) -> FakePrometheus:
        fake = FakePrometheus(port=port)
        fake.always(QUERY_RANGE, lambda rec: Reply(200, bodies[rec.params["query"]],
                                                   {"Content-Type": "application/json"}))
        return fake

    if not own_process:
        with serve() as fake:
            yield fake.url
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    ctx = multiprocessing.get_context("fork")  # the bodies are inherited, not copied through a pipe
    ready = ctx.Event()

    def child() -> None:
        with serve(port):
            ready.set()
            while True:
                time.sleep(60)

    proc = ctx.Process(target=child, daemon=True)
    proc.start()
    try:
        if not ready.wait(60):
            raise RuntimeError("the fake Prometheus process did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.join(10)


def run_one(hosts: int, model_dir: Path | None, seasonal_days: int, shards: int = 1,
            bucket_seconds: int = 3600, own_process: bool = False) -> dict[str, float]:
    import requests

    from forecaster.contract.config import DEFAULT_SIGNALS, parse_config
    from forecaster.contract.seasonal import bucket_queries
    from forecaster.serving.cycle import bucket_range, query_window
    from forecaster.serving.service import start
    from forecaster.serving.store import ModelStore

    tmp = Path(tempfile.mkdtemp(prefix="fcbench-"))
    root = _registry(tmp, model_dir, seasonal_days, bucket_seconds)
    config = parse_config({"forecaster": {"registry_dir": str(root), "interval_seconds": 300}})
    store = ModelStore(root, step_seconds=config.model.step_seconds, signals=list(SIGNALS))
    store.refresh()
    step, context = query_window(store.current(), config)  # the history the loaded model reads
    end = NOW // step * step
    start_t = end - (context - 1) * step
    bodies = {s.query: _matrix_body(hosts, start_t, end, step, j) for j, s in enumerate(DEFAULT_SIGNALS)}
    spec = store.current().loaded()[0].model.spec
    if spec.seasonal_days and spec.seasonal_bucket_seconds:  # the coarse queries of the cycle, same range
        width = spec.seasonal_bucket_seconds
        first, last = bucket_range(start_t, end, spec.seasonal_days, spec.horizon_steps * step, width)
        for j, s in enumerate(DEFAULT_SIGNALS):
            for expr in bucket_queries(s.query, width, step, (s.min, s.max)):
                bodies[expr] = _matrix_body(hosts, first, last, width, j)
    with _serving(bodies, own_process) as url:
        data = {"prometheus": {"url": url},
                "forecaster": {"registry_dir": str(root), "shard": {"count": shards, "index": 0}}}
        config = parse_config(data)
        running = start(config, address="127.0.0.1:0", scheduler=False, clock=lambda: NOW + 30)
        try:
            first_t = time.perf_counter()
            first = running.service.run_cycle()
            first_s = time.perf_counter() - first_t
            assert first.ok, first.errors
            t0 = time.perf_counter()
            result = running.service.run_cycle()
            total = time.perf_counter() - t0
            assert result.ok and result.forecasts is not None, result.errors
            t0 = time.perf_counter()
            resp = requests.get(running.url + "/metrics", timeout=60)
            scrape = time.perf_counter() - t0
            resp.raise_for_status()
        finally:
            running.stop()
    stages = result.stage_seconds
    return {"hosts": hosts, "series": len(result.forecasts), "first_cycle_s": first_s, "cycle_s": total,
            **{f"{k}_s": v for k, v in stages.items()}, "scrape_s": scrape, "metrics_mb": len(resp.content) / 1e6,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "model": "trained" if model_dir else "random weights, default size"}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hosts", type=int, nargs="*", default=[100, 1000, 5000])
    p.add_argument("--model.dir", dest="model_dir", type=Path, default=None)
    p.add_argument("--seasonal-days", type=int, default=0,
                   help="random-weights model only: days of same-time inputs (more history per query)")
    p.add_argument("--bucket-seconds", type=int, default=3600,
                   help="with --seasonal-days: bucket width of the same-time inputs (0: every step's value)")
    p.add_argument("--prometheus-process", action="store_true",
                   help="serve the fake Prometheus from a process of its own (as a real one runs) instead of a "
                        "thread of the forecaster's process")
    p.add_argument("--shard.count", dest="shards", type=int, default=1,
                   help="run as shard 0 of this many (the fleet is still queried whole)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(run_one(args.hosts[0], args.model_dir, args.seasonal_days, args.shards,
                                 args.bucket_seconds, args.prometheus_process)))
        return 0
    rows = []
    for n in args.hosts:
        cmd = [sys.executable, __file__, "--child", "--hosts", str(n), "--seasonal-days", str(args.seasonal_days),
               "--shard.count", str(args.shards), "--bucket-seconds", str(args.bucket_seconds),
               *(["--prometheus-process"] if args.prometheus_process else [])]
        if args.model_dir:
            cmd += ["--model.dir", str(args.model_dir)]
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 1
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    cols = ["hosts", "series", "cycle_s", "query_s", "preprocess_s", "inference_s", "publish_s", "scrape_s",
            "metrics_mb", "peak_rss_mb", "first_cycle_s"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{r[c]:.2f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
    shard = f"; shard 0 of {args.shards}" if args.shards > 1 else ""
    print(f"\nmodel: {rows[0]['model']}; cpu: {os.cpu_count()} cores; torch threads: 1{shard}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
