"""Bad input to the card applet and to the terminal's secure module.

Every card command and module method that takes data is given (a) malformed bytes, (b) a
message whose signature does not verify, (c) a message for somebody else and (d) a replay.
Each must be refused with a stable typed code and leave the device exactly as it was; the
only state change a refusal may cause is the try a wrong PIN costs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from collections.abc import Callable

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from offpay.bank.engine import Intermediary, engine_id
from offpay.crypto.keys import Algorithm
from offpay.crypto.pki import Authority, Credential, Role
from offpay.device.apdu import CLA_ISO, CLA_PROPRIETARY, SW, Command, Ins, Response, raise_for
from offpay.device.card import Card, Transient, key_fingerprint
from offpay.device.reader import CardClient
from offpay.device.terminal import TerminalModule
from offpay.errors import OffpayError
from offpay.money import Money
from offpay.sim.network import Merchant, OfflineNetwork, User
from offpay.wire.codec import decode, encode
from offpay.wire.enciphered_pin import encipher_pin, open_challenge
from offpay.wire.envelope import Signed, sign
from offpay.wire.messages import (
    CardIdentity,
    CardInstruction,
    CardSession,
    OfflinePayment,
    Operation,
    PaymentAsk,
    PaymentRequest,
    Personalisation,
    SessionStart,
    TerminalInstruction,
)

PIN = "1234"

# --- the world every test starts from ---------------------------------------------------------


@dataclasses.dataclass
class World:
    n: OfflineNetwork
    alice: User  # bank-a, card holds SEK 200
    carol: User  # bank-a, card holds SEK 100
    bob: User  # bank-b, card holds nothing
    shop: Merchant  # bank-b
    shop2: Merchant  # bank-b
    scratch: dict[str, bytes] = dataclasses.field(default_factory=dict)

    def money(self, minor: int) -> Money:
        return self.n.money(minor)


@pytest.fixture
def w() -> World:
    n = OfflineNetwork()
    n.issue("bank-a", 10_000_00)
    n.issue("bank-b", 10_000_00)
    alice = n.add_user("Alice", "bank-a", online=1_000_00)
    carol = n.add_user("Carol", "bank-a", online=1_000_00)
    bob = n.add_user("Bob", "bank-b", online=1_000_00)
    shop = n.add_merchant("Shop", "bank-b")
    shop2 = n.add_merchant("Shop 2", "bank-b")
    alice.phone.top_up(PIN, n.money(200_00))
    carol.phone.top_up(PIN, n.money(100_00))
    return World(n, alice, carol, bob, shop, shop2)


@pytest.fixture
def other() -> World:
    """A second, unrelated network: same names, another central-bank root."""
    n = OfflineNetwork()
    n.issue("bank-a", 1_000_00)
    n.issue("bank-b", 1_000_00)
    alice = n.add_user("Alice", "bank-a", online=500_00)
    carol = n.add_user("Carol", "bank-a")
    bob = n.add_user("Bob", "bank-b")
    shop = n.add_merchant("Shop", "bank-b")
    shop2 = n.add_merchant("Shop 2", "bank-b")
    alice.phone.top_up(PIN, n.money(100_00))
    return World(n, alice, carol, bob, shop, shop2)


# --- talking to the card ----------------------------------------------------------------------


def transmit(card: Card, ins: int, data: bytes = b"", cla: int = CLA_PROPRIETARY) -> Response:
    return Response.from_bytes(card.process(Command(cla, ins, 0, 0, data).to_bytes()))


def card_error(
    card: Card, ins: int, data: bytes, cla: int = CLA_PROPRIETARY, label: str = ""
) -> tuple[OffpayError, int]:
    response = transmit(card, ins, data, cla)
    assert not response.ok, f"the card accepted a command it must refuse {label}"
    with pytest.raises(OffpayError) as exc:
        raise_for(response)
    return exc.value, response.sw


def assert_card_refuses(
    card: Card, ins: int, data: bytes, code: str, cla: int = CLA_PROPRIETARY, label: str = ""
) -> int:
    """The card refuses with ``code`` and its state, sealed and in RAM, is exactly what it
    was; returns the SW."""
    before = card.state, card.transient
    error, sw = card_error(card, ins, data, cla, label)
    assert error.code == code, f"{label} {error}"
    assert (card.state, card.transient) == before, label
    return sw


def assert_module_refuses(
    module: TerminalModule, call: Callable[[], object], code: str, label: str = ""
) -> None:
    before = module.state
    with pytest.raises(OffpayError) as exc:
        call()
    assert exc.value.code == code, f"{label} {exc.value}"
    assert module.state == before, label


def client(user: User) -> CardClient:
    return CardClient(user.card.process)


# --- ways to spoil a message ------------------------------------------------------------------


def flip_signature(data: bytes) -> bytes:
    env = Signed.from_bytes(data)
    sig = bytearray(env.signature)
    sig[len(sig) // 2] ^= 0x01
    return dataclasses.replace(env, signature=bytes(sig)).to_bytes()


def resign(data: bytes, cls: type, credential: Credential, **changes: object) -> bytes:
    """The same message (perhaps changed), signed by somebody else."""
    msg = decode(Signed.from_bytes(data).payload, cls)
    return sign(dataclasses.replace(msg, **changes), credential).to_bytes()


def _patched(good: bytes, **fields: object) -> bytes:
    obj = cbor2.loads(good)
    obj.update(fields)
    return cbor2.dumps(obj, canonical=True)


def _reordered(good: bytes) -> bytes:
    obj = cbor2.loads(good)
    return cbor2.dumps(dict(reversed(list(obj.items()))))  # keys out of canonical order


MALFORMED: dict[str, Callable[[bytes], bytes]] = {
    "empty": lambda good: b"",
    "garbage": lambda good: bytes(range(7, 57)),
    "truncated": lambda good: good[: len(good) // 2],
    "trailing-byte": lambda good: good + b"\x00",
    "cbor-list": lambda good: cbor2.dumps(["signed", b"", b""]),
    "non-canonical": _reordered,
    "extra-field": lambda good: _patched(good, extra=1),
    "wrong-type-tag": lambda good: _patched(good, t="card-status"),
}


def malformed_variants(good: bytes) -> list[tuple[str, bytes]]:
    """Every way of spoiling ``good`` in MALFORMED. A refusal changes nothing, so one test
    per command tries them all in turn."""
    return [(name, mangle(good)) for name, mangle in MALFORMED.items()]


def rogue_credential(institution: str, subject: str, role: Role) -> Credential:
    """A credential from a CA that calls itself ``institution`` but chains to another root."""
    now = dt.datetime.now(dt.UTC)
    ca = Authority.root(now).intermediary(institution, now)
    return ca.credential_for(subject, role, now, Algorithm.ED25519)


# --- flows that produce valid messages to spoil -----------------------------------------------


def shop_request(w: World, payer: User, merchant: Merchant | None = None, amount: int = 30_00):
    merchant = merchant or w.shop
    return merchant.module.request_payment(client(payer).identity(), w.money(amount))


def in_clear(payer: User) -> bytes:
    """The signed payment ``payer``'s card made last, as it keeps it: the card hands it out
    sealed to the payee (offpay.wire.sealed_payment), and a payee takes it in clear too, so
    the checks on what is inside are spoiled and tested on this copy."""
    last = payer.card.state.last_payment
    assert last is not None
    return last.to_bytes()


def card_pays_shop(w: World, payer: User, merchant: Merchant | None = None) -> bytes:
    """A valid signed payment to ``merchant``, not yet given to its module."""
    request = shop_request(w, payer, merchant)
    c = client(payer)
    c.verify_pin(PIN)
    c.pay(request)
    return in_clear(payer)


def p2p_payment(w: World, payer: User, payee: User, amount: int = 80_00) -> bytes:
    request = payee.phone.ask(payer.phone.show_identity(), w.money(amount))
    payer.phone.pay(PIN, request)
    return in_clear(payer)


def ask_data(w: World, payer: User, amount: int = 50_00, **changes: object) -> bytes:
    identity = decode(client(payer).identity(), CardIdentity)
    identity = dataclasses.replace(identity, **changes)
    return encode(PaymentAsk(identity, w.money(amount)))


def online_instruction(
    w: World, user: User, operation: Operation = Operation.TOP_UP, amount: int = 10_00
) -> bytes:
    """Open an online session on ``user``'s card and fetch its engine's signed answer."""
    c = client(user)
    c.verify_pin(PIN)
    session = c.begin_online(engine_id(user.bank.name), operation, w.money(amount))
    return w.n.network.send(user.bank.name, "card-session", session)


def start_data(
    operation: Operation = Operation.TOP_UP,
    amount: int = 10_00,
    currency: str = "SEK",
    receiver: str = "bank-a/engine",
) -> bytes:
    return encode(SessionStart(receiver, operation, Money(amount, currency)))


def issue_blank(bank: Intermediary, name: str) -> tuple[Card, bytes]:
    """A card the bank issued, with the personalisation captured instead of delivered."""
    card = Card.manufacture()
    captured: list[bytes] = []

    def relay(raw: bytes) -> bytes:
        cmd = Command.from_bytes(raw)
        if cmd.ins == Ins.PERSONALISE:
            captured.append(cmd.data)
            return Response(b"", SW.OK).to_bytes()
        return card.process(raw)

    bank.issue_card(bank.open_customer(name), relay, PIN)
    (perso,) = captured
    assert not card.is_personalised
    return card, perso


# --- the card interface itself ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("cla", "ins", "sw"),
    [
        (CLA_PROPRIETARY, 0x99, SW.INS_NOT_SUPPORTED),
        (CLA_PROPRIETARY, Ins.VERIFY_PIN, SW.INS_NOT_SUPPORTED),  # VERIFY is ISO class only
        (CLA_ISO, Ins.PAY, SW.INS_NOT_SUPPORTED),  # offpay commands are proprietary class
        (0xA0, Ins.PAY, SW.CLA_NOT_SUPPORTED),
        (0xFF, 0x99, SW.CLA_NOT_SUPPORTED),
    ],
)
def test_unknown_instruction_or_class(w: World, cla: int, ins: int, sw: int) -> None:
    card = w.alice.card
    before = card.state
    response = transmit(card, ins, b"\x01\x02", cla)
    assert response.sw == sw
    assert response.data == b""
    assert card.state == before


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x80",
        b"\x80\xd0\x00",
        b"\x80\xd0\x00\x00\x05\x01\x02",  # says 5 data bytes, carries 2
        b"\x80\xd0\x00\x00\x01\x01\x02\x03",  # says 1 data byte, carries 3 (no Le fits)
        b"\x80\xd0\x00\x00\x00\x01",  # extended length field cut short
        b"\x80\xd0\x00\x00\x00\x01\x00\x01",  # extended: says 256, carries 1
    ],
    ids=["empty", "cla-only", "no-p2", "short-lc-long", "short-lc-short", "ext-cut", "ext-long"],
)
def test_truncated_or_inconsistent_apdu(w: World, raw: bytes) -> None:
    card = w.alice.card
    before = card.state
    response = Response.from_bytes(card.process(raw))
    assert response.sw == SW.WRONG_LENGTH
    with pytest.raises(OffpayError) as exc:
        raise_for(response)
    assert exc.value.code == "wire.malformed"
    assert card.state == before


@pytest.mark.parametrize(
    "ins", [Ins.GET_IDENTITY, Ins.GET_STATUS, Ins.PAY, Ins.RECEIVE, Ins.APPLY_INSTRUCTION]
)
def test_blank_card_refuses_everything_but_personalisation(ins: Ins) -> None:
    card = Card.manufacture()
    error, sw = card_error(card, ins, b"\x01")
    assert error.code == "device.blank"
    assert sw == SW.CONDITIONS_NOT_SATISFIED
    assert not card.is_personalised


def test_status_words_follow_the_error_kind(w: World) -> None:
    card = w.alice.card
    c = client(w.alice)
    c.verify_pin(PIN)
    request = shop_request(w, w.alice)
    assert assert_card_refuses(card, Ins.PAY, b"\x01", "wire.malformed") == SW.WRONG_DATA
    bad = flip_signature(request)
    assert assert_card_refuses(card, Ins.PAY, bad, "crypto.bad_signature") == (
        SW.SECURITY_NOT_SATISFIED
    )


# --- PERSONALISE ------------------------------------------------------------------------------


def test_personalise_malformed(w: World) -> None:
    card, perso = issue_blank(w.alice.bank, "Dora")
    for name, bad in malformed_variants(perso):
        error, sw = card_error(card, Ins.PERSONALISE, bad, label=name)
        assert (error.code, sw) == ("wire.malformed", SW.WRONG_DATA), name
        assert not card.is_personalised, name
    CardClient(card.process).personalise(perso)  # nothing was used up: the genuine one works
    assert card.state.balance == w.money(0)


def test_personalise_bad_signature(w: World) -> None:
    card, perso = issue_blank(w.alice.bank, "Dora")
    error, _ = card_error(card, Ins.PERSONALISE, flip_signature(perso))
    assert error.code == "crypto.bad_signature"
    assert not card.is_personalised


def test_personalise_altered_pin_digest(w: World) -> None:
    """A relay that swaps in a PIN of its choosing breaks the issuer's signature."""
    card, perso = issue_blank(w.alice.bank, "Dora")
    env = Signed.from_bytes(perso)
    msg = decode(env.payload, Personalisation)
    altered = dataclasses.replace(msg, pin_digest=bytes(32))
    bad = dataclasses.replace(env, payload=encode(altered)).to_bytes()
    error, _ = card_error(card, Ins.PERSONALISE, bad)
    assert error.code == "crypto.bad_signature"
    assert not card.is_personalised


