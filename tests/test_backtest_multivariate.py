"""`tft-trainer backtest` on a multivariate protocol dataset (a ``host`` column in the sidecar, SMD-like):
each series gets its host's other metrics as inputs, as serving does, and the labelled incidents are scored."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from forecaster.contract.features import WindowRules, build_windows, window_scale, x_reals
from forecaster.contract.panel import PanelError
from tests.modelkit import TINY
from trainer.backtest import load_benchmark
from trainer.cli import main

SCORER = Path(__file__).resolve().parent.parent.parent / "shared" / "bench" / "score.py"
# Host a has three metrics, host b two: b's "disk" row of the panel stays NaN.
METRICS = {"a": ["cpu", "disk", "mem"], "b": ["cpu", "mem"]}


def _dataset(tmp_path: Path, days: float = 6, n_train: dict[str, int] | None = None,
             host_column: bool = True) -> Path:
    """``bench.parquet`` plus its sidecar (``host`` column) and labelled incidents, in the protocol's layout."""
    rng = np.random.default_rng(7)
    n = int(days * 288)
    ts = pd.date_range("2000-01-01", periods=n, freq="5min")
    rows, meta, incidents = [], [], []
    for h, (host, metrics) in enumerate(METRICS.items()):
        for m, metric in enumerate(metrics):
            sid = f"toy/{host}/{metric}"
            value = 0.5 + 0.2 * np.sin(2 * np.pi * np.arange(n) / 288 + h + m) + 0.03 * rng.standard_normal(n)
            value[int(0.8 * n): int(0.8 * n) + 4] = 1.5  # a breach in the test part
            imputed = np.arange(n) % 400 == 11
            rows.append(pd.DataFrame({"series_id": sid, "timestamp": ts, "value": value, "imputed": imputed}))
            nt = (n_train or {}).get(sid, int(0.7 * n))
            meta.append({"series_id": sid, "n": n, "n_train": nt,
                         "threshold": float(np.percentile(value[:nt], 99)), "host": host})
        start = ts[int(0.8 * n)]
        incidents.append({"host": host, "start": str(start), "end": str(start + pd.Timedelta(minutes=15)),
                          "metrics": metrics})
    path = tmp_path / "bench.parquet"
    pd.concat(rows).to_parquet(path)
    sidecar = pd.DataFrame(meta)
    if not host_column:
        sidecar = sidecar.drop(columns="host")
    sidecar.to_csv(tmp_path / "bench.series.csv", index=False)
    (tmp_path / "bench.incidents.json").write_text(json.dumps(incidents))
    return path


def test_host_sidecar_puts_each_series_in_its_hosts_row_and_windows_carry_the_hosts_metrics(tmp_path: Path) -> None:
    n = 6 * 288
    data = load_benchmark(_dataset(tmp_path, n_train={"toy/a/mem": int(0.7 * n) - 50}))
    panel = data.panel
    assert panel.instances == ["a", "b"] and panel.signals == ["cpu", "disk", "mem"]
    assert data.multivariate
    frame = pd.read_parquet(tmp_path / "bench.parquet")
    for k, sid in enumerate(data.series_ids):
        host, metric = sid.split("/")[1:]
        i, j = panel.instances.index(host), panel.signals.index(metric)
        assert tuple(data.cells[k]) == (i, j)
        d = frame[frame.series_id == sid]
        expected = np.where(d.imputed, np.nan, d.value).astype(np.float32)
        np.testing.assert_array_equal(panel.values[i, j], expected)  # imputed points are missing
        assert panel.thresholds[i, j] == np.float32(data.thresholds[k])
    assert np.isnan(panel.values[1, 1]).all() and np.isnan(panel.thresholds[1, 1])  # b has no disk
    # A host row trains only up to the earliest training end of its series: no test value of
    # a.mem may reach a.cpu's training windows through the host inputs.
    assert data.train_end.tolist() == [int(0.7 * n) - 50, int(0.7 * n)]

    E = 48
    rules = WindowRules(context=E, horizon=96, min_history=1)
    origin = 1000
    codes = {s: i + 1 for i, s in enumerate(panel.signals)}
    batch = build_windows(panel, np.array([[0, 0], [1, 2]]), np.array([origin, origin]), rules, codes)
    col = {name: c for c, name in enumerate(x_reals(panel.signals))}
    for b, (i, own) in enumerate([(0, 0), (1, 2)]):
        np.testing.assert_array_equal(batch.series[b], [i, own])
        for j, s in enumerate(panel.signals):
            got = batch.encoder_cont[b, :, col[f"host_{s}"]]
            raw = panel.values[i, j, origin - E + 1: origin + 1].astype(np.float64)
            if np.isnan(raw).all():  # a metric the host lacks is a zero input
                assert (got == 0).all()
                continue
            filled = pd.Series(raw).ffill().to_numpy()  # the window's gaps are forward-filled
            center = np.nanmean(filled)
            scale = window_scale(np.nanstd(filled), center)
            np.testing.assert_allclose(got, (filled - center) / scale, rtol=1e-4, atol=1e-4)
        # The target is the series' own values up to the origin, the horizon its values after it.
        np.testing.assert_array_equal(batch.target[b], panel.values[i, own, origin + 1: origin + 97])
    assert {s for s in x_reals(panel.signals) if s.startswith("host_")} == {"host_cpu", "host_disk", "host_mem"}


