"""The fleet simulator as pure functions: determinism, bounds, counters, scenarios, ground truth."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from exporter.incidents import KIND_NAMES, SIGNAL_QUERIES, THRESHOLDS
from exporter.profiles import CPU_MODES, host_names, parse_host
from exporter.simulation import ALL_SIGNAL_NAMES, DEFAULT_SIGNAL_NAMES, Fleet, HostModel
from exporter.waves import GridNoise, Segment, SinSum

ANCHOR = 1_750_000_000 // 60 * 60  # 2025-06-15T15:06:00Z
HOUR, DAY = 3600.0, 86400.0
COUNTERS = ("node_cpu_seconds_total", "node_disk_io_time_seconds_total", "node_disk_read_bytes_total",
            "node_disk_written_bytes_total", "node_network_receive_bytes_total", "node_network_transmit_bytes_total")


def grid(start: float, end: float, step: float = 60.0) -> np.ndarray:
    return np.arange(start, end + step / 2, step)


@pytest.fixture(scope="module")
def degrading() -> Fleet:
    return Fleet(20, seed=42, scenario="degrading", anchor=ANCHOR)


def test_host_names_carry_profiles_round_robin() -> None:
    assert host_names(5) == ["web-01", "db-02", "batch-03", "cache-04", "web-05"]
    assert parse_host("db-02") == ("database", 1)
    with pytest.raises(ValueError):
        parse_host("mail-01")


def test_thresholds_and_queries_match_the_forecaster_contract() -> None:
    from forecaster.contract.config import DEFAULT_SIGNALS

    for signal in DEFAULT_SIGNALS:
        assert THRESHOLDS[signal.name] == signal.threshold
        assert SIGNAL_QUERIES[signal.name] == signal.query
    assert set(DEFAULT_SIGNAL_NAMES) == {s.name for s in DEFAULT_SIGNALS}


def test_same_seed_same_series_different_seed_different() -> None:
    t = grid(ANCHOR - 6 * HOUR, ANCHOR)
    a = HostModel(42, "db-02", "degrading", ANCHOR).series(t)
    b = HostModel(42, "db-02", "degrading", ANCHOR).series(t)
    c = HostModel(43, "db-02", "degrading", ANCHOR).series(t)
    for family, series in a.items():
        for (labels, values), (labels_b, values_b) in zip(series, b[family], strict=True):
            assert labels == labels_b
            np.testing.assert_array_equal(values, values_b)
    idle = lambda s: s["node_cpu_seconds_total"][0][1]  # noqa: E731
    assert not np.array_equal(idle(a), idle(c))


def test_a_host_does_not_depend_on_the_fleet_size() -> None:
    t = grid(ANCHOR - 2 * DAY, ANCHOR + 2 * HOUR, 300)
    small = Fleet(1, seed=42, anchor=ANCHOR).model("web-01").signals(t)
    large = Fleet(40, seed=42, anchor=ANCHOR).model("web-01").signals(t)
    for name in DEFAULT_SIGNAL_NAMES:
        np.testing.assert_array_equal(small[name], large[name])


def test_same_values_in_a_fresh_process() -> None:
    code = ("from exporter.simulation import HostModel; import numpy as np;"
            f"m = HostModel(42, 'batch-03', 'critical', {ANCHOR});"
            f"print(repr(float(m.signals(np.array([{ANCHOR} + 4321.0]), ['cpu', 'memory'])['memory'][0])))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    here = HostModel(42, "batch-03", "critical", ANCHOR).signals(np.array([ANCHOR + 4321.0]), ["memory"])
    assert float(out) == float(here["memory"][0])


def test_counters_are_monotonic_and_gauges_bounded(degrading: Fleet) -> None:
    t = grid(ANCHOR - 3 * DAY, ANCHOR + 6 * HOUR)
    for name in degrading.names[:8]:
        model = degrading.model(name)
        s = model.series(t)
        for family in COUNTERS:
            for labels, values in s[family]:
                assert np.all(np.diff(values) >= 0), (name, family, labels)
        for (labels, avail), (_, size), (_, free) in zip(s["node_filesystem_avail_bytes"],
                                                         s["node_filesystem_size_bytes"],
                                                         s["node_filesystem_free_bytes"], strict=True):
            assert np.all(avail >= 0) and np.all(avail <= size) and np.all(free <= size), (name, labels)
            assert np.all(free >= avail)
        total = s["node_memory_MemTotal_bytes"][0][1]
        available = s["node_memory_MemAvailable_bytes"][0][1]
        assert np.all(available <= total) and np.all(available > 0)
        assert np.all(s["node_memory_MemFree_bytes"][0][1] <= available)
        # Per CPU, every mode's rate lies in [0, 1] and the modes add up to wall-clock time.
        cpu = {(dict(lab)["cpu"], dict(lab)["mode"]): v for lab, v in s["node_cpu_seconds_total"]}
        for c in range(model.spec.ncpu):
            rates = np.array([np.diff(cpu[(str(c), m)]) / 60.0 for m in CPU_MODES])
            assert rates.min() >= -1e-9 and rates.max() <= 1 + 1e-3
            np.testing.assert_allclose(rates.sum(axis=0), 1.0, atol=2e-3)
        for signal, values in model.signals(t, ALL_SIGNAL_NAMES).items():
            assert np.all((values >= 0) & (values <= 1)), (name, signal)


def test_counters_are_exact_integrals_of_the_rates(degrading: Fleet) -> None:
    model = degrading.model("web-01")  # scripted memory leak, with incidents on the cpu channel too
    inc = next(i for i in model.incidents(ANCHOR - 30 * DAY, ANCHOR) if i.kind == "cpu_saturation")
    t = np.linspace(inc.ramp_start - 600.0, inc.end + 600.0, 150_001)
    channels = model._ensure(float(t[-1]))
    for name in ("cpu", "iowait", "network"):
        rate = channels[name].value(t)
        numeric = np.concatenate([[0.0], np.cumsum((rate[1:] + rate[:-1]) / 2 * np.diff(t))])
        exact = channels[name].integral(t) - channels[name].integral(t[:1])
        np.testing.assert_allclose(exact, numeric, atol=1e-3, err_msg=name)


def test_closed_form_building_blocks() -> None:
    t = np.linspace(ANCHOR, ANCHOR + 7200, 72_001)
    q = SinSum.of(0.3, [(0.1, DAY, 0.3), (0.05, 7 * DAY, 1.0), (0.02, 600, 2.0)])
    noise = GridNoise(1234, 0.01)
    ramp = Segment(ANCHOR + 100.5, ANCHOR + 5000.5, 0.2, 1.0, q)
    # (the ramp jumps at both ends, where the trapezoid rule itself is off by ~0.004)
    for value, integral, tol in ((q(t), q.integral(ANCHOR, t), 1e-3), (noise(t), noise.integral(ANCHOR, t), 1e-3),
                                 (ramp.value(t), ramp.integral_to(t), 1e-2)):
        numeric = np.concatenate([[0.0], np.cumsum((value[1:] + value[:-1]) / 2 * np.diff(t))])
        np.testing.assert_allclose(integral, numeric, atol=tol)
    # A whole noise block integrates to zero, wherever the origin is.
    assert abs(float(noise.integral(0.0, 3600.0 * 1000)[0])) < 1e-9
    assert noise(t).max() <= noise.bound


def test_healthy_fleet_never_nears_a_threshold() -> None:
    fleet = Fleet(20, seed=42, scenario="healthy", anchor=ANCHOR)
    t = grid(ANCHOR - 14 * DAY, ANCHOR)
    limits = {"cpu": 0.75, "memory": 0.8, "filesystem": 0.8, "iowait": 0.15, "network": 0.6}
    for name in fleet.names:
        for signal, values in fleet.model(name).signals(t, ALL_SIGNAL_NAMES).items():
            assert values.max() <= limits[signal], (name, signal, values.max())
    assert fleet.incidents(ANCHOR - 30 * DAY, ANCHOR + 30 * DAY) == []


def test_degrading_scripted_incidents_breach_soon_after_the_anchor(degrading: Fleet) -> None:
    records = [r for r in degrading.incidents(ANCHOR - DAY, ANCHOR + DAY) if r.scripted]
    assert len(records) == 5  # a quarter of 20 hosts
    assert "web-01" in {r.instance for r in records}
    for rec in records:
        assert rec.breach_start is not None and rec.breach_end is not None
        assert ANCHOR + 20 * 60 <= rec.breach_start <= ANCHOR + 60 * 60, rec
        assert rec.ramp_start <= ANCHOR - 30 * 60, "the ramp must be visible at the anchor"
        assert rec.breach_end - rec.breach_start >= 20 * 60
        model = degrading.model(rec.instance)
        at = model.signals(np.array([rec.breach_start, rec.breach_start - 60]), [rec.signal])[rec.signal]
        assert at[0] > rec.threshold >= at[1]
        before = model.signals(grid(rec.ramp_start - HOUR, rec.ramp_start), [rec.signal])[rec.signal]
        assert before.max() < rec.threshold
        during = model.signals(grid(rec.breach_start, rec.breach_end - 60), [rec.signal])[rec.signal]
        assert np.mean(during > rec.threshold) > 0.9


def test_degrading_history_holds_many_incidents_of_every_kind(degrading: Fleet) -> None:
    records = degrading.incidents(ANCHOR - 30 * DAY, ANCHOR - DAY)
    per_host = {name: sum(r.instance == name for r in records) for name in degrading.names}
    assert 4 <= np.mean(list(per_host.values())) <= 10, per_host  # one every 3-6 days
    assert {r.kind for r in records} == set(KIND_NAMES)
    for rec in records:
        assert rec.breach_start is not None and rec.breach_end is not None, rec
        assert rec.breach_end - rec.breach_start >= 20 * 60, rec
        assert rec.ramp_start < rec.breach_start < rec.end
    # ... and incidents keep coming after the anchor.
    assert degrading.incidents(ANCHOR + 3 * DAY, ANCHOR + 10 * DAY)


def test_incident_ground_truth_drives_the_active_gauge(degrading: Fleet) -> None:
    rec = next(r for r in degrading.incidents(ANCHOR - DAY, ANCHOR + DAY) if r.scripted)
    model = degrading.model(rec.instance)
    t = np.array([rec.breach_start - 60, rec.breach_start, rec.breach_end - 60, rec.breach_end])
    np.testing.assert_array_equal(model.incident_active(t)[rec.kind], [0, 1, 1, 0])


def test_critical_affects_about_half_the_fleet_early_and_more_later() -> None:
    fleet = Fleet(20, seed=42, scenario="critical", anchor=ANCHOR)
    records = [r for r in fleet.incidents(ANCHOR - DAY, ANCHOR + DAY) if r.scripted]
    early = {r.instance for r in records if ANCHOR + 1200 <= (r.breach_start or 0) <= ANCHOR + 3600}
    late = {r.instance for r in records if ANCHOR + 5400 <= (r.breach_start or 0) <= ANCHOR + 4 * HOUR}
    assert len(early) == 10 and len(late) == 5
    assert not early & late
    for rec in records:
        assert rec.ramp_start <= ANCHOR - 30 * 60 if rec.instance in early else rec.ramp_start < rec.breach_start
        assert rec.breach_end - rec.breach_start >= 20 * 60


def test_unknown_scenario_and_host_count_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown scenario"):
        Fleet(3, scenario="apocalypse", anchor=ANCHOR)
    with pytest.raises(ValueError):
        Fleet(0, anchor=ANCHOR)


def test_package_imports_no_other_component_and_nothing_heavy() -> None:
    code = ("import sys, exporter, exporter.cli, exporter.http, exporter.backfill;"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('forecaster', 'trainer', 'torch', 'pandas')];"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""


def test_led_incidents_are_off_by_default_and_change_nothing_then(monkeypatch: pytest.MonkeyPatch) -> None:
    import exporter.simulation as simulation
    from exporter.config import ExporterSection
    from exporter.incidents import LED_KIND_NAMES

    assert ExporterSection().led_incidents is False
    default = Fleet(8, seed=42, scenario="degrading", anchor=ANCHOR)
    assert default.led is False
    t = grid(ANCHOR - 20 * DAY, ANCHOR + DAY, 997.0)
    before = {h: default.model(h).series(t) for h in ("web-01", "db-02", "batch-07")}
    before_records = [r.to_json() for r in default.incidents(ANCHOR - 20 * DAY, ANCHOR + DAY)]

    def never(*_: object) -> None:
        raise AssertionError("the led schedule was consulted with the option off")

    # The code path with the option off never reaches the led schedule: same series, same records.
    monkeypatch.setattr(simulation, "led_slot_incident", never)
    off = Fleet(8, seed=42, scenario="degrading", anchor=ANCHOR, led=False)
    for h, series in before.items():
        again = off.model(h).series(t)
        assert again.keys() == series.keys()
        for family, values in series.items():
            assert [labels for labels, _ in again[family]] == [labels for labels, _ in values]
            for (_, a), (_, b) in zip(again[family], values, strict=True):
                assert a.tobytes() == b.tobytes(), family
    assert [r.to_json() for r in off.incidents(ANCHOR - 20 * DAY, ANCHOR + DAY)] == before_records
    assert all("leading" not in r for r in before_records)
    kinds = {dict(labels)["kind"] for labels, _ in before["web-01"]["tft_sim_incident_active"]}
    assert kinds == set(KIND_NAMES) and not kinds & set(LED_KIND_NAMES)


def test_led_incidents_are_deterministic_and_iowait_leads_the_cpu_breach() -> None:
    from exporter.cli import _config, build_parser

    assert _config(build_parser("incidents").parse_args(["--led-incidents"])).led_incidents is True
    start, end = ANCHOR - 30 * DAY, ANCHOR
    on = Fleet(12, seed=3, scenario="degrading", anchor=ANCHOR, led=True)
    again = Fleet(12, seed=3, scenario="degrading", anchor=ANCHOR, led=True)
    off = Fleet(12, seed=3, scenario="degrading", anchor=ANCHOR)
    records = on.incidents(start, end)
    assert [r.to_json() for r in records] == [r.to_json() for r in again.incidents(start, end)]
    led = [r for r in records if r.kind == "io_led_cpu"]
    assert len(led) >= 10
    # The scenario's own incidents are untouched; led ones only fill slots it left empty.
    assert [(r.instance, r.kind, r.ramp_start) for r in records if r.kind != "io_led_cpu"] == \
        [(r.instance, r.kind, r.ramp_start) for r in off.incidents(start, end)]
    for rec in led:
        doc = rec.to_json()
        assert doc["signal"] == "cpu" and doc["leading"] == "iowait" and doc["kind"] == "io_led_cpu"
        assert rec.breach_start is not None and rec.breach_end is not None
        assert 90 * 60 <= rec.breach_start - rec.ramp_start <= 130 * 60
        m, m2, base = on.model(rec.instance), again.model(rec.instance), off.model(rec.instance)
        # I/O wait is well above normal for the 60 minutes before the breach, below its own threshold.
        lead = grid(rec.breach_start - 65 * 60, rec.breach_start - 5 * 60)
        a, b, c = m.signals(lead), m2.signals(lead), base.signals(lead)
        for s in a:
            np.testing.assert_array_equal(a[s], b[s])
        assert (a["iowait"] >= 0.12).all() and (a["iowait"] < THRESHOLDS["iowait"]).all()
        assert (a["iowait"] > c["iowait"] + 0.06).all()  # normal is 0.005-0.07
        assert a["cpu"][:30].max() < 0.8  # cpu has not begun its saturation an hour ahead
        assert m.signals(np.array([rec.breach_start]))["cpu"][0] > THRESHOLDS["cpu"]
        active = m.incident_active(np.array([rec.breach_start]))
        assert active["io_led_cpu"][0] == 1.0
        assert len(m.series(np.array([rec.breach_start]))["tft_sim_incident_active"]) == len(KIND_NAMES) + 1
