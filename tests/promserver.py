"""Start and stop a real Prometheus for tests (and only tests): free port, own data dir, own config."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import requests
import yaml

_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port nothing listens on now, and never one this process handed out before.

    A port is only reserved once its server binds it: a test that picks one for a Prometheus it starts
    later (after a forecaster that picks its own) once got the same port twice, and Prometheus failed
    with "address already in use".
    """
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no free port in 100 tries")


class HeldPort:
    """A free port kept bound until :meth:`release`: for a server that starts after the clients
    configured with its address, so that no ``bind(0)`` of theirs (a forecaster, an exporter) gets it first."""

    def __init__(self) -> None:
        self._sock: socket.socket | None = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.port = int(self._sock.getsockname()[1])
        _HANDED_OUT.add(self.port)

    def release(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def prometheus_binary() -> str | None:
    return shutil.which("prometheus")


def launch(name: str, args: list[str], log_path: Path, ready_url: str,
           timeout: float) -> tuple[subprocess.Popen, IO[bytes]]:
    """Start ``args`` in a session of its own, output appended to ``log_path``; wait until
    ``ready_url`` answers 200. The process and its open log, or RuntimeError with the log's tail."""
    log = open(log_path, "ab")  # noqa: SIM115 - closed by stop_process()
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            stop_process(proc, log)
            raise RuntimeError(f"{name} exited early:\n{log_tail(log_path)}")
        try:
            if requests.get(ready_url, timeout=1).status_code == 200:
                return proc, log
        except requests.RequestException:
            pass
        time.sleep(0.2)
    stop_process(proc, log)
    raise RuntimeError(f"{name} not ready after {timeout}s:\n{log_tail(log_path)}")


def stop_process(proc: subprocess.Popen | None, log: IO[bytes] | None) -> None:
    """Terminate (then kill the session of) a process from :func:`launch`, and close its log."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=5)
    if log is not None:
        log.close()


def log_tail(path: Path, n: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else ""


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
        self.proc, self._log = launch(
            "prometheus",
            [binary, f"--config.file={config}", f"--storage.tsdb.path={self.data_dir}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=400d",
             "--web.enable-lifecycle", "--log.level=warn"],
            self.workdir / "prometheus.log", f"{self.url}/-/ready", timeout)
        return self

    def reload(self) -> None:
        self.write_config()
        requests.post(f"{self.url}/-/reload", timeout=10).raise_for_status()

    def log_tail(self, n: int = 30) -> str:
        return log_tail(self.workdir / "prometheus.log", n)

    def stop(self) -> None:
        stop_process(self.proc, getattr(self, "_log", None))
        self.proc = None
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
