"""The fast training forward must give the library's outputs *and gradients*, on the library's weights.

``forecaster/contract/fasttrain.py`` re-implements the TFT's forward (and, for the per-variable
networks, the backward by hand); a model trained through it is saved and served as the library's
network. So every parameter that gets a gradient through the library's forward must get the same
gradient through the fast one, with dropout where the library has it.

Tolerances (float32 rounding, with headroom over what was measured): outputs as the serving
parity check, ``|fast - library| <= 1e-4 + 1e-4 * |library|`` (measured at most 1.1e-5); gradients
per element ``|fast - library| <= GRAD_RTOL * |library| + GRAD_ATOL * scale``, ``scale`` being the
largest gradient of any parameter in that backward pass (measured at most 3.5e-6 * scale; a wrong
LayerNorm or gate derivative was off by 0.1 to 0.7 * scale).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from forecaster.contract import fasttrain
from forecaster.contract.fasttrain import supports_training, train_forward
from forecaster.contract.features import build_windows
from forecaster.contract.model import QUANTILES, ModelSpec, build_network, to_network_input
from tests.modelkit import synthetic_panel
from trainer.training import TrainSettings, _adam, _lightning_module, pinball

SIGNALS = ["cpu", "memory", "filesystem", "iowait"]
SMALL = {"context_steps": 48, "horizon_steps": 24, "hidden_size": 8, "attention_heads": 2,
         "hidden_continuous_size": 4, "min_history_steps": 4}
OUT_TOL = 1e-4
GRAD_RTOL = 1e-3
GRAD_ATOL = 1e-5


class FixedDropout(nn.Dropout):
    """A deterministic stand-in for dropout: scales by 0.6 in training. Both forwards then apply
    the same multiplier at their dropout sites, so a site missing, added or moved shows up."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 0.6 if self.training else x


def _network(seed: int = 1, **sizes: Any) -> tuple[ModelSpec, nn.Module]:
    torch.manual_seed(seed)
    spec = ModelSpec(signals=SIGNALS, **sizes)
    net = build_network(spec)
    with torch.no_grad():  # move every weight off its initial value so no gate is trivially 0/1
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return spec, net


