"""tft-trainer: train/gate/promote from Parquet, exit statuses, lock, metrics file, backtest."""

from __future__ import annotations

import dataclasses
import fcntl
import subprocess
import sys
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd
import pytest
import yaml

from forecaster.contract.artifacts import read_metadata
from forecaster.contract.registry import GLOBAL_SCOPE, Registry
from tests.modelkit import TINY, synthetic_panel, tiny_registry
from trainer import gate
from trainer.cli import main

REPO = Path(__file__).resolve().parent.parent
SCORER = REPO.parent / "shared" / "bench" / "score.py"


def _config(tmp_path: Path, **trainer: object) -> Path:
    cfg = {
        "model": {k: v for k, v in TINY.items() if k != "attention_heads"} | {"attention_heads": 1},
        "trainer": {"registry_dir": str(tmp_path / "registry"), "batch_size": 8, "batches_per_epoch": 3,
                    "max_epochs": 2, "validation_days": 1, "early_stopping_patience": 1, **trainer},
    }
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _parquet(tmp_path: Path, days: float = 5) -> Path:
    panel = synthetic_panel(hosts=2, days=days)
    rows = []
    for i, inst in enumerate(panel.instances):
        frame = pd.DataFrame({"instance": inst, "timestamp": pd.to_datetime(panel.timestamps, unit="s", utc=True)})
        for j, sig in enumerate(panel.signals):
            frame[sig] = panel.values[i, j]
        rows.append(frame)
    path = tmp_path / f"history_{days}.parquet"
    pd.concat(rows).to_parquet(path)
    return path


def _metric(path: Path, name: str) -> float:
    for line in path.read_text().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in {path}")


def test_train_gate_and_registry_agree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _config(tmp_path)
    data = _parquet(tmp_path)
    code = main(["--config.file", str(config), "train", "--parquet", str(data), "--no-progress"])
    registry = Registry(tmp_path / "registry")
    metrics = tmp_path / "registry" / "trainer_metrics.prom"
    assert code in (0, 3, 4)
    assert _metric(metrics, "tft_trainer_last_run_exit_code") == code
    assert len(registry.versions()) == 1
    assert (registry.latest_version() is not None) == (code == 0)
    text = metrics.read_text()
    # client_python writes label names in sorted order.
    assert 'tft_trainer_backtest_score{metric="sql",model="seasonal_naive"}' in text
    assert 'tft_trainer_backtest_score{metric="coverage",model="candidate"}' in text
    first = registry.versions()[0]
    if code != 0:  # the next run continues from the current model: make this one current
        registry.promote(first)

    # Second run: a current model (if promoted) is now part of the comparison; this one trains
    # with a larger share of injected level shifts (trainer.augment), which the metadata records.
    from trainer import training

    shares_used: set[float] = set()
    real_inject = training.inject_level_shifts

    def spy(batch, signals, seasonal_days, share, rng, *rest):  # type: ignore[no-untyped-def]
        shares_used.add(share)
        return real_inject(batch, signals, seasonal_days, share, rng, *rest)

    monkeypatch.setattr(training, "inject_level_shifts", spy)
    code2 = main(["--config.file", str(config), "train", "--parquet", str(data), "--no-progress", "--seed", "7",
                  "--level-shift-share", "0.3"])
    assert code2 in (0, 3, 4)
    versions = registry.versions()
    assert len(versions) == 2
    metas = [read_metadata(registry.root / GLOBAL_SCOPE / "versions" / v) for v in versions]
    shares = [m["training"]["level_shift_share"] for m in metas]
    # The default (auto: by the first network's center), then the flag.
    first_center = metas[0]["spec"]["center"]
    assert shares == [0.1 if first_center == "recent" else 0.0, 0.3] and shares_used == {0.3}
    assert 'model="current"' in metrics.read_text()
    # The second run continued from the first one's weights (the default), the first from fresh ones.
    starts = [read_metadata(registry.root / GLOBAL_SCOPE / "versions" / v)["training"]["initial_weights"]
              for v in versions]
    assert starts == [None, str(registry.root / GLOBAL_SCOPE / "versions" / first)]


def test_training_continues_from_the_current_model_only_when_the_network_has_its_shape(tmp_path: Path) -> None:
    from trainer.cli import _parser, _starting_weights

    args = _parser().parse_args(["train"])
    registry, model, _ = tiny_registry(tmp_path)
    spec = model.spec
    assert _starting_weights(args, Registry(tmp_path / "empty"), GLOBAL_SCOPE, spec) is None  # fresh weights
    current = registry.latest_path()
    assert current is not None
    assert _starting_weights(args, registry, GLOBAL_SCOPE, spec) == current / "model.safetensors"
    # A host scope without a model of its own continues from the global one.
    assert _starting_weights(args, registry, "host-web-01", spec) == current / "model.safetensors"
    assert _starting_weights(_parser().parse_args(["train", "--from-scratch"]), registry, GLOBAL_SCOPE, spec) is None
    for changed in ({"signals": spec.signals[:2]}, {"hidden_size": spec.hidden_size * 2},
                    {"seasonal_days": 1}):
        assert _starting_weights(args, registry, GLOBAL_SCOPE, dataclasses.replace(spec, **changed)) is None


