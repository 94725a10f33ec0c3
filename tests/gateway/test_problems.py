from __future__ import annotations

import logging

import msgspec
import pytest

from flotilla.errors import DeadlineExceeded, Internal, NotFound, Unavailable
from flotilla.gateway.problems import error_body, error_response


def test_a_client_error_says_what_was_wrong() -> None:
    body = error_body(NotFound("no order 7"), "req-1")
    assert body == {"error": {"code": "not_found", "message": "no order 7"}}


@pytest.mark.parametrize(
    "error",
    [
        Unavailable("connection to 10.1.2.3:4567 lost"),
        DeadlineExceeded("deadline passed while connecting to 10.1.2.3:4567"),
        Internal("result of orders.get does not match its type: secret detail"),
    ],
)
def test_a_server_error_shows_its_code_and_request_id_not_its_insides(
    error: Unavailable | DeadlineExceeded | Internal,
) -> None:
    body = error_body(error, "req-2")
    assert body["error"]["code"] == error.code
    assert "req-2" in body["error"]["message"]
    assert "10.1.2.3" not in body["error"]["message"]
    assert "secret" not in body["error"]["message"]


def test_a_hidden_message_is_logged_with_the_request_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="flotilla.gateway"):
        response = error_response(Unavailable("connection to 10.1.2.3:4567 lost"), "req-3")
    assert response.status_code == 503
    assert "10.1.2.3" not in msgspec.json.decode(response.body)["error"]["message"]
    assert any("req-3" in r.getMessage() and "10.1.2.3" in r.getMessage() for r in caplog.records)
