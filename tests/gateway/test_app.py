"""Routes to RPC over real HTTP: statuses, arguments, and every class of bad input."""

from __future__ import annotations

from collections.abc import Callable

import httpx


def error(response: httpx.Response) -> tuple[int, str, str]:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    return response.status_code, body["error"]["code"], body["error"]["message"]


async def test_a_post_creates_with_the_routes_status_and_the_principal_as_owner(
    client: httpx.AsyncClient, token: Callable[..., str]
) -> None:
    response = await client.post("/notes", json={"text": "hi"}, headers={"Authorization": token()})
    assert response.status_code == 201
    assert response.json() == {"id": 1, "owner": "ada", "text": "hi"}
    fetched = await client.get("/notes/1", headers={"Authorization": token()})
    assert fetched.status_code == 200
    assert fetched.json()["text"] == "hi"


async def test_the_body_cannot_set_an_argument_the_route_binds(
    client: httpx.AsyncClient, token: Callable[..., str]
) -> None:
    response = await client.post(
        "/notes", json={"text": "x", "owner": "grace"}, headers={"Authorization": token()}
    )
    status, code, message = error(response)
    assert (status, code) == (422, "invalid_argument")
    assert "'owner'" in message


async def test_an_idempotency_key_header_is_passed_on(
    client: httpx.AsyncClient, token: Callable[..., str]
) -> None:
    headers = {"Authorization": token(), "Idempotency-Key": "k1"}
    first = await client.post("/notes", json={"text": "once"}, headers=headers)
    again = await client.post("/notes", json={"text": "once"}, headers=headers)
    assert first.json() == again.json() == {"id": 1, "owner": "ada", "text": "once"}


async def test_an_unknown_id_is_404_and_another_users_note_too(
    client: httpx.AsyncClient, token: Callable[..., str]
) -> None:
    await client.post("/notes", json={"text": "mine"}, headers={"Authorization": token("ada")})
    assert error(await client.get("/notes/9", headers={"Authorization": token()}))[:2] == (
        404,
        "not_found",
    )
    other = await client.get("/notes/1", headers={"Authorization": token("grace")})
    assert other.status_code == 404
    admin = await client.get("/notes/1", headers={"Authorization": token("root", ("admin",))})
    assert admin.status_code == 200


async def test_query_parameters_are_converted_to_the_parameters_types(
    client: httpx.AsyncClient, token: Callable[..., str]
) -> None:
    for text in ("apple", "apricot", "banana"):
        await client.post("/notes", json={"text": text}, headers={"Authorization": token()})
    response = await client.get("/notes?text=ap&limit=1&tags=a&tags=b")
    assert response.status_code == 200
    assert response.json() == {
        "items": [{"id": 1, "owner": "ada", "text": "apple"}],
        "tags": ["a", "b"],
    }
    exact = await client.get("/notes", params={"text": "ap", "exact": "true"})
    assert exact.json()["items"] == []


async def test_a_query_value_of_the_wrong_type_is_422_naming_it(client: httpx.AsyncClient) -> None:
    status, code, message = error(await client.get("/notes?limit=many"))
    assert (status, code) == (422, "invalid_argument")
    assert "'limit'" in message
    assert "'many'" in message


async def test_an_empty_query_value_of_a_number_means_not_given(client: httpx.AsyncClient) -> None:
    response = await client.get("/notes?text=&limit=")
    assert response.status_code == 200


async def test_a_number_too_large_for_the_wire_is_422_not_a_crash(
    client: httpx.AsyncClient, token: Callable[..., str]
) -> None:
    for value in ("9" * 30, "9" * 5000):
        response = await client.get(f"/notes/{value}", headers={"Authorization": token()})
        assert response.status_code == 422, response.text


async def test_a_value_out_of_range_is_422_naming_the_field(client: httpx.AsyncClient) -> None:
    status, _, message = error(await client.get("/notes?limit=1000"))
    assert status == 422
    assert "limit" in message


async def test_a_path_value_of_the_wrong_type_is_422(
    client: httpx.AsyncClient, token: Callable[..., str]
) -> None:
    status, _, message = error(await client.get("/notes/abc", headers={"Authorization": token()}))
    assert status == 422
    assert "'id'" in message


async def test_a_missing_or_invalid_body_field_is_422_naming_it(
    client: httpx.AsyncClient, token: Callable[..., str]
) -> None:
    auth = {"Authorization": token()}
    missing = error(await client.post("/notes", json={}, headers=auth))
    assert missing[0] == 422
    assert "text" in missing[2]
    wrong = error(await client.post("/notes", json={"text": 5}, headers=auth))
    assert wrong[0] == 422
    assert "$.text" in wrong[2]
    unknown = error(await client.post("/notes", json={"text": "a", "colour": 1}, headers=auth))
    assert unknown[0] == 422
    assert "colour" in unknown[2]
    not_object = error(await client.post("/notes", json=[1, 2], headers=auth))
    assert not_object[:2] == (422, "invalid_argument")
    assert "JSON object" in not_object[2]


async def test_malformed_json_is_400(client: httpx.AsyncClient, token: Callable[..., str]) -> None:
    headers = {"Authorization": token(), "Content-Type": "application/json"}
    for body in (b"{", b'{"text": }', b"\xff\xfe", b"[1,2"):
        status, code, message = error(await client.post("/notes", content=body, headers=headers))
        assert (status, code) == (400, "bad_request")
        assert "not valid JSON" in message


async def test_unknown_route_is_404_and_wrong_method_is_405(client: httpx.AsyncClient) -> None:
    assert error(await client.get("/nowhere"))[:2] == (404, "not_found")
    response = await client.delete("/notes")
    assert error(response)[:2] == (405, "method_not_allowed")
    assert "GET" in response.headers["allow"]


async def test_a_route_deadline_is_504(client: httpx.AsyncClient) -> None:
    status, code, _ = error(await client.post("/slow", json={"seconds": 5}))
    assert (status, code) == (504, "deadline_exceeded")
    fast = await client.post("/slow", json={"seconds": 0})
    assert fast.json() == "done"


async def test_an_internal_error_leaks_nothing_but_the_request_id(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/crash", headers={"X-Request-Id": "req-crash-1"})
    status, code, message = error(response)
    assert (status, code) == (500, "internal")
    assert "must not leak" not in response.text
    assert "Traceback" not in response.text
    assert "req-crash-1" in message
    assert response.headers["x-request-id"] == "req-crash-1"


async def test_request_id_and_traceparent_reach_the_callee(
    client: httpx.AsyncClient, token: Callable[..., str]
) -> None:
    trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    response = await client.get(
        "/whoami",
        headers={"Authorization": token(), "X-Request-Id": "abc-123", "traceparent": trace},
    )
    assert response.json() == {
        "subject": "ada",
        "roles": [],
        "request_id": "abc-123",
        "trace": trace,
    }
    assert response.headers["x-request-id"] == "abc-123"
    fresh = await client.get("/whoami", headers={"Authorization": token(), "traceparent": "junk"})
    assert fresh.json()["trace"] == ""
    assert fresh.json()["request_id"] == fresh.headers["x-request-id"] != ""
