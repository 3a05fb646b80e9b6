"""``tft-forecaster`` exit statuses and messages (docs/FORECASTER.md lists them).

Usage errors and a taken port run as subprocesses (they exit before torch is imported, so they
are quick and show what a user sees); ``--once`` and ``--dry-run`` run in-process through
``main()`` to avoid a torch import per case.
"""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit.fakeprom import QUERY_RANGE, FakePrometheus, Reply
from forecaster import cli
from tests.forecaster_harness import shared_tiny_registry

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "forecaster", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120, check=False)


@pytest.mark.parametrize("args,needle", [
    (["--config.file", "/nonexistent/forecaster.yml"], "cannot read config file"),
    (["--shard.count", "2", "--shard.index", "2"], "index must be below count"),
    (["--prometheus.url", "ftp://x"], "prometheus.url"),
    (["--web.listen-address", "nowhere"], "must be host:port"),
    (["--output", "x.json"], "--output needs --once"),
    (["--once", "--dry-run"], "not allowed with"),
    (["--no-such-flag"], "unrecognized arguments"),
])
def test_usage_and_config_errors_are_one_line_and_status_2(args: list[str], needle: str) -> None:
    proc = run_cli(*args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in proc.stderr


def test_bad_yaml_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("forecaster:\n  interval_seconds: soon\n")
    proc = run_cli("--config.file", str(bad))
    assert proc.returncode == 2 and "interval_seconds" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_port_in_use_is_one_line_and_status_1() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        proc = run_cli("--web.listen-address", f"127.0.0.1:{port}")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0] and "Traceback" not in proc.stderr


@pytest.fixture
def quiet_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """main() configures logging for a process; inside pytest that would unhook log capture."""
    monkeypatch.setattr("toolkit.logs.setup_logging", lambda *a, **k: None)


@pytest.fixture
def fleet() -> Iterator[FakePrometheus]:
    import time

    now = time.time()
    with FakePrometheus() as fake:
        for i in range(2):
            fake.add_series({"instance": f"host-{i}"}, lambda t, i=i: 0.5 + 0.3 * math.sin(t / 9000 + i),
                            start=now - 86400)
        yield fake


@pytest.mark.usefixtures("quiet_logging")
def test_once_writes_forecasts_and_exits_0(fleet: FakePrometheus, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           tmp_path_factory: pytest.TempPathFactory) -> None:
    out = tmp_path / "forecasts.json"
    registry = shared_tiny_registry(tmp_path_factory)
    code = cli.main(["--once", "--prometheus.url", fleet.url, "--model.dir", str(registry), "--output", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "8 series forecast" in printed and "model: global version" in printed and "stages: query" in printed
    doc = json.loads(out.read_text())
    assert doc["status"] == "success" and len(doc["data"]["series"]) == 8
    first = doc["data"]["series"][0]
    assert {"instance", "signal", "model", "p10", "p50", "p90", "breach_eta_seconds",
            "breach_probability"} <= set(first)


@pytest.mark.usefixtures("quiet_logging")
def test_once_without_config_or_model_uses_the_flagged_fallback(fleet: FakePrometheus, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["--once", "--prometheus.url", fleet.url, "--model.dir", str(tmp_path / "none")])
    printed = capsys.readouterr().out
    assert code == 0 and "FALLBACK" in printed


@pytest.mark.usefixtures("quiet_logging")
def test_once_with_nothing_to_forecast_exits_3(fleet: FakePrometheus, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    fleet.always(QUERY_RANGE, Reply.matrix([]))
    assert cli.main(["--once", "--prometheus.url", fleet.url, "--model.dir", str(tmp_path)]) == 3
    assert "no series" in capsys.readouterr().out


@pytest.mark.usefixtures("quiet_logging")
def test_once_and_dry_run_with_prometheus_down_exit_4(fleet: FakePrometheus, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    fleet.go_down()
    cfg = tmp_path / "c.yml"
    cfg.write_text(f"prometheus:\n  url: {fleet.url}\n  retries: 0\n")
    assert cli.main(["--once", "--config.file", str(cfg), "--model.dir", str(tmp_path)]) == 4
    assert cli.main(["--dry-run", "--config.file", str(cfg)]) == 4
    assert "prometheus: FAILED" in capsys.readouterr().out


@pytest.mark.usefixtures("quiet_logging")
def test_dry_run(fleet: FakePrometheus, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                 tmp_path_factory: pytest.TempPathFactory) -> None:
    registry = shared_tiny_registry(tmp_path_factory)
    assert cli.main(["--dry-run", "--prometheus.url", fleet.url, "--model.dir", str(registry)]) == 0
    printed = capsys.readouterr().out
    assert "prometheus: ok" in printed and "model: ok (global version" in printed
    assert cli.main(["--dry-run", "--prometheus.url", fleet.url, "--model.dir", str(tmp_path)]) == 3
    assert "fallback" in capsys.readouterr().out
