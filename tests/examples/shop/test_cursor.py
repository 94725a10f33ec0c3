"""Page cursors: issued ones read back; edited, forged or misplaced ones are refused."""

from __future__ import annotations

import pytest
from shop.cursor import CursorSigner, PageCursor

from flotilla import InvalidArgument


def test_an_issued_cursor_reads_back() -> None:
    signer = CursorSigner(b"k" * 32)
    token = signer.issue(PageCursor("tea", 42))
    assert signer.read(token, "tea") == PageCursor("tea", 42)


@pytest.mark.parametrize("token", ["", "abc", "abc.def", "..", "e30.e30"])
def test_a_cursor_never_issued_is_refused(token: str) -> None:
    with pytest.raises(InvalidArgument, match="cursor: is not a cursor this catalog issued"):
        CursorSigner(b"k" * 32).read(token, None)


def test_an_edited_or_foreign_cursor_is_refused() -> None:
    signer = CursorSigner(b"k" * 32)
    payload, tag = signer.issue(PageCursor(None, 5)).split(".")
    forged = CursorSigner(b"x" * 32).issue(PageCursor(None, 5))
    for token in (f"{payload}A.{tag}", forged):
        with pytest.raises(InvalidArgument, match="not a cursor this catalog issued"):
            signer.read(token, None)
    with pytest.raises(InvalidArgument, match="cursor: was issued for another category"):
        signer.read(signer.issue(PageCursor("tea", 5)), "cups")
