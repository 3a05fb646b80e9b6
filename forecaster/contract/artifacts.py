"""A model on disk: ``model.safetensors`` plus ``model.json``, and nothing that runs code on load.

The TFT shares some weights, so ``safetensors.torch.save_file(state_dict)`` refuses it;
``save_model``/``load_model`` handle shared tensors. Everything that is not a tensor (the
spec, calibration, signal definitions, training window, scores) is JSON, and the network is
rebuilt through an allow-list: a model file can name only classes this module knows.
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

from forecaster.contract.calibration import BandCalibration, BreachModel
from forecaster.contract.model import ForecastModel, ModelSpec, build_network

WEIGHTS_FILE = "model.safetensors"
META_FILE = "model.json"
# The only network / loss / normaliser combination a model file may ask for.
ALLOWED_NETWORK = {
    "class": "pytorch_forecasting.TemporalFusionTransformer",
    "loss": "pytorch_forecasting.metrics.QuantileLoss",
    "output_transformer": "pytorch_forecasting.data.encoders.TorchNormalizer(identity)",
}
REQUIRED_FIELDS = ("format", "network", "spec", "calibration", "weights_sha256")
# Written by every save; "path" is where a loaded model came from, not part of the model.
_SAVE_FIELDS = (*REQUIRED_FIELDS, "package_version", "saved_at", "path")


class ModelLoadError(Exception):
    """A model directory that cannot be used; the message names the file and the problem."""


def package_version() -> str:
    try:
        from importlib.metadata import version

        return version("tft-monitor")
    except Exception:  # not installed as a distribution (e.g. run from a checkout)
        return "0+unknown"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_model_dir(model: ForecastModel, directory: Path) -> Path:
    """Write the model into ``directory`` atomically: a reader never sees half a model."""
    from safetensors.torch import save_model

    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        weights = tmp / WEIGHTS_FILE
        save_model(model.network, str(weights))
        # What this save measures (checksum, time, version) wins over what the metadata carried
        # from an earlier save or load, so a re-saved model never describes its old copy.
        meta = {
            **{k: v for k, v in model.metadata.items() if k not in _SAVE_FIELDS},
            "format": "tft-monitor-model",
            "network": dict(ALLOWED_NETWORK),
            "spec": model.spec.to_json(),
            "calibration": {
                "band": {"lower": model.band.lower, "upper": model.band.upper,
                         "coverage_before": model.band.coverage_before,
                         "coverage_after": model.band.coverage_after},
                "breach": model.breach.to_json(),
            },
            "weights_sha256": _sha256(weights),
            "package_version": package_version(),
            "saved_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def read_metadata(directory: Path) -> dict[str, Any]:
    path = Path(directory) / META_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelLoadError(f"{path}: missing (not a model directory)") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{path}: not readable JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise ModelLoadError(f"{path}: expected a JSON object")
    for name in REQUIRED_FIELDS:
        if name not in meta:
            raise ModelLoadError(f"{path}: missing field '{name}'")
    if meta["format"] != "tft-monitor-model":
        raise ModelLoadError(f"{path}: format {meta['format']!r} is not a tft-monitor model")
    if meta["network"] != ALLOWED_NETWORK:
        raise ModelLoadError(f"{path}: network {meta['network']!r} is not on the allow-list")
    return meta


def load_model_dir(directory: Path, verify_checksum: bool = True, refit_breach: bool = False) -> ForecastModel:
    """Rebuild a model from its directory, or raise :class:`ModelLoadError` naming the file.

    ``refit_breach`` skips the stored breach model (it gets a blank one) for a caller that is
    about to refit it anyway, so a model whose breach weights predate the current feature set
    can still be recalibrated.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    directory = Path(directory)
    meta = read_metadata(directory)
    meta_path = directory / META_FILE
    try:
        spec = ModelSpec.from_json(meta["spec"])
        cal = meta["calibration"]
        band_data = cal["band"]
        band = BandCalibration([float(v) for v in band_data["lower"]], [float(v) for v in band_data["upper"]],
                               band_data.get("coverage_before"), band_data.get("coverage_after"))
        if len(band.lower) != spec.horizon_steps or len(band.upper) != spec.horizon_steps:
            raise ValueError("calibration.band does not match horizon_steps")
        breach = BreachModel() if refit_breach else BreachModel.from_json(cal["breach"])
    except (KeyError, TypeError, ValueError) as exc:
        detail = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
        raise ModelLoadError(f"{meta_path}: {detail}") from exc

    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelLoadError(f"{weights}: missing")
    if verify_checksum and _sha256(weights) != meta["weights_sha256"]:
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
