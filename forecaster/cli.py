"""``tft-forecaster``: scheduled TFT forecasts of every host's signals, re-exported to Prometheus.

Usage::

    tft-forecaster [--config.file FILE] [--web.listen-address 0.0.0.0:8921] [--web.config.file FILE]
                   [--prometheus.url URL] [--model.dir DIR] [--no-model.fast-path]
                   [--shard.count N --shard.index I]
                   [--log.level info] [--log.format logfmt]
                   [--once [--output FILE] | --dry-run]

Without a config file the defaults apply: Prometheus at http://127.0.0.1:9090, the model
shipped in ``<repo>/models``, the four default signals. ``--model.dir`` takes a registry root
or a single model directory. See docs/FORECASTER.md.

Exit statuses:

    0  serving: stopped cleanly; --once: forecasts were published; --dry-run: all checks passed
    1  the listen address is in use, or an unexpected error (logged with its traceback)
    2  bad command line or configuration (one line on stderr)
    3  --once: the cycle ran but nothing could be forecast (no series, all skipped);
       --dry-run: Prometheus answers but no model could be loaded (the service would serve
       the seasonal-naive fallback)
    4  --once / --dry-run: Prometheus unreachable or failing
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from toolkit.cli import EXIT_USAGE, Parser, UsageError, add_config_flag, add_log_flags, add_version_flag

if TYPE_CHECKING:  # the real imports stay inside the functions: torch takes seconds to import
    from forecaster.contract.config import Config
    from forecaster.serving.service import Service
    from toolkit.webconfig import WebConfigFile

EXIT_OK, EXIT_FAIL, EXIT_NOTHING, EXIT_PROMETHEUS = 0, 1, 3, 4
PROG = "tft-forecaster"

log = logging.getLogger("forecaster")


def _parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_version_flag(p)
    add_config_flag(p)
    p.add_argument("--web.listen-address", dest="listen_address", default=None,
                   help="address for /metrics and the API (default 0.0.0.0:8921)")
    p.add_argument("--web.config.file", dest="web_config_file", type=Path, default=None, metavar="FILE",
                   help="TLS and basic auth, in Prometheus exporter-toolkit's web config format "
                        "(docs/OPERATIONS.md)")
    p.add_argument("--prometheus.url", dest="prometheus_url", default=None, help="Prometheus base URL")
    p.add_argument("--model.dir", dest="model_dir", type=Path, default=None,
                   help="model registry root, or one model directory (default: the shipped models/)")
    p.add_argument("--model.fast-path", dest="fast_path", action=argparse.BooleanOptionalAction, default=None,
                   help="serve through the fast TFT forward, each model checked against the library's when "
                        "loaded (default: on, forecaster.fast_path); --no-model.fast-path: the library's forward")
    p.add_argument("--shard.count", dest="shard_count", type=int, default=None, help="replicas splitting the fleet")
    p.add_argument("--shard.index", dest="shard_index", type=int, default=None, help="this replica: 0..count-1")
    add_log_flags(p)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="run one cycle, print a summary, exit")
    mode.add_argument("--dry-run", action="store_true",
                      help="validate the config, reach Prometheus, load the model, exit")
    p.add_argument("--output", type=Path, default=None,
                   help="with --once: also write the cycle's forecasts as JSON (as /api/v1/forecasts)")
    return p


def _config(args: argparse.Namespace) -> Config | None:
    from forecaster.contract.config import ConfigError, load_config

    overrides = {
        "prometheus.url": args.prometheus_url,
        "forecaster.registry_dir": str(args.model_dir) if args.model_dir is not None else None,
        "forecaster.listen_address": args.listen_address,
        "forecaster.fast_path": args.fast_path,
        "forecaster.shard.count": args.shard_count,
        "forecaster.shard.index": args.shard_index,
    }
    try:
        config = load_config(args.config_file, overrides)
        if args.listen_address is not None or not args.once:
            from toolkit.http import parse_listen_address

            parse_listen_address(config.forecaster.listen_address)
    except (ConfigError, ValueError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return None
    return config


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except UsageError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.output is not None and not args.once:
        print(f"{PROG}: --output needs --once", file=sys.stderr)
        return EXIT_USAGE
    config = _config(args)
    if config is None:
        return EXIT_USAGE
    from toolkit.logs import setup_logging

    setup_logging(args.log_level, args.log_format)
    if args.log_level != "debug":  # APScheduler logs every job run at INFO
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
    web = None
    if args.web_config_file is not None:  # checked in every mode: a bad file is a bad configuration
        from toolkit.webconfig import WebConfigError, WebConfigFile

        try:
            web = WebConfigFile(args.web_config_file)
        except WebConfigError as exc:
            print(f"{PROG}: {exc}", file=sys.stderr)
            return EXIT_USAGE
    try:
        if args.dry_run:
            if web is not None:
                print(f"web config: ok ({web.describe()})")
            return dry_run(config)
        if args.once:
            return once(config, args.output)
        return serve(config, web)
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130


def _service(config: Config) -> Service:
    from forecaster.serving.service import Service

    return Service(config)


def dry_run(config: Config) -> int:
    """Config is valid (else we would not be here); Prometheus answers; the model loads."""
    from forecaster.contract.prometheus import PrometheusClient, PrometheusError

    print(f"config: ok ({len(config.signals)} signals, step {config.model.step_seconds}s)")
    with PrometheusClient.from_config(config.prometheus) as client:
        try:
            info = client.check()
        except PrometheusError as exc:
            print(f"prometheus: FAILED: {exc}")
            return EXIT_PROMETHEUS
    print(f"prometheus: ok ({config.prometheus.url}, version {info.get('version', 'unknown')})")
    service = _service(config)
    service.store.refresh()
    models = service.store.current()
    if models.in_fallback:
        print(f"model: NONE LOADED, the service would serve the seasonal-naive fallback: {models.fallback_reason}")
        return EXIT_NOTHING
    for m in models.loaded():
        print(f"model: ok ({m.scope} version {m.version}, trained {m.trained_at or 'unknown'}, {m.path})")
    return EXIT_OK


def once(config: Config, output: Path | None) -> int:
    """One cycle; the summary goes to stdout, the forecasts to ``output`` as JSON."""
    service = _service(config)
    result = service.run_cycle()
    p = service.published
    fs = result.forecasts
    n = len(fs) if fs is not None else 0
    warming = int(fs.warming_up.sum()) if fs is not None else 0
    models = p.models
    print(f"cycle: {'ok' if result.ok else 'FAILED'} at {result.started:.0f}, {result.instances} instances, "
          f"{n} series forecast ({warming} warming up)")
    skipped = {k: v for k, v in sorted(result.skipped.items()) if v}
    if skipped:
        print("skipped: " + ", ".join(f"{k} {v}" for k, v in skipped.items()))
    if models is not None and models.in_fallback:
        print(f"model: FALLBACK (seasonal naive): {models.fallback_reason}")
    elif models is not None:
        for m in models.loaded():
            print(f"model: {m.scope} version {m.version} (trained {m.trained_at or 'unknown'})")
    print("stages: " + ", ".join(f"{k} {v:.2f}s" for k, v in result.stage_seconds.items()))
    for stage, message in result.errors.items():
        print(f"error: {stage}: {message}")
    if output is not None:
        doc = service.forecasts_document()
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        except OSError as exc:
            print(f"{PROG}: cannot write {output}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_FAIL
        print(f"output: {output} ({len(doc['data']['series'])} series)")
    if result.prometheus_failed:
        return EXIT_PROMETHEUS
    return EXIT_OK if n else EXIT_NOTHING


def serve(config: Config, web: WebConfigFile | None = None) -> int:
    """Serve until SIGTERM/SIGINT: HTTP bound first, then the model and the schedule."""
    from forecaster.serving.service import start

    address = config.forecaster.listen_address
    try:
        running = start(config, address=address, web=web)
    except OSError as exc:
        print(f"{PROG}: cannot listen on {address}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAIL
    log.info("listening on %s (version %s; %s); forecasting every %ds from %s", address, running.service.version,
             web.describe() if web is not None else "plain HTTP, no authentication",
             config.forecaster.interval_seconds, config.prometheus.url)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stop.wait(1.0):
        pass
    running.stop()
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
