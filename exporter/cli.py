"""``tft-exporter``: serve the simulated fleet, backfill its history, or dump ground truth.

    tft-exporter [serve] [--config.file FILE] [--web.listen-address 0.0.0.0:8920] [--hosts N]
                 [--scenario healthy|degrading|critical] [--seed K] [--scenario.anchor T]
                 [--web.config.file FILE]
    tft-exporter backfill --days D --out DIR [--interval 60s] [--parquet FILE] [--no-blocks] ...
    tft-exporter incidents [--from T] [--to T] [--out FILE] ...
    tft-exporter history --out FILE.parquet [--days D] ...   (signals every 5 min + ground truth)

Flags override the ``exporter:`` section of ``--config.file``. Every usage or config problem
ends with one line on stderr and exit status 2; a runtime failure (port in use, promtool
error) with one line and status 1. Logging is configured here and nowhere else, by
:func:`toolkit.logs.setup_logging` like every other command.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from exporter.config import ConfigError, ExporterSection, load_exporter_config, parse_duration, parse_time
from toolkit.cli import EXIT_USAGE, Parser, UsageError, add_config_flag, add_log_flags, add_version_flag
from toolkit.logs import setup_logging

if TYPE_CHECKING:
    from exporter.simulation import Fleet

logger = logging.getLogger("exporter.cli")

PROG = "tft-exporter"


def _common(parser: argparse.ArgumentParser) -> None:
    add_config_flag(parser, help="YAML config; only its 'exporter:' section is read")
    add_log_flags(parser)
    parser.add_argument("--hosts", type=int, help="number of simulated hosts (default: 20)")
    parser.add_argument("--scenario", help="healthy, degrading (default) or critical")
    parser.add_argument("--seed", type=int, help="random seed of the simulation (default: 42)")
    parser.add_argument("--scenario.anchor", "--anchor", dest="anchor", metavar="TIME",
                        help="time the incident schedule is built around, ISO 8601 or unix seconds "
                             "(default: start time rounded down to the minute)")
    parser.add_argument("--job", help="job label of backfilled series; must match the scrape job (default: node)")
    parser.add_argument("--scheduled-jobs", dest="scheduled_jobs", action="store_true", default=None,
                        help="add the scheduled jobs (a nightly backup, a weekly batch; docs/EXPORTER.md)")
    parser.add_argument("--led-incidents", dest="led_incidents", action="store_true", default=None,
                        help="add led incidents (io_led_cpu: I/O wait climbs 60-90 min before a CPU breach; "
                             "docs/EXPORTER.md)")


def build_parser(command: str) -> argparse.ArgumentParser:
    """The parser of one subcommand (``serve`` is the default)."""
    parser = Parser(prog=f"{PROG} {command}" if command != "serve" else PROG, description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_version_flag(parser)
    _common(parser)
    if command == "serve":
        parser.add_argument("--web.listen-address", dest="listen_address", metavar="ADDR",
                            help="address to listen on (default: 0.0.0.0:8920)")
        parser.add_argument("--web.config.file", dest="web_config_file", type=Path, metavar="FILE",
                            help="TLS and basic auth, in Prometheus exporter-toolkit's web config format "
                                 "(docs/OPERATIONS.md)")
    elif command == "backfill":
        parser.add_argument("--days", type=float, default=30.0, help="days of history (default: 30)")
        parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output directory")
        parser.add_argument("--interval", default="60s", help="sample interval (default: 60s)")
        parser.add_argument("--parquet", type=Path, metavar="FILE", help="also write the signals as Parquet")
        parser.add_argument("--no-blocks", action="store_true", help="write the text only, do not run promtool")
        parser.add_argument("--series", default="signals", choices=("signals", "all"),
                            help="'signals' (default): what the default signals read; 'all': every family")
        parser.add_argument("--jobs", type=int, help="parallel promtool processes (default: CPU count, max 8)")
        parser.add_argument("--keep-text", action="store_true", help="keep the OpenMetrics files")
        parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                            help="a progress line with the total and the time left on stderr "
                                 "(default: when stderr is a terminal; logs only otherwise)")
    elif command == "history":
        parser.add_argument("--days", type=float, default=30.0, help="days of history (default: 30)")
        parser.add_argument("--out", required=True, type=Path, metavar="FILE",
                            help="Parquet file of the signals every 5 minutes (what tft-trainer train --parquet "
                                 "and tft-trainer corpus --fleet read); FILE-stem.incidents.json beside it")
    elif command == "incidents":
        parser.add_argument("--from", dest="start", metavar="TIME", help="default: anchor - 1 day")
        parser.add_argument("--to", dest="end", metavar="TIME", help="default: anchor + 1 day")
        parser.add_argument("--out", default="-", metavar="FILE", help="JSON file (default: stdout)")
    return parser


def _config(args: argparse.Namespace, **extra: Any) -> ExporterSection:
    overrides = {"hosts": args.hosts, "scenario": args.scenario, "seed": args.seed, "anchor": args.anchor,
                 "job": args.job, "scheduled_jobs": args.scheduled_jobs,
                 "led_incidents": args.led_incidents, **extra}
    return load_exporter_config(args.config_file, overrides)


def _fleet(cfg: ExporterSection, now: float) -> Fleet:
    from exporter.incidents import iso
    from exporter.simulation import Fleet

    anchor = cfg.anchor_time(now)
    logger.info("scenario %s, seed %d, %d hosts, anchor %s (%d)", cfg.scenario, cfg.seed, cfg.hosts, iso(anchor),
                anchor)
    return Fleet(cfg.hosts, seed=cfg.seed, scenario=cfg.scenario, anchor=anchor, jobs=cfg.scheduled_jobs,
                 led=cfg.led_incidents)


def cmd_serve(args: argparse.Namespace) -> int:
    from exporter.http import start_server, stop_server

    cfg = _config(args, listen_address=args.listen_address)
    web = None
    if args.web_config_file is not None:
        from toolkit.webconfig import WebConfigError, WebConfigFile

        try:
            web = WebConfigFile(args.web_config_file)
        except WebConfigError as exc:
            raise UsageError(str(exc)) from None
    fleet = _fleet(cfg, time.time())
    try:
        server, thread, _ = start_server(fleet, cfg.listen_address, web=web)
    except OSError as exc:
        print(f"{PROG}: error: cannot listen on {cfg.listen_address}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    stopping = threading.Event()

    def stop(signum: int, _frame: FrameType | None) -> None:
        logger.info("received %s, shutting down", signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    logger.info("listening on %s (/probe?target=HOST, /sd, /metrics, /incidents; %s)", cfg.listen_address,
                web.describe() if web is not None else "plain HTTP, no authentication")
    try:
        while not stopping.wait(1.0):
            pass
    finally:
        stop_server(server, thread)
    return 0


def cmd_backfill(args: argparse.Namespace) -> int:
    from exporter.backfill import backfill

    cfg = _config(args)
    try:
        interval = parse_duration(args.interval)
    except ValueError as exc:
        raise UsageError(f"--interval: {exc}") from None
    if not 0 < args.days <= 365:
        raise UsageError(f"--days must be in (0, 365], got {args.days:g}")
    if args.jobs is not None and args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    started = time.monotonic()
    result = backfill(_fleet(cfg, time.time()), days=args.days, out_dir=args.out, interval=interval,
                      parquet=args.parquet, blocks=not args.no_blocks, job=cfg.job, series=args.series,
                      jobs=args.jobs, keep_text=args.keep_text, progress=sys.stderr if progress else None)
    print(f"{result.samples} samples of {result.hosts} hosts in {time.monotonic() - started:.1f}s")
    if result.blocks_dir is not None:
        print(f"blocks: {result.blocks_dir} (copy the block directories into Prometheus's --storage.tsdb.path; "
              f"run it with --storage.tsdb.retention.time longer than {args.days:g}d)")
    else:
        print("to create the blocks, run:")
        for command in result.commands:
            print("  " + shlex.join(command))
    print(f"incidents: {result.incidents_path}")
    if result.parquet_path is not None:
        print(f"parquet: {result.parquet_path}")
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    """The fleet's signal history without the OpenMetrics text or blocks of ``backfill``: a second per fleet."""
    from exporter.backfill import MAX_DAYS, time_grid, write_history

    if args.out.suffix != ".parquet":
        raise UsageError(f"--out {args.out}: the history is a .parquet file")
    if not 0 < args.days <= MAX_DAYS:
        raise UsageError(f"--days must be in (0, {MAX_DAYS:g}], got {args.days:g}")
    fleet = _fleet(_config(args), time.time())
    times = time_grid(args.days, 60.0, fleet.anchor, time.time())
    path = write_history(fleet, float(times[0]), float(times[-1]), args.out)
    print(f"history of {len(fleet)} hosts ({fleet.scenario}, seed {fleet.seed}), {args.days:g} days: {path}")
    return 0


