"""Configuration: one YAML file, one section per component, validated into typed objects.

Loading either returns a valid :class:`Config` or raises :class:`ConfigError` whose message
names the offending field, so every CLI can print one readable line and exit with status 2.
Secrets (Prometheus password, bearer token) are never read from the YAML itself: the file
names an environment variable or a file that holds them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from forecaster.contract.hosts import HostIdentity, check_label_names
from forecaster.contract.schedules import Schedule, ScheduleSet, compile_cron, parse_duration
from toolkit.yamlfile import YamlFileError, read_mapping

DEFAULT_PROMETHEUS_URL = "http://127.0.0.1:9090"
DEFAULT_FORECASTER_ADDRESS = "0.0.0.0:8921"
HORIZON_LABELS: dict[str, int] = {"30m": 1800, "1h": 3600, "2h": 7200, "4h": 14400, "8h": 28800}

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


def _lower_name(value: str) -> str:
    if not _NAME_RE.match(value):
        raise ValueError("must be lower-case letters, digits and '_', starting with a letter")
    return value


#: A signal's or a schedule's name: it becomes a label value and part of series and rule names.
Name = Annotated[str, AfterValidator(_lower_name)]


class ConfigError(Exception):
    """A configuration problem a user can fix; the message is meant to be printed as is."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Secret(_Section):
    """Where a secret lives: an environment variable or a file, never inline."""

    env: str | None = None
    file: Path | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Secret:
        if (self.env is None) == (self.file is None):
            raise ValueError("give exactly one of 'env' or 'file'")
        return self

    def resolve(self) -> str:
        """Read the secret now (not at load time), so a rotated token file is picked up."""
        if self.env is not None:
            value = os.environ.get(self.env)
            if value is None:
                raise ConfigError(f"environment variable {self.env} (named in the config) is not set")
            return value
        assert self.file is not None
        try:
            return self.file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read secret file {self.file}: {exc.strerror}") from exc


class BasicAuth(_Section):
    username: str
    password: Secret


class TLS(_Section):
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure_skip_verify: bool = False

    @model_validator(mode="after")
    def _pair(self) -> TLS:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class PrometheusSection(_Section):
    """How to reach Prometheus (or any store that speaks its HTTP query API)."""

    url: str = DEFAULT_PROMETHEUS_URL
    timeout_seconds: float = Field(default=30.0, gt=0)
    retries: int = Field(default=3, ge=0, le=10)
    retry_backoff_seconds: float = Field(default=0.5, ge=0)
    max_points_per_query: int = Field(default=11000, ge=10, le=11000)
    basic_auth: BasicAuth | None = None
    bearer_token: Secret | None = None
    tls: TLS = TLS()
    headers: dict[str, str] = Field(default_factory=dict)
    # Labels that tell apart hosts of the same ``instance`` name (e.g. ``[cluster]`` behind Thanos, Mimir or a
    # Prometheus per cluster): carried from the signal queries through the forecasts to the exported series
    # (forecaster/contract/hosts.py). Empty: a host is its instance, as with one Prometheus.
    cluster_labels: tuple[str, ...] = ()

    @field_validator("cluster_labels")
    @classmethod
    def _label_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return check_label_names(tuple(value))

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL")
        # Credentials in the URL would be printed wherever the URL is (start-up log, --dry-run,
        # error messages); the message must not repeat them either.
        if "@" in urlsplit(value).netloc:
            raise ValueError("must not hold credentials (user:password@); put them in prometheus.basic_auth "
                             "(username, and the password from an env var or a file)")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_auth(self) -> PrometheusSection:
        if self.basic_auth is not None and self.bearer_token is not None:
            raise ValueError("use basic_auth or bearer_token, not both")
        return self


class Signal(_Section):
    """One forecast signal: a PromQL expression giving one series per instance, and its limits."""

    name: Name
    query: str
    unit: str = "ratio"
    min: float | None = 0.0
    max: float | None = 1.0
    threshold: float
    description: str = ""

    @model_validator(mode="after")
    def _bounds(self) -> Signal:
        if self.min is not None and self.max is not None and self.min >= self.max:
            raise ValueError("min must be below max")
        for bound, ok in (("min", self.min is None or self.threshold >= self.min),
                          ("max", self.max is None or self.threshold <= self.max)):
            if not ok:
                raise ValueError(f"threshold lies outside the signal's {bound} bound")
        return self

    def clip(self, value: Any) -> Any:
        """Clip a scalar or numpy array to the signal's physical bounds."""
        import numpy as np

        return np.clip(value, self.min if self.min is not None else -np.inf,
                       self.max if self.max is not None else np.inf)


def by_host(labels: tuple[str, ...] = ()) -> str:
    """The grouping of a per-host aggregation: ``instance`` and the identity labels (``instance, cluster``)."""
    return ", ".join(("instance", *labels))


