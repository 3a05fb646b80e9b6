"""The TFT: how it is built from a JSON-able spec, and how it turns windows into forecasts.

The network is pytorch-forecasting's ``TemporalFusionTransformer`` constructed directly from
the feature layout in :mod:`forecaster.contract.features` (not through ``TimeSeriesDataSet``), so that
serving needs no fitted dataset object and the whole model rebuilds from JSON. Inference
calls the network in chunks, which is several times cheaper than ``predict()`` at thousands
of series.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from forecaster.contract.calibration import (
    BREACH_HORIZONS,
    BandCalibration,
    BreachModel,
    breach_features,
)
from forecaster.contract.features import (
    STATIC_REALS,
    WindowBatch,
    WindowRules,
    known_reals,
    steps_per_day,
    unknown_reals,
    x_reals,
)

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

QUANTILES: tuple[float, float, float] = (0.1, 0.5, 0.9)
FORMAT_VERSION = 1


@dataclass
class ModelSpec:
    """Everything needed to rebuild the network; stored as the ``"spec"`` field of the model
    directory's ``model.json``, next to ``model.safetensors`` (see :mod:`forecaster.contract.artifacts`)."""

    signals: list[str]
    context_steps: int = 288
    horizon_steps: int = 96
    step_seconds: int = 300
    hidden_size: int = 32
    attention_heads: int = 8
    hidden_continuous_size: int = 16
    dropout: float = 0.1
    min_history_steps: int = 72
    seasonal_days: int = 0
    quantiles: list[float] = field(default_factory=lambda: list(QUANTILES))
    format_version: int = FORMAT_VERSION

    @property
    def lookback_steps(self) -> int:
        """Steps of history one window reads: the context, and the days its same-time inputs reach back."""
        return self.context_steps + self.seasonal_days * steps_per_day(self.step_seconds)

    def window_rules(self, min_history: int | None = None, **relaxed: Any) -> WindowRules:
        """How windows are cut for this model; ``relaxed`` overrides the staleness/gap rules."""
        return WindowRules(self.context_steps, self.horizon_steps,
                           self.min_history_steps if min_history is None else min_history,
                           seasonal_days=self.seasonal_days, **relaxed)

    def signal_codes(self) -> dict[str, int]:
        """Embedding index per signal; 0 is kept for signals the model never saw."""
        return {s: i + 1 for i, s in enumerate(self.signals)}

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelSpec:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(unknown)}")
        if "signals" not in data:
            raise ValueError("missing field 'signals'")
        spec = cls(**data)
        if spec.format_version != FORMAT_VERSION:
            raise ValueError(f"format_version {spec.format_version} is not supported "
                             f"(this version reads {FORMAT_VERSION})")
        if not 0 <= spec.seasonal_days <= 28:
            raise ValueError(f"seasonal_days must be between 0 and 28, not {spec.seasonal_days}")
        if list(spec.quantiles) != list(QUANTILES):
            raise ValueError(f"quantiles must be {list(QUANTILES)}")
        return spec


def build_network(spec: ModelSpec) -> torch.nn.Module:
    """Construct the TFT for ``spec`` with freshly initialised weights."""
    from pytorch_forecasting import TemporalFusionTransformer
    from pytorch_forecasting.data.encoders import TorchNormalizer
    from pytorch_forecasting.metrics import QuantileLoss

    unknown = unknown_reals(spec.signals)
    n_codes = len(spec.signals) + 1
    with warnings.catch_warnings():
        # Lightning's save_hyperparameters warns that loss modules are stored twice; harmless here.
        warnings.simplefilter("ignore")
        return _tft(TemporalFusionTransformer, QuantileLoss, TorchNormalizer, spec, unknown, n_codes)


def _tft(TemporalFusionTransformer: Any, QuantileLoss: Any, TorchNormalizer: Any, spec: ModelSpec,
         unknown: list[str], n_codes: int) -> torch.nn.Module:
    return TemporalFusionTransformer(
        hidden_size=spec.hidden_size,
        lstm_layers=1,
        dropout=spec.dropout,
        output_size=len(spec.quantiles),
        loss=QuantileLoss(quantiles=list(spec.quantiles)),
        attention_head_size=spec.attention_heads,
        max_encoder_length=spec.context_steps,
        static_categoricals=["signal"],
        static_reals=list(STATIC_REALS),
        time_varying_categoricals_encoder=[],
        time_varying_categoricals_decoder=[],
        time_varying_reals_encoder=[*unknown, *known_reals(spec.seasonal_days)],
        time_varying_reals_decoder=known_reals(spec.seasonal_days),
        x_reals=x_reals(spec.signals, spec.seasonal_days),
        x_categoricals=["signal"],
        embedding_sizes={"signal": (n_codes, min(8, spec.hidden_size))},
        hidden_continuous_size=min(spec.hidden_continuous_size, spec.hidden_size),
        # Targets are scaled per window before the network sees them, so the network's own
        # output transform is the identity: loss and outputs live in scaled units.
        output_transformer=TorchNormalizer(method="identity", center=False),
        logging_metrics=None,
    )


