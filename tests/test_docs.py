"""The docs: the README is the front door (short, every link inside the repository and alive), and
the settings reference in docs/configuration.md holds every setting of the model. ``make docs``
checks the site's own links and anchors (``mkdocs build --strict``)."""

from __future__ import annotations

import importlib.util
import re
import sys
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import msgspec

from tokenrelay.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
_spec = importlib.util.spec_from_file_location("gen_config", ROOT / "docs" / "gen_config.py")
assert _spec and _spec.loader
gen_config = importlib.util.module_from_spec(_spec)
sys.modules["gen_config"] = gen_config  # its dataclass looks itself up there
_spec.loader.exec_module(gen_config)

LINK = re.compile(r"\]\(([^)\s]+)\)|<(https?://[^>]+)>")
URL = re.compile(r"https?://[^\s)>\]'\"`]+")
LOCAL = re.compile(r"https?://(127\.0\.0\.1|localhost)[:/]")


def leaves(info: msgspec.inspect.Type, path: str) -> Iterator[str]:
    """Every setting's path, walked with msgspec's own type inspection (not gen_config's walk)."""
    if isinstance(info, msgspec.inspect.UnionType):
        structs = [t for t in info.types if isinstance(t, msgspec.inspect.StructType)]
        if structs:
            yield path
            yield from leaves(structs[0], path)
            return
    if isinstance(info, msgspec.inspect.StructType):
        for field in info.fields:
            yield from leaves(field.type, f"{path}.{field.name}" if path else field.name)
        return
    if isinstance(info, msgspec.inspect.DictType) and isinstance(
        info.value_type, msgspec.inspect.StructType
    ):
        yield from leaves(info.value_type, f"{path}.<name>")  # a table: its own heading
        return
    if isinstance(info, msgspec.inspect.ListType) and isinstance(
        info.item_type, msgspec.inspect.StructType
    ):
        yield path
        yield from leaves(info.item_type, f"{path}[]")
        return
    yield path


def test_the_settings_reference_is_current() -> None:
    assert gen_config.check() is None


def test_every_setting_is_in_the_reference() -> None:
    page = gen_config.PAGE.read_text(encoding="utf-8")
    paths = list(leaves(msgspec.inspect.type_info(Settings), ""))
    assert "routes.<name>.screen.threshold" in paths and "auth.jwt.secret" in paths
    shown = [
        path
        for path in paths
        if not any(path.startswith(hidden + "[]") for hidden in gen_config.NOT_EXPANDED)
    ]
    missing = [path for path in shown if f"| `{path}` |" not in page]
    assert not missing, f"docs/configuration.md lacks {missing}: run python docs/gen_config.py"


def test_the_readme_is_the_front_door() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    assert "make serve" in text and "make test" in text
    outside = [url for url in URL.findall(text) if not LOCAL.match(url)]
    assert not outside, f"the README points outside the repository: {outside}"


def slugify(title: str) -> str:
    """A heading's anchor as Python-Markdown's ``toc`` makes it (what MkDocs links to)."""
    text = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def headings(page: Path) -> set[str]:
    text, fence = [], False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fence = not fence
        elif not fence and line.startswith("#"):
            text.append(slugify(line.lstrip("#").strip()))
    return set(text)


def test_every_readme_link_leads_somewhere() -> None:
    text = README.read_text(encoding="utf-8")
    links = [m.group(1) for m in LINK.finditer(text) if m.group(1)]
    assert any(link.startswith("docs/") for link in links)
    for link in links:
        if LOCAL.match(link):
            continue
        target, _, anchor = link.partition("#")
        page = ROOT / target if target else README
        assert page.exists(), f"the README links to {target}, which does not exist"
        if anchor:
            assert anchor in headings(page), f"the README links to {link}: no such heading"
