"""The HTTP client resends the same bytes under the same Idempotency-Key while no answer came
back or the service says "retry", a bounded number of times, and raises every other refusal
at once as its typed error."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offpay.errors import InsufficientFunds, OffpayError
from offpay.service.client import AdminClient, HttpNetwork, Retrying
from offpay.service.problems import PROBLEM_JSON, problem_of

Step = Callable[[httpx.Request], httpx.Response]


def refusal(error: OffpayError) -> Step:
    status, body = problem_of(error)
    return lambda _request: httpx.Response(
        status, content=body, headers={"content-type": PROBLEM_JSON}
    )


def cut(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def ok(_request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=b"answer")


def busy(request: httpx.Request) -> httpx.Response:
    return refusal(OffpayError("the database is busy; retry", code="service.busy"))(request)


def network(steps: list[Step], retries: int) -> tuple[HttpNetwork, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return steps[min(len(seen), len(steps)) - 1](request)

    client = httpx.Client(transport=httpx.MockTransport(handle))
    net = HttpNetwork({"bank-a": "http://bank-a.test"}, retries=retries, backoff=0, client=client)
    return net, seen


def test_a_lost_connection_and_a_busy_service_are_retried_with_the_same_bytes_and_key() -> None:
    net, seen = network([cut, busy, ok], retries=4)
    assert net.send("bank-a", "card-session", b"signed bytes") == b"answer"
    assert len(seen) == 3
    assert {r.content for r in seen} == {b"signed bytes"}
    assert len({r.headers["idempotency-key"] for r in seen}) == 1


def test_a_business_refusal_is_raised_at_once_as_its_typed_error() -> None:
    net, seen = network([refusal(InsufficientFunds("not enough in the wallet")), ok], retries=4)
    with pytest.raises(InsufficientFunds, match="not enough in the wallet"):
        net.send("bank-a", "card-session", b"x")
    assert len(seen) == 1


def test_retries_are_bounded_and_a_cut_connection_is_network_cut() -> None:
    net, seen = network([cut], retries=3)
    with pytest.raises(OffpayError) as raised:
        net.send("bank-a", "card-session", b"x")
    assert raised.value.code == "network.cut" and "ConnectError" in raised.value.message
    assert len(seen) == 4


def test_a_service_busy_every_time_ends_in_its_own_refusal() -> None:
    net, seen = network([busy], retries=2)
    with pytest.raises(OffpayError) as raised:
        net.send("bank-a", "card-session", b"x")
    assert raised.value.code == "service.busy"
    assert len(seen) == 3


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(["cut", "busy", "ok"]), min_size=1, max_size=6), st.integers(0, 4))
def test_attempts_stop_at_the_first_answer_or_after_the_retries(
    plan: list[str], retries: int
) -> None:
    steps = {"cut": cut, "busy": busy, "ok": ok}
    net, seen = network([steps[s] for s in plan] + [ok] * 10, retries=retries)
    outcomes = plan + ["ok"] * 10
    first_ok = outcomes.index("ok")
    if first_ok <= retries:
        assert net.send("bank-a", "k", b"x") == b"answer"
        assert len(seen) == first_ok + 1
    else:
        with pytest.raises(OffpayError) as raised:
            net.send("bank-a", "k", b"x")
        last = outcomes[retries]
        assert raised.value.code == ("network.cut" if last == "cut" else "service.busy")
        assert len(seen) == retries + 1


def test_pauses_grow_exponentially_up_to_a_ceiling(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr("tenacity.nap.time.sleep", slept.append)
    attempts = iter([httpx.ConnectError("down")] * 6)

    def attempt() -> httpx.Response:
        raise next(attempts)

    with pytest.raises(OffpayError):
        Retrying(retries=5, backoff=0.5)("GET /x", attempt)
    assert slept == [0.5, 1.0, 2.0, 4.0, 5.0]


def test_the_back_office_client_retries_too() -> None:
    seen: list[httpx.Request] = []
    steps = [cut, lambda _r: httpx.Response(200, json={"balance": 5})]

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return steps[len(seen) - 1](request)

    admin = AdminClient(
        "http://bank-a.test",
        "token",
        backoff=0,
        client=httpx.Client(transport=httpx.MockTransport(handle)),
    )
    assert admin.post("/v1/admin/fund", {"amount": 5}, key="k1") == {"balance": 5}
    assert [r.headers["idempotency-key"] for r in seen] == ["k1", "k1"]
