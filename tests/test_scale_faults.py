"""Instances failing under load, with real processes on the machine's PostgreSQL: one killed
mid-stream (its clients can tell, the other's are unaffected, what it spooled reaches the ledger
when it restarts) and a rolling restart (no stream is dropped silently)."""

from __future__ import annotations

import asyncio
import signal
import tempfile
import time
from pathlib import Path

import aiohttp
import msgspec
import pytest

from tests.pg_server import machine_database
from tests.servers import ServeProcess, clean_environ
from tests.test_scale_out import ledger_rows, simulator_process

pytestmark = pytest.mark.asyncio(loop_scope="session")

ROUTE = "faults"


def environ(sim_url: str, database_url: str, spool: str, grace: float = 30.0) -> dict[str, str]:
    return clean_environ(
        TOKENRELAY_PROVIDERS__OPENAI__BASE_URL=sim_url + "/v1",
        TOKENRELAY_PROVIDERS__OPENAI__API_KEY="test-openai-key",
        TOKENRELAY_PROVIDERS__ANTHROPIC__BASE_URL=sim_url,
        TOKENRELAY_PROVIDERS__ANTHROPIC__API_KEY="test-anthropic-key",
        TOKENRELAY_PROVIDERS__OPENAI__FORWARD_HEADERS='["x-sim-"]',
        TOKENRELAY_ROUTES__FAULTS__TARGETS="openai:gpt-5.5",
        TOKENRELAY_DATABASE_URL=database_url,
        TOKENRELAY_SPOOL_DIR=spool,
        TOKENRELAY_ANONYMOUS_LIMIT="100000/minute",
        TOKENRELAY_SHUTDOWN_GRACE=str(grace),
        TOKENRELAY_AUDIT__ENABLED="false",
        TOKENRELAY_LOG_LEVEL="warning",
    )


class Ending(msgspec.Struct):
    """How a stream ended, as its client saw it."""

    request_id: str
    tokens: int
    done: bool  # data: [DONE] arrived
    error: str | None  # an in-band error event's type
    broken: bool  # the connection broke before the end
    message: str = ""


async def stream(session: aiohttp.ClientSession, url: str, tokens: int, delay_ms: int) -> Ending:
    body = {
        "model": ROUTE,
        "stream": True,
        "messages": [{"role": "user", "content": "Keep talking."}],
    }
    headers = {"x-sim-tokens": str(tokens), "x-sim-token-delay-ms": str(delay_ms)}
    ending = Ending("", 0, False, None, False)
    try:
        async with session.post(url + "/v1/chat/completions", json=body, headers=headers) as r:
            ending.request_id = r.headers.get("x-request-id", "")
            if r.status != 200:
                ending.error = f"http {r.status}"
                await r.read()
                return ending
            buffer = b""
            async for chunk in r.content.iter_any():
                buffer += chunk
                *blocks, buffer = buffer.split(b"\n\n")
                for block in blocks:
                    data = block.removeprefix(b"data: ")
                    if data == b"[DONE]":
                        ending.done = True
                        continue
                    event = msgspec.json.decode(data)
                    if "error" in event:
                        ending.error = event["error"].get("type", "error")
                        ending.message = event["error"].get("message", "")
                    elif any((c.get("delta") or {}).get("content") for c in event["choices"]):
                        ending.tokens += 1
    except (aiohttp.ClientError, ConnectionError):
        ending.broken = True
    if not ending.done and ending.error is None:
        ending.broken = True  # ended without [DONE] and without saying why: a cut stream
    return ending


def spool_rows(spool: str) -> int:
    return sum(p.read_bytes().count(b"\n") for p in Path(spool).glob("ledger-*.jsonl"))


