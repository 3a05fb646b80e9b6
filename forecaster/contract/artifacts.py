"""A model on disk: ``model.safetensors`` plus ``model.json``, and nothing that runs code on load.

The TFT shares some weights, so ``safetensors.torch.save_file(state_dict)`` refuses it;
``save_model``/``load_model`` handle shared tensors. Everything that is not a tensor (the
spec, calibration, signal definitions, training window, scores) is JSON, and the network is
rebuilt through an allow-list: a model file can name only classes this module knows.

``model.json`` is read through :class:`ModelFile`, a pydantic model of the fields the loader relies
on; any other field (training window, scores, version) is kept as metadata, unread, so a model
saved by a newer trainer with more metadata still loads.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from forecaster.contract.calibration import BandCalibration, BreachModel
from forecaster.contract.model import ForecastModel, ModelSpec, build_network
from toolkit.version import package_version

WEIGHTS_FILE = "model.safetensors"
META_FILE = "model.json"
# Modes of everything a save (and the registry) writes, whatever the writer's umask: the trainer
# often runs from another user's cron than the forecaster that serves its models, and a model holds
# no secret (the shipped one in models/ is 755/644 too). tempfile's private 0700/0600 would lock
# the forecaster out of every promoted version. Nothing stricter is honoured, on purpose.
DIR_MODE = 0o755
FILE_MODE = 0o644
MODEL_FORMAT = "tft-monitor-model"
# The only network / loss / normaliser combination a model file may ask for.
ALLOWED_NETWORK = {
    "class": "pytorch_forecasting.TemporalFusionTransformer",
    "loss": "pytorch_forecasting.metrics.QuantileLoss",
    "output_transformer": "pytorch_forecasting.data.encoders.TorchNormalizer(identity)",
}


class _Band(BaseModel):
    """The band's per-horizon factors; their length is checked against the spec once that is parsed."""

    model_config = ConfigDict(frozen=True)

    lower: list[float]
    upper: list[float]
    coverage_before: float | None = None
    coverage_after: float | None = None
    anchor: list[float] | None = None  # absent in models saved before the median's anchor


class _Calibration(BaseModel):
    model_config = ConfigDict(frozen=True)

    band: _Band
    # Optional here only so that a model about to get a new breach model (``refit_breach``) loads
    # without one; :func:`load_model_dir` requires it otherwise.
    breach: dict[str, Any] | None = None


class ModelFile(BaseModel):
    """What ``model.json`` must hold; unknown fields are ignored here (they are metadata, not a mistake)."""

    model_config = ConfigDict(frozen=True)

    format: str
    network: dict[str, str]
    spec: dict[str, Any]  # parsed by ModelSpec.from_json, which knows the spec's own rules
    calibration: _Calibration
    weights_sha256: str

    # "before" validators, so that anything but the exact values (a string, another dict) gets the
    # message naming the value rather than a type error.
    @field_validator("format", mode="before")
    @classmethod
    def _ours(cls, value: Any) -> Any:
        if value != MODEL_FORMAT:
            raise ValueError(f"format {value!r} is not a tft-monitor model")
        return value

    @field_validator("network", mode="before")
    @classmethod
    def _allowed(cls, value: Any) -> Any:
        if value != ALLOWED_NETWORK:
            raise ValueError(f"network {value!r} is not on the allow-list")
        return value


# Written by every save; "path" is where a loaded model came from, not part of the model.
_SAVE_FIELDS = (*ModelFile.model_fields, "package_version", "saved_at", "path")


