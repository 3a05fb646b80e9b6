"""Start and stop a real Prometheus for tests (and only tests): free port, own data dir, own config."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests
import yaml


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prometheus_binary() -> str | None:
    return shutil.which("prometheus")


@dataclass
class PrometheusServer:
    """A Prometheus process on 127.0.0.1 with its own config and TSDB directory."""

    workdir: Path
    scrape_configs: list[dict] = field(default_factory=list)
    rule_files: list[str] = field(default_factory=list)
    scrape_interval: str = "1s"
    port: int = 0
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    def write_config(self) -> Path:
        cfg = {
            "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": self.scrape_interval},
            "scrape_configs": self.scrape_configs,
        }
        if self.rule_files:
            cfg["rule_files"] = self.rule_files
        path = self.workdir / "prometheus.yml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return path

    def start(self, timeout: float = 30.0) -> PrometheusServer:
        binary = prometheus_binary()
        if binary is None:
            raise RuntimeError("prometheus is not installed (apt-get install prometheus)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(exist_ok=True)
        self.port = self.port or free_port()
        config = self.write_config()
        log = open(self.workdir / "prometheus.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={self.data_dir}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=400d",
             "--web.enable-lifecycle", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self._log = log
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited early:\n{self.log_tail()}")
            try:
                if requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"prometheus not ready after {timeout}s:\n{self.log_tail()}")

    def reload(self) -> None:
        self.write_config()
        requests.post(f"{self.url}/-/reload", timeout=10).raise_for_status()

    def log_tail(self, n: int = 30) -> str:
        path = self.workdir / "prometheus.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(timeout=5)
        self.proc = None
        if getattr(self, "_log", None) is not None:
            self._log.close()
            self._log = None

    def query(self, expr: str, time_s: float | None = None) -> list[dict]:
        params: dict[str, str] = {"query": expr}
        if time_s is not None:
            params["time"] = str(time_s)
        resp = requests.get(f"{self.url}/api/v1/query", params=params, timeout=30)
        resp.raise_for_status()
        return resp.json()["data"]["result"]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict]:
        resp = requests.get(f"{self.url}/api/v1/query_range",
                            params={"query": expr, "start": start, "end": end, "step": step}, timeout=60)
        resp.raise_for_status()
        return resp.json()["data"]["result"]

    def wait_for(self, expr: str, min_series: int = 1, timeout: float = 30.0) -> list[dict]:
        """Poll an instant query until it returns at least ``min_series`` series (bounded)."""
        deadline = time.monotonic() + timeout
        result: list[dict] = []
        while time.monotonic() < deadline:
            result = self.query(expr)
            if len(result) >= min_series:
                return result
            time.sleep(0.5)
        raise AssertionError(f"{expr!r} returned {len(result)} series after {timeout}s, wanted {min_series}")
