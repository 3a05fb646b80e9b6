"""Soak benchmark: the forecaster against a simulated fleet for a long time, with random faults.

    python3 benchmarks/soak.py                          # 30 minutes, 200 hosts, a cycle every 10 s
    python3 benchmarks/soak.py --minutes 3 --hosts 20   # a quick check that it works

Not a test: it starts everything itself on 127.0.0.1 and reports. The fleet is ``tft-exporter``
(a subprocess) with ``--history-hours`` of it backfilled into a real Prometheus (a subprocess,
scraping the exporter live every 15 s); the forecaster runs in this process (its
:class:`~forecaster.serving.service.Service`, the shipped model unless ``--model.dir``), reading
Prometheus through the fault proxy (``devkit/faultproxy.py``). Before each cycle, with
probability ``--fault-rate``, one random fault is injected: for the whole cycle or for its next
1-3 range queries. Each cycle also renders ``/metrics`` and the status document, as scrapes do.

It reports the cycles, the failures by stage, the recoveries (a successful cycle after failed
ones, and how many cycles that took), the cycle durations, and the resident memory of this
process after the warm-up cycles and at the end (each the median of a few cycles, measured after a
garbage collection and ``malloc_trim``): the growth should stay within 5 %. Exit status
1 when it does not, or when the last, fault-free cycle fails (no recovery).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import logging
import math
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devkit.faultproxy import Fault, FaultProxy  # noqa: E402

SCRAPE_INTERVAL = "15s"
WARMUP_CYCLES = 3
#: Start and end memory are each the median over this many cycles.
RSS_WINDOW = 5
MAX_GROWTH = 0.05


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _settled_rss_bytes() -> int:
    """Resident memory after a garbage collection and glibc's ``malloc_trim``.

    Without them RSS swings by 5 % from one cycle to the next, as freed arenas are or are not
    handed back to the system yet, which would hide a leak of that size or fake one.
    """
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    return _rss_bytes()


def _rss_bytes() -> int:
    """Resident memory of this process now (Linux /proc; peak RSS elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with status {proc.returncode}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} not ready after {timeout:g}s")


def _faults(timeout: float) -> list[tuple[str, Fault]]:
    return [
        ("hang", Fault.hang(timeout * 3)),
        ("slow_body", Fault.slow_body(0.5)),
        ("503", Fault.status(503)),
        ("429", Fault.status(429, retry_after=1.0)),
        ("garbage", Fault.garbage()),
        ("empty", Fault.empty()),
        ("empty_result", Fault.empty_result()),
        ("nan_values", Fault.nan_values()),
        ("duplicate_series", Fault.duplicate_series()),
        ("stale", Fault.stale(1800)),
        ("out_of_bounds", Fault.scale(10.0)),
    ]


