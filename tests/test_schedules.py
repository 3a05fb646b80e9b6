"""Declared schedules: the cron matcher, the config, the ``scheduled`` model input, the simulator's jobs,
and the forecaster's paging hint (issue #18). Rule tests: prometheus/tests/alerts-schedules.test.yml."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import torch

from forecaster.contract.config import ConfigError, parse_config
from forecaster.contract.features import SCHEDULE_DRIVER, build_windows, driver_of, x_reals
from forecaster.contract.model import ModelSpec, build_network, to_network_input
from forecaster.contract.panel import panel_from_frame, panel_from_range_results
from forecaster.contract.schedules import GRACE_SECONDS, Cron, Schedule, ScheduleSet, instance_of, parse_duration
from tests.modelkit import SIGNALS, synthetic_panel


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def fires(cron: str, when: str) -> bool:
    return Cron.parse(cron).matches(ts(when))


# ---- the cron matcher ------------------------------------------------------------------------


def test_cron_fields_ranges_steps_lists_and_names() -> None:
    assert fires("0 2 * * *", "2024-05-01T02:00:00") and not fires("0 2 * * *", "2024-05-01T02:01:00")
    assert fires("*/15 * * * *", "2024-05-01T10:45:00") and not fires("*/15 * * * *", "2024-05-01T10:50:00")
    assert fires("10-20/5 * * * *", "2024-05-01T10:15:00") and not fires("10-20/5 * * * *", "2024-05-01T10:25:00")
    assert fires("5/20 * * * *", "2024-05-01T10:45:00") and not fires("5/20 * * * *", "2024-05-01T10:00:00")
    assert fires("0 1,13 * * *", "2024-05-01T13:00:00") and not fires("0 1,13 * * *", "2024-05-01T12:00:00")
    assert fires("0 0 1 jan-mar *", "2024-02-01T00:00:00") and not fires("0 0 1 jan-mar *", "2024-04-01T00:00:00")
    # 2024-05-04 is a Saturday, 2024-05-05 a Sunday.
    assert fires("0 22 * * sat", "2024-05-04T22:00:00") and not fires("0 22 * * sat", "2024-05-05T22:00:00")
    assert fires("0 3 * * mon-fri", "2024-05-03T03:00:00") and not fires("0 3 * * mon-fri", "2024-05-04T03:00:00")
    assert fires("0 3 * * 0", "2024-05-05T03:00:00") and fires("0 3 * * 7", "2024-05-05T03:00:00")
    assert fires("59 23 31 12 *", "2024-12-31T23:59:00")
    assert fires("0 0 29 2 *", "2024-02-29T00:00:00")  # leap day


def test_cron_day_of_month_or_day_of_week_when_both_are_restricted() -> None:
    # Vixie cron: the 1st of the month OR any Monday; with one of them '*', both must hold.
    assert fires("0 0 1 * mon", "2024-05-01T00:00:00")  # a Wednesday, the 1st
    assert fires("0 0 1 * mon", "2024-05-06T00:00:00")  # a Monday, the 6th
    assert not fires("0 0 1 * mon", "2024-05-07T00:00:00")
    assert fires("0 0 * * mon", "2024-05-06T00:00:00") and not fires("0 0 * * mon", "2024-05-01T00:00:00")


def test_cron_matches_a_vectorised_minute_grid_like_the_scalar_check() -> None:
    cron = Cron.parse("*/7 1-3,22 */2 * tue")
    minutes = np.arange(int(ts("2024-01-01T00:00:00")) // 60, int(ts("2024-03-01T00:00:00")) // 60, 37)
    vector = cron.matches_minutes(minutes)
    scalar = []
    for m in minutes.tolist():
        d = datetime.fromtimestamp(m * 60, UTC)
        dom_ok, dow_ok = d.day % 2 == 1, d.isoweekday() == 2
        scalar.append(d.minute % 7 == 0 and (d.hour in (1, 2, 3, 22)) and (dom_ok or dow_ok))
    assert vector.tolist() == scalar and vector.any()


def test_a_window_crossing_midnight_covers_both_days() -> None:
    s = Schedule("late", "30 23 * * *", parse_duration("1h"))
    times = np.array([ts("2024-05-01T23:29:00"), ts("2024-05-01T23:30:00"), ts("2024-05-02T00:15:00"),
                      ts("2024-05-02T00:29:59"), ts("2024-05-02T00:30:00")])
    assert s.active(times).tolist() == [False, True, True, True, False]
    assert s.active(times, after=60).tolist() == [False, True, True, True, True]


@pytest.mark.parametrize("text, seconds", [("45m", 2700), ("2h", 7200), ("1h30m", 5400), ("90s", 90), ("1d", 86400)])
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("entry, message", [
    ({"cron": "0 25 * * *"}, "schedules.0.cron: cron '0 25 * * *': hour field: 25 is outside 0-23"),
    ({"cron": "0 2 * *"}, "must have 5 fields"),
    ({"cron": "0 2 * * funday"}, "day-of-week field: 'funday' is not a number or a name"),
    ({"cron": "*/0 2 * * *"}, "step '0' must be a positive number"),
    ({"cron": "30-10 2 * * *"}, "range '30-10' runs backwards"),
    ({"duration": "45 min"}, "schedules.0.duration: invalid duration '45 min'"),
    ({"duration": "0m"}, "duration must be positive"),
    ({"hosts": "web-("}, "is not a regular expression"),
    ({"signals": ["disk"]}, "schedule backup: unknown signal(s) disk"),
])
def test_config_errors_are_one_readable_line(entry: dict, message: str) -> None:
    base = {"name": "backup", "cron": "0 2 * * *", "duration": "45m"}
    with pytest.raises(ConfigError) as err:
        parse_config({"schedules": [{**base, **entry}]})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_config_schedules_compile_and_select_hosts_and_signals() -> None:
    config = parse_config({"schedules": [
        {"name": "backup", "cron": "0 2 * * *", "duration": "45m", "signals": ["filesystem", "iowait"]},
        {"name": "batch", "cron": "0 22 * * sat", "duration": "2h", "hosts": "(db|batch)-.*", "signals": ["cpu"]},
    ]})
    plan = config.schedule_set
    assert [s.name for s in plan.applying("web-01", "filesystem")] == ["backup"]
    assert plan.applying("web-01", "cpu") == [] and [s.name for s in plan.applying("db-02", "cpu")] == ["batch"]
    assert plan.applying("xdb-02", "cpu") == []  # the regex matches the whole instance
    # With cluster labels the key is a label set; the regex still reads the instance.
    assert instance_of('{instance="db-02",cluster="a"}') == "db-02"
    assert [s.name for s in plan.applying('{instance="db-02",cluster="a"}', "cpu")] == ["batch"]
    assert not parse_config({}).schedule_set


# ---- the model input ------------------------------------------------------------------------

PLAN = ScheduleSet((Schedule("every_2h", "0 */2 * * *", 1800, "host-[01]", ("cpu", "memory")),))


def test_the_scheduled_input_marks_declared_windows_in_encoder_and_decoder() -> None:
    panel = synthetic_panel(hosts=3, days=2)
    spec = ModelSpec(signals=SIGNALS, context_steps=48, horizon_steps=24, min_history_steps=4, schedules=True)
    names = x_reals(SIGNALS, 0, True)
    assert names[-1] == "scheduled" and x_reals(SIGNALS)[: len(names) - 1] == names[:-1]
    series = np.array([(0, 0), (2, 0), (0, 2)])  # host-0 cpu (declared), host-2 cpu, host-0 filesystem
    origin = panel.n_times - 1
    batch = build_windows(panel, series, np.full(3, origin), spec.window_rules(schedules=PLAN), spec.signal_codes())
    col = names.index("scheduled")
    step = panel.step_seconds
    t_enc = panel.timestamps[origin] + (np.arange(48) - 47) * step
    t_dec = panel.timestamps[origin] + (np.arange(24) + 1) * step
    want_enc = ((t_enc % 7200) < 1800).astype(np.float32)
    want_dec = ((t_dec % 7200) < 1800).astype(np.float32)
    assert want_dec.any() and not want_dec.all()
    np.testing.assert_array_equal(batch.encoder_cont[0, :, col], want_enc)
    np.testing.assert_array_equal(batch.decoder_cont[0, :, col], want_dec)
    assert not batch.encoder_cont[1:, :, col].any() and not batch.decoder_cont[1:, :, col].any()
    # A model without the input has no such column, whatever schedules are given.
    plain = ModelSpec(signals=SIGNALS, context_steps=48, horizon_steps=24, min_history_steps=4)
    assert plain.window_rules(schedules=PLAN).schedules is None
    assert driver_of("scheduled", "cpu") == SCHEDULE_DRIVER


def test_the_scheduled_input_is_the_same_from_parquet_and_from_prometheus() -> None:
    """The one input pipeline: a frame (Parquet) and range-query results (Prometheus) of the same
    values give the same windows, the schedule column included."""
    import pandas as pd

    src = synthetic_panel(hosts=2, days=1.5)
    frame = pd.DataFrame([{"instance": h, "timestamp": pd.Timestamp(int(t), unit="s", tz="UTC"),
                           **{s: float(src.values[i, j, k]) for j, s in enumerate(SIGNALS)}}
                          for i, h in enumerate(src.instances) for k, t in enumerate(src.timestamps.tolist())])
    from_parquet = panel_from_frame(frame, SIGNALS)
    from forecaster.contract.prometheus import RangeSeries

    results = {s: [RangeSeries({"instance": h}, src.timestamps.astype(np.float64), src.values[i, j].astype(np.float64))
                   for i, h in enumerate(src.instances)] for j, s in enumerate(SIGNALS)}
    from_prometheus = panel_from_range_results(results, SIGNALS, float(src.timestamps[0]),
                                               float(src.timestamps[-1]), src.step_seconds)
    spec = ModelSpec(signals=SIGNALS, context_steps=48, horizon_steps=24, min_history_steps=4, schedules=True)
    rules = spec.window_rules(schedules=PLAN)
    out = []
    for panel in (from_parquet, from_prometheus):
        rows = [panel.instances.index(h) for h in src.instances]
        series = np.array([(i, j) for i in rows for j in range(len(SIGNALS))])
        out.append(build_windows(panel, series, np.full(len(series), panel.n_times - 1), rules, spec.signal_codes()))
    col = x_reals(SIGNALS, 0, True).index("scheduled")
    assert out[0].decoder_cont[:, :, col].any()
    np.testing.assert_array_equal(out[0].encoder_cont, out[1].encoder_cont)
    np.testing.assert_array_equal(out[0].decoder_cont, out[1].decoder_cont)


def test_older_model_json_loads_as_a_model_without_schedules() -> None:
    old = ModelSpec(signals=SIGNALS).to_json()
    del old["schedules"]
    spec = ModelSpec.from_json(old)
    assert spec.schedules is False and "scheduled" not in spec.encoder_variables
    assert ModelSpec.from_json(ModelSpec(signals=SIGNALS, schedules=True).to_json()).schedules is True


def test_a_model_with_schedules_saves_loads_and_passes_the_fast_path_parity(tmp_path: Path) -> None:
    from forecaster.contract.artifacts import load_model_dir, save_model_dir
    from forecaster.contract.fastpath import FastTFT, check_parity, parity_inputs
    from forecaster.contract.model import ForecastModel

    torch.manual_seed(3)
    spec = ModelSpec(signals=SIGNALS, context_steps=48, horizon_steps=24, hidden_size=8, attention_heads=2,
                     hidden_continuous_size=4, min_history_steps=4, schedules=True)
    net = build_network(spec).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    col = x_reals(SIGNALS, 0, True).index("scheduled")
    x = parity_inputs(spec)[0]
    assert x["decoder_cont"][..., col].unique().tolist() == [0.0, 1.0]  # the check sees both values
    parity = check_parity(FastTFT(net).eval(), spec)
    assert parity.ok, parity
    model = ForecastModel(spec, net)
    save_model_dir(model, tmp_path / "m")
    loaded = load_model_dir(tmp_path / "m")
    assert loaded.spec.schedules is True and "schedule" in loaded.driver_names
    panel = synthetic_panel(hosts=2, days=1.5)
    series = np.array([(0, 0), (1, 1)])
    batch = build_windows(panel, series, np.full(2, panel.n_times - 1), spec.window_rules(schedules=PLAN),
                          spec.signal_codes(), np.full(2, 0.9))
    np.testing.assert_allclose(loaded.predict(batch).quantiles, model.predict(batch).quantiles, atol=1e-6)


def test_the_fast_training_forward_handles_the_schedule_input() -> None:
    from forecaster.contract.fasttrain import supports_training, train_forward

    torch.manual_seed(4)
    spec = ModelSpec(signals=SIGNALS, context_steps=48, horizon_steps=24, hidden_size=8, attention_heads=2,
                     hidden_continuous_size=4, min_history_steps=4, dropout=0.0, schedules=True)
    net = build_network(spec)
    assert supports_training(net)
    panel = synthetic_panel(hosts=3, days=1.5)
    series = np.array([(i, j) for i in range(3) for j in range(len(SIGNALS))])
    origins = panel.n_times - 30 - np.arange(len(series))
    x = to_network_input(build_windows(panel, series, origins, spec.window_rules(min_history=4, schedules=PLAN),
                                       spec.signal_codes(), np.full(len(series), 0.9)))
    net.train()
    grads = []
    for forward in (lambda x: net(x)["prediction"], lambda x: train_forward(net, x)):
        net.zero_grad(set_to_none=True)
        pred = forward(x)
        pred.square().mean().backward()
        grads.append((pred.detach(), {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}))
    (want, want_g), (got, got_g) = grads
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)
    for name in ("encoder_variable_selection.flattened_grn.fc1.weight",
                 "decoder_variable_selection.single_variable_grns.scheduled.fc1.weight"):
        if name in want_g:
            assert torch.allclose(got_g[name], want_g[name], atol=1e-4, rtol=1e-3), name


# ---- the forecaster's paging hint -------------------------------------------------------------


def test_a_breach_is_the_schedules_only_when_every_step_above_lies_in_a_window() -> None:
    plan = ScheduleSet((Schedule("backup", "0 2 * * *", 2700, ".*", ("filesystem",)),))
    start = ts("2024-05-01T01:00:00")
    times = np.broadcast_to(start + 300.0 * (np.arange(48) + 1), (4, 48))
    inside = (times[0] >= start + 3600) & (times[0] < start + 3600 + 2700)
    after = (times[0] >= start + 3600 + 2700 + GRACE_SECONDS + 300)
    above = np.stack([inside, inside | after, np.zeros(48, bool), inside])
    keys = ["web-01", "web-01", "web-01", "web-01"]
    sigs = ["filesystem", "filesystem", "filesystem", "cpu"]
    got = plan.breach_explained(keys, sigs, times, above)
    # Inside only: the schedule's. Also after the grace: not. No step above, a window ahead: the schedule's
    # (nothing to page on). cpu: no schedule applies (NaN, no series).
    assert got[:3].tolist() == [1.0, 0.0, 1.0] and np.isnan(got[3])


def test_the_forecaster_exports_planned_windows_and_the_paging_hint(tmp_path: Path) -> None:
    from forecaster.serving.exposition import render_forecasts
    from forecaster.serving.snapshot import ForecastSet

    n, H = 2, 96
    fs = ForecastSet(step_seconds=300, instances=np.array(["web-01", "db-02"], dtype=object),
                     signals=np.array(["filesystem", "memory"], dtype=object),
                     kinds=np.array(["global"] * n, dtype=object), versions=np.array(["v"] * n, dtype=object),
                     warming_up=np.zeros(n, bool), made_at=np.zeros(n), origin=np.zeros(n), threshold=np.full(n, 0.9),
                     quantiles=np.full((n, H, 3), 0.5, dtype=np.float32), eta=np.full((n, 2), np.nan),
                     probability=np.full((n, 5), 0.1),
                     planned=np.array([[1, 0, 0, 0, 0, 1], [np.nan] * 6]), breach_scheduled=np.array([1.0, np.nan]))
    text = render_forecasts(fs).decode()
    assert 'tft_schedule_active{instance="web-01",signal="filesystem"} 1.0' in text
    assert 'tft_schedule_planned{horizon="8h",instance="web-01",signal="filesystem"} 1.0' in text \
        or 'tft_schedule_planned{instance="web-01",signal="filesystem",horizon="8h"} 1.0' in text
    assert 'tft_breach_scheduled{instance="web-01",signal="filesystem"} 1.0' in text
    assert "db-02" not in "".join(line for line in text.splitlines() if "schedule" in line)
    # Without schedules the families are not there at all (the golden /metrics stays as it was).
    plain = ForecastSet(**{**{k: getattr(fs, k) for k in ("step_seconds", "instances", "signals", "kinds", "versions",
                                                         "warming_up", "made_at", "origin", "threshold", "quantiles",
                                                         "eta", "probability")}})
    assert "tft_schedule" not in render_forecasts(plain).decode()


# ---- the simulator's scheduled jobs -------------------------------------------------------------

ANCHOR = 1_750_000_000 // 300 * 300


def test_simulated_jobs_are_deterministic_recorded_and_leave_the_scenarios_alone() -> None:
    from exporter import Fleet
    from exporter.incidents import incidents_document

    day = ANCHOR // 86400 * 86400
    t = np.arange(day - 86400 + 1.5 * 3600, day - 86400 + 3.5 * 3600, 60.0)
    on = Fleet(8, seed=5, anchor=ANCHOR, jobs=True)
    again = Fleet(8, seed=5, anchor=ANCHOR, jobs=True)
    off = Fleet(8, seed=5, anchor=ANCHOR)
    for h in on.names:
        a, b, c = on.model(h).signals(t), again.model(h).signals(t), off.model(h).signals(t)
        for s in a:
            np.testing.assert_array_equal(a[s], b[s])
        backup = (t >= day - 86400 + 2 * 3600 + 600) & (t < day - 86400 + 2 * 3600 + 2400)
        assert (a["iowait"][backup] > c["iowait"][backup] + 0.05).all()
        assert (a["filesystem"][backup] > c["filesystem"][backup]).all()
        quiet = t < day - 86400 + 2 * 3600 - 600
        np.testing.assert_allclose(a["filesystem"][quiet], c["filesystem"][quiet])
    assert any(on.model(h).signals(t)["filesystem"].max() > 0.9 for h in on.names)  # planned breaches exist
    # Ground truth: job runs apart from incidents; incidents are the same with jobs on or off.
    start, end = ANCHOR - 8 * 86400, ANCHOR
    runs = on.job_runs(start, end)
    assert off.job_runs(start, end) is None
    assert {r.job for r in runs} == {"backup", "batch"}
    assert all(r.job != "batch" or r.instance.split("-")[0] in ("db", "batch") for r in runs)
    assert [(r.instance, r.kind, r.ramp_start) for r in on.incidents(start, end)] == \
        [(r.instance, r.kind, r.ramp_start) for r in off.incidents(start, end)]
    doc = incidents_document(on.incidents(start, end), seed=5, scenario="degrading", anchor=ANCHOR, start=start,
                             end=end, hosts=on.names, jobs=runs)
    assert doc["jobs"][0].keys() == {"instance", "job", "start", "end", "signals"}
    assert all(i["kind"] not in ("backup", "batch") for i in doc["incidents"])
    plain = incidents_document(off.incidents(start, end), seed=5, scenario="degrading", anchor=ANCHOR, start=start,
                               end=end, hosts=off.names)
    assert "jobs" not in plain
    json.dumps(doc)
