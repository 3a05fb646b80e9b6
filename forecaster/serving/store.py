"""Which model serves which host: registry watching, hot reload, per-host preference, fallback.

The store is the forecaster's only way to models. :meth:`ModelStore.refresh` is cheap when
nothing changed (a few ``stat`` calls), so the service calls it before every cycle and from a
watcher job: a newly promoted model is picked up without a restart.

Rules, and why:

* A model is identified by its directory and the size and mtime of its two files, not only
  by the registry's ``latest`` pointer: a file replaced in place (by hand, by a broken copy) is
  noticed too.
* A model that fails to load never replaces a working one: the last good model keeps serving,
  the error is counted (``stage="model_load"``) and logged once per change, not once per cycle.
* With no loadable global model the store says so (:attr:`ModelSet.fallback_reason`), and the
  cycle serves the flagged seasonal-naive fallback; the next refresh that finds a valid model
  ends the fallback.
* A host's own model (``hosts/<instance>``, trained with ``--per-server``) is preferred for
  that host, for the signals it knows.
* A model must use the configured step (``model.step_seconds``): serving it at another step
  would feed it calendar features and history lengths it never saw.
* A loaded TFT is served through the fast forward pass only once it has given the library's
  numbers on a small synthetic batch (:func:`~forecaster.contract.fastpath.for_serving`); a model
  that fails that check is served by the library's forward instead, still served rather than
  rejected, and the failure is counted (``ModelSet.fast_path_parity_failures``).

``source`` may be a registry root or a single model directory (one holding ``model.json``),
so ``--model.dir`` can point at either.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from forecaster.contract.artifacts import META_FILE, WEIGHTS_FILE, ModelLoadError
from forecaster.contract.registry import GLOBAL_SCOPE, Registry, host_scope

if TYPE_CHECKING:
    from forecaster.contract.model import ForecastModel

log = logging.getLogger(__name__)

KIND_HOST, KIND_GLOBAL, KIND_FALLBACK = "host", "global", "fallback"
FALLBACK_VERSION = "seasonal_naive"


def default_registry_dir() -> Path:
    """The model registry shipped in the repository: ``<repo>/models``."""
    import forecaster

    return Path(forecaster.__file__).resolve().parent.parent / "models"


def parse_time(text: Any) -> float | None:
    """Unix seconds from an ISO 8601 string (``Z`` allowed); None when absent or unparsable."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass(frozen=True)
class LoadedModel:
    """A model in memory plus where it came from."""

    model: ForecastModel
    scope: str
    version: str
    trained_at: str
    path: Path
    key: tuple[Any, ...]
    fast_path: bool = False  # served through the checked fast forward pass, not the library's

    @property
    def trained_at_unix(self) -> float | None:
        return parse_time(self.trained_at)

    @property
    def signals(self) -> list[str]:
        return list(self.model.spec.signals)


@dataclass(frozen=True)
class ModelSet:
    """An immutable view of the models one cycle uses (the store may change meanwhile)."""

    global_model: LoadedModel | None
    host_models: dict[str, LoadedModel] = field(default_factory=dict)  # by scope
    fallback_reason: str | None = None
    last_error: str | None = None
    fast_path_parity_failures: int = 0  # models the fast path failed its load-time check for, since start

    @property
    def in_fallback(self) -> bool:
        return self.global_model is None

    def for_series(self, instance: str, signal: str) -> tuple[str, LoadedModel | None]:
        """(kind, model) serving ``instance``/``signal``: the host's own, the global, or the fallback."""
        if self.host_models:
            own = self.host_models.get(host_scope(instance))
            if own is not None and signal in own.model.spec.signals:
                return KIND_HOST, own
        if self.global_model is not None and signal in self.global_model.model.spec.signals:
            return KIND_GLOBAL, self.global_model
        return KIND_FALLBACK, None

    @property
    def cutoffs(self) -> dict[str, float]:
        """The global model's breach-probability cut-offs by horizon label (empty in fallback).

        Per-host models have cut-offs of their own, but the alert rules compare every series
        with one cut-off per horizon: the global model's is the one exported and used.
        """
        if self.global_model is None:
            return {}
        return dict(self.global_model.model.breach.cutoffs)

    def loaded(self) -> list[LoadedModel]:
        models = [self.global_model] if self.global_model is not None else []
        return models + [self.host_models[s] for s in sorted(self.host_models)]


