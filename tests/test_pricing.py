"""Cost per usage source: Anthropic's and OpenAI's reported usage, read off the wire by the
dialects, and our estimate for an aborted stream, each priced to the exact decimal the pricing
data gives. Expected prices are computed here from genai-prices' raw table entries, not with the
package's or our calculation."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from collections.abc import Iterable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import genai_prices
import msgspec
import pytest
import pytest_asyncio
from genai_prices.data import providers as TABLE
from genai_prices.types import TieredPrices
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenrelay.dialects import anthropic, openai
from tokenrelay.dialects.sse import SSEParser
from tokenrelay.metering import pricing
from tokenrelay.metering.estimate import estimate_usage
from tokenrelay.metering.pricing import NANO, ModelPrice, Pricer, PriceSettings
from tokenrelay.model import Accumulator, Message, Request, TextPart, Usage

WHEN = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
MILLION = Decimal(1_000_000)
SETTINGS = msgspec.convert(
    {
        "overrides": {
            "ollama:llama3.2": {"input": "0", "output": "0"},
            "claude-haiku-4-5": {"input": "0.80", "output": "4", "cache_read": "0.08"},
            "bedrock:claude-haiku-4-5": {"input": "0.9", "output": "4.5", "cache_write": "1"},
        }
    },
    PriceSettings,
    strict=False,
)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def pricer() -> Pricer:
    loaded = Pricer(SETTINGS)
    await loaded.load()
    return loaded


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def table_pricer() -> Pricer:
    """No overrides: prices straight from the table."""
    loaded = Pricer(PriceSettings())
    await loaded.load()
    return loaded


# --- the pricing data, read directly -----------------------------------------------------------


def table_rates(provider_id: str, model_id: str, when: date) -> dict[str, Decimal | None]:
    """The table entry in force on ``when``, base rates (the caller stays below any tier)."""
    provider = next(p for p in TABLE if p.id == provider_id)
    model = next(m for m in provider.models if m.id == model_id)
    price: Any = model.prices
    if isinstance(price, list):  # dated entries: the last one started by then
        active = [
            c.prices for c in price if c.constraint is None or c.constraint.start_date <= when
        ]
        price = active[-1] if active else price[0].prices
    rates: dict[str, Decimal | None] = {}
    for key in ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok"):
        value = getattr(price, key)
        rates[key] = value.base if isinstance(value, TieredPrices) else value
    return rates


def lowest_tier(provider_id: str, model_id: str) -> int | None:
    provider = next(p for p in TABLE if p.id == provider_id)
    model = next(m for m in provider.models if m.id == model_id)
    tiers = [v for v in vars(model.prices).values() if isinstance(v, TieredPrices)]
    return min((t.start for v in tiers for t in v.tiers), default=None)


def expected(rates: dict[str, Decimal | None], usage: Usage) -> Decimal:
    """Uncached input at the input rate, each cache count at its rate (the input rate when the
    table has none), output at the output rate; per million tokens."""
    input_rate, output_rate = rates["input_mtok"], rates["output_mtok"]
    assert input_rate is not None and output_rate is not None
    read = usage.cache_read_tokens or 0
    write = usage.cache_write_tokens or 0
    read_rate = rates["cache_read_mtok"] or input_rate
    write_rate = rates["cache_write_mtok"] or input_rate
    fresh = (usage.input_tokens or 0) - read - write
    output = usage.output_tokens or 0
    return (
        fresh * input_rate + read * read_rate + write * write_rate + output * output_rate
    ) / MILLION


# --- the wire ------------------------------------------------------------------------------


def _sse(events: Iterable[tuple[str | None, dict[str, Any] | str]]) -> bytes:
    out = b""
    for name, data in events:
        body = data if isinstance(data, str) else msgspec.json.encode(data).decode()
        out += (f"event: {name}\n" if name else "").encode() + f"data: {body}\n\n".encode()
    return out


def _read(reader: Any, wire: bytes) -> Accumulator:
    accumulator = Accumulator()
    parser = SSEParser()
    for cut in range(0, len(wire), 97):  # as the network would cut it
        for sse in parser.feed(wire[cut : cut + 97]):
            for event in reader.feed(sse):
                accumulator.add(event)
    return accumulator


ANSWER = ["Server-sent events ", "let a server push ", "text to the browser ", "over one response."]


def _anthropic_wire(*, finished: bool) -> bytes:
    usage = {
        "input_tokens": 2095,
        "cache_creation_input_tokens": 1203,
        "cache_read_input_tokens": 10460,
        "output_tokens": 1,
    }
    message = {"id": "msg_01", "type": "message", "role": "assistant", "content": []}
    events: list[tuple[str | None, dict[str, Any] | str]] = [
        ("message_start", {"type": "message_start", "message": {**message, "usage": usage}}),
        (
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text"}},
        ),
    ]
    for text in ANSWER:
        delta = {"type": "text_delta", "text": text}
        events.append(
            ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
        )
    if finished:
        events += [
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": 503},
                },
            ),
            ("message_stop", {"type": "message_stop"}),
        ]
    return _sse(events)


def _openai_wire(*, finished: bool) -> bytes:
    head = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-5.5"}
    events: list[tuple[str | None, dict[str, Any] | str]] = [
        (None, {**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
    ]
    for text in ANSWER:
        events.append((None, {**head, "choices": [{"index": 0, "delta": {"content": text}}]}))
    if finished:
        usage = {
            "prompt_tokens": 5130,
            "completion_tokens": 911,
            "total_tokens": 6041,
            "prompt_tokens_details": {"cached_tokens": 4864, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 640, "audio_tokens": 0},
        }
        events += [
            (None, {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
            (None, {**head, "choices": [], "usage": usage}),
            (None, "[DONE]"),
        ]
    return _sse(events)


REQUEST = Request(
    dialect="openai",
    model="default",
    system="You are a helpful assistant.",
    messages=[Message("user", [TextPart("Explain server-sent events in one sentence.")])],
)


# --- one test per usage source -------------------------------------------------------------


def test_the_snapshot_knows_our_default_models(pricer: Pricer) -> None:
    assert pricer.cost("anthropic", "claude-sonnet-5-5", Usage(1, 1), when=WHEN) is not None
    assert pricer.cost("openai", "gpt-5.5", Usage(1, 1), when=WHEN) is not None


def test_anthropic_reported_usage_exact_cost(pricer: Pricer) -> None:
    usage = _read(anthropic.stream_reader(), _anthropic_wire(finished=True)).result().usage
    assert usage == Usage(
        input_tokens=2095 + 1203 + 10460,
        output_tokens=503,
        cache_read_tokens=10460,
        cache_write_tokens=1203,
    )
    rates = table_rates("anthropic", "claude-sonnet-5-5", WHEN.date())
    # Written out, so a change in the data or in the arithmetic shows: $2 in, $10 out, $0.10
    # cache reads, $2.50 cache writes per million.
    assert rates == {
        "input_mtok": Decimal("2"),
        "output_mtok": Decimal("10"),
        "cache_read_mtok": Decimal("0.1"),
        "cache_write_mtok": Decimal("2.5"),
    }
    cost = pricer.cost("anthropic", "claude-sonnet-5-5", usage, when=WHEN)
    assert cost == expected(rates, usage) == Decimal("0.0132735")
    assert pricer.nanousd(cost) == 13_273_500


def test_openai_reported_usage_with_cached_tokens_exact_cost(pricer: Pricer) -> None:
    usage = _read(openai.stream_reader(), _openai_wire(finished=True)).result().usage
    assert usage == Usage(
        input_tokens=5130,
        output_tokens=911,
        cache_read_tokens=4864,
        reasoning_tokens=640,
        model="gpt-5.5",
    )
    tier = lowest_tier("openai", "gpt-5.5")
    assert tier is None or (usage.input_tokens is not None and usage.input_tokens <= tier)
    rates = table_rates("openai", "gpt-5.5", WHEN.date())
    assert rates["cache_write_mtok"] is None  # OpenAI does not charge cache writes
    cost = pricer.cost("openai", "gpt-5.5", usage, when=WHEN)
    # (5130 - 4864) * $5 + 4864 * $0.50 + 911 * $30 (reasoning included), per million
    assert cost == expected(rates, usage) == Decimal("0.031092")
    assert pricer.nanousd(cost) == 31_092_000


def test_estimated_usage_of_an_aborted_anthropic_stream_exact_cost(pricer: Pricer) -> None:
    reported = _read(anthropic.stream_reader(), _anthropic_wire(finished=False)).result()
    assert reported.usage.output_tokens == 1  # message_start's running count, not a total
    usage = estimate_usage(REQUEST, reported.text, reported=reported.usage)
    assert usage.input_tokens == 13758  # the prompt was reported before the abort: kept
    assert (usage.cache_read_tokens, usage.cache_write_tokens) == (10460, 1203)
    assert usage.output_tokens is not None and 14 <= usage.output_tokens <= 19  # 16 in o200k
    rates = table_rates("anthropic", "claude-sonnet-5-5", WHEN.date())
    cost = pricer.cost("anthropic", "claude-sonnet-5-5", usage, when=WHEN)
    assert cost == expected(rates, usage)


def test_estimated_usage_of_an_aborted_openai_stream_exact_cost(pricer: Pricer) -> None:
    reported = _read(openai.stream_reader(), _openai_wire(finished=False)).result()
    assert reported.usage == Usage(model="gpt-5.5")  # OpenAI reports usage only at the end
    usage = estimate_usage(REQUEST, reported.text, reported=reported.usage)
    assert usage.input_tokens is not None and usage.output_tokens is not None
    rates = table_rates("openai", "gpt-5.5", WHEN.date())
    cost = pricer.cost("openai", "gpt-5.5", usage, when=WHEN)
    assert cost == expected(rates, usage)
    assert cost == (usage.input_tokens * 5 + usage.output_tokens * 30) / MILLION


# --- how prices are found ------------------------------------------------------------------


def test_tiers_apply_to_the_whole_prompt_above_their_start(pricer: Pricer) -> None:
    entry = next(m for p in TABLE if p.id == "openai" for m in p.models if m.id == "gpt-5.5")
    price: Any = entry.prices
    start = price.input_mtok.tiers[0].start
    above = Usage(input_tokens=start + 1, output_tokens=100, cache_read_tokens=1000)
    cost = pricer.cost("openai", "gpt-5.5", above, when=WHEN)
    fresh = start + 1 - 1000
    tier_cost = (
        fresh * price.input_mtok.tiers[0].price
        + 1000 * price.cache_read_mtok.tiers[0].price
        + 100 * price.output_mtok.tiers[0].price
    )
    assert cost == tier_cost / MILLION


def test_the_price_in_force_on_the_request_date(pricer: Pricer) -> None:
    usage = Usage(input_tokens=1000, output_tokens=1000)
    before, after = date(2025, 6, 1), date(2025, 6, 11)  # o3 was repriced on 2025-06-10
    old = pricer.cost("openai", "o3", usage, when=datetime(2025, 6, 1, tzinfo=UTC))
    new = pricer.cost("openai", "o3", usage, when=datetime(2025, 6, 11, tzinfo=UTC))
    assert old == expected(table_rates("openai", "o3", before), usage)
    assert new == expected(table_rates("openai", "o3", after), usage)
    assert old is not None and new is not None and new < old


def test_overrides_price_self_hosted_models_at_zero_and_negotiated_rates(pricer: Pricer) -> None:
    usage = Usage(input_tokens=10_000, output_tokens=2_000, cache_read_tokens=4_000)
    assert pricer.cost("ollama", "llama3.2", usage) == 0
    # "model" applies to any provider; a cache rate left out is the input rate.
    negotiated = pricer.cost("anthropic", "claude-haiku-4-5", usage)
    assert negotiated == (6_000 * Decimal("0.80") + 4_000 * Decimal("0.08") + 2_000 * 4) / MILLION
    # "provider:model" wins over "model".
    bedrock = pricer.cost("bedrock", "Claude-Haiku-4-5", usage, provider_kind="anthropic")
    assert bedrock == (10_000 * Decimal("0.9") + 2_000 * Decimal("4.5")) / MILLION


def test_a_self_hosted_openai_compatible_provider(
    pricer: Pricer, caplog: pytest.LogCaptureFixture
) -> None:
    usage = Usage(input_tokens=1000, output_tokens=100)
    # An OpenAI model behind a provider named "local" of kind openai: OpenAI's price.
    local = pricer.cost("local", "gpt-5.5", usage, when=WHEN, provider_kind="openai")
    assert local == pricer.cost("openai", "gpt-5.5", usage, when=WHEN) is not None
    # A model the table does not know: no price, logged once, naming the key to add.
    with caplog.at_level(logging.WARNING, logger="tokenrelay.pricing"):
        for _ in range(3):
            assert pricer.cost("local", "qwen3-coder-30b", usage, provider_kind="openai") is None
    warnings = [r for r in caplog.records if r.name == "tokenrelay.pricing"]
    assert len(warnings) == 1
    assert 'pricing.overrides."local:qwen3-coder-30b"' in warnings[0].getMessage()


def test_no_tokens_cost_nothing_even_for_an_unknown_model(pricer: Pricer) -> None:
    assert pricer.cost("local", "unknown-model", Usage()) == 0


def test_inconsistent_usage_is_not_priced(pricer: Pricer) -> None:
    usage = Usage(input_tokens=10, output_tokens=1, cache_read_tokens=20)
    assert pricer.cost("anthropic", "claude-sonnet-5-5", usage) is None


def test_nanousd_rounds_half_to_even() -> None:
    nano = Pricer(PriceSettings()).nanousd
    assert Decimal("0.000000001") == NANO
    assert nano(Decimal("0.0000000005")) == 0
    assert nano(Decimal("0.0000000015")) == 2
    assert nano(Decimal("0.0000000025")) == 2
    assert nano(Decimal("1.2345678905")) == 1_234_567_890
    assert nano(Decimal("0.0123055")) == 12_305_500


def test_config_prices_are_decimal_strings_and_checked() -> None:
    price = msgspec.convert({"input": "0.30", "output": 15}, ModelPrice, strict=False)
    assert price == ModelPrice(input=Decimal("0.30"), output=Decimal("15"))
    for bad in ({"input": "-1", "output": "1"}, {"input": "1", "output": "1", "cached": "1"}):
        with pytest.raises(msgspec.ValidationError):
            msgspec.convert(bad, ModelPrice, strict=False)


# --- loading -------------------------------------------------------------------------------


def test_importing_pricing_does_not_import_genai_prices() -> None:
    code = "import sys, tokenrelay.metering.pricing; print('genai_prices' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


async def test_load_is_idempotent_and_safe_concurrently() -> None:
    fresh = Pricer(PriceSettings())
    assert not fresh.loaded
    await asyncio.gather(*(fresh.load() for _ in range(5)))
    assert fresh.loaded
    await fresh.load()


def test_cost_before_load_is_an_error_unless_overridden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pricing, "_package", None)
    unloaded = Pricer(SETTINGS)
    assert unloaded.cost("ollama", "llama3.2", Usage(10, 10)) == 0
    with pytest.raises(RuntimeError, match="load"):
        unloaded.cost("openai", "gpt-5.5", Usage(10, 10))


# --- our arithmetic is genai-prices' -------------------------------------------------------

MODELS = [
    (provider.id, model.id)
    for provider in TABLE
    if provider.id in ("anthropic", "openai")
    for model in provider.models
]
DATES = [datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 9, 1, tzinfo=UTC), WHEN]


@settings(max_examples=400, deadline=None)
@given(
    model=st.sampled_from(MODELS),
    when=st.sampled_from(DATES),
    prompt=st.integers(0, 1_200_000),
    output=st.integers(0, 100_000),
    shares=st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1)),
)
def test_cost_equals_genai_prices_own_calculation(
    table_pricer: Pricer,
    model: tuple[str, str],
    when: datetime,
    prompt: int,
    output: int,
    shares: tuple[float, float, float],
) -> None:
    read = int(prompt * shares[0])
    write = int((prompt - read) * shares[1])
    reasoning = int(output * shares[2])
    usage = Usage(prompt, output, read or None, write or None, reasoning or None)
    provider_id, model_id = model
    try:
        reference = genai_prices.calc_price(
            genai_prices.Usage(
                input_tokens=prompt,
                output_tokens=output,
                cache_read_tokens=read or None,
                cache_write_tokens=write or None,
                output_reasoning_tokens=reasoning or None,
            ),
            model_id,
            provider_id=provider_id,
            genai_request_timestamp=when,
        ).total_price
    except (LookupError, ValueError):
        return  # an id its own match rules do not accept, or usage the entry cannot price
    assert table_pricer.cost(provider_id, model_id, usage, when=when) == reference
