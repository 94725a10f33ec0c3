"""Opaque page cursors: the catalog signs where a page ended, so it knows its own cursors.

A cursor is ``<payload>.<tag>``: the payload (base64url of msgpack) says
which listing it continues and after which id; the tag is an HMAC-SHA256 of
it under the catalog's key (kept in its database, so every replica shares it).
Anything else, a cursor edited, forged, or made for another category, is
refused as invalid, never trusted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

import msgspec

from .checks import invalid

__all__ = ["CursorSigner", "PageCursor"]

_TAG_BYTES = 16


class PageCursor(msgspec.Struct, frozen=True, array_like=True):
    category: str | None
    after_id: int


class CursorSigner:
    """Issues and reads the cursors of one key."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def issue(self, cursor: PageCursor) -> str:
        payload = base64.urlsafe_b64encode(msgspec.msgpack.encode(cursor)).rstrip(b"=")
        return f"{payload.decode()}.{self._tag(payload)}"

    def read(self, token: str, category: str | None) -> PageCursor:
        """The cursor ``token`` stands for; ``InvalidArgument`` unless this signer issued it
        for ``category``."""
        payload, _, tag = token.partition(".")
        if not hmac.compare_digest(tag.encode(), self._tag(payload.encode()).encode()):
            raise invalid("cursor", "is not a cursor this catalog issued")
        try:
            raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
            cursor = msgspec.msgpack.decode(raw, type=PageCursor)
        except (binascii.Error, ValueError, msgspec.ValidationError):
            raise invalid("cursor", "is not a cursor this catalog issued") from None
        if cursor.category != category:
            raise invalid("cursor", "was issued for another category")
        return cursor

    def _tag(self, payload: bytes) -> str:
        digest = hmac.new(self._key, payload, hashlib.sha256).digest()[:_TAG_BYTES]
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
