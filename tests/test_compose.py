"""docker-compose.yml and the Dockerfile: valid for docker-compose, every mounted file exists,
pinned images, healthchecks, named volumes, the one-shot backfill and the trainer for cron."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.monitoring_exprs import ROOT

COMPOSE = ROOT / "docker-compose.yml"
SECRET_OVERRIDE = ROOT / "docker-compose.secret.yml"
ENV = {"GRAFANA_ADMIN_PASSWORD": "test-only-password"}


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def docker_compose(*args: str, env: dict[str, str] | None = None,
                   files: tuple[Path, ...] = (COMPOSE,)) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose is not installed but CI is set: .ci/run must install it")
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("TFT_", "GRAFANA_"))}
    full_env.update(env or {})
    # An empty --env-file: a developer's .env must not change what is checked.
    with tempfile.TemporaryDirectory() as tmp:
        env_file = Path(tmp) / "empty.env"
        env_file.write_text("")
        chosen = [arg for f in files for arg in ("-f", str(f))]
        return subprocess.run([binary, "--env-file", str(env_file), *chosen, *args], cwd=ROOT,
                              env=full_env, capture_output=True, text=True, timeout=60, check=False)


def test_docker_compose_config_is_valid() -> None:
    result = docker_compose("config", "-q", env=ENV)
    assert result.returncode == 0, result.stderr
    tools = docker_compose("--profile", "tools", "config", "-q", env=ENV)
    assert tools.returncode == 0, tools.stderr


def _rendered(*args: str, env: dict[str, str] | None = None,
              files: tuple[Path, ...] = (COMPOSE,)) -> tuple[dict[str, Any], str]:
    result = docker_compose(*args, "config", env=env, files=files)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout), result.stdout


def test_grafana_admin_password_from_the_environment() -> None:
    config, _ = _rendered(env=ENV)
    env = config["services"]["grafana"]["environment"]
    assert env["GF_SECURITY_ADMIN_PASSWORD"] == ENV["GRAFANA_ADMIN_PASSWORD"]
    assert "GF_SECURITY_ADMIN_PASSWORD__FILE" not in env and "secrets" not in config["services"]["grafana"]


def test_grafana_admin_password_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "grafana-admin-password"
    secret.write_text("from-a-file-only\n")
    files = (COMPOSE, SECRET_OVERRIDE)
    for env in ({"GRAFANA_ADMIN_PASSWORD_FILE": str(secret)},
                {"GRAFANA_ADMIN_PASSWORD_FILE": str(secret), **ENV}):  # the file takes the variable's place
        config, text = _rendered(env=env, files=files)
        grafana = config["services"]["grafana"]
        # Grafana's /run.sh refuses GF_SECURITY_ADMIN_PASSWORD and its __FILE variable together.
        assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == ""
        assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana_admin_password"
        assert [s if isinstance(s, str) else s["source"] for s in grafana["secrets"]] == ["grafana_admin_password"]
        assert Path(config["secrets"]["grafana_admin_password"]["file"]) == secret
        assert "from-a-file-only" not in text and ENV["GRAFANA_ADMIN_PASSWORD"] not in text
    with_profile = docker_compose("--profile", "tools", "config", "-q",
                                  env={"GRAFANA_ADMIN_PASSWORD_FILE": str(secret)}, files=files)
    assert with_profile.returncode == 0, with_profile.stderr
    missing = docker_compose("config", "-q", files=files)
    assert missing.returncode != 0 and "GRAFANA_ADMIN_PASSWORD_FILE" in missing.stderr


def test_no_compose_file_holds_a_password() -> None:
    for path in (COMPOSE, SECRET_OVERRIDE):
        for name, svc in (yaml.safe_load(path.read_text()).get("services") or {}).items():
            for key, value in (svc.get("environment") or {}).items():
                if "PASSWORD" in key and not key.endswith("__FILE"):
                    assert value == "" or str(value).startswith("${"), (path.name, name, key)


def _grafana_guard() -> str:
    """The script grafana's entrypoint runs before the image's /run.sh, as the container's shell gets it."""
    entrypoint = services()["grafana"]["entrypoint"]
    assert entrypoint[:2] == ["/bin/sh", "-c"] and entrypoint[2].rstrip().endswith("exec /run.sh")
    return entrypoint[2].replace("$$", "$").replace("exec /run.sh", "exit 0")