def test_gate_keeps_the_current_model_when_the_candidate_is_worse() -> None:
    s = gate.Scores
    scores = {"seasonal_naive": s(0.50, 1.0, 0.8, 3), "linear": s(0.60, 1.2, 0.8, 3),
              "current": s(0.30, 0.7, 0.8, 3), "candidate": s(0.31, 0.7, 0.8, 3)}
    decision = gate.decide(scores, margin=0.02)
    assert not decision.promote and "current" in decision.reason
    scores["candidate"] = s(0.28, 0.6, 0.8, 3)
    assert gate.decide(scores, margin=0.02).promote
    scores["candidate"] = s(0.55, 0.6, 0.8, 3)
    del scores["current"]
    decision = gate.decide(scores, margin=0.02)
    assert not decision.promote and "baseline" in decision.reason


def test_gate_verdict_names_the_case() -> None:
    """The exit status follows the verdict, so each way of deciding must set its own."""
    s = gate.Scores
    base = {"seasonal_naive": s(0.50, 1.0, 0.8, 3), "linear": s(0.60, 1.2, 0.8, 3)}
    cases = [({"candidate": s(float("nan"), 1.0, 0.8, 0)}, gate.Verdict.UNSCORED),
             ({"candidate": s(0.55, 1.0, 0.8, 3)}, gate.Verdict.WORSE_THAN_BASELINE),
             ({"candidate": s(0.31, 1.0, 0.8, 3), "current": s(0.30, 1.0, 0.8, 3)}, gate.Verdict.NOT_BETTER),
             ({"candidate": s(0.28, 1.0, 0.8, 3), "current": s(0.30, 1.0, 0.8, 3)}, gate.Verdict.PROMOTE),
             ({"candidate": s(0.40, 1.0, 0.8, 3)}, gate.Verdict.PROMOTE)]
    for extra, verdict in cases:
        decision = gate.decide(base | extra, margin=0.02)
        assert decision.verdict is verdict, decision.reason
        assert decision.promote == (verdict is gate.Verdict.PROMOTE)


def test_gate_scores_a_trained_model_against_baselines(tmp_path: Path) -> None:
    from forecaster.contract.features import WindowRules
    from tests.modelkit import THRESHOLDS, train_tiny

    panel = synthetic_panel(hosts=2, days=5)
    model = train_tiny(panel, tmp_path)
    rules = WindowRules(model.spec.context_steps, model.spec.horizon_steps, model.spec.min_history_steps)
    batch, owner = gate.holdout_windows(panel, 288, rules, model.spec.signal_codes(), THRESHOLDS)
    scores = gate.evaluate(panel, batch, owner, {"candidate": model}, model.spec.horizon_steps)
    assert set(scores) == {"seasonal_naive", "linear", "candidate"}
    for name, sc in scores.items():
        assert np.isfinite(sc.sql) and sc.sql > 0, name
        assert 0 <= sc.coverage <= 1
        assert sc.series == 8


def test_gate_compares_models_that_read_different_seasonal_inputs(tmp_path: Path) -> None:
    """A current model with same-time-of-day (or cycle) inputs judged beside a candidate without them (and back)."""
    from tests.modelkit import THRESHOLDS, train_tiny

    panel = synthetic_panel(hosts=2, days=5)
    plain = train_tiny(panel, tmp_path / "a", epochs=1)
    seasonal = train_tiny(panel, tmp_path / "b", epochs=1, seasonal_days=2)
    cycle = train_tiny(panel, tmp_path / "c", epochs=1, cycle=True)
    for candidate, current in ((plain, seasonal), (seasonal, plain), (plain, cycle), (cycle, plain)):
        rules = candidate.spec.window_rules()
        batch, owner = gate.holdout_windows(panel, 288, rules, candidate.spec.signal_codes(), THRESHOLDS)
        scores = gate.evaluate(panel, batch, owner, {"candidate": candidate, "current": current},
                               candidate.spec.horizon_steps, rules)
        assert np.isfinite(scores["current"].sql) and np.isfinite(scores["candidate"].sql)
        assert scores["current"].series == scores["candidate"].series == 8


