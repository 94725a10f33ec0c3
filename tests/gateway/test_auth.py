"""Bearer tokens: issued by the login route, refused for every way a token can be wrong."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable

import httpx
import jwt
import pytest

from flotilla.errors import ConfigError, PermissionDenied, Unauthenticated
from flotilla.gateway.auth import Tokens, TokenSettings, authorize
from flotilla.headers import Principal

from .notes_system import SECRET, TOKENS


def claims(**overrides: object) -> dict[str, object]:
    now = int(time.time())
    base: dict[str, object] = {
        "sub": "ada",
        "exp": now + 60,
        "aud": "notes",
        "iss": "flotilla-test",
        "roles": [],
    }
    return {**base, **overrides}


def none_alg_token() -> str:
    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims())}."


BAD_TOKENS = {
    "expired": jwt.encode(claims(exp=int(time.time()) - 5), SECRET, algorithm="HS256"),
    "forged": jwt.encode(claims(), "another-secret-another-secret-012345", algorithm="HS256"),
    "alg none": none_alg_token(),
    "wrong audience": jwt.encode(claims(aud="billing"), SECRET, algorithm="HS256"),
    "wrong issuer": jwt.encode(claims(iss="someone"), SECRET, algorithm="HS256"),
    "no subject": jwt.encode({k: v for k, v in claims().items() if k != "sub"}, SECRET),
    "HS512": jwt.encode(claims(), SECRET + SECRET, algorithm="HS512"),
    "garbage": "not.a.token",
}


@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
async def test_a_bad_token_is_401(client: httpx.AsyncClient, kind: str) -> None:
    response = await client.get("/whoami", headers={"Authorization": f"Bearer {BAD_TOKENS[kind]}"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"


async def test_no_token_or_another_scheme_is_401(client: httpx.AsyncClient) -> None:
    missing = await client.get("/whoami")
    assert missing.status_code == 401
    assert "bearer token" in missing.json()["error"]["message"]
    basic = await client.get("/whoami", headers={"Authorization": "Basic YWRhOnB3"})
    assert basic.status_code == 401


async def test_a_role_route_is_403_without_the_role(
    client: httpx.AsyncClient, token: Callable[..., str]
) -> None:
    user = await client.get("/admin/whoami", headers={"Authorization": token("ada")})
    assert user.status_code == 403
    assert user.json()["error"] == {
        "code": "permission_denied",
        "message": "this route needs the role 'admin'",
    }
    admin = await client.get("/admin/whoami", headers={"Authorization": token("root", ("admin",))})
    assert admin.status_code == 200
    assert admin.json()["roles"] == ["admin"]


async def test_a_login_returns_a_token_that_the_gateway_accepts(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/auth/token", json={"email": "admin@x", "password": "pw"})
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 600
    who = await client.get(
        "/admin/whoami", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert who.json()["subject"] == "admin@x"


async def test_bad_credentials_are_401(client: httpx.AsyncClient) -> None:
    response = await client.post("/auth/token", json={"email": "a@x", "password": "nope"})
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "bad email or password"


async def test_a_login_method_without_a_subject_is_an_internal_error_that_says_nothing(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/auth/broken", headers={"X-Request-Id": "r-1"})
    assert response.status_code == 500
    assert response.json() == {
        "error": {"code": "internal", "message": "internal error (request id r-1)"}
    }


def test_an_issued_token_expires_after_its_ttl() -> None:
    now = [1_000_000.0]
    tokens = Tokens(TOKENS, now=lambda: now[0])
    token = tokens.issue("ada", ("admin",))
    claims = jwt.decode(
        token, SECRET, algorithms=["HS256"], audience="notes", options={"verify_exp": False}
    )
    assert claims["exp"] - claims["iat"] == 600
    assert claims["roles"] == ["admin"]


def test_extra_claims_cannot_override_the_signed_ones() -> None:
    tokens = Tokens(TOKENS)
    token = tokens.issue("ada", (), {"exp": 1, "aud": "evil", "plan": "pro"})
    assert tokens.verify(token) == Principal("ada", ())
    decoded = jwt.decode(token, SECRET, algorithms=["HS256"], audience="notes")
    assert decoded["plan"] == "pro"


def test_settings_refuse_a_short_secret_and_asymmetric_algorithms() -> None:
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        TokenSettings(secret="short")
    with pytest.raises(ConfigError, match="HS256"):
        TokenSettings(secret=SECRET, algorithm="none")


def test_authorize() -> None:
    authorize(None, None)
    authorize("user", Principal("ada"))
    with pytest.raises(Unauthenticated):
        authorize("user", None)
    with pytest.raises(PermissionDenied):
        authorize("admin", Principal("ada", ("staff",)))
