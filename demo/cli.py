"""``tft-demo``: watch the system predict incidents on a simulated fleet, or plot one host's forecast.

    tft-demo [run] [--hosts 10] [--days 30] [--scenario degrading] [--seed 42] [--scenario.anchor TIME]
                   [--interval 60s] [--for DURATION] [--model.dir DIR] [--work-dir runs/demo]
                   [--prometheus.port P] [--exporter.port P] [--forecaster.port P] [--output FILE]
    tft-demo plot --instance web-01 --signal memory [--out FILE] [--hours 12]
                  [--work-dir runs/demo | --prometheus.url URL]

``run`` backfills DAYS of the fleet into a private Prometheus, starts the simulator, Prometheus
(with the project's recording and alert rules) and the forecaster with the shipped model (or
``--model.dir``), and shows the forecaster's predictions each cycle: a live view on a terminal,
one line per cycle otherwise. The scenario's scripted incidents breach 35-60 minutes after the
first forecast. Ctrl-C (or SIGTERM) stops everything the demo started, then prints, for each
incident, the first warning and its lead time.

``--for DURATION`` (e.g. ``10m``) forecasts for that long after start-up, prints the summary and
exits 0 only if every incident the run could judge was predicted at least ``--min-lead`` (30 min)
ahead: 3 if one was not.

Exit statuses: 0 success; 1 the pipeline failed (the line says which part, its log is in the
work dir); 2 bad command line; 3 ``--for``: an incident was not predicted in time; 130 stopped
by Ctrl-C during ``--for``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from toolkit.cli import Parser, UsageError, add_log_flags, add_version_flag

if TYPE_CHECKING:  # the real imports stay inside the functions, so that a usage error costs nothing
    from demo.pipeline import DemoSettings, Pipeline
    from demo.report import Tracker

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_MISSED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
PROG = "tft-demo"
MAX_HOSTS = 2000


def _run_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_version_flag(p)
    p.add_argument("--hosts", type=int, default=10, help="simulated hosts (default: 10)")
    p.add_argument("--days", type=float, default=30.0, help="days of history to backfill (default: 30)")
    p.add_argument("--scenario", default="degrading", help="healthy, degrading (default) or critical")
    p.add_argument("--seed", type=int, default=42, help="seed of the simulation (default: 42)")
    p.add_argument("--scenario.anchor", dest="anchor", metavar="TIME",
                   help="anchor of the incident schedule, ISO 8601 or unix seconds (default: a few minutes "
                        "after the first forecast, so scripted breaches come 25-60 min into the demo)")
    p.add_argument("--interval", default="60s", help="forecast interval (default: 60s; at least 5s)")
    p.add_argument("--scrape-interval", default="15s", help="Prometheus scrape interval (default: 15s)")
    p.add_argument("--for", dest="duration", metavar="DURATION",
                   help="run non-interactively for this long after start-up (e.g. 10m), print the summary, exit")
    p.add_argument("--min-lead", default="30m", help="lead time a warning needs to pass (default: 30m)")
    p.add_argument("--model.dir", dest="model_dir", type=Path, metavar="DIR",
                   help="model registry or model directory (default: the shipped models/)")
    p.add_argument("--work-dir", type=Path, default=Path("runs/demo"),
                   help="logs, Prometheus data and summaries (default: runs/demo; replaced at each run)")
    for name, port in (("prometheus", 9090), ("exporter", 8920), ("forecaster", 8921)):
        p.add_argument(f"--{name}.port", dest=f"{name}_port", type=int, metavar="PORT",
                       help=f"port on 127.0.0.1; 0: any free port (default: {port} if free, else any)")
    p.add_argument("--output", type=Path, metavar="FILE", help="also write the summary as JSON")
    p.add_argument("--no-view", action="store_true", help="one line per cycle even on a terminal")
    add_log_flags(p, default_level="warn")
    return p


def _plot_parser() -> argparse.ArgumentParser:
    p = Parser(prog=f"{PROG} plot", description="Render a host's forecast against what happened as a PNG.")
    p.add_argument("--instance", required=True, help="host, e.g. web-01")
    p.add_argument("--signal", required=True, help="cpu, memory, filesystem or iowait")
    p.add_argument("--out", type=Path, default=None, help="PNG file (default: <instance>-<signal>.png)")
    p.add_argument("--hours", type=float, default=12.0, help="hours of history to show (default: 12)")
    p.add_argument("--work-dir", type=Path, default=Path("runs/demo"), help="the demo's work dir")
    p.add_argument("--prometheus.url", dest="prometheus_url", help="a running Prometheus (default: the demo's)")
    p.add_argument("--forecaster.url", dest="forecaster_url", help="a running forecaster (default: the demo's)")
    return p


def _duration(flag: str, text: str, minimum: float = 0.0) -> float:
    from exporter.config import parse_duration

    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"{flag}: {exc}") from None
    if seconds < minimum:
        raise UsageError(f"{flag} must be at least {minimum:g}s, got {text}")
    return seconds


def settings_from_args(args: argparse.Namespace) -> DemoSettings:
    """Validated :class:`~demo.pipeline.DemoSettings`; raises :class:`UsageError` with one line."""
    from demo.pipeline import DemoSettings
    from exporter.config import parse_time
    from exporter.incidents import SCENARIOS

    if not 1 <= args.hosts <= MAX_HOSTS:
        raise UsageError(f"--hosts must be between 1 and {MAX_HOSTS}, got {args.hosts}")
    if not 0 < args.days <= 365:
        raise UsageError(f"--days must be in (0, 365], got {args.days:g}")
    if args.scenario not in SCENARIOS:
        raise UsageError(f"--scenario: unknown scenario {args.scenario!r} (choose one of {', '.join(SCENARIOS)})")
    interval = _duration("--interval", args.interval, 5)
    scrape = _duration("--scrape-interval", args.scrape_interval, 1)
    duration = _duration("--for", args.duration) if args.duration is not None else None
    _duration("--min-lead", args.min_lead)
    anchor = None
    if args.anchor is not None:
        try:
            anchor = parse_time(args.anchor)
        except ValueError as exc:
            raise UsageError(f"--scenario.anchor: {exc}") from None
    if args.model_dir is not None and not args.model_dir.exists():
        raise UsageError(f"--model.dir {args.model_dir} does not exist")
    for name in ("prometheus", "exporter", "forecaster"):
        port = getattr(args, f"{name}_port")
        if port is not None and not 0 <= port <= 65535:
            raise UsageError(f"--{name}.port must be between 0 (any free port) and 65535, got {port}")
    return DemoSettings(hosts=args.hosts, days=args.days, seed=args.seed, scenario=args.scenario, anchor=anchor,
                        interval=round(interval), scrape_interval=max(1, round(scrape)), duration=duration,
                        model_dir=args.model_dir, work_dir=args.work_dir, prometheus_port=args.prometheus_port,
                        exporter_port=args.exporter_port, forecaster_port=args.forecaster_port)


def _say(stream: TextIO) -> Callable[[str], None]:
    def say(line: str) -> None:
        stream.write(f"[demo] {line}\n")
        stream.flush()
    return say


def run(settings: DemoSettings, *, out: TextIO = sys.stdout, view: bool | None = None, min_lead: float = 1800.0,
        output: Path | None = None) -> int:
    """Run the demo (the body of ``tft-demo run``); returns the exit status."""
    from demo.pipeline import DemoError, Interrupted, Pipeline
    from demo.report import Tracker, clock, duration, summary_lines

    say = _say(out)
    live = (out.isatty() if view is None else view) and settings.duration is None
    pipeline = Pipeline(settings, say=say)
    tracker = Tracker([], min_lead=min_lead)
    code = EXIT_OK
    interrupted = False
    try:
        with pipeline:
            say(_grafana_hint())
            pipeline.start()
            tracker.cutoffs = pipeline.cutoffs()
            begin = time.time()
            horizon_end = begin + (settings.duration or 0) + 24 * 3600
            tracker.incidents = pipeline.incidents(begin - 3600, horizon_end)
            _write_incidents(pipeline, tracker)
            for inc in tracker.incidents:
                if inc.scripted:
                    say(f"scripted incident: {inc.name} breaches at {clock(inc.breach_start)} UTC "
                        f"(in {duration(inc.breach_start - begin)})")
            if tracker.cutoffs:
                say("a warning: P(breach) at or above the model's cut-offs ("
                    + ", ".join(f"{k} {v:.2f}" for k, v in tracker.cutoffs.items())
                    + ") or a p50/p90 path crossing the threshold within 8h")
            say(f"Prometheus {pipeline.url('prometheus')}  forecaster {pipeline.url('forecaster')}/api/v1/breaches  "
                f"simulator {pipeline.url('exporter')}/incidents")
            if settings.duration is not None:
                say(f"forecasting for {duration(settings.duration)} ...")
            _watch(pipeline, tracker, settings, out, live, begin)
    except (KeyboardInterrupt, Interrupted):
        interrupted = True
        code = EXIT_INTERRUPTED if settings.duration is not None else EXIT_OK
    except DemoError as exc:
        out.flush()
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        code = EXIT_FAIL
    if live:
        out.write("\n")
    if pipeline.started_at and tracker.cycles:
        say("stopped everything the demo started" + (" (interrupted)." if interrupted else "."))
        out.write("\nSummary\n" + "\n".join(summary_lines(tracker, now=time.time())) + "\n")
        if code == EXIT_OK and settings.duration is not None and not tracker.passed():
            code = EXIT_MISSED
    doc = summary_document(pipeline, tracker, code)
    for path in ([pipeline.work / "summary.json"] if pipeline.started_at and pipeline.work.exists() else []) + (
            [output] if output else []):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        except OSError as exc:
            print(f"{PROG}: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
    out.flush()
    return code


def _grafana_hint() -> str:
    if shutil.which("docker"):
        return ("Grafana: Docker is available, so `docker compose up -d` in the repository starts the full stack "
                "(its own Prometheus, simulator and forecaster) with the dashboards on http://localhost:3000")
    return "Grafana dashboards need Docker: `docker compose up -d` (docs/OPERATIONS.md); this demo runs without it"


def _write_incidents(pipeline: Pipeline, tracker: Tracker) -> None:
    doc = [{"instance": i.instance, "signal": i.signal, "kind": i.kind, "scripted": i.scripted,
            "ramp_start": i.ramp_start, "breach_start": i.breach_start, "breach_end": i.breach_end}
           for i in tracker.incidents]
    (pipeline.work / "incidents.json").write_text(json.dumps({"anchor": pipeline.anchor, "incidents": doc},
                                                             indent=1) + "\n")


def _watch(pipeline: Pipeline, tracker: Tracker, settings: DemoSettings, out: TextIO, live: bool,
           begin: float) -> None:
    """Follow the forecaster's cycles until ``--for`` runs out (or forever, until Ctrl-C)."""
    from demo.pipeline import raise_if_stop_requested
    from demo.report import clock, parse_iso
    from demo.view import CLEAR, Frame, cycle_line, render

    deadline = time.monotonic() + settings.duration if settings.duration is not None else None
    seen_cycles = 0
    seen_made_at = 0.0
    frame: Frame | None = None
    last_draw = 0.0
    last_refresh = time.time()
    cycles = 0
    while True:
        raise_if_stop_requested()
        pipeline.check_children()
        status = pipeline.status()
        cycle = status.get("last_cycle") or {}
        if status.get("cycles", 0) > seen_cycles:
            seen_cycles = status.get("cycles", 0)
            series = pipeline.forecasts()
            made_at = max((parse_iso(s.get("made_at")) or 0.0 for s in series), default=0.0)
            if cycle.get("errors") and not live:
                out.write(f"{clock(time.time())} cycle problem: {'; '.join(cycle['errors'].values())}\n")
            if made_at > seen_made_at:  # a failed cycle keeps serving the previous forecasts
                seen_made_at = made_at
                cycles += 1
                breaches = pipeline.breaches()
                predictions = tracker.observe(series)
                (pipeline.work / "forecasts.json").write_text(json.dumps({"series": series, "breaches": breaches})
                                                              + "\n")
                pipeline.touch()
                frame = Frame(now=time.time(), cycle=cycles, interval=settings.interval, hosts=settings.hosts,
                              scenario=settings.scenario, model=status.get("model") or {}, predictions=predictions,
                              thresholds={(s["instance"], s["signal"]): s["threshold"] for s in series
                                          if s.get("threshold") is not None},
                              current=pipeline.current_values(), tracker=tracker, alerts=pipeline.alerts_firing(),
                              urls=_urls(pipeline), breaches=len(breaches))
                if not live:
                    out.write(cycle_line(frame) + "\n")
                last_draw = 0.0
        if live and frame is not None and time.monotonic() - last_draw >= 5.0:
            frame.now = time.time()
            size = shutil.get_terminal_size((120, 40))
            out.write(CLEAR + render(frame, size.columns, size.lines, color=True) + "\n")
            out.flush()
            last_draw = time.monotonic()
        out.flush()
        if time.time() - last_refresh > 3600:  # long runs: ground truth for the next day
            last_refresh = time.time()
            known = {i.key for i in tracker.incidents}
            tracker.incidents += [i for i in pipeline.incidents(time.time() - 3600, time.time() + 24 * 3600)
                                  if i.key not in known]
            _write_incidents(pipeline, tracker)
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if frame is not None:
                frame.remaining = left
            time.sleep(min(1.0, left))
        else:
            time.sleep(1.0)


