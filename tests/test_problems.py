"""Refusals over HTTP are RFC 9457 problems that keep the stable ``code``, and the client turns
each back into the typed error the service raised."""

from __future__ import annotations

import json
from http import HTTPStatus

from hypothesis import given
from hypothesis import strategies as st

from offpay.errors import (
    InsufficientFunds,
    LimitExceeded,
    OffpayError,
    ReplayError,
    error_from_code,
)
from offpay.service.problems import (
    PROBLEM_JSON,
    error_of,
    problem_body,
    problem_of,
    problem_responses_in_openapi,
    status_for,
)

CODES = st.from_regex(r"\A[a-z_]{1,12}(\.[a-z_]{1,12}){0,2}\Z")
MESSAGES = st.text(min_size=1, max_size=200)


@given(CODES, MESSAGES)
def test_a_problem_has_the_rfc_9457_members_and_the_code(code: str, message: str) -> None:
    status, body = problem_of(OffpayError(message, code=code))
    problem = json.loads(body)
    assert status == status_for(code) and 400 <= status < 600
    assert problem == {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": message,
        "code": code,
        "message": message,
    }


@given(CODES, MESSAGES)
def test_the_client_gets_back_the_same_typed_error(code: str, message: str) -> None:
    sent = error_from_code(code, message)
    status, body = problem_of(sent)
    received = error_of(status, body)
    assert type(received) is type(sent)
    assert (received.code, received.message) == (sent.code, sent.message)


def test_typed_errors_survive_the_round_trip() -> None:
    for error, cls in (
        (ReplayError("seen before"), ReplayError),
        (InsufficientFunds("not enough"), InsufficientFunds),
        (LimitExceeded("card_max_balance", "over the card's limit"), LimitExceeded),
    ):
        received = error_of(*problem_of(error))
        assert isinstance(received, cls) and received.code == error.code


def test_a_body_in_the_older_form_is_still_read() -> None:
    """A first answer kept before problems existed is replayed as it was kept."""
    old = json.dumps({"code": "wire.replay", "message": "a replayed message"}).encode()
    received = error_of(409, old)
    assert isinstance(received, ReplayError) and received.message == "a replayed message"


def test_an_explicit_status_wins() -> None:
    problem = json.loads(problem_body("service.internal", "the service failed", 500))
    assert (problem["status"], problem["title"]) == (500, "Internal Server Error")


def test_an_answer_that_is_not_a_problem_is_a_network_failure() -> None:
    for body in (b"<html>Bad Gateway</html>", b"[1, 2]", b'{"code": 7, "detail": "x"}', b"{}"):
        received = error_of(502, body)
        assert received.code == "network.bad_answer", body


def test_openapi_documents_refusals_as_problem_json() -> None:
    schema = {
        "paths": {
            "/x": {
                "post": {
                    "responses": {
                        "200": {"content": {"application/json": {"schema": {}}}},
                        "409": {"content": {"application/json": {"schema": {"$ref": "P"}}}},
                    }
                }
            }
        }
    }
    responses = problem_responses_in_openapi(schema)["paths"]["/x"]["post"]["responses"]
    assert responses["200"]["content"] == {"application/json": {"schema": {}}}
    assert responses["409"]["content"] == {PROBLEM_JSON: {"schema": {"$ref": "P"}}}
