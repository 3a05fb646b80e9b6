"""The trainer's metrics file: escaped label values, one atomic replace, no stray temporary files."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from forecaster.contract.registry import TRAINER_METRICS_FILE
from trainer.cron import STATE_FILE, write_run_metrics

AWKWARD = 'v"1\\2\nend'  # a quote, a backslash and a newline: each must be escaped in a label value


def _samples(path: Path) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(path.read_text(encoding="utf-8")):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def test_label_values_round_trip_through_the_parser(tmp_path: Path) -> None:
    path = tmp_path / TRAINER_METRICS_FILE
    write_run_metrics(path, exit_code=0, outcome="promoted", duration_s=1.25, version=AWKWARD,
                      scores={AWKWARD: {"sql": 0.5, "series": 3}})
    samples = _samples(path)
    assert samples["tft_trainer_last_run_info"] == [({"outcome": "promoted", "version": AWKWARD}, 1.0)]
    assert samples["tft_trainer_backtest_score"] == [({"model": AWKWARD, "metric": "sql"}, 0.5)]
    assert samples["tft_trainer_last_run_exit_code"] == [({}, 0.0)]
    assert samples["tft_trainer_last_run_duration_seconds"] == [({}, 1.25)]
    assert samples["tft_trainer_runs_total"] == [({"outcome": "promoted"}, 1.0)]
    assert not any(name.endswith("_created") for name in samples)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([TRAINER_METRICS_FILE, STATE_FILE])
    assert path.stat().st_mode & 0o777 == 0o644


def test_a_failed_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / TRAINER_METRICS_FILE
    path.mkdir()  # the final rename fails: a directory is in the way
    with pytest.raises(OSError):
        write_run_metrics(path, exit_code=1, outcome="failed", duration_s=1.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([TRAINER_METRICS_FILE, STATE_FILE])
