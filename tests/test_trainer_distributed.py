"""tft-trainer under DDP: one lock, one model, one metrics file; each rank its own windows; refusals."""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from forecaster.contract.artifacts import read_metadata
from forecaster.contract.registry import GLOBAL_SCOPE, Registry
from tests.modelkit import TINY, synthetic_panel
from tests.test_trainer import _config, _metric, _parquet
from trainer.launch import LaunchRank, launch_problem, launch_rank

REPO = Path(__file__).resolve().parent.parent
#: What Lightning's launchers and torchrun set; a test run inherits none of them.
_LAUNCH_VARS = ("LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                "MASTER_PORT", "PL_GLOBAL_SEED", "TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "SLURM_JOB_NAME")


def _sampler(days: float = 5, seed: int = 0):  # type: ignore[no-untyped-def]
    from forecaster.contract.model import ModelSpec
    from trainer.training import WindowSampler, make_split, series_thresholds

    panel = synthetic_panel(hosts=2, days=days, seed=seed)
    spec = ModelSpec(signals=list(panel.signals), step_seconds=panel.step_seconds, **TINY)
    split = make_split(panel, 288)
    return panel, WindowSampler(panel, split, spec.window_rules(), spec.signal_codes(),
                                series_thresholds(panel, split.series), seed=1)


def _windows(batches) -> list[set[tuple[int, int, int]]]:  # type: ignore[no-untyped-def]
    """Per batch: the (instance, signal, origin) of each window, read back from the tensors' source."""
    from trainer import training

    seen: list[set[tuple[int, int, int]]] = []
    real = training._to_torch_batch

    def spy(batch):  # type: ignore[no-untyped-def]
        seen.append({(int(s[0]), int(s[1]), int(o)) for s, o in zip(batch.series, batch.origins, strict=True)})
        return real(batch)

    training._to_torch_batch = spy
    try:
        for _ in batches:
            pass
    finally:
        training._to_torch_batch = real
    return seen


def test_each_rank_draws_its_own_share_of_the_epoch_and_as_many_batches_as_the_others() -> None:
    from trainer.training import SampledBatches

    panel, sampler = _sampler()
    alone = SampledBatches(sampler, 5, 8, 42, panel.signals, rank_and_world=(0, 1))
    ranks = [SampledBatches(sampler, 5, 8, 42, panel.signals, rank_and_world=(r, 2)) for r in (0, 1)]
    assert len(alone) == 5 and [len(r) for r in ranks] == [3, 3]  # ceil(5 / 2) each: DDP needs equal counts
    one = _windows(alone)
    two = [_windows(r) for r in ranks]
    assert len(one) == 5 and [len(t) for t in two] == [3, 3]
    assert two[0][0] != two[1][0], "both ranks drew the same first batch"
    # Draw k of an epoch is the same whoever draws it: two ranks together train on what one does alone.
    assert two[0][:3] == one[0:5:2] and two[1][:2] == one[1:5:2]
    # A new epoch draws new windows; the same epoch again draws the same ones.
    ranks[0].set_epoch(1)
    assert _windows(ranks[0])[0] != two[0][0]
    ranks[0].set_epoch(0)
    assert _windows(ranks[0]) == two[0]


