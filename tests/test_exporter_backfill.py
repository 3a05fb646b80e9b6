"""Backfill: OpenMetrics text, promtool blocks loaded by a real Prometheus, Parquet, seamless join."""

from __future__ import annotations

import json
import math
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.backfill import BackfillError, backfill, block_duration_hours, time_grid, write_openmetrics
from exporter.exposition import render
from exporter.incidents import SIGNAL_QUERIES
from exporter.simulation import Fleet

ANCHOR = 1_750_000_000 // 60 * 60


def _om_values(path: Path) -> dict[tuple[str, frozenset], dict[int, float]]:
    out: dict[tuple[str, frozenset], dict[int, float]] = {}
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            continue
        series, value, ts = line.rsplit(" ", 2)
        name, _, labels = series.partition("{")
        key = (name, frozenset(x for x in labels.rstrip("}").split(",") if x))
        out.setdefault(key, {})[int(ts)] = float(value)
    return out


def test_openmetrics_text_is_well_formed_and_joins_the_live_page(tmp_path: Path) -> None:
    fleet = Fleet(2, seed=5, scenario="degrading", anchor=ANCHOR)
    times = time_grid(0.25, 60.0, ANCHOR, now=time.time())
    path = tmp_path / "h.om"
    samples = write_openmetrics(fleet, fleet.names, times, path, job="node", series="all")
    text = path.read_text()
    assert text.endswith("# EOF\n")
    families = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    assert len(families) == len(set(families)), "a family must not be interleaved"
    assert "# TYPE node_cpu_seconds counter" in text
    values = _om_values(path)
    assert samples == sum(len(v) for v in values.values())
    # The live /probe page at a backfilled instant shows exactly the backfilled values.
    t = int(times[-7])
    page = render(fleet.model("db-02"), float(t))[0].decode()
    checked = 0
    for family in text_string_to_metric_families(page):
        for sample in family.samples:
            labels = {**sample.labels, "instance": "db-02", "job": "node", "profile": "database"}
            key = (sample.name, frozenset(f'{k}="{v}"' for k, v in labels.items()))
            if key in values and t in values[key]:
                assert values[key][t] == pytest.approx(sample.value, rel=1e-12, abs=0), key
                checked += 1
    assert checked > 40


def test_time_grid_never_reaches_the_future() -> None:
    now = time.time()
    grid = time_grid(1.0, 60.0, anchor=now + 3600, now=now)
    assert grid[-1] <= now and grid[-1] % 60 == 0 and len(grid) == 1441
    assert time_grid(2.0, 60.0, anchor=ANCHOR, now=now)[-1] == ANCHOR


def test_block_duration_keeps_each_part_in_one_block() -> None:
    start, end = ANCHOR - 30 * 86400.0, float(ANCHOR)
    hours = block_duration_hours(start, end)
    span = hours * 3600 * 1000
    assert int(start * 1000) // span == int(end * 1000) // span and hours >= 720


def test_bad_arguments_are_reported(tmp_path: Path) -> None:
    fleet = Fleet(1, anchor=ANCHOR)
    with pytest.raises(BackfillError, match="--days"):
        backfill(fleet, days=0, out_dir=tmp_path)
    with pytest.raises(BackfillError, match="--interval"):
        backfill(fleet, days=1, out_dir=tmp_path, interval=0.5)


