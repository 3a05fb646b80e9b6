"""Schedules from a Prometheus series (issue #18): ``schedules:`` entries with ``query:`` instead of ``cron:``.

The series says, per host, the unix time of the job's next planned start; every value it took over the
queried range is one window. Checked here: the config, the resolution into windows, that a query schedule
and a cron saying the same starts give the same ``scheduled`` input and paging hint, that training from
Prometheus (a real one) and from Parquet resolve the same windows, and that a serving cycle whose schedule
query fails still forecasts and counts the error. Cron schedules alone: tests/test_schedules.py.
"""

from __future__ import annotations

import logging
import math
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from devkit.fakeprom import QUERY_RANGE, FakePrometheus, Reply
from forecaster.contract.config import DEFAULT_SIGNALS, ConfigError, parse_config
from forecaster.contract.features import WindowRules, build_windows, x_reals
from forecaster.contract.hosts import HostIdentity
from forecaster.contract.prometheus import RangeSeries
from forecaster.contract.schedules import Schedule, ScheduleSet, planned_by_host, planned_starts, query_planned
from tests.forecaster_harness import T0, Clock, make_service, metric
from tests.promserver import PrometheusServer

BACKUP_QUERY = "backup_next_start_timestamp_seconds"
STEP = 300


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


# ---- the config ------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", [
    {"cron": "0 2 * * *", "query": BACKUP_QUERY},
    {},
])
def test_a_schedule_takes_exactly_one_of_cron_and_query(entry: dict) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"schedules": [{"name": "backup", "duration": "45m", **entry}]}, "config.yml")
    assert str(err.value) == ("config.yml: schedules.0: give exactly one of 'cron' (a 5-field cron expression) or "
                              "'query' (a PromQL expression of the next planned start, unix seconds)")


@pytest.mark.parametrize("entry, cluster_labels, message", [
    ({"query": "  "}, [], "schedules.0.query: must be a PromQL expression, not empty"),
    ({"query": f"max by (instance) ({BACKUP_QUERY})"}, ["cluster"],
     "schedule backup: the query aggregates by (instance) without prometheus.cluster_labels (cluster); "
     "aggregate by (instance, cluster)"),
])
def test_query_errors_are_one_readable_line(entry: dict, cluster_labels: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"prometheus": {"cluster_labels": cluster_labels},
                      "schedules": [{"name": "backup", "duration": "45m", **entry}]})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_query_schedule_compiles_unresolved_without_windows() -> None:
    config = parse_config({"schedules": [
        {"name": "backup", "query": BACKUP_QUERY, "duration": "45m", "signals": ["filesystem"]}]})
    plan = config.schedule_set
    (sched,) = plan.queried
    assert (sched.cron, sched.query, sched.duration_seconds, sched.planned) == (None, BACKUP_QUERY, 2700, None)
    # Until resolved it declares nothing: no window, applies to no host.
    assert plan.applying("web-01", "filesystem") == []
    assert not plan.active(["web-01"], ["filesystem"], np.array([[ts("2024-05-01T02:10:00")]])).any()


# ---- resolution ----------------------------------------------------------------------------


def test_every_distinct_value_of_the_series_is_one_window_start() -> None:
    past, now, upcoming = ts("2024-05-01T02:00:00"), ts("2024-05-01T12:00:00"), ts("2024-05-02T02:00:00")
    # A "next start" gauge: the same value until the job starts, then the next one (in the future);
    # gaps and junk (NaN, 0 from an unset textfile) say nothing.
    values = np.array([past] * 5 + [np.nan] + [upcoming] * 7 + [0.0, upcoming])
    np.testing.assert_array_equal(planned_starts(values), [past, upcoming])
    by_host = planned_by_host([("web-01", values), ("web-01", np.array([past + 3600.0])), (None, values),
                               ("db-02", np.array([np.nan]))])
    assert {k: v.tolist() for k, v in by_host.items()} == {"web-01": [past, past + 3600, upcoming], "db-02": []}

    plan = ScheduleSet((Schedule("backup", None, 2700, ".*", ("filesystem",), BACKUP_QUERY),)).resolved(
        {"backup": by_host})
    times = np.array([[past - 1, past, past + 2699, past + 2700, past + 3660, now, upcoming + 60]])
    assert plan.active(["web-01"], ["filesystem"], times).tolist() == [[0, 1, 1, 0, 1, 0, 1]]
    # Only the hosts its series names, and only the declared signals.
    assert [s.name for s in plan.applying("web-01", "filesystem")] == ["backup"]
    assert plan.applying("db-02", "filesystem") == [] and plan.applying("web-01", "cpu") == []
    assert plan.applying("batch-03", "filesystem") == []
    assert np.isnan(plan.breach_explained(["db-02"], ["filesystem"], times, np.zeros_like(times, bool))).all()
    # A schedule not in the answer (its query failed) has no windows; the resolved copy is a new value.
    assert plan != ScheduleSet(plan.schedules).resolved({})
    assert ScheduleSet(plan.schedules).resolved({}).applying("web-01", "filesystem") == []


