"""The /probe page: a golden file for one host at one instant, checked by promtool.

Regenerate the golden file after an intended change of the simulation or the page with

    UPDATE_GOLDEN=1 python3 -m pytest tests/test_exporter_exposition.py

and review the diff before committing it.
"""

from __future__ import annotations

import math
import os
import subprocess
from pathlib import Path

from exporter.families import FAMILIES
from exporter.http import ExporterApp
from exporter.simulation import Fleet

GOLDEN = Path(__file__).parent / "golden" / "probe_web-01.prom"
ANCHOR = 1_750_000_000 // 60 * 60  # 2025-06-15T15:06:00Z
PROBE_AT = ANCHOR + 1800.0  # web-01's scripted memory leak is ramping towards its breach


def probe_page() -> str:
    app = ExporterApp(Fleet(4, seed=42, scenario="degrading", anchor=ANCHOR), clock=lambda: PROBE_AT)
    status, content_type, body = app.handle("/probe", {"target": ["web-01"]}, None)
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
    return body.decode()


def _split(line: str) -> tuple[str, float | None]:
    """``(series or comment, value)``; values are compared with a tolerance because libm's last bit
    may differ between machines."""
    if line.startswith("#") or not line:
        return line, None
    series, _, value = line.rpartition(" ")
    return series, float(value)


def test_probe_page_matches_the_golden_file() -> None:
    page = probe_page()
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(page)
    golden = GOLDEN.read_text()
    if page == golden:
        return
    got, want = page.splitlines(), golden.splitlines()
    assert [_split(x)[0] for x in got] == [_split(x)[0] for x in want], "series differ from the golden file"
    for line_got, line_want in zip(got, want, strict=True):
        (series, value), (_, expected) = _split(line_got), _split(line_want)
        if value is not None:
            assert math.isclose(value, expected, rel_tol=1e-9), (series, value, expected)


def test_probe_page_has_node_exporter_families_and_labels() -> None:
    page = probe_page()
    for family in FAMILIES.values():
        assert f"# TYPE {family.name} {family.type}" in page
    assert 'node_cpu_seconds_total{cpu="0",mode="idle"}' in page
    assert 'node_filesystem_avail_bytes{device="/dev/sda1",fstype="ext4",mountpoint="/"}' in page
    assert 'node_filesystem_size_bytes{device="tmpfs",fstype="tmpfs",mountpoint="/run"}' in page
    assert 'node_network_transmit_bytes_total{device="eth0"}' in page
    assert 'tft_sim_incident_active{kind="memory_leak"} 0.0' in page


def test_golden_page_passes_promtool_check_metrics(promtool: str) -> None:
    proc = subprocess.run([promtool, "check", "metrics"], input=GOLDEN.read_bytes(), capture_output=True,
                          timeout=60)
    findings = [x for x in (proc.stdout + proc.stderr).decode().splitlines() if x.strip()]
    # node_exporter's own names (MemAvailable, ...) are camelCase; nothing else may be reported.
    others = [x for x in findings if not (x.startswith("node_memory_") and "camelCase" in x)]
    assert others == [], others
