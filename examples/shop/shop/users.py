"""The users service: accounts, passwords (scrypt) and the claims a login token carries.

The gateway signs the token; this service only says who someone is
(:meth:`Users.authenticate` returns the claims) and never sees a token.  An
admin account is made at start from ``SHOP_ADMIN_EMAIL`` and
``SHOP_ADMIN_PASSWORD`` (demo defaults, printed, when they are unset).
"""

from __future__ import annotations

import logging
import os
import time

import msgspec
from sqlalchemy import Column, Float, MetaData, String, Table, insert, select, update
from sqlalchemy.exc import IntegrityError

from flotilla import AlreadyExists, Database, InvalidArgument, Service, Unauthenticated, rpc

from .auth import ADMIN
from .checks import env_int, invalid, text
from .passwords import ScryptCost, hash_password, verify_password
from .sql import BigInt

log = logging.getLogger("shop.users")

MAX_PASSWORD = 128
DEMO_ADMIN_EMAIL = "admin@shop.example"
DEMO_ADMIN_PASSWORD = "admin-demo-password"

metadata = MetaData()
users = Table(
    "users",
    metadata,
    Column("id", BigInt, primary_key=True, autoincrement=True),
    Column("email", String(254), nullable=False, unique=True),
    Column("name", String(100), nullable=False),
    Column("password_hash", String(200), nullable=False),
    Column("roles", String(200), nullable=False, default=""),
    Column("created_at", Float, nullable=False),
)


class User(msgspec.Struct, frozen=True):
    id: int
    email: str
    name: str


class Claims(msgspec.Struct, frozen=True):
    """What a login token says: the user id as ``sub`` (the JWT claim the gateway signs), and
    the user's roles."""

    sub: str
    roles: list[str]
    email: str


def normalise_email(email: str) -> str:
    """Lower-cased and stripped; refused unless it looks like ``local@domain.tld``."""
    email = text("email", email, max_length=254).lower()
    local, at, domain = email.partition("@")
    if not at or not local or "@" in domain or "." not in domain.strip("."):
        raise invalid("email", "must be an address such as ada@example.com")
    if any(c.isspace() for c in email):
        raise invalid("email", "must not contain blanks")
    return email


def check_password(password: str) -> str:
    if len(password) < 8:
        raise invalid("password", "must be at least 8 characters")
    if len(password) > MAX_PASSWORD:
        raise invalid("password", f"must be at most {MAX_PASSWORD} characters")
    return password


class Users(Service, name="users"):
    db = Database(metadata=metadata)

    def __init__(self, cost: ScryptCost | None = None) -> None:
        self.cost = cost or ScryptCost(log_n=env_int("SHOP_SCRYPT_LOG_N", 14, low=10, high=20))
        # Compared against when the email is unknown, so that answer takes as
        # long as a wrong password (the timing does not tell which emails exist).
        self._decoy = ""

    async def on_start(self) -> None:
        self._decoy = await hash_password("decoy password", self.cost)
        await self._ensure_admin()

    @rpc
    async def create(self, email: str, password: str, name: str) -> User:
        """A new account; ``AlreadyExists`` when the email is taken (compared lower-cased)."""
        email = normalise_email(email)
        password = check_password(password)
        name = text("name", name, max_length=100)
        stored = await hash_password(password, self.cost)
        return await self._insert(email, name, stored, roles=())

    @rpc
    async def authenticate(self, email: str, password: str) -> Claims:
        """The claims of the account with this email and password; ``Unauthenticated`` else
        (the same answer for an unknown email and a wrong password)."""
        wrong = Unauthenticated("wrong email or password")
        if len(password) > MAX_PASSWORD:
            raise wrong  # no account has one; do not spend the KDF on a megabyte
        try:
            email = normalise_email(email)
        except InvalidArgument:
            raise wrong from None
        async with self.db.transaction() as tx:
            row = (await tx.session.execute(select(users).where(users.c.email == email))).first()
        if row is None:
            await verify_password(password, self._decoy)
            raise wrong
        if not await verify_password(password, row.password_hash):
            raise wrong
        roles = [role for role in row.roles.split(",") if role]
        return Claims(sub=str(row.id), roles=roles, email=row.email)

    async def _insert(self, email: str, name: str, stored: str, roles: tuple[str, ...]) -> User:
        row = {"email": email, "name": name, "password_hash": stored}
        try:
            async with self.db.transaction() as tx:
                statement = insert(users).values(
                    **row, roles=",".join(roles), created_at=time.time()
                )
                result = await tx.session.execute(statement.returning(users.c.id))
                user_id = result.scalar_one()
        except IntegrityError:
            raise AlreadyExists(f"email: {email} is already registered") from None
        return User(id=int(user_id), email=email, name=name)

    async def _ensure_admin(self) -> None:
        """Make (or repair) the admin account named by the environment."""
        email = os.environ.get("SHOP_ADMIN_EMAIL", "")
        password = os.environ.get("SHOP_ADMIN_PASSWORD", "")
        if not email or not password:
            email, password = DEMO_ADMIN_EMAIL, DEMO_ADMIN_PASSWORD
            log.warning(
                "users: demo admin account %s, password %s "
                "(set SHOP_ADMIN_EMAIL and SHOP_ADMIN_PASSWORD to choose others)",
                email,
                password,
            )
        email = normalise_email(email)
        stored = await hash_password(check_password(password), self.cost)
        try:
            await self._insert(email, "Admin", stored, roles=(ADMIN,))
        except AlreadyExists:
            # Made by an earlier start, or by another replica just now: make sure
            # it is an admin with the configured password.
            async with self.db.transaction() as tx:
                await tx.session.execute(
                    update(users)
                    .where(users.c.email == email)
                    .values(password_hash=stored, roles=ADMIN)
                )
