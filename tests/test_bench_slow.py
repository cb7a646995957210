"""The slow-streams bench still runs end to end (``--quick``: 300 streams of 12 tokens, a few
seconds; no timing or memory figure asserted: those live in BENCHMARKS.md)."""

from __future__ import annotations

from tests.servers import run_bench


def test_slow_streams_quick_run_completes_every_stream_and_keeps_the_books() -> None:
    result = run_bench("slow_streams.py", "--quick", timeout=240)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    row = next(line for line in result.stdout.splitlines() if line.startswith("| 300 |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[1:3] == ["300", "0"]  # completed, failed
    assert "PROBLEM" not in result.stdout
    assert "concurrency cap 300: all 20 extra requests refused (429)" in result.stdout
    assert "ledger: 340 rows (340 expected)" in result.stdout