def test_personalise_for_another_card(w: World) -> None:
    card_x, perso_x = issue_blank(w.alice.bank, "Dora")
    card_y, _ = issue_blank(w.alice.bank, "Erik")
    error, _ = card_error(card_y, Ins.PERSONALISE, perso_x)
    assert error.code == "wire.wrong_receiver"
    assert not card_y.is_personalised
    CardClient(card_x.process).personalise(perso_x)
    assert card_x.is_personalised


def test_personalise_with_a_certificate_for_another_key(w: World) -> None:
    """Even the genuine issuer cannot bind a card to a certificate for another key."""
    bank = w.alice.bank
    card_x, _ = issue_blank(bank, "Dora")
    _, perso_y = issue_blank(bank, "Erik")
    x_fingerprint = key_fingerprint(CardClient(card_x.process).public_key())
    forged = resign(perso_y, Personalisation, bank.credential, receiver=x_fingerprint)
    error, _ = card_error(card_x, Ins.PERSONALISE, forged)
    assert error.code == "crypto.bad_certificate"
    assert not card_x.is_personalised


def test_personalise_replayed(w: World) -> None:
    card, perso = issue_blank(w.alice.bank, "Dora")
    CardClient(card.process).personalise(perso)
    assert_card_refuses(card, Ins.PERSONALISE, perso, "device.personalised")


