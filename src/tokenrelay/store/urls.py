"""Database and Redis URLs: which backend a URL names, and the URL as it may be shown in a log.

``redact_url`` is the one place a connection URL loses its secrets before it is logged or put in
a message: the password of its user info, and every query parameter that carries one
(``?password=``, ``?sslpassword=``, ``?passfile=``, a token), which libpq and redis-py accept as
well as the user info.
"""

from __future__ import annotations

import contextlib
import os
import re
from typing import Literal
from urllib.parse import unquote, urlsplit, urlunsplit

Backend = Literal["sqlite", "postgresql"]

MASK = "***"
# A query parameter (or a libpq keyword) whose value is a secret, or the path of a file of them.
_SECRET_NAME = re.compile(r"pass|secret|token|credential", re.IGNORECASE)
# libpq's keyword form: ``host=db password='s e c' sslpassword=x``.
_KEYWORD = re.compile(r"(\b\w*(?:pass|secret|token)\w*\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.I)


def redact_url(url: str) -> str:
    """``url`` with its password and secret query parameters replaced by ``***`` (the user
    name, host, database and other parameters kept, so the message still says where)."""
    if "://" not in url:
        return _KEYWORD.sub(rf"\g<1>{MASK}", url)
    try:
        parts = urlsplit(url)
    except ValueError:  # unparsable (a bad IPv6 host): keep only the scheme
        return url.partition("://")[0] + "://" + MASK
    userinfo, at, host = parts.netloc.rpartition("@")
    if at and ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":" + MASK
    query = "&".join(_redact_parameter(item) for item in parts.query.split("&"))
    netloc = f"{userinfo}@{host}" if at else host
    return urlunsplit(parts._replace(netloc=netloc, query=query if parts.query else ""))


def _redact_parameter(item: str) -> str:
    name, equals, _ = item.partition("=")
    if equals and _SECRET_NAME.search(unquote(name)):
        return f"{name}={MASK}"
    return item


def parse_url(url: str) -> tuple[Backend, str]:
    """``(backend, target)``: a SQLite file path (or ``:memory:``) or a libpq URL.

    ``sqlite:///rel/path.db`` is relative to the working directory and ``sqlite:////abs/path.db``
    absolute (SQLAlchemy's convention); a plain path is a SQLite file too.
    """
    url = url.strip()
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme in ("postgresql", "postgres"):
        return "postgresql", url
    if scheme == "sqlite":
        rest = url[len("sqlite://") :].split("?", 1)[0]
        if rest in ("", "/", "/:memory:"):
            return "sqlite", ":memory:"
        return "sqlite", os.path.expanduser(rest[1:] if rest.startswith("/") else rest)
    if scheme:
        raise ValueError(
            f"unsupported database URL {display_url(url)!r}: use sqlite:///path/to/file.db, "
            "a plain file path, or postgresql://user@host/dbname"
        )
    if not url:
        raise ValueError("the database URL is empty")
    return "sqlite", os.path.expanduser(url)


def display_url(url: str) -> str:
    """The URL without its secrets (``redact_url``), for logs and messages; a SQLite file as
    its absolute path."""
    if "://" not in url or url.lower().startswith("sqlite:"):
        with contextlib.suppress(ValueError):
            _, path = parse_url(url)
            return path if path == ":memory:" else redact_url(os.path.abspath(path))
    return redact_url(url)
