"""OAuth access tokens of a Google service account, refreshed before they expire.

google-auth signs the service account's assertion and trades it at the key file's
``token_uri``; that is blocking I/O, so it runs in a thread, one refresh at a time. A request
takes the token in hand while a fresh one is fetched in the background once less than
``_REFRESH_BEFORE`` (or half the token's lifetime, for short-lived ones) remains; it waits only
when there is no token yet or the one in hand has (all but) expired. google-auth is imported
here only, when a provider of kind ``vertex`` is configured: ``pip install 'tokenrelay[gcp]'``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import UTC
from typing import Any

from tokenrelay.transports.base import CredentialsError

log = logging.getLogger("tokenrelay.providers")

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
_REFRESH_BEFORE = 300.0  # seconds of validity left when a background refresh starts
_EXPIRED_WITHIN = 10.0  # seconds: a token this close to its end is as good as expired
_FIELDS = ("client_email", "private_key", "token_uri")


def read_service_account(path: str) -> dict[str, Any]:
    """The key file's fields; a ``ValueError`` naming ``credentials_file`` for one that will
    not do (unreadable, not JSON, not a service account's, google-auth missing)."""
    try:
        with open(path, encoding="utf-8") as file:
            info = json.load(file)
    except OSError as exc:
        raise ValueError(f"credentials_file {path!r} cannot be read: {exc.strerror}") from None
    except ValueError:
        raise ValueError(f"credentials_file {path!r} is not JSON") from None
    if not isinstance(info, dict) or info.get("type") != "service_account":
        raise ValueError(
            f"credentials_file {path!r} is not a service account key "
            '("type": "service_account"); create one in IAM & Admin > Service accounts > Keys'
        )
    missing = [field for field in _FIELDS if not info.get(field)]
    if missing:
        raise ValueError(f"credentials_file {path!r} lacks {', '.join(missing)}")
    try:
        import google.auth  # noqa: F401
    except ImportError:
        raise ValueError(
            "a service account (credentials_file) needs google-auth: pip install 'tokenrelay[gcp]'"
        ) from None
    return info


class ServiceAccountToken:
    """The bearer header of one service account, kept fresh (``TokenSource``)."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._credentials: Any = None
        self._http: Any = None
        self._token: str | None = None
        self._expires_at = 0.0  # wall-clock seconds, as the token endpoint's expiry is
        self._refresh_at = 0.0
        self._expired_at = 0.0
        self._refreshing: asyncio.Task[None] | None = None

    async def headers(self) -> dict[str, str]:
        now = time.time()
        if self._token is None or now >= self._expired_at:
            await asyncio.shield(self._refresh())
        elif now >= self._refresh_at and self._refreshing is None:
            self._refresh()  # in the background; this request uses the token in hand
        return {"authorization": f"Bearer {self._token}"}

    def _refresh(self) -> asyncio.Task[None]:
        """The refresh in flight, started if there is none."""
        if self._refreshing is None:
            self._refreshing = asyncio.create_task(self._fetch())
            self._refreshing.add_done_callback(_observed)
        return self._refreshing

    async def _fetch(self) -> None:
        try:
            token, expires_at = await asyncio.to_thread(self._blocking_refresh)
        except Exception as exc:
            reason = f"could not get an access token for the service account: {exc}"
            if self._token is not None and time.time() < self._expires_at:
                log.warning(
                    "%s (%s); the token in hand serves until it expires", reason, self._path
                )
                return
            log.error("%s (%s)", reason, self._path)
            raise CredentialsError(reason) from None
        finally:
            self._refreshing = None
        now = time.time()
        lifetime = max(0.0, expires_at - now)
        self._token = token
        self._expires_at = expires_at
        self._refresh_at = expires_at - min(_REFRESH_BEFORE, lifetime / 2)
        self._expired_at = expires_at - min(_EXPIRED_WITHIN, lifetime / 10)

    def _blocking_refresh(self) -> tuple[str, float]:
        """One token and its expiry (seconds since the epoch); runs in a worker thread."""
        if self._credentials is None:
            import google.auth.transport.requests
            from google.oauth2 import service_account

            self._credentials = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
                read_service_account(self._path), scopes=[SCOPE]
            )
            self._http = google.auth.transport.requests.Request()
        credentials = self._credentials
        credentials.refresh(self._http)
        expiry = credentials.expiry  # naive UTC
        expires_at = expiry.replace(tzinfo=UTC).timestamp() if expiry else time.time() + 3600
        return str(credentials.token), expires_at


def _observed(task: asyncio.Task[None]) -> None:
    """A background refresh's failure is logged by ``_fetch``; retrieving it here keeps asyncio
    from reporting it again as never retrieved."""
    if not task.cancelled():
        task.exception()
