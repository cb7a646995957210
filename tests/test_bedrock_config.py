"""A bedrock provider's settings are checked at start-up: an unknown region, missing credentials,
a model id Bedrock would refuse are a ``ConfigError`` naming what to set; a Bedrock API key is
sent as a bearer token instead of a signature; demo mode serves a ``bedrock`` provider."""

from __future__ import annotations

from collections.abc import Iterator

import aiohttp
import pytest

from tests.servers import gateway_server
from tokenrelay import transports
from tokenrelay.settings import ConfigError, load
from tokenrelay.simulator import RunningSimulator

MODEL = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"


@pytest.fixture
def no_aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No AWS credentials anywhere botocore looks (nor the network: no instance metadata)."""
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_BEARER_TOKEN_BEDROCK",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    transports.get("bedrock")._signers.clear()  # type: ignore[attr-defined]
    yield
    transports.get("bedrock")._signers.clear()  # type: ignore[attr-defined]


def environ(model: str = MODEL, **provider: str) -> dict[str, str]:
    out = {
        "TOKENRELAY_PROVIDERS__BR__KIND": "bedrock",
        "TOKENRELAY_ROUTES__DEFAULT__TARGETS": f"br:{model}",
    }
    for key, value in provider.items():
        out[f"TOKENRELAY_PROVIDERS__BR__{key.upper()}"] = value
    return out


def test_a_missing_region_names_the_setting(no_aws: None) -> None:
    with pytest.raises(ConfigError, match=r"region = 'us-east-1'.*AWS_REGION"):
        load(environ=environ(api_key="k"))


@pytest.mark.parametrize("region", ["us-east-9", "mars-north-1", "US-EAST-1"])
def test_an_unknown_region_names_the_setting(no_aws: None, region: str) -> None:
    with pytest.raises(ConfigError, match=f"region = '{region}' is not an AWS region"):
        load(environ=environ(api_key="k", region=region))


@pytest.mark.parametrize("model", ["claude-sonnet-4-5", "anthropic/claude-sonnet", "gpt 5"])
def test_a_model_id_bedrock_would_refuse(no_aws: None, model: str) -> None:
    with pytest.raises(ConfigError, match=r"route 'default'.*not a Bedrock model id"):
        load(environ=environ(model, api_key="k", region="us-east-1"))


@pytest.mark.parametrize(
    "model",
    [
        MODEL,
        "anthropic.claude-3-5-haiku-20241022-v1:0",
        "amazon.nova-pro-v1:0",
        "global.anthropic.claude-sonnet-4-5-20250929-v1:0",
        "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-x-v1:0",
    ],
)
def test_model_ids_bedrock_takes(no_aws: None, model: str) -> None:
    load(environ=environ(model, api_key="k", region="us-east-1"))


def test_missing_credentials_name_what_to_set(no_aws: None) -> None:
    with pytest.raises(ConfigError, match=r"no AWS credentials.*AWS_ACCESS_KEY_ID.*BEDROCK"):
        load(environ=environ(region="us-east-1"))


def test_an_unknown_profile_is_named(no_aws: None) -> None:
    with pytest.raises(ConfigError, match="aws_profile = 'nobody'"):
        load(environ=environ(region="us-east-1", aws_profile="nobody"))


def test_the_region_comes_from_the_environment(
    no_aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", "bedrock-api-key-from-env")
    settings = load(environ=environ())
    provider = settings.providers["br"]
    bedrock = transports.get("bedrock")
    url = bedrock.url(provider, "converse")
    assert url == "https://bedrock-runtime.eu-west-1.amazonaws.com/model/{model}/converse-stream"
    assert bedrock.auth_headers(provider, None)["authorization"] == (
        "Bearer bedrock-api-key-from-env"
    )
    assert "br" in settings.configured_providers()


@pytest.mark.asyncio(loop_scope="session")
async def test_an_api_key_is_sent_as_a_bearer_token_unsigned(
    no_aws: None, simulator: RunningSimulator
) -> None:
    simulator.reset_stats()
    env = {
        **environ(api_key="bedrock-api-key-1234", region="us-west-2", base_url=simulator.url),
        "TOKENRELAY_ANONYMOUS_LIMIT": "1000/minute",
    }
    async with (
        gateway_server(env) as gw,
        aiohttp.ClientSession() as http,
        http.post(gw.url + "/api/generate", json={"prompt": "hi"}) as response,
    ):
        assert response.status == 200
        await response.read()
    [sent] = simulator.stats()["last_requests"]
    assert sent["headers"]["authorization"] == "Bearer bedrock-api-key-1234"
    assert "x-amz-date" not in sent["headers"]


@pytest.mark.asyncio(loop_scope="session")
async def test_demo_mode_serves_a_bedrock_provider(no_aws: None) -> None:
    """No provider configured: the demo-bedrock route answers from the simulator's Bedrock."""
    env = {"TOKENRELAY_DEMO": "true", "TOKENRELAY_ANONYMOUS_LIMIT": "1000/minute"}
    async with gateway_server(env) as gw, aiohttp.ClientSession() as http:
        body = {"prompt": "hi", "route": "demo-bedrock"}
        async with http.post(gw.url + "/api/generate", json=body) as response:
            assert response.status == 200
            assert response.headers["x-tokenrelay-provider"] == "bedrock"
            assert b"text" in await response.read()
        stats = gw.gateway.simulator.stats()
        assert stats["requests"] == {f"/model/{MODEL}/converse-stream": 1}
