"""Three ``tokenrelay serve`` processes sharing the machine's Redis and PostgreSQL, as three hosts
behind a load balancer would: 300 concurrent streams spread over them, a global rate limit that
must hold exactly, and a ledger that must hold every request exactly once with the usage the
simulator sent; and a circuit breaker opened on one instance honoured by the other two."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import aiohttp
import msgspec
import psycopg
import pytest

from tests.pg_server import machine_database
from tests.servers import ServeProcess, clean_environ
from tests.services import free_port, unavailable

pytestmark = pytest.mark.asyncio(loop_scope="session")

MACHINE_REDIS = os.environ.get("TOKENRELAY_TEST_REDIS", "redis://127.0.0.1:6379/0")
INSTANCES = 3
STREAMS = 300
LIMIT = 250  # requests per minute on the route, across all instances together
TOKENS = 20
OVERLOADED = {"x-sim-fault": "529"}


@contextlib.contextmanager
def simulator_process() -> Iterator[str]:
    """The simulator in a process of its own, so 300 streams do not share the test's loop."""
    port = free_port()
    command = [sys.executable, "-m", "tokenrelay", "simulate", "--port", str(port)]
    command += ["--ttft-ms", "20", "--tokens", str(TOKENS), "--token-delay-ms", "10"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                urllib.request.urlopen(url + "/stats", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError("the simulator did not start") from None
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def machine_redis_or_skip() -> None:
    import redis

    try:
        redis.Redis.from_url(MACHINE_REDIS, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        unavailable(f"Redis at {MACHINE_REDIS} is unreachable: {exc}")


def instance_environ(
    sim_url: str, database_url: str, route: str, spool: str, prefix: str
) -> dict[str, str]:
    return clean_environ(
        TOKENRELAY_PROVIDERS__OPENAI__BASE_URL=sim_url + "/v1",
        TOKENRELAY_PROVIDERS__OPENAI__API_KEY="test-openai-key",
        TOKENRELAY_PROVIDERS__ANTHROPIC__BASE_URL=sim_url,
        TOKENRELAY_PROVIDERS__ANTHROPIC__API_KEY="test-anthropic-key",
        TOKENRELAY_DATABASE_URL=database_url,
        TOKENRELAY_REDIS_URL=MACHINE_REDIS,
        # This run's own keys in the shared Redis, so no other run's windows count here.
        TOKENRELAY_LIMITS__KEY_PREFIX=prefix,
        TOKENRELAY_ANONYMOUS_LIMIT="100000/minute",
        **{
            f"TOKENRELAY_ROUTES__{route.upper()}__TARGETS": "openai:gpt-5.5",
            f"TOKENRELAY_ROUTES__{route.upper()}__RATE_LIMIT": f"{LIMIT}/minute",
            # A route whose first target is overloaded, for the shared breaker; a model of
            # its own so its circuit is this run's alone.
            f"TOKENRELAY_ROUTES__{route.upper()}BRK__TARGETS": msgspec.json.encode(
                [
                    {"provider": "openai", "model": f"{route}-down", "headers": OVERLOADED},
                    {"provider": "openai", "model": "gpt-5.5"},
                ]
            ).decode(),
            f"TOKENRELAY_ROUTES__{route.upper()}BRK__RETRIES": "0",
        },
        TOKENRELAY_BREAKER__FAILURES="3",
        TOKENRELAY_BREAKER__COOLDOWN="60",
        TOKENRELAY_SPOOL_DIR=spool,
        # 300 requests land in the same second on two cores shared by three gateways, the
        # simulator and this client: event loops lag by over a second, which the default
        # redis_timeout (1 s) would read as Redis being down, failing open. The test checks
        # below that no instance failed open, so the limit it sees held is the real one.
        TOKENRELAY_LIMITS__REDIS_TIMEOUT="5",
        TOKENRELAY_AUDIT__ENABLED="false",
        TOKENRELAY_LOG_LEVEL="warning",
    )


class Outcome(msgspec.Struct):
    status: int
    request_id: str
    tokens: int = 0
    usage: dict[str, Any] | None = None
    done: bool = False


async def one_stream(session: aiohttp.ClientSession, url: str, route: str) -> Outcome:
    body = {
        "model": route,
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "Tell me about scaling out."}],
    }
    async with session.post(url + "/v1/chat/completions", json=body) as response:
        outcome = Outcome(response.status, response.headers.get("x-request-id", ""))
        if response.status != 200:
            await response.read()
            return outcome
        buffer = b""
        async for chunk in response.content.iter_any():
            buffer += chunk
        for block in buffer.split(b"\n\n"):
            data = block.removeprefix(b"data: ")
            if data == b"[DONE]":
                outcome.done = True
            elif data:
                event = msgspec.json.decode(data)
                if event.get("usage"):
                    outcome.usage = event["usage"]
                for choice in event.get("choices") or ():
                    if (choice.get("delta") or {}).get("content"):
                        outcome.tokens += 1
        return outcome


async def attempts(session: aiohttp.ClientSession, url: str, route: str) -> str:
    """The x-tokenrelay-attempts header of one request on ``route``."""
    body = {"model": route, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    async with session.post(url + "/v1/chat/completions", json=body) as response:
        await response.read()
        assert response.status == 200
        return response.headers["x-tokenrelay-attempts"]


def ledger_rows(database_url: str, route: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as connection:
        return connection.execute(
            "SELECT request_id, outcome, input_tokens, output_tokens FROM ledger WHERE route = %s",
            (route,),
        ).fetchall()


async def test_three_instances_share_limits_and_ledger() -> None:
    machine_redis_or_skip()
    route = f"scale{secrets.token_hex(3)}"
    prefix = f"tokenrelay-test-{secrets.token_hex(4)}"
    with (
        machine_database() as database_url,
        simulator_process() as sim_url,
        tempfile.TemporaryDirectory(prefix="tokenrelay-scale-") as scratch,
    ):
        instances = [
            ServeProcess(
                instance_environ(sim_url, database_url, route, f"{scratch}/spool{i}", prefix)
            )
            for i in range(INSTANCES)
        ]
        try:
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=connector) as session:
                started = time.monotonic()
                outcomes = await asyncio.wait_for(
                    asyncio.gather(
                        *(
                            one_stream(session, instances[i % INSTANCES].url, route)
                            for i in range(STREAMS)
                        )
                    ),
                    timeout=60,
                )
                elapsed = time.monotonic() - started
                # The breaker: three failures seen by instance 0 open the circuit, and
                # instances 1 and 2, which never saw the target fail, skip it within 1 s.
                down = f"{route}-down"
                for _ in range(3):
                    seen = await attempts(session, instances[0].url, route + "brk")
                    assert seen.startswith(f"openai/{down};outcome=overloaded"), seen
                tripped = time.monotonic()
                await asyncio.sleep(1.0)
                for other in instances[1:]:
                    seen = await attempts(session, other.url, route + "brk")
                    assert seen.startswith(f"openai/{down};outcome=circuit_open"), seen
                print(f"breaker honoured by the others {time.monotonic() - tripped:.2f} s on")
            served = [o for o in outcomes if o.status == 200]
            refused = [o for o in outcomes if o.status == 429]
            # The global limit held exactly, across three processes.
            assert (len(served), len(refused)) == (LIMIT, STREAMS - LIMIT), [
                o.status for o in outcomes if o.status not in (200, 429)
            ]
            assert all(o.done and o.tokens == TOKENS for o in served)
            print(f"\n{STREAMS} streams over {INSTANCES} instances in {elapsed:.1f} s")
            # Every request in the ledger exactly once, with the usage the simulator sent.
            expected = {o.request_id: o for o in outcomes}
            rows: list[tuple[Any, ...]] = []
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                rows = ledger_rows(database_url, route)
                if len(rows) >= STREAMS:
                    break
                await asyncio.sleep(0.2)
            ids = [row[0] for row in rows]
            assert len(ids) == len(set(ids)) == STREAMS
            assert set(ids) == set(expected)
            for request_id, outcome, input_tokens, output_tokens in rows:
                sent = expected[request_id]
                if sent.status == 200:
                    assert outcome == "completed"
                    assert sent.usage is not None
                    assert (input_tokens, output_tokens) == (
                        sent.usage["prompt_tokens"],
                        sent.usage["completion_tokens"],
                    )
                    assert output_tokens == TOKENS
                else:
                    assert (outcome, output_tokens) == ("rejected", 0)
        finally:
            for instance in instances:
                code, output = instance.stop()
                assert code == 0, output
                assert "failing OPEN" not in output, output
                assert "ERROR" not in output, output
