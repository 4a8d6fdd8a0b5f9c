"""An :class:`OfflineNetwork` that records, at the transport edge, every message each party
receives: what reaches a party's ``handle(kind, data)``, every answer a sender gets back, what
crosses each card's link (the phone or PoS app relays it; so could an eavesdropping relay) and
what passes between two phones in a token transfer.

The recording is what ``docs/privacy.md``'s table is checked against (``offpay.privacy``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from offpay.crypto.pki import CENTRAL_BANK
from offpay.device.apdu import SW, Command, Ins, Response
from offpay.device.reader import CardClient, Transmit
from offpay.errors import OffpayError
from offpay.money import Money
from offpay.privacy import Party
from offpay.sim.network import Merchant, OfflineNetwork, TokenUser, User
from offpay.tokens.model import Token
from offpay.tokens.transfer import transfer_offline
from offpay.transport.memory import Deliver, MemoryNetwork
from offpay.wire.exposure import Seen, exposed

# Card commands whose data is not a message but the app still learns it (a declined request's
# id). The PIN is a message now, enciphered to the card (offpay.wire.enciphered_pin).
RAW_COMMANDS = frozenset({Ins.DECLINE_REQUEST})


@dataclass
class Recording:
    """Per party, every field seen, and the customer ids and names to look for in them."""

    seen: dict[Party, set[Seen]] = field(default_factory=lambda: defaultdict(set))
    messages: dict[Party, int] = field(default_factory=lambda: defaultdict(int))
    people: set[str] = field(default_factory=set)

    def add(self, parties: Iterable[Party], data: bytes) -> None:
        fields = exposed(data, self.people)
        for party in parties:
            self.messages[party] += 1
            self.seen[party] |= fields

    def add_raw(self, parties: Iterable[Party], ins: Ins) -> None:
        """A card command whose data is not a message (the PIN): named by the command."""
        for party in parties:
            self.seen[party].add(Seen("apdu", ins.name.lower()))


class PartyView:
    """A party's own handle on the shared network: it receives the answers to what it sends,
    and a relay app (phone, PoS) also reads what it forwards from its devices."""

    def __init__(
        self, network: MemoryNetwork, party: Party, recording: Recording, *, relays: bool
    ) -> None:
        self.inner = network
        self.party = party
        self.recording = recording
        self.relays = relays

    def send(self, to: str, kind: str, data: bytes) -> bytes:
        if self.relays:
            self.recording.add([self.party], data)
        answer = self.inner.send(to, kind, data)
        self.recording.add([self.party], answer)
        return answer

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


# What a card exchanges with another party's device, through whichever app relays it: from
# the other side, the payer's identity, the payee's request and the payment; to it, its
# identity, its request, its payment and a resubmission. The rest of what a phone and its own
# card exchange (PIN, status, online sessions) stays between the holder's phone and card.
FROM_THE_HOP = frozenset({Ins.REQUEST_PAYMENT, Ins.PAY, Ins.RECEIVE})
TO_THE_HOP = frozenset({Ins.GET_IDENTITY, Ins.REQUEST_PAYMENT, Ins.PAY, Ins.GET_LAST_PAYMENT})


class RecordingLink:
    """A card's contactless link as a relay app drives it: every command's data reaches the
    card through the app, every answer reaches the app. An eavesdropper sees what crosses
    between two parties' devices: everything on a shop's reader (``owner=False``), the offline
    hop's commands on a holder's own phone. Chained answers (ISO 7816-4 GET RESPONSE) are
    joined before they are read."""

    def __init__(
        self, transmit: Transmit, app: Party, recording: Recording, *, owner: bool
    ) -> None:
        self.transmit = transmit
        self.app = app
        self.owner = owner
        self.recording = recording
        self.pending = b""
        self.pending_ins = Ins.GET_RESPONSE

    def _parties(self, ins: int, hop: frozenset[Ins]) -> tuple[Party, ...]:
        if self.owner and ins not in hop:
            return (self.app,)
        return (self.app, Party.RELAY)

    def __call__(self, raw: bytes) -> bytes:
        command = Command.from_bytes(raw)
        if command.ins != Ins.GET_RESPONSE:
            self.pending_ins = Ins(command.ins)
            parties = self._parties(command.ins, FROM_THE_HOP)
            if command.ins in RAW_COMMANDS:
                self.recording.add_raw(parties, Ins(command.ins))
            elif command.data:
                self.recording.add(parties, command.data)
        parties = self._parties(self.pending_ins, TO_THE_HOP)
        answer = self.transmit(raw)
        response = Response.from_bytes(answer)
        self.pending += response.data
        if response.sw & 0xFF00 != SW.MORE_DATA:
            if response.sw == SW.OK and self.pending:
                self.recording.add(parties, self.pending)
            self.pending = b""
        return answer


def party_of(name: str) -> Party:
    return Party.CENTRAL_BANK if name == CENTRAL_BANK else Party.INTERMEDIARY


@dataclass
class RecordedNetwork(OfflineNetwork):
    """The in-process network with a recorder on every edge a party receives bytes on."""

    recording: Recording = field(default_factory=Recording)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.network.hooks.append(self._delivered)
        for bank in self.banks.values():
            bank.network = self._view(Party.INTERMEDIARY, relays=False)  # type: ignore[assignment]

    def _view(self, party: Party, *, relays: bool) -> MemoryNetwork:
        return PartyView(self.network, party, self.recording, relays=relays)  # type: ignore[return-value]

    def _delivered(self, to: str, kind: str, data: bytes, deliver: Deliver) -> bytes:
        self.recording.add([party_of(to)], self._opened(to, data))
        return deliver(data)

    def _opened(self, to: str, data: bytes) -> bytes:
        """What an intermediary reads of ``data``: inside, if a device sealed it to it."""
        bank = self.banks.get(to)
        if bank is None:
            return data
        try:
            return bank.intake.open(data)
        except OffpayError:
            return data  # not for it: it learns what it received

    def _person(self, name: str, customer_id: str) -> None:
        self.recording.people |= {name, customer_id}

    def add_user(self, name: str, bank: str, *, pin: str = "1234", online: int = 0) -> User:
        user = super().add_user(name, bank, pin=pin, online=online)
        self._person(name, user.customer_id)
        phone = user.phone
        phone.network = self._view(Party.PHONE_APP, relays=True)
        phone.card = CardClient(
            RecordingLink(user.card.process, Party.PHONE_APP, self.recording, owner=True)
        )
        # Whoever else drives the card (a shop's PoS app, in the tests) uses ``card.process``.
        user.card.process = RecordingLink(  # type: ignore[method-assign]
            user.card.process, Party.POS_APP, self.recording, owner=False
        )
        return user

    def add_merchant(self, name: str, bank: str) -> Merchant:
        merchant = super().add_merchant(name, bank)
        self._person(name, merchant.customer_id)
        merchant.pos.network = self._view(Party.POS_APP, relays=True)
        return merchant

    def add_token_user(self, name: str, bank: str, *, online: int = 0) -> TokenUser:
        user = super().add_token_user(name, bank, online=online)
        self._person(name, user.customer_id)
        user.app.network = self._view(Party.PHONE_APP, relays=True)
        return user

    def transfer_tokens(self, sender: TokenUser, receiver: TokenUser, minor: int) -> Token:
        """An offline token transfer, every message relayed by the two phones (and seen by an
        eavesdropper between them)."""
        return transfer_offline(
            sender.element, receiver.element, Money(minor, self.currency), relay=self._relay
        )

    @property
    def _relay(self) -> Callable[[bytes], bytes]:
        def relay(data: bytes) -> bytes:
            self.recording.add((Party.PHONE_APP, Party.RELAY), data)
            return data

        return relay
