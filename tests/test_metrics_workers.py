"""``/metrics`` under ``tokenrelay serve --workers 2``: whichever worker answers the scrape, the
page holds the totals of both, and a worker that exits keeps its counts."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator

import msgspec
import pytest

from tests.servers import ServeProcess, clean_environ
from tests.test_metrics import CLAUDE, Family, fake_routes, parse, record, value
from tokenrelay.observe.metrics import GatewayMetrics
from tokenrelay.observe.prometheus import Metric, render
from tokenrelay.observe.snapshots import WRITE_EVERY, Snapshots

REQUESTS = 24


def post(port: int, path: str, body: dict[str, object]) -> int:
    """One request on its own connection (so the kernel may hand it to either worker)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(
            "POST", path, msgspec.json.encode(body), {"content-type": "application/json"}
        )
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def scrape(port: int) -> dict[str, Family]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/metrics", headers={"connection": "close"})
        response = connection.getresponse()
        assert response.status == 200
        return parse(response.read().decode())
    finally:
        connection.close()


def total_requests(families: dict[str, Family]) -> float:
    return sum(sample[2] for sample in families["tokenrelay_requests_total"].samples)


def workers(supervisor: int) -> list[int]:
    """The serve process's workers (its children, less multiprocessing's resource tracker)."""
    children: list[int] = []
    for task in os.listdir(f"/proc/{supervisor}/task"):
        with open(f"/proc/{supervisor}/task/{task}/children") as file:
            children += [int(pid) for pid in file.read().split()]
    found = []
    for pid in children:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as file:
                if b"resource_tracker" not in file.read():
                    found.append(pid)
        except FileNotFoundError:
            continue
    return found


def settle(port: int, expected: float, within: float = 10.0) -> dict[str, Family]:
    """Scrapes until every worker's snapshot (written at most a second apart) is counted."""
    deadline = time.monotonic() + within
    families = scrape(port)
    while total_requests(families) != expected and time.monotonic() < deadline:
        time.sleep(0.2)
        families = scrape(port)
    return families


@pytest.fixture
def serve() -> Iterator[ServeProcess]:
    with tempfile.TemporaryDirectory() as scratch:
        env = clean_environ(
            TOKENRELAY_DATABASE_URL=f"sqlite:///{scratch}/ledger.db",
            TOKENRELAY_SPOOL_DIR=f"{scratch}/spool",
            TOKENRELAY_ANONYMOUS_LIMIT="100000/minute",
            TOKENRELAY_AUDIT__ENABLED="false",
            TOKENRELAY_LOG_LEVEL="warning",
        )
        server = ServeProcess(env, "--workers", "2")
        try:
            yield server
        finally:
            server.stop()


