"""Bytes: what a card and a terminal store at their limits, and what crosses each hop per
payment. A secure element has kilobytes, not megabytes, and a post-quantum signature is fifty
times an Ed25519 one, so these figures decide which algorithm fits which card.

Sizes are canonical encodings (CBOR, DER certificates) of what the device keeps: a real applet
may pack fields more tightly, never much more loosely. Private keys are not counted.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from typing import Any

from offpay.crypto.keys import Algorithm
from offpay.money import Money
from offpay.sim.network import OfflineNetwork
from offpay.wire.codec import Message, encode
from offpay.wire.envelope import Signed

AMOUNT_MINOR = 100


def encoded_size(value: Any) -> int:
    """Bytes a value takes in canonical form: messages as CBOR, byte strings as they are,
    numbers as 8 bytes, tuples and plain records field by field."""
    if value is None:
        return 0
    if isinstance(value, Signed):
        return len(value.to_bytes())
    if isinstance(value, Message):
        return len(encode(value))
    if isinstance(value, bytes | bytearray):
        return len(value)
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, Money):
        return 8 + len(value.currency)
    if isinstance(value, bool | int | float | enum.Enum):
        return 8 if not isinstance(value, bool) else 1
    if isinstance(value, tuple | list | set | frozenset):
        return sum(encoded_size(v) for v in value)
    if isinstance(value, dict):
        return sum(encoded_size(k) + encoded_size(v) for k, v in value.items())
    if dataclasses.is_dataclass(value):
        return sum(encoded_size(getattr(value, f.name)) for f in dataclasses.fields(value))
    raise TypeError(f"cannot size {type(value).__name__}")


def state_breakdown(state: Any) -> dict[str, int]:
    """Bytes per field of a device's state (a dataclass), largest first."""
    sizes = {f.name: encoded_size(getattr(state, f.name)) for f in dataclasses.fields(state)}
    return dict(sorted(sizes.items(), key=lambda kv: -kv[1]))


def _card_bytes(state: Any) -> int:
    """The card's state, its last payment counted once: it is also the newest log entry."""
    total = encoded_size(state)
    last = getattr(state, "last_payment", None)
    if last is not None and any(e.payment == last for e in state.log):
        total -= encoded_size(last)
    return total


class Meter:
    """A card interface that counts the commands and the bytes of every command and response
    (the benchmark and the population simulator weigh a card's traffic with it)."""

    def __init__(self, transmit: Callable[[bytes], bytes]) -> None:
        self.transmit = transmit
        self.sent = 0
        self.received = 0
        self.commands = 0

    def __call__(self, command: bytes) -> bytes:
        response = self.transmit(command)
        self.commands += 1
        self.sent += len(command)
        self.received += len(response)
        return response

    @property
    def total(self) -> int:
        return self.sent + self.received


def measure(algorithm: Algorithm) -> dict[str, Any]:
    """Fill a card and a terminal to the pilot's default limits and weigh them; weigh every
    hop of one payment of each kind and of the uploads at sync."""
    from offpay.relay.phone import PhoneApp

    net = OfflineNetwork(algorithm=algorithm)
    for bank in net.banks:
        net.issue(bank, 1_000_000_00)
    amount = net.money(AMOUNT_MINOR)
    shop = net.add_merchant("shop", "bank-a")
    policy = shop.module.state.policy
    card_limit = policy.card_max_offline_transactions
    terminal_limit = policy.terminal_max_offline_payments
    cards_needed = -(-terminal_limit // card_limit)
    users = []
    for i in range(max(2, cards_needed)):
        user = net.add_user(f"user-{i}", "bank-a", online=1_000_00)
        user.phone.top_up(user.pin, net.money(1_000_00))
        users.append(user)

    # card → terminal, metered at the card interface; the terminal fills to its limit
    meter = Meter(users[0].card.process)
    shop.pos.charge(meter, users[0].pin, amount)
    apdu_card_terminal = meter.total
    paid = 1
    for user in users:
        while (
            shop.module.state.offline_payments < terminal_limit
            and user.card.state.offline_transactions < card_limit
        ):
            shop.pos.charge(user.card.process, user.pin, amount)
            paid += 1
    card_full = users[0].card.state
    terminal_full = shop.module.state
    sealed = [len(r) for r in shop.pos.records]

    # the uploads: a terminal's and a card's sync, weighed on the network
    uploads: dict[str, int] = {}

    def tap(_to: str, kind: str, data: bytes) -> bytes:
        uploads[kind] = uploads.get(kind, 0) + len(data)
        return data

    net.network.taps.append(tap)
    shop.pos.sync()
    users[0].phone.sync(users[0].pin)
    net.network.taps.remove(tap)

    # person to person: two phones, metered at both cards
    payer_meter = Meter(users[1].card.process)
    payee_user = net.add_user("payee", "bank-b")
    payee_meter = Meter(payee_user.card.process)
    payer = PhoneApp(payer_meter, "bank-a", net.network, net.currency)
    payee = PhoneApp(payee_meter, "bank-b", net.network, net.currency)
    users[1].phone.sync(users[1].pin)
    payer_meter.sent = payer_meter.received = 0
    identity = payer.show_identity()
    request = payee.ask(identity, amount)
    payment = payer.pay(users[1].pin, request)
    payee.accept(payee_user.pin, payment)
    return {
        "algorithm": algorithm.value,
        "card_limit_payments": card_limit,
        "terminal_limit_payments": terminal_limit,
        "card_bytes_at_limit": _card_bytes(card_full),
        "card_log_bytes_at_limit": encoded_size(card_full.log),
        "card_breakdown": state_breakdown(card_full),
        "terminal_module_bytes_at_limit": encoded_size(terminal_full),
        "terminal_app_sealed_bytes_at_limit": sum(sealed),
        "terminal_breakdown": state_breakdown(terminal_full),
        "payment_bytes": len(payment),
        "card_terminal_apdu_bytes_per_payment": apdu_card_terminal,
        "p2p_phone_bytes_per_payment": len(identity) + len(request) + len(payment),
        "p2p_apdu_bytes_per_payment": payer_meter.total + payee_meter.total,
        "terminal_upload_bytes_per_payment": round(
            uploads.get("terminal-upload", 0) / terminal_limit
        ),
        "card_session_bytes_per_log_entry": round(uploads.get("card-session", 0) / card_limit),
    }
