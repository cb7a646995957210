"""The `tokenrelay` command as a user runs it: `serve` on a fresh environment (demo mode), `ask`,
`simulate`, and their failures."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import pytest

from tests.servers import ServeProcess, clean_environ, free_port

DEMO_KNOBS = {
    "TOKENRELAY_SIMULATOR__TTFT_MS": "5",
    "TOKENRELAY_SIMULATOR__TOKENS": "40",
    "TOKENRELAY_SIMULATOR__TOKEN_DELAY_MS": "10",
}


@pytest.fixture(scope="module")
def demo() -> Iterator[ServeProcess]:
    server = ServeProcess(clean_environ(**DEMO_KNOBS))
    yield server
    server.stop()


def post_stream(url: str, body: dict[str, object]) -> tuple[dict[str, str], list[str]]:
    """What `curl -N` shows: the response head and every data line, read as it arrives."""
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        headers = {k.lower(): v for k, v in response.headers.items()}
        lines = [line.decode().rstrip("\r\n") for line in response]
    return headers, [line[6:] for line in lines if line.startswith("data: ")]


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tokenrelay", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or clean_environ(),
    )


def test_serve_on_a_fresh_environment_streams_all_three_endpoints(demo: ServeProcess) -> None:
    headers, data = post_stream(demo.url + "/api/generate", {"prompt": "Explain SSE"})
    assert headers["x-tokenrelay-demo"] == "true"
    assert data[-1] == "[DONE]" and len(data) == 41
    assert "".join(json.loads(item)["text"] for item in data[:-1]).strip()

    _, data = post_stream(
        demo.url + "/v1/chat/completions",
        {"model": "default", "stream": True, "messages": [{"role": "user", "content": "Hi"}]},
    )
    assert data[-1] == "[DONE]"
    chunks = [json.loads(item) for item in data[:-1]]
    assert chunks[0]["object"] == "chat.completion.chunk"
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])

    _, data = post_stream(
        demo.url + "/v1/messages",
        {
            "model": "default",
            "max_tokens": 100,
            "stream": True,
            "messages": [{"role": "user", "content": "Hi"}],
        },
    )
    kinds = [json.loads(item)["type"] for item in data]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "content_block_delta" in kinds


def test_ask_prints_the_answer_then_stats(demo: ServeProcess) -> None:
    result = run_cli("ask", "Explain SSE", "--url", demo.url)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.split()) >= 30
    assert re.search(
        r"provider anthropic \(demo simulator\) · model claude-sonnet-5-5 · first token \d+ ms",
        result.stderr,
    )
    assert "tokens in" in result.stderr and "out 40" in result.stderr


def test_ctrl_c_in_ask_aborts_cleanly(demo: ServeProcess) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tokenrelay", "ask", "Write a long story", "--url", demo.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_environ(),
    )
    assert proc.stdout is not None
    first = proc.stdout.read1(100)  # type: ignore[attr-defined]
    assert first, "ask printed nothing before the interrupt"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 130
    assert b"aborted" in stderr and b"Traceback" not in stderr


def test_ask_reports_an_unreachable_gateway_plainly() -> None:
    result = run_cli("ask", "hi", "--url", f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert "cannot reach the gateway" in result.stderr and "Traceback" not in result.stderr


def test_ask_reports_a_refused_request(demo: ServeProcess) -> None:
    result = run_cli("ask", "hi", "--url", demo.url, "--route", "nope")
    assert result.returncode == 1
    assert "not_found (404)" in result.stderr and "nope" in result.stderr


def test_serve_refuses_a_bad_setting_with_a_message() -> None:
    result = run_cli("serve", env=clean_environ(TOKENRELAY_PORT="eighty"))
    assert result.returncode != 0
    assert "$.port" in result.stderr and "Traceback" not in result.stderr


def test_sigterm_stops_serve_with_exit_0_and_demo_is_announced() -> None:
    server = ServeProcess(clean_environ(**DEMO_KNOBS))
    code, output = server.stop(signal.SIGTERM)
    assert code == 0, output
    assert "DEMO MODE" in output


def test_simulate_serves_until_stopped() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tokenrelay", "simulate", "--port", str(port), "--tokens", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=clean_environ(),
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "simulate did not start"
                time.sleep(0.05)
        _, data = post_stream(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            {"model": "gpt-5.5", "stream": True, "messages": [{"role": "user", "content": "Hi"}]},
        )
        texts = [json.loads(d)["choices"][0]["delta"].get("content") for d in data[:-1]]
        assert len([t for t in texts if t]) == 3
    finally:
        proc.terminate()
        proc.wait(10)