# --- VERIFY_PIN -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pin",
    [b"", b"123", b"1234567890123", b"12a4", b"12 4", b"\xff\xfe\xfd\xfc", "١٢٣٤".encode()],
    ids=["empty", "short", "long", "letter", "space", "binary", "non-ascii-digits"],
)
def test_verify_pin_malformed_costs_no_try(w: World, pin: bytes) -> None:
    sw = assert_card_refuses(w.alice.card, Ins.VERIFY_PIN, pin, "wire.malformed", cla=CLA_ISO)
    assert sw == SW.WRONG_DATA
    assert w.alice.card.state.pin_tries_left == 3


def enciphered(card: Card, pin: str) -> bytes:
    """``pin`` enciphered to the card's fresh PIN challenge, as a PIN entry device does."""
    challenge = Response.from_bytes(card.process(Command(CLA_ISO, Ins.GET_CHALLENGE).to_bytes()))
    return encipher_pin(pin, open_challenge(challenge.data, None))


def test_three_wrong_pins_block_the_card(w: World) -> None:
    card = w.alice.card
    request = shop_request(w, w.alice)  # the card holds a live challenge and request
    seen = []
    for _ in range(3):
        error, sw = card_error(card, Ins.VERIFY_PIN, enciphered(card, "9999"), CLA_ISO)
        seen.append((error.code, sw, card.state.pin_tries_left))
    assert seen == [
        ("pin.wrong", 0x63C2, 2),
        ("pin.wrong", 0x63C1, 1),
        ("pin.blocked", SW.AUTH_BLOCKED, 0),
    ]
    # The right PIN no longer helps, and nothing that needs it goes through.
    assert assert_card_refuses(card, Ins.VERIFY_PIN, b"", "pin.blocked", CLA_ISO) == (
        SW.AUTH_BLOCKED
    )
    assert not card.transient.pin_verified
    assert_card_refuses(card, Ins.PAY, request, "pin.blocked")
    assert_card_refuses(card, Ins.BEGIN_ONLINE, start_data(), "pin.blocked")
    assert client(w.alice).status().pin_tries_left == 0


def test_right_pin_resets_the_tries(w: World) -> None:
    c = client(w.alice)
    for _ in range(2):
        with pytest.raises(OffpayError):
            c.verify_pin("0000")
    c.verify_pin(PIN)
    assert w.alice.card.state.pin_tries_left == 3
    assert w.alice.card.transient.pin_verified


def test_wrong_pin_withdraws_an_earlier_right_one(w: World) -> None:
    c = client(w.alice)
    request = shop_request(w, w.alice)
    c.verify_pin(PIN)
    with pytest.raises(OffpayError):
        c.verify_pin("0000")
    assert_card_refuses(w.alice.card, Ins.PAY, request, "pin.required")


def test_a_reset_forgets_the_pin_and_the_challenge(w: World) -> None:
    """A card pulled out after its PIN (or a power cut) is not left ready to pay for whoever
    holds it next, and a request for the challenge it had is void."""
    card, c = w.alice.card, client(w.alice)
    request = shop_request(w, w.alice)
    c.verify_pin(PIN)
    sealed = card.memory.blob
    card.reset()
    assert card.memory.blob is sealed  # sealed memory is untouched
    assert card.transient == Transient()
    assert_card_refuses(card, Ins.PAY, request, "wire.replay")  # its challenge is gone
    fresh = shop_request(w, w.alice)
    assert_card_refuses(card, Ins.PAY, fresh, "pin.required")  # and so is the PIN
    c.verify_pin(PIN)
    c.pay(fresh)
    assert card.state.balance == w.money(170_00)


