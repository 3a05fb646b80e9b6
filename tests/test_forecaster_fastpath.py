"""The fast inference forward must give the library's numbers, whatever the batch looks like."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from forecaster.contract.fastpath import FastTFT, supports
from forecaster.contract.features import build_windows
from forecaster.contract.model import ModelSpec, build_network, to_network_input
from tests.modelkit import synthetic_panel

SIGNALS = ["cpu", "memory", "filesystem", "iowait"]


def _network(**sizes: int) -> tuple[ModelSpec, torch.nn.Module]:
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
    spec, net = _network(**SMALL, seasonal_days=seasonal_days)
    fast = FastTFT(net).eval()
    assert fast.fast
    x = _batch(spec, short_from=short_from)
    with torch.inference_mode():
        want = net(x)["prediction"]
        got = fast(x)["prediction"]
    assert got.shape == want.shape == (12, spec.horizon_steps, 3)
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4), (got - want).abs().max()


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
