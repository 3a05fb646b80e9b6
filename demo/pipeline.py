"""Start and stop the demo's pipeline: simulator, backfill, Prometheus and forecaster as child processes.

Every component runs as its own child process, started exactly as a user would start it
(``python -m exporter``, ``prometheus``, ``python -m forecaster``), each in its own process
group with its output in ``<work dir>/logs/``. :meth:`Pipeline.stop` (called on Ctrl-C,
SIGTERM, errors and normal exit) sends SIGTERM to each group, then SIGKILL after a grace
period, and reaps every child, so nothing is left running. Where ``setpriv`` exists (util-linux,
on every Debian and Ubuntu) each child also gets SIGTERM from the kernel if the demo itself is
killed with SIGKILL.

The simulator and its backfill share seed, hosts, scenario and anchor: the simulation is a pure
function of them, so the backfilled history and the live scrapes join without a seam. The
backfill ends now, never later (one future sample makes Prometheus reject live samples). The
anchor defaults to a few minutes after forecasting is expected to start, so that the
``degrading`` scenario's scripted breaches (20-60 min after the anchor, ramps that began hours
earlier) arrive within the demo's first hour and at least 30 minutes after its first forecast.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import requests
import yaml

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
RULES_DIR = REPO / "prometheus" / "rules"
#: The documented ports, used when free; otherwise any free port.
PREFERRED_PORTS = {"prometheus": 9090, "exporter": 8920, "forecaster": 8921}
SIMULATOR_JOB = "tft-simulator"  # the scrape job of prometheus/prometheus.yml; backfilled series carry it
MARKER = ".tft-demo"
#: Seconds between the expected first forecast and the anchor. Scripted breaches come 20-60 min
#: (mostly 28-52 min) after the anchor, so they arrive 35-60 min into the forecasting: late enough
#: for a warning 30 min ahead to be possible, early enough to be seen within the first hour.
ANCHOR_DELAY_SECONDS = 420.0
#: Measured backfill cost (docs/BENCHMARKS.md: 30 days x 20 hosts in 32.5 s) plus start-up.
_BACKFILL_SECONDS_PER_HOST_DAY = 0.055
_STARTUP_SECONDS = 20.0


class DemoError(Exception):
    """The pipeline could not start or broke down; one line for the user (exit status 1)."""


class Interrupted(Exception):
    """SIGTERM or SIGHUP arrived: stop like on Ctrl-C."""


@dataclass(frozen=True)
class DemoSettings:
    hosts: int = 10
    days: float = 30.0
    seed: int = 42
    scenario: str = "degrading"
    anchor: float | None = None  # unix seconds; None: expected first forecast + ANCHOR_DELAY_SECONDS
    interval: int = 60  # forecast interval, seconds
    scrape_interval: int = 15
    duration: float | None = None  # seconds of forecasting (``--for``); None: until Ctrl-C
    model_dir: Path | None = None  # None: the shipped registry (<repo>/models)
    work_dir: Path = Path("runs/demo")
    prometheus_port: int | None = None
    exporter_port: int | None = None
    forecaster_port: int | None = None

    def expected_startup(self) -> float:
        return _STARTUP_SECONDS + _BACKFILL_SECONDS_PER_HOST_DAY * self.hosts * self.days


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def choose_port(name: str, wanted: int | None, taken: set[int]) -> int:
    """``wanted`` if given (it must be free; 0 means any free port); else the documented port if free,
    else any free port."""
    if wanted == 0:
        return _unused_port(taken)
    if wanted:
        if wanted in taken or not port_is_free(wanted):
            raise DemoError(f"--{name}.port {wanted}: the port is in use on 127.0.0.1")
        return wanted
    preferred = PREFERRED_PORTS[name]
    if preferred not in taken and port_is_free(preferred):
        return preferred
    return _unused_port(taken)


def _unused_port(taken: set[int]) -> int:
    for _ in range(20):
        port = free_port()
        if port not in taken:
            return port
    raise DemoError("no free port on 127.0.0.1")


class Child:
    """One child process in its own process group, output to a log file."""

    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None,
                 pipe: bool = False) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.env = env
        self.pipe = pipe
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> Child:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        argv = self.argv
        setpriv = shutil.which("setpriv")
        if setpriv is not None:  # the kernel stops the child if the demo dies without cleaning up
            argv = [setpriv, "--pdeathsig", "TERM", "--", *argv]
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE if self.pipe else self._log,
                                         stderr=subprocess.STDOUT, start_new_session=True, env=self.env)
        except OSError as exc:
            self._log.close()
            raise DemoError(f"cannot start {self.name} ({self.argv[0]}): {exc.strerror or exc}") from exc
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def lines(self) -> Any:
        """With ``pipe``: the child's output lines as they come (also written to its log)."""
        assert self.proc is not None and self.proc.stdout is not None and self._log is not None
        for raw in self.proc.stdout:
            self._log.write(raw)
            self._log.flush()
            yield raw.decode(errors="replace").rstrip("\n")

    def terminate(self) -> None:
        """SIGTERM to the whole group without waiting: :meth:`stop` then reaps it."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGTERM)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM to the whole group, SIGKILL after ``grace`` seconds; always reaps the child."""
        proc = self.proc
        if proc is not None:
            for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, sig)  # the group outlives its leader (promtool under the backfill)
                try:
                    proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            if proc.stdout is not None:
                proc.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None

    def tail(self, n: int = 5) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])