def test_the_challenge_and_a_right_pin_stay_in_ram(w: World) -> None:
    """GET_IDENTITY and a right PIN write no sealed memory; what the PIN tries count does."""
    card, c = w.alice.card, client(w.alice)
    sealed = card.memory.blob
    c.identity()
    c.verify_pin(PIN)
    assert card.memory.blob is sealed
    with pytest.raises(OffpayError):
        c.verify_pin("0000")
    assert card.memory.blob is not sealed and card.state.pin_tries_left == 2
    sealed = card.memory.blob
    c.verify_pin(PIN)  # the tries go back to three: sealed
    assert card.memory.blob is not sealed and card.state.pin_tries_left == 3


# --- PAY --------------------------------------------------------------------------------------


def test_pay_malformed(w: World) -> None:
    request = shop_request(w, w.alice)
    client(w.alice).verify_pin(PIN)
    for name, bad in malformed_variants(request):
        assert_card_refuses(w.alice.card, Ins.PAY, bad, "wire.malformed", label=name)


def test_pay_signed_message_of_another_type(w: World) -> None:
    shop_request(w, w.alice)
    client(w.alice).verify_pin(PIN)
    upload = w.shop.module.begin_sync(engine_id("bank-b"), [])  # signed by a terminal too
    assert_card_refuses(w.alice.card, Ins.PAY, upload, "wire.malformed")


def test_pay_bad_signature(w: World) -> None:
    request = shop_request(w, w.alice)
    client(w.alice).verify_pin(PIN)
    assert_card_refuses(w.alice.card, Ins.PAY, flip_signature(request), "crypto.bad_signature")


def test_pay_amount_altered_by_the_relay(w: World) -> None:
    request = shop_request(w, w.alice, amount=30_00)
    env = Signed.from_bytes(request)
    cheaper = dataclasses.replace(decode(env.payload, PaymentRequest), amount=w.money(1))
    altered = dataclasses.replace(env, payload=encode(cheaper)).to_bytes()
    client(w.alice).verify_pin(PIN)
    assert_card_refuses(w.alice.card, Ins.PAY, altered, "crypto.bad_signature")


def test_pay_request_signed_by_an_engine(w: World) -> None:
    """Only a terminal or a card may ask for a payment."""
    request = shop_request(w, w.alice)
    bank_b = w.n.banks["bank-b"]
    forged = resign(request, PaymentRequest, bank_b.credential, sender=bank_b.id)
    client(w.alice).verify_pin(PIN)
    assert_card_refuses(w.alice.card, Ins.PAY, forged, "crypto.bad_certificate")


def test_pay_request_from_a_terminal_of_another_root(w: World) -> None:
    request = shop_request(w, w.alice)
    rogue = rogue_credential("bank-b", "terminal:bank-b:rogue", Role.TERMINAL)
    forged = resign(request, PaymentRequest, rogue, sender="terminal:bank-b:rogue")
    client(w.alice).verify_pin(PIN)
    assert_card_refuses(w.alice.card, Ins.PAY, forged, "crypto.bad_certificate")


def test_pay_request_for_another_card(w: World) -> None:
    for_carol = shop_request(w, w.carol)
    shop_request(w, w.alice)  # Alice's card has a live challenge of its own
    client(w.alice).verify_pin(PIN)
    assert_card_refuses(w.alice.card, Ins.PAY, for_carol, "wire.wrong_receiver")


def test_pay_request_with_another_cards_challenge(w: World) -> None:
    """A relay forges Alice's identity around Carol's challenge; the module signs it, but
    Alice's card refuses a challenge that is not its own."""
    carols = decode(client(w.carol).identity(), CardIdentity)
    alices = decode(client(w.alice).identity(), CardIdentity)
    forged = dataclasses.replace(alices, challenge=carols.challenge)
    request = w.shop.module.request_payment(encode(forged), w.money(30_00))
    client(w.alice).verify_pin(PIN)
    assert_card_refuses(w.alice.card, Ins.PAY, request, "wire.replay")


def test_pay_request_for_an_earlier_challenge(w: World) -> None:
    old = shop_request(w, w.alice)
    client(w.alice).identity()  # a new challenge replaces the old one
    client(w.alice).verify_pin(PIN)
    assert_card_refuses(w.alice.card, Ins.PAY, old, "wire.replay")


def test_pay_same_request_twice(w: World) -> None:
    request = shop_request(w, w.alice)
    c = client(w.alice)
    c.verify_pin(PIN)
    c.pay(request)
    c.verify_pin(PIN)
    assert_card_refuses(w.alice.card, Ins.PAY, request, "wire.replay")
    assert w.alice.card.state.balance == w.money(170_00)


def test_pay_without_pin(w: World) -> None:
    request = shop_request(w, w.alice)
    assert not w.alice.card.transient.pin_verified
    sw = assert_card_refuses(w.alice.card, Ins.PAY, request, "pin.required")
    assert sw == SW.CONDITIONS_NOT_SATISFIED


# --- REQUEST_PAYMENT --------------------------------------------------------------------------


def test_request_payment_malformed(w: World) -> None:
    for name, bad in malformed_variants(ask_data(w, w.alice)):
        assert_card_refuses(w.bob.card, Ins.REQUEST_PAYMENT, bad, "wire.malformed", label=name)


def test_request_payment_payer_certificate_tampered(w: World) -> None:
    chain = decode(client(w.alice).identity(), CardIdentity).chain
    leaf = bytearray(chain[0])
    leaf[-1] ^= 0x01  # inside the issuer's signature
    data = ask_data(w, w.alice, chain=(bytes(leaf), *chain[1:]))
    assert_card_refuses(w.bob.card, Ins.REQUEST_PAYMENT, data, "crypto.bad_certificate")


