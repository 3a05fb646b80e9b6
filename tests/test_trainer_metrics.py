"""The trainer's metrics file: escaped label values, one atomic replace, no stray temporary files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from forecaster.contract.registry import TRAINER_METRICS_FILE
from trainer.cron import RECORD_LOCK_FILE, STATE_FILE, run_lock, write_run_metrics

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
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([TRAINER_METRICS_FILE, STATE_FILE, RECORD_LOCK_FILE])
    assert path.stat().st_mode & 0o777 == 0o644


def test_a_registry_root_made_by_the_trainer_is_readable_by_others(tmp_path: Path) -> None:
    """Under cron's umask 077 the first run creates the registry root: the forecaster must still enter it."""
    root = tmp_path / "registry"
    old = os.umask(0o077)
    try:
        with run_lock(root / "sub" / ".train.lock"):
            pass
        write_run_metrics(root / "metrics" / TRAINER_METRICS_FILE, exit_code=0, outcome="promoted", duration_s=1.0)
    finally:
        os.umask(old)
    assert {p.name: p.stat().st_mode & 0o777 for p in (root, root / "sub", root / "metrics")} == {
        "registry": 0o755, "sub": 0o755, "metrics": 0o755}


def test_a_failed_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / TRAINER_METRICS_FILE
    path.mkdir()  # the final rename fails: a directory is in the way
    with pytest.raises(OSError):
        write_run_metrics(path, exit_code=1, outcome="failed", duration_s=1.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([TRAINER_METRICS_FILE, STATE_FILE, RECORD_LOCK_FILE])


@pytest.mark.parametrize("where", ["write", "fsync"])
def test_a_full_disk_raises_enospc_and_leaves_no_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 where: str) -> None:
    """ENOSPC while the data is written, or only when it is flushed (as delayed allocation reports it)."""
    import errno

    from trainer import cron

    path = tmp_path / TRAINER_METRICS_FILE
    write_run_metrics(path, exit_code=0, outcome="promoted", duration_s=1.0)
    before = path.read_bytes()

    def full(*args: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    if where == "write":
        monkeypatch.setattr(cron, "_write_all", full)
    else:
        monkeypatch.setattr(cron.os, "fsync", full)
    with pytest.raises(OSError) as info:
        write_run_metrics(path, exit_code=3, outcome="kept_current", duration_s=1.0)
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([TRAINER_METRICS_FILE, STATE_FILE, RECORD_LOCK_FILE])
    assert path.read_bytes() == before  # the last good record stays


def test_concurrent_records_lose_no_count(tmp_path: Path) -> None:
    """A run that finds the lock held and the run holding it may end together: both are counted."""
    import multiprocessing

    path = tmp_path / TRAINER_METRICS_FILE
    context = multiprocessing.get_context("fork")
    procs = [context.Process(target=_record_many, args=(path, outcome)) for outcome in ("locked", "promoted")]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    samples = _samples(path)
    counts = {labels["outcome"]: value for labels, value in samples["tft_trainer_runs_total"]}
    assert counts == {"locked": 20.0, "promoted": 20.0}


def _record_many(path: Path, outcome: str) -> None:
    for _ in range(20):
        write_run_metrics(path, exit_code=5 if outcome == "locked" else 0, outcome=outcome, duration_s=0.0)