@pytest.mark.parametrize(("env", "ok"), [
    ({}, False),
    ({"GF_SECURITY_ADMIN_PASSWORD": ""}, False),
    ({"GF_SECURITY_ADMIN_PASSWORD": "x"}, True),
    ({"GF_SECURITY_ADMIN_PASSWORD": "", "GF_SECURITY_ADMIN_PASSWORD__FILE": "{secret}"}, True),
    ({"GF_SECURITY_ADMIN_PASSWORD": "", "GF_SECURITY_ADMIN_PASSWORD__FILE": "{empty}"}, False),
    ({"GF_SECURITY_ADMIN_PASSWORD": "", "GF_SECURITY_ADMIN_PASSWORD__FILE": "{missing}"}, False),
])
def test_grafana_refuses_to_start_without_an_admin_password(tmp_path: Path, env: dict[str, str], ok: bool) -> None:
    """Grafana would otherwise create admin/admin; the reason is one line in its log."""
    paths = {"secret": tmp_path / "secret", "empty": tmp_path / "empty", "missing": tmp_path / "missing"}
    paths["secret"].write_text("pw\n")
    paths["empty"].write_text("")
    env = {k: v.format(**paths) for k, v in env.items()}
    result = subprocess.run(["/bin/sh", "-c", _grafana_guard()], env={"PATH": os.environ.get("PATH", ""), **env},
                            capture_output=True, text=True, timeout=30, check=False)
    assert (result.returncode == 0) == ok, result.stderr
    assert (result.stderr == "") == ok
    if not ok:
        assert result.stderr.startswith("tft-monitor: ") and result.stderr.count("\n") == 1, result.stderr


def _published(port: str | dict[str, Any]) -> tuple[str, str]:
    """(host address, host port) of a rendered port: "127.0.0.1:9090:9090/tcp" or {published, host_ip}."""
    if isinstance(port, dict):
        return str(port.get("host_ip", "")), str(port.get("published", ""))
    parts = port.split("/")[0].rsplit(":", 2)
    return (parts[0], parts[1]) if len(parts) == 3 else ("", parts[0] if len(parts) == 2 else "")


def test_admin_apis_are_published_on_loopback_only() -> None:
    """Prometheus's lifecycle API (/-/quit, /-/reload) has no authentication: not reachable beyond the host."""
    config, _ = _rendered("--profile", "tools", env=ENV)
    admin_flags = ("--web.enable-lifecycle", "--web.enable-admin-api")
    public = {}
    for name, svc in config["services"].items():
        command = svc.get("command") or []
        command = command if isinstance(command, list) else command.split()
        for port in svc.get("ports", []):
            host, published = _published(port)
            if any(flag in command for flag in admin_flags):
                assert host in ("127.0.0.1", "::1"), (name, port)
            if host not in ("127.0.0.1", "::1"):
                public[name] = published
    assert any(flag in services()["prometheus"]["command"] for flag in admin_flags)
    # Only Grafana, which has a login, is published on every interface (docker-compose.yml's header).
    assert public == {"grafana": "3000"}


def _bind_sources(service: dict[str, Any]) -> list[str]:
    out = []
    for volume in service.get("volumes", []):
        source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
        if source.startswith((".", "/")):
            out.append(source)
    return out


def test_every_mounted_file_exists() -> None:
    mounts = [src for svc in services().values() for src in _bind_sources(svc)]
    assert len(mounts) >= 6
    for src in mounts:
        assert (ROOT / src).exists(), f"{src} is mounted but does not exist"
    for name, svc in services().items():
        if "build" in svc:
            build = svc["build"]
            assert (ROOT / build["context"] / build.get("dockerfile", "Dockerfile")).is_file(), name


def test_named_volumes_are_declared() -> None:
    declared = set(compose()["volumes"])
    used = set()
    for svc in services().values():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                used.add(source)
    assert used == declared
    assert {"prometheus-data", "grafana-data", "models"} <= declared