def default_signals(cluster_labels: tuple[str, ...] = ()) -> tuple[Signal, ...]:
    """The built-in signals, aggregated per host: ``by (instance)``, or ``by (instance, <cluster labels>)``
    so that equal instance names in different clusters stay apart."""
    by = by_host(cluster_labels)
    return (
        Signal(
            name="cpu",
            description="CPU utilisation: the share of non-idle time (node-mixin's "
            "instance:node_cpu_utilisation:rate5m also counts iowait and steal as idle)",
            query=f'1 - avg by ({by}) (rate(node_cpu_seconds_total{{mode="idle"}}[5m]))',
            threshold=0.9,
        ),
        Signal(
            name="memory",
            description="Memory utilisation (1 - MemAvailable / MemTotal)",
            query=f"max by ({by}) (1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes)",
            threshold=0.9,
        ),
        Signal(
            name="filesystem",
            description="Root filesystem usage",
            query=f'max by ({by}) (1 - node_filesystem_avail_bytes{{mountpoint="/",fstype!="tmpfs"}}'
            ' / node_filesystem_size_bytes{mountpoint="/",fstype!="tmpfs"})',
            threshold=0.9,
        ),
        Signal(
            name="iowait",
            description="Share of CPU time waiting for I/O",
            query=f'avg by ({by}) (rate(node_cpu_seconds_total{{mode="iowait"}}[5m]))',
            threshold=0.3,
        ),
    )


DEFAULT_SIGNALS: tuple[Signal, ...] = default_signals()
_BY_CLAUSE = re.compile(r"\bby\s*\(([^)]*)\)")


def signals_missing_labels(signals: tuple[Signal, ...], labels: tuple[str, ...]) -> list[str]:
    """Names of the signals whose query aggregates ``by (..., instance, ...)`` without every identity label.

    Such a query merges the hosts of one instance name across clusters before the forecaster sees them;
    no later step can part them again, so the config is refused rather than forecasting the mixture.
    """
    return [sig.name for sig in signals if _merges_hosts(sig.query, labels)]


def _merges_hosts(query: str, labels: tuple[str, ...]) -> bool:
    """Whether ``query`` aggregates ``by (..., instance, ...)`` without every identity label."""
    for clause in _BY_CLAUSE.findall(query):
        names = {n.strip() for n in clause.split(",")}
        if "instance" in names and not set(labels) <= names:
            return True
    return False


def check_bucket_seconds(seconds: int, step_seconds: int) -> None:
    """ValueError unless ``seconds`` is a whole number of steps that divides a day, so that the same time
    on earlier days falls on a bucket boundary and Prometheus's subquery lands on the model's steps
    (forecaster/contract/seasonal.py)."""
    if seconds <= 0 or seconds % step_seconds or 86400 % seconds:
        raise ValueError(f"seasonal_bucket_seconds must be a multiple of step_seconds ({step_seconds}) that "
                         f"divides a day, not {seconds}")


class ModelSection(_Section):
    """Shape of the TFT; the trainer builds it, the forecaster checks a loaded model against it."""

    step_seconds: int = Field(default=300, ge=10)
    context_steps: int = Field(default=288, ge=8)
    horizon_steps: int = Field(default=96, ge=2)
    hidden_size: int = Field(default=32, ge=2)
    attention_heads: int = Field(default=8, ge=1)
    hidden_continuous_size: int = Field(default=16, ge=1)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    min_history_steps: int = Field(default=72, ge=2)
    # The same time on that many earlier days as inputs; ``auto``: a week where the training history is long
    # enough and has a daily pattern, else none (trainer/week_choice.py).
    seasonal_days: int | Literal["auto"] = "auto"
    center: Literal["auto", "mean", "last", "recent"] = "auto"
    # The same-time inputs (seasonal_days > 0) read the mean and maximum of buckets of this many seconds,
    # which the forecaster queries at that step (forecaster/contract/seasonal.py); 0: every step's value.
    seasonal_bucket_seconds: int = Field(default=3600, ge=0)
    # The window's own short cycle as inputs (features.cycle_inputs: a profile at the period among a day's
    # divisors that the window repeats best, and how strongly it repeats); ``auto``: where the training
    # history's windows repeat clearly better than they persist, else none (trainer/cycle_choice.py).
    cycle: bool | Literal["auto"] = "auto"

    @field_validator("seasonal_days", mode="before")
    @classmethod
    def _days(cls, value: Any) -> int | str:
        if value == "auto":
            return value
        if isinstance(value, str) and value.strip().isdigit():  # an override given as text
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 28:
            raise ValueError(f"must be auto or a whole number of days from 0 to 28, not {value!r}")
        return value

    @field_validator("cycle", mode="before")
    @classmethod
    def _cycle(cls, value: Any) -> bool | str:
        words = {"auto": "auto", "true": True, "false": False}
        if isinstance(value, str) and value.strip().lower() in words:  # also an override given as text
            return words[value.strip().lower()]
        if not isinstance(value, bool):
            raise ValueError(f"must be auto, true or false, not {value!r}")
        return value

    @model_validator(mode="after")
    def _history(self) -> ModelSection:
        if self.min_history_steps > self.context_steps:
            raise ValueError("min_history_steps cannot exceed context_steps")
        if self.seasonal_bucket_seconds:
            check_bucket_seconds(self.seasonal_bucket_seconds, self.step_seconds)
        return self


