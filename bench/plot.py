"""The picture of bench/compare.py's results: TTFT p50 and p99 against concurrency, and streams/s
against concurrency, one line per target.

    .venv/bin/python bench/plot.py bench/results/compare.json [out.png]

matplotlib is the ``bench`` extra of pyproject.toml (not needed by ``make test``); when it is
missing, ``ensure_matplotlib`` installs that pin into this interpreter's environment, saying so.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
COLORS = {
    "direct": "#555555",
    "tokenrelay": "#1f77b4",
    "tokenrelay-2w": "#17becf",
    "litellm": "#d62728",
    "portkey": "#ff7f0e",
}


def bench_requirements() -> list[str]:
    """The ``bench`` extra's pins, read from pyproject.toml (one place to change them)."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    requirements: list[str] = project["optional-dependencies"]["bench"]
    return requirements


def ensure_matplotlib() -> None:
    if importlib.util.find_spec("matplotlib") is not None:
        return
    requirements = bench_requirements()
    command = [sys.executable, "-m", "pip", "install", "--quiet", *requirements]
    print(
        f"matplotlib is missing; installing the bench extra ({', '.join(requirements)}) into"
        f" {sys.prefix}:\n$ {' '.join(command)}",
        file=sys.stderr,
        flush=True,
    )
    subprocess.run(command, check=True, timeout=600)
    importlib.invalidate_caches()


def _series(target: dict[str, Any], pick: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for level, figures in sorted(target["levels"].items(), key=lambda item: int(item[0])):
        value: Any = figures
        for part in pick.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is not None:
            xs.append(int(level))
            ys.append(float(value))
    return xs, ys


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (ttft, rate) = plt.subplots(1, 2, figsize=(13, 5.2))
    for key, target in result["targets"].items():
        color = COLORS.get(key)
        label = target["label"]
        xs, p50 = _series(target, "ttft_ms.p50")
        ttft.plot(xs, p50, marker="o", color=color, label=f"{label} p50")
        xs, p99 = _series(target, "ttft_ms.p99")
        ttft.plot(xs, p99, marker="x", linestyle="--", color=color, label=f"{label} p99")
        xs, streams = _series(target, "streams_per_s")
        rate.plot(xs, streams, marker="o", color=color, label=label)
    levels = result["config"]["levels"]
    for axis in (ttft, rate):
        axis.set_xscale("log")
        axis.set_xticks(levels, [str(level) for level in levels])
        axis.minorticks_off()
        axis.set_xlabel("concurrent streams")
        axis.grid(True, which="major", alpha=0.3)
    ttft.set_yscale("log")
    ttft.set_ylabel("time to first token (ms, log)")
    ttft.set_title("Time to first token: p50 (solid), p99 (dashed)")
    ttft.legend(fontsize=7, ncol=2)
    rate.set_yscale("log")
    rate.set_ylabel("streams completed per second (log)")
    rate.set_title("Throughput")
    rate.legend(fontsize=8)
    machine = result["machine"]
    sim = result["config"]["simulator"]
    figure.suptitle(
        f"tokenrelay vs peers, {result['date'][:10]}: {machine['cpu']}, {machine['cores']} cores;"
        f" simulator TTFT {sim['ttft_ms']} ms, {sim['tokens']} tokens {sim['token_delay_ms']} ms"
        " apart",
        fontsize=10,
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit("usage: plot.py compare.json [out.png]")
    source = Path(sys.argv[1])
    target = Path(sys.argv[2]) if len(sys.argv) > 2 else source.with_suffix(".png")
    ensure_matplotlib()
    plot(json.loads(source.read_text()), target)
    print(target)


if __name__ == "__main__":
    main()
