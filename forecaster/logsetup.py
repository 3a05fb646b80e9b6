"""Logging for the entry points (called from ``main()`` only, never at import)."""

from __future__ import annotations

import logging
import sys
import warnings

LEVELS = ("debug", "info", "warn", "warning", "error")


def setup_logging(level: str = "info", fmt: str = "logfmt") -> None:
    name = "WARNING" if level.lower() == "warn" else level.upper()
    if fmt == "json":
        pattern = '{"ts":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s","msg":"%(message)s"}'
    else:
        pattern = "ts=%(asctime)s level=%(levelname)s logger=%(name)s msg=%(message)s"
    logging.basicConfig(level=getattr(logging, name), format=pattern, stream=sys.stderr, force=True)
    # Lightning and pytorch-forecasting are chatty at INFO (tips, device summaries); keep ours.
    for noisy in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning",
                  "lightning_utilities", "torch"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    if name != "DEBUG":
        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
