"""What a request cost, in exact decimal dollars, from genai-prices' bundled price table and the
config's per-model overrides (negotiated rates, self-hosted models at zero).

``genai_prices`` takes ~420 ms to import (its table is a 1.6 MB module), so nothing here imports
it at module level: ``Pricer.load()`` does it once per process in a worker thread. Only the
snapshot bundled with the installed package is used; its network updater (``UpdatePrices``) is
never started, so prices change when the package is upgraded, not at run time.

Arithmetic runs in a decimal context with 60 digits that traps ``Inexact``: a price that could
not be computed exactly raises instead of being rounded. The only rounding is ``nanousd``'s, to
whole nanodollars, half to even, for the ledger's integer column.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import UTC, datetime
from decimal import (
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DecimalException,
    Inexact,
    InvalidOperation,
    localcontext,
)
from typing import TYPE_CHECKING, Any

import msgspec

from tokenrelay.model import Usage

if TYPE_CHECKING:
    from genai_prices.data_snapshot import DataSnapshot
    from genai_prices.types import ModelInfo, Provider

log = logging.getLogger("tokenrelay.pricing")

NANO = Decimal("1e-9")
MILLION = Decimal(1_000_000)
_EXACT = Context(prec=60, traps=[Inexact, InvalidOperation])
_ROUND = Context(prec=60, rounding=ROUND_HALF_EVEN)
_CACHE_LIMIT = 1024  # model lookups remembered; clients can name models, so it is bounded
# A provider kind whose genai-prices table has another name (Gemini's is Google's).
_PRICE_IDS = {"gemini": "google"}


class ModelPrice(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """USD per million tokens, written as decimal strings in the config (``"3"``, ``"0.30"``).

    A cache rate left out is the input rate, as genai-prices does for a model without one."""

    input: Decimal
    output: Decimal
    cache_read: Decimal | None = None
    cache_write: Decimal | None = None

    def __post_init__(self) -> None:
        for name in ("input", "output", "cache_read", "cache_write"):
            value = getattr(self, name)
            if value is not None and (not value.is_finite() or value < 0):
                raise ValueError(f"price {name} must be a finite amount of at least 0")


class PriceSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``overrides`` keys are ``"provider:model"`` (one provider's model) or ``"model"`` (that
    model from any provider); the first wins. ``"ollama:llama3.2" = {input = "0", output = "0"}``
    makes a self-hosted model free."""

    overrides: dict[str, ModelPrice] = msgspec.field(default_factory=dict)


class _Package:
    """What ``load`` brings in from genai-prices: the bundled snapshot and its ``Usage``."""

    __slots__ = ("snapshot", "usage")

    def __init__(self, snapshot: DataSnapshot, usage: type[Any]) -> None:
        self.snapshot = snapshot
        self.usage = usage


_package: _Package | None = None
_package_lock = threading.Lock()


def _load_package() -> _Package:
    """Import genai-prices and warm its lazy parts (unit registry, validation); blocking, so
    it runs in a worker thread. The lock makes concurrent first calls share one import."""
    global _package
    with _package_lock:
        if _package is None:
            import genai_prices
            from genai_prices.data import providers
            from genai_prices.data_snapshot import DataSnapshot

            # Our own snapshot of the bundled data, never the updater's custom one.
            snapshot = DataSnapshot(providers=providers, from_auto_update=False)
            _, model = snapshot.find_provider_model("claude-sonnet-4-5", None, "anthropic", None)
            model.get_prices(datetime.now(UTC)).calc_price(genai_prices.Usage(input_tokens=1))
            _package = _Package(snapshot, genai_prices.Usage)
        return _package