def test_images_are_pinned() -> None:
    for name, svc in services().items():
        image = svc["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: {image}"
    dockerfile = (ROOT / "Dockerfile").read_text()
    for ref in re.findall(r"^FROM\s+(\S+)", dockerfile, flags=re.M):
        assert ":" in ref and not ref.endswith(":latest"), ref
    # The promtool copied into the project image is the Prometheus the stack runs.
    assert services()["prometheus"]["image"] in dockerfile


def test_dockerfile_installs_cpu_torch_first() -> None:
    lines = [ln.strip() for ln in (ROOT / "Dockerfile").read_text().splitlines()]
    assert any(ln.startswith("FROM python:3.11-slim") for ln in lines)
    torch = next(i for i, ln in enumerate(lines)
                 if "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in ln)
    package = next(i for i, ln in enumerate(lines) if re.search(r"pip install (-e )?\.", ln))
    assert torch < package


def test_the_image_runs_as_a_user_that_owns_its_working_directory() -> None:
    """`tft-trainer train` writes runs/train under its working directory: in a root-owned checkout
    it failed with PermissionError as the image's user. The checkout stays root-owned."""
    text = (ROOT / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.M)
    workdirs = re.findall(r"^WORKDIR\s+(\S+)", text, flags=re.M)
    assert users and users[-1] not in ("root", "0")
    user, workdir = users[-1], workdirs[-1]
    assert text.index(f"WORKDIR {workdir}") > text.index("COPY . ."), "the runtime WORKDIR is not the checkout"
    assert re.search(rf"--home-dir {re.escape(workdir)}\b", text)
    assert re.search(rf"^ENV HOME={re.escape(workdir)}$", text, flags=re.M)
    assert re.search(rf"chown {user}(:{user})? {re.escape(workdir)}$", text, flags=re.M), "not owned by " + user


def test_long_running_services_have_healthchecks() -> None:
    for name in ("prometheus", "grafana", "exporter", "forecaster"):
        svc = services()[name]
        assert svc["healthcheck"]["test"], name
        assert svc.get("restart") == "unless-stopped", name


def test_prometheus_retention_is_set_and_covers_the_backfill() -> None:
    prom = services()["prometheus"]
    [flag] = [a for a in prom["command"] if a.startswith("--storage.tsdb.retention.time=")]
    days = int(re.fullmatch(r"--storage.tsdb.retention.time=(\d+)d", flag).group(1))
    backfill_days = int(re.search(r"TFT_BACKFILL_DAYS:-(\d+)", COMPOSE.read_text()).group(1))
    assert days > backfill_days
    assert "retention" in (ROOT / "prometheus" / "prometheus.yml").read_text()


def test_backfill_runs_once_before_prometheus_and_the_exporter() -> None:
    svcs = services()
    backfill = svcs["backfill"]
    script = "\n".join(backfill["command"])
    assert "tft-exporter backfill" in script and "/prometheus" in script
    assert ".tft-backfill-done" in script, "a restart must not backfill twice"
    assert "prometheus-data:/prometheus" in backfill["volumes"]
    for name in ("prometheus", "exporter"):
        assert svcs[name]["depends_on"]["backfill"]["condition"] == "service_completed_successfully"
    # The backfilled job label is the scrape job's, so history and live scrapes are one series.
    config = yaml.safe_load((ROOT / "config" / "compose.yml").read_text())
    prom = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    jobs = {j["job_name"] for j in prom["scrape_configs"]}
    assert config["exporter"]["job"] in jobs


def test_trainer_is_a_one_shot_tool() -> None:
    trainer = services()["trainer"]
    assert trainer["profiles"] == ["tools"]
    assert trainer.get("restart") == "no"
    assert "train" in trainer["command"]
    forecaster = services()["forecaster"]
    assert "models:/models" in trainer["volumes"] and "models:/models" in forecaster["volumes"]


def test_compose_config_file_is_a_valid_tft_monitor_config() -> None:
    from forecaster.contract.config import load_config

    config = load_config(ROOT / "config" / "compose.yml")
    assert config.prometheus.url == "http://prometheus:9090"
    assert str(config.forecaster.registry_dir) == str(config.trainer.registry_dir) == "/models"
    try:
        from exporter.config import load_exporter_config
    except ImportError:
        return
    exporter = load_exporter_config(ROOT / "config" / "compose.yml")
    assert exporter.job == "tft-simulator"


def test_scrape_targets_match_the_compose_services() -> None:
    prom = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    text = yaml.safe_dump(prom)
    svcs = services()
    for host, port in re.findall(r"\b([a-z]+):(\d{4})\b", text):
        if host == "localhost":
            continue
        assert host in svcs, host
        assert any(p.split(":")[-1] == port for p in svcs[host].get("ports", [])), (host, port)
