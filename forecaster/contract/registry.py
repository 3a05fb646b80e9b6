"""Versioned model registry with an atomically switched ``latest`` pointer.

Layout::

    <root>/global/versions/<version>/{model.safetensors,model.json}
    <root>/global/latest                  # text file: the promoted version
    <root>/hosts/<instance>/versions/...  # per-host models (``tft-trainer train --per-server``)
    <root>/hosts/<instance>/latest

A version directory is complete before it gets its final name (written under a temporary name,
then renamed), and ``latest`` is replaced with ``os.replace``, so a forecaster reading the
registry while the trainer writes never sees half a model or a dangling pointer.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from forecaster.contract.artifacts import ModelLoadError, save_model_dir
from forecaster.contract.model import ForecastModel

GLOBAL_SCOPE = "global"
# The trainer's run metrics (Prometheus text format) live next to the registry it writes, so the
# forecaster that reads the registry finds them without being told; one name for both sides.
TRAINER_METRICS_FILE = "trainer_metrics.prom"
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def host_scope(instance: str) -> str:
    """Scope name for a host's own model; instance labels like ``db-1:9100`` become file-safe."""
    return f"hosts/{_SAFE.sub('_', instance)}"


def new_version() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


class Registry:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def _scope_dir(self, scope: str) -> Path:
        return self.root / scope

    def versions(self, scope: str = GLOBAL_SCOPE) -> list[str]:
        vdir = self._scope_dir(scope) / "versions"
        if not vdir.is_dir():
            return []
        return sorted(p.name for p in vdir.iterdir() if p.is_dir() and not p.name.startswith("."))

    def add(self, model: ForecastModel, scope: str = GLOBAL_SCOPE, version: str | None = None) -> str:
        """Store a model as a new version (not yet promoted); returns the version name."""
        version = version or new_version()
        model.metadata["version"] = version
        model.metadata["scope"] = scope
        save_model_dir(model, self._scope_dir(scope) / "versions" / version)
        return version

    def promote(self, version: str, scope: str = GLOBAL_SCOPE) -> None:
        """Point ``latest`` at ``version`` in one atomic rename."""
        if version not in self.versions(scope):
            raise ModelLoadError(f"{self._scope_dir(scope) / 'versions' / version}: no such version")
        sdir = self._scope_dir(scope)
        fd, tmp = tempfile.mkstemp(prefix=".latest.", dir=sdir)
        with os.fdopen(fd, "w") as fh:
            fh.write(version + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, sdir / "latest")

    def latest_version(self, scope: str = GLOBAL_SCOPE) -> str | None:
        pointer = self._scope_dir(scope) / "latest"
        try:
            version = pointer.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ModelLoadError(f"{pointer}: unreadable ({exc.strerror})") from exc
        return version or None

    def latest_path(self, scope: str = GLOBAL_SCOPE) -> Path | None:
        version = self.latest_version(scope)
        if version is None:
            return None
        path = self._scope_dir(scope) / "versions" / version
        if not path.is_dir():
            raise ModelLoadError(f"{self._scope_dir(scope) / 'latest'}: points at missing version {version}")
        return path

    def host_scopes(self) -> list[str]:
        hosts = self.root / "hosts"
        if not hosts.is_dir():
            return []
        return sorted(f"hosts/{p.name}" for p in hosts.iterdir() if (p / "latest").is_file())

    def prune(self, scope: str = GLOBAL_SCOPE, keep: int = 5) -> list[str]:
        """Delete old versions, never the promoted one; returns what was removed."""
        current = self.latest_version(scope)
        candidates = [v for v in self.versions(scope) if v != current]
        old = candidates[:-keep] if keep > 0 else candidates
        removed = []
        for version in old:
            shutil.rmtree(self._scope_dir(scope) / "versions" / version, ignore_errors=True)
            removed.append(version)
        return removed
