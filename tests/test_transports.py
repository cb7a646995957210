"""The registry of provider kinds (``tokenrelay.transports``): what a kind decides, and that a
kind outside it is refused in the settings' own words."""

from __future__ import annotations

import pytest

from tokenrelay import dialects, transports
from tokenrelay.settings import ConfigError, ProviderSettings, load


def test_every_kind_names_dialects_and_paths_that_exist() -> None:
    for name in transports.NAMES:
        transport = transports.get(name)
        assert name == transport.NAME
        assert transport.DIALECT in transport.PATHS
        for dialect in transport.PATHS:
            assert dialect == dialects.get(dialect).NAME


def test_an_unknown_kind_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(ConfigError) as raised:
        load(environ={"TOKENRELAY_PROVIDERS__G__KIND": "nonesuch"})
    assert "unknown provider kind 'nonesuch'" in str(raised.value)
    assert "'anthropic', 'openai'" in str(raised.value)


def test_each_kind_authenticates_its_own_way() -> None:
    anthropic = ProviderSettings(kind="anthropic", base_url="http://a.invalid")
    openai = ProviderSettings(kind="openai", base_url="http://o.invalid/v1/")
    assert transports.get("anthropic").auth_headers(anthropic, "k") == {
        "anthropic-version": "2023-06-01",
        "x-api-key": "k",
    }
    assert transports.get("openai").auth_headers(openai, "k") == {"authorization": "Bearer k"}
    assert transports.get("openai").auth_headers(openai, None) == {}
    assert transports.get("openai").url(openai, "responses") == "http://o.invalid/v1/responses"


def test_a_second_api_is_chosen_per_request_only_with_api_auto() -> None:
    openai = transports.get("openai")
    assert openai.dialects(ProviderSettings(kind="openai", api="auto")) == ("openai", "responses")
    assert openai.dialects(ProviderSettings(kind="openai", api="responses")) == ("responses", None)
    assert transports.get("anthropic").dialects(ProviderSettings(kind="anthropic")) == (
        "anthropic",
        None,
    )


def test_a_header_prefix_belongs_to_one_kind() -> None:
    assert transports.header_owner("anthropic-beta") is transports.get("anthropic")
    assert transports.header_owner("openai-beta") is transports.get("openai")
    assert transports.header_owner("x-custom") is None
