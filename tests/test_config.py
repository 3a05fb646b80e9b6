"""Configuration: valid files load, bad ones give one readable line naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from forecaster.contract.config import DEFAULT_SIGNALS, ConfigError, load_config

REPO = Path(__file__).resolve().parent.parent


def test_defaults_without_a_file() -> None:
    config = load_config(None)
    assert config.prometheus.url == "http://127.0.0.1:9090"
    assert [s.name for s in config.signals] == ["cpu", "memory", "filesystem", "iowait"]
    assert config.model.context_steps == 288 and config.model.horizon_steps == 96


def test_example_config_is_valid_and_matches_defaults() -> None:
    config = load_config(REPO / "config" / "example.yml")
    strip = [s.model_copy(update={"description": ""}) for s in DEFAULT_SIGNALS]
    assert [s.model_copy(update={"description": ""}) for s in config.signals] == strip
    assert config.model == load_config(None).model
    assert config.trainer.level_shift_share == load_config(None).trainer.level_shift_share == "auto"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("prometheus:\n  url: localhost:9090\n", "prometheus.url: must be an http:// or https:// URL"),
        ("prometheus:\n  timeout_seconds: -1\n", "prometheus.timeout_seconds"),
        ("signals:\n  - name: cpu\n    query: up\n    threshold: 2\n", "threshold lies outside"),
        ("signals:\n  - {name: a, query: up, threshold: 0.5}\n  - {name: a, query: up, threshold: 0.5}\n",
         "duplicate signal names: a"),
        ("model:\n  hidden_sise: 3\n", "model.hidden_sise: Extra inputs are not permitted"),
        ("forecaster:\n  shard: {count: 2, index: 2}\n", "index must be below count"),
        ("model:\n  seasonal_bucket_seconds: 1000\n",
         "model: seasonal_bucket_seconds must be a multiple of step_seconds (300) that divides a day, not 1000"),
        ("prometheus:\n  bearer_token: {env: A, file: /x}\n", "exactly one of 'env' or 'file'"),
        ("trainer:\n  level_shift_share: 0.7\n", "trainer.level_shift_share: must be auto or a share from 0 to 0.5"),
        ("trainer:\n  level_shift_share: often\n", "trainer.level_shift_share: must be auto or a share from 0 to 0.5"),
        ("- just\n- a list\n", "top level must be a mapping"),
        ("prometheus: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_config_names_the_field(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "c.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert expected in message
    assert str(path) in message
    assert "\n" not in message


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "absent.yml")


def test_overrides_from_flags(tmp_path: Path) -> None:
    config = load_config(None, {"prometheus.url": "http://prom:9090/", "forecaster.shard.count": 4,
                                "trainer.parquet": None})
    assert config.prometheus.url == "http://prom:9090"
    assert config.forecaster.shard.count == 4


def test_secrets_come_from_env_or_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    path = tmp_path / "c.yml"
    path.write_text(f"prometheus:\n  bearer_token: {{file: {token}}}\n"
                    "  basic_auth: null\n")
    assert load_config(path).prometheus.bearer_token.resolve() == "s3cret"
    path.write_text("prometheus:\n  basic_auth: {username: u, password: {env: TFT_TEST_PW}}\n")
    config = load_config(path)
    with pytest.raises(ConfigError, match="TFT_TEST_PW"):
        config.prometheus.basic_auth.password.resolve()
    monkeypatch.setenv("TFT_TEST_PW", "pw")
    assert config.prometheus.basic_auth.password.resolve() == "pw"
    path.write_text("prometheus:\n  basic_auth: {username: u, password: inline}\n")
    with pytest.raises(ConfigError, match=r"basic_auth\.password"):
        load_config(path)
