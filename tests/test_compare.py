"""bench/compare.py still runs end to end and writes what it promises (a smoke run: direct and
tokenrelay only, small counts; no speed is asserted, only that the figures are there and sane).
The peers (LiteLLM, Portkey) are not needed: ``--no-peers``."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from tests.servers import clean_environ

COMPARE = Path(__file__).parent.parent / "bench" / "compare.py"


def test_compare_quick_run_without_peers(tmp_path: Path) -> None:
    # the plot needs matplotlib (the `bench` extra); without it, no PNG rather than an install
    plotting = importlib.util.find_spec("matplotlib") is not None
    command = [sys.executable, str(COMPARE), "--quick", "--no-peers", "--output", str(tmp_path)]
    result = subprocess.run(
        command if plotting else [*command, "--no-plot"],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_environ(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((tmp_path / "compare.json").read_text())
    assert (tmp_path / "compare.png").exists() == plotting

    assert data["ok"] is True
    assert data["failures"] == {"direct": 0, "tokenrelay": 0, "tokenrelay-2w": 0}
    assert set(data["machine"]) >= {"cpu", "cores", "python", "node"}
    assert data["versions"]["tokenrelay"]
    levels = data["config"]["levels"]
    assert levels == [1, 20]
    targets = data["targets"]
    assert list(targets) == ["direct", "tokenrelay", "tokenrelay-2w"]
    ttft_floor = data["config"]["simulator"]["ttft_ms"]
    for key, target in targets.items():
        assert target["error"] == ""
        assert target["abort"]["propagated"] is True, key
        assert 0 <= target["abort"]["median_ms"] < 1000
        for c in map(str, levels):
            level = target["levels"][c]
            assert level["failures"] == 0
            assert level["completed"] == level["streams"] > 0
            assert level["tokens"] == level["completed"] * data["config"]["simulator"]["tokens"]
            assert ttft_floor <= level["ttft_ms"]["p50"] <= level["ttft_ms"]["p99"] < 5000
            assert level["streams_per_s"] > 0
            if key == "direct":
                assert level["added_ttft_ms"]["p50"] == 0
                assert level["cpu_s_per_1k_tokens"] is None
            else:
                assert level["cpu_s_per_1k_tokens"] > 0
                assert level["rss_max_mib"] > 0
        if key != "direct":
            assert 0 < target["idle_rss_mib"] <= target["peak_rss_mib"]
            assert target["memory_per_stream_kib"] is not None
            assert 0 < target["cold_start_ms"]["median"] < 30_000
    ratios = data["ratios"]["tokenrelay"]["direct"]
    assert ratios["streams_per_s@20"] > 0
    assert ratios["ttft_p50_ms@1"] >= 1 * 0.9  # a gateway cannot beat its own upstream by much
    # the Markdown table for BENCHMARKS.md is on stdout
    assert "| measure | direct | tokenrelay | tokenrelay, 2 workers |" in result.stdout
    assert "| failed streams | 0 of 25 | 0 of 25 | 0 of 25 |" in result.stdout
