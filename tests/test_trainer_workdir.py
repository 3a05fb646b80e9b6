"""The trainer's work directory and its registry as a non-root user: one readable line, not a traceback.

The image runs as user ``tft`` (docker-compose.yml, the Dockerfile). A root-owned working directory
once made ``tft-trainer train`` fail after loading the history with ``PermissionError: 'runs'``
(a traceback, exit status 1); now it is refused up front with exit status 2, and ``trainer.work_dir``
moves the directory somewhere writable.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.test_trainer import _config, _parquet
from trainer.cli import main

REPO = Path(__file__).resolve().parent.parent
NOBODY = 65534


def test_an_unwritable_work_dir_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Root writes anywhere, so "unwritable" here is a path under a regular file.
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    config = _config(tmp_path, work_dir=str(blocker / "train"))
    code = main(["--config.file", str(config), "train", "--parquet", str(_parquet(tmp_path)), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert f"work directory {blocker / 'train'} is not writable" in err and "trainer.work_dir" in err
    # Refused before the run starts: no run record, no lock file.
    assert not (tmp_path / "registry").exists()


def test_recalibrate_with_a_bad_latest_pointer_is_one_line_and_exit_2(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path)
    scope = tmp_path / "registry" / "global"
    scope.mkdir(parents=True)
    for latest in ("20250101T000000000000Z\n", "../../etc\n"):  # a missing version; not a version name
        (scope / "latest").write_text(latest)
        code = main(["--config.file", str(config), "recalibrate", "--parquet", str(tmp_path / "unused.parquet")])
        err = capsys.readouterr().err
        assert code == 2, err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert str(scope / "latest") in err and "--model" in err


def _as_nobody() -> list[str]:
    """The command prefix that runs a program as uid/gid 65534, or a skip.

    The interpreter may live under /root (mode 0700: pyenv), which another user cannot reach, so the
    child keeps CAP_DAC_READ_SEARCH: it may read and search any directory, but every write is checked
    against uid 65534 (that would take CAP_DAC_OVERRIDE), which is what these tests are about.
    """
    if os.geteuid() != 0:
        pytest.skip("needs root, to start a process as another user")
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is not installed")
    prefix = [setpriv, "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups",
              "--inh-caps", "+dac_read_search", "--ambient-caps", "+dac_read_search", "--"]
    probe = subprocess.run([*prefix, sys.executable, "-c", "import os; print(os.getuid())"],
                           capture_output=True, text=True, timeout=60, check=False)
    if probe.returncode != 0 or probe.stdout.strip() != str(NOBODY):
        pytest.skip(f"cannot run {sys.executable} as uid {NOBODY}: {probe.stderr.strip()[-200:]}")
    return prefix


def test_train_as_a_non_root_user_in_a_root_owned_directory(tmp_path: Path) -> None:
    """The image's situation: a root-owned working directory (0755), a registry the user owns."""
    prefix = _as_nobody()
    cwd = tmp_path / "workdir"  # root-owned, as /opt/tft-monitor in the image
    cwd.mkdir(mode=0o755)
    owned = tmp_path / "owned"  # the user's: registry, HOME, the configured work directory
    owned.mkdir()
    os.chown(owned, NOBODY, NOBODY)
    data = _parquet(tmp_path)
    config = _config(tmp_path, registry_dir=str(owned / "registry"), max_epochs=1, batches_per_epoch=2)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(owned), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}

    def train(config_file: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*prefix, sys.executable, "-m", "trainer", "--config.file", str(config_file), "train",
                               "--parquet", str(data), "--no-progress"], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=300, check=False)

    refused = train(config)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert f"work directory runs/train (under {cwd}) is not writable (Permission denied)" in refused.stderr
    assert not list(cwd.iterdir())

    cfg = yaml.safe_load(config.read_text())
    cfg["trainer"]["work_dir"] = str(owned / "work")
    config.write_text(yaml.safe_dump(cfg))
    done = train(config)
    assert done.returncode in (0, 3, 4), done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert not list(cwd.iterdir()), "nothing is written to the working directory"
    assert (owned / "work" / "logs").is_dir()  # Lightning's CSV logs; the checkpoint is removed once loaded
    assert not list((owned / "work").glob("best-*.safetensors"))
    assert (owned / "registry" / "trainer_metrics.prom").stat().st_uid == NOBODY
    assert len(list((owned / "registry" / "global" / "versions").iterdir())) == 1