@pytest.mark.parametrize(
    "changes",
    [{"card": "card:bank-a:someone-else"}, {"institution": "bank-b"}],
    ids=["other-card-id", "other-institution"],
)
def test_request_payment_identity_does_not_match_certificate(
    w: World, changes: dict[str, str]
) -> None:
    data = ask_data(w, w.alice, **changes)
    assert_card_refuses(w.bob.card, Ins.REQUEST_PAYMENT, data, "crypto.bad_certificate")


def test_request_payment_from_a_terminal_identity(w: World) -> None:
    module = w.shop.module.state
    data = ask_data(w, w.alice, card=module.terminal_id, institution="bank-b", chain=module.chain)
    assert_card_refuses(w.bob.card, Ins.REQUEST_PAYMENT, data, "crypto.bad_certificate")


def test_request_payment_from_a_card_of_another_root(w: World, other: World) -> None:
    data = ask_data(w, other.alice)
    assert_card_refuses(w.bob.card, Ins.REQUEST_PAYMENT, data, "crypto.bad_certificate")


def test_request_payment_from_itself(w: World) -> None:
    data = ask_data(w, w.bob)
    assert_card_refuses(w.bob.card, Ins.REQUEST_PAYMENT, data, "device.self_payment")


@pytest.mark.parametrize(
    ("amount", "code"),
    [
        (Money(0), "device.bad_amount"),
        (Money(-5_00), "device.bad_amount"),
        (Money(5_00, "EUR"), "device.wrong_currency"),
        (Money(3_000_01), "limit.card_max_balance"),
    ],
    ids=["zero", "negative", "other-currency", "above-max-balance"],
)
def test_request_payment_bad_amount(w: World, amount: Money, code: str) -> None:
    identity = decode(client(w.alice).identity(), CardIdentity)
    data = encode(PaymentAsk(identity, amount))
    assert_card_refuses(w.bob.card, Ins.REQUEST_PAYMENT, data, code)


def test_abandoned_requests_do_not_block_the_card_after_sync(w: World) -> None:
    """A recipient asks several payers who then walk away. After the card synchronises, it
    must be able to ask again: nothing on the card cancels or expires an open request, so
    four abandoned asks leave it unable to receive a person-to-person payment for good."""
    for _ in range(4):
        w.bob.phone.ask(w.alice.phone.show_identity(), w.money(10_00))
    w.bob.phone.sync(PIN)
    request = w.bob.phone.ask(w.alice.phone.show_identity(), w.money(10_00))
    payment = w.alice.phone.pay(PIN, request)
    assert w.bob.phone.accept(PIN, payment).balance == w.money(10_00)


# --- RECEIVE ----------------------------------------------------------------------------------


def test_receive_malformed(w: World) -> None:
    payment = p2p_payment(w, w.alice, w.bob)
    client(w.bob).verify_pin(PIN)
    for name, bad in malformed_variants(payment):
        assert_card_refuses(w.bob.card, Ins.RECEIVE, bad, "wire.malformed", label=name)


def test_receive_signed_message_of_another_type(w: World) -> None:
    p2p_payment(w, w.alice, w.bob)
    c = client(w.alice)
    c.verify_pin(PIN)
    session = c.begin_online(engine_id("bank-a"), Operation.SYNC, w.money(0))  # card-signed
    client(w.bob).verify_pin(PIN)
    assert_card_refuses(w.bob.card, Ins.RECEIVE, session, "wire.malformed")


def test_receive_bad_signature(w: World) -> None:
    payment = p2p_payment(w, w.alice, w.bob)
    client(w.bob).verify_pin(PIN)
    assert_card_refuses(w.bob.card, Ins.RECEIVE, flip_signature(payment), "crypto.bad_signature")


@pytest.mark.parametrize("to", ["carol", "shop"])
def test_receive_payment_for_somebody_else(w: World, to: str) -> None:
    w.bob.phone.ask(w.alice.phone.show_identity(), w.money(80_00))  # Bob has an open request
    payment = p2p_payment(w, w.alice, w.carol) if to == "carol" else card_pays_shop(w, w.alice)
    client(w.bob).verify_pin(PIN)
    assert_card_refuses(w.bob.card, Ins.RECEIVE, payment, "wire.wrong_receiver")


def test_receive_same_payment_twice(w: World) -> None:
    payment = p2p_payment(w, w.alice, w.bob)
    w.bob.phone.accept(PIN, payment)
    client(w.bob).verify_pin(PIN)
    assert_card_refuses(w.bob.card, Ins.RECEIVE, payment, "wire.replay")
    assert w.bob.card.state.balance == w.money(80_00)


def _altered_request_copies(w: World, request: Signed[PaymentRequest]) -> dict[str, Signed]:
    """The payee's own signed request, altered three ways that a device checking only the
    request's fields (not the exact bytes it signed) could miss."""
    other_chain = w.carol.card.state.chain
    return {
        "another chain": dataclasses.replace(request, chain=other_chain),
        "another signature": Signed.from_bytes(flip_signature(request.to_bytes())),
        "another payload": dataclasses.replace(
            request,
            payload=encode(
                dataclasses.replace(decode(request.payload, PaymentRequest), amount=w.money(1))
            ),
        ),
    }


def _rogue_payment(payer: User, payment: bytes, **changes: object) -> bytes:
    """``payment`` changed and signed again with the payer card's own key: what a payer card
    whose applet was subverted could send."""
    credential = Credential(payer.card._signer, payer.card.state.chain)
    return resign(payment, OfflinePayment, credential, **changes)


def test_receive_a_payment_carrying_an_altered_copy_of_the_request(w: World) -> None:
    """The payee card recognises its own request by the exact bytes it signed (it does not
    verify its own signature again): any other copy is refused and changes nothing."""
    payment = p2p_payment(w, w.alice, w.bob)
    request = decode(Signed.from_bytes(payment).payload, OfflinePayment).request
    client(w.bob).verify_pin(PIN)
    for name, altered in _altered_request_copies(w, request).items():
        rogue = _rogue_payment(w.alice, payment, request=altered)
        assert_card_refuses(w.bob.card, Ins.RECEIVE, rogue, "crypto.bad_signature", label=name)
    w.bob.phone.accept(PIN, payment)  # the payment as the payer's card made it still goes in
    assert w.bob.card.state.balance == w.money(80_00)