def test_the_training_progress_bar_has_a_total(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """Lightning's bar takes its total from len() of the training batches: '3/3', not '3/?'."""
    from forecaster.contract.model import ModelSpec
    from trainer.training import TrainSettings, train_model

    panel = synthetic_panel(hosts=2, days=5)
    spec = ModelSpec(signals=list(panel.signals), step_seconds=panel.step_seconds, **TINY)
    settings = TrainSettings(batch_size=8, batches_per_epoch=3, max_epochs=1, time_budget_seconds=60,
                             work_dir=tmp_path, validation_windows=32, progress=True, accelerator="cpu")
    result = train_model(panel, spec, settings, validation_steps=288)
    assert result is not None and result.samples_seen == 3 * 8
    bar = capfd.readouterr().out  # Lightning's bar writes to stdout
    assert re.search(r"\b3/3 \[", bar), bar[-2000:]
    epochs = [part for part in re.split(r"[\r\n]", bar) if part.startswith("Epoch ")]
    assert epochs and not [part for part in epochs if "/?" in part], bar[-2000:]
    assert not list(tmp_path.glob("best-*")), "the run's checkpoint is removed once loaded"


def test_launch_rank_reads_lightnings_variables() -> None:
    assert launch_rank(env={}).is_zero
    child = launch_rank(env={"LOCAL_RANK": "1", "NODE_RANK": "0", "WORLD_SIZE": "2"})
    assert not child.is_zero and child.global_rank == 1
    other_node = launch_rank(num_nodes=2, env={"NODE_RANK": "1"})  # started by hand on node 1
    assert not other_node.is_zero and other_node.global_rank is None
    assert launch_rank(num_nodes=2, env={"NODE_RANK": "1", "LOCAL_RANK": "2", "WORLD_SIZE": "8"}).global_rank == 6
    assert launch_rank(env={"GROUP_RANK": "1"}) == LaunchRank(1, 0, None)
    assert launch_rank(num_nodes=2, env={"NODE_RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "4"}).is_zero


def test_launch_rank_follows_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _LAUNCH_VARS:
        monkeypatch.delenv(name, raising=False)
    assert launch_rank().is_zero
    for name, value in {"RANK": "3", "LOCAL_RANK": "1", "GROUP_RANK": "1", "WORLD_SIZE": "4",
                        "LOCAL_WORLD_SIZE": "2", "TORCHELASTIC_RUN_ID": "x", "MASTER_ADDR": "localhost",
                        "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(name, value)
    rank = launch_rank()
    assert rank.global_rank == 3 and not rank.is_zero


@pytest.mark.parametrize(("strategy", "accelerator", "precision", "refused"), [
    ("ddp", "cpu", None, None),
    ("ddp", "cpu", "32-true", None),
    ("ddp", "cpu", "32", None),
    ("ddp_spawn", "cpu", None, "--strategy ddp_spawn"),
    ("ddp_fork", "cpu", None, "--strategy ddp_fork"),
    ("ddp_notebook", "cpu", None, "--strategy ddp_notebook"),
    ("auto", "cpu", "bf16-mixed", "oneDNN"),
    ("auto", "cpu", "bf16", "oneDNN"),
    ("auto", "cpu", "16-mixed", "float16"),
    ("auto", "gpu", "16-mixed", "float16"),
    ("auto", "gpu", "bf16-mixed", None),
    ("auto", "cpu", "bf16-true", "float32"),
    ("auto", "gpu", "64-true", "float32"),
])
def test_launch_problems(strategy: str, accelerator: str, precision: str | None, refused: str | None) -> None:
    problem = launch_problem(strategy, accelerator, precision)
    if refused is None:
        assert problem is None
    else:
        assert problem is not None and refused in problem and "\n" not in problem


@pytest.mark.parametrize("flags", [["--strategy", "ddp_spawn", "--devices", "2"], ["--precision", "bf16-mixed"]])
def test_refused_launches_are_one_line_and_exit_2_before_the_lock(tmp_path: Path, flags: list[str]) -> None:
    config = _config(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "trainer", "--config.file", str(config), "train", "--parquet",
                           str(tmp_path / "never-read.parquet"), "--accelerator", "cpu", *flags],
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.startswith("tft-trainer: --") and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert not (tmp_path / "registry").exists(), "nothing is written before a refusal"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCH_VARS}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.mark.slow
def test_ddp_on_two_cpu_ranks_trains_one_model_and_writes_once(tmp_path: Path) -> None:
    """The real command, as Lightning's launcher runs it: rank 1 is this command again with LOCAL_RANK=1."""
    config = _config(tmp_path)
    data = _parquet(tmp_path)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "trainer", "--log.level", "debug", "--config.file", str(config),
                           "train", "--parquet", str(data), "--accelerator", "cpu", "--devices", "2",
                           "--strategy", "ddp", "--no-progress"],
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    wall = time.monotonic() - started
    log = proc.stderr
    assert proc.returncode in (0, 3, 4), log[-5000:]
    print(f"DDP run: exit {proc.returncode} in {wall:.1f}s")

    # One lock, taken by rank 0; rank 1 never tried, and nothing holds it now.
    assert log.count("holding the lock") == 1 and "another training run holds" not in log
    assert "global rank 1 (node 0, local rank 1) of a distributed run: training only" in log
    with open(tmp_path / "registry" / ".train.lock", "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)

    # One model version, promoted or not as the exit status says; one run in the metrics file.
    registry = Registry(tmp_path / "registry")
    (version,) = registry.versions()
    assert (registry.latest_version() == version) == (proc.returncode == 0)
    metrics = tmp_path / "registry" / "trainer_metrics.prom"
    assert _metric(metrics, "tft_trainer_last_run_exit_code") == proc.returncode
    state = json.loads((tmp_path / "registry" / "trainer_state.json").read_text())
    assert sum(state["runs"].values()) == 1, state

    # Each rank drew its own windows, as many batches as the other, in every epoch.
    draws = re.findall(r"rank (\d) of 2, epoch (\d+): (\d+) batches, draws ([\d, .]+) seeded \(42, \d+, draw\); "
                       r"first batch ([0-9a-f]{12})", log)
    by_epoch: dict[str, dict[str, tuple[str, str]]] = {}
    for rank, epoch, count, _, fingerprint in draws:
        by_epoch.setdefault(epoch, {})[rank] = (count, fingerprint)
    meta = read_metadata(registry.root / GLOBAL_SCOPE / "versions" / version)["training"]
    assert len(by_epoch) == meta["epochs"] >= 1, draws
    for epoch, ranks in by_epoch.items():
        assert set(ranks) == {"0", "1"}, (epoch, ranks)
        assert ranks["0"][0] == ranks["1"][0] == str(math.ceil(3 / 2))
        assert ranks["0"][1] != ranks["1"][1], f"epoch {epoch}: both ranks trained on the same first batch"
    # batches_per_epoch counts over all ranks: 3 draws -> 2 per rank, 4 batches of 8 windows an epoch.
    assert meta["samples"] == meta["epochs"] * 2 * 2 * 8
    assert np.isfinite(meta["seconds"])
