"""API keys at the door: FastAPI dependencies that want a key of a role (see :mod:`.keys`)."""

# No ``from __future__ import annotations``: FastAPI reads the ``Annotated`` dependencies
# at definition time.
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import HTTPException, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from streams.serve.keys import KeyEntry, Role
from streams.serve.wiring import ServeContext

_API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key.")
_BEARER = HTTPBearer(auto_error=False, description="The API key as a bearer token.")


class Auth:
    """FastAPI dependencies that want a key of a role; the entry is the caller (the actor)."""

    def __init__(self, context: ServeContext) -> None:
        self.context = context

    def needs(self, role: Role) -> Callable[..., Awaitable[KeyEntry]]:
        keys = self.context.keys

        async def check(
            api_key: Annotated[str | None, Security(_API_KEY)] = None,
            bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)] = None,
        ) -> KeyEntry:
            presented = api_key or (bearer.credentials if bearer is not None else None)
            if not presented:
                raise HTTPException(
                    401,
                    "an API key is needed: send it as X-API-Key or Authorization: Bearer",
                    headers={"WWW-Authenticate": "Bearer"},
                )
            entry, known = keys.lookup(presented)
            if entry is not None and not known:
                verified = await run_in_threadpool(keys.verify, presented, entry)
                entry = entry if verified else None
            if entry is None:
                raise HTTPException(
                    401, "unknown or revoked API key", headers={"WWW-Authenticate": "Bearer"}
                )
            if not entry.allows(role):
                raise HTTPException(403, f"key {entry.name!r} is a {entry.role} key; {role} needed")
            return entry

        return check

    def scoring(self) -> Callable[..., Awaitable[KeyEntry | None]]:
        if self.context.settings.serve.require_key_for_scoring:
            return self.needs("reader")

        async def open_door() -> None:
            return None

        return open_door
