"""Re-record the ``query_range`` answers the forecaster's unit tests replay (run by hand, rarely).

    python3 tests/data/forecaster/record_query_range.py

A real Prometheus loads 6 hours of the simulated fleet (3 hosts, ``critical`` scenario, seed 3,
backfilled through promtool) and answers the four default signal queries at the forecaster's
step (300 s) over 8 hours ending at the recording time: the first 2 hours of the window
precede the backfill, so every series is 6 h long inside an 8 h window; the scenario's anchor
is 30 min after the end, so scripted incidents are ramping up. The answer is exactly what
Prometheus sends (``"NaN"``-free, sorted, with its own number formatting).
Writes ``query_range_<signal>.json`` and ``meta.json`` (end time, step) next to this file.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from exporter.backfill import backfill  # noqa: E402
from exporter.simulation import Fleet  # noqa: E402
from forecaster.contract.config import DEFAULT_SIGNALS  # noqa: E402
from tests.promserver import PrometheusServer  # noqa: E402


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="record-"))
    now = time.time() // 300 * 300
    fleet = Fleet(3, seed=3, scenario="critical", anchor=now + 1800)  # breaches ramp up towards the end
    server = PrometheusServer(workdir=work / "prom")
    server.workdir.mkdir(parents=True)
    server.data_dir.mkdir()
    result = backfill(fleet, days=0.25, out_dir=work / "bf", interval=60.0, job="tft-simulator", jobs=1, now=now)
    assert result.blocks_dir is not None
    for block in result.blocks_dir.iterdir():
        shutil.copytree(block, server.data_dir / block.name)
    server.start()
    try:
        end = now - 300
        start = end - 8 * 3600
        for signal in DEFAULT_SIGNALS:
            resp = requests.get(f"{server.url}/api/v1/query_range",
                                params={"query": signal.query, "start": start, "end": end, "step": 300}, timeout=30)
            resp.raise_for_status()
            (HERE / f"query_range_{signal.name}.json").write_text(resp.text)
        (HERE / "meta.json").write_text(json.dumps({"start": start, "end": end, "step": 300,
                                                    "hosts": list(fleet.names)}, indent=1) + "\n")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
