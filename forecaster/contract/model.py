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
    present_level,
)
from forecaster.contract.config import HORIZON_LABELS, check_bucket_seconds
from forecaster.contract.features import (
    CENTERS,
    WindowBatch,
    WindowRules,
    driver_matrix,
    driver_names,
    encoder_variables,
    known_reals,
    static_reals,
    steps_per_day,
    unknown_reals,
    x_reals,
)
from forecaster.contract.schedules import ScheduleSet

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

QUANTILES: tuple[float, float, float] = (0.1, 0.5, 0.9)
FORMAT_VERSION = 1
#: ``seasonal_days`` of a spec built from ``model.seasonal_days: auto`` before the trainer chose from the
#: history (trainer/week_choice.py); never saved: :meth:`ModelSpec.from_json` accepts 0-28 only.
AUTO_SEASONAL_DAYS = -1
#: ``cycle`` of a spec built from ``model.cycle: auto`` before the trainer chose from the history
#: (trainer/cycle_choice.py); never saved: :meth:`ModelSpec.from_json` accepts true or false only.
AUTO_CYCLE = "auto"


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
    # Whether the network reads the known-future ``scheduled`` input (declared windows, config
    # ``schedules:``). False, the default, is what a model.json written before schedules existed means.
    schedules: bool = False
    center: str = "mean"  # features.CENTERS; models saved before it existed are "mean"
    # > 0: the same-time inputs come from buckets of this many seconds (forecaster/contract/seasonal.py);
    # 0, what a model saved before buckets existed means: from the values at each earlier day's step.
    seasonal_bucket_seconds: int = 0
    # The window's short-cycle inputs (features.cycle_inputs); False is what a model saved before them means.
    # AUTO_CYCLE only until the trainer chose.
    cycle: bool | str = False
    # > 0: windows whose cycle strength is at least this have no cycle (features.CYCLE_GATE); 0, what a model
    # saved before the gate means: every window's profile is read.
    cycle_gate: float = 0.0
    quantiles: list[float] = field(default_factory=lambda: list(QUANTILES))
    format_version: int = FORMAT_VERSION

    @property
    def lookback_steps(self) -> int:
        """Steps of history one window reads: the context, and the days its same-time inputs reach back."""
        if self.seasonal_days == AUTO_SEASONAL_DAYS:
            raise ValueError("seasonal_days: auto is chosen by the trainer before the network is built")
        return self.context_steps + self.seasonal_days * steps_per_day(self.step_seconds)

    @property
    def served_steps(self) -> int:
        """Steps the forecaster queries at the model's step: the context, plus the earlier days only when
        the same-time inputs read them step by step (bucketed ones come from coarse queries)."""
        return self.context_steps if self.seasonal_bucket_seconds else self.lookback_steps

    @property
    def reads_cycle(self) -> bool:
        """Whether the network reads the cycle inputs (an unresolved ``auto`` has no answer yet)."""
        if self.cycle == AUTO_CYCLE:
            raise ValueError("cycle: auto is chosen by the trainer before the network is built")
        return bool(self.cycle)

    def window_rules(self, min_history: int | None = None, schedules: ScheduleSet | None = None,
                     **relaxed: Any) -> WindowRules:
        """How windows are cut for this model; ``relaxed`` overrides the staleness/gap rules.

        ``schedules`` (the config's declared windows) feed the ``scheduled`` input of a model trained with
        it (none given: no window declared); a model without that input ignores them."""
        return WindowRules(self.context_steps, self.horizon_steps,
                           self.min_history_steps if min_history is None else min_history,
                           seasonal_days=self.seasonal_days, center=self.center,
                           seasonal_bucket_seconds=self.seasonal_bucket_seconds, cycle=self.reads_cycle,
                           cycle_gate=self.cycle_gate,
                           schedules=(schedules or ScheduleSet()) if self.schedules else None, **relaxed)

    @property
    def encoder_variables(self) -> list[str]:
        return encoder_variables(self.signals, self.seasonal_days, self.schedules, self.reads_cycle)

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
        if spec.seasonal_bucket_seconds:
            check_bucket_seconds(spec.seasonal_bucket_seconds, spec.step_seconds)
        if spec.center not in CENTERS:
            raise ValueError(f"center must be one of {', '.join(CENTERS)}, not {spec.center!r}")
        if not isinstance(spec.cycle, bool):
            raise ValueError(f"cycle must be true or false, not {spec.cycle!r}")
        if not 0 <= spec.cycle_gate <= 3:  # strengths are clipped to [0, 3]
            raise ValueError(f"cycle_gate must be between 0 and 3, not {spec.cycle_gate}")
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
        static_reals=static_reals(spec.reads_cycle),
        time_varying_categoricals_encoder=[],
        time_varying_categoricals_decoder=[],
        time_varying_reals_encoder=[*unknown, *known_reals(spec.seasonal_days, spec.schedules, spec.reads_cycle)],
        time_varying_reals_decoder=known_reals(spec.seasonal_days, spec.schedules, spec.reads_cycle),
        x_reals=x_reals(spec.signals, spec.seasonal_days, spec.schedules, spec.reads_cycle),
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


