"""The admin API's settings (``admin.*``)."""

from __future__ import annotations

from typing import Annotated

import msgspec


class AdminSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The admin API under /admin/v1/ (docs/admin-api.md)."""

    enabled: bool = True  # serve /admin/v1/ (keys with an admin role still needed for any call)
    # An environment variable holding a bootstrap admin key, hashed at start-up (any string of
    # 32+ characters); changes made with it are recorded with actor "bootstrap". Empty: none.
    bootstrap_key_env: str = "TOKENRELAY_ADMIN_KEY"
    # With auth.jwt configured, the JWT claim carrying the admin role (admin, org_admin, reader);
    # the org comes from auth.jwt.org_claim. None: JWTs are never admin credentials.
    jwt_role_claim: str | None = None
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1024, le=1_048_576)] = 65_536  # per request
