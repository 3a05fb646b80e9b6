"""The ``exporter:`` section of the shared YAML config, and the small parsers the CLI needs.

Only this section belongs to the simulator: the file is read by :func:`toolkit.yamlfile.read_mapping`
(as every component reads it), the ``exporter`` mapping is validated here and every other section is
ignored (other components validate their own). Loading returns a valid :class:`ExporterSection` or raises
:class:`ConfigError` with one printable line.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from toolkit.http import parse_listen_address
from toolkit.yamlfile import YamlFileError, read_mapping

#: Fixed, documented default port: outside node_exporter's crowded 9100-9999 range.
DEFAULT_LISTEN_ADDRESS = "0.0.0.0:8920"
DEFAULT_HOSTS = 20
DEFAULT_SCENARIO = "degrading"
DEFAULT_SEED = 42
DEFAULT_JOB = "node"

_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d|w)?$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


class ConfigError(Exception):
    """A configuration or usage problem; the message is one line meant for the user."""


def parse_time(value: str | float | int) -> float:
    """Unix seconds from unix seconds (number or string) or ISO 8601 (naive means UTC)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValueError(f"invalid time {value!r}")
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"invalid time {text!r} (use ISO 8601 like 2024-05-01T12:00:00Z or unix seconds)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def parse_duration(value: str | float | int) -> float:
    """Seconds from ``90``, ``60s``, ``5m``, ``2h``, ``1d``, ``1w``."""
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION_RE.match(str(value).strip())
        if match is None:
            raise ValueError(f"invalid duration {value!r} (use e.g. 60s, 5m, 2h)")
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if seconds <= 0:
        raise ValueError(f"duration must be positive, got {value!r}")
    return seconds


class ExporterSection(BaseModel):
    """Settings of the fleet simulator (``exporter:`` in the YAML file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hosts: int = Field(default=DEFAULT_HOSTS, ge=1, le=10000)
    scenario: Literal["healthy", "degrading", "critical"] = DEFAULT_SCENARIO
    seed: int = DEFAULT_SEED
    #: Timestamp the incident schedule is built around (ISO 8601 or unix seconds); ``None``
    #: means the process start time, rounded down to the minute.
    anchor: str | float | None = None
    listen_address: str = DEFAULT_LISTEN_ADDRESS
    #: ``job`` label written into backfilled series; must match the scrape job's name.
    job: str = Field(default=DEFAULT_JOB, min_length=1)
    #: Scheduled jobs (exporter.jobs: a nightly backup, a weekly batch) on top of the scenario.
    scheduled_jobs: bool = False
    #: Led incidents (exporter.incidents.LED_KINDS: an I/O-wait climb 60-90 min ahead of a CPU breach)
    #: in history slots the scenario leaves empty. Off by default: the fleet is then unchanged.
    led_incidents: bool = False

    @field_validator("anchor")
    @classmethod
    def _anchor(cls, value: str | float | None) -> str | float | None:
        if value is not None:
            parse_time(value)
        return value

    @field_validator("listen_address")
    @classmethod
    def _address(cls, value: str) -> str:
        parse_listen_address(value)
        return value

    def anchor_time(self, now: float) -> float:
        """The anchor in unix seconds; defaults to ``now`` rounded down to the minute."""
        if self.anchor is None:
            return float(math.floor(now / 60.0) * 60)
        return parse_time(self.anchor)


#: The command-line flag that overrides each field, to name it in error messages.
FLAGS: dict[str, str] = {"hosts": "--hosts", "scenario": "--scenario", "seed": "--seed",
                         "anchor": "--scenario.anchor", "listen_address": "--web.listen-address", "job": "--job",
                         "scheduled_jobs": "--scheduled-jobs", "led_incidents": "--led-incidents"}


def _format_error(source: str, exc: ValidationError, from_flags: set[str]) -> str:
    first = exc.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else ""
    msg = first["msg"].removeprefix("Value error, ")
    if field in from_flags and field in FLAGS:
        where = FLAGS[field]
    else:
        where = f"{source}: " + ".".join(str(part) for part in ("exporter", *first["loc"]))
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {msg}{more}"


def read_section(path: Path | str | None) -> dict[str, Any]:
    """The raw ``exporter`` mapping of a YAML file ({} without a file or section)."""
    try:
        data = read_mapping(path)
    except YamlFileError as exc:
        raise ConfigError(str(exc)) from exc
    section = data.get("exporter")
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: exporter: must be a mapping")
    return dict(section)


def load_exporter_config(path: Path | str | None = None, overrides: dict[str, Any] | None = None) -> ExporterSection:
    """Read the file's ``exporter`` section, apply flag ``overrides`` (None = not given), validate."""
    data = read_section(path)
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    data.update(given)
    try:
        return ExporterSection.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_error(str(path) if path else "config", exc, set(given))) from exc