def test_lock_held_exits_5(tmp_path: Path) -> None:
    config = _config(tmp_path)
    lock = tmp_path / "registry" / ".train.lock"
    lock.parent.mkdir(parents=True)
    with open(lock, "w") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        code = main(["--config.file", str(config), "train", "--parquet", str(_parquet(tmp_path))])
    assert code == 5


def _hold_lock(tmp_path: Path) -> IO[str]:
    """The run lock, held as a running training run holds it (the caller closes it)."""
    lock = tmp_path / "registry" / ".train.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    fh = open(lock, "a+")  # noqa: SIM115 - closed by the caller
    fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
    fh.write("4242")
    fh.flush()
    return fh


def test_a_run_that_finds_the_lock_held_is_recorded_without_losing_earlier_runs(tmp_path: Path) -> None:
    from trainer.cron import write_run_metrics

    config = _config(tmp_path)
    metrics = tmp_path / "registry" / "trainer_metrics.prom"
    write_run_metrics(metrics, exit_code=0, outcome="promoted", duration_s=60.0, version="v1")
    last_success = _metric(metrics, "tft_trainer_last_success_timestamp_seconds")
    with _hold_lock(tmp_path) as held:
        code = main(["--config.file", str(config), "train", "--parquet", str(_parquet(tmp_path))])
        held.seek(0)
        assert held.read() == "4242"  # the holder's lock file is left as it was
    assert code == 5
    assert _metric(metrics, "tft_trainer_last_run_exit_code") == 5
    text = metrics.read_text()
    assert 'tft_trainer_runs_total{outcome="locked"} 1' in text
    assert 'tft_trainer_runs_total{outcome="promoted"} 1' in text
    assert 'tft_trainer_last_run_info{outcome="locked",version=""} 1' in text
    assert _metric(metrics, "tft_trainer_last_success_timestamp_seconds") == last_success