def test_two_workers_serve_one_page(serve: ServeProcess) -> None:
    body = {"model": "gpt-5.5", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
    for _ in range(REQUESTS):
        assert post(serve.port, "/v1/chat/completions", body) == 200
    settle(serve.port, REQUESTS)
    # Each worker's snapshot trails its live numbers by up to WRITE_EVERY: past that, every
    # worker's file holds all it served, whichever worker answers.
    time.sleep(WRITE_EVERY + 0.5)
    pids = workers(serve.proc.pid)
    assert len(pids) == 2
    for _ in range(12):  # fresh connections: both workers answer some of these
        families = scrape(serve.port)
        assert total_requests(families) == REQUESTS
        assert value(families, "tokenrelay_metrics_workers", state="running") == 2
        count = families["gen_ai_client_operation_duration_seconds"].samples
        assert sum(v for name, _, v in count if name.endswith("_count")) == REQUESTS

    # A worker that exits (and is replaced) keeps its counts on the page.
    os.kill(pids[0], signal.SIGTERM)
    deadline = time.monotonic() + 15
    while pids[0] in workers(serve.proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pids[0] not in workers(serve.proc.pid)
    for _ in range(12):
        families = scrape(serve.port)
        assert total_requests(families) == REQUESTS
        assert value(families, "tokenrelay_active_streams") == 0


def test_the_snapshots_live_in_memory_and_go_with_the_supervisor(serve: ServeProcess) -> None:
    """The supervisor's directory holds one snapshot per worker, in memory when it can."""
    pids = workers(serve.proc.pid)
    with open(f"/proc/{pids[0]}/environ", "rb") as file:
        environ = dict(item.split(b"=", 1) for item in file.read().split(b"\0") if b"=" in item)
    directory = environ[b"TOKENRELAY_METRICS__SHARED_DIR"].decode()
    if os.access("/dev/shm", os.W_OK):
        assert directory.startswith("/dev/shm/")
    deadline = time.monotonic() + 5
    while len(os.listdir(directory)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sorted(os.listdir(directory)) == sorted(f"{pid}.snap" for pid in pids)
    serve.stop()
    assert not os.path.exists(directory)  # removed with the supervisor


# --- the merge, without processes ---------------------------------------------------------------


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def other_worker(directory: str, pid: int, metrics: GatewayMetrics, *, running: bool) -> None:
    """A snapshot as worker ``pid`` would write it."""
    snapshots = Snapshots(directory)
    snapshots.pid, snapshots.path = pid, os.path.join(directory, f"{pid}.snap")
    snapshots.write({f.name: f.dump() for f in families_of(metrics)}, running=running)


def families_of(metrics: GatewayMetrics) -> list[Metric]:
    return [metrics.requests, metrics.duration, metrics.cost, metrics.active, metrics.breaker]


def test_counters_add_up_over_every_worker_and_gauges_over_the_running_ones() -> None:
    with tempfile.TemporaryDirectory() as directory:
        me, alive, gone = (GatewayMetrics(fake_routes()) for _ in range(3))
        for metrics, served in ((me, 3), (alive, 5), (gone, 7)):
            for _ in range(served):
                metrics(record())
            metrics.active.set(value=served)
        me.breaker.set("anthropic", "claude-sonnet-5-5", value=0)
        alive.breaker.set("anthropic", "claude-sonnet-5-5", value=2)  # open there
        gone.breaker.set("anthropic", "claude-sonnet-5-5", value=1)
        sleeper = subprocess.Popen(["sleep", "30"])
        try:
            other_worker(directory, sleeper.pid, alive, running=True)
            other_worker(directory, dead_pid(), gone, running=True)  # killed: no final write
            page = parse(render(me._merged(families_of(me), Snapshots(directory))).decode())
        finally:
            sleeper.kill()
            sleeper.wait()
    labels = {"route": "an", **CLAUDE, "outcome": "completed"}
    assert value(page, "tokenrelay_requests_total", **labels) == 15
    assert value(page, "tokenrelay_cost_usd_total", route="an", **CLAUDE) == 15 * 0.001234567
    duration = page["gen_ai_client_operation_duration_seconds"].samples
    assert sum(v for name, _, v in duration if name.endswith("_count")) == 15
    assert value(page, "tokenrelay_active_streams") == 3 + 5  # the dead worker's left out
    assert value(page, "tokenrelay_circuit_breaker_state", **CLAUDE) == 2
    assert value(page, "tokenrelay_metrics_workers", state="running") == 2
    assert value(page, "tokenrelay_metrics_workers", state="exited") == 1


def test_the_cost_of_a_merged_scrape(capsys: pytest.CaptureFixture[str]) -> None:
    """Merging another worker's snapshot into a page of about 200 series: printed, not
    asserted."""
    with tempfile.TemporaryDirectory() as directory:
        me, other = GatewayMetrics(fake_routes()), GatewayMetrics(fake_routes())
        for metrics in (me, other):
            for i in range(50):
                metrics(record(route=f"r{i % 10}", model=f"claude-{i}"))
        other_worker(directory, os.getppid(), other, running=True)
        snapshots = Snapshots(directory)
        rounds = 200
        started = time.perf_counter()
        for _ in range(rounds):
            page = render(me._merged(families_of(me), snapshots))
        merged = (time.perf_counter() - started) / rounds * 1e3
        started = time.perf_counter()
        for _ in range(rounds):
            render(families_of(me))
        alone = (time.perf_counter() - started) / rounds * 1e3
        started = time.perf_counter()
        for _ in range(rounds):
            me.snapshots = snapshots
            snapshots.write({f.name: f.dump() for f in families_of(me)})
        written = (time.perf_counter() - started) / rounds * 1e3
    assert b"tokenrelay_metrics_workers" in page
    with capsys.disabled():
        print(
            f"\n/metrics with 2 workers: {merged:.3f} ms merged against {alone:.3f} ms alone "
            f"({len(page)} bytes); a snapshot write {written:.3f} ms (once a second per worker)"
        )


def test_a_directory_the_operator_gives_starts_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    """A previous run's snapshots would add its counts to this run's forever."""
    from tokenrelay.workers import METRICS_DIR_ENV, _metrics_dir

    with tempfile.TemporaryDirectory() as directory:
        for name in ("123.snap", "456.snap.1.tmp"):
            open(os.path.join(directory, name), "wb").close()
        open(os.path.join(directory, "keep.txt"), "wb").close()
        monkeypatch.setenv(METRICS_DIR_ENV, directory)
        with _metrics_dir() as shared:
            assert shared == directory
            assert os.listdir(directory) == ["keep.txt"]
        assert os.path.isdir(directory)  # left in place
