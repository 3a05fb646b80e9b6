"""The pretraining corpus (`tft-trainer corpus`) and what starts from it (`pretrain`, `backtest --init-from`).

The rule that matters most: no point of a benchmark's test part may reach pretraining, or every
from-pretrained figure would be a leak.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from exporter.cli import main as exporter_main
from forecaster.contract.config import load_config
from tests.modelkit import THRESHOLDS, TINY
from trainer.backtest import load_benchmark
from trainer.cli import main
from trainer.corpus import CorpusError, CorpusPlan, build_corpus, check_no_test_part
from trainer.history import parquet_history

TEST_MARK = 1e6  # every test-part value of the toy dataset: one of them in the corpus is a leak
ANCHOR = "2025-01-06T00:00:00Z"


def _fleet(tmp_path: Path, seed: int = 101, scenario: str = "degrading", days: int = 2) -> Path:
    """A simulated fleet of two hosts as `tft-exporter history` writes it (history + ground truth)."""
    path = tmp_path / "fleets" / f"{scenario}-s{seed}.parquet"
    assert exporter_main(["history", "--seed", str(seed), "--scenario", scenario, "--hosts", "2", "--days",
                          str(days), "--anchor", ANCHOR, "--out", str(path)]) == 0
    return path


def _dataset(tmp_path: Path, n: int = 5 * 288, sidecar: bool = True) -> Path:
    """Two series starting at odd times of day and week, a third without a sidecar row (protocol's 70 % rule)."""
    rows, meta = [], []
    starts = {"toy/a": "2013-10-09 16:25", "toy/b": "2014-02-14 14:27", "toy/c": "2000-01-01 00:00"}
    for k, (sid, start) in enumerate(starts.items()):
        ts = pd.date_range(start, periods=n, freq="5min")
        value = 0.5 + 0.2 * np.sin(2 * np.pi * np.arange(n) / 288 + k)
        n_train = n - 2 * 288 if sid != "toy/c" else int(0.7 * n)
        value[n_train:] = TEST_MARK
        rows.append(pd.DataFrame({"series_id": sid, "timestamp": ts, "value": value,
                                  "imputed": np.arange(n) % 97 == 5}))
        if sid != "toy/c":
            meta.append({"series_id": sid, "n": n, "n_train": n_train, "threshold": 0.69, "kind": "pct"})
    path = tmp_path / "toy.parquet"
    pd.concat(rows).to_parquet(path)
    if sidecar:
        pd.DataFrame(meta).to_csv(tmp_path / "toy.series.csv", index=False)
    return path


def test_the_corpus_holds_only_training_parts_at_the_same_time_of_day_and_week(tmp_path: Path) -> None:
    data, fleet = _dataset(tmp_path), _fleet(tmp_path)
    out = tmp_path / "corpus" / "corpus.parquet"
    fleets_out = tmp_path / "corpus" / "fleets.parquet"
    summary = build_corpus(CorpusPlan(fleets=(str(fleet),), datasets=(str(data),)), out, THRESHOLDS,
                           fleet_out=fleets_out)
    corpus = pd.read_parquet(out)
    meta = pd.read_csv(out.with_name("corpus.series.csv")).set_index("series_id")
    source = pd.read_parquet(data)
    history = pd.read_parquet(fleet)
    start = history["timestamp"].min().timestamp()
    assert (corpus["value"] < TEST_MARK).all()  # not one test-part value
    n = 5 * 288
    for sid, n_train in {"toy/a": n - 2 * 288, "toy/b": n - 2 * 288, "toy/c": int(0.7 * n)}.items():
        mine = corpus[corpus.series_id == sid].reset_index(drop=True)
        original = source[source.series_id == sid].reset_index(drop=True).iloc[:n_train]
        assert len(mine) == n_train == meta.loc[sid, "n"] == meta.loc[sid, "n_train"]
        np.testing.assert_array_equal(mine["value"], original["value"])
        np.testing.assert_array_equal(mine["imputed"], original["imputed"])
        moved = (mine["timestamp"] - original["timestamp"]).unique()
        assert len(moved) == 1 and moved[0] % pd.Timedelta(weeks=1) == pd.Timedelta(0)  # whole weeks only
        assert 0 <= mine["timestamp"].iloc[0].tz_localize("UTC").timestamp() - start < 7 * 86400
    # The fleet: every host signal, with the configured signal's threshold, a host per fleet and instance.
    sim = meta[meta.index.str.startswith("sim/")]
    assert summary.fleet_series == len(sim) == 2 * 4
    assert set(sim["host"]) == {"sim/degrading-s101/web-01", "sim/degrading-s101/db-02"}
    assert sim.loc[sim.index.str.endswith("/iowait"), "threshold"].eq(THRESHOLDS["iowait"]).all()
    assert sim["source"].eq("degrading-s101.parquet: simulator seed 101 degrading").all()
    web_cpu = corpus[corpus.series_id == "sim/degrading-s101/web-01/cpu"]
    original = history[history.instance == "web-01"]
    np.testing.assert_array_equal(web_cpu["value"], original["cpu"])
    assert (web_cpu["timestamp"].dt.tz_localize("UTC").to_numpy() == original["timestamp"].to_numpy()).all()
    assert summary.dataset_series == {"toy.parquet": 3} and summary.series == len(meta) == 11
    manifest = json.loads(out.with_name("corpus.json").read_text())
    assert manifest["plan"] == {"fleets": [str(fleet)], "datasets": [str(data)]}
    # The fleets, together, are also a training history of the configured signals, as `train --parquet` reads it.
    panel = parquet_history(fleets_out, load_config(None)).panel
    assert panel.instances == ["degrading-s101-db-02", "degrading-s101-web-01"]
    assert panel.signals == ["cpu", "memory", "filesystem", "iowait"] and panel.n_times == 2 * 288
    np.testing.assert_allclose(panel.values[1, 0], web_cpu["value"].to_numpy(np.float32), rtol=1e-6)
    # The corpus reads as a protocol dataset in which everything is training data.
    loaded = load_benchmark(out, univariate=True)
    np.testing.assert_array_equal(loaded.n_train, loaded.lengths)


def test_the_leak_check_catches_one_test_point_however_it_got_in(tmp_path: Path) -> None:
    data = _dataset(tmp_path)
    out = tmp_path / "corpus.parquet"
    build_corpus(CorpusPlan(datasets=(str(data),)), out, THRESHOLDS)
    corpus = pd.read_parquet(out)
    start = int(pd.Timestamp("2000-01-01").tz_localize("UTC").timestamp())  # the earliest series: the start
    check_no_test_part(corpus, [data], start)  # the written corpus passes
    last = corpus[corpus.series_id == "toy/a"].iloc[[-1]].copy()
    one_more = last.assign(timestamp=last["timestamp"] + pd.Timedelta(minutes=5))  # the first test point
    with pytest.raises(CorpusError, match=r"toy/a: .*more than its 864 training points"):
        check_no_test_part(pd.concat([corpus, one_more]), [data], start)
    swapped = corpus.copy()
    swapped.loc[swapped.index[swapped.series_id == "toy/b"][-1], "value"] = TEST_MARK
    with pytest.raises(CorpusError, match=r"toy/b: .*not its training part"):
        check_no_test_part(swapped, [data], start)


def test_evaluation_seeds_bad_sources_and_failed_builds_are_refused_without_leaving_files(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out" / "corpus.parquet"
    held_out = _fleet(tmp_path, seed=7)
    assert main(["corpus", "--out", str(out), "--fleet", str(held_out)]) == 2
    assert "simulator seed 7 is held out for evaluation" in capsys.readouterr().err
    assert main(["corpus", "--out", str(out)]) == 2
    assert "nothing to put in the corpus" in capsys.readouterr().err
    assert main(["corpus", "--out", str(out), "--dataset", str(tmp_path / "nope.parquet")]) == 2
    assert "dataset " + str(tmp_path / "nope.parquet") + ": no such file" in capsys.readouterr().err
    data = _dataset(tmp_path)
    assert main(["corpus", "--out", str(out), "--fleet", str(_fleet(tmp_path)), "--dataset", str(data),
                 "--dataset", str(data)]) == 2
    assert "comes from two sources" in capsys.readouterr().err
    assert not out.parent.exists() or not any(out.parent.iterdir())  # nothing half-written


def test_pretrain_then_backtest_from_it_reports_both_from_scratch_and_from_pretrained(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = {"model": dict(TINY), "trainer": {"batch_size": 8, "batches_per_epoch": 2, "max_epochs": 1,
                                            "early_stopping_patience": 1, "work_dir": str(tmp_path / "runs")}}
    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump(cfg))
    data = _dataset(tmp_path)
    corpus = tmp_path / "corpus.parquet"
    fleet = _fleet(tmp_path, scenario="critical", days=3)
    assert main(["--config.file", str(config), "corpus", "--out", str(corpus), "--fleet", str(fleet),
                 "--dataset", str(data)]) == 0
    pretrained = tmp_path / "pretrained"
    with monkeypatch.context() as patch:
        # However long and daily the corpus, the pretrained model (every fleet's start) reads no week by
        # default (model.seasonal_days: auto): a choice from the corpus would change the shipped shape.
        from trainer import week_choice

        patch.setattr(week_choice, "choose_week", lambda *a: week_choice.WeekChoice(7, 30.0, 0.5, "daily"))
        assert main(["--config.file", str(config), "pretrain", "--corpus", str(corpus), "--out", str(pretrained),
                     "--max-epochs", "1", "--batches-per-epoch", "2", "--no-progress"]) == 0
    assert "pretrained model" in capsys.readouterr().out
    spec = json.loads((pretrained / "model.json").read_text())["spec"]
    assert spec["signals"] == ["value"]
    assert (spec["seasonal_days"], spec["seasonal_bucket_seconds"]) == (0, 0)

    out, report = tmp_path / "fc.csv", tmp_path / "report.json"
    code = main(["--config.file", str(config), "backtest", "--data", str(data), "--out", str(out),
                 "--report", str(report), "--init-from", str(pretrained), "--max-epochs", "1",
                 "--batches-per-epoch", "2", "--time-budget", "4", "--no-progress"])
    assert code == 0
    scratch = json.loads((tmp_path / "report.scratch.json").read_text())
    warm = json.loads(report.read_text())
    assert scratch["initial_weights"] == "none (from scratch)"
    assert warm["initial_weights"] == str(pretrained / "model.safetensors")
    # The report names what `auto` chose: the pretrained run's center and days are its start's.
    assert (warm["center"], warm["seasonal_days"]) == (spec["center"], spec["seasonal_days"])
    assert scratch["center"] in ("last", "recent") and scratch["seasonal_days"] == 0  # days of history: no week
    both = [pd.read_csv(tmp_path / "fc.scratch.csv"), pd.read_csv(out)]
    assert len(both[0]) == len(both[1]) > 0
    assert not np.allclose(both[0]["p50"], both[1]["p50"])  # the pretrained weights changed the forecasts

    # A network of another shape is refused before any training, with the way out.
    capsys.readouterr()
    hosts = tmp_path / "hosts"
    hosts.mkdir()
    multi = _dataset(hosts)
    meta = pd.read_csv(hosts / "toy.series.csv").assign(host="h1")
    meta.to_csv(hosts / "toy.series.csv", index=False)
    assert main(["--config.file", str(config), "backtest", "--data", str(multi), "--out", str(hosts / "fc.csv"),
                 "--init-from", str(pretrained), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "its network differs from this backtest's in signals" in err and "--univariate" in err


def test_the_shipped_pretrained_model_loads_and_fits_a_univariate_backtest_of_the_default_config() -> None:
    """`models/pretrained` must stay a valid start for `backtest --init-from`: a change of the model defaults
    that changes the network's shape must come with a rebuilt pretrained model (models/README.md)."""
    from forecaster.contract.artifacts import load_model_dir
    from trainer.cli import _shape_differences, _spec

    model = load_model_dir(Path(__file__).resolve().parent.parent / "models" / "pretrained")
    spec = _spec(load_config(None), ["value"])
    assert _shape_differences(model.spec, spec) == []  # the default center, auto, continues from any