def test_a_full_disk_exits_6_and_leaves_no_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The record cannot be written (ENOSPC): status 6, as for no usable history, and nothing left behind."""
    import errno
    import os

    from trainer import cron

    def full(fd: int, data: bytes) -> None:
        os.write(fd, data[: len(data) // 2])  # part of it fits, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(cron, "_write_all", full)
    config = _config(tmp_path)
    with _hold_lock(tmp_path):
        code = main(["--config.file", str(config), "train", "--parquet", str(_parquet(tmp_path))])
    assert code == 6
    left = sorted(p.name for p in (tmp_path / "registry").iterdir())
    assert left == sorted([".train.lock", cron.RECORD_LOCK_FILE]), left


def test_sigterm_during_training_is_recorded_and_removes_the_checkpoint(tmp_path: Path) -> None:
    """SIGTERM once training has started (an epoch wrote its checkpoint): status 143, recorded, nothing left."""
    import os
    import signal
    import threading
    import time

    config = _config(tmp_path, max_epochs=10_000, early_stopping_patience=10_000, batches_per_epoch=2)
    data = _parquet(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "trainer", "--config.file", str(config), "train", "--parquet",
                             str(data), "--no-progress"], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()
    work = tmp_path / "runs" / "train"
    try:
        deadline = time.monotonic() + 120  # torch's import and the first epoch
        while not any("epoch 1:" in line for line in lines) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert proc.poll() is None and any("epoch 1:" in line for line in lines), "".join(lines[-20:])
        assert list(work.glob("best-*.safetensors")), "the run has a checkpoint to clean up"
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=10)
    assert code == 143, "".join(lines[-20:])
    metrics = tmp_path / "registry" / "trainer_metrics.prom"
    assert _metric(metrics, "tft_trainer_last_run_exit_code") == 143
    assert 'tft_trainer_runs_total{outcome="terminated"} 1' in metrics.read_text()
    assert not list(work.glob("best-*.safetensors"))
    assert not [p.name for p in (tmp_path / "registry").rglob(".*") if p.name.startswith((".trainer_", ".latest"))
                and p.name != ".trainer_record.lock"]
    assert "Traceback" not in "".join(lines)


def test_short_history_exits_6_and_is_recorded(tmp_path: Path) -> None:
    config = _config(tmp_path)
    code = main(["--config.file", str(config), "train", "--parquet", str(_parquet(tmp_path, days=1))])
    assert code == 6
    metrics = tmp_path / "registry" / "trainer_metrics.prom"
    assert _metric(metrics, "tft_trainer_last_run_exit_code") == 6
    assert 'tft_trainer_runs_total{outcome="no_data"} 1' in metrics.read_text()


def test_bad_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("trainer:\n  batch_size: -3\n")
    proc = subprocess.run([sys.executable, "-m", "trainer", "--config.file", str(bad), "train"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "trainer.batch_size" in proc.stderr and "Traceback" not in proc.stderr


def _protocol_dataset(tmp_path: Path, series: int = 2, days: float = 6,
                      imputed: dict[int, slice] | None = None) -> Path:
    """``imputed`` marks extra imputed runs: series index -> steps."""
    rng = np.random.default_rng(3)
    rows = []
    n = int(days * 288)
    for s in range(series):
        ts = pd.date_range("2014-03-01", periods=n, freq="5min") + pd.Timedelta(minutes=s)
        value = 50 + 30 * np.sin(2 * np.pi * np.arange(n) / 288 + s) + 5 * rng.standard_normal(n)
        value[n // 2: n // 2 + 5] = 99
        flags = np.arange(n) % 500 == 7
        flags[(imputed or {}).get(s, slice(0))] = True
        rows.append(pd.DataFrame({"series_id": f"s{s}", "timestamp": ts, "value": value, "imputed": flags}))
    path = tmp_path / "bench.parquet"
    pd.concat(rows).to_parquet(path)
    return path


def test_backtest_writes_a_file_score_py_accepts(tmp_path: Path) -> None:
    config = _config(tmp_path)
    n_train = int(0.7 * 6 * 288)
    # s1's last 100 training steps are imputed: its first origin has no real value in its
    # 48-step context and starts from the last one before it, as the protocol's baselines do.
    data = _protocol_dataset(tmp_path, imputed={1: slice(n_train - 100, n_train)})
    out = tmp_path / "fc.parquet"
    code = main(["--config.file", str(config), "backtest", "--data", str(data), "--out", str(out),
                 "--time-budget", "2", "--max-epochs", "1", "--batches-per-epoch", "2", "--no-progress"])
    assert code == 0
    fc = pd.read_parquet(out)
    assert list(fc.columns) == ["series_id", "origin", "h", "p10", "p50", "p90", "warn_2h", "warn_8h"]
    n = 6 * 288
    origins = len(range(int(0.7 * n) - 1, n - 96, 12))
    assert len(fc) == 2 * origins * 96
    assert (fc.p10 <= fc.p50).all() and (fc.p50 <= fc.p90).all()
    if not SCORER.exists():
        pytest.skip(f"{SCORER} not present")
    proc = subprocess.run([sys.executable, str(SCORER), str(data), str(out), "--name", "tiny"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "missing=0" in proc.stdout


def test_backtest_refuses_origins_with_nothing_before_them_before_training(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import trainer.backtest

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("trained although the run could not forecast every origin")

    monkeypatch.setattr(trainer.backtest, "train_model", no_training)
    config = _config(tmp_path)
    data = _protocol_dataset(tmp_path, imputed={0: slice(0, int(0.8 * 6 * 288))})
    out = tmp_path / "fc.parquet"
    code = main(["--config.file", str(config), "backtest", "--data", str(data), "--out", str(out),
                 "--time-budget", "2", "--max-epochs", "1", "--batches-per-epoch", "2", "--no-progress"])
    assert code == 6
    err = capsys.readouterr().err
    assert "cannot be forecast (series: s0)" in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.integration
def test_train_from_a_real_prometheus_filled_by_the_backfill(tmp_path: Path, prometheus_factory,
                                                             promtool: str) -> None:
    import math
    import shutil
    import time

    from exporter.backfill import backfill
    from exporter.simulation import Fleet

    anchor = math.floor(time.time() / 300) * 300
    fleet = Fleet(2, seed=3, scenario="degrading", anchor=anchor)
    result = backfill(fleet, days=4, out_dir=tmp_path / "bf", jobs=1)
    prom = prometheus_factory()
    prom.data_dir.mkdir(parents=True)
    for block in result.blocks_dir.iterdir():
        shutil.copytree(block, prom.data_dir / block.name)
    prom.start()

    config = _config(tmp_path, history_days=4)
    code = main(["--config.file", str(config), "train", "--prometheus.url", prom.url, "--no-progress"])
    assert code in (0, 3, 4)
    registry = Registry(tmp_path / "registry")
    (version,) = registry.versions()
    from forecaster.contract.artifacts import read_metadata

    meta = read_metadata(registry.root / "global" / "versions" / version)
    assert meta["training"]["instances"] == sorted(fleet.names)
    assert meta["training"]["steps"] >= 4 * 288 - 2
    assert set(meta["holdout_scores"]) == {"candidate", "seasonal_naive", "linear"}

    # Prometheus unreachable: exit 6, recorded for Prometheus to see.
    prom.stop()
    code = main(["--config.file", str(config), "train", "--prometheus.url", prom.url])
    assert code == 6
    assert _metric(tmp_path / "registry" / "trainer_metrics.prom", "tft_trainer_last_run_exit_code") == 6
