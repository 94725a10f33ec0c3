"""Password hashing with scrypt (``hashlib.scrypt``, in the standard library).

Why scrypt: it is a memory-hard KDF (each guess costs 16 MiB as well as CPU,
which is what makes GPU and ASIC cracking expensive), it ships with Python so
the shop needs no C extension, and every hash records its own parameters, so
the cost can be raised later without invalidating stored passwords.  The
default, N=2**14, r=8, p=1, is the scrypt paper's interactive-login setting
(about 0.1 s of one core on a small machine); argon2id would be the other good
choice.  Hashing runs in a worker thread, so a login never stalls the event loop.

Stored form: ``scrypt$<log2 N>$<r>$<p>$<salt hex>$<key hex>``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os

import msgspec

__all__ = ["ScryptCost", "hash_password", "verify_password"]

_KEY_BYTES = 32
_SALT_BYTES = 16


class ScryptCost(msgspec.Struct, frozen=True):
    """scrypt's work factors: N = 2**log_n, block size r, parallelism p."""

    log_n: int = 14
    r: int = 8
    p: int = 1


def _derive(password: str, salt: bytes, cost: ScryptCost) -> bytes:
    n = 2**cost.log_n
    return hashlib.scrypt(
        password.encode(),
        salt=salt,
        n=n,
        r=cost.r,
        p=cost.p,
        maxmem=256 * n * cost.r + 2**20,  # scrypt needs 128*N*r bytes; leave room
        dklen=_KEY_BYTES,
    )


async def hash_password(password: str, cost: ScryptCost) -> str:
    """The stored form of ``password``, with a fresh salt."""
    salt = os.urandom(_SALT_BYTES)
    key = await asyncio.to_thread(_derive, password, salt, cost)
    return f"scrypt${cost.log_n}${cost.r}${cost.p}${salt.hex()}${key.hex()}"


async def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` is the one ``stored`` was made from (constant-time compare)."""
    try:
        scheme, log_n, r, p, salt, key = stored.split("$")
        cost = ScryptCost(int(log_n), int(r), int(p))
        expected = bytes.fromhex(key)
        salt_bytes = bytes.fromhex(salt)
    except ValueError:
        return False  # not a hash this module made: no password matches it
    if scheme != "scrypt":
        return False
    derived = await asyncio.to_thread(_derive, password, salt_bytes, cost)
    return hmac.compare_digest(derived, expected)
