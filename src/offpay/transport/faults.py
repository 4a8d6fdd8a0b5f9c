"""Fault injection on every hop of a flow (issue 3, point 7).

A *hop* is one message from one party to another: a network message (``MemoryNetwork.send``),
a command APDU a relay sends to a card, or a call the PoS app makes into the terminal's secure
module. The :class:`Injector` numbers hops in the order they start, so a clean run of a flow
gives its message list (:attr:`Injector.hops`), and a second run can hit hop *n* with one
:class:`Fault`. Hops are numbered only while the injector is :meth:`~Injector.start`-ed, so the
set-up before a flow is never counted or hit.

The faults are what a hostile network or relay can do to one message:

* ``cut-before``: lost on the way; the receiver never acts and the sender sees ``network.cut``.
* ``cut-after``: the receiver acts, its answer is lost; the sender sees ``network.cut``.
* ``duplicate``: delivered twice; the sender gets the first answer, the replay's goes nowhere.
* ``reorder`` (network messages only): held back and delivered right after the next message
  to the same receiver (or, when none comes, when :meth:`Injector.release` is called). A
  sender waiting for the answer gives up (``network.cut``) and retries, so its retry overtakes
  the held message; a sender that expects nothing back (a card's confirmation) is answered at
  once and goes on, so its next message overtakes it. A card or a terminal module sits at its
  reader: its commands can be lost or replayed, but a relay cannot reorder a command it needs
  the answer of to build the next.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar, cast

from offpay.device.apdu import SW, Command, Ins, Response
from offpay.errors import OffpayError

if TYPE_CHECKING:
    from offpay.device.reader import Transmit
    from offpay.device.terminal import TerminalModule
    from offpay.transport.memory import Deliver

T = TypeVar("T")

CUT = "network.cut"
OK_APDU = Response(b"", SW.OK).to_bytes()


class Fault(enum.StrEnum):
    CUT_BEFORE = "cut-before"
    CUT_AFTER = "cut-after"
    DUPLICATE = "duplicate"
    REORDER = "reorder"


class Channel(enum.StrEnum):
    NETWORK = "net"
    CARD = "card"
    TERMINAL = "terminal"


FAULTS: dict[Channel, tuple[Fault, ...]] = {
    Channel.NETWORK: tuple(Fault),
    Channel.CARD: (Fault.CUT_BEFORE, Fault.CUT_AFTER, Fault.DUPLICATE),
    Channel.TERMINAL: (Fault.CUT_BEFORE, Fault.CUT_AFTER, Fault.DUPLICATE),
}

# The terminal module's entry points the PoS app calls; everything else is read-only state.
TERMINAL_CALLS = (
    "request_payment",
    "accept_payment",
    "cancel_request",
    "begin_sync",
    "apply_instruction",
)


@dataclass(frozen=True)
class Hop:
    index: int
    channel: Channel
    label: str  # "bank-a card-session", "alice PAY", "shop accept_payment"
    depth: int  # network messages sent while the receiver of another one handles it
    answered: bool  # the sender uses the answer; False: it expects nothing back

    @property
    def faults(self) -> tuple[Fault, ...]:
        return FAULTS[self.channel]

    def __str__(self) -> str:
        return f"{self.index:02d} {self.channel} {'.' * self.depth}{self.label}"


class LinkLost(OffpayError):
    """What the sender sees when its message or the answer to it was lost."""

    code = CUT


@dataclass
class _Held:
    index: int
    to: str
    call: Callable[[], object]
    label: str


class Injector:
    """Numbers the hops of a flow, records them, and applies one fault at one of them."""

    def __init__(self) -> None:
        self.hops: list[Hop] = []
        self.active = False
        self.count = 0
        self.target: Hop | None = None
        self.fault: Fault | None = None
        self.hit: Hop | None = None  # the hop the fault was applied to
        self.late_errors: list[BaseException] = []  # a held or replayed delivery that crashed
        # (receiver, code, hop label) of each held or replayed delivery its receiver refused
        self.late_refusals: list[tuple[str, str, str]] = []
        self._depth = 0
        self._held: _Held | None = None

    def start(self, target: Hop | None = None, fault: Fault | None = None) -> None:
        """Count hops from here on; apply ``fault`` to the hop numbered like ``target`` (a hop
        of this flow's recorded message list). Without a target, record the message list."""
        self.active, self.count, self.hit = True, 0, None
        self.late_refusals = []
        self.target, self.fault = target, fault
        if target is None:
            self.hops = []

    @property
    def holding(self) -> bool:
        return self._held is not None

    def release(self) -> None:
        """Deliver a held message now (nothing came after it to swap with)."""
        held, self._held = self._held, None
        if held is not None:
            self._deliver_late(held.call, held.to, held.label)

    # -- the three kinds of hop -------------------------------------------------------------

    def network(self, to: str, kind: str, data: bytes, deliver: Deliver) -> bytes:
        """A :data:`offpay.transport.memory.Hook`: install with ``network.hooks.append``."""
        return self.hop(Channel.NETWORK, f"{to} {kind}", lambda: deliver(data), b"", to)

    def card(self, name: str, transmit: Transmit) -> Transmit:
        """``transmit`` with every command APDU a hop named after the card's holder."""

        def wrapped(apdu: bytes) -> bytes:
            try:
                ins = Ins(Command.from_bytes(apdu).ins).name
            except (OffpayError, ValueError):
                ins = "malformed"
            return self.hop(Channel.CARD, f"{name} {ins}", lambda: transmit(apdu), OK_APDU, name)

        return wrapped

    def terminal(self, name: str, module: TerminalModule) -> TerminalModule:
        """What the PoS app holds instead of ``module``: every call into it is a hop."""
        return cast("TerminalModule", _TerminalLink(self, name, module))

    # -- the core ---------------------------------------------------------------------------

    def hop(self, channel: Channel, label: str, call: Callable[[], T], empty: T, to: str) -> T:
        """Carry one message to ``to``: ``call`` delivers it and returns the receiver's
        answer; ``empty`` is the answer of a receiver that has nothing to say."""
        if not self.active:
            return call()
        index = self.count
        self.count += 1
        target = self.target
        if target is None:  # recording: the answer tells whether the sender waits for it
            self.hops.append(Hop(index, channel, label, self._depth, True))
        try:
            if target is not None and index == target.index:
                self.hit = Hop(index, channel, label, self._depth, target.answered)
                return self._faulty(self.hit, call, empty, to)
            result = self._call(channel, call)
            if target is None:
                self.hops[index] = replace(self.hops[index], answered=result != empty)
            return result
        finally:
            held = self._held
            if held is not None and index > held.index and to == held.to:
                self.release()

    def _call(self, channel: Channel, call: Callable[[], T]) -> T:
        nested = channel is Channel.NETWORK
        self._depth += nested
        try:
            return call()
        finally:
            self._depth -= nested

    def _faulty(self, hop: Hop, call: Callable[[], T], empty: T, to: str) -> T:
        fault, channel = self.fault, hop.channel
        if fault not in hop.faults:
            raise ValueError(f"{fault} does not apply to a {channel} hop")
        if fault is Fault.CUT_BEFORE:
            raise LinkLost(f"lost before delivery: {hop.label}")
        if fault is Fault.CUT_AFTER:
            with contextlib.suppress(OffpayError):  # a refusal is lost like any answer
                self._call(channel, call)
            raise LinkLost(f"answer lost: {hop.label}")
        if fault is Fault.DUPLICATE:
            try:
                return self._call(channel, call)
            finally:
                self._deliver_late(call, to, hop.label, channel)
        # Fault.REORDER
        self._held = _Held(hop.index, to, lambda: self._call(channel, call), hop.label)
        if not hop.answered:
            return empty  # the sender expects nothing back and goes on
        raise LinkLost(f"no answer in time (held back): {hop.label}")

    def _deliver_late(
        self, call: Callable[[], Any], to: str, label: str, channel: Channel | None = None
    ) -> None:
        """A replayed or held message arrives; nobody waits for its answer."""
        try:
            if channel is None:
                call()
            else:
                self._call(channel, call)
        except OffpayError as exc:  # refused: the receiver kept its state; nobody hears it
            self.late_refusals.append((to, exc.code, label))
        except Exception as exc:  # a crash is a bug: keep it for the test to report
            self.late_errors.append(exc)


class _TerminalLink:
    """Forwards to the module; its entry points go through the injector as hops."""

    def __init__(self, injector: Injector, name: str, module: TerminalModule) -> None:
        self._injector = injector
        self._name = name
        self._module = module

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._module, attr)
        if attr not in TERMINAL_CALLS:
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            label, name = f"{self._name} {attr}", self._name
            return self._injector.hop(
                Channel.TERMINAL, label, lambda: value(*args, **kwargs), None, name
            )

        return call
