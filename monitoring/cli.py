"""Generate the Prometheus rules, the Grafana-managed alert rules and the Grafana dashboards.

Every selector, cut-off and duration lives in ``monitoring.settings.SETTINGS``; the signal
recording rules come from the forecaster's signal definitions (the built-in ones, or those of
``--config.file``), so the "actual" that forecasts are scored against is exactly what the
forecaster forecasts.

Usage::

    tft-monitoring                           # rewrite the generated files (or: python3 -m monitoring)
    tft-monitoring --check                   # exit 1 if a committed file is stale (CI)
    tft-monitoring --config.file my.yml      # signals (and prometheus.cluster_labels) from your config
    tft-monitoring --prometheus.cluster-labels cluster   # hosts named by instance and cluster
    tft-monitoring --grafana.url https://grafana.example.com --grafana.datasource-uid my-prom \
        --runbook.base-url https://git.example.com/ops/tft-monitor/blob/main/docs/runbooks.md

The deployment flags (``--grafana.url``, ``--grafana.datasource-uid``, ``--kubernetes.datasource-uid``,
``--runbook.base-url``, ``--prometheus.cluster-labels``) override the defaults in
``monitoring.settings.SETTINGS`` for this run; give the same ones to ``--check``. The cluster labels
(comma-separated) are the forecaster's ``prometheus.cluster_labels``: without a flag they are taken from
``--config.file``; the built-in signals then aggregate by them too.

Exit statuses: 0 up to date (or written), 1 stale files under ``--check``, 2 a bad config file
or argument.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from forecaster.contract.config import default_signals
from forecaster.contract.hosts import check_label_names
from monitoring.files import outputs
from monitoring.settings import DEPLOYMENT_FLAGS, SETTINGS, overridden
from toolkit.cli import add_version_flag

# The checkout this package sits in: the generated files are committed next to it, and the
# package is installed editable (as the Dockerfile does), so this resolves from any cwd.
ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    """Write (or, with ``--check``, only compare) every file of :func:`monitoring.files.outputs`.

    Files whose content is already right are left untouched, so their mtimes do not change and
    Grafana and Prometheus see no spurious reload.
    """
    parser = argparse.ArgumentParser(prog="tft-monitoring", description=__doc__.split("\n\n")[0], allow_abbrev=False)
    add_version_flag(parser)
    parser.add_argument("--check", action="store_true", help="exit 1 if a generated file is missing or stale")
    parser.add_argument("--config.file", dest="config_file", type=Path,
                        help="take the signals from this tft-monitor config (default: the built-in signals)")
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root to write into")
    for flag, field in DEPLOYMENT_FLAGS.items():
        parser.add_argument(flag, dest=field, metavar="TEXT",
                            help=f"SETTINGS.{field} for this run (default: {getattr(SETTINGS, field)})")
    parser.add_argument("--prometheus.cluster-labels", dest="cluster_labels", metavar="LABEL,...",
                        help="labels that, with instance, name a host (the forecaster's prometheus.cluster_labels; "
                             "default: the config file's, else none)")
    args = parser.parse_args(argv)
    changes: dict[str, str | tuple[str, ...]] = {
        field: getattr(args, field) for field in DEPLOYMENT_FLAGS.values() if getattr(args, field) is not None}
    if "grafana_url" in changes:
        changes["grafana_url"] = str(changes["grafana_url"]).rstrip("/")
    if any(not str(value).strip() for value in changes.values()):
        print("tft-monitoring: a deployment setting must not be empty", file=sys.stderr)
        return 2
    labels: tuple[str, ...] | None = None
    if args.cluster_labels is not None:
        try:
            labels = check_label_names(tuple(n.strip() for n in args.cluster_labels.split(",") if n.strip()))
        except ValueError as exc:
            print(f"tft-monitoring: --prometheus.cluster-labels: {exc}", file=sys.stderr)
            return 2
    if args.config_file is not None:
        from forecaster.contract.config import ConfigError, load_config

        try:
            flag = {"prometheus.cluster_labels": None if labels is None else list(labels)}
            config = load_config(args.config_file, flag)
        except ConfigError as exc:
            print(f"tft-monitoring: {exc}", file=sys.stderr)
            return 2
        signals, labels = config.signals, config.prometheus.cluster_labels
    else:
        signals = default_signals(labels or ())
    changes["cluster_labels"] = labels or ()
    with overridden(**changes):
        rendered = outputs(signals)
    stale = []
    for rel, content in rendered.items():
        path = args.root / rel
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == content:
            continue
        if args.check:
            stale.append(str(rel))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        print(f"wrote {rel}")
    if stale:
        print("stale generated files (run tft-monitoring):\n  " + "\n  ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