def test_query_planned_keys_series_by_host_identity_and_reaches_back_one_duration() -> None:
    calls: list[tuple[str, float, float, float]] = []

    class Client:
        def query_range(self, expr: str, start: float, end: float, step: float) -> list[RangeSeries]:
            calls.append((expr, start, end, step))
            t = np.array([start, end])
            return [RangeSeries({"instance": "db-02", "cluster": "a"}, t, np.array([100.0, 200.0])),
                    RangeSeries({"instance": "db-02", "cluster": "b"}, t, np.array([300.0, 300.0])),
                    RangeSeries({"job": "no-host"}, t, np.array([400.0, 400.0]))]

        def query(self, expr: str, time: float | None = None) -> list:
            raise AssertionError("range queries only")

    sched = Schedule("backup", None, 2700, query=BACKUP_QUERY)
    got = query_planned(Client(), sched, HostIdentity(("cluster",)), 10_000.0, 20_000.0, 300)
    assert calls == [(BACKUP_QUERY, 10_000.0 - 2700, 20_000.0, 300)]
    assert {k: v.tolist() for k, v in got.items()} == {'{instance="db-02",cluster="a"}': [100, 200],
                                                       '{instance="db-02",cluster="b"}': [300]}
    plan = ScheduleSet((sched,)).resolved({"backup": got})
    assert [s.name for s in plan.applying('{instance="db-02",cluster="b"}', "cpu")] == ["backup"]
    assert plan.applying('{instance="db-02",cluster="c"}', "cpu") == []


def test_a_query_saying_a_crons_starts_gives_the_same_input_and_paging_hint() -> None:
    cron = Schedule("backup", "0 2 * * *", 2700, "web-.*", ("filesystem",))
    query = Schedule("backup", None, 2700, "web-.*", ("filesystem",), BACKUP_QUERY)
    days = [ts(f"2024-05-0{d}T02:00:00") for d in range(1, 5)]
    # The gauge sampled every 5 minutes from 2024-04-30 12:00 to 2024-05-03 12:00: it says the runs of
    # 05-01, 05-02 and 05-03 as past values and the run of 05-04 as its last, future, value.
    grid = np.arange(ts("2024-04-30T12:00:00"), ts("2024-05-03T12:00:00") + 1, STEP)
    gauge = np.array([min(d for d in days if d > t) for t in grid])
    keys = ["web-01", "web-01", "web-02", "db-02", "web-01"]
    plans = (ScheduleSet((cron,)),
             ScheduleSet((query,)).resolved({"backup": planned_by_host((k, gauge) for k in ("web-01", "web-02"))}))
    sigs = ["filesystem", "cpu", "filesystem", "filesystem", "filesystem"]
    times = np.broadcast_to(np.arange(ts("2024-05-01T00:00:00"), ts("2024-05-04T06:00:00"), 60.0), (5, 4680))
    active = [p.active(keys, sigs, times) for p in plans]
    np.testing.assert_array_equal(active[0], active[1])
    assert active[0][0].sum() == 4 * 45  # four 45-minute windows, one in the future
    np.testing.assert_array_equal(plans[0].active(keys, sigs, times, after=900), plans[1].active(keys, sigs, times,
                                                                                                 after=900))
    assert [[s.name for s in p.applying(k, s)] for p in plans for k, s in zip(keys, sigs, strict=True)] == \
        2 * [["backup"], [], ["backup"], [], ["backup"]]
    above = times > ts("2024-05-02T02:10:00")
    above &= times < ts("2024-05-02T02:30:00")
    hints = [p.breach_explained(keys, sigs, times, above) for p in plans]
    np.testing.assert_array_equal(hints[0], hints[1])
    assert hints[0][0] == 1.0 and np.isnan(hints[0][1])


