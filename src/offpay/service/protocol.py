"""The HTTP/1.1 server protocol of every service: uvicorn's h11 protocol, except that a request
it cannot even parse (a malformed ``Content-Length``, a broken header line) is refused with the
RFC 9457 problem body every other refusal has, not uvicorn's plain-text page, so a client reads one
kind of refusal."""

from __future__ import annotations

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