def to_network_input(batch: WindowBatch, device: Any = None) -> dict[str, torch.Tensor]:
    """The dict the TFT's ``forward`` expects, built from a :class:`WindowBatch`."""
    import torch

    B = len(batch)
    # The TFT splits encoder from decoder at max(encoder_lengths), so the encoder tensors must be
    # exactly that long: a batch of only short (warming-up) windows fails otherwise. Windows are
    # left-aligned, so the columns cut off are padding.
    E = int(batch.encoder_lengths.max()) if B else batch.encoder_cont.shape[1]
    H = batch.decoder_cont.shape[1]
    codes = torch.as_tensor(batch.signal_code, dtype=torch.long)
    x = {
        "encoder_cat": codes[:, None, None].expand(B, E, 1).contiguous(),
        "decoder_cat": codes[:, None, None].expand(B, H, 1).contiguous(),
        "encoder_cont": torch.as_tensor(batch.encoder_cont[:, :E]),
        "decoder_cont": torch.as_tensor(batch.decoder_cont),
        "encoder_lengths": torch.as_tensor(batch.encoder_lengths, dtype=torch.long),
        "decoder_lengths": torch.full((B,), H, dtype=torch.long),
        "target_scale": torch.tensor([[0.0, 1.0]]).expand(B, 2).contiguous(),
    }
    if device is not None:
        x = {k: v.to(device) for k, v in x.items()}
    return x


@dataclass
class Forecast:
    """Quantile paths in units plus breach probabilities, one row per usable window."""

    series: np.ndarray  # [B, 2] (instance index, signal index)
    origins: np.ndarray  # [B]
    quantiles: np.ndarray  # [B, H, 3], sorted, calibrated, clipped
    breach_probability: dict[str, np.ndarray]  # label -> [B]
    last_value: np.ndarray  # [B]


class ForecastModel:
    """A trained network with its spec and calibration: the only thing that makes predictions."""

    def __init__(self, spec: ModelSpec, network: torch.nn.Module, band: BandCalibration | None = None,
                 breach: BreachModel | None = None, metadata: dict[str, Any] | None = None) -> None:
        self.spec = spec
        self.network = network
        self.band = band or BandCalibration.identity(spec.horizon_steps)
        self.breach = breach or BreachModel()
        self.metadata: dict[str, Any] = dict(metadata or {})

    def raw_quantiles(self, batch: WindowBatch, chunk: int = 512) -> np.ndarray:
        """Network output mapped back to units and sorted, before calibration: [B, H, 3]."""
        import torch

        self.network.eval()
        out = np.zeros((len(batch), self.spec.horizon_steps, len(self.spec.quantiles)), dtype=np.float64)
        with torch.inference_mode():
            for start in range(0, len(batch), chunk):
                part = batch.take(slice(start, start + chunk))
                pred = self.network(to_network_input(part))["prediction"].float().numpy()
                out[start:start + len(part)] = pred
        out = out * batch.scale[:, None, None] + batch.center[:, None, None]
        return np.sort(out, axis=-1)

    def predict(self, batch: WindowBatch, bounds: list[tuple[float | None, float | None]] | None = None,
                chunk: int = 512) -> Forecast:
        """Calibrated quantiles (clipped to each series' bounds) and breach probabilities."""
        q = self.band.apply(self.raw_quantiles(batch, chunk))
        if bounds is not None:
            lo = np.array([-np.inf if b[0] is None else b[0] for b in bounds])[:, None, None]
            hi = np.array([np.inf if b[1] is None else b[1] for b in bounds])[:, None, None]
            q = np.clip(q, lo, hi)
        q = np.sort(q, axis=-1)
        probs: dict[str, np.ndarray] = {}
        has_thr = np.isfinite(batch.threshold)
        for label, H in BREACH_HORIZONS.items():
            if self.spec.horizon_steps < H:
                continue
            p = np.full(len(batch), np.nan)
            if has_thr.any():
                feats = breach_features(q[has_thr], batch.take(has_thr), H)
                p[has_thr] = self.breach.probability(label, feats)
            probs[label] = p
        return Forecast(batch.series, batch.origins, q, probs, batch.last_value)

