"""The TFT model, its artifacts and registry: save/load fidelity, ordering, clear load errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from forecaster.contract.artifacts import ModelLoadError, load_model_dir, read_metadata, save_model_dir
from forecaster.contract.features import WindowRules, build_windows
from forecaster.contract.model import ForecastModel
from forecaster.contract.registry import Registry
from tests.modelkit import THRESHOLDS, synthetic_panel, train_tiny

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[ForecastModel, Path]:
    work = tmp_path_factory.mktemp("model")
    panel = synthetic_panel()
    model = train_tiny(panel, work / "work")
    path = save_model_dir(model, work / "saved")
    return model, path


def _windows(model: ForecastModel, hosts: int = 3):
    panel = synthetic_panel(hosts=hosts, seed=1)
    rules = WindowRules(model.spec.context_steps, model.spec.horizon_steps, model.spec.min_history_steps)
    series = np.array([(i, j) for i in range(hosts) for j in range(len(panel.signals))])
    origins = np.full(len(series), panel.n_times - 1)
    thr = np.array([THRESHOLDS[panel.signals[j]] for j in series[:, 1]])
    return build_windows(panel, series, origins, rules, model.spec.signal_codes(), thr)


def test_quantiles_are_ordered_and_clipped(trained: tuple[ForecastModel, Path]) -> None:
    model, _ = trained
    batch = _windows(model)
    fc = model.predict(batch, bounds=[(0.0, 1.0)] * len(batch))
    q = fc.quantiles
    assert q.shape == (len(batch), model.spec.horizon_steps, 3)
    assert np.all(q[..., 0] <= q[..., 1]) and np.all(q[..., 1] <= q[..., 2])
    assert q.min() >= 0.0 and q.max() <= 1.0
    for label, p in fc.breach_probability.items():
        assert p.shape == (len(batch),), label
        assert np.all((p >= 0) & (p <= 1))


def test_saved_model_predicts_identically_in_a_fresh_process(trained: tuple[ForecastModel, Path],
                                                               tmp_path: Path) -> None:
    model, path = trained
    batch = _windows(model)
    expected = model.predict(batch).quantiles
    out = tmp_path / "pred.npy"
    script = (
        "import sys, numpy as np\n"
        "from forecaster.contract.artifacts import load_model_dir\n"
        "from tests.test_model import _windows\n"
        f"m = load_model_dir({str(path)!r})\n"
        f"np.save({str(out)!r}, m.predict(_windows(m)).quantiles)\n"
    )
    subprocess.run([sys.executable, "-c", script], cwd=REPO, check=True, timeout=300)
    np.testing.assert_allclose(np.load(out), expected, rtol=1e-5, atol=1e-6)


def test_metadata_is_json_with_calibration(trained: tuple[ForecastModel, Path]) -> None:
    _, path = trained
    meta = read_metadata(path)
    assert meta["spec"]["signals"] == ["cpu", "memory", "filesystem", "iowait"]
    assert len(meta["calibration"]["band"]["lower"]) == meta["spec"]["horizon_steps"]
    assert set(meta["calibration"]["breach"]["weights"]) >= {"30m", "1h", "2h", "4h", "8h"}
    assert not list(path.glob("*.pt")) and not list(path.glob("*.pkl")) and not list(path.glob("*.ckpt"))


def test_corrupt_weights_give_a_clear_error(trained: tuple[ForecastModel, Path], tmp_path: Path) -> None:
    _, path = trained
    bad = tmp_path / "bad"
    save_model_dir(load_model_dir(path), bad)
    (bad / "model.safetensors").write_bytes(b"this is not a safetensors file")
    with pytest.raises(ModelLoadError, match=r"model\.safetensors.*checksum"):
        load_model_dir(bad)
    with pytest.raises(ModelLoadError, match=r"model\.safetensors"):
        load_model_dir(bad, verify_checksum=False)


def test_missing_json_field_names_the_field(trained: tuple[ForecastModel, Path], tmp_path: Path) -> None:
    _, path = trained
    bad = tmp_path / "bad"
    save_model_dir(load_model_dir(path), bad)
    meta = json.loads((bad / "model.json").read_text())
    del meta["spec"]["signals"]
    (bad / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match=r"model\.json.*signals"):
        load_model_dir(bad)
    del meta["calibration"]
    (bad / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match=r"model\.json: missing field 'calibration'"):
        load_model_dir(bad)


def test_network_outside_the_allow_list_is_refused(trained: tuple[ForecastModel, Path], tmp_path: Path) -> None:
    _, path = trained
    bad = tmp_path / "bad"
    save_model_dir(load_model_dir(path), bad)
    meta = json.loads((bad / "model.json").read_text())
    meta["network"]["class"] = "os.system"
    (bad / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="allow-list"):
        load_model_dir(bad)


def test_a_failed_promotion_leaves_no_temporary_pointer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk (or a stopped trainer) while ``latest`` is replaced: the old pointer stays, nothing stray."""
    import errno

    import forecaster.contract.registry as registry_module

    reg = Registry(tmp_path / "reg")
    (tmp_path / "reg" / "global" / "versions" / "v1").mkdir(parents=True)

    def full(src: str, dst: Path) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(registry_module.os, "replace", full)
    with pytest.raises(OSError):
        reg.promote("v1")
    monkeypatch.undo()
    assert reg.latest_version() is None
    assert sorted(p.name for p in (tmp_path / "reg" / "global").iterdir()) == ["versions"]