def attention_steps(spec: ModelSpec) -> list[int]:
    """Decoder steps (0-based) the attention summary averages over: those of the published horizons
    (30m ... 8h that fit the model's horizon), the forecasts operators see and alerts test."""
    return [k for k in (seconds // spec.step_seconds - 1 for seconds in HORIZON_LABELS.values())
            if 0 <= k < spec.horizon_steps]


def mean_over_encoder(weights: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Per-step selection weights [N, E, V] averaged over each series' own (left-aligned) steps, as
    the library's ``interpret_output`` does: padding does not count, and the mean still sums to 1."""
    import torch

    valid = (torch.arange(weights.shape[1], device=weights.device)[None, :] < lengths[:, None]).to(weights.dtype)
    return (weights * valid[..., None]).sum(dim=1) / lengths.clamp_min(1)[:, None].to(weights.dtype)


def explain_output(out: dict[str, torch.Tensor], encoder_lengths: torch.Tensor,
                   steps: list[int] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """What drove each forecast of one network call: the encoder's variable selection weights
    averaged over the series' encoder steps [N, V] (each row sums to 1), and the attention weight
    on each encoder position [N, E] (left-aligned like the inputs), averaged over heads and the
    decoder ``steps`` (None: all).

    The fast path returns both already reduced (``encoder_variable_weights``,
    ``encoder_attention_mean``); the library's forward returns its raw ``encoder_variables``
    [N, E, 1, V] and ``encoder_attention`` [N, D, heads, E], reduced here the same way, so the
    two can be compared (:func:`forecaster.contract.fastpath.check_parity`).
    """
    if "encoder_variable_weights" in out:
        return out["encoder_variable_weights"], out["encoder_attention_mean"]
    raw = out["encoder_variables"]
    weights = mean_over_encoder(raw.reshape(raw.shape[0], raw.shape[1], -1), encoder_lengths)
    att = out["encoder_attention"]
    D = att.shape[1]
    sel = [k for k in (range(D) if steps is None else steps) if 0 <= k < D]
    attention = att[:, sel].mean(dim=(1, 2)) if sel else att.new_zeros(att.shape[0], att.shape[-1])
    return weights, attention


@dataclass
class Forecast:
    """Quantile paths in units plus breach probabilities, one row per usable window; and what drove
    each forecast (None when not asked for)."""

    series: np.ndarray  # [B, 2] (instance index, signal index)
    origins: np.ndarray  # [B]
    quantiles: np.ndarray  # [B, H, 3], sorted, calibrated, clipped
    breach_probability: dict[str, np.ndarray]  # label -> [B]
    last_value: np.ndarray  # [B]
    # float32 [B, G]: weight of each of ``driver_names`` in the encoder's variable selection; a row's
    # finite values sum to 1; NaN in the column of the forecast signal itself (it is ``own``).
    drivers: np.ndarray | None = None
    driver_names: list[str] = field(default_factory=list)
    # int64 [B]: steps before the origin (0 = the last observed step) of the encoder position with
    # the highest mean attention over heads and the published horizons' decoder steps.
    attention_peak_lag: np.ndarray | None = None


@dataclass
class Explanation:
    """Drivers and attention peak of B forecasts (see :class:`Forecast`)."""

    drivers: np.ndarray
    driver_names: list[str]
    attention_peak_lag: np.ndarray


def clip_to_bounds(q: np.ndarray, bounds: list[tuple[float | None, float | None]]) -> np.ndarray:
    """``q`` [n, H, 3] clipped to each row's signal ``(min, max)`` (None: no bound on that side)."""
    lo = np.array([-np.inf if b[0] is None else b[0] for b in bounds])
    hi = np.array([np.inf if b[1] is None else b[1] for b in bounds])
    return np.clip(q, lo[:, None, None], hi[:, None, None])


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
        return self._infer(batch, chunk, explain=False)[0]

    @property
    def driver_names(self) -> list[str]:
        return driver_names(self.spec.signals, self.spec.encoder_variables)

    def _infer(self, batch: WindowBatch, chunk: int, explain: bool) -> tuple[np.ndarray, Explanation | None]:
        import torch

        self.network.eval()
        B, S = len(batch), len(self.spec.signals)
        out = np.zeros((B, self.spec.horizon_steps, len(self.spec.quantiles)), dtype=np.float64)
        names = self.driver_names
        steps = attention_steps(self.spec)
        # Row 0 groups the inputs of a signal the model does not know (code 0): none of them is "own".
        groups = torch.as_tensor(driver_matrix(self.spec.encoder_variables, ["", *self.spec.signals], names))
        drivers = np.full((B, len(names)), np.nan, dtype=np.float32)
        peak = np.full(B, -1, dtype=np.int64)
        with torch.inference_mode():
            for start in range(0, B, chunk):
                part = batch.take(slice(start, start + chunk))
                x = to_network_input(part)
                result = self.network(x)
                out[start:start + len(part)] = result["prediction"].float().numpy()
                if not explain:
                    continue
                weights, attention = explain_output(result, x["encoder_lengths"], steps)
                codes = x["encoder_cat"][:, 0, 0].clamp(0, S)
                drivers[start:start + len(part)] = torch.einsum("nv,nvg->ng", weights.float(), groups[codes]).numpy()
                lengths = x["encoder_lengths"]
                valid = torch.arange(attention.shape[1])[None, :] < lengths[:, None]
                at = attention.float().masked_fill(~valid, -1.0).argmax(dim=1)
                peak[start:start + len(part)] = (lengths - 1 - at).numpy()
        out = out * batch.scale[:, None, None] + batch.center[:, None, None]
        if not explain:
            return np.sort(out, axis=-1), None
        own = np.array(["", *self.spec.signals], dtype=object)[np.clip(batch.signal_code, 0, S)]
        drivers[own[:, None] == np.array(names, dtype=object)[None, :]] = np.nan
        return np.sort(out, axis=-1), Explanation(drivers, names, peak)

    def explain(self, batch: WindowBatch, chunk: int = 512) -> Explanation:
        """Only the drivers and attention peaks of ``batch`` (the network still runs whole)."""
        explanation = self._infer(batch, chunk, explain=True)[1]
        assert explanation is not None
        return explanation

    def predict(self, batch: WindowBatch, bounds: list[tuple[float | None, float | None]] | None = None,
                chunk: int = 512, explain: bool = True) -> Forecast:
        """Calibrated quantiles (clipped to each series' bounds), breach probabilities and, with
        ``explain``, each forecast's drivers (a few per cent of the inference time)."""
        raw, explanation = self._infer(batch, chunk, explain)
        q = self.band.apply(raw, present_level(batch, self.spec.center))
        if bounds is not None:
            q = clip_to_bounds(q, bounds)
        q = np.sort(q, axis=-1)
        probs: dict[str, np.ndarray] = {}
        has_thr = np.isfinite(batch.threshold)
        day_steps = steps_per_day(self.spec.step_seconds)
        for label, H in BREACH_HORIZONS.items():
            if self.spec.horizon_steps < H:
                continue
            p = np.full(len(batch), np.nan)
            if has_thr.any():
                feats = breach_features(q[has_thr], batch.take(has_thr), H, day_steps)
                p[has_thr] = self.breach.probability(label, feats)
            probs[label] = p
        if explanation is None:
            return Forecast(batch.series, batch.origins, q, probs, batch.last_value)
        return Forecast(batch.series, batch.origins, q, probs, batch.last_value, explanation.drivers,
                        explanation.driver_names, explanation.attention_peak_lag)