def _fixed_dropout(net: nn.Module) -> nn.Module:
    for module in list(net.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.Dropout:
                setattr(module, name, FixedDropout(child.p))
    return net


def _batch(spec: ModelSpec, n: int = 12, seed: int = 0) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Training-like windows: random series and origins (no two share their calendar inputs), a
    third of them on hosts that started recently (shorter encoders of several lengths), so the
    LSTMs run in segments and the attention mask hides padding."""
    days = spec.lookback_steps * spec.step_seconds / 86400 + 1.5
    short = list(range(0, n, 3))
    panel = synthetic_panel(hosts=3 + len(short), days=days, seed=seed)
    rng = np.random.default_rng(seed)
    T = panel.n_times
    series = np.array([(rng.integers(3), rng.integers(len(SIGNALS))) for _ in range(n)])
    origins = rng.integers(T - 3 * spec.horizon_steps, T - spec.horizon_steps, size=n)
    for i, k in enumerate(short):  # warming-up hosts: only the last 5..context-1 steps before the origin
        keep = int(rng.integers(5, spec.context_steps))
        series[k, 0] = 3 + i
        panel.values[3 + i, :, : origins[k] - keep + 1] = np.nan
    windows = build_windows(panel, series, origins, spec.window_rules(min_history=4), spec.signal_codes(),
                            np.full(n, 0.9))
    assert len(windows) == n
    x = to_network_input(windows)
    lengths = x["encoder_lengths"]
    assert len(torch.unique(lengths)) > 2 and int(lengths.max()) == spec.context_steps
    return x, torch.as_tensor(windows.scaled_target())


def _loss_and_grads(net: nn.Module, forward: Any, x: dict[str, torch.Tensor],
                    y: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    net.zero_grad(set_to_none=True)
    pred = forward(x)
    pinball(pred, y, list(QUANTILES)).backward()
    return pred.detach(), {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}


def _library(net: nn.Module) -> Any:
    return lambda x: net(x)["prediction"]


def _assert_same(net: nn.Module, x: dict[str, torch.Tensor], y: torch.Tensor) -> None:
    want, want_grads = _loss_and_grads(net, _library(net), x, y)
    got, got_grads = _loss_and_grads(net, lambda x: train_forward(net, x), x, y)
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=OUT_TOL, rtol=OUT_TOL), (got - want).abs().max()
    assert set(got_grads) == set(want_grads)
    scale = max(float(g.abs().max()) for g in want_grads.values())
    wrong = {name: float((got_grads[name] - g).abs().max() / scale) for name, g in want_grads.items()
             if not torch.allclose(got_grads[name], g, rtol=GRAD_RTOL, atol=GRAD_ATOL * scale)}
    assert not wrong, f"gradients off (max abs difference / largest gradient): {wrong}"


@pytest.mark.parametrize("dropout", ["off", "fixed"], ids=["eval", "train-fixed-dropout"])
@pytest.mark.parametrize("seasonal_days", [0, 1], ids=["calendar", "same-time-yesterday"])
@pytest.mark.parametrize("sizes", [SMALL, {}], ids=["tiny", "default-size"])
def test_outputs_and_gradients_equal_the_library(sizes: dict[str, int], seasonal_days: int, dropout: str) -> None:
    _check_against_library(dropout, **sizes, seasonal_days=seasonal_days)


@pytest.mark.parametrize("dropout", ["off", "fixed"], ids=["eval", "train-fixed-dropout"])
def test_outputs_and_gradients_equal_the_library_with_cycle_inputs(dropout: str) -> None:
    _check_against_library(dropout, **SMALL, cycle=True)


def _check_against_library(dropout: str, **spec: Any) -> None:
    """A network of ``spec``, in eval() mode or training with fixed dropout masks, against the library."""
    built, net = _network(**spec)
    assert supports_training(net)
    if dropout == "fixed":
        _fixed_dropout(net).train()
    else:
        net.eval()
    x, y = _batch(built)
    _assert_same(net, x, y)


@pytest.mark.parametrize("sizes", [SMALL, {}], ids=["tiny", "default-size"])
def test_plain_autograd_variant_equals_the_library(monkeypatch: pytest.MonkeyPatch, sizes: dict[str, int]) -> None:
    """Off a CPU (and under autocast) the per-variable networks run through plain autograd instead
    of the blocked hand-written backward; that variant must be right too."""
    monkeypatch.setattr(fasttrain, "_blocked", lambda x: False)
    spec, net = _network(**sizes, seasonal_days=1)
    x, y = _batch(spec)
    _assert_same(_fixed_dropout(net).train(), x, y)


def test_runs_under_autocast() -> None:
    """bf16 autocast, as ``bf16-mixed`` training on a GPU runs it (here on the CPU): no dtype clash,
    finite gradients, outputs within bf16 rounding of the library's float32 ones. (The library's
    own forward cannot run this on a CPU: oneDNN has no bf16 LSTM over packed sequences.)"""
    spec, net = _network()
    x, y = _batch(spec)
    with torch.no_grad():
        want = net.eval()(x)["prediction"]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = train_forward(net, x).float()
    assert float((got - want).abs().mean()) < 0.02 * float(want.abs().max())
    net.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = pinball(train_forward(net, x), y, list(QUANTILES))
    loss.backward()
    assert all(bool(torch.isfinite(p.grad).all()) for p in net.parameters() if p.grad is not None)


def test_full_length_and_shared_calendar_batches() -> None:
    """One encoder length for all (one LSTM call, no segments) and, without dropout, series that
    share an origin: the selection runs the shared calendar variables once."""
    spec, net = _network(**SMALL)
    panel = synthetic_panel(hosts=3, days=1.5)
    series = np.array([(i, j) for i in range(3) for j in range(len(SIGNALS))])
    windows = build_windows(panel, series, np.full(len(series), panel.n_times - 1), spec.window_rules(),
                            spec.signal_codes(), np.full(len(series), 0.9))
    x = to_network_input(windows)
    assert len(torch.unique(x["encoder_lengths"])) == 1
    y = torch.randn(len(series), spec.horizon_steps)
    _assert_same(net.eval(), x, y)
    _assert_same(_fixed_dropout(net).train(), x, y)


def test_several_blocks_of_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-variable networks run in blocks of rows; a last, partial block must count too."""
    monkeypatch.setattr(fasttrain, "BLOCK_ROWS", 100)
    spec, net = _network(**SMALL, seasonal_days=1)
    x, y = _batch(spec)
    assert (x["encoder_lengths"].shape[0] * spec.context_steps) % 100 != 0
    _assert_same(_fixed_dropout(net).train(), x, y)


def _train_both(net: nn.Module, make_optimizer: Any, steps: int) -> tuple[nn.Module, nn.Module, list[tuple]]:
    """``steps`` optimizer steps through the library's forward and through the fast one, from the
    same weights on the same batches; the training loss of each step and a held-out loss after it."""
    spec = ModelSpec(signals=SIGNALS, **SMALL)
    lib_net = _fixed_dropout(net).train()
    fast_net = copy.deepcopy(lib_net)
    runs = [(lib_net, make_optimizer(lib_net), _library(lib_net)),
            (fast_net, make_optimizer(fast_net), lambda x: train_forward(fast_net, x))]
    held_out = _batch(spec, seed=99)
    losses = []
    for step in range(steps):
        x, y = _batch(spec, seed=step)
        row = []
        for model, opt, forward in runs:
            opt.zero_grad()
            loss = pinball(forward(x), y, list(QUANTILES))
            loss.backward()
            opt.step()
            with torch.no_grad():
                held = pinball(model(held_out[0])["prediction"], held_out[1], list(QUANTILES))
            row.append((float(loss.detach()), float(held)))
        losses.append(tuple(row))
    return lib_net, fast_net, losses