class Pricer:
    """Prices usage per provider and model; ``await load()`` once before ``cost``.

    A model is looked up, in order: the overrides; then the genai-prices provider whose id is our
    provider's name (``anthropic``, ``openai``, ``groq``, ``deepseek``, ...); then the one named
    by ``provider_kind`` (so a vLLM provider called ``local`` serving an OpenAI model is priced as
    OpenAI's). A self-hosted model the table does not know has no price: ``None``, logged once.
    """

    def __init__(self, settings: PriceSettings) -> None:
        self._overrides = {key.lower(): price for key, price in settings.overrides.items()}
        self._package: _Package | None = None
        self._found: dict[tuple[str, str, str | None], tuple[Provider, ModelInfo] | None] = {}
        self._warned: set[tuple[str, str]] = set()

    @property
    def loaded(self) -> bool:
        return self._package is not None

    async def load(self) -> None:
        """Import the price table in a worker thread, once per process; idempotent and safe to
        call concurrently (later callers wait for the first import, off the event loop)."""
        if self._package is None:
            self._package = await asyncio.to_thread(_load_package)

    def cost(
        self,
        provider: str,
        model: str,
        usage: Usage,
        *,
        when: datetime | None = None,
        provider_kind: str | None = None,
    ) -> Decimal | None:
        """Exact USD for ``usage``, or ``None`` when the model has no known price.

        Input tokens less the cache reads and writes are priced at the input rate, cache reads
        and writes at theirs, output (reasoning included) at the output rate. ``when`` (default
        now) picks the price in force then; tiers follow the whole prompt's size. Usage with no
        tokens costs 0 whatever the model.
        """
        prompt = usage.input_tokens or 0
        read = usage.cache_read_tokens or 0
        write = usage.cache_write_tokens or 0
        output = usage.output_tokens or 0
        if not (prompt or output):
            return Decimal(0)
        if read + write > prompt:
            self._warn(provider, model, f"cache tokens exceed input tokens in {usage}")
            return None
        override = self._overrides.get(f"{provider}:{model}".lower())
        if override is None:
            override = self._overrides.get(model.lower())
        if override is not None:
            with localcontext(_EXACT):
                return _override_cost(override, prompt, read, write, output)
        found = self._lookup(provider, model, provider_kind)
        if found is None:
            self._warn(
                provider,
                model,
                f'the price table does not know it: add [pricing.overrides."{provider}:{model}"] '
                'with input and output in USD per million tokens ("0" for a self-hosted model)',
            )
            return None
        return self._package_cost(found, provider, model, usage, when)

    def knows(self, provider: str, model: str, *, provider_kind: str | None = None) -> bool:
        """Whether ``model`` has a price: an override, or a table entry (genai-prices resolves
        dated snapshots and aliases, so ``claude-sonnet-4-5-20250929`` is known)."""
        if f"{provider}:{model}".lower() in self._overrides or model.lower() in self._overrides:
            return True
        return self._lookup(provider, model, provider_kind) is not None

    def nanousd(self, cost: Decimal) -> int:
        """Whole nanodollars, rounded half to even, for the ledger's integer column."""
        return int(cost.quantize(NANO, context=_ROUND).scaleb(9, context=_ROUND))

    def _lookup(
        self, provider: str, model: str, kind: str | None
    ) -> tuple[Provider, ModelInfo] | None:
        key = (provider, model, kind)
        if key in self._found:
            return self._found[key]
        if self._package is None:
            if _package is None:
                raise RuntimeError("Pricer.cost() before Pricer.load() finished")
            self._package = _package  # another Pricer loaded it
        providers = self._package.snapshot.providers
        found = None
        for name in dict.fromkeys(_PRICE_IDS.get(n, n) for n in (provider.lower(), kind) if n):
            table = next((p for p in providers if p.id == name), None)
            info = table.find_model(model, all_providers=providers) if table else None
            if table is not None and info is not None:
                found = (table, info)
                break
        if len(self._found) >= _CACHE_LIMIT:
            self._found.clear()
        self._found[key] = found
        return found

    def _package_cost(
        self,
        found: tuple[Provider, ModelInfo],
        provider: str,
        model: str,
        usage: Usage,
        when: datetime | None,
    ) -> Decimal | None:
        assert self._package is not None  # _lookup found it
        table, info = found
        at = when or datetime.now(UTC)
        price = info.get_prices(at)
        try:
            with localcontext(_EXACT):
                fast = _table_cost(price, usage)
                if fast is not None:
                    return fast
                counts = {
                    "input_tokens": usage.input_tokens or 0,
                    "output_tokens": usage.output_tokens or 0,
                    "cache_read_tokens": usage.cache_read_tokens,
                    "cache_write_tokens": usage.cache_write_tokens,
                    "output_reasoning_tokens": usage.reasoning_tokens,
                }
                calc = info.calc_price(
                    self._package.usage(**counts), table, genai_request_timestamp=at
                )
                return Decimal(calc.total_price)
        except (ValueError, DecimalException) as exc:
            self._warn(provider, model, f"genai-prices could not price {usage}: {exc}")
            return None

    def _warn(self, provider: str, model: str, why: str) -> None:
        key = (provider, model)
        if key not in self._warned:
            if len(self._warned) >= _CACHE_LIMIT:
                self._warned.clear()
            self._warned.add(key)
            log.warning("no cost for model %r of provider %r: %s", model, provider, why)


