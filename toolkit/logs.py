"""The one logging setup of every command: logfmt or JSON lines on stderr.

Called from ``main()`` only, never at import: importing a module must not reconfigure the logging
of whoever imported it (a test run, a notebook).
"""

from __future__ import annotations

import json
import logging
import sys
import warnings

#: The ``--log.level`` choices; ``warn`` (not ``warning``) as in Prometheus and its exporters.
LEVELS: tuple[str, ...] = ("debug", "info", "warn", "error")
#: The ``--log.format`` choices; the first is the default.
FORMATS: tuple[str, ...] = ("logfmt", "json")

# Libraries some commands load that log tips and device summaries at INFO (Lightning, torch);
# capping them keeps a command's stderr to its own lines. Naming a logger that is never used
# costs nothing, so the list needs no knowledge of which command loads what.
_CHATTY_LIBRARIES = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning",
                     "lightning_utilities", "torch")
_LOGFMT = "ts=%(asctime)s level=%(levelname)s logger=%(name)s msg=%(message)s"


class _JsonFormatter(logging.Formatter):
    """One JSON object per line, escaped properly: a quote or a traceback in a message stays valid JSON."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {"ts": self.formatTime(record), "level": record.levelname, "logger": record.name,
               "msg": record.getMessage()}
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exc"] = record.exc_text
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return json.dumps(doc, ensure_ascii=False)


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
    handler.setFormatter(_JsonFormatter() if fmt == "json" else logging.Formatter(_LOGFMT))
    logging.basicConfig(level=number, handlers=[handler], force=True)
    for chatty in _CHATTY_LIBRARIES:
        logging.getLogger(chatty).setLevel(max(logging.WARNING, number))
    if number > logging.DEBUG:
        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
