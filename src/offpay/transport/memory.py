"""An in-process network: parties register a handler under their name; callers send bytes.

Only bytes cross, exactly as over HTTP, so the same signed messages and the same checks run
in-process and between services. ``tap`` lets tests and the simulator watch, drop or alter
traffic to play a hostile network; ``hooks`` let them hold, repeat or lose a delivery
(see :mod:`offpay.transport.faults`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from offpay.errors import NotFound, OffpayError

Handler = Callable[[str, bytes], bytes]
Tap = Callable[[str, str, bytes], bytes]
Deliver = Callable[[bytes], bytes]
# A hook sits between the sender and the receiver: given (to, kind, data, deliver) it decides
# when, how often and whether ``deliver`` runs, and what the sender gets back.
Hook = Callable[[str, str, bytes, Deliver], bytes]


def _through(hook: Hook, to: str, kind: str, inner: Deliver) -> Deliver:
    return lambda data: hook(to, kind, data, inner)


class MemoryNetwork:
    def __init__(self) -> None:
        self._routes: dict[str, Handler] = {}
        self.taps: list[Tap] = []
        self.messages = 0
        self.bytes = 0
        self._cuts: list[tuple[str, bool]] = []
        self.hooks: list[Hook] = []

    def register(self, name: str, handler: Handler) -> None:
        self._routes[name] = handler

    def cut_next(self, kind: str, *, after: bool = False) -> None:
        """Lose the next message of ``kind``: before it is handled, or (``after``) its answer,
        once the receiver acted on it. The sender sees ``network.cut`` either way."""
        self._cuts.append((kind, after))

    def route(self, to: str) -> Handler | None:
        """Who answers for ``to``: a party registered here (an HTTP network adds the parties
        it reaches over the wire)."""
        return self._routes.get(to)

    def send(self, to: str, kind: str, data: bytes) -> bytes:
        handler = self.route(to)
        if handler is None:
            raise NotFound(f"no party named {to} on this network", code="network.unknown_party")
        for tap in self.taps:
            data = tap(to, kind, data)
        cut = next((c for c in self._cuts if c[0] == kind), None)
        if cut is not None:
            self._cuts.remove(cut)
            if cut[1]:
                handler(kind, data)
            raise OffpayError(f"connection lost: {kind} to {to}", code="network.cut")
        self.messages += 1
        self.bytes += len(data)
        deliver: Deliver = partial(handler, kind)
        for hook in reversed(self.hooks):
            deliver = _through(hook, to, kind, deliver)
        return deliver(data)
