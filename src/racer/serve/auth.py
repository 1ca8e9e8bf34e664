"""Gateway API keys: who is calling, and whether they are an admin (bearer tokens)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException

_BEARER = HTTPBearer(auto_error=False, description="A gateway API key.")


def key_fingerprint(key: str) -> str:
    """What the decision log stores of the key that made a request (never the key)."""
    return hashlib.sha256(key.encode()).hexdigest()[:32]


class Caller:
    """Who is calling: the fingerprint of their key, and whether it is an admin key."""

    def __init__(self, owner: str | None, admin: bool):
        self.owner = owner
        self.admin = admin


class BearerKeys:
    """FastAPI dependency: 401 unless the request carries an accepted token.

    Parameters
    ----------
    accepted : frozenset of str
        Client tokens.
    admin : frozenset of str, optional
        Admin tokens (accepted everywhere).
    admin_only : bool, default False
        Accept admin tokens only. When no key at all is configured (an
        unauthenticated demo), everyone is admin.
    """

    def __init__(
        self,
        accepted: frozenset[str],
        admin: frozenset[str] = frozenset(),
        admin_only: bool = False,
    ):
        self._open = not accepted and not admin
        self._admin = [key.encode() for key in admin]
        self._accepted = [] if admin_only else [key.encode() for key in accepted]

    async def __call__(
        self, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]
    ) -> Caller:
        if self._open:
            return Caller(None, True)
        token = credentials.credentials.encode() if credentials else b""
        is_admin = False
        for key in self._admin:  # every comparison runs: no timing signal of which matched
            is_admin |= hmac.compare_digest(token, key)
        is_client = False
        for key in self._accepted:
            is_client |= hmac.compare_digest(token, key)
        if not (is_admin or is_client):
            raise HTTPException(401, "Missing or invalid gateway API key (Authorization: Bearer).")
        return Caller(key_fingerprint(token.decode()), is_admin)


def optional_admin(
    admin: frozenset[str], accepted: frozenset[str]
) -> Callable[..., Awaitable[bool]]:
    """FastAPI dependency: whether the request carries an admin key (never a 401)."""
    keys = BearerKeys(accepted, admin, admin_only=True)

    async def is_admin(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)],
    ) -> bool:
        try:
            return (await keys(credentials)).admin
        except HTTPException:
            return False

    return is_admin