def test_optimizer_steps_give_near_identical_weights() -> None:
    """SGD with momentum: a weight moves by the gradients it got, so the two trainings' weights
    stay as close as their gradients (measured 1.2e-7 apart after five steps)."""
    _, net = _network(**SMALL)
    lib_net, fast_net, _ = _train_both(net, lambda n: torch.optim.SGD(n.parameters(), lr=0.05, momentum=0.9), 5)
    fast = dict(fast_net.named_parameters())
    for name, p in lib_net.named_parameters():
        assert torch.allclose(fast[name], p, atol=1e-5, rtol=0), (name, float((fast[name] - p).abs().max()))


def test_adam_steps_give_near_identical_losses() -> None:
    """The trainer's own Adam: training and held-out losses stay together step by step (measured
    within 3e-5 relative over eight steps).

    Weights are not compared one by one: Adam divides each gradient by its running magnitude, so
    a parameter whose true gradient is (near) zero moves by +-lr on float rounding in *either*
    path (the attention's key biases: adding a constant to every key's score changes no softmax;
    the static selection's flattened network here, whose gradients are ~1e-8 of the largest).
    """
    _, net = _network(**SMALL)
    _, _, losses = _train_both(net, lambda n: _adam(list(n.parameters()), 3e-3, "32-true"), 5)
    for (lib_train, lib_held), (fast_train, fast_held) in losses:
        assert fast_train == pytest.approx(lib_train, rel=1e-4)
        assert fast_held == pytest.approx(lib_held, rel=1e-4)
    assert losses[-1][0][1] < losses[0][0][1]  # and it did learn


def test_dropout_masks_have_the_library_rate_and_scale() -> None:
    drop = nn.Dropout(0.1).train()
    mask = fasttrain._dropout_mask(drop, (200, 1000), torch.empty(0))
    assert mask is not None
    assert torch.equal(torch.unique(mask), torch.tensor([0.0, 1 / 0.9]))
    assert abs(float((mask == 0).float().mean()) - 0.1) < 0.003  # 200,000 draws: 4.5 standard deviations
    # Each 31-bit draw serves two neighbouring elements (its low and its high half): both halves
    # drop at the rate, independently of each other; an odd element count is served too.
    for p in (0.1, 0.5):
        dropped = (fasttrain._dropout_mask(nn.Dropout(p).train(), (1001, 1999), torch.empty(0)) == 0)
        pairs = dropped.view(-1)[:-1].view(-1, 2).double()  # 1,000,999 pairs
        sd = (p * (1 - p) / len(pairs)) ** 0.5
        assert abs(float(pairs[:, 0].mean()) - p) < 5 * sd and abs(float(pairs[:, 1].mean()) - p) < 5 * sd
        assert abs(float((pairs[:, 0] * pairs[:, 1]).mean()) - p * p) < 5 * sd
    assert fasttrain._dropout_mask(drop.eval(), (2, 2), torch.empty(0)) is None
    assert fasttrain._dropout_mask(nn.Dropout(0.0).train(), (2, 2), torch.empty(0)) is None


def test_training_mode_draws_dropout_and_eval_does_not() -> None:
    spec, net = _network(**SMALL)
    x, _ = _batch(spec)
    net.train()
    with torch.no_grad():
        a, b = train_forward(net, x), train_forward(net, x)
        assert not torch.equal(a, b)
        net.eval()
        assert torch.equal(train_forward(net, x), train_forward(net, x))


def test_unsupported_structure_uses_library_forward() -> None:
    # hidden_continuous_size == hidden_size: the per-variable networks have no resampled residual.
    spec, net = _network(context_steps=24, horizon_steps=12, hidden_size=4, attention_heads=1,
                         hidden_continuous_size=4, min_history_steps=4)
    assert not supports_training(net)
    x, _ = _batch(spec)
    net.eval()
    with torch.no_grad():
        assert torch.equal(train_forward(net, x), net(x)["prediction"])


def test_zero_length_encoder_uses_library_forward() -> None:
    spec, net = _network(**SMALL)
    x, _ = _batch(spec)
    x["encoder_lengths"] = x["encoder_lengths"].clone()
    x["encoder_lengths"][1] = 0
    net.eval()
    with torch.no_grad():
        assert torch.equal(train_forward(net, x), net(x)["prediction"])


def test_the_trainer_uses_the_fast_forward_unless_switched_off() -> None:
    from forecaster.contract.config import parse_config
    from trainer import cli

    _, net = _network(**SMALL)
    assert _lightning_module(net, TrainSettings(), list(QUANTILES)).fast
    assert not _lightning_module(net, TrainSettings(fast_path=False), list(QUANTILES)).fast
    _, unsupported = _network(context_steps=24, horizon_steps=12, hidden_size=4, attention_heads=1,
                              hidden_continuous_size=4, min_history_steps=4)
    assert not _lightning_module(unsupported, TrainSettings(), list(QUANTILES)).fast

    config = parse_config({})
    assert config.trainer.fast_path
    on = cli._settings(cli._parser().parse_args(["train"]), config, 60)
    off = cli._settings(cli._parser().parse_args(["train", "--no-fast-path"]), config, 60)
    assert on.fast_path and not off.fast_path
    by_config = cli._settings(cli._parser().parse_args(["backtest", "--data", "d", "--out", "o"]),
                              parse_config({"trainer": {"fast_path": False}}), 60)
    assert not by_config.fast_path
