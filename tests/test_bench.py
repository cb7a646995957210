"""The benchmark harness still runs end to end (a smoke run: small counts, no timing asserted;
speed lives in BENCHMARKS.md, not in tests)."""

from __future__ import annotations

from tests.servers import run_bench


def test_bench_quick_run_completes_with_no_failed_stream() -> None:
    result = run_bench("run.py", "--quick", "--levels", "1,10")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| 1") and "|" in line]
    assert len(rows) == 2  # concurrency 1 and 10
    assert all(line.rstrip().endswith("| 0 / 0 |") for line in rows)  # no failed stream
    assert "abort: the simulator saw the upstream close" in result.stdout
    assert "cold start" in result.stdout


def test_bench_measures_the_responses_front_in_the_same_run() -> None:
    result = run_bench("run.py", "--quick", "--levels", "1", "--front", "responses")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "TTFT p50 direct / chat / responses (ms)" in result.stdout
    rows = [line for line in result.stdout.splitlines() if line.startswith("| 1 |")]
    assert len(rows) == 2  # the Chat Completions table, then the two fronts side by side
    assert rows[1].rstrip().endswith("| 0 / 0 |")  # no failed stream on either front