class Stack:
    """Exporter and Prometheus subprocesses with the fleet's history; stopped by :meth:`stop`."""

    def __init__(self, work: Path, hosts: int, history_hours: float, seed: int) -> None:
        self.work = work
        self.hosts = hosts
        self.history_hours = history_hours
        self.seed = seed
        self.anchor = int(time.time()) // 60 * 60
        self.procs: list[subprocess.Popen[bytes]] = []
        self.exporter_url = ""
        self.prometheus_url = ""

    def start(self) -> None:
        exporter = [sys.executable, "-m", "exporter"]
        common = ["--hosts", str(self.hosts), "--seed", str(self.seed), "--scenario.anchor", str(self.anchor)]
        began = time.monotonic()
        with open(self.work / "backfill.log", "wb") as log:
            subprocess.run([*exporter, "backfill", *common, "--days", f"{self.history_hours / 24:g}",
                            "--out", str(self.work / "backfill"), "--interval", "60s", "--job", "node", "--jobs", "2"],
                           check=True, cwd=ROOT, timeout=1800, stdout=log, stderr=subprocess.STDOUT)
        print(f"backfill: {self.history_hours:g} h x {self.hosts} hosts in {time.monotonic() - began:.0f}s",
              flush=True)
        data = self.work / "prometheus" / "data"
        data.mkdir(parents=True)
        for block in (self.work / "backfill" / "blocks").iterdir():
            shutil.move(str(block), data / block.name)

        port = _free_port()
        self.exporter_url = f"http://127.0.0.1:{port}"
        self._spawn("exporter", [*exporter, *common, "--web.listen-address", f"127.0.0.1:{port}",
                                 "--log.level", "warn"])
        _wait_http(self.exporter_url + "/-/ready", 60, self.procs[-1])

        port = _free_port()
        self.prometheus_url = f"http://127.0.0.1:{port}"
        config = {
            "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
            "scrape_configs": [{
                "job_name": "node", "metrics_path": "/probe",
                "http_sd_configs": [{"url": self.exporter_url + "/sd", "refresh_interval": "30s"}],
                "relabel_configs": [
                    {"source_labels": ["__address__"], "target_label": "__param_target"},
                    {"source_labels": ["__param_target"], "target_label": "instance"},
                    {"target_label": "__address__", "replacement": self.exporter_url.removeprefix("http://")}],
            }],
        }
        config_file = self.work / "prometheus" / "prometheus.yml"
        config_file.write_text(json.dumps(config))  # JSON is YAML
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus is not on PATH")
        self._spawn("prometheus", [binary, f"--config.file={config_file}", f"--storage.tsdb.path={data}",
                                   f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=30d",
                                   "--log.level=warn"])
        _wait_http(self.prometheus_url + "/-/ready", 60, self.procs[-1])

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.work / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process's end
        self.procs.append(subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True))

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)


def soak(args: argparse.Namespace, work: Path) -> int:
    stack = Stack(work, args.hosts, args.history_hours, args.seed)
    try:
        stack.start()
        return _run(args, stack)
    finally:
        stack.stop()


