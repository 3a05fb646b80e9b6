"""The fast inference forward must give the library's numbers, whatever the batch looks like."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from prometheus_client import CollectorRegistry

from forecaster.contract import fastpath
from forecaster.contract.config import DEFAULT_SIGNALS, parse_config
from forecaster.contract.fastpath import PARITY_ATOL, FastTFT, check_parity, for_serving, parity_inputs, supports
from forecaster.contract.features import build_windows, known_reals, unknown_reals, x_reals
from forecaster.contract.model import ModelSpec, build_network, to_network_input
from forecaster.serving.exposition import StateCollector, Stats, View
from forecaster.serving.store import LoadedModel, ModelSet, ModelStore
from tests.forecaster_harness import shared_tiny_registry
from tests.modelkit import synthetic_panel

SIGNALS = ["cpu", "memory", "filesystem", "iowait"]


def _network(**sizes: Any) -> tuple[ModelSpec, torch.nn.Module]:
    torch.manual_seed(1)
    spec = ModelSpec(signals=SIGNALS, **sizes)
    net = build_network(spec).eval()
    with torch.no_grad():  # move every weight off its initial value so no gate is trivially 0/1
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return spec, net


def _batch(spec: ModelSpec, hosts: int = 3, short_from: int | None = None) -> dict[str, torch.Tensor]:
    panel = synthetic_panel(hosts=hosts, days=1.5)
    if short_from is not None:  # some hosts only started recently: shorter, left-aligned encoders
        panel.values[short_from:, :, : panel.n_times - spec.context_steps // 2] = np.nan
    n = hosts * len(SIGNALS)
    series = np.array([(i, j) for i in range(hosts) for j in range(len(SIGNALS))])
    rules = spec.window_rules(min_history=4)
    batch = build_windows(panel, series, np.full(n, panel.n_times - 1), rules, spec.signal_codes(),
                          np.full(n, 0.9))
    assert len(batch) == n
    return to_network_input(batch)


SMALL = {"context_steps": 48, "horizon_steps": 24, "hidden_size": 8, "attention_heads": 2,
         "hidden_continuous_size": 4, "min_history_steps": 4}


@pytest.mark.parametrize("short_from", [None, 1, 0], ids=["full", "mixed-lengths", "all-short"])
@pytest.mark.parametrize("seasonal_days", [0, 1], ids=["calendar", "same-time-yesterday"])
def test_fast_forward_equals_library(short_from: int | None, seasonal_days: int) -> None:
    _check_against_library(short_from, seasonal_days=seasonal_days)


@pytest.mark.parametrize("short_from", [None, 1], ids=["full", "mixed-lengths"])
def test_fast_forward_equals_library_with_cycle_inputs(short_from: int | None) -> None:
    net = _check_against_library(short_from, cycle=True)
    assert "cycle_strength" in net.static_variables


def _check_against_library(short_from: int | None, **inputs: Any) -> torch.nn.Module:
    """FastTFT's forecasts of a small network with ``inputs`` equal the library's; the network."""
    spec, net = _network(**SMALL, **inputs)
    fast = FastTFT(net).eval()
    assert fast.fast
    x = _batch(spec, short_from=short_from)
    with torch.inference_mode():
        want = net(x)["prediction"]
        got = fast(x)["prediction"]
    assert got.shape == want.shape == (12, spec.horizon_steps, 3)
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4), (got - want).abs().max()
    return net


def test_fast_forward_default_size() -> None:
    spec, net = _network()  # hidden 32, 8 heads, 288 + 96 steps: the shipped shape
    fast = FastTFT(net).eval()
    x = _batch(spec, hosts=2, short_from=1)
    with torch.inference_mode():
        want = net(x)["prediction"]
        got = fast(x)["prediction"]
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4), (got - want).abs().max()


def test_unsupported_structure_uses_library_forward() -> None:
    # hidden_continuous_size == hidden_size: the per-variable networks have no resampled residual.
    spec, net = _network(context_steps=24, horizon_steps=12, hidden_size=4, attention_heads=1,
                         hidden_continuous_size=4, min_history_steps=4)
    assert not supports(net)
    fast = FastTFT(net).eval()
    assert not fast.fast
    x = _batch(spec, hosts=1)
    with torch.inference_mode():
        assert torch.equal(fast(x)["prediction"], net(x)["prediction"])


def test_short_only_batch_runs_through_library() -> None:
    """Regression: a chunk of only warming-up windows used to crash the library's forward."""
    spec, net = _network(**SMALL)
    x = _batch(spec, short_from=0)
    assert x["encoder_cont"].shape[1] == int(x["encoder_lengths"].max()) < spec.context_steps
    with torch.inference_mode():
        assert net(x)["prediction"].shape == (12, spec.horizon_steps, 3)


# --------------------------------------------------------------------------- the load-time guard


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_tiny_registry(tmp_path_factory)