def test_receive_without_pin(w: World) -> None:
    payment = p2p_payment(w, w.alice, w.bob)
    assert_card_refuses(w.bob.card, Ins.RECEIVE, payment, "pin.required")


# --- BEGIN_ONLINE -----------------------------------------------------------------------------
# SessionStart comes from the holder's own phone and is not signed: the card signs the session
# it opens, names its receiver, and accepts an answer only from that receiver (see below).


def test_begin_online_malformed(w: World) -> None:
    client(w.alice).verify_pin(PIN)
    for name, bad in malformed_variants(start_data()):
        assert_card_refuses(w.alice.card, Ins.BEGIN_ONLINE, bad, "wire.malformed", label=name)


def test_begin_online_unknown_operation(w: World) -> None:
    client(w.alice).verify_pin(PIN)
    data = _patched(start_data(), operation="steal")
    assert_card_refuses(w.alice.card, Ins.BEGIN_ONLINE, data, "wire.malformed")


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (start_data(Operation.SYNC, 1), "device.bad_amount"),
        (start_data(Operation.TOP_UP, 0), "device.bad_amount"),
        (start_data(Operation.DEFUND, -5_00), "device.bad_amount"),
        (start_data(Operation.TOP_UP, 5_00, "EUR"), "device.wrong_currency"),
    ],
    ids=["sync-with-amount", "zero-top-up", "negative-defund", "other-currency"],
)
def test_begin_online_bad_amount(w: World, data: bytes, code: str) -> None:
    client(w.alice).verify_pin(PIN)
    assert_card_refuses(w.alice.card, Ins.BEGIN_ONLINE, data, code)


def test_begin_online_without_pin(w: World) -> None:
    assert_card_refuses(w.alice.card, Ins.BEGIN_ONLINE, start_data(), "pin.required")


# --- APPLY_INSTRUCTION ------------------------------------------------------------------------


def test_apply_instruction_malformed(w: World) -> None:
    instruction = online_instruction(w, w.alice)
    for name, bad in malformed_variants(instruction):
        code = "wire.malformed"
        assert_card_refuses(w.alice.card, Ins.APPLY_INSTRUCTION, bad, code, label=name)


def test_apply_instruction_signed_message_of_another_type(w: World) -> None:
    online_instruction(w, w.alice)
    current = w.alice.bank.current_policy()
    assert current is not None
    policy = current[0].to_bytes()  # signed by the card's own engine, but not an instruction
    assert_card_refuses(w.alice.card, Ins.APPLY_INSTRUCTION, policy, "wire.malformed")


def test_apply_instruction_bad_signature(w: World) -> None:
    instruction = online_instruction(w, w.alice)
    bad = flip_signature(instruction)
    assert_card_refuses(w.alice.card, Ins.APPLY_INSTRUCTION, bad, "crypto.bad_signature")


def test_apply_instruction_balance_altered(w: World) -> None:
    instruction = online_instruction(w, w.alice)
    env = Signed.from_bytes(instruction)
    richer = dataclasses.replace(decode(env.payload, CardInstruction), balance=w.money(3_000_00))
    bad = dataclasses.replace(env, payload=encode(richer)).to_bytes()
    assert_card_refuses(w.alice.card, Ins.APPLY_INSTRUCTION, bad, "crypto.bad_signature")


def test_apply_instruction_for_another_card(w: World) -> None:
    for_carol = online_instruction(w, w.carol)
    online_instruction(w, w.alice)  # Alice's card has an open session too
    assert_card_refuses(w.alice.card, Ins.APPLY_INSTRUCTION, for_carol, "wire.wrong_receiver")


def test_apply_instruction_from_another_intermediary(w: World) -> None:
    for_bob = online_instruction(w, w.bob)
    online_instruction(w, w.alice)
    assert_card_refuses(w.alice.card, Ins.APPLY_INSTRUCTION, for_bob, "crypto.bad_certificate")


def test_apply_instruction_from_a_rogue_ca_named_like_the_issuer(w: World) -> None:
    instruction = online_instruction(w, w.alice)
    rogue = rogue_credential("bank-a", engine_id("bank-a"), Role.ENGINE)
    forged = resign(instruction, CardInstruction, rogue, balance=w.money(3_000_00))
    assert_card_refuses(w.alice.card, Ins.APPLY_INSTRUCTION, forged, "crypto.bad_certificate")


def test_apply_instruction_to_a_session_opened_with_another_party(w: World) -> None:
    """The card's own engine answers a session the card opened with somebody else."""
    c = client(w.alice)
    c.verify_pin(PIN)
    session = c.begin_online("bank-a/other-engine", Operation.SYNC, w.money(0))
    nonce = decode(Signed.from_bytes(session).payload, CardSession).nonce
    state = w.alice.card.state
    bank = w.alice.bank
    answer = CardInstruction(
        sender=bank.id,
        receiver=w.alice.card_id,
        nonce=nonce,
        instruction_no=state.instruction_no + 1,
        expected_seq=state.seq,
        operation=Operation.SYNC,
        balance=w.money(3_000_00),
        clear_through_seq=state.seq,
        policy=None,
        revocations=None,
    )
    data = sign(answer, bank.credential).to_bytes()
    assert_card_refuses(w.alice.card, Ins.APPLY_INSTRUCTION, data, "wire.replay")


def test_apply_instruction_twice(w: World) -> None:
    instruction = online_instruction(w, w.alice)
    client(w.alice).apply_instruction(instruction)
    assert w.alice.card.state.balance == w.money(210_00)
    assert_card_refuses(w.alice.card, Ins.APPLY_INSTRUCTION, instruction, "wire.replay")


def test_apply_old_top_up_after_a_later_sync(w: World) -> None:
    old = online_instruction(w, w.alice, Operation.TOP_UP, 10_00)
    client(w.alice).apply_instruction(old)
    w.alice.phone.sync(PIN)
    assert_card_refuses(w.alice.card, Ins.APPLY_INSTRUCTION, old, "wire.replay")
    # Nor does it fit a session that is open when it is replayed.
    online_instruction(w, w.alice, Operation.SYNC, 0)
    assert_card_refuses(w.alice.card, Ins.APPLY_INSTRUCTION, old, "wire.replay")
    assert w.alice.card.state.balance == w.money(210_00)


