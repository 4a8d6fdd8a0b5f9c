"""The attacker's tools: what a hostile phone, PoS app or network does to the bytes that cross
it (keep, read, alter, re-sign), and the credentials a forger can make or steal. Breaking a
device's secure element goes through :mod:`offpay.device.tamper` only."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from offpay.bank.engine import engine_id
from offpay.crypto.keys import Algorithm, Signer
from offpay.crypto.pki import Authority, Credential, Role
from offpay.device.reader import CardClient
from offpay.device.tamper import extracted_key, read_state, write_back
from offpay.money import Money
from offpay.sim.network import Merchant, User
from offpay.wire.codec import Message, decode, encode
from offpay.wire.envelope import Signed, sign
from offpay.wire.messages import Operation
from offpay.wire.sealed_payment import SealedPayment

SEK = 100  # minor units per krona


def wire(net: Any) -> Any:
    """The network the phones and PoS apps talk over: in process (``OfflineNetwork.network``)
    or HTTP to served intermediaries (``RemoteNetwork.transport``); both send the same bytes."""
    transport = getattr(net, "transport", None)
    return transport if transport is not None else net.network


def client(user: User[Any]) -> CardClient:
    """The card in the attacker's reader: commands the phone app would not send."""
    return CardClient(user.card.process)


def funded(checked: Any, name: str, bank: str, minor: int, *, spare: int = 0) -> User[Any]:
    """A user whose card was topped up with ``minor``, keeping ``spare`` in the online wallet
    (``checked``: the :class:`~offpay.attacks.checked.Checked` referee of the play)."""
    user: User[Any] = checked.net.add_user(name, bank, online=minor + spare)
    checked.top_up(user, minor)
    return user


def begin(user: User[Any], operation: Operation = Operation.SYNC, minor: int = 0) -> bytes:
    """The phone's first half of an online session: PIN, then the card's signed session."""
    c = client(user)
    c.verify_pin(user.pin)
    return c.begin_online(engine_id(user.bank.name), operation, Money(minor, user.bank.currency))


def begin_signed(user: User[Any], operation: Operation = Operation.SYNC, minor: int = 0) -> bytes:
    """:func:`begin` on a card its holder broke: the holder first strips the intermediary's
    key from the card's memory (offpay.device.tamper), so that the card hands over its signed
    session in clear instead of sealed to the intermediary, for the play to alter and re-sign.
    The intermediary takes a session in clear (a card made before sealing) and sends the key
    back with its next instruction."""
    state = read_state(user.card)
    write_back(user.card, dataclasses.replace(state, intake_key=None))
    return begin(user, operation, minor)


def session_and_answer(
    network: Any, user: User[Any], operation: Operation = Operation.SYNC, minor: int = 0
) -> tuple[bytes, bytes]:
    """Open a session on ``user``'s card and fetch its intermediary's signed instruction, which
    the relay keeps instead of delivering. ``network``: anything with ``send(to, kind, data)``,
    in process or over HTTP."""
    session = begin(user, operation, minor)
    return session, network.send(user.bank.name, "card-session", session)


def terminal_upload_and_reset(network: Any, shop: Merchant[Any]) -> tuple[bytes, bytes]:
    """The PoS app's sync, with the terminal's upload and the engine's signed reset kept."""
    upload = shop.module.begin_sync(engine_id(shop.bank.name), shop.pos.records)
    return upload, network.send(shop.bank.name, "terminal-upload", upload)


def payment_to_shop(user: User[Any], shop: Merchant[Any], minor: int) -> bytes:
    """A card's signed payment answering the shop module's request, not yet at the module: in
    clear, as the card keeps it and as the intermediaries see it (the relay carries it sealed
    to the module, offpay.wire.sealed_payment)."""
    request = shop.module.request_payment(client(user).identity(), Money(minor, shop.bank.currency))
    client(user).verify_pin(user.pin)
    client(user).pay(request)
    last = user.card.state.last_payment
    assert last is not None
    return last.to_bytes()


def card_copy(user: User[Any]) -> bytes:
    """The card's own copy of its last payment, in clear: what a card made before sealing
    hands over, and what the tests may read (a relay gets it sealed to the payee)."""
    last = user.card.state.last_payment
    assert last is not None
    return last.to_bytes()


def spoiled_seal(sealed: bytes) -> bytes:
    """A sealed payment with the last byte of its ciphertext changed: all a relay can do to
    what it cannot read."""
    wrapper = decode(sealed, SealedPayment)
    body = wrapper.sealed[:-1] + bytes([wrapper.sealed[-1] ^ 1])
    return encode(dataclasses.replace(wrapper, sealed=body))


def altered(data: bytes, cls: type[Message], **changes: object) -> bytes:
    """The relay changes fields of a signed message and keeps the original signature."""
    env = Signed.from_bytes(data)
    msg = dataclasses.replace(decode(env.payload, cls), **changes)  # type: ignore[type-var]
    return dataclasses.replace(env, payload=encode(msg)).to_bytes()


def resigned(data: bytes, cls: type[Message], credential: Credential, **changes: object) -> bytes:
    """The same message, perhaps changed, signed by ``credential``."""
    msg = dataclasses.replace(decode(Signed.from_bytes(data).payload, cls), **changes)  # type: ignore[type-var]
    return sign(msg, credential).to_bytes()


def payload(data: bytes, cls: type[Any]) -> Any:
    """What a signed message says (read by the attacker, not verified)."""
    return decode(Signed.from_bytes(data).payload, cls)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def rogue(institution: str, subject: str, role: Role) -> Credential:
    """A credential from a CA that calls itself ``institution`` under the attacker's own root."""
    ca = Authority.root(now()).intermediary(institution, now())
    return ca.credential_for(subject, role, now(), Algorithm.ED25519)


def stolen_chain(chain: tuple[bytes, ...]) -> Credential:
    """A genuine certificate chain with the attacker's own key: the key does not match."""
    return Credential(Signer.generate(Algorithm.ED25519), chain)


def broken_card_key(user: User[Any]) -> Credential:
    """SIMULATED HARDWARE BREAK: the key and chain extracted from ``user``'s card."""
    return extracted_key(user.card)
