"""The forecaster service: scheduled cycles, the published state, and what HTTP reads from it.

:class:`Service` owns the state; a cycle (:func:`forecaster.serving.cycle.run_cycle`) computes, and
:meth:`Service.run_cycle` publishes: it merges, renders and swaps in one immutable
:class:`Published` object at the very end, under a lock held only for the assignment. So a
scrape or API call sees the previous cycle or the new one, never a mix, and never waits for
a cycle.

Faults never stop the service. When a cycle fails (Prometheus down, slow, answering 5xx,
malformed or empty; a model that breaks), the last good forecasts stay published and their
age shows in ``tft_forecaster_forecast_age_seconds``; forecasts of signals whose query failed
are carried over from the previous cycle (dropped once older than the 8 h horizon, when they
say nothing any more), while a host that is gone from a successful answer stops being
exported. Each failure is counted once per failed stage and logged in one line per cycle.

Seams for tests: the Prometheus client (:class:`~forecaster.contract.prometheus.PrometheusAPI`), the
model store, and the clock are constructor arguments.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client.core import Metric

from forecaster.contract.config import Config
from forecaster.contract.online_band import OnlineBand
from forecaster.contract.prometheus import PrometheusAPI
from forecaster.contract.registry import TRAINER_METRICS_FILE
from forecaster.serving import exposition
from forecaster.serving.cycle import CycleResult, run_cycle
from forecaster.serving.exposition import StateCollector, Stats, View
from forecaster.serving.snapshot import MAX_HORIZON_SECONDS, ForecastSet, breaches, forecasts_document, iso
from forecaster.serving.store import ModelSet, ModelStore, default_registry_dir
from toolkit.http import WebLayer
from toolkit.version import package_version

log = logging.getLogger(__name__)

#: The families of the trainer's metrics file that are re-exported.
TRAINER_PREFIX = "tft_trainer_"


def set_torch_threads(threads: int) -> None:
    """Inference threads; 1 by default, because a scheduled job should not take every core."""
    import torch

    torch.set_num_threads(threads)


@dataclass(frozen=True)
class Published:
    """What the last cycle published; replaced whole, never modified."""

    forecasts: ForecastSet | None = None
    text: bytes = b""
    models: ModelSet | None = None
    last_cycle: CycleResult | None = None
    last_success: float | None = None
    trainer_families: tuple[Metric, ...] = ()
    cycles: int = 0


@dataclass
class _TextFile:
    path: Path | None
    key: tuple[int, int] | None = None
    families: tuple[Metric, ...] = ()
    error: str | None = field(default=None)

    def read(self) -> tuple[Metric, ...]:
        """Parsed families; re-parsed only when the file changed, errors logged once per change."""
        if self.path is None:
            return ()
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self.key, self.families = None, ()
            return ()
        except OSError as exc:
            log.warning("cannot read %s: %s", self.path, exc)
            return self.families
        key = (st.st_mtime_ns, st.st_size)
        if key == self.key:
            return self.families
        self.key = key
        try:
            families = exposition.parse_textfile(self.path.read_text(encoding="utf-8"))
            # Only the trainer's own families: anything else in the file (a node_exporter textfile
            # collector's, or one of ours) would be re-exported under the forecaster's job and
            # could collide with the forecaster's own series.
            self.families = tuple(f for f in families if f.name.startswith(TRAINER_PREFIX))
            ignored = sorted(f.name for f in families if not f.name.startswith(TRAINER_PREFIX))
            if ignored:
                log.warning("%s: not re-exported (not %s*): %s", self.path, TRAINER_PREFIX, ", ".join(ignored))
            self.error = None
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            self.error = f"{self.path}: not valid Prometheus text format ({exc})"
            log.warning("trainer metrics not re-exported: %s", self.error)
            self.families = ()
        return self.families


class Service:
    """State, cycles and schedule of one forecaster replica."""

    def __init__(self, config: Config, *, client: PrometheusAPI | None = None, store: ModelStore | None = None,
                 clock: Callable[[], float] = time.time, stats: Stats | None = None,
                 configure_torch: bool = True) -> None:
        self.config = config
        self.clock = clock
        self.stats = stats or Stats()
        self.version = package_version()
        if client is None:
            from forecaster.contract.prometheus import PrometheusClient

            client = PrometheusClient.from_config(config.prometheus, observer=self.stats)
        self.client = client
        self.source = Path(config.forecaster.registry_dir or default_registry_dir())
        self.store = store or ModelStore(self.source, step_seconds=config.model.step_seconds,
                                         signals=[s.name for s in config.signals],
                                         on_error=lambda _message: self.stats.count_failure("model_load"),
                                         fast_path=config.forecaster.fast_path)
        metrics_file = config.trainer.metrics_file
        if metrics_file is None and not (self.source / "model.json").exists():
            metrics_file = self.source / TRAINER_METRICS_FILE
        self._trainer_file = _TextFile(Path(metrics_file) if metrics_file else None)
        if configure_torch:
            set_torch_threads(config.forecaster.torch_threads)
        self._published = Published()
        # Each series' band factors (forecaster/contract/online_band.py): state across cycles, in memory.
        self.band = OnlineBand(config.model.step_seconds) if config.forecaster.online_band else None
        self._band_summary = self.band.summary() if self.band is not None else None
        self._publish_lock = threading.Lock()
        self._cycle_lock = threading.Lock()
        self.state_collector = StateCollector(self.view, self.stats)
        from prometheus_client import ProcessCollector

        self._process = ProcessCollector(registry=None)
        self._scheduler: Any = None

    # -- state for readers

    @property
    def published(self) -> Published:
        return self._published

    def view(self) -> View:
        p = self._published
        return View(now=self.clock(), version=self.version, signals=self.config.signals, models=p.models,
                    forecasts=p.forecasts, last_cycle=p.last_cycle, last_success=p.last_success,
                    trainer_families=p.trainer_families)

    def metrics_text(self) -> bytes:
        """The whole ``/metrics`` page: pre-rendered forecasts plus the small families, rendered now."""
        p = self._published
        return p.text + exposition.render(self.state_collector, self._process)

    def ready(self) -> tuple[bool, str]:
        p = self._published
        if p.models is None or p.models.in_fallback:
            reason = p.models.fallback_reason if p.models is not None else "no cycle has run yet"
            return False, f"Not ready: no model loaded ({reason})."
        if p.last_success is None:
            return False, "Not ready: no forecast cycle has succeeded yet."
        return True, "Ready."

    # -- one cycle

    def run_cycle(self) -> CycleResult:
        """Refresh the models, run one cycle, publish; safe to call from any thread (one at a time)."""
        with self._cycle_lock:
            began = time.monotonic()
            try:
                self.store.refresh()
            except Exception:  # e.g. an unreadable registry directory: keep the models we have
                log.exception("model refresh failed")
                self.stats.count_failure("model_load")
            models = self.store.current()
            now = self.clock()
            try:
                result = run_cycle(self.client, models, self.config, now, band=self.band)
            except Exception as exc:  # a bug in a stage; the service must keep serving
                log.exception("forecast cycle crashed")
                result = CycleResult(started=now, step_seconds=self.config.model.step_seconds)
                result.fail("inference", f"{type(exc).__name__}: {exc}")
            self._nothing_forecast(result)
            if self.band is not None:
                self._band_summary = self.band.summary()
            t0 = time.monotonic()
            try:
                published = self._merge(result, models, now)
            except Exception as exc:
                log.exception("publishing failed")
                result.fail("publish", f"{type(exc).__name__}: {exc}")
                published = replace(self._published, models=models, last_cycle=result)
            result.stage_seconds["publish"] = time.monotonic() - t0
            success = result.ok
            if success:
                published = replace(published, last_success=self.clock())
            with self._publish_lock:
                self._published = replace(published, cycles=self._published.cycles + 1)
            self.stats.count_cycle(time.monotonic() - began, success, result.errors)
            self.stats.count_schedule_errors(len(result.schedule_errors))
            self._log(result, models, time.monotonic() - began)
            return result

    def _nothing_forecast(self, result: CycleResult) -> None:
        """A signal that answered but gave no forecast, where forecasts of it are served now, failed.

        All-NaN values, data stale for longer than the window's last steps, or only duplicated
        series: the query succeeded, every series was skipped, and merging would replace the
        served forecasts with nothing while the cycle counted as a success (last success
        advancing, so no staleness alert). Such a signal is handled like one whose query
        returned no series: its previous forecasts are carried over (until they expire) and the
        cycle fails at ``preprocess``. A signal never forecast before (a new deployment, a new
        signal) is not a failure: there is nothing to keep.
        """
        served = self._published.forecasts
        fresh = result.forecasts
        if fresh is None or served is None or not len(served):
            return
        had = set(served.signals.tolist())
        got = set(fresh.signals.tolist())
        empty = [s.name for s in self.config.signals
                 if s.name in had and s.name not in got and s.name not in result.failed_signals]
        if not empty:
            return
        result.failed_signals += empty
        skipped = ", ".join(f"{k} {v}" for k, v in sorted(result.skipped.items()) if v) or "none"
        result.fail("preprocess", f"no series of {', '.join(empty)} could be forecast (skipped: {skipped}); "
                                  "keeping the previous forecasts")

    def _merge(self, result: CycleResult, models: ModelSet, now: float) -> Published:
        prev = self._published
        old = prev.forecasts
        fresh = result.forecasts
        if fresh is None:
            merged = old
        elif old is not None and result.failed_signals:
            carried = old.take(np.isin(old.signals, result.failed_signals))
            merged = ForecastSet.concat([fresh, carried], fresh.step_seconds, cutoffs=fresh.cutoffs)
        else:
            merged = fresh
        if merged is not None and len(merged):
            expired = (now - merged.made_at) > MAX_HORIZON_SECONDS
            if expired.any():
                merged = merged.take(~expired)
        text = exposition.render_forecasts(merged) if merged is not prev.forecasts else prev.text
        return Published(forecasts=merged, text=text, models=models, last_cycle=result,
                         last_success=prev.last_success, trainer_families=self._trainer_file.read(),
                         cycles=prev.cycles)

    def _log(self, result: CycleResult, models: ModelSet, seconds: float) -> None:
        stages = ", ".join(f"{k} {v:.2f}s" for k, v in result.stage_seconds.items())
        fs = result.forecasts
        n = len(fs) if fs is not None else 0
        warming = int(fs.warming_up.sum()) if fs is not None else 0
        skipped = sum(result.skipped.values())
        model = "fallback" if models.in_fallback else f"model {models.global_model.version}"  # type: ignore[union-attr]
        if result.ok:
            log.info("cycle ok in %.2fs: %d series forecast (%d warming up), %d skipped, %s (%s)",
                     seconds, n, warming, skipped, model, stages)
            return
        served = self._published.forecasts
        age = f"{self.clock() - served.oldest():.0f}s old" if served is not None and len(served) else "none"
        log.warning("cycle failed in %.2fs at %s: %s | %d new series forecast; serving forecasts %s",
                    seconds, "+".join(result.errors), " | ".join(result.errors.values()), n, age)

    # -- documents for the JSON API and --once

    def forecasts_document(self, instance: str | None = None, signal: str | None = None) -> dict[str, Any]:
        fs = self._published.forecasts
        return forecasts_document(fs if fs is not None else ForecastSet.empty(self.config.model.step_seconds),
                                  instance, signal)

    def breaches_document(self) -> dict[str, Any]:
        fs = self._published.forecasts
        return {"status": "success", "data": {"breaches": breaches(fs) if fs is not None else []}}

    def status_document(self) -> dict[str, Any]:
        p = self._published
        now = self.clock()
        ok, why = self.ready()
        models = p.models
        model: dict[str, Any] = {"source": "none"}
        if models is not None:
            g = models.global_model
            model = {"source": "fallback" if g is None else "model",
                     "fallback_reason": models.fallback_reason if g is None else None,
                     "last_error": models.last_error,
                     "registry": str(self.source),
                     "host_models": sorted(models.host_models)}
            if g is not None:
                age = now - g.trained_at_unix if g.trained_at_unix is not None else None
                model.update(version=g.version, trained_at=g.trained_at, scope=g.scope, path=str(g.path),
                             age_seconds=round(age, 1) if age is not None else None)
        cycle = p.last_cycle
        last: dict[str, Any] | None = None
        if cycle is not None:
            fresh = cycle.forecasts
            last = {"started": iso(cycle.started), "outcome": "success" if cycle.ok else "failure",
                    "errors": dict(cycle.errors),
                    "schedule_errors": list(cycle.schedule_errors),
                    "stage_seconds": {k: round(v, 3) for k, v in cycle.stage_seconds.items()},
                    "instances": cycle.instances,
                    "series_forecast": len(fresh) if fresh is not None else 0,
                    "skipped": dict(cycle.skipped),
                    "input_staleness_seconds": cycle.input_staleness}
        fs = p.forecasts
        oldest = fs.oldest() if fs is not None else None
        shard = self.config.forecaster.shard
        return {"status": "success", "data": {
            "version": self.version, "ready": ok, "ready_reason": why,
            "model": model, "last_cycle": last, "cycles": p.cycles,
            "last_success": iso(p.last_success),
            "forecast_age_seconds": round(now - oldest, 1) if oldest is not None else None,
            "series": {"served": len(fs) if fs is not None else 0,
                       "warming_up": int(fs.warming_up.sum()) if fs is not None else 0},
            "shard": {"count": shard.count, "index": shard.index},
            "online_band": self._band_summary,
            "interval_seconds": self.config.forecaster.interval_seconds,
            "generated_at": iso(now)}}

    # -- schedule

    def start_scheduler(self, first_run_now: bool = True, watch_seconds: float | None = None) -> None:
        """Run a cycle every ``interval_seconds`` (the first one now) and watch the registry.

        The watcher runs every ``watch_seconds`` (default: half the interval, at most 30 s).
        """
        from apscheduler.schedulers.background import BackgroundScheduler

        interval = self.config.forecaster.interval_seconds
        watch = watch_seconds if watch_seconds is not None else max(1, min(30, interval // 2))
        scheduler = BackgroundScheduler(timezone=UTC, job_defaults={
            # A cycle that overruns its slot is not stacked: the missed run is skipped, not queued.
            "coalesce": True, "max_instances": 1, "misfire_grace_time": max(1, interval // 2)})
        scheduler.add_job(self._scheduled_cycle, "interval", seconds=interval, id="cycle",
                          next_run_time=datetime.now(UTC) if first_run_now else None)
        scheduler.add_job(self._watch_models, "interval", seconds=watch, id="models")
        scheduler.start()
        self._scheduler = scheduler

    def stop_scheduler(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
            self._scheduler = None

    def _scheduled_cycle(self) -> None:
        try:
            self.run_cycle()
        except Exception:  # pragma: no cover - run_cycle catches stage errors itself
            log.exception("forecast cycle crashed")

    def _watch_models(self) -> None:
        """Between cycles: load a newly promoted model; end a fallback at once rather than next cycle."""
        before = self.store.current()
        try:
            self.store.refresh()
        except Exception:
            log.exception("model refresh failed")
            return
        after = self.store.current()
        if before.in_fallback and not after.in_fallback and self._scheduler is not None:
            log.info("a model is available: running a cycle now instead of waiting for the next slot")
            self._scheduler.modify_job("cycle", next_run_time=datetime.now(UTC))


@dataclass
class RunningService:
    """A service with its HTTP server and scheduler running in background threads."""

    service: Service
    server: Any
    thread: threading.Thread
    url: str

    def stop(self) -> None:
        self.service.stop_scheduler()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    def wait_for_cycles(self, n: int = 1, timeout: float = 60.0, success: bool = False) -> CycleResult:
        """Block until ``n`` cycles have run (and the last succeeded, if asked); bounded by ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            p = self.service.published
            if p.cycles >= n and p.last_cycle is not None and (not success or p.last_cycle.ok):
                return p.last_cycle
            time.sleep(0.05)
        raise TimeoutError(f"fewer than {n} cycles ran within {timeout:g}s "
                           f"(ran {self.service.published.cycles})")