class ShardSection(_Section):
    count: int = Field(default=1, ge=1)
    index: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _index(self) -> ShardSection:
        if self.index >= self.count:
            raise ValueError("index must be below count")
        return self


class ForecasterSection(_Section):
    listen_address: str = DEFAULT_FORECASTER_ADDRESS
    interval_seconds: int = Field(default=300, ge=5)
    registry_dir: Path | None = None
    inference_batch_size: int = Field(default=512, ge=1)
    torch_threads: int = Field(default=1, ge=1)
    # False: serve through the library's forward, not forecaster/contract/fastpath.py (about 3x the
    # inference CPU); for when the fast path is in doubt even though each model's parity check passes.
    fast_path: bool = True
    # Each series' p10-p90 band follows its own outcomes (forecaster/contract/online_band.py); False: the
    # band as the model was calibrated on its validation slice.
    online_band: bool = True
    shard: ShardSection = ShardSection()


class TrainerSection(_Section):
    registry_dir: Path = Path("models")
    history_days: float = Field(default=30, gt=0)
    parquet: Path | None = None
    batch_size: int = Field(default=64, ge=1)
    batches_per_epoch: int = Field(default=100, ge=1)
    max_epochs: int = Field(default=20, ge=1)
    learning_rate: float = Field(default=3e-3, gt=0)
    early_stopping_patience: int = Field(default=4, ge=1)
    time_budget_minutes: float = Field(default=60, gt=0)
    gradient_accumulation: int = Field(default=1, ge=1)
    validation_days: float = Field(default=2, gt=0)
    promotion_margin: float = Field(default=0.02, ge=0, lt=1)
    seed: int = 42
    # ``auto``: trainer.augment.AUTO_LEVEL_SHIFT_SHARE for a network centered on the recent level, none for
    # the others (docs/TRAINING.md, "Injected level shifts").
    level_shift_share: float | Literal["auto"] = "auto"
    ramp_share: float = Field(default=0.0, ge=0, le=0.5)
    # The share of each training batch drawn from pre-breach windows (trainer.training.WindowSampler).
    breach_share: float = Field(default=0.1, ge=0, le=0.5)
    torch_threads: int = Field(default=1, ge=1)
    # False: train through the library's forward, not forecaster/contract/fasttrain.py (same network
    # and loss, about twice the CPU per batch); for when the fast path is in doubt.
    fast_path: bool = True
    lock_file: Path | None = None
    metrics_file: Path | None = None
    # Best-epoch checkpoints and Lightning's CSV logs; None: runs/train under the working directory.
    work_dir: Path | None = None

    @field_validator("level_shift_share", mode="before")
    @classmethod
    def _shift_share(cls, value: Any) -> float | str:
        if value == "auto":
            return value
        try:
            share = float(value)
        except (TypeError, ValueError):
            share = float("nan")
        if isinstance(value, bool) or not 0 <= share <= 0.5:
            raise ValueError(f"must be auto or a share from 0 to 0.5, not {value!r}")
        return share