def test_apply_instruction_of_a_superseded_session(w: World) -> None:
    first = online_instruction(w, w.alice, Operation.TOP_UP, 10_00)
    online_instruction(w, w.alice, Operation.SYNC, 0)  # a second session replaces the first
    assert_card_refuses(w.alice.card, Ins.APPLY_INSTRUCTION, first, "wire.replay")


def test_apply_instruction_after_the_card_changed(w: World) -> None:
    instruction = online_instruction(w, w.alice)
    w.shop.pos.charge(w.alice.card.process, PIN, w.money(5_00))
    code = "device.stale_instruction"
    assert_card_refuses(w.alice.card, Ins.APPLY_INSTRUCTION, instruction, code)


# --- properties over arbitrary input ----------------------------------------------------------

DATA_COMMANDS = [
    Ins.PERSONALISE,
    Ins.PAY,
    Ins.REQUEST_PAYMENT,
    Ins.RECEIVE,
    Ins.BEGIN_ONLINE,
    Ins.APPLY_INSTRUCTION,
]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ins=st.sampled_from(DATA_COMMANDS), data=st.binary(max_size=400))
def test_arbitrary_bytes_never_change_the_card(w: World, ins: Ins, data: bytes) -> None:
    if not w.alice.card.transient.pin_verified:
        client(w.alice).verify_pin(PIN)
    before = w.alice.card.state, w.alice.card.transient
    response = transmit(w.alice.card, ins, data)
    assert not response.ok
    assert (w.alice.card.state, w.alice.card.transient) == before


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    field=st.sampled_from(["payload", "signature"]),
    position=st.integers(min_value=0, max_value=10_000),
    xor=st.integers(min_value=1, max_value=255),
)
def test_any_change_to_an_instruction_is_refused(
    w: World, field: str, position: int, xor: int
) -> None:
    if w.alice.card.state.session is None:
        w.scratch["instruction"] = online_instruction(w, w.alice)
    env = Signed.from_bytes(w.scratch["instruction"])
    value = bytearray(getattr(env, field))
    value[position % len(value)] ^= xor
    bad = dataclasses.replace(env, **{field: bytes(value)}).to_bytes()
    before = w.alice.card.state
    response = transmit(w.alice.card, Ins.APPLY_INSTRUCTION, bad)
    assert not response.ok
    assert w.alice.card.state == before


# --- terminal module: request_payment ---------------------------------------------------------


def test_terminal_request_payment_malformed(w: World) -> None:
    module = w.shop.module
    for name, bad in malformed_variants(client(w.alice).identity()):
        call = functools.partial(module.request_payment, bad, w.money(5_00))
        assert_module_refuses(module, call, "wire.malformed", label=name)


@pytest.mark.parametrize(
    "kind", ["tampered-certificate", "other-card-id", "terminal-chain", "other-root"]
)
def test_terminal_request_payment_bad_identity(
    w: World, kind: str, request: pytest.FixtureRequest
) -> None:
    identity = decode(client(w.alice).identity(), CardIdentity)
    if kind == "tampered-certificate":
        leaf = bytearray(identity.chain[0])
        leaf[-1] ^= 0x01
        identity = dataclasses.replace(identity, chain=(bytes(leaf), *identity.chain[1:]))
    elif kind == "other-card-id":
        identity = dataclasses.replace(identity, card=w.carol.card_id)
    elif kind == "terminal-chain":
        s = w.shop2.module.state
        identity = dataclasses.replace(
            identity, card=s.terminal_id, institution="bank-b", chain=s.chain
        )
    else:
        other: World = request.getfixturevalue("other")
        identity = decode(client(other.alice).identity(), CardIdentity)
    module = w.shop.module
    assert_module_refuses(
        module,
        lambda: module.request_payment(encode(identity), w.money(5_00)),
        "crypto.bad_certificate",
    )


@pytest.mark.parametrize(
    "amount", [Money(0), Money(-1_00), Money(5_00, "EUR")], ids=["zero", "negative", "eur"]
)
def test_terminal_request_payment_bad_amount(w: World, amount: Money) -> None:
    identity = client(w.alice).identity()
    module = w.shop.module
    assert_module_refuses(
        module, lambda: module.request_payment(identity, amount), "device.bad_amount"
    )


# --- terminal module: accept_payment ----------------------------------------------------------


def test_terminal_accept_payment_malformed(w: World) -> None:
    module = w.shop.module
    for name, bad in malformed_variants(card_pays_shop(w, w.alice)):
        call = functools.partial(module.accept_payment, bad)
        assert_module_refuses(module, call, "wire.malformed", label=name)


def test_terminal_accept_payment_bad_signature(w: World) -> None:
    payment = flip_signature(card_pays_shop(w, w.alice))
    module = w.shop.module
    assert_module_refuses(module, lambda: module.accept_payment(payment), "crypto.bad_signature")


def test_terminal_accept_a_payment_carrying_an_altered_copy_of_the_request(w: World) -> None:
    """The module recognises its own request by the exact bytes it signed (it does not verify
    its own signature again): any other copy is refused and changes nothing."""
    payment = card_pays_shop(w, w.alice)
    request = decode(Signed.from_bytes(payment).payload, OfflinePayment).request
    module = w.shop.module
    for name, altered in _altered_request_copies(w, request).items():
        rogue = _rogue_payment(w.alice, payment, request=altered)
        call = functools.partial(module.accept_payment, rogue)
        assert_module_refuses(module, call, "crypto.bad_signature", label=name)
    w.shop.pos.receive(payment)
    assert module.state.offline_payments == 1


def test_terminal_accept_payment_for_another_terminal(w: World) -> None:
    shop_request(w, w.carol)  # this module has an open request of its own
    payment = card_pays_shop(w, w.alice, w.shop2)
    module = w.shop.module
    assert_module_refuses(module, lambda: module.accept_payment(payment), "wire.wrong_receiver")