# ---- training: Prometheus and Parquet --------------------------------------------------------


def _gauge(runs: list[float]) -> Callable[[float], float]:
    """A next-start gauge: at ``t``, the first run after ``t``."""
    return lambda t: min(r for r in runs if r > t)


def _history_config(url: str, parquet: Path | None = None) -> dict:
    return {
        "prometheus": {"url": url, "timeout_seconds": 10, "retries": 0},
        "signals": [{"name": "cpu", "query": "test_cpu", "threshold": 0.9},
                    {"name": "filesystem", "query": "test_fs", "threshold": 0.9}],
        "schedules": [{"name": "backup", "query": BACKUP_QUERY, "duration": "45m", "signals": ["filesystem"]},
                      {"name": "batch", "cron": "30 * * * *", "duration": "10m", "signals": ["cpu"]}],
        "trainer": {"parquet": str(parquet) if parquet else None},
    }


@pytest.fixture
def planned_history(tmp_path: Path) -> Iterator[tuple[pd.DataFrame, dict[str, list[float]], float]]:
    """One day of two hosts at 5 minutes ending an hour ago, with a backup gauge: the frame (the Parquet
    layout, ``schedule:backup`` column included), the runs per host, and the end."""
    end = float(int(time.time()) // 3600 * 3600 - 3600)
    grid = np.arange(end - 86400, end + 1, STEP)
    runs = {"web-01": [end - 20 * 3600 + 420, end - 3 * 3600, end + 3600, end + 25 * 3600],
            "db-02": [end - 1800, end + 6 * 3600]}
    rows = [{"instance": host, "timestamp": pd.Timestamp(int(t), unit="s", tz="UTC"),
             "cpu": 0.3 + 0.1 * i + 0.1 * math.sin(t / 7200), "filesystem": 0.5 + 0.01 * i,
             "schedule:backup": _gauge(host_runs)(t)}
            for i, (host, host_runs) in enumerate(runs.items()) for t in grid.tolist()]
    yield pd.DataFrame(rows), runs, end


def _openmetrics(frame: pd.DataFrame) -> str:
    lines = []
    for column, metric_name in (("cpu", "test_cpu"), ("filesystem", "test_fs"), ("schedule:backup", BACKUP_QUERY)):
        lines.append(f"# TYPE {metric_name} gauge")
        for host, part in frame.groupby("instance", sort=True):
            for t, v in zip(part["timestamp"], part[column], strict=True):
                lines.append(f'{metric_name}{{instance="{host}"}} {float(v)!r} {int(t.timestamp())}')
    return "\n".join([*lines, "# EOF"]) + "\n"


@pytest.mark.integration
def test_training_from_prometheus_and_from_parquet_resolves_the_same_windows(
        prometheus_factory: Callable[..., PrometheusServer], promtool: str, tmp_path: Path,
        planned_history: tuple[pd.DataFrame, dict[str, list[float]], float]) -> None:
    from trainer.history import HistoryError, parquet_history, prometheus_history

    frame, runs, end = planned_history
    server = prometheus_factory()
    server.data_dir.mkdir(parents=True)
    om = tmp_path / "history.om"
    om.write_text(_openmetrics(frame))
    proc = subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", str(om), str(server.data_dir)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    server.start()
    parquet = tmp_path / "history.parquet"
    frame.to_parquet(parquet)

    from_prom = prometheus_history(parse_config(_history_config(server.url)), days=1, end=end)
    from_parquet = parquet_history(parquet, parse_config(_history_config(server.url, parquet)))
    # The runs seen over the day (the first one before it is not), and the next, future, one.
    backup = from_prom.schedules.queried[0]
    assert backup.planned == (("db-02", (int(end - 1800), int(end + 6 * 3600))),
                              ("web-01", tuple(int(r) for r in runs["web-01"][:3])))
    assert from_prom.schedules == from_parquet.schedules

    # The same ``scheduled`` input, encoder (past runs) and decoder (the next one) alike.
    signals = ["cpu", "filesystem"]
    rules_args = {"context": 48, "horizon": 24, "min_history": 4}
    col = x_reals(signals, 0, True).index("scheduled")
    batches = []
    for history in (from_prom, from_parquet):
        panel = history.panel
        assert panel.instances == ["db-02", "web-01"] and panel.signals == signals
        series = np.array([(i, j) for i in range(2) for j in range(2)])
        rules = WindowRules(**rules_args, schedules=history.schedules)
        batches.append(build_windows(panel, series, np.full(4, panel.n_times - 1), rules, {"cpu": 1, "filesystem": 2}))
    np.testing.assert_array_equal(batches[0].encoder_cont[:, :, col], batches[1].encoder_cont[:, :, col])
    np.testing.assert_array_equal(batches[0].decoder_cont[:, :, col], batches[1].decoder_cont[:, :, col])
    enc, dec = batches[0].encoder_cont[:, :, col], batches[0].decoder_cont[:, :, col]
    # web-01 filesystem (row 3): the run 3 h ago in the encoder, the run in 1 h in the decoder.
    assert enc[3].sum() == 9 and dec[3, 11:20].all() and dec[3].sum() == 9
    # db-02 filesystem (row 1): the run that started 30 minutes ago still covers the next 15 minutes.
    assert enc[1, -7:].all() and enc[1].sum() == 7 and dec[1, :2].all() and dec[1].sum() == 2
    assert enc[0].any() and dec[0].any()  # cpu rows: the cron (every hour at :30 for 10 minutes)

    # A schedule query Prometheus refuses stops training with one line, as a signal's does.
    broken = _history_config(server.url)
    broken["schedules"][0]["query"] = "backup_next_start_timestamp_seconds{"
    with pytest.raises(HistoryError) as err:
        prometheus_history(parse_config(broken), days=1, end=end)
    assert str(err.value).startswith("schedule backup: ") and "\n" not in str(err.value)


def test_a_parquet_without_the_schedule_column_trains_without_its_windows(
        tmp_path: Path, planned_history: tuple[pd.DataFrame, dict[str, list[float]], float],
        caplog: pytest.LogCaptureFixture) -> None:
    from trainer.history import parquet_history

    frame, _runs, _end = planned_history
    parquet = tmp_path / "plain.parquet"
    frame.drop(columns=["schedule:backup"]).to_parquet(parquet)
    with caplog.at_level(logging.WARNING, logger="trainer.history"):
        history = parquet_history(parquet, parse_config(_history_config("http://127.0.0.1:1", parquet)))
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "has no column 'schedule:backup': schedule backup marks no window in this training" in warning
    assert "\n" not in warning
    assert history.panel.signals == ["cpu", "filesystem"]
    assert history.schedules.applying("web-01", "filesystem") == []
    assert [s.name for s in history.schedules.applying("web-01", "cpu")] == ["batch"]  # the cron still applies
    # With the column, the reader never takes it for a signal (signals inferred from the table).
    from forecaster.contract.panel import panel_from_frame

    assert panel_from_frame(frame).signals == ["cpu", "filesystem"]


# ---- serving -----------------------------------------------------------------------------------


@pytest.fixture
def planned_fleet() -> Iterator[FakePrometheus]:
    """Three hosts answering each default signal's query; the backup gauge only for web-01 (a run began
    10 minutes before T0, the next one is at T0 + 1 h)."""
    with FakePrometheus() as fake:
        for i, host in enumerate(("web-01", "db-02", "batch-03")):
            for sig in DEFAULT_SIGNALS:
                fake.add_series({"instance": host}, lambda t, i=i: 0.4 + 0.2 * math.sin(2 * math.pi * t / 86400 + i),
                                start=T0 - 86400, query=sig.query)
        fake.add_series({"instance": "web-01", "job": "node"}, _gauge([T0 - 600, T0 + 3600, T0 + 86400]),
                        start=T0 - 86400, query=BACKUP_QUERY)
        yield fake


def test_a_failed_schedule_query_is_counted_and_the_cycle_still_forecasts(
        planned_fleet: FakePrometheus, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fake = planned_fleet
    schedules = [{"name": "backup", "query": BACKUP_QUERY, "duration": "45m", "signals": ["filesystem"]},
                 {"name": "batch", "cron": "*/30 * * * *", "duration": "10m", "signals": ["cpu"]}]
    clock = Clock()
    service = make_service(fake, tmp_path / "no-models", clock, schedules=schedules)
    assert metric(service, "tft_schedule_query_errors_total") == 0.0  # exported from the start

    fake.always(QUERY_RANGE, lambda rec: Reply.error(400, "bad_data", "parse error") if rec.params["query"]
                == BACKUP_QUERY else Reply.hang(0))  # hang(0): the default answer
    with caplog.at_level(logging.WARNING, logger="forecaster.serving.cycle"):
        result = service.run_cycle()
    assert result.ok and result.errors == {}
    assert result.schedule_errors and result.schedule_errors[0].startswith("schedule backup: ")
    fs = result.forecasts
    assert fs is not None and len(fs) == 3 * len(DEFAULT_SIGNALS)
    assert metric(service, "tft_schedule_query_errors_total") == 1.0
    assert metric(service, "tft_forecaster_failures_total", {"stage": "query"}) == 0.0
    assert metric(service, "tft_forecaster_cycles_total", {"outcome": "success"}) == 1.0
    warnings = [r.getMessage() for r in caplog.records if r.name == "forecaster.serving.cycle"]
    assert len(warnings) == 1 and "schedule backup" in warnings[0]
    # The cron still applies; the query schedule, unknown this cycle, applies to no host.
    assert metric(service, "tft_schedule_active", {"instance": "web-01", "signal": "cpu"}) is not None
    assert metric(service, "tft_schedule_active", {"instance": "web-01", "signal": "filesystem"}) is None
    assert service.status_document()["data"]["last_cycle"]["schedule_errors"] == result.schedule_errors

    fake.always(QUERY_RANGE, None)
    clock.t += STEP
    result = service.run_cycle()
    assert result.ok and result.schedule_errors == []
    assert metric(service, "tft_schedule_query_errors_total") == 1.0
    # The run that began 10 minutes before T0 covers now; the next one starts an hour later.
    assert metric(service, "tft_schedule_active", {"instance": "web-01", "signal": "filesystem"}) == 1.0
    assert metric(service, "tft_schedule_planned", {"instance": "web-01", "signal": "filesystem",
                                                    "horizon": "1h"}) == 1.0
    assert metric(service, "tft_schedule_planned", {"instance": "web-01", "signal": "filesystem",
                                                    "horizon": "2h"}) == 0.0
    assert metric(service, "tft_schedule_active", {"instance": "db-02", "signal": "filesystem"}) is None
    ranges = [r for r in fake.requests_for(QUERY_RANGE) if r.params["query"] == BACKUP_QUERY]
    assert float(ranges[-1].params["step"]) == STEP


def test_schedule_queries_stop_after_a_timeout_and_go_on_after_a_query_error() -> None:
    from forecaster.contract.prometheus import PrometheusQueryError, PrometheusTimeout
    from forecaster.serving.cycle import CycleResult, _schedules

    asked: list[str] = []

    class Client:
        def __init__(self, fail: dict[str, Exception]) -> None:
            self.fail = fail

        def query_range(self, expr: str, start: float, end: float, step: float) -> list[RangeSeries]:
            asked.append(expr)
            if expr in self.fail:
                raise self.fail[expr]
            return [RangeSeries({"instance": "web-01"}, np.array([start]), np.array([end + 60.0]))]

        def query(self, expr: str, time: float | None = None) -> list:
            raise AssertionError("range queries only")

    config = parse_config({"schedules": [{"name": n, "query": f"next_{n}", "duration": "30m"} for n in "abc"]})
    result = CycleResult(started=T0, step_seconds=STEP)
    plan = _schedules(Client({"next_a": PrometheusQueryError("bad query")}), config, T0 - 3600, T0, STEP, result)
    assert asked == ["next_a", "next_b", "next_c"] and result.schedule_errors == ["schedule a: bad query"]
    assert [s.name for s in plan.applying("web-01", "cpu")] == ["b", "c"]
    asked.clear()
    result = CycleResult(started=T0, step_seconds=STEP)
    plan = _schedules(Client({"next_a": PrometheusTimeout("timed out")}), config, T0 - 3600, T0, STEP, result)
    assert asked == ["next_a"] and not plan.applying("web-01", "cpu")
    assert result.schedule_errors == ["schedule a: timed out", "schedule b: not tried", "schedule c: not tried"]
