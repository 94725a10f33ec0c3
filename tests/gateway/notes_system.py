"""A tiny system behind a gateway, for the gateway's tests: notes owned by users, and a login."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import msgspec

from flotilla import Context, NotFound, Service, Unauthenticated, rpc
from flotilla.gateway import Route, TokenRoute
from flotilla.gateway.auth import TokenSettings

SECRET = "test-secret-test-secret-test-secret-0123"
TOKENS = TokenSettings(secret=SECRET, audience="notes", issuer="flotilla-test", ttl=600)


class Note(msgspec.Struct):
    id: int
    owner: str
    text: str


class Notes(Service, name="notes"):
    def __init__(self) -> None:
        self.notes: dict[int, Note] = {}
        self.by_key: dict[tuple[str, str], int] = {}

    @rpc
    async def create(
        self,
        owner: str,
        text: Annotated[str, msgspec.Meta(min_length=1, max_length=100)],
        idempotency_key: str | None = None,
    ) -> Note:
        if idempotency_key is not None and (owner, idempotency_key) in self.by_key:
            return self.notes[self.by_key[owner, idempotency_key]]
        note = Note(id=len(self.notes) + 1, owner=owner, text=text)
        self.notes[note.id] = note
        if idempotency_key is not None:
            self.by_key[owner, idempotency_key] = note.id
        return note

    @rpc(idempotent=True)
    async def get(self, ctx: Context, owner: str, note_id: int) -> Note:
        note = self.notes.get(note_id)
        admin = ctx.principal is not None and "admin" in ctx.principal.roles
        if note is None or (note.owner != owner and not admin):
            raise NotFound(f"no note {note_id}")
        return note

    @rpc(idempotent=True)
    async def search(
        self,
        text: str = "",
        limit: Annotated[int, msgspec.Meta(ge=1, le=100)] = 10,
        tags: list[str] | None = None,
        exact: bool = False,
    ) -> dict[str, Any]:
        found = [n for n in self.notes.values() if (n.text == text if exact else text in n.text)]
        return {"items": found[:limit], "tags": tags or []}

    @rpc
    async def slow(self, seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "done"

    @rpc
    async def crash(self) -> None:
        raise RuntimeError("a detail that must not leak")

    @rpc
    async def whoami(self, ctx: Context) -> dict[str, Any]:
        principal = ctx.principal
        return {
            "subject": principal.subject if principal else None,
            "roles": list(principal.roles) if principal else [],
            "request_id": ctx.request_id,
            "trace": ctx.headers.trace,
        }


class Users(Service, name="users"):
    @rpc
    async def authenticate(self, email: str, password: str) -> dict[str, Any]:
        if password != "pw":
            raise Unauthenticated("bad email or password")
        roles = ["admin"] if email.startswith("admin") else []
        return {"sub": email, "roles": roles}

    @rpc
    async def broken_login(self) -> dict[str, Any]:
        return {"user": "no sub here"}


ROUTES = [
    Route(
        "POST",
        "/notes",
        "notes.create",
        status=201,
        auth="user",
        principal_arg="owner",
        headers={"Idempotency-Key": "idempotency_key"},
    ),
    Route(
        "GET",
        "/notes/{id}",
        "notes.get",
        auth="user",
        path={"id": "note_id"},
        principal_arg="owner",
    ),
    Route("GET", "/notes", "notes.search", query=["text", "limit", "tags", "exact"]),
    Route("POST", "/slow", "notes.slow", timeout=0.2),
    Route("GET", "/crash", "notes.crash"),
    Route("GET", "/whoami", "notes.whoami", auth="user"),
    Route("GET", "/admin/whoami", "notes.whoami", auth="admin"),
    TokenRoute("POST", "/auth/token", "users.authenticate"),
    TokenRoute("POST", "/auth/broken", "users.broken_login"),
]
