"""MkDocs hooks of the docs site (``mkdocs.yml``: ``hooks:``).

Two things the Markdown alone cannot do without drifting: the benchmark report is the
repository's ``BENCHMARKS.md`` (kept at the root, where the bench scripts and tests name it),
included into ``benchmarks.md`` at build time with its plot; and the configuration reference must
match the settings model, so a stale ``configuration.md`` fails the build
(``python docs/gen_config.py`` rewrites it).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
INCLUDE = "<!-- include: BENCHMARKS.md -->"
PLOT = "bench/results/compare.png"


def on_pre_build(config: Any) -> None:
    sys.path.insert(0, str(ROOT / "docs"))
    sys.path.insert(0, str(ROOT / "src"))
    import gen_config

    problem = gen_config.check()
    if problem:
        raise PluginError(problem)


def on_files(files: Files, config: Any) -> Files:
    files.append(File.generated(config, PLOT, abs_src_path=str(ROOT / PLOT)))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    if page.file.src_uri != "benchmarks.md":
        return markdown
    report = (ROOT / "BENCHMARKS.md").read_text(encoding="utf-8")
    title, _, body = report.partition("\n")
    if not title.startswith("# "):
        raise PluginError("BENCHMARKS.md should start with its '# ' title")
    return markdown.replace(INCLUDE, body.strip() + "\n")
