"""What drove a forecast: driver weights sum to one, the fast path gives the library's, and a signal
that really drives another one shows up as its driver."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from forecaster.contract.fastpath import FastTFT, check_parity, for_serving
from forecaster.contract.features import (
    DRIVER_WORDS,
    build_windows,
    driver_matrix,
    driver_names,
    driver_of,
    encoder_variables,
)
from forecaster.contract.model import (
    ForecastModel,
    ModelSpec,
    attention_steps,
    build_network,
    explain_output,
    to_network_input,
)
from forecaster.contract.panel import Panel
from forecaster.serving.snapshot import ForecastSet, breaches, drivers_document, forecasts_document
from tests.modelkit import synthetic_panel

SIGNALS = ["cpu", "memory", "filesystem", "iowait"]
SMALL = {"context_steps": 48, "horizon_steps": 24, "hidden_size": 8, "attention_heads": 2,
         "hidden_continuous_size": 4, "min_history_steps": 4}


def _random_network(seasonal_days: int = 0) -> tuple[ModelSpec, torch.nn.Module]:
    torch.manual_seed(3)
    spec = ModelSpec(signals=SIGNALS, seasonal_days=seasonal_days, **SMALL)
    net = build_network(spec).eval()
    with torch.no_grad():  # off the initial values, so no selection weight is trivially uniform
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return spec, net


def _windows(spec: ModelSpec, short_from: int | None = None, hosts: int = 3):
    panel = synthetic_panel(hosts=hosts, days=1.5 + spec.seasonal_days)
    if short_from is not None:  # hosts that started recently: shorter, left-aligned encoders
        panel.values[short_from:, :, : panel.n_times - spec.context_steps // 2] = np.nan
    series = np.array([(i, j) for i in range(hosts) for j in range(len(SIGNALS))])
    return build_windows(panel, series, np.full(len(series), panel.n_times - 1), spec.window_rules(min_history=4),
                         spec.signal_codes(), np.full(len(series), 0.9))


def test_driver_groups_are_bounded_and_cover_every_input() -> None:
    variables = encoder_variables(SIGNALS, seasonal_days=1)
    names = driver_names(SIGNALS, variables)
    assert names == ["own", *SIGNALS, "calendar", "seasonal"]
    assert driver_of("host_cpu", "cpu") == "own" and driver_of("host_iowait", "cpu") == "iowait"
    groups = driver_matrix(variables, SIGNALS, names)
    assert (groups.sum(axis=2) == 1).all()  # every variable in exactly one driver
    cpu = SIGNALS.index("cpu")
    assert groups[cpu, :, names.index("cpu")].sum() == 0  # a signal is never its own "other" driver
    assert set(DRIVER_WORDS) >= {"own", "calendar", "seasonal"}


@pytest.mark.parametrize("short_from", [None, 1], ids=["full", "mixed-lengths"])
@pytest.mark.parametrize("seasonal_days", [0, 1], ids=["calendar", "same-time-yesterday"])
def test_weights_sum_to_one_and_the_fast_path_gives_the_librarys(short_from: int | None, seasonal_days: int) -> None:
    spec, net = _random_network(seasonal_days)
    batch = _windows(spec, short_from)
    x = to_network_input(batch)
    steps = attention_steps(spec)
    with torch.inference_mode():
        lib = net(x)
        fast = FastTFT(net, steps).eval()(x)
    lengths = x["encoder_lengths"]
    for got, want in zip(explain_output(fast, lengths, steps), explain_output(lib, lengths, steps), strict=True):
        assert got.shape == want.shape
        assert torch.allclose(got, want, atol=1e-5, rtol=1e-4), (got - want).abs().max()
    # The library's own interpretation (interpret_output) averages the selection weights the same way.
    interpreted = net.interpret_output(lib, reduction="none")["encoder_variables"]
    assert torch.allclose(explain_output(fast, lengths, steps)[0], interpreted, atol=1e-5)

    library_model = ForecastModel(spec, net).predict(batch)
    fast_model = ForecastModel(spec, for_serving(net, spec).network).predict(batch)
    for fc in (library_model, fast_model):
        assert fc.drivers is not None and fc.attention_peak_lag is not None
        np.testing.assert_allclose(np.nansum(fc.drivers, axis=1), 1.0, atol=1e-5)
        own = np.array(SIGNALS)[batch.signal_code - 1]
        assert np.isnan(fc.drivers[np.arange(len(batch)), [fc.driver_names.index(s) for s in own]]).all()
        assert ((fc.attention_peak_lag >= 0) & (fc.attention_peak_lag < batch.encoder_lengths)).all()
    np.testing.assert_allclose(fast_model.drivers, library_model.drivers, atol=1e-5)
    assert (fast_model.drivers[np.isfinite(fast_model.drivers)] > 0).all()


def test_a_fast_path_that_explains_wrong_is_not_served() -> None:
    spec, net = _random_network()
    fast = FastTFT(net, attention_steps(spec)).eval()
    assert check_parity(fast, spec).ok
    original = fast._forward

    def shuffled(x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = original(x)
        return {**out, "encoder_variable_weights": out["encoder_variable_weights"].flip(-1)}

    fast._forward = shuffled  # type: ignore[method-assign]
    check = check_parity(fast, spec)
    assert not check.ok and check.max_abs_diff > 1e-3


# --------------------------------------------------------------------------- a signal that drives another

LEAD = 14  # steps from the start of an iowait storm to the cpu rise
STORM = 12  # steps an iowait storm lasts (1 h)
SPIKE_EVERY = 144  # steps: one spike every 12 h


def _storm_panel(seed: int = 0) -> tuple[Panel, list[int]]:
    """One host: hour-long iowait storms, and cpu rises LEAD steps after each; memory, filesystem quiet."""
    rng = np.random.default_rng(seed)
    T, step = 864, 300
    ts = 1_750_000_000 // step * step - step * np.arange(T - 1, -1, -1, dtype=np.int64)
    values = 0.3 + 0.02 * rng.standard_normal((1, len(SIGNALS), T))
    spikes = list(range(100, T - LEAD, SPIKE_EVERY))
    io, cpu = SIGNALS.index("iowait"), SIGNALS.index("cpu")
    for s in spikes:
        values[0, io, s:s + STORM] += 0.4
        values[0, cpu, s + LEAD:s + LEAD + 24] += 0.5
    return Panel(["db-01"], list(SIGNALS), ts, values.astype(np.float32), step), spikes


def _iowait_sensitive_network(spec: ModelSpec) -> torch.nn.Module:
    """A TFT whose encoder selection weighs ``host_iowait`` heavily at the steps where it is high and hardly
    at all elsewhere, built by hand: the flattened selection network reads only host_iowait's prescaled
    input, through ``elu(z - 1.5)`` (negative unless iowait is 1.5 standard deviations up), into the logit
    of host_iowait; the residual path is switched off. What a network trained on storms would learn, with
    no training noise: the test is then about reading the weights out, not about the optimiser.
    """
    torch.manual_seed(0)
    net = build_network(spec).eval()
    vsn = net.encoder_variable_selection
    names = list(vsn.input_sizes)
    v = names.index("host_iowait")
    d = vsn.prescalers["host_iowait"].out_features
    flat = vsn.flattened_grn
    with torch.no_grad():
        vsn.prescalers["host_iowait"].weight.zero_()
        vsn.prescalers["host_iowait"].weight[0, 0] = 1.0
        vsn.prescalers["host_iowait"].bias.zero_()
        flat.fc1.weight.zero_()
        flat.fc1.bias.zero_()
        flat.fc1.weight[0, v * d] = 1.0
        flat.fc1.bias[0] = -1.5
        flat.context.weight.zero_()
        flat.fc2.weight.zero_()
        flat.fc2.bias.zero_()
        flat.fc2.weight[0, 0] = 1.0
        glu = flat.gate_norm.glu.fc
        glu.weight.zero_()
        glu.bias.zero_()
        V = len(names)
        glu.weight[v, 0] = 4.0  # value half: the logit of host_iowait
        glu.bias[V:] = 10.0  # gate half: open
        flat.resample_norm.norm.weight.zero_()
        flat.resample_norm.norm.bias.zero_()
    return net


def test_a_signal_that_drives_another_gets_the_weight_before_the_rise() -> None:
    spec = ModelSpec(signals=SIGNALS, **SMALL)
    net = _iowait_sensitive_network(spec)
    model = ForecastModel(spec, for_serving(net, spec).network)
    panel, spikes = _storm_panel()
    before = [s + LEAD - 1 for s in spikes if s + LEAD - 1 >= spec.context_steps]  # spike inside the window
    quiet = [s - 2 for s in spikes if s - 2 - spec.context_steps > 0 and all(
        abs(s - 2 - t) > spec.context_steps for t in spikes if t < s)]  # no spike in the last context_steps
    assert len(before) >= 4 and len(quiet) >= 3
    cpu = SIGNALS.index("cpu")

    def iowait_weight(origins: list[int]) -> np.ndarray:
        batch = build_windows(panel, np.array([(0, cpu)] * len(origins)), np.array(origins), spec.window_rules(),
                              spec.signal_codes(), np.full(len(origins), 0.9))
        fc = model.predict(batch)
        assert fc.drivers is not None
        np.testing.assert_allclose(np.nansum(fc.drivers, axis=1), 1.0, atol=1e-5)
        return fc.drivers[:, fc.driver_names.index("iowait")]

    w_before, w_quiet = iowait_weight(before), iowait_weight(quiet)
    uniform = 1.0 / len(encoder_variables(SIGNALS))
    # Before every rise iowait weighs more than at any quiet origin (measured: 0.18-0.19 against 0.04-0.08),
    # and more than under uniform weights, which would give both the same.
    assert w_before.min() > w_quiet.max() and w_before.mean() > 2 * w_quiet.mean(), (w_before, w_quiet)
    assert w_before.mean() > uniform > w_quiet.mean(), (w_before.mean(), uniform, w_quiet.mean())
    # The library's forward reads the same weights out of the same network.
    lib = ForecastModel(spec, net)
    batch = build_windows(panel, np.array([(0, cpu)] * len(before)), np.array(before), spec.window_rules(),
                          spec.signal_codes(), np.full(len(before), 0.9))
    assert lib.predict(batch).drivers is not None
    np.testing.assert_allclose(lib.predict(batch).drivers, model.predict(batch).drivers, atol=1e-5)


# --------------------------------------------------------------------------- JSON API


def _set_with_drivers() -> ForecastSet:
    obj = lambda *v: np.array(v, dtype=object)  # noqa: E731
    H = 96
    q = np.stack([np.full((2, H), 0.8), np.linspace(0.85, 0.99, H)[None].repeat(2, 0), np.full((2, H), 0.99)],
                 axis=-1).astype(np.float32)
    return ForecastSet(
        step_seconds=300, instances=obj("db-01", "db-01"), signals=obj("cpu", "memory"), kinds=obj("global", "global"),
        versions=obj("v1", "v1"), warming_up=np.zeros(2, dtype=bool), made_at=np.full(2, 1e9), origin=np.full(2, 1e9),
        threshold=np.array([0.9, 0.9]), quantiles=q, eta=np.array([[1800.0, 900.0], [1800.0, 900.0]]),
        probability=np.full((2, 5), 0.5), driver_names=("own", "cpu", "memory", "iowait", "calendar"),
        drivers=np.array([[0.52, np.nan, 0.05, 0.31, 0.12], [0.9, 0.04, np.nan, 0.01, 0.05]], dtype=np.float32),
        driver_trend=np.array([[6.0, np.nan, 0.0, -1.0, np.nan], [0.0, 3.0, np.nan, 0.0, np.nan]]),
        attention_lag=np.array([21600.0, 0.0]))


def test_breaches_and_forecasts_say_what_drove_them() -> None:
    fs = _set_with_drivers()
    doc = drivers_document(fs, 0)
    assert doc["drivers"] == [{"driver": "own", "weight": 0.52, "trend_hours": 6.0},
                              {"driver": "iowait", "weight": 0.31, "trend_hours": -1.0},
                              {"driver": "calendar", "weight": 0.12, "trend_hours": None},
                              {"driver": "memory", "weight": 0.05, "trend_hours": 0.0}]
    assert doc["because"] == ("own history (52 %, climbing for 6 h), iowait (31 %, falling for 1 h), "
                              "time of day and week (12 %)")
    assert doc["attention_peak_lag_seconds"] == 21600.0
    assert drivers_document(fs, 1)["because"] == "own history (90 %)"  # the top one, then only >= 10 %
    [first, _] = breaches(fs)
    assert first["because"] == doc["because"] and first["drivers"] == doc["drivers"]
    series = forecasts_document(fs, signal="cpu")["data"]["series"]
    assert series[0]["drivers"] == doc["drivers"]
    # Joined with a set that has none (the fallback): its rows say nothing, not zero.
    none = ForecastSet.concat([fs, ForecastSet.empty(300)], 300)
    assert none.driver_names == fs.driver_names
    # Joined in another order, each row keeps its trends.
    other = ForecastSet.concat([fs.take(np.array([1])), fs.take(np.array([0]))], 300)
    assert drivers_document(other, 1) == doc
    bare = ForecastSet.concat([fs.take(np.array([0])), _fallback_row()], 300)
    assert drivers_document(bare, 1) == {"drivers": [], "because": None, "attention_peak_lag_seconds": None}


def _fallback_row() -> ForecastSet:
    fs = _set_with_drivers().take(np.array([1]))
    return ForecastSet(**{**{k: getattr(fs, k) for k in ("step_seconds", "instances", "signals", "kinds", "versions",
                                                           "warming_up", "made_at", "origin", "threshold", "quantiles",
                                                           "eta", "probability")}})


def test_alerts_and_the_api_use_the_same_words() -> None:
    from monitoring.alerts import DRIVER_WORDS as ALERT_WORDS

    assert ALERT_WORDS == DRIVER_WORDS
