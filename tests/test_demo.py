"""tft-demo: the whole pipeline headless (3 hosts, a tiny model, 2 days of history), clean shutdown, the
PNG, the incident judgement, and one-line argument errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from demo.cli import main
from demo.report import FAIL, NOT_YET_DUE, PASS, TOO_EARLY, Incident, Tracker, summary_lines
from tests.forecaster_harness import shared_tiny_registry
from tests.promserver import prometheus_binary

REPO = Path(__file__).resolve().parent.parent


def _needs_prometheus() -> None:
    if prometheus_binary() is None:
        if os.environ.get("CI"):
            pytest.fail("prometheus is not installed but CI is set")
        pytest.skip("prometheus is not installed (apt-get install prometheus)")


def _demo_argv(registry: Path, work: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "demo", "--hosts", "3", "--days", "2", "--interval", "5s",
            "--scrape-interval", "2s", "--model.dir", str(registry), "--work-dir", str(work),
            "--prometheus.port", "0", "--exporter.port", "0", "--forecaster.port", "0", *extra]


def _processes_using(path: Path) -> list[str]:
    """Command lines of live processes that mention ``path`` (every child the demo starts does)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(path) in cmdline:
            found.append(f"{entry.name}: {cmdline[:200]}")
    return found


def _assert_gone(pids: dict[str, int], work: Path) -> None:
    for name, pid in pids.items():
        stat = Path(f"/proc/{pid}/stat")
        if stat.exists():  # a reused pid would not mention the work dir; a zombie would be state Z
            state = stat.read_text().rsplit(")", 1)[-1].split()[0]
            assert state == "Z" or str(work) not in Path(f"/proc/{pid}/cmdline").read_text(errors="replace"), name
    assert _processes_using(work) == []