async def test_an_instance_killed_mid_stream() -> None:
    with (
        machine_database() as database_url,
        simulator_process() as sim_url,
        tempfile.TemporaryDirectory(prefix="tokenrelay-kill-") as scratch,
    ):
        spool_a, spool_b = f"{scratch}/a", f"{scratch}/b"
        a = ServeProcess(environ(sim_url, database_url, spool_a))
        b = ServeProcess(environ(sim_url, database_url, spool_b))
        try:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
                # Short streams that finish on A just before the kill (their rows spooled),
                # long ones on both that the kill cuts on A and that complete on B.
                quick = [stream(session, a.url, 5, 1) for _ in range(30)]
                long_a = [asyncio.create_task(stream(session, a.url, 200, 10)) for _ in range(10)]
                long_b = [asyncio.create_task(stream(session, b.url, 200, 10)) for _ in range(10)]
                finished_on_a = await asyncio.gather(*quick)
                await asyncio.sleep(0.5)
                a.proc.send_signal(signal.SIGKILL)
                a.proc.wait(10)
                left_in_spool = spool_rows(spool_a)
                cut = await asyncio.gather(*long_a)
                survived = await asyncio.gather(*long_b)
            assert all(e.done and e.tokens == 5 for e in finished_on_a)
            # A's clients can tell: their streams broke, none ended looking complete.
            assert all(e.broken and not e.done and 0 < e.tokens < 200 for e in cut), cut
            # B's clients were unaffected.
            assert all(e.done and e.tokens == 200 and not e.broken for e in survived)
            # A restarts on its spool: what it had spooled reaches the ledger, exactly once.
            a = ServeProcess(environ(sim_url, database_url, spool_a))
            expected = {e.request_id for e in finished_on_a + survived}
            deadline = time.monotonic() + 20
            found: set[str] = set()
            while time.monotonic() < deadline:
                rows = ledger_rows(database_url, ROUTE)
                ids = [row[0] for row in rows]
                assert len(ids) == len(set(ids)), "a row was written twice"
                found = set(ids)
                if expected <= found and spool_rows(spool_a) == 0:
                    break
                await asyncio.sleep(0.2)
            assert expected <= found
            assert spool_rows(spool_a) == 0
            print(f"\n{left_in_spool} row(s) were only in A's spool when it was killed")
            # The streams the kill cut have no row: a killed process writes nothing more.
            assert not {e.request_id for e in cut} & found
        finally:
            for instance in (a, b):
                instance.stop()


async def test_a_rolling_restart_drops_no_stream_silently() -> None:
    """Three instances, a client that sends each new stream to the next ready one, and each
    instance restarted in turn (SIGTERM, drain, a new process) while streams run: every stream
    either completes or ends with an explicit error event; none is cut silently."""
    with (
        machine_database() as database_url,
        simulator_process() as sim_url,
        tempfile.TemporaryDirectory(prefix="tokenrelay-rolling-") as scratch,
    ):

        def start(i: int) -> ServeProcess:
            # A short grace, so some streams outlive it and must end with an explicit error.
            return ServeProcess(environ(sim_url, database_url, f"{scratch}/s{i}", grace=0.6))

        instances = [start(i) for i in range(3)]
        endings: list[Ending] = []
        refused = 0
        stop = asyncio.Event()

        async def client(session: aiohttp.ClientSession, offset: int) -> None:
            nonlocal refused
            turn = offset
            await asyncio.sleep(offset * 0.17)  # staggered, so streams do not end in waves
            while not stop.is_set():
                url = instances[turn % len(instances)].url
                turn += 1
                try:
                    async with session.get(url + "/readyz") as ready:
                        if ready.status != 200:
                            continue
                except aiohttp.ClientError:
                    continue
                ending = await stream(session, url, 100, 20)  # about 2 s, beyond the grace
                if ending.error is not None and ending.error.startswith("http 503"):
                    refused += 1  # draining before the head: a status the client retries
                endings.append(ending)

        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            clients = [asyncio.create_task(client(session, i)) for i in range(12)]
            try:
                await asyncio.sleep(1.5)
                for i in range(3):  # as a rolling update with a surge of one: new, then old
                    old = instances[i]
                    instances[i] = await asyncio.to_thread(start, i)
                    code, output = await asyncio.to_thread(old.stop, signal.SIGTERM, 20)
                    assert code == 0, output
                    await asyncio.sleep(1.0)
            finally:
                stop.set()
                await asyncio.gather(*clients)
                for instance in instances:
                    instance.stop()
        assert len(endings) > 40
        silent = [e for e in endings if e.broken]
        assert not silent, silent
        errors = [e for e in endings if e.error is not None]
        # In-band: OpenAI's error type for an overloaded server, saying why and what to do.
        inband = [e for e in errors if e.error != "http 503"]
        assert all(e.error == "server_error" for e in inband), errors
        assert all("shutting down" in e.message and "retry" in e.message for e in inband)
        assert len(errors) > refused  # the grace ran out on some: that path was exercised
        completed = [e for e in endings if e.done and e.error is None]
        assert all(e.tokens == 100 for e in completed)
        print(
            f"\n{len(endings)} streams: {len(completed)} completed, "
            f"{len(errors) - refused} ended with an in-band error, {refused} refused with 503"
        )
