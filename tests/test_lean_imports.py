"""``lean_imports``: a package registered without running its ``__init__``: its submodules import
as usual, the names it binds come from the real ``__init__`` at their first use."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tokenrelay.lean_imports import register_lazily, source_version

INIT = """\
__version__ = "1.2.3"
RAN.append("init")
from leanpkg_probe.server import Server as Server
from leanpkg_probe import cli as cli  # what the lazy registration spares
"""


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    root = tmp_path / "leanpkg_probe"
    root.mkdir()
    (root / "__init__.py").write_text("import builtins\nRAN = builtins.LEAN_RAN\n" + INIT)
    (root / "server.py").write_text("class Server:\n    pass\n")
    (root / "cli.py").write_text("import builtins\nbuiltins.LEAN_RAN.append('cli')\n")
    ran: list[str] = []
    monkeypatch.setattr("builtins.LEAN_RAN", ran, raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield ran
    for name in [name for name in sys.modules if name.startswith("leanpkg_probe")]:
        del sys.modules[name]


def test_submodules_import_without_the_init_and_its_names_run_it(package: list[str]) -> None:
    assert source_version("leanpkg_probe") == "1.2.3"
    assert register_lazily("leanpkg_probe", __version__="1.2.3")
    from leanpkg_probe import server  # type: ignore[import-not-found]  # a submodule, as usual

    assert server.Server.__name__ == "Server" and package == []  # no __init__, no cli
    import leanpkg_probe

    assert leanpkg_probe.__version__ == "1.2.3" and package == []  # bound at registration
    assert leanpkg_probe.Server is server.Server  # a name only __init__ binds: it runs now
    assert package == ["init", "cli"]
    assert not register_lazily("leanpkg_probe")  # already there: left as it is