def _load(root: Path, fast_path: bool = True) -> tuple[ModelSet, LoadedModel]:
    store = ModelStore(root, step_seconds=300, signals=SIGNALS, fast_path=fast_path)
    assert store.refresh() == []
    models = store.current()
    assert models.global_model is not None
    return models, models.global_model


def _exported(models: ModelSet, name: str, labels: dict[str, str] | None = None) -> float | None:
    view = View(now=0.0, version="test", signals=DEFAULT_SIGNALS, models=models)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StateCollector(lambda: view, Stats()))
    return registry.get_sample_value(name, labels or {})


def _guard_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == fastpath.__name__ and r.levelno >= logging.WARNING]


def test_parity_inputs_cover_both_selection_paths() -> None:
    """Equal lengths (calendar shared: both branches of the selection) and mixed (padding, mask)."""
    spec = ModelSpec(signals=SIGNALS, **SMALL, seasonal_days=1)
    same, mixed = parity_inputs(spec)
    assert same["encoder_lengths"].tolist() == [32, 32]
    assert mixed["encoder_lengths"].tolist() == [32, 16]
    names = x_reals(SIGNALS, 1)
    encoder = [names.index(n) for n in [*unknown_reals(SIGNALS), *known_reals(1)]]

    def shared(x: dict[str, torch.Tensor]) -> torch.Tensor:  # as fastpath._vsn decides it
        cont = x["encoder_cont"][..., encoder]
        return (cont == cont[:1]).all(dim=1).all(dim=0)

    assert shared(same).any() and not shared(same).all()
    assert not shared(mixed).any()
    again = parity_inputs(spec)  # deterministic: the same batches at every load
    assert all(torch.equal(a[k], b[k]) for a, b in zip(again, (same, mixed), strict=True) for k in a)


def test_parity_check_passes_and_the_fast_path_serves(tiny_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="forecaster"):
        models, loaded = _load(tiny_root)
    assert loaded.fast_path
    assert isinstance(loaded.model.network, FastTFT) and loaded.model.network.fast
    check = check_parity(loaded.model.network, loaded.model.spec)
    assert check.ok and check.max_abs_diff < PARITY_ATOL / 10, check
    assert not _guard_warnings(caplog)
    assert models.fast_path_parity_failures == 0
    assert _exported(models, "tft_model_fast_path", {"scope": "global", "version": loaded.version}) == 1
    assert _exported(models, "tft_forecaster_fast_path_parity_failures_total") == 0


def test_a_fast_path_that_disagrees_falls_back_to_the_library(tiny_root: Path, monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    original = FastTFT._forward

    def off(self: FastTFT, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = original(self, x)
        return {**out, "prediction": out["prediction"] + 0.01}

    monkeypatch.setattr(FastTFT, "_forward", off)
    with caplog.at_level(logging.INFO, logger="forecaster"):
        models, loaded = _load(tiny_root)
    assert not loaded.fast_path
    assert not isinstance(loaded.model.network, FastTFT)  # the library's network itself
    assert type(loaded.model.network).__name__ == "TemporalFusionTransformer"
    [warning] = _guard_warnings(caplog)
    message = warning.getMessage()
    assert loaded.version in message and "max abs difference 0.01" in message, message
    assert models.fast_path_parity_failures == 1
    assert _exported(models, "tft_model_fast_path", {"scope": "global", "version": loaded.version}) == 0
    assert _exported(models, "tft_forecaster_fast_path_parity_failures_total") == 1


def test_a_fast_path_that_raises_falls_back_to_the_library(monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    """A library release that renames an internal the fast path reads must not stop a load."""
    spec, net = _network(**SMALL)

    def renamed(*_args: object) -> None:
        raise AttributeError("'VariableSelectionNetwork' object has no attribute 'prescalers'")

    monkeypatch.setattr(fastpath, "_prepare_vsn", renamed)
    with caplog.at_level(logging.WARNING, logger="forecaster"):
        served = for_serving(net, spec, label="model global version v-renamed")
    assert served.network is net and not served.fast_path and served.parity_failed
    [warning] = _guard_warnings(caplog)
    assert "v-renamed" in warning.getMessage() and "AttributeError" in warning.getMessage()


def test_fast_path_switched_off_serves_the_library_forward(tiny_root: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    from forecaster import cli
    from forecaster.serving.service import Service

    assert parse_config({}).forecaster.fast_path  # on by default
    args = cli._parser().parse_args(["--no-model.fast-path", "--once"])
    config = cli._config(args)
    assert config is not None and not config.forecaster.fast_path
    config = parse_config({"forecaster": {"registry_dir": str(tiny_root), "fast_path": False}})
    service = Service(config, client=object(), configure_torch=False)  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO, logger="forecaster"):
        assert service.store.refresh() == []
    models = service.store.current()
    loaded = models.global_model
    assert loaded is not None and not loaded.fast_path
    assert type(loaded.model.network).__name__ == "TemporalFusionTransformer"
    assert not _guard_warnings(caplog) and models.fast_path_parity_failures == 0  # off is no failure
    assert _exported(models, "tft_model_fast_path", {"scope": "global", "version": loaded.version}) == 0