def test_without_a_host_column_or_with_univariate_every_series_is_its_own_row(tmp_path: Path) -> None:
    no_hosts = tmp_path / "no_hosts"
    no_hosts.mkdir()
    for data in (load_benchmark(_dataset(tmp_path), univariate=True),
                 load_benchmark(_dataset(no_hosts, host_column=False))):
        assert data.panel.signals == ["value"] and not data.multivariate
        assert data.panel.instances == data.series_ids
        assert data.cells.tolist() == [[k, 0] for k in range(len(data.series_ids))]
        np.testing.assert_array_equal(data.train_end, data.offsets + data.n_train)


def test_two_series_with_one_metric_of_one_host_are_refused(tmp_path: Path) -> None:
    path = _dataset(tmp_path)
    frame, meta = pd.read_parquet(path), pd.read_csv(tmp_path / "bench.series.csv")
    # b's memory series renamed into host a's namespace: a now has two "mem" series.
    frame.loc[frame.series_id == "toy/b/mem", "series_id"] = "other/a/mem"
    meta.loc[meta.series_id == "toy/b/mem", ["series_id", "host"]] = ["other/a/mem", "a"]
    frame.to_parquet(path)
    meta.to_csv(tmp_path / "bench.series.csv", index=False)
    with pytest.raises(PanelError, match="other/a/mem and toy/a/mem are both metric 'mem' of host 'a'"):
        load_benchmark(path)


def test_multivariate_backtest_writes_forecasts_score_py_accepts_with_labelled_incidents(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    if not SCORER.exists():
        pytest.skip(f"{SCORER} not present")
    cfg = {"model": {k: v for k, v in TINY.items() if k != "attention_heads"} | {"attention_heads": 1},
           "trainer": {"registry_dir": str(tmp_path / "registry"), "batch_size": 8, "batches_per_epoch": 2,
                       "max_epochs": 1, "validation_days": 1, "early_stopping_patience": 1}}
    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump(cfg))
    data = _dataset(tmp_path)
    out = tmp_path / "fc.csv"
    report = tmp_path / "report.json"
    code = main(["--config.file", str(config), "backtest", "--data", str(data), "--out", str(out),
                 "--report", str(report), "--score", str(SCORER), "--time-budget", "2", "--max-epochs", "1",
                 "--batches-per-epoch", "2", "--no-progress"])
    printed = capfd.readouterr().out
    assert code == 0  # score.py ran on the file and accepted it
    fc = pd.read_csv(out)
    n = 6 * 288
    origins = len(range(int(0.7 * n) - 1, n - 96, 12))
    ids = [f"toy/{h}/{m}" for h, ms in METRICS.items() for m in ms]
    assert sorted(fc.series_id.unique()) == sorted(ids)  # back to the protocol's series ids
    assert len(fc) == len(ids) * origins * 96
    written = json.loads(report.read_text())
    assert "hosts x metric kinds: 2 x 3" in written["inputs"]
    assert "outcomes up to each origin" in written["band"]  # the service's online band, replayed
    assert written["cycle"] in (True, False)  # what model.cycle: auto chose for this network, never "auto"
    assert "missing=0" in printed
    assert "Labelled incidents (bench.incidents.json: 2 segment starts, 2 on the 2 hosts" in printed
    assert "lab_recall" in printed and "host_precision" in printed
