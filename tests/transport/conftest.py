"""Fixtures shared by the transport tests."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest


@pytest.fixture
def default_recursion_limit() -> Iterator[None]:
    """Python's default recursion limit for the test: what makes a deep frame a RecursionError.

    Other tests in the same process may have raised the limit (mypy's API does,
    to 2**14), and then a 1,000-deep frame would decode without one.
    """
    before = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)
    yield
    sys.setrecursionlimit(before)
