"""The HTTP/1.1 server protocol of every service: uvicorn's h11 protocol, except that a request
it cannot even parse (a malformed ``Content-Length``, a broken header line) is refused with the
RFC 9457 problem body every other refusal has, not uvicorn's plain-text page, so a client reads one
kind of refusal; and, over TLS, each request's scope carries the ASGI TLS extension with the name
of the party whose certificate the client showed, so that a route between services can insist
on one (uvicorn itself does not pass the client certificate on)."""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from offpay.service.problems import PROBLEM_JSON, problem_body

MALFORMED_HTTP = problem_body(
    "http.malformed",
    "the request is not valid HTTP/1.1 (a malformed header such as Content-Length)",
    400,
)


class JsonRefusalProtocol(H11Protocol):
    """:class:`H11Protocol` whose own 400 answer is a problem with the code ``http.malformed``."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if transport.get_extra_info("ssl_object") is not None:
            self.app = WithClientCertificate(self.app, client_party(transport))

    def send_400_response(self, msg: str) -> None:
        self.logger.debug("refused before any route: %s", msg)
        headers = [
            (b"content-type", PROBLEM_JSON.encode()),
            (b"content-length", str(len(MALFORMED_HTTP)).encode()),
            (b"connection", b"close"),
        ]
        self.transport.write(
            self.conn.send(h11.Response(status_code=400, headers=headers, reason=b"Bad Request"))
            or b""
        )
        self.transport.write(self.conn.send(h11.Data(data=MALFORMED_HTTP)) or b"")
        self.transport.write(self.conn.send(h11.EndOfMessage()) or b"")
        self.transport.close()


def client_party(transport: asyncio.BaseTransport) -> str | None:
    """The common name in the client's certificate (the party's name), if it showed one; the
    TLS layer has already verified it against the network's TLS CA and its CRL."""
    subject = (transport.get_extra_info("peercert") or {}).get("subject", ())
    for rdn in subject:
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


class WithClientCertificate:
    """The app, with ``scope["extensions"]["tls"]["client_cert_name"]`` set for every request
    of one connection (None: no client certificate)."""

    def __init__(self, app: Any, party: str | None) -> None:
        self.app = app
        self.party = party

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        extensions = {**scope.get("extensions", {}), "tls": {"client_cert_name": self.party}}
        await self.app({**scope, "extensions": extensions}, receive, send)
