"""The version of the installed ``tft-monitor`` distribution, as every component reports it."""

from __future__ import annotations

from functools import lru_cache

#: The distribution name in pyproject.toml.
DISTRIBUTION = "tft-monitor"


@lru_cache(maxsize=1)
def package_version() -> str:
    """``tft-monitor``'s version, or ``0+unknown`` when running from a checkout that is not installed.

    Never raises: the version is written into every saved model and shown on ``/metrics``, and a
    broken install's metadata must not stop either. Cached because the installed distribution
    cannot change under a running process, and looking it up scans ``sys.path``.
    """
    try:
        from importlib.metadata import version

        return version(DISTRIBUTION)
    except Exception:  # not installed as a distribution, or its metadata is unreadable
        return "0+unknown"