def test_registry_switches_latest_atomically(trained: tuple[ForecastModel, Path], tmp_path: Path) -> None:
    model, _ = trained
    reg = Registry(tmp_path / "reg")
    assert reg.latest_path() is None
    v1 = reg.add(model, version="v1")
    assert reg.latest_path() is None, "adding a version must not promote it"
    reg.promote(v1)
    assert reg.latest_version() == "v1"
    v2 = reg.add(model, version="v2")
    reg.promote(v2)
    assert reg.latest_path() == tmp_path / "reg" / "global" / "versions" / "v2"
    assert not [p for p in (tmp_path / "reg" / "global").iterdir() if p.name.startswith(".")]
    with pytest.raises(ModelLoadError, match="no such version"):
        reg.promote("nope")
    for k in range(3, 9):
        reg.add(model, version=f"v{k}")
    removed = reg.prune(keep=2)
    assert "v2" not in removed and reg.latest_version() == "v2"
    assert reg.versions() == ["v2", "v7", "v8"]


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_saved_versions_are_world_readable_whatever_the_umask(trained: tuple[ForecastModel, Path]) -> None:
    """A forecaster running as another user than the cron trainer must be able to load what it promotes."""
    model, _ = trained
    # Not under tmp_path: pytest keeps that private to its user, and another user reads below.
    base = Path(tempfile.mkdtemp(prefix="registry-modes-"))
    try:
        os.chmod(base, 0o755)
        root = base / "reg"
        old = os.umask(0o077)
        try:
            reg = Registry(root)
            reg.promote(reg.add(model, version="v1"))
            reg.promote(reg.add(model, scope="hosts/db-1", version="own"), scope="hosts/db-1")
        finally:
            os.umask(old)
        version = root / "global" / "versions" / "v1"
        host = root / "hosts" / "db-1"
        dirs = [root, root / "global", root / "global" / "versions", version, root / "hosts", host,
                host / "versions", host / "versions" / "own"]
        assert {str(d.relative_to(base)): _mode(d) for d in dirs} == {str(d.relative_to(base)): 0o755 for d in dirs}
        files = [version / "model.json", version / "model.safetensors", root / "global" / "latest",
                 host / "versions" / "own" / "model.json", host / "latest"]
        assert {str(f.relative_to(base)): _mode(f) for f in files} == {str(f.relative_to(base)): 0o644
                                                                       for f in files}
        if os.geteuid() == 0:  # another uid really reads them (with cat: this interpreter lives under /root)
            proc = subprocess.run(["cat", *map(str, files)], user=65534, group=65534, extra_groups=[], cwd="/",
                                  capture_output=True, timeout=30, check=False)
            assert proc.returncode == 0, proc.stderr.decode()
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("pointer", ["../../x", "../../../outside", "ABSOLUTE", "evil-link", "v1/../../x", ""])
def test_latest_must_name_a_version_inside_the_registry(trained: tuple[ForecastModel, Path], tmp_path: Path,
                                                        pointer: str) -> None:
    """Whatever ``latest`` says, only a version directory of the registry is ever served."""
    model, _ = trained
    reg = Registry(tmp_path / "reg")
    reg.promote(reg.add(model, version="v1"))
    outside = save_model_dir(model, tmp_path / "outside")  # a valid model: loading it would "work"
    save_model_dir(model, tmp_path / "reg" / "x")
    (tmp_path / "reg" / "global" / "versions" / "evil-link").symlink_to(outside, target_is_directory=True)
    text = str(outside) if pointer == "ABSOLUTE" else pointer
    (tmp_path / "reg" / "global" / "latest").write_text(text + "\n")
    if not text:
        assert reg.latest_path() is None  # an empty pointer is "nothing promoted", as before
        return
    with pytest.raises(ModelLoadError, match=r"latest: .*(not a version name|outside the registry)"):
        reg.latest_path()
    with pytest.raises(ModelLoadError, match=r"not a version name|outside the registry"):
        reg.promote(text)


