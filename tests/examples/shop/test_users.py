"""Users: accounts, normalised emails, the claims of a login, the admin account."""

from __future__ import annotations

import pytest
from shop.passwords import verify_password
from shop.users import DEMO_ADMIN_EMAIL, DEMO_ADMIN_PASSWORD, Users, users
from sqlalchemy import select
from tests.examples.shop.kit import CHEAP_KDF

from flotilla import AlreadyExists, InvalidArgument, Unauthenticated
from flotilla.testing import Cluster


async def test_an_account_logs_in_with_its_normalised_email() -> None:
    async with Cluster() as cluster:
        await cluster.add(Users(cost=CHEAP_KDF))
        client = cluster.client(Users)
        user = await client.create(email="  Ada@Example.COM ", password="correct horse", name="Ada")
        assert (user.email, user.name) == ("ada@example.com", "Ada")

        claims = await client.authenticate(email="ADA@example.com", password="correct horse")
        assert (claims.sub, claims.roles) == (str(user.id), [])
        with pytest.raises(AlreadyExists, match=r"email: ada@example\.com is already registered"):
            await client.create(email="ada@EXAMPLE.com", password="another one", name="Eve")


async def test_a_wrong_password_and_an_unknown_email_get_one_answer() -> None:
    async with Cluster() as cluster:
        await cluster.add(Users(cost=CHEAP_KDF))
        client = cluster.client(Users)
        await client.create(email="ada@example.com", password="correct horse", name="Ada")
        for email, password in [
            ("ada@example.com", "wrong horse"),
            ("bob@example.com", "correct horse"),
            ("not an email", "correct horse"),
        ]:
            with pytest.raises(Unauthenticated, match=r"^wrong email or password$"):
                await client.authenticate(email=email, password=password)


@pytest.mark.parametrize(
    ("email", "password", "name", "field"),
    [
        ("ada", "correct horse", "Ada", "email"),
        ("ada@localhost", "correct horse", "Ada", "email"),
        ("a b@example.com", "correct horse", "Ada", "email"),
        ("ada@example.com", "short", "Ada", "password"),
        ("ada@example.com", "x" * 129, "Ada", "password"),
        ("ada@example.com", "correct horse", "   ", "name"),
    ],
)
async def test_bad_input_is_refused_naming_the_field(
    email: str, password: str, name: str, field: str
) -> None:
    async with Cluster() as cluster:
        await cluster.add(Users(cost=CHEAP_KDF))
        with pytest.raises(InvalidArgument, match=f"^{field}: ") as caught:
            await cluster.client(Users).create(email=email, password=password, name=name)
        assert caught.value.details == {"field": field}


async def test_passwords_are_stored_as_scrypt_hashes() -> None:
    async with Cluster() as cluster:
        service = Users(cost=CHEAP_KDF)
        await cluster.add(service)
        await cluster.client(Users).create(
            email="ada@example.com", password="correct horse", name="Ada"
        )
        async with service.db.transaction() as tx:
            query = select(users.c.password_hash).where(users.c.email == "ada@example.com")
            stored = (await tx.session.execute(query)).scalar_one()
        assert stored.startswith("scrypt$4$8$1$")
        assert "correct horse" not in stored
        assert await verify_password("correct horse", stored)


async def test_the_demo_admin_exists_when_none_is_configured(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("SHOP_ADMIN_EMAIL", raising=False)
    async with Cluster() as cluster:
        await cluster.add(Users(cost=CHEAP_KDF))
        claims = await cluster.client(Users).authenticate(
            email=DEMO_ADMIN_EMAIL, password=DEMO_ADMIN_PASSWORD
        )
        assert claims.roles == ["admin"]
    assert DEMO_ADMIN_PASSWORD in caplog.text  # printed at start, for the demo's user


async def test_the_admin_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOP_ADMIN_EMAIL", "Boss@Shop.Example")
    monkeypatch.setenv("SHOP_ADMIN_PASSWORD", "s3cret-enough")
    async with Cluster() as cluster:
        await cluster.add(Users(cost=CHEAP_KDF))
        client = cluster.client(Users)
        claims = await client.authenticate(email="boss@shop.example", password="s3cret-enough")
        assert claims.roles == ["admin"]
        with pytest.raises(Unauthenticated):
            await client.authenticate(email=DEMO_ADMIN_EMAIL, password=DEMO_ADMIN_PASSWORD)
