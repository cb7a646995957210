"""Azure OpenAI's settings: the URL forms of each API version, the built-in provider's
environment variables, and every bad configuration refused at start-up naming the setting."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from tokenrelay import transports
from tokenrelay.dialects import openai as openai_dialect
from tokenrelay.settings import ConfigError, ProviderSettings, load

ENDPOINT = "https://acme-eastus.openai.azure.com"
P = "TOKENRELAY_PROVIDERS__AZ__"


def azure(**fields: Any) -> ProviderSettings:
    settings: dict[str, Any] = {"kind": "azure", "base_url": ENDPOINT, "api_key": "k", **fields}
    return msgspec.convert(settings, ProviderSettings)


@pytest.mark.parametrize(
    ("version", "dialect", "url"),
    [
        ("v1", "openai", f"{ENDPOINT}/openai/v1/chat/completions"),
        ("v1", "responses", f"{ENDPOINT}/openai/v1/responses"),
        ("preview", "openai", f"{ENDPOINT}/openai/v1/chat/completions?api-version=preview"),
        (
            "2024-10-21",
            "openai",
            f"{ENDPOINT}/openai/deployments/gpt55-east/chat/completions?api-version=2024-10-21",
        ),
        (
            "2025-04-01-preview",
            "responses",
            f"{ENDPOINT}/openai/responses?api-version=2025-04-01-preview",
        ),
    ],
)
def test_the_url_of_each_api_version(version: str, dialect: str, url: str) -> None:
    settings = azure(api_version=version, deployments={"gpt-5.5": "gpt55-east"})
    assert transports.get("azure").url(settings, dialect, "gpt-5.5") == url


def test_an_empty_map_makes_the_model_the_deployment() -> None:
    transport = transports.get("azure")
    settings = azure(api_version="2024-10-21")
    assert "/deployments/gpt-4o/" in transport.url(settings, "openai", "gpt-4o")
    assert transport.wire_model(settings, "gpt-4o") == "gpt-4o"
    assert transport.check_target(settings, "gpt-4o") is None


def test_key_or_entra_token() -> None:
    transport = transports.get("azure")
    assert transport.auth_headers(azure(), "k") == {"api-key": "k"}
    token = azure(api_key=None, azure_ad_token="eyJ0")
    assert transport.auth_headers(token, None) == {"authorization": "Bearer eyJ0"}


def test_the_builtin_provider_reads_the_azure_sdks_variables() -> None:
    settings = load(
        environ={
            "AZURE_OPENAI_ENDPOINT": ENDPOINT,
            "AZURE_OPENAI_AD_TOKEN": "entra",
            "TOKENRELAY_PROVIDERS__AZURE__API_VERSION": "2024-10-21",
        }
    )
    provider = settings.providers["azure"]
    assert provider.base_url == ENDPOINT and provider.azure_ad_token == "entra"
    assert settings.configured_providers() == ["azure"] and not settings.demo_mode


def test_an_unset_builtin_provider_is_skipped_not_refused() -> None:
    settings = load(environ={})
    assert "azure" not in settings.configured_providers() and settings.demo_mode


@pytest.mark.parametrize(
    ("environ", "names"),
    [
        (  # a target's model outside a non-empty map
            {
                P + "DEPLOYMENTS": '{"gpt-5.5": "gpt55-east"}',
                "TOKENRELAY_ROUTES__R__TARGETS": "az:gpt-4o",
            },
            ["route 'r'", "az:gpt-4o", "'gpt-4o' is not in the provider's deployments", "gpt-5.5"],
        ),
        ({P + "BASE_URL": ""}, ["providers.az", "base_url is missing"]),
        ({P + "API_KEY": ""}, ["providers.az", "no credential", "api_key", "azure_ad_token"]),
        ({P + "API_VERSION": "21-10-2024"}, ["providers.az", "api_version = '21-10-2024'"]),
    ],
)
def test_bad_configuration_is_refused_at_start_up(
    environ: dict[str, str], names: list[str]
) -> None:
    base = {P + "KIND": "azure", P + "BASE_URL": ENDPOINT, P + "API_KEY": "k"}
    with pytest.raises(ConfigError) as refused:
        load(environ={**base, **environ})
    for name in names:
        assert name in str(refused.value)


def test_the_builtin_provider_with_an_endpoint_and_no_credential_is_skipped() -> None:
    settings = load(environ={"AZURE_OPENAI_ENDPOINT": ENDPOINT})
    assert "azure" not in settings.configured_providers()


def test_retry_after_ms_wins_over_retry_after() -> None:
    error = openai_dialect.parse_error(
        429,
        b'{"error":{"code":"429","message":"x"}}',
        {"retry-after-ms": "250", "retry-after": "1"},
    )
    assert error.retry_after == 0.25 and error.type == "rate_limit"


def test_demo_mode_does_not_ask_for_azure_credentials() -> None:
    """The simulator serves every azure provider in demo mode: no key is needed then."""
    settings = load(environ={"TOKENRELAY_DEMO": "true", P + "KIND": "azure"})
    assert settings.demo_mode and settings.providers["az"].resolved_key() is None
