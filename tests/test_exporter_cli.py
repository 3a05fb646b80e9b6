"""The tft-exporter command: one-line errors with the right exit status, and the subcommands."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from exporter.config import DEFAULT_LISTEN_ADDRESS, ConfigError, load_exporter_config

REPO = Path(__file__).resolve().parents[1]


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exporter", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], status: int, *words: str) -> None:
    assert proc.returncode == status, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tft-exporter: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in lines[0]


@pytest.mark.parametrize(("args", "words"), [
    (["--scenario", "apocalypse"], ["--scenario", "degrading"]),
    (["--hosts", "-3"], ["--hosts"]),
    (["--hosts", "0"], ["--hosts"]),
    (["--config.file", "/nonexistent/tft.yml"], ["/nonexistent/tft.yml"]),
    (["--scenario.anchor", "next tuesday"], ["--scenario.anchor"]),
    (["--web.listen-address", "8920"], ["listen address"]),
    (["backfill", "--days", "-1", "--out", "/tmp/never"], ["--days"]),
    (["incidents", "--scenario", "nope"], ["--scenario"]),
    (["history", "--out", "/tmp/never.csv"], ["--out", ".parquet"]),
    (["history", "--days", "0", "--out", "/tmp/never.parquet"], ["--days"]),
    (["--no-such-flag"], ["--no-such-flag"]),
])
def test_bad_input_is_one_line_with_status_2(args: list[str], words: list[str]) -> None:
    assert_one_line_error(run(*args), 2, *words)


def test_invalid_config_file_names_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("prometheus: {url: http://x:9090}\nexporter:\n  hosts: many\n")
    assert_one_line_error(run("--config.file", str(bad)), 2, "exporter.hosts")
    broken = tmp_path / "broken.yml"
    broken.write_text("exporter: [1,\n")
    assert_one_line_error(run("--config.file", str(broken)), 2, "YAML")


def test_port_in_use_names_the_address() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        address = f"127.0.0.1:{sock.getsockname()[1]}"
        assert_one_line_error(run("--web.listen-address", address, "--log.level", "error"), 1, address)


def test_config_sections_of_other_components_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text(yaml.safe_dump({"forecaster": {"anything": 1}, "exporter": {"hosts": 3, "job": "sim"}}))
    cfg = load_exporter_config(path, {"scenario": "critical", "hosts": None})
    assert (cfg.hosts, cfg.scenario, cfg.job, cfg.listen_address) == (3, "critical", "sim", DEFAULT_LISTEN_ADDRESS)
    with pytest.raises(ConfigError, match=r"exporter\.hostz"):
        path.write_text("exporter: {hostz: 3}\n")
        load_exporter_config(path)


def test_example_configs_are_valid() -> None:
    for name in ("example.yml", "compose.yml"):
        path = REPO / "config" / name
        if path.exists():
            load_exporter_config(path)


def test_incidents_command_writes_ground_truth(tmp_path: Path) -> None:
    out = tmp_path / "incidents.json"
    proc = run("incidents", "--hosts", "4", "--scenario", "degrading", "--seed", "42", "--anchor",
               "2025-06-15T15:06:00Z", "--from", "2025-06-15T00:00:00Z", "--to", "2025-06-16T00:00:00Z",
               "--out", str(out), "--log.level", "warn")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert doc["anchor"] == "2025-06-15T15:06:00Z" and doc["hosts"] == ["web-01", "db-02", "batch-03", "cache-04"]
    scripted = [i for i in doc["incidents"] if i["scripted"]]
    assert [i["instance"] for i in scripted] == ["web-01"]


def test_history_command_writes_the_signals_every_5_minutes_and_their_ground_truth(tmp_path: Path) -> None:
    import pandas as pd

    out = tmp_path / "fleet.parquet"
    proc = run("history", "--hosts", "2", "--seed", "101", "--scenario", "critical", "--days", "1", "--anchor",
               "2025-01-06T00:00:00Z", "--out", str(out), "--log.level", "warn")
    assert proc.returncode == 0, proc.stderr
    frame = pd.read_parquet(out)
    assert list(frame.columns) == ["instance", "timestamp", "cpu", "memory", "filesystem", "iowait"]
    assert frame.groupby("instance").size().to_dict() == {"db-02": 288, "web-01": 288}
    assert frame["timestamp"].max() == pd.Timestamp("2025-01-06T00:00:00Z")
    assert (frame["timestamp"].diff().dropna().dt.total_seconds().isin([300, -86100])).all()
    doc = json.loads((tmp_path / "fleet.incidents.json").read_text())
    assert (doc["seed"], doc["scenario"], doc["hosts"]) == (101, "critical", ["web-01", "db-02"])
    assert not list(tmp_path.glob(".*"))  # no temporary file left


def test_backfill_without_blocks_prints_the_promtool_command(tmp_path: Path) -> None:
    proc = run("backfill", "--days", "0.1", "--hosts", "2", "--out", str(tmp_path), "--no-blocks",
               "--anchor", "1750000000", "--log.level", "warn")
    assert proc.returncode == 0, proc.stderr
    assert "promtool tsdb create-blocks-from openmetrics --max-block-duration=" in proc.stdout
    assert (tmp_path / "backfill.om").read_text().endswith("# EOF\n")
    assert (tmp_path / "incidents.json").exists()