class ScheduleEntry(_Section):
    """One declared schedule (``schedules:``): planned load the forecasts should expect and alerts should not page on.

    When it runs is either ``cron``, a 5-field cron expression in UTC, or ``query``, a PromQL expression whose
    value per host (``instance`` and the cluster labels, as the signals' series) is the unix time of the job's
    next planned start: every value it took is a window start (forecaster/contract/schedules.py). Exactly one
    of them. ``duration`` is how long each run lasts (``45m``, ``2h``), ``hosts`` a regex matched in full
    against the ``instance`` label (default: every host), ``signals`` the signals the job loads (default:
    all). See docs/OPERATIONS.md, "Declaring schedules".
    """

    name: Name
    cron: str | None = None
    query: str | None = None
    duration: str
    hosts: str = ".*"
    signals: tuple[str, ...] | None = None

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None:
            compile_cron(value)
        return value

    @field_validator("query")
    @classmethod
    def _query(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must be a PromQL expression, not empty")
        return value

    @field_validator("duration")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"hosts {value!r} is not a regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _one_source(self) -> ScheduleEntry:
        if (self.cron is None) == (self.query is None):
            raise ValueError("give exactly one of 'cron' (a 5-field cron expression) or 'query' (a PromQL "
                             "expression of the next planned start, unix seconds)")
        return self

    def compiled(self) -> Schedule:
        return Schedule(self.name, self.cron, parse_duration(self.duration), self.hosts, self.signals, self.query)


class Config(_Section):
    """The whole file. The ``exporter`` section belongs to the simulator and is validated there.

    Without a ``signals`` section the built-in signals are used, aggregated by ``prometheus.cluster_labels``
    as well as by ``instance`` (:func:`default_signals`).
    """

    prometheus: PrometheusSection = PrometheusSection()
    signals: tuple[Signal, ...] = DEFAULT_SIGNALS
    model: ModelSection = ModelSection()
    forecaster: ForecasterSection = ForecasterSection()
    trainer: TrainerSection = TrainerSection()
    exporter: dict[str, Any] = Field(default_factory=dict)
    schedules: tuple[ScheduleEntry, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _default_signals(cls, data: Any) -> Any:
        """The built-in signals follow the cluster labels, so ``cluster_labels: [cluster]`` alone suffices."""
        if not isinstance(data, dict) or data.get("signals") is not None:
            return data
        prom = data.get("prometheus")
        labels = prom.get("cluster_labels") if isinstance(prom, dict) else getattr(prom, "cluster_labels", None)
        if not labels or not isinstance(labels, list | tuple) or not all(isinstance(n, str) for n in labels):
            return data  # none, or malformed: the field validator reports it
        try:
            return {**data, "signals": default_signals(check_label_names(tuple(labels)))}
        except ValueError:
            return data

    @model_validator(mode="after")
    def _signals_keep_hosts_apart(self) -> Config:
        bad = signals_missing_labels(self.signals, self.prometheus.cluster_labels)
        if bad:
            labels = ", ".join(self.prometheus.cluster_labels)
            raise ValueError(f"signal(s) {', '.join(bad)}: the query aggregates by (instance) without "
                             f"prometheus.cluster_labels ({labels}), which merges equal host names of different "
                             f"clusters; aggregate by (instance, {labels})")
        return self

    @model_validator(mode="after")
    def _schedules_known(self) -> Config:
        names = [e.name for e in self.schedules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate schedule names: {', '.join(dupes)}")
        known = {s.name for s in self.signals}
        labels = self.prometheus.cluster_labels
        for entry in self.schedules:
            unknown = sorted(set(entry.signals or ()) - known)
            if unknown:
                raise ValueError(f"schedule {entry.name}: unknown signal(s) {', '.join(unknown)} "
                                 f"(known: {', '.join(sorted(known))})")
            if entry.query is not None and _merges_hosts(entry.query, labels):
                raise ValueError(f"schedule {entry.name}: the query aggregates by (instance) without "
                                 f"prometheus.cluster_labels ({', '.join(labels)}); aggregate by "
                                 f"({by_host(labels)})")
        return self

    @property
    def schedule_set(self) -> ScheduleSet:
        """The declared schedules, compiled: the ``scheduled`` model input and the forecaster's paging hint.

        Query schedules are unresolved here (no windows): the forecaster and the trainer resolve them from
        their history (:meth:`forecaster.contract.schedules.ScheduleSet.resolved`).
        """
        return ScheduleSet(tuple(e.compiled() for e in self.schedules))

    @property
    def hosts(self) -> HostIdentity:
        """How series become hosts and hosts become labels again (forecaster/contract/hosts.py)."""
        return HostIdentity(self.prometheus.cluster_labels)

    @field_validator("signals")
    @classmethod
    def _unique(cls, signals: tuple[Signal, ...]) -> tuple[Signal, ...]:
        if not signals:
            raise ValueError("at least one signal is needed")
        names = [s.name for s in signals]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate signal names: {', '.join(dupes)}")
        return signals

    def signal(self, name: str) -> Signal:
        for sig in self.signals:
            if sig.name == name:
                return sig
        raise KeyError(name)

    def signal_bounds(self) -> dict[str, tuple[float | None, float | None]]:
        """``{name: (min, max)}``: what the input pipeline masks values outside of."""
        return {s.name: (s.min, s.max) for s in self.signals}


def _format_error(source: str, exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "(top level)"
    msg = first["msg"].removeprefix("Value error, ")
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{source}: {where}: {msg}{more}"


def parse_config(data: dict[str, Any], source: str = "config") -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_error(source, exc)) from exc


def load_config(path: Path | str | None, overrides: dict[str, Any] | None = None) -> Config:
    """Load and validate; ``overrides`` maps dotted keys (``prometheus.url``) to values from flags."""
    p = Path(path) if path is not None else None
    try:
        data = read_mapping(p)  # no path: {}, all defaults
    except YamlFileError as exc:
        raise ConfigError(str(exc)) from exc
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[leaf] = value
    return parse_config(data, str(p) if p is not None else "config")
