"""Start and stop a real VictoriaMetrics (single node) for tests: free port, own storage dir, own scrape config.

The counterpart of :mod:`tests.promserver` for the compatibility tests (tests/test_victoriametrics.py).
History goes in through ``/api/v1/import/prometheus``, which takes the exporter's backfill text as
it is (OpenMetrics, timestamps in seconds: VictoriaMetrics detects the unit), then
``/internal/force_flush`` makes it searchable at once. Scraping uses ``-promscrape.config``, a
``prometheus.yml``-style file with ``scrape_configs`` only.

VictoriaMetrics evaluates an instant query near "now" at ``now - search.latencyOffset`` (30 s by
default) unless the request says ``nocache=1``; :meth:`VictoriaMetricsServer.query` sends it so
that a test sees a sample scraped a second ago. The forecaster's own client sends nothing special.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests
import yaml

from tests.promserver import free_port, launch, log_tail, stop_process

#: Long enough for any backfilled history (the default, one month, would drop older imports).
RETENTION = "400d"


def victoria_metrics_binary() -> str | None:
    return shutil.which("victoria-metrics")


@dataclass
class VictoriaMetricsServer:
    """A ``victoria-metrics`` process on 127.0.0.1 with its own storage directory."""

    workdir: Path
    scrape_configs: list[dict] = field(default_factory=list)
    scrape_interval: str = "1s"
    extra_args: list[str] = field(default_factory=list)
    port: int = 0
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def log_path(self) -> Path:
        return self.workdir / "victoria-metrics.log"

    def write_config(self) -> Path:
        cfg = {"global": {"scrape_interval": self.scrape_interval}, "scrape_configs": self.scrape_configs}
        path = self.workdir / "scrape.yml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return path

    def start(self, timeout: float = 30.0) -> VictoriaMetricsServer:
        binary = victoria_metrics_binary()
        if binary is None:
            raise RuntimeError("victoria-metrics is not installed (apt-get install victoria-metrics)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        args = [binary, f"-storageDataPath={self.data_dir}", f"-httpListenAddr=127.0.0.1:{self.port}",
                f"-retentionPeriod={RETENTION}", "-loggerLevel=WARN", *self.extra_args]
        if self.scrape_configs:
            args.append(f"-promscrape.config={self.write_config()}")
        self.proc, self._log = launch("victoria-metrics", args, self.log_path, f"{self.url}/health", timeout)
        return self

    def log_tail(self, n: int = 30) -> str:
        return log_tail(self.log_path, n)

    def stop(self) -> None:
        stop_process(self.proc, getattr(self, "_log", None))
        self.proc = None
        self._log = None

    def import_text(self, *paths: Path) -> None:
        """Import Prometheus/OpenMetrics exposition text with timestamps, then make it searchable."""
        for path in paths:
            with open(path, "rb") as fh:
                resp = requests.post(f"{self.url}/api/v1/import/prometheus", data=fh, timeout=120)
            assert resp.status_code == 204, f"import of {path} failed: HTTP {resp.status_code} {resp.text[:300]}"
        self.flush()

    def flush(self) -> None:
        requests.get(f"{self.url}/internal/force_flush", timeout=30).raise_for_status()

    def query(self, expr: str, time_s: float | None = None) -> list[dict]:
        params: dict[str, str] = {"query": expr, "nocache": "1"}
        if time_s is not None:
            params["time"] = str(time_s)
        resp = requests.get(f"{self.url}/api/v1/query", params=params, timeout=30)
        resp.raise_for_status()
        return resp.json()["data"]["result"]

    def wait_for(self, expr: str, min_series: int = 1, timeout: float = 30.0) -> list[dict]:
        """Poll an instant query until it returns at least ``min_series`` series (bounded).

        Each poll first flushes: scraped samples otherwise become searchable only some seconds
        later (about 10 s measured with 1.79).
        """
        deadline = time.monotonic() + timeout
        result: list[dict] = []
        while time.monotonic() < deadline:
            self.flush()
            result = self.query(expr)
            if len(result) >= min_series:
                return result
            time.sleep(0.5)
        raise AssertionError(f"{expr!r} returned {len(result)} series after {timeout}s, wanted {min_series}")