class ModelLoadError(Exception):
    """A model directory that cannot be used; the message names the file and the problem."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def make_readable_dirs(directory: Path) -> None:
    """Create ``directory`` and its missing parents with :data:`DIR_MODE`, whatever the umask.

    Only directories created here get that mode: one that exists already is left as its owner set it.
    """
    directory = Path(directory)
    missing = [d for d in (directory, *directory.parents) if not d.exists()]
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:  # made meanwhile by another process: not ours to change
            continue
        os.chmod(d, DIR_MODE)


def save_model_dir(model: ForecastModel, directory: Path) -> Path:
    """Write the model into ``directory`` atomically: a reader never sees half a model.

    The directory and its files get :data:`DIR_MODE` and :data:`FILE_MODE`, so that a forecaster
    running as another user can load them.
    """
    from safetensors.torch import save_model

    directory = Path(directory)
    make_readable_dirs(directory.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        weights = tmp / WEIGHTS_FILE
        save_model(model.network, str(weights))
        # What this save measures (checksum, time, version) wins over what the metadata carried
        # from an earlier save or load, so a re-saved model never describes its old copy.
        meta = {
            **{k: v for k, v in model.metadata.items() if k not in _SAVE_FIELDS},
            "format": MODEL_FORMAT,
            "network": dict(ALLOWED_NETWORK),
            "spec": model.spec.to_json(),
            "calibration": {
                "band": {"lower": model.band.lower, "upper": model.band.upper,
                         "coverage_before": model.band.coverage_before,
                         "coverage_after": model.band.coverage_after, "anchor": model.band.anchor},
                "breach": model.breach.to_json(),
            },
            "weights_sha256": _sha256(weights),
            "package_version": package_version(),
            "saved_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
        for written in (weights, tmp / META_FILE):
            os.chmod(written, FILE_MODE)
        os.chmod(tmp, DIR_MODE)  # mkdtemp's 0700 would hide the version from every other user
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def _problem(exc: ValidationError) -> str:
    """One line naming the field: a missing field first (the most common damage), else the first error."""
    errors = exc.errors()
    first = next((e for e in errors if e["type"] == "missing"), errors[0])
    where = ".".join(str(part) for part in first["loc"])
    if first["type"] == "missing":
        return f"missing field '{where}'"
    if first["type"] == "value_error":  # ModelFile's own checks, whose messages name the field
        return first["msg"].removeprefix("Value error, ")
    return f"{where}: {first['msg']}"


def _read_model_file(directory: Path) -> tuple[dict[str, Any], ModelFile]:
    """The raw JSON object (all metadata) and its validated fields, or a ModelLoadError naming the file."""
    path = Path(directory) / META_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelLoadError(f"{path}: missing (not a model directory)") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{path}: not readable JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise ModelLoadError(f"{path}: expected a JSON object")
    try:
        return meta, ModelFile.model_validate(meta)
    except ValidationError as exc:
        raise ModelLoadError(f"{path}: {_problem(exc)}") from exc


def read_metadata(directory: Path) -> dict[str, Any]:
    """The whole ``model.json`` object, once it has passed :class:`ModelFile`'s checks."""
    return _read_model_file(directory)[0]


def load_model_dir(directory: Path, verify_checksum: bool = True, refit_breach: bool = False) -> ForecastModel:
    """Rebuild a model from its directory, or raise :class:`ModelLoadError` naming the file.

    ``refit_breach`` skips the stored breach model (it gets a blank one) for a caller that is
    about to refit it anyway, so a model whose breach weights predate the current feature set
    can still be recalibrated.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    directory = Path(directory)
    meta, model_file = _read_model_file(directory)
    meta_path = directory / META_FILE
    cal = model_file.calibration
    if cal.breach is None and not refit_breach:
        raise ModelLoadError(f"{meta_path}: missing field 'calibration.breach'")
    try:
        spec = ModelSpec.from_json(model_file.spec)
        band = BandCalibration(list(cal.band.lower), list(cal.band.upper), cal.band.coverage_before,
                               cal.band.coverage_after, None if cal.band.anchor is None else list(cal.band.anchor))
        factors = [band.lower, band.upper, *([band.anchor] if band.anchor is not None else [])]
        if any(len(f) != spec.horizon_steps for f in factors):
            raise ValueError("calibration.band does not match horizon_steps")
        breach = BreachModel() if refit_breach or cal.breach is None else BreachModel.from_json(cal.breach)
    except (KeyError, TypeError, ValueError) as exc:
        detail = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
        raise ModelLoadError(f"{meta_path}: {detail}") from exc

    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelLoadError(f"{weights}: missing")
    if verify_checksum and _sha256(weights) != model_file.weights_sha256:
        raise ModelLoadError(f"{weights}: checksum does not match model.json (corrupt or replaced)")
    network = build_network(spec)
    try:
        missing, unexpected = load_model(network, str(weights), strict=False)
    except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
        raise ModelLoadError(f"{weights}: cannot load weights ({exc})") from exc
    if missing or unexpected:
        raise ModelLoadError(f"{weights}: weights do not fit the spec in model.json "
                             f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})")
    network.eval()
    extra = {k: v for k, v in meta.items() if k not in ("network", "spec", "calibration", "format")}
    extra["path"] = str(directory)
    return ForecastModel(spec, network, band, breach, extra)
