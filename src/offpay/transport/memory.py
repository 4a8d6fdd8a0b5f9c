"""An in-process network: parties register a handler under their name; callers send bytes.

Only bytes cross, exactly as over HTTP, so the same signed messages and the same checks run
in-process and between services. ``tap`` lets tests and the simulator watch, drop or alter
traffic to play a hostile network.
"""

from __future__ import annotations

from collections.abc import Callable

from offpay.errors import NotFound

Handler = Callable[[str, bytes], bytes]
Tap = Callable[[str, str, bytes], bytes]


class MemoryNetwork:
    def __init__(self) -> None:
        self._routes: dict[str, Handler] = {}
        self.taps: list[Tap] = []
        self.messages = 0
        self.bytes = 0

    def register(self, name: str, handler: Handler) -> None:
        self._routes[name] = handler

    def send(self, to: str, kind: str, data: bytes) -> bytes:
        handler = self._routes.get(to)
        if handler is None:
            raise NotFound(f"no party named {to} on this network", code="network.unknown_party")
        for tap in self.taps:
            data = tap(to, kind, data)
        self.messages += 1
        self.bytes += len(data)
        return handler(kind, data)