def _urls(pipeline: Pipeline) -> dict[str, str]:
    urls = {name: pipeline.url(name) for name in ("prometheus", "forecaster", "exporter")}
    if shutil.which("docker"):
        urls["grafana"] = "http://localhost:3000 (after `docker compose up -d`)"
    return urls


def summary_document(pipeline: Pipeline, tracker: Tracker, code: int) -> dict[str, Any]:
    """The machine-readable summary (``--output`` and ``<work dir>/summary.json``)."""
    from dataclasses import asdict

    return {
        "exit_code": code, "passed": tracker.passed(), "anchor": pipeline.anchor,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(pipeline.settings).items()},
        "urls": {name: pipeline.url(name) for name in pipeline.ports}, "pids": dict(pipeline.pids),
        "startup_seconds": asdict(pipeline.timings), "model": pipeline.model, "cutoffs": tracker.cutoffs,
        "min_lead_seconds": tracker.min_lead, "cycles": list(tracker.cycles),
        "incidents": [o.to_json() for o in tracker.outcomes()],
        "false_alarms": {f"{i}/{s}": n for (i, s), n in tracker.false_alarms.items()},
    }


def main(argv: list[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    command = "run"
    if args_list and args_list[0] in ("run", "plot"):
        command = args_list.pop(0)
    try:
        if command == "plot":
            args = _plot_parser().parse_args(args_list)
            from demo.plot import PlotError, plot

            try:
                path = plot(args.instance, args.signal, args.out, work_dir=args.work_dir,
                            prometheus_url=args.prometheus_url, forecaster_url=args.forecaster_url, hours=args.hours)
            except PlotError as exc:
                print(f"{PROG} plot: error: {exc}", file=sys.stderr)
                return EXIT_FAIL
            print(f"wrote {path}")
            return EXIT_OK
        args = _run_parser().parse_args(args_list)
        settings = settings_from_args(args)
        min_lead = _duration("--min-lead", args.min_lead)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    from demo.pipeline import install_signal_handlers
    from toolkit.logs import setup_logging

    setup_logging(args.log_level, args.log_format)

    install_signal_handlers()
    return run(settings, view=False if args.no_view else None, min_lead=min_lead, output=args.output)