def cmd_incidents(args: argparse.Namespace) -> int:
    from exporter.incidents import incidents_document, write_incidents

    cfg = _config(args)
    fleet = _fleet(cfg, time.time())
    try:
        start = parse_time(args.start) if args.start else fleet.anchor - 86400.0
        end = parse_time(args.end) if args.end else fleet.anchor + 86400.0
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if end < start:
        raise UsageError("--to is before --from")
    records = fleet.incidents(start, end)
    document = incidents_document(records, seed=fleet.seed, scenario=fleet.scenario, anchor=fleet.anchor,
                                  start=start, end=end, hosts=fleet.names, jobs=fleet.job_runs(start, end))
    if args.out == "-":
        json.dump(document, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        write_incidents(Path(args.out), document)
        logger.info("%d incidents written to %s", len(records), args.out)
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "serve": cmd_serve, "backfill": cmd_backfill, "incidents": cmd_incidents, "history": cmd_history,
}


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    command = args_list.pop(0) if args_list and args_list[0] in COMMANDS else "serve"
    try:
        args = build_parser(command).parse_args(args_list)
        setup_logging(args.log_level, args.log_format)
        return COMMANDS[command](args)
    except (UsageError, ConfigError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # the CLI's promise: one line, no traceback
        from exporter.backfill import BackfillError

        if isinstance(exc, BackfillError):
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            return 1
        logger.debug("unexpected error", exc_info=True)
        print(f"{PROG}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
