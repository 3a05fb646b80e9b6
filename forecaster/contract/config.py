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
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from toolkit.yamlfile import YamlFileError, read_mapping

DEFAULT_PROMETHEUS_URL = "http://127.0.0.1:9090"
DEFAULT_FORECASTER_ADDRESS = "0.0.0.0:8921"
HORIZON_LABELS: dict[str, int] = {"30m": 1800, "1h": 3600, "2h": 7200, "4h": 14400, "8h": 28800}

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


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

    name: str
    query: str
    unit: str = "ratio"
    min: float | None = 0.0
    max: float | None = 1.0
    threshold: float
    description: str = ""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError("must be lower-case letters, digits and '_', starting with a letter")
        return value

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


DEFAULT_SIGNALS: tuple[Signal, ...] = (
    Signal(
        name="cpu",
        description="CPU utilisation (node-mixin instance:node_cpu_utilisation:rate5m)",
        query='1 - avg by (instance) (rate(node_cpu_seconds_total{mode="idle"}[5m]))',
        threshold=0.9,
    ),
    Signal(
        name="memory",
        description="Memory utilisation (node-mixin instance:node_memory_utilisation:ratio)",
        query="max by (instance) (1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes)",
        threshold=0.9,
    ),
    Signal(
        name="filesystem",
        description="Root filesystem usage",
        query='max by (instance) (1 - node_filesystem_avail_bytes{mountpoint="/",fstype!="tmpfs"}'
        ' / node_filesystem_size_bytes{mountpoint="/",fstype!="tmpfs"})',
        threshold=0.9,
    ),
    Signal(
        name="iowait",
        description="Share of CPU time waiting for I/O",
        query='avg by (instance) (rate(node_cpu_seconds_total{mode="iowait"}[5m]))',
        threshold=0.3,
    ),
)


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
    seasonal_days: int = Field(default=0, ge=0, le=28)

    @model_validator(mode="after")
    def _history(self) -> ModelSection:
        if self.min_history_steps > self.context_steps:
            raise ValueError("min_history_steps cannot exceed context_steps")
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
    level_shift_share: float = Field(default=0.0, ge=0, le=0.5)
    torch_threads: int = Field(default=1, ge=1)
    # False: train through the library's forward, not forecaster/contract/fasttrain.py (same network
    # and loss, about twice the CPU per batch); for when the fast path is in doubt.
    fast_path: bool = True
    lock_file: Path | None = None
    metrics_file: Path | None = None
    # Best-epoch checkpoints and Lightning's CSV logs; None: runs/train under the working directory.
    work_dir: Path | None = None


class Config(_Section):
    """The whole file. The ``exporter`` section belongs to the simulator and is validated there."""

    prometheus: PrometheusSection = PrometheusSection()
    signals: tuple[Signal, ...] = DEFAULT_SIGNALS
    model: ModelSection = ModelSection()
    forecaster: ForecasterSection = ForecasterSection()
    trainer: TrainerSection = TrainerSection()
    exporter: dict[str, Any] = Field(default_factory=dict)

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