@pytest.mark.integration
def test_backfill_loads_into_prometheus_and_matches_parquet(tmp_path: Path, prometheus_factory,
                                                            promtool: str) -> None:
    anchor = math.floor((time.time() - 3 * 3600) / 300) * 300
    fleet = Fleet(3, seed=11, scenario="degrading", anchor=anchor)
    parquet = tmp_path / "signals.parquet"
    result = backfill(fleet, days=2, out_dir=tmp_path / "bf", parquet=parquet, jobs=2)
    assert result.end == anchor and result.blocks_dir is not None
    assert not list((tmp_path / "bf").glob("*.om")), "text files are removed after conversion"
    prom = prometheus_factory()
    prom.data_dir.mkdir(parents=True)
    for block in result.blocks_dir.iterdir():
        shutil.copytree(block, prom.data_dir / block.name)
    prom.start()

    frame = pd.read_parquet(parquet)
    assert list(frame.columns) == ["instance", "timestamp", "cpu", "memory", "filesystem", "iowait"]
    assert str(frame["timestamp"].dt.tz) == "UTC"
    start = anchor - 86400
    for signal in ("cpu", "memory", "iowait", "filesystem"):
        result_range = prom.query_range(SIGNAL_QUERIES[signal], start, anchor, 300)
        assert sorted(r["metric"]["instance"] for r in result_range) == sorted(fleet.names)
        for series in result_range:
            assert len(series["values"]) == 289, (signal, series["metric"])
            got = pd.Series({pd.Timestamp(float(t), unit="s", tz="UTC"): float(v) for t, v in series["values"]})
            rows = frame[frame["instance"] == series["metric"]["instance"]].set_index("timestamp")[signal]
            np.testing.assert_allclose(got.to_numpy(), rows.reindex(got.index).to_numpy(), atol=1e-9)

    doc = json.loads((tmp_path / "signals.incidents.json").read_text())
    assert doc["anchor"] and doc["incidents"] == json.loads((tmp_path / "bf" / "incidents.json").read_text())[
        "incidents"]
    active = prom.query_range("tft_sim_incident_active == 1", anchor - 2 * 86400, anchor, 60)
    assert {r["metric"]["kind"] for r in active} <= {i["kind"] for i in doc["incidents"]}


def test_progress_line_has_the_total_the_rate_and_the_time_left() -> None:
    import io

    from toolkit.progress import Progress

    now = [100.0]
    stream = io.StringIO()
    with Progress(1_000_000, stream, unit="samples", label="backfill", clock=lambda: now[0]) as bar:
        now[0] = 110.0
        bar.update(250_000, "part 1/4")
        assert bar.text() == "backfill  25% 250.0k/1.0M samples [00:10<00:30, 25.0k samples/s] part 1/4"
        now[0] = 110.1
        bar.update(260_000)  # within min_interval: not redrawn
        bar.close(1_100_000)  # more than estimated: the count becomes the total
    lines = stream.getvalue().replace("\x1b[K", "").split("\r")
    assert lines[1] == "backfill  25% 250.0k/1.0M samples [00:10<00:30, 25.0k samples/s] part 1/4"
    assert lines[2].startswith("backfill 100% 1.1M/1.1M samples [00:10<00:00,") and lines[2].endswith("\n")
    assert len(lines) == 3


def test_backfill_shows_progress_with_a_total_only_when_asked(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from exporter.cli import main

    argv = ["backfill", "--days", "0.2", "--hosts", "2", "--no-blocks", "--scenario.anchor", str(ANCHOR)]
    assert main([*argv, "--out", str(tmp_path / "quiet")]) == 0
    assert "samples [" not in capsys.readouterr().err, "no progress line when stderr is not a terminal"

    assert main([*argv, "--out", str(tmp_path / "shown"), "--progress"]) == 0
    out, err = capsys.readouterr()
    written = int(out.split()[0])  # "N samples of 2 hosts in ..."
    lines = [line for line in err.replace("\x1b[K", "").replace("\r", "\n").splitlines()
             if line.startswith("backfill ")]
    assert lines, err
    first = re.match(r"backfill +\d+% (\S+)/(\S+) samples \[\d\d:\d\d<(\d\d:\d\d|\?), ", lines[0])
    assert first is not None, lines[0]
    estimated = float(first.group(2).rstrip("k")) * 1000
    assert abs(estimated - written) <= 0.05 * written, (first.group(2), written)  # the total is known up front
    assert re.match(rf"backfill 100% {written / 1000:.1f}k/{written / 1000:.1f}k samples \[", lines[-1]), lines[-1]
