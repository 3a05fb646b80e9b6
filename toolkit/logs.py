"""The one logging setup of every command: logfmt or JSON lines on stderr.

Called from ``main()`` only, never at import: importing a module must not reconfigure the logging
of whoever imported it (a test run, a notebook).
"""

from __future__ import annotations

import json
import logging
import sys
import warnings
from datetime import UTC, datetime

#: The ``--log.level`` choices; ``warn`` (not ``warning``) as in Prometheus and its exporters.
LEVELS: tuple[str, ...] = ("debug", "info", "warn", "error")
#: The ``--log.format`` choices; the first is the default.
FORMATS: tuple[str, ...] = ("logfmt", "json")

# Libraries some commands load that log tips and device summaries at INFO (Lightning, torch);
# capping them keeps a command's stderr to its own lines. Naming a logger that is never used
# costs nothing, so the list needs no knowledge of which command loads what.
_CHATTY_LIBRARIES = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning",
                     "lightning_utilities", "torch")


def _fields(formatter: logging.Formatter, record: logging.LogRecord) -> dict[str, str]:
    """The fields of one line, in order: time, level, logger, message, then traceback and stack if any."""
    # RFC 3339 in UTC with milliseconds, as Prometheus logs: one token, sortable, no time-zone guessing.
    ts = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    doc = {"ts": ts, "level": record.levelname, "logger": record.name,
           "msg": record.getMessage()}
    if record.exc_info:
        doc["exc"] = formatter.formatException(record.exc_info)
    elif record.exc_text:
        doc["exc"] = record.exc_text
    if record.stack_info:
        doc["stack"] = formatter.formatStack(record.stack_info)
    return doc


class _JsonFormatter(logging.Formatter):
    """One JSON object per line, escaped properly: a quote or a traceback in a message stays valid JSON."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(self, record), ensure_ascii=False)


def logfmt_value(value: str) -> str:
    """A logfmt value: bare when it is one plain word, else double-quoted with ``\\``, ``\"`` and ``\n`` escaped.

    PromQL in a message (``rate(x{job="a"}[5m])``), a path with spaces or a traceback then stays
    one ``key=value`` pair on one line, as go-logfmt writes it for Prometheus.
    """
    if value and not any(c in value for c in ' "=\\') and value.isprintable():
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    escaped = escaped.replace("\t", "\\t")
    return f'"{escaped}"'


class _LogfmtFormatter(logging.Formatter):
    """``ts=... level=... logger=... msg=...`` on one line per record, tracebacks included (``exc=``)."""

    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{key}={logfmt_value(value)}" for key, value in _fields(self, record).items())


def level_number(level: str) -> int:
    """The ``logging`` level of a ``--log.level`` name (``warn`` and ``warning`` both work); ValueError otherwise."""
    name = "WARNING" if level.lower() == "warn" else level.upper()
    number = logging.getLevelName(name)
    if not isinstance(number, int):
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, got {level!r}")
    return number


def setup_logging(level: str = "info", fmt: str = "logfmt") -> None:
    """Send log records at ``level`` and above to stderr as ``fmt`` (``logfmt`` or ``json``), replacing any setup.

    Below debug, library warnings (deprecations, tips) are silenced too: an operator reads the
    command's own lines, and ``--log.level debug`` brings everything back.
    """
    number = level_number(level)
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _LogfmtFormatter())
    logging.basicConfig(level=number, handlers=[handler], force=True)
    for chatty in _CHATTY_LIBRARIES:
        logging.getLogger(chatty).setLevel(max(logging.WARNING, number))
    if number > logging.DEBUG:
        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
