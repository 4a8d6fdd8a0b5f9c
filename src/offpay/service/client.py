"""The sending side over HTTP.

:class:`HttpNetwork` is a :class:`~offpay.transport.memory.MemoryNetwork` whose far parties
are reached over HTTP: the phone app, the PoS app, the intermediaries and the central bank call
``send(to, kind, data)`` as before, and taps, hooks and cuts still apply. Each request carries
an ``Idempotency-Key`` derived from its bytes, and a request that got no answer (a refused
connection, a timeout, a busy service) is sent again, byte for byte, with the same key: the
service answers a retry with its first answer and moves nothing twice.

:class:`AdminClient` speaks to a service's back office (JSON, the admin token).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import httpx
import tenacity

from offpay.errors import OffpayError
from offpay.service.problems import RETRYABLE, error_of
from offpay.service.tls import refusal_of, tls_failure
from offpay.transport.memory import Handler, MemoryNetwork

CBOR = "application/cbor"

log = logging.getLogger("offpay.service")


def idempotency_key(kind: str, data: bytes) -> str:
    """The same request bytes always get the same key, so even a retry from a restarted
    client is recognised."""
    return hashlib.sha256(kind.encode() + b"\x00" + data).hexdigest()[:40]


def new_client(timeout: float) -> httpx.Client:
    # trust_env=False: services talk to each other directly, never through a proxy the
    # environment happens to name.
    return httpx.Client(
        timeout=httpx.Timeout(timeout, connect=5.0),
        trust_env=False,
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
    )


class Retrying:
    """Send, and send again the same bytes while no answer came back (a transport failure, or
    a refusal whose code says "retry"), with exponential pauses: ``backoff``, twice that, ...
    at most 5 s, ``retries`` times. Other refusals are raised at once as their typed error."""

    MAX_PAUSE_S = 5.0

    def __init__(self, retries: int, backoff: float) -> None:
        self.retries = retries
        self.backoff = backoff

    def __call__(self, what: str, attempt: Callable[[], httpx.Response]) -> httpx.Response:
        def answer() -> httpx.Response:
            response = attempt()
            if response.status_code >= 400:
                raise error_of(response.status_code, response.content)
            return response

        def again(state: tenacity.RetryCallState) -> None:
            outcome = state.outcome
            reason = outcome.exception() if outcome is not None else None
            log.warning("sending %s again after %s", what, _reason(reason))

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.retries + 1),
            wait=tenacity.wait_exponential(multiplier=self.backoff, max=self.MAX_PAUSE_S),
            retry=tenacity.retry_if_exception(_worth_retrying),
            before_sleep=again,
            reraise=True,
        )
        try:
            return retrying(answer)
        except httpx.TransportError as exc:
            failure = tls_failure(exc)
            if failure is not None:
                raise refusal_of(what, failure) from None
            raise OffpayError(
                f"connection lost: {what} ({_reason(exc)})", code="network.cut"
            ) from None


def _worth_retrying(exc: BaseException) -> bool:
    """No answer came back, or the service said the same bytes may succeed later. A service
    whose certificate this network does not trust will not be trusted a moment later."""
    if isinstance(exc, httpx.TransportError):
        return tls_failure(exc) is None
    return isinstance(exc, OffpayError) and exc.code in RETRYABLE


def _reason(exc: BaseException | None) -> str:
    if isinstance(exc, httpx.TransportError):
        return f"{type(exc).__name__}: {exc}"
    return str(exc)


class HttpNetwork(MemoryNetwork):
    """``urls`` maps party names to base URLs; parties registered locally (the service's own
    party) are called directly. Give it ``client=network_client(network, ...)``
    (:mod:`offpay.service.tls`) for a TLS network: the default client trusts no one's TLS."""

    def __init__(
        self,
        urls: Mapping[str, str],
        *,
        retries: int = 4,
        backoff: float = 0.25,
        timeout: float = 60.0,
        client: httpx.Client | None = None,
    ) -> None:
        super().__init__()
        self.urls = {name: url.rstrip("/") for name, url in urls.items()}
        self.retrying = Retrying(retries, backoff)
        self.client = client if client is not None else new_client(timeout)

    def route(self, to: str) -> Handler | None:
        local = super().route(to)
        if local is not None or to not in self.urls:
            return local
        return partial(self._post, to)

    def _post(self, to: str, kind: str, data: bytes) -> bytes:
        url = f"{self.urls[to]}/v1/messages/{kind}"
        headers = {"Content-Type": CBOR, "Idempotency-Key": idempotency_key(kind, data)}
        response = self.retrying(
            f"{kind} to {to}", lambda: self.client.post(url, content=data, headers=headers)
        )
        return response.content

    def close(self) -> None:
        self.client.close()


class AdminClient:
    """A service's back office, for the demo, the audit and the tests."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        retries: int = 4,
        backoff: float = 0.25,
        timeout: float = 60.0,
        client: httpx.Client | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"}
        self.retrying = Retrying(retries, backoff)
        self.client = client if client is not None else new_client(timeout)

    def get(self, path: str, **params: str) -> Any:
        response = self.retrying(
            f"GET {path}",
            lambda: self.client.get(f"{self.url}{path}", params=params, headers=self.headers),
        )
        return response.json()

    def post(self, path: str, body: Mapping[str, Any] | None = None, *, key: str | None) -> Any:
        """A change, once: retried with the same ``key`` until an answer comes back. Questions
        sent as POST (a list of ids) take no key."""
        headers = dict(self.headers)
        if key is not None:
            headers["Idempotency-Key"] = key
        response = self.retrying(
            f"POST {path}",
            lambda: self.client.post(f"{self.url}{path}", json=body or {}, headers=headers),
        )
        return response.json()

    def close(self) -> None:
        self.client.close()