@pytest.mark.integration
@pytest.mark.slow
def test_headless_run_forecasts_predicts_the_scripted_incident_and_leaves_nothing(
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    _needs_prometheus()
    registry = shared_tiny_registry(tmp_path_factory)
    work = tmp_path / "demo"
    summary_path = tmp_path / "summary.json"
    proc = subprocess.run(_demo_argv(registry, work, "--for", "15s", "--output", str(summary_path)), cwd=REPO,
                          capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "RESULT: PASS" in proc.stdout and "ready in" in proc.stdout

    summary = json.loads(summary_path.read_text())
    assert set(summary["pids"]) == {"exporter", "backfill", "prometheus", "forecaster"}
    _assert_gone(summary["pids"], work)
    assert json.loads((work / "state.json").read_text())["running"] is False
    assert len(summary["cycles"]) >= 2 and summary["model"]["source"] == "model"

    # Forecasts for every series, all from the trained model (not the fallback) ...
    last = json.loads((work / "forecasts.json").read_text())
    assert len(last["series"]) == 3 * 4
    assert {s["model"] for s in last["series"]} == {"global"}
    # ... and the scripted incident (web-01's memory leak, breaching 35-60 min after the first forecast)
    # is in the forecaster's own breach list and was warned of well ahead of its breach.
    assert any(b["instance"] == "web-01" and b["signal"] == "memory" and b["model"] == "global"
               for b in last["breaches"])
    (incident,) = [i for i in summary["incidents"] if i["scripted"]]
    assert (incident["instance"], incident["signal"]) == ("web-01", "memory")
    assert incident["first_warning"] is not None and incident["lead_seconds"] >= 1800
    assert incident["breach_start"] - summary["cycles"][0] >= 1800, "scripted breach must leave room to warn"

    png = tmp_path / "web-01-memory.png"
    assert main(["plot", "--instance", "web-01", "--signal", "memory", "--work-dir", str(work), "--out", str(png),
                 "--hours", "6"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    assert _processes_using(work) == [], "the plot's temporary Prometheus must be stopped"


@pytest.mark.integration
@pytest.mark.slow
def test_ctrl_c_stops_everything_the_demo_started(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    _needs_prometheus()
    registry = shared_tiny_registry(tmp_path_factory)
    work = tmp_path / "demo"
    proc = subprocess.Popen(_demo_argv(registry, work), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        deadline = time.monotonic() + 180
        while not (work / "forecasts.json").exists():  # the demo has shown one cycle
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "no cycle within 180s"
            time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out[-3000:]
    assert "stopped everything the demo started (interrupted)" in out
    pids = json.loads((work / "summary.json").read_text())["pids"]
    assert set(pids) == {"exporter", "backfill", "prometheus", "forecaster"}
    _assert_gone(pids, work)


_LOST_CTRL_C = """
import os, signal
from demo.pipeline import Interrupted, install_signal_handlers, raise_if_stop_requested

install_signal_handlers()


class Finalized:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)  # the handler's KeyboardInterrupt is raised in here, and swallowed
        sum(range(1000))


Finalized()
print("still running")
try:
    raise_if_stop_requested()
except Interrupted as exc:
    print("stopped:", exc)
"""


def test_a_ctrl_c_swallowed_by_a_finalizer_still_stops_the_demo() -> None:
    """The handler's exception is lost when the signal lands in a finalizer (Python prints "Exception
    ignored" and goes on); the flag it set is what the watch loop acts on."""
    done = subprocess.run([sys.executable, "-c", _LOST_CTRL_C], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert "Exception ignored" in done.stderr and "KeyboardInterrupt" in done.stderr
    assert done.stdout.splitlines() == ["still running", "stopped: SIGINT"]


@pytest.mark.parametrize(("argv", "message"), [
    (["--for", "banana"], "--for: invalid duration 'banana'"),
    (["--hosts", "-3"], "--hosts must be between 1 and"),
    (["--hosts", "many"], "argument --hosts: invalid int value: 'many'"),
    (["--scenario", "apocalypse"], "--scenario: unknown scenario 'apocalypse'"),
    (["--interval", "1s"], "--interval must be at least 5s"),
    (["--days", "0"], "--days must be in (0, 365]"),
    (["--model.dir", "/nonexistent/models"], "--model.dir /nonexistent/models does not exist"),
    (["--prometheus.port", "70000"], "--prometheus.port must be between 0"),
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["plot", "--signal", "memory"], "the following arguments are required: --instance"),
])
def test_argument_errors_are_one_line_and_status_2(argv: list[str], message: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("tft-demo") and message in err, err


def test_plot_without_demo_data_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plot", "--instance", "web-01", "--signal", "memory", "--work-dir", str(tmp_path)]) == 1
    assert "no demo data in" in capsys.readouterr().err


def _series(instance: str, signal: str, made_at: float, eta50: float | None = None, eta90: float | None = None,
            p1h: float = 0.0) -> dict:
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(made_at))
    return {"instance": instance, "signal": signal, "made_at": iso, "model": "global", "threshold": 0.9,
            "breach_eta_seconds": {"p50": eta50, "p90": eta90},
            "breach_probability": {"30m": 0.0, "1h": p1h, "2h": 0.0, "4h": 0.0, "8h": 0.0}}


def test_tracker_judges_lead_times_honestly() -> None:
    t0 = 1_750_000_000.0
    early = Incident("web-01", "memory", "memory_leak", True, t0 + 3000, t0 + 4000, t0 - 9000)   # warned in time
    late = Incident("db-02", "cpu", "cpu_saturation", True, t0 + 2100, t0 + 3000, t0 - 3600)     # warned too late
    close = Incident("web-05", "memory", "memory_leak", True, t0 + 1200, None, t0 - 9000)        # deadline before start
    later = Incident("cache-04", "memory", "memory_leak", True, t0 + 9000, None, t0 - 3600)      # after the run
    tracker = Tracker([early, late, close, later], cutoffs={"1h": 0.5})
    for k in range(0, 11):  # ten minutes of 60 s cycles
        t = t0 + 60 * k
        tracker.observe([
            _series("web-01", "memory", t, eta90=3000 - 60 * k),           # p90 path warns from the first cycle
            _series("db-02", "cpu", t, p1h=0.7 if k >= 8 else 0.1),        # warns at t0+480, after its deadline
            _series("web-05", "memory", t),
            _series("cache-04", "memory", t),
            _series("batch-03", "cpu", t, eta50=7200),                      # no incident ahead: a false alarm
        ])
    verdicts = {o.incident.instance: o for o in tracker.outcomes()}
    assert verdicts["web-01"].verdict == PASS and verdicts["web-01"].lead == 3000
    assert verdicts["db-02"].verdict == FAIL and verdicts["db-02"].lead == 2100 - 480
    assert verdicts["web-05"].verdict == TOO_EARLY
    assert verdicts["cache-04"].verdict == NOT_YET_DUE
    assert not tracker.passed() and tracker.false_alarms == {("batch-03", "cpu"): 11}
    text = "\n".join(summary_lines(tracker))
    assert "RESULT: FAIL - 1 of 2 judged incidents" in text and "first warning" in text
    assert verdicts["web-01"].first is not None and verdicts["web-01"].first.breach_path == "p90"


def test_live_view_ranks_warned_series_first_and_names_the_incident() -> None:
    from demo.view import Frame, cycle_line, render

    t0 = 1_750_000_000.0
    incident = Incident("batch-07", "filesystem", "disk_fill", True, t0 + 2400, t0 + 4000, t0 - 20000)
    tracker = Tracker([incident], cutoffs={"30m": 0.15, "8h": 0.1})
    quiet = _series("db-02", "cpu", t0)
    warned = _series("batch-07", "filesystem", t0)
    warned["breach_probability"]["30m"] = 0.2
    predictions = tracker.observe([quiet, warned])
    frame = Frame(now=t0 + 5, cycle=1, interval=60, hosts=10, scenario="degrading",
                  model={"source": "model", "scope": "global", "version": "v1"}, predictions=predictions,
                  thresholds={("batch-07", "filesystem"): 0.9, ("db-02", "cpu"): 0.9},
                  current={("batch-07", "filesystem"): 0.87}, tracker=tracker,
                  urls={"prometheus": "http://127.0.0.1:9090"})
    lines = render(frame, width=160, height=40).splitlines()
    rows = [line for line in lines if line.startswith(("batch-07", "db-02"))]
    assert rows[0].startswith("batch-07") and "P(30m) 0.20>=0.15" in rows[0] and "disk_fill at" in rows[0]
    assert "by " in rows[0] and "0.87" in rows[0]
    assert any("first warning" in line and "40m ahead" in line for line in lines)
    assert "\x1b[" not in "\n".join(lines), "no colour unless asked"
    assert "1 warning(s): batch-07/filesystem" in cycle_line(frame)