def start(config: Config, *, address: str | None = None, scheduler: bool = True, watch_seconds: float | None = None,
          web: WebLayer | None = None, **kwargs: Any) -> RunningService:
    """Bind the HTTP server first (so a taken port fails fast), then start the schedule.

    ``address`` defaults to ``forecaster.listen_address``; ``127.0.0.1:0`` picks a free port.
    ``web``: a loaded ``--web.config.file`` (TLS, basic auth; :class:`toolkit.webconfig.WebConfigFile`).
    ``kwargs`` go to :class:`Service` (client, store, clock: the test seams).
    """
    from forecaster.serving.web import make_app
    from toolkit.http import parse_listen_address, serve, server_url

    address = address or config.forecaster.listen_address
    parse_listen_address(address)
    holder: dict[str, Service] = {}
    server, thread = serve(make_app(_Deferred(holder)), address, name="tft-forecaster-http", web=web)
    try:
        service = Service(config, **kwargs)
    except BaseException:
        server.shutdown()
        server.server_close()
        raise
    holder["service"] = service
    if scheduler:
        service.start_scheduler(watch_seconds=watch_seconds)
    return RunningService(service, server, thread, server_url(server))


class _Deferred:
    """The HTTP backend until the service exists (torch is still importing): healthy, not ready."""

    def __init__(self, holder: dict[str, Service]) -> None:
        self._holder = holder

    def __getattr__(self, name: str) -> Any:
        service = self._holder.get("service")
        if service is not None:
            return getattr(service, name)
        return getattr(_Starting(), name)


class _Starting:
    def metrics_text(self) -> bytes:
        return b""

    def ready(self) -> tuple[bool, str]:
        return False, "Not ready: starting."

    def status_document(self) -> dict[str, Any]:
        return {"status": "success", "data": {"ready": False, "ready_reason": "starting"}}

    def forecasts_document(self, instance: str | None, signal: str | None) -> dict[str, Any]:
        return {"status": "success", "data": {"series": []}}

    def breaches_document(self) -> dict[str, Any]:
        return {"status": "success", "data": {"breaches": []}}