def test_version_names_the_registry_would_not_read_are_refused(trained: tuple[ForecastModel, Path],
                                                               tmp_path: Path) -> None:
    model, _ = trained
    reg = Registry(tmp_path / "reg")
    for name in ("../x", ".hidden", "a/b", str(tmp_path / "abs")):
        with pytest.raises(ModelLoadError, match="not a version name"):
            reg.add(model, version=name)
    assert not (tmp_path / "x").exists() and not (tmp_path / "abs").exists()


def test_windows_count_what_they_skip() -> None:
    panel = synthetic_panel(hosts=3, days=2)
    panel.values[1, :, :] = np.nan
    panel.values[1, :, -20:] = 0.5  # only 20 steps of history: too short
    panel.values[2, :, -10:] = np.nan  # stopped reporting 10 steps ago: stale
    rules = WindowRules(48, 96, 24)
    series = np.array([(i, 0) for i in range(3)])
    skipped: Counter[str] = Counter()
    batch = build_windows(panel, series, np.full(3, panel.n_times - 1), rules, {"cpu": 1}, None, skipped)
    assert len(batch) == 1 and batch.series[0, 0] == 0
    assert skipped == Counter({"short_history": 1, "stale": 1, "gappy": 0})


def test_a_context_without_observations_starts_from_the_last_value_seen_before_it() -> None:
    panel = synthetic_panel(hosts=1, days=2)
    panel.values[0, 0, -60:] = np.nan  # nothing in the last 60 steps, more than the 48-step context
    last_seen = float(panel.values[0, 0, -61])
    origin = np.array([panel.n_times - 1])
    skipped: Counter[str] = Counter()
    assert len(build_windows(panel, np.array([(0, 0)]), origin, WindowRules(48, 96, 24), {"cpu": 1},
                             None, skipped)) == 0
    assert skipped["stale"] == 1 and skipped["short_history"] == 0  # serving: it went stale, not "too short"
    relaxed = WindowRules(48, 96, 1, max_stale_steps=10**6, min_observed_fraction=0.0)
    batch = build_windows(panel, np.array([(0, 0)]), origin, relaxed, {"cpu": 1})
    assert len(batch) == 1 and batch.last_value[0] == pytest.approx(last_seen)
    assert np.allclose(batch.encoder_values[0], last_seen)
    assert np.isfinite(batch.encoder_cont).all()


def test_gaps_are_filled_and_masked() -> None:
    panel = synthetic_panel(hosts=1, days=1)
    panel.values[0, 0, -30:-20] = np.nan
    rules = WindowRules(48, 96, 24)
    batch = build_windows(panel, np.array([(0, 0)]), np.array([panel.n_times - 1]), rules, {"cpu": 1})
    from forecaster.contract.features import x_reals

    observed = batch.encoder_cont[0, :, x_reals(panel.signals).index("observed")]
    assert observed.sum() == 48 - 10
    assert np.isfinite(batch.encoder_cont).all()