def _file_key(directory: Path) -> tuple[Any, ...]:
    parts: list[Any] = [str(directory)]
    for name in (META_FILE, WEIGHTS_FILE):
        try:
            st = os.stat(directory / name)
            parts += [st.st_size, st.st_mtime_ns, st.st_ino]
        except OSError:
            parts += [None, None, None]
    return tuple(parts)


def _default_loader(path: Path) -> ForecastModel:
    from forecaster.contract.artifacts import load_model_dir

    return load_model_dir(path)


class ModelStore:
    """Loads and reloads models from a registry (or one model directory); thread-safe.

    ``fast_path`` (``forecaster.fast_path``) False serves every model through the library's
    forward, for when the fast path itself is in doubt.
    """

    def __init__(self, source: Path | str, *, step_seconds: int, signals: list[str],
                 loader: Callable[[Path], ForecastModel] | None = None,
                 on_error: Callable[[str], None] | None = None, fast_path: bool = True) -> None:
        self.source = Path(source)
        self.step_seconds = step_seconds
        self.signals = list(signals)
        self.fast_path = fast_path
        self._parity_failures = 0
        self._loader = loader or _default_loader
        self._on_error = on_error
        self._lock = threading.Lock()
        self._models: dict[str, LoadedModel] = {}
        self._failed: dict[str, tuple[tuple[Any, ...], str]] = {}  # scope -> (key, message)
        self._fallback_reason: str | None = "no model loaded yet"
        self._missing: str | None = None
        self._last_error: str | None = None

    @property
    def single_directory(self) -> bool:
        return (self.source / META_FILE).is_file()

    def current(self) -> ModelSet:
        with self._lock:
            hosts = {s: m for s, m in self._models.items() if s != GLOBAL_SCOPE}
            return ModelSet(self._models.get(GLOBAL_SCOPE), hosts, self._fallback_reason, self._last_error,
                            fast_path_parity_failures=self._parity_failures)

    def refresh(self) -> list[str]:
        """Load whatever changed; returns the new load errors (one line each, already logged)."""
        with self._lock:
            errors: list[str] = []
            wanted = self._wanted(errors)
            for scope in [s for s in self._models if s not in wanted]:
                log.info("model %s is gone from the registry; no longer served", scope)
                del self._models[scope]
            for scope, path in wanted.items():
                self._load_if_changed(scope, path, errors)
            if GLOBAL_SCOPE in self._models:
                self._fallback_reason = None
            elif GLOBAL_SCOPE in self._failed:
                self._fallback_reason = self._failed[GLOBAL_SCOPE][1]
            else:
                self._fallback_reason = self._missing or f"no model in {self.source} (no {GLOBAL_SCOPE}/latest)"
            for message in errors:
                log.error("model: %s", message)
                if self._on_error is not None:
                    self._on_error(message)
            if errors:
                self._last_error = errors[-1]
            elif not self._failed:  # every failure is over (fixed, replaced or gone): stop showing it
                self._last_error = None
            return errors

    def _wanted(self, errors: list[str]) -> dict[str, Path]:
        """The model directory each scope should serve now."""
        self._missing = None
        if self.single_directory:
            return {GLOBAL_SCOPE: self.source}
        if not self.source.is_dir():
            if GLOBAL_SCOPE in self._models:  # the registry vanished: keep serving what we have
                return {s: m.path for s, m in self._models.items()}
            self._missing = f"model registry {self.source} does not exist"
            return {}
        registry = Registry(self.source)
        wanted: dict[str, Path] = {}
        for scope in [GLOBAL_SCOPE, *registry.host_scopes()]:
            try:
                path = registry.latest_path(scope)
            except ModelLoadError as exc:
                self._report_once(scope, ("pointer", str(exc)), _one_line(str(exc)), errors)
                if scope in self._models:
                    wanted[scope] = self._models[scope].path
                continue
            failed = self._failed.get(scope)
            if failed is not None and failed[0][:1] == ("pointer",):
                del self._failed[scope]  # the pointer is readable again
            if path is not None:
                wanted[scope] = path
        return wanted

    def _report_once(self, scope: str, key: tuple[Any, ...], message: str, errors: list[str]) -> None:
        previous = self._failed.get(scope)
        if previous is None or previous[0] != key:
            self._failed[scope] = (key, message)
            errors.append(message)

    def _load_if_changed(self, scope: str, path: Path, errors: list[str]) -> None:
        key = _file_key(path)
        current = self._models.get(scope)
        failed = self._failed.get(scope)
        if current is not None and current.key == key:
            if failed is not None and failed[0][:1] != ("pointer",):
                del self._failed[scope]  # the served files are back: that failure is over
            return
        if failed is not None and failed[0] == key:
            return  # already reported; wait for the files to change
        began = time.monotonic()
        try:
            model = self._loader(path)
            self._check(model, path)
        except ModelLoadError as exc:
            log.debug("loading %s failed", path, exc_info=True)  # the traceback, for whoever asks for it
            self._report_once(scope, key, _keeping(_one_line(str(exc)), current), errors)
            return
        except Exception as exc:  # a loader bug or a library error must not stop the service
            log.debug("loading %s failed", path, exc_info=True)
            self._report_once(scope, key, _keeping(_one_line(f"{path}: cannot load ({type(exc).__name__}: {exc})"),
                                                   current), errors)
            return
        self._failed.pop(scope, None)
        meta = model.metadata
        version = str(meta.get("version") or path.name)
        trained_at = str(meta.get("trained_at") or meta.get("saved_at") or "")
        model, fast_path, how = self._for_serving(model, scope, version)
        self._models[scope] = LoadedModel(model, scope, version, trained_at, path, key, fast_path)
        what = "reloaded" if current is not None else "loaded"
        log.info("%s model %s version %s (trained %s) from %s in %.1fs; %s", what, scope, version,
                 trained_at or "at an unknown time", path, time.monotonic() - began, how)

    def _for_serving(self, model: ForecastModel, scope: str, version: str) -> tuple[ForecastModel, bool, str]:
        """The model with the network it is served through: the fast path if on and checked."""
        from forecaster.contract.fastpath import for_serving
        from forecaster.contract.model import ForecastModel

        served = for_serving(model.network, model.spec, enabled=self.fast_path,
                             label=f"model {scope} version {version}")
        if served.parity_failed:
            self._parity_failures += 1
        if served.network is model.network:
            return model, served.fast_path, served.reason
        return (ForecastModel(model.spec, served.network, model.band, model.breach, model.metadata),
                served.fast_path, served.reason)

    def _check(self, model: ForecastModel, path: Path) -> None:
        spec = model.spec
        if spec.step_seconds != self.step_seconds:
            raise ModelLoadError(f"{path}: model step is {spec.step_seconds}s but model.step_seconds in the "
                                 f"configuration is {self.step_seconds}s")
        if not set(spec.signals) & set(self.signals):
            raise ModelLoadError(f"{path}: the model knows none of the configured signals "
                                 f"(model: {', '.join(spec.signals)})")


#: The longest load error kept (logged, counted, in /api/v1/status); the rest is in the debug log.
MESSAGE_LIMIT = 400


def _one_line(message: str) -> str:
    """One line of at most :data:`MESSAGE_LIMIT` characters.

    torch's "Error(s) in loading state_dict" is one line per mismatched tensor: about 180
    lines for a model whose spec does not fit its weights, once in the log per change.
    """
    lines = message.strip().splitlines() or [""]
    flat = " ".join(" ".join(line.split()) for line in lines)
    more = f" (+{len(lines) - 1} more lines at debug level)" if len(lines) > 1 else ""
    if len(flat) + len(more) > MESSAGE_LIMIT:
        flat = flat[:MESSAGE_LIMIT - len(more) - 1] + "…"
    return flat + more


def _keeping(message: str, current: LoadedModel | None) -> str:
    if current is None:
        return message
    return f"{message}; still serving version {current.version}"
