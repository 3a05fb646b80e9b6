"""Versioned model registry with an atomically switched ``latest`` pointer.

Layout::

    <root>/global/versions/<version>/{model.safetensors,model.json}
    <root>/global/latest                  # text file: the promoted version
    <root>/hosts/<instance>/versions/...  # per-host models (``tft-trainer train --per-server``)
    <root>/hosts/<instance>/latest

A version directory is complete before it gets its final name (written under a temporary name,
then renamed), and ``latest`` is replaced with ``os.replace``, so a forecaster reading the
registry while the trainer writes never sees half a model or a dangling pointer.

Everything written here is world-readable (directories 0755, files 0644, whatever the umask; see
:data:`~forecaster.contract.artifacts.DIR_MODE`): the trainer and the forecaster often run as
different users. ``latest`` is trusted no further than the registry: it must name a version (a
plain name, see :data:`VERSION_NAME`) whose directory lies inside the registry, symlinks resolved,
so that a pointer written by hand or by a broken tool cannot serve a model from anywhere else.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from forecaster.contract.artifacts import FILE_MODE, ModelLoadError, save_model_dir
from forecaster.contract.model import ForecastModel

GLOBAL_SCOPE = "global"
# The trainer's run metrics (Prometheus text format) live next to the registry it writes, so the
# forecaster that reads the registry finds them without being told; one name for both sides.
TRAINER_METRICS_FILE = "trainer_metrics.prom"
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")
#: What a version may be called: one path component, no leading dot (temporary directories start
#: with one), so neither ``..`` nor an absolute path nor a subdirectory.
VERSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


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

    def _version_dir(self, scope: str, version: str, where: Path) -> Path:
        """The directory of ``version``, or a ModelLoadError (naming ``where``) if it may not be one.

        The name must be a plain version name, and the directory, once symlinks are resolved,
        must lie inside the registry: ``latest`` is a text file anyone with write access can edit.
        """
        if not VERSION_NAME.fullmatch(version):
            raise ModelLoadError(f"{where}: {version!r} is not a version name (letters, digits, '_', '.', '-', "
                                 "not starting with '.')")
        path = self._scope_dir(scope) / "versions" / version
        if path.exists() and not path.resolve().is_relative_to(self.root.resolve()):
            raise ModelLoadError(f"{where}: version {version} resolves outside the registry ({path.resolve()})")
        return path

    def add(self, model: ForecastModel, scope: str = GLOBAL_SCOPE, version: str | None = None) -> str:
        """Store a model as a new version (not yet promoted); returns the version name."""
        version = version or new_version()
        self._version_dir(scope, version, self._scope_dir(scope) / "versions")
        model.metadata["version"] = version
        model.metadata["scope"] = scope
        save_model_dir(model, self._scope_dir(scope) / "versions" / version)
        return version

    def promote(self, version: str, scope: str = GLOBAL_SCOPE) -> None:
        """Point ``latest`` at ``version`` in one atomic rename."""
        self._version_dir(scope, version, self._scope_dir(scope) / "versions")
        if version not in self.versions(scope):
            raise ModelLoadError(f"{self._scope_dir(scope) / 'versions' / version}: no such version")
        sdir = self._scope_dir(scope)
        fd, tmp = tempfile.mkstemp(prefix=".latest.", dir=sdir)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(version + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, FILE_MODE)  # mkstemp's 0600 would hide the pointer from a forecaster of another user
            os.replace(tmp, sdir / "latest")
        except BaseException:  # a full disk, or a stopped trainer (trainer.cron.Stopped): no stray pointer left
            Path(tmp).unlink(missing_ok=True)
            raise

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
        """The promoted version's directory; None if nothing is promoted; ModelLoadError if ``latest`` is bad."""
        version = self.latest_version(scope)
        if version is None:
            return None
        path = self._version_dir(scope, version, self._scope_dir(scope) / "latest")
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