def test_terminal_accept_person_to_person_payment(w: World) -> None:
    payment = p2p_payment(w, w.alice, w.bob)
    module = w.shop.module
    assert_module_refuses(module, lambda: module.accept_payment(payment), "wire.wrong_receiver")


def test_terminal_accept_same_payment_twice(w: World) -> None:
    payment = card_pays_shop(w, w.alice)
    w.shop.pos.receive(payment)
    module = w.shop.module
    assert module.state.offline_payments == 1
    before = module.state
    # The same payment again is a resubmission whose record was lost: the record is handed
    # back, and nothing is counted twice.
    assert module.accept_payment(payment)
    assert module.state.offline_payments == 1 and module.state.received == before.received
    assert module.state.seq == before.seq


def test_terminal_accept_payment_again_after_sync(w: World) -> None:
    payment = card_pays_shop(w, w.alice)
    w.shop.pos.receive(payment)
    w.shop.pos.sync()
    module = w.shop.module
    assert module.state.offline_payments == 0
    assert_module_refuses(module, lambda: module.accept_payment(payment), "wire.replay")
    assert w.shop.wallet == w.money(30_00)


# --- terminal module: begin_sync --------------------------------------------------------------


def two_sealed(w: World) -> list[bytes]:
    w.shop.pos.charge(w.alice.card.process, PIN, w.money(10_00))
    w.shop.pos.charge(w.carol.card.process, PIN, w.money(20_00))
    assert len(w.shop.pos.records) == 2
    return list(w.shop.pos.records)


def _altered(record: bytes, position: int) -> bytes:
    changed = bytearray(record)
    changed[position] ^= 0x01
    return bytes(changed)


@pytest.mark.parametrize("position", [0, 20, -1], ids=["nonce", "ciphertext", "tag"])
def test_begin_sync_altered_record(w: World, position: int) -> None:
    first, second = two_sealed(w)
    module = w.shop.module
    records = [first, _altered(second, position)]
    assert_module_refuses(
        module,
        lambda: module.begin_sync(engine_id("bank-b"), records),
        "device.records_missing",
    )


def test_begin_sync_missing_record(w: World) -> None:
    first, _ = two_sealed(w)
    module = w.shop.module
    assert_module_refuses(
        module, lambda: module.begin_sync(engine_id("bank-b"), [first]), "device.records_missing"
    )


def test_begin_sync_records_of_another_terminal(w: World) -> None:
    first, _ = two_sealed(w)
    w.shop2.pos.charge(w.alice.card.process, PIN, w.money(5_00))
    foreign = w.shop2.pos.records
    module = w.shop.module
    assert_module_refuses(
        module,
        lambda: module.begin_sync(engine_id("bank-b"), [first, *foreign]),
        "device.records_missing",
    )


def test_begin_sync_old_record_in_place_of_a_new_one(w: World) -> None:
    w.shop.pos.charge(w.alice.card.process, PIN, w.money(10_00))
    old = w.shop.pos.records[0]
    w.shop.pos.sync()
    w.shop.pos.charge(w.carol.card.process, PIN, w.money(20_00))
    module = w.shop.module
    assert_module_refuses(
        module, lambda: module.begin_sync(engine_id("bank-b"), [old]), "device.records_missing"
    )


def test_begin_sync_tolerates_order_and_junk(w: World) -> None:
    first, second = two_sealed(w)
    upload = w.shop.module.begin_sync(engine_id("bank-b"), [b"", b"junk" * 9, second, first])
    assert len(Signed.from_bytes(w.n.banks["bank-b"].intake.open(upload)).payload) > 0
    assert w.shop.module.state.session_nonce is not None


# --- terminal module: apply_instruction -------------------------------------------------------


def terminal_instruction(w: World, merchant: Merchant) -> bytes:
    upload = merchant.module.begin_sync(engine_id("bank-b"), merchant.pos.records)
    return w.n.network.send("bank-b", "terminal-upload", upload)


def test_terminal_apply_instruction_malformed(w: World) -> None:
    two_sealed(w)
    module = w.shop.module
    for name, bad in malformed_variants(terminal_instruction(w, w.shop)):
        call = functools.partial(module.apply_instruction, bad)
        assert_module_refuses(module, call, "wire.malformed", label=name)


def test_terminal_apply_instruction_bad_signature(w: World) -> None:
    two_sealed(w)
    bad = flip_signature(terminal_instruction(w, w.shop))
    module = w.shop.module
    assert_module_refuses(module, lambda: module.apply_instruction(bad), "crypto.bad_signature")


def test_terminal_apply_instruction_for_another_terminal(w: World) -> None:
    two_sealed(w)
    for_shop2 = terminal_instruction(w, w.shop2)
    terminal_instruction(w, w.shop)  # shop's module has an open sync of its own
    module = w.shop.module
    assert_module_refuses(
        module, lambda: module.apply_instruction(for_shop2), "wire.wrong_receiver"
    )


def test_terminal_apply_instruction_from_a_rogue_ca(w: World) -> None:
    two_sealed(w)
    instruction = terminal_instruction(w, w.shop)
    rogue = rogue_credential("bank-b", engine_id("bank-b"), Role.ENGINE)
    forged = resign(instruction, TerminalInstruction, rogue)
    module = w.shop.module
    assert_module_refuses(
        module, lambda: module.apply_instruction(forged), "crypto.bad_certificate"
    )


def test_terminal_apply_instruction_twice(w: World) -> None:
    two_sealed(w)
    instruction = terminal_instruction(w, w.shop)
    module = w.shop.module
    module.apply_instruction(instruction)
    assert module.state.offline_payments == 0
    assert_module_refuses(module, lambda: module.apply_instruction(instruction), "wire.replay")


def test_terminal_apply_old_instruction_after_a_later_sync(w: World) -> None:
    two_sealed(w)
    old = terminal_instruction(w, w.shop)
    module = w.shop.module
    module.apply_instruction(old)
    w.shop.pos.records.clear()
    w.shop.pos.charge(w.alice.card.process, PIN, w.money(5_00))
    terminal_instruction(w, w.shop)  # a new sync is open when the old reset is replayed
    assert_module_refuses(module, lambda: module.apply_instruction(old), "wire.replay")
    assert module.state.offline_payments == 1