def _override_cost(price: ModelPrice, prompt: int, read: int, write: int, output: int) -> Decimal:
    """The config's rates applied as genai-prices applies a table's (in the exact context)."""
    total = (prompt - read - write) * price.input + output * price.output
    total += read * (price.cache_read if price.cache_read is not None else price.input)
    total += write * (price.cache_write if price.cache_write is not None else price.input)
    return total / MILLION


# Price keys whose meaning for text usage ``_table_cost`` reproduces; the others (a fee per
# request, audio, images, separately priced reasoning) take genai-prices' own calculation,
# which is exact too but ~250 µs per call against ~5 µs. Searches and 1-hour cache writes are
# never reported by our usage, so they price 0 tokens either way.
_SIMPLE_KEYS = frozenset(
    {
        "input_mtok",
        "output_mtok",
        "cache_read_mtok",
        "cache_write_mtok",
        "cache_write_1h_mtok",
        "web_searches_kcount",
        "storage_searches_kcount",
    }
)


def _rate(price: Any, prompt: int) -> Decimal:
    """A genai-prices price (a ``Decimal`` or tiers) for this prompt size: a tier applies to all
    tokens once the whole prompt is above its start."""
    if isinstance(price, Decimal):
        return price
    for tier in reversed(price.tiers):
        if prompt > tier.start:
            return Decimal(tier.price)
    return Decimal(price.base)


# A table entry's rates as ``_table_cost`` uses them (input, output, cache read, cache write),
# or None for an entry it defers to genai-prices; keyed by the entry's id, which the entry
# itself (kept in the value, and alive in the loaded snapshot anyway) holds for us.
_Rates = tuple[Any, Any, Any, Any]
_rates: dict[int, tuple[Any, _Rates | None]] = {}


def _rates_of(price: Any) -> _Rates | None:
    """What ``_table_cost`` needs of ``price``, worked out once per table entry: which keys
    it has is the same on every request priced at it."""
    known = _rates.get(id(price))
    if known is not None and known[0] is price:
        return known[1]
    keys = [key for key, value in vars(price).items() if value is not None]
    rates: _Rates | None = None
    if "input_mtok" in keys and "output_mtok" in keys and _SIMPLE_KEYS.issuperset(keys):
        read, write = (
            getattr(price, "cache_read_mtok", None),
            getattr(price, "cache_write_mtok", None),
        )
        rates = (price.input_mtok, price.output_mtok, read, write)
    if len(_rates) >= _CACHE_LIMIT:
        _rates.clear()
    _rates[id(price)] = (price, rates)
    return rates


def _table_cost(price: Any, usage: Usage) -> Decimal | None:
    """genai-prices' arithmetic for a text model's table entry, or ``None`` to defer to it.

    As genai-prices does: a cache count is priced at its own rate only when the table has one,
    and otherwise stays in the input count at the input rate."""
    rates = _rates_of(price)
    if rates is None:
        return None
    input_rate, output_rate, read_rate, write_rate = rates
    prompt = usage.input_tokens or 0
    fresh = prompt
    total = Decimal(0)
    for count, rate in (
        (usage.cache_read_tokens or 0, read_rate),
        (usage.cache_write_tokens or 0, write_rate),
    ):
        if rate is not None:
            fresh -= count
            total += count * _rate(rate, prompt)
    total += fresh * _rate(input_rate, prompt)
    total += (usage.output_tokens or 0) * _rate(output_rate, prompt)
    return total / MILLION