def _run(args: argparse.Namespace, stack: Stack) -> int:
    from forecaster.contract.config import parse_config
    from forecaster.serving.service import Service

    rng = random.Random(args.seed)
    timeout = 5.0
    faults = _faults(timeout)
    with FaultProxy(stack.prometheus_url) as proxy:
        config = parse_config({
            "prometheus": {"url": proxy.url, "timeout_seconds": timeout, "retries": 2, "retry_backoff_seconds": 0.2},
            "forecaster": {"interval_seconds": max(5, int(args.interval)), "torch_threads": 1,
                           **({"registry_dir": str(args.model_dir)} if args.model_dir else {})},
        }, "soak config")
        service = Service(config)
        cycles: list[dict[str, Any]] = []
        injected: Counter[str] = Counter()
        deadline = time.monotonic() + args.minutes * 60
        while True:
            slot = time.monotonic()
            last = slot + args.interval >= deadline
            fault_name = None
            if not last and len(cycles) >= WARMUP_CYCLES and rng.random() < args.fault_rate:
                fault_name, fault = rng.choice(faults)
                count = rng.choice([None, None, 1, 2, 3])
                proxy.inject(fault, count=count)
                injected[fault_name] += 1
            began = time.monotonic()
            result = service.run_cycle()
            seconds = time.monotonic() - began
            proxy.clear()
            service.metrics_text()  # what a scrape does
            service.status_document()
            cycles.append({"ok": result.ok, "stages": sorted(result.errors), "seconds": seconds,
                           "fault": fault_name, "series": len(service.published.forecasts or ()),
                           "rss": _settled_rss_bytes()})
            print(f"cycle {len(cycles):4d}: {'ok    ' if result.ok else 'FAILED'} {seconds:6.2f}s "
                  f"fault={fault_name or '-':16s} stages={','.join(sorted(result.errors)) or '-':20s} "
                  f"served={cycles[-1]['series']} rss={cycles[-1]['rss'] / 2**20:.0f}MiB", flush=True)
            if last:
                break
            time.sleep(max(0.0, slot + args.interval - time.monotonic()))
    rss = [c["rss"] for c in cycles[WARMUP_CYCLES:]] or [c["rss"] for c in cycles]
    window = min(RSS_WINDOW, max(1, len(rss) // 2))
    return _report(args, cycles, injected, int(statistics.median(rss[:window])),
                   int(statistics.median(rss[-window:])))


def _report(args: argparse.Namespace, cycles: list[dict[str, Any]], injected: Counter[str], rss_start: int,
            rss_end: int) -> int:
    ok = sum(c["ok"] for c in cycles)
    by_stage: Counter[str] = Counter(stage for c in cycles for stage in c["stages"])
    recoveries: list[int] = []
    failed_run = 0
    for c in cycles:
        if not c["ok"]:
            failed_run += 1
        elif failed_run:
            recoveries.append(failed_run)
            failed_run = 0
    durations = [c["seconds"] for c in cycles]
    growth = (rss_end - rss_start) / rss_start if rss_start else math.nan
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    recovered = bool(cycles) and cycles[-1]["ok"]
    print()
    print(f"soak: {args.minutes:g} min, {args.hosts} hosts, a cycle every {args.interval:g}s, "
          f"fault rate {args.fault_rate:g}, seed {args.seed}")
    print(f"cycles: {len(cycles)} ({ok} success, {len(cycles) - ok} failure); "
          f"faults injected: {sum(injected.values())} ({', '.join(f'{k} {v}' for k, v in sorted(injected.items()))})")
    print("failures by stage: " + (", ".join(f"{k} {v}" for k, v in sorted(by_stage.items())) or "none"))
    print(f"recoveries: {len(recoveries)} (failed cycles before each: "
          f"{', '.join(map(str, recoveries)) or '-'}); last cycle (no fault) {'ok' if recovered else 'FAILED'}")
    print(f"cycle duration: median {statistics.median(durations):.2f}s, max {max(durations):.2f}s")
    verdict = "ok" if growth <= MAX_GROWTH else f"EXCEEDS {MAX_GROWTH:.0%}"
    print(f"resident memory (settled, median of {RSS_WINDOW} cycles): {rss_start / 2**20:.1f} MiB after "
          f"{WARMUP_CYCLES} warm-up cycles, {rss_end / 2**20:.1f} MiB at the end ({growth:+.1%}, {verdict}); "
          f"peak {peak:.0f} MiB")
    if args.json is not None:
        args.json.write_text(json.dumps({
            "minutes": args.minutes, "hosts": args.hosts, "interval": args.interval, "cycles": len(cycles),
            "success": ok, "failures_by_stage": dict(by_stage), "faults": dict(injected), "recoveries": recoveries,
            "rss_start_bytes": rss_start, "rss_end_bytes": rss_end, "growth": growth,
            "cycle_seconds": {"median": statistics.median(durations), "max": max(durations)}}, indent=1) + "\n")
    return 0 if growth <= MAX_GROWTH and recovered else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="how long to run (default: 30)")
    parser.add_argument("--hosts", type=int, default=200, help="simulated hosts (default: 200)")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between cycle starts (default: 10)")
    parser.add_argument("--fault-rate", type=float, default=0.3, help="share of cycles given a fault (default: 0.3)")
    parser.add_argument("--history-hours", type=float, default=25.0,
                        help="history backfilled before the start (default: 25, the shipped model's 24 h context)")
    parser.add_argument("--model.dir", dest="model_dir", type=Path, default=None,
                        help="model registry or model directory (default: the shipped models/)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--json", type=Path, default=None, help="also write the report as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the working directory (logs, TSDB)")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.hosts < 1 or args.interval <= 0 or not 0 <= args.fault_rate <= 1:
        parser.error("--minutes, --hosts and --interval must be positive, --fault-rate within 0..1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    work = Path(tempfile.mkdtemp(prefix="tft-soak-"))
    try:
        return soak(args, work)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
