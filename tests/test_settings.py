"""Settings: defaults, a TOML file, TOKENRELAY_* variables, and the SDKs' own variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokenrelay.settings import ConfigError, load


def test_defaults_need_no_file_and_run_in_demo_mode() -> None:
    settings = load(environ={})
    assert settings.port == 8787
    assert settings.demo_mode
    route = settings.routes["default"]
    assert [(t.provider, t.model) for t in route.targets] == [
        ("anthropic", "claude-sonnet-5-5"),
        ("openai", "gpt-5.5"),
    ]
    assert not route.allow_client_system


def test_sdk_variables_configure_providers() -> None:
    environ = {
        "ANTHROPIC_API_KEY": "sk-ant-x",
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:9/anthropic",
        "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
    }
    settings = load(environ=environ)
    assert settings.providers["anthropic"].base_url == "http://127.0.0.1:9/anthropic"
    assert settings.providers["openai"].base_url == "http://127.0.0.1:9/v1"
    assert settings.configured_providers() == ["anthropic"]
    assert not settings.demo_mode


def test_environment_sets_nested_values_with_types() -> None:
    environ = {
        "TOKENRELAY_PORT": "9000",
        "TOKENRELAY_ROUTES__FAST__TARGETS": "openai:gpt-5.5-mini, anthropic:claude-haiku-4-5",
        "TOKENRELAY_ROUTES__FAST__ALLOW_CLIENT_SYSTEM": "true",
        "TOKENRELAY_PROVIDERS__LOCAL__KIND": "openai",
        "TOKENRELAY_PROVIDERS__LOCAL__BASE_URL": "http://127.0.0.1:11434/v1",
    }
    settings = load(environ=environ)
    assert settings.port == 9000
    fast = settings.routes["fast"]
    assert [(t.provider, t.model) for t in fast.targets] == [
        ("openai", "gpt-5.5-mini"),
        ("anthropic", "claude-haiku-4-5"),
    ]
    assert fast.allow_client_system is True
    assert settings.configured_providers() == ["local"]  # a base URL is enough for a local server


def test_file_then_environment(tmp_path: Path) -> None:
    config = tmp_path / "tokenrelay.toml"
    config.write_text(
        """
port = 8800
[routes.support]
targets = [{provider = "anthropic", model = "claude-haiku-4-5", params = {top_k = 5}}]
system = "You answer support questions about Acme."
"""
    )
    settings = load(config, environ={"TOKENRELAY_PORT": "8801"})
    assert settings.port == 8801
    support = settings.routes["support"]
    assert support.system == "You answer support questions about Acme."
    assert support.targets[0].params == {"top_k": 5}
    assert "default" in settings.routes  # built-in routes stay unless overridden


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"TOKENRELAY_PORT": "eighty"}, "$.port"),
        ({"TOKENRELAY_ROUTES__X__TARGETS": "nocolon"}, "provider:model"),
        ({"TOKENRELAY_ROUTES__X__TARGETS": "mystery:model"}, "known providers"),
        ({"TOKENRELAY_ROUTES__X__TARGETS": "[]"}, "no targets"),
        ({"TOKENRELAY_NOPE": "1"}, "nope"),
    ],
)
def test_bad_values_name_the_setting(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load(environ=environ)
    assert message in str(raised.value)


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "missing.toml", environ={})
    broken = tmp_path / "broken.toml"
    broken.write_text("port = = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(broken, environ={})


@pytest.mark.parametrize(
    ("environ", "says"),
    [
        ({"TOKENRELAY_LOG_LEVEL": "loud"}, "log_level 'loud' is not one of critical"),
        ({"TOKENRELAY_ROUTES": "["}, "routes must be a table"),
        ({"TOKENRELAY_PROVIDERS": "[1, 2]"}, "providers must be a table"),
        ({"TOKENRELAY_PROVIDER_MODELS": "7"}, "provider_models must be a table"),
    ],
)
def test_a_malformed_environment_is_a_config_error_not_a_traceback(
    environ: dict[str, str], says: str
) -> None:
    with pytest.raises(ConfigError, match=says):
        load(environ=environ)


def test_log_level_takes_any_case() -> None:
    assert load(environ={"TOKENRELAY_LOG_LEVEL": "DEBUG"}).log_level == "DEBUG"