@dataclass
class Timings:
    backfill: float = 0.0
    prometheus: float = 0.0
    forecaster: float = 0.0
    total: float = 0.0
    samples: int = 0


@dataclass
class Pipeline:
    """The running demo; use as a context manager so :meth:`stop` always runs."""

    settings: DemoSettings
    say: Callable[[str], None] = print
    children: dict[str, Child] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    timings: Timings = field(default_factory=Timings)
    anchor: float = 0.0
    ports: dict[str, int] = field(default_factory=dict)
    started_at: float = 0.0
    model: dict[str, Any] = field(default_factory=dict)
    _lock_file: IO[str] | None = None
    _session: requests.Session = field(default_factory=requests.Session)
    _prom: Any = None

    # -- paths and URLs

    @property
    def work(self) -> Path:
        return Path(self.settings.work_dir)

    @property
    def data_dir(self) -> Path:
        return self.work / "prometheus" / "data"

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    # -- lifecycle

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Everything up to the first forecast; prints progress lines through ``say``."""
        s = self.settings
        began = time.monotonic()
        self.started_at = time.time()
        self._prepare_work_dir()
        taken: set[int] = set()
        for name in ("prometheus", "exporter", "forecaster"):
            self.ports[name] = choose_port(name, getattr(s, f"{name}_port"), taken)
            taken.add(self.ports[name])
        if s.anchor is not None:
            self.anchor = float(s.anchor)
        else:
            self.anchor = float(math.ceil(self.started_at + s.expected_startup() + ANCHOR_DELAY_SECONDS))
        from exporter.incidents import iso

        self.say(f"simulating {s.hosts} hosts ({s.scenario}, seed {s.seed}), anchor {iso(self.anchor)}; "
                 f"work dir {self.work}")
        self._start_exporter()
        self._backfill()
        self._start_prometheus()
        self._start_forecaster()
        self.timings.total = time.monotonic() - began
        self._write_state(running=True)
        self.say(f"ready in {self.timings.total:.1f}s (backfill {self.timings.backfill:.1f}s, "
                 f"Prometheus {self.timings.prometheus:.1f}s, forecaster's first cycle "
                 f"{self.timings.forecaster:.1f}s)")

    def stop(self) -> None:
        """Stop every child (forecaster first, simulator last) and release the work dir.

        A second Ctrl-C (or a SIGTERM) while this runs is ignored, so cleaning up is never cut short. Every
        child is asked to stop first, then each is waited for in turn, so stopping takes as long as the
        slowest child (a loaded machine: seconds each), not their sum.
        """
        with _signals_ignored():
            order = ("forecaster", "prometheus", "backfill", "exporter")
            for name in order:
                if name in self.children:
                    self.children[name].terminate()
            for name in order:
                child = self.children.pop(name, None)
                if child is not None:
                    child.stop()
            if self._lock_file is not None:
                if self.pids:
                    self._write_state(running=False)
                self._lock_file.close()
                self._lock_file = None
            self._session.close()
            if self._prom is not None:
                self._prom.close()
                self._prom = None

    def touch(self) -> None:
        """Refresh ``state.json`` (the plot takes its ``updated`` as the end of the data if the demo dies)."""
        self._write_state(running=True)

    def check_children(self) -> None:
        """Raise :class:`DemoError` when a component has died (with the end of its log)."""
        for name, child in self.children.items():
            if not child.alive():
                code = child.proc.returncode if child.proc is not None else None
                raise DemoError(f"{name} exited unexpectedly (status {code}); its log {child.log_path} ends "
                                f"with:\n{child.tail()}")

    # -- steps

    def _prepare_work_dir(self) -> None:
        work = self.work
        if work.exists() and any(work.iterdir()) and not (work / MARKER).exists():
            raise DemoError(f"work dir {work} is not empty and was not made by tft-demo; choose another --work-dir")
        work.mkdir(parents=True, exist_ok=True)
        (work / MARKER).write_text("made by tft-demo; its contents are replaced at every run\n")
        self._lock_file = open(work / ".lock", "w")  # noqa: SIM115 - closed in stop()
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock_file.close()
            self._lock_file = None
            raise DemoError(f"another tft-demo is running in {work}; stop it or choose another --work-dir") from None
        for name in ("backfill", "prometheus", "logs"):
            shutil.rmtree(work / name, ignore_errors=True)
        for name in ("forecaster.yml", "state.json", "forecasts.json", "summary.json"):
            (work / name).unlink(missing_ok=True)

    def _env(self) -> dict[str, str]:
        path = os.environ.get("PYTHONPATH")
        return {**os.environ, "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": str(REPO) + (os.pathsep + path if path else "")}

    def _spawn(self, name: str, argv: list[str], pipe: bool = False) -> Child:
        child = Child(name, argv, self.work / "logs" / f"{name}.log", env=self._env(), pipe=pipe).start()
        self.children[name] = child
        assert child.pid is not None
        self.pids[name] = child.pid
        return child

    def _simulation_flags(self) -> list[str]:
        s = self.settings
        return ["--hosts", str(s.hosts), "--seed", str(s.seed), "--scenario", s.scenario,
                "--scenario.anchor", str(int(self.anchor)) if self.anchor == int(self.anchor) else str(self.anchor)]

    def _start_exporter(self) -> None:
        address = f"127.0.0.1:{self.ports['exporter']}"
        self._spawn("exporter", [sys.executable, "-m", "exporter", "serve", "--web.listen-address", address,
                                 *self._simulation_flags()])
        self._wait_http("exporter", self.url("exporter") + "/-/ready", 60.0)
        self.say(f"simulator serving {self.settings.hosts} hosts on {self.url('exporter')}")

    def _backfill(self) -> None:
        s = self.settings
        began = time.monotonic()
        out = self.work / "backfill"
        expected = _BACKFILL_SECONDS_PER_HOST_DAY * s.hosts * s.days
        self.say(f"backfilling {s.days:g} days of {s.hosts} hosts" + (
            f" (about {expected:.0f}s on 2 cores) ..." if expected >= 5 else " ..."))
        child = self._spawn("backfill", [sys.executable, "-m", "exporter", "backfill", "--days", f"{s.days:g}",
                                         "--out", str(out), "--job", SIMULATOR_JOB, *self._simulation_flags()],
                            pipe=True)
        last = ""
        for line in child.lines():
            last = line or last
            message = line.split(": ", 1)[-1]
            if re.search(r"part \d+/\d+: .* samples written", message) or "promtool wrote" in message:
                self.say(f"  backfill: {message}")
            match = re.match(r"(\d+) samples of", line)
            if match:
                self.timings.samples = int(match.group(1))
        assert child.proc is not None
        code = child.proc.wait()
        self.children.pop("backfill").stop()
        if code != 0:
            raise DemoError(f"the backfill failed (status {code}): {last}")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        blocks = out / "blocks"
        if not blocks.is_dir():
            raise DemoError(f"the backfill wrote no blocks in {blocks} (is promtool installed?)")
        for block in blocks.iterdir():
            os.replace(block, self.data_dir / block.name)
        self.timings.backfill = time.monotonic() - began
        self.say(f"backfill: {self.timings.samples / 1e6:.1f} M samples in {self.timings.backfill:.1f}s")

    def prometheus_config(self) -> dict[str, Any]:
        s = self.settings
        relabel = [{"source_labels": ["__address__"], "target_label": "__param_target"},
                   {"source_labels": ["__param_target"], "target_label": "instance"},
                   {"target_label": "__address__", "replacement": f"127.0.0.1:{self.ports['exporter']}"}]
        config: dict[str, Any] = {
            "global": {"scrape_interval": f"{s.scrape_interval}s", "evaluation_interval": f"{s.scrape_interval}s"},
            "scrape_configs": [
                {"job_name": "prometheus", "static_configs": [{"targets": [f"127.0.0.1:{self.ports['prometheus']}"]}]},
                {"job_name": SIMULATOR_JOB, "metrics_path": "/probe",
                 "http_sd_configs": [{"url": self.url("exporter") + "/sd", "refresh_interval": "1m"}],
                 "relabel_configs": relabel},
                {"job_name": "tft-exporter", "static_configs": [{"targets": [f"127.0.0.1:{self.ports['exporter']}"]}]},
                {"job_name": "tft-forecaster", "honor_labels": True,
                 "static_configs": [{"targets": [f"127.0.0.1:{self.ports['forecaster']}"]}]},
            ],
        }
        if RULES_DIR.is_dir():
            config["rule_files"] = [str(RULES_DIR / "*.rules.yml")]
        return config

    def _start_prometheus(self) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise DemoError("prometheus is not installed: apt-get install -y --no-install-recommends prometheus")
        began = time.monotonic()
        config_path = self.work / "prometheus" / "prometheus.yml"
        config_path.write_text("# Written by tft-demo for this run.\n"
                               + yaml.safe_dump(self.prometheus_config(), sort_keys=False))
        retention = max(60, math.ceil(self.settings.days) + 30)
        self._spawn("prometheus", [binary, f"--config.file={config_path}", f"--storage.tsdb.path={self.data_dir}",
                                   f"--storage.tsdb.retention.time={retention}d",
                                   f"--web.listen-address=127.0.0.1:{self.ports['prometheus']}",
                                   "--web.enable-lifecycle", "--log.level=warn"])
        deadline = time.monotonic() + 120.0
        while not self.prometheus().ready():
            self.check_children()
            if time.monotonic() > deadline:
                raise DemoError(f"Prometheus was not ready within 120s; see {self.children['prometheus'].log_path}")
            time.sleep(0.2)
        self.timings.prometheus = time.monotonic() - began
        self.say(f"Prometheus ready on {self.url('prometheus')} ({self.timings.prometheus:.1f}s; data in "
                 f"{self.data_dir}, {retention}d retention)")

    def _start_forecaster(self) -> None:
        s = self.settings
        began = time.monotonic()
        config: dict[str, Any] = {
            "prometheus": {"url": self.url("prometheus"), "timeout_seconds": 15, "retries": 1,
                           "retry_backoff_seconds": 0.2},
            "forecaster": {"listen_address": f"127.0.0.1:{self.ports['forecaster']}",
                           "interval_seconds": s.interval},
        }
        if s.model_dir is not None:
            config["forecaster"]["registry_dir"] = str(Path(s.model_dir).resolve())
        path = self.work / "forecaster.yml"
        path.write_text("# Written by tft-demo for this run.\n" + yaml.safe_dump(config, sort_keys=False))
        self.say(f"starting the forecaster (every {s.interval}s; config {path}) ...")
        self._spawn("forecaster", [sys.executable, "-m", "forecaster", "--config.file", str(path)])
        deadline = time.monotonic() + 240.0
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            self.check_children()
            try:
                status = self.status()
            except DemoError:
                status = {}
            cycle = status.get("last_cycle") or {}
            if status.get("cycles", 0) >= 1 and cycle.get("outcome") == "success":
                break
            if status.get("cycles", 0) >= 1 and cycle.get("errors"):
                self.say(f"  forecaster: first cycle failed ({'; '.join(cycle['errors'].values())}); retrying")
            time.sleep(0.25)
        else:
            log_path = self.children["forecaster"].log_path
            raise DemoError(f"the forecaster produced no forecast within 240s; see {log_path}")
        self.timings.forecaster = time.monotonic() - began
        self.model = status.get("model") or {}
        if self.model.get("source") == "fallback":
            self.say("WARNING: no trained model was loaded (" + str(self.model.get("fallback_reason"))
                     + "): the forecaster serves the flagged seasonal-naive fallback, which does not predict "
                     "incidents. Pass --model.dir DIR, or train one (docs/TRAINING.md).")
        else:
            self.say(f"forecaster ready on {self.url('forecaster')}: model {self.model.get('scope')} version "
                     f"{self.model.get('version')} ({self.timings.forecaster:.1f}s)")

    def _wait_http(self, name: str, url: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_children()
            try:
                if self._session.get(url, timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise DemoError(f"{name} was not ready within {timeout:.0f}s; see {self.children[name].log_path}")

    def _write_state(self, running: bool) -> None:
        s = self.settings
        state = {"running": running, "updated": time.time(), "anchor": self.anchor, "pids": self.pids,
                 "urls": {name: self.url(name) for name in self.ports},
                 "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(s).items()},
                 "model": self.model, "startup": asdict(self.timings)}
        path = self.work / "state.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1) + "\n")
        tmp.replace(path)

    # -- reading the running pipeline

    def _get(self, url: str, params: dict[str, str] | None = None) -> Any:
        try:
            resp = self._session.get(url, params=params, timeout=10)
            resp.raise_for_status()
            return resp.json()
        except (requests.RequestException, ValueError) as exc:
            raise DemoError(f"GET {url}: {exc}") from exc

    def status(self) -> dict[str, Any]:
        return self._get(self.url("forecaster") + "/api/v1/status").get("data") or {}

    def forecasts(self) -> list[dict[str, Any]]:
        return self._get(self.url("forecaster") + "/api/v1/forecasts")["data"]["series"]

    def breaches(self) -> list[dict[str, Any]]:
        return self._get(self.url("forecaster") + "/api/v1/breaches")["data"]["breaches"]

    def prometheus(self) -> Any:
        """The project's Prometheus client (the one module that talks HTTP to Prometheus)."""
        if self._prom is None:
            from forecaster.contract.config import PrometheusSection
            from forecaster.contract.prometheus import PrometheusClient

            self._prom = PrometheusClient(PrometheusSection(url=self.url("prometheus"), timeout_seconds=10,
                                                            retries=0))
        return self._prom

    def current_values(self) -> dict[tuple[str, str], float]:
        """The signals now, from the shipped recording rule (empty until its first evaluation)."""
        from forecaster.contract.prometheus import PrometheusError

        try:
            result = self.prometheus().query("instance_signal:tft_actual:value")
        except PrometheusError:
            return {}
        return {(r.labels.get("instance", ""), r.labels.get("signal", "")): r.value for r in result}

    def alerts_firing(self) -> list[dict[str, str]]:
        """The shipped predicted-breach alerts that Prometheus has firing now."""
        from forecaster.contract.prometheus import PrometheusError

        try:
            result = self.prometheus().query('ALERTS{alertstate="firing", alertname=~"TFTBreach.*"}')
        except PrometheusError:
            return []
        return [r.labels for r in result]

    def cutoffs(self) -> dict[str, float]:
        """The served model's warning cut-offs per horizon (empty for the fallback)."""
        from demo.report import cutoffs_from_model_json

        path = self.model.get("path")
        if not path:
            return {}
        try:
            return cutoffs_from_model_json(json.loads((Path(path) / "model.json").read_text(encoding="utf-8")))
        except (OSError, ValueError):
            return {}

    def incidents(self, start: float, end: float) -> list[Any]:
        """Ground truth from the simulation itself (a pure function of the settings and the anchor)."""
        from demo.report import Incident
        from exporter.simulation import Fleet

        s = self.settings
        fleet = Fleet(s.hosts, seed=s.seed, scenario=s.scenario, anchor=self.anchor)
        out = [Incident.from_record(r) for r in fleet.incidents(start, end)]
        return [i for i in out if i is not None]


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    names = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    try:
        saved = {sig: signal.signal(sig, signal.SIG_IGN) for sig in names}
    except ValueError:  # not the main thread: signals cannot reach this code anyway
        yield
        return
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


#: Set by the signal handlers: a stop was asked for. The exception a handler raises can be lost when
#: the signal lands while a finalizer runs (Python prints "Exception ignored in ..." and goes on), so
#: the watch loop also checks this flag on every pass (:func:`raise_if_stop_requested`).
_STOP_REQUESTED: list[str] = []


def install_signal_handlers() -> None:
    """Ctrl-C, SIGTERM and SIGHUP stop the demo (the ``finally`` blocks run), even when the exception
    raised in the handler is swallowed by a finalizer: the flag stays set."""

    def stop(raises: type[BaseException]) -> Callable[[int, object], None]:
        def handler(signum: int, _frame: object) -> None:
            name = signal.Signals(signum).name
            _STOP_REQUESTED.append(name)
            raise raises(name)

        return handler

    signal.signal(signal.SIGINT, stop(KeyboardInterrupt))
    signal.signal(signal.SIGTERM, stop(Interrupted))
    signal.signal(signal.SIGHUP, stop(Interrupted))


def raise_if_stop_requested() -> None:
    """Raise :class:`Interrupted` when a signal asked for a stop that nothing acted on yet."""
    if _STOP_REQUESTED:
        raise Interrupted(_STOP_REQUESTED[-1])
