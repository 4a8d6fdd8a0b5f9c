"""Bad input to the intermediary engine's and the central bank's request handlers.

Each request kind is given malformed bytes, a broken signature, a request for another receiver,
a forged signer and a replay. A refusal is a typed error and moves nothing; a replay gets the
same answer and moves nothing; money is conserved after every test.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import os
from collections.abc import Callable

import cbor2
import pytest

from offpay.bank.engine import Intermediary, engine_id
from offpay.central.bank import NOTARY_ID
from offpay.crypto.keys import Algorithm
from offpay.crypto.pki import Authority, Credential, Role, TrustStore
from offpay.crypto.pseudonyms import commitment
from offpay.device.reader import CardClient
from offpay.errors import OffpayError, Refused
from offpay.money import Money
from offpay.sim.network import Merchant, OfflineNetwork, User
from offpay.wire.codec import Message, decode, encode
from offpay.wire.envelope import Signed, open_signed, sign
from offpay.wire.messages import (
    CardConfirmation,
    CardIdentity,
    CardSession,
    CreditRequest,
    DebitRequest,
    NotariseRequest,
    OfflinePayment,
    Operation,
    ReserveTransfer,
    SettlementResult,
    SettlementStatus,
)

PIN = "1234"


@dataclasses.dataclass
class World:
    n: OfflineNetwork
    a: Intermediary
    b: Intermediary
    alice: User  # bank-a, card holds SEK 200, online SEK 800
    carol: User  # bank-a, card holds SEK 100
    bob: User  # bank-b, card holds SEK 50
    shop: Merchant  # bank-b
    traffic: list[tuple[str, str, bytes]]
    lose: set[str]  # request kinds the network drops (after recording them)

    def money(self, minor: int) -> Money:
        return self.n.money(minor)

    def sent(self, to: str, kind: str) -> list[bytes]:
        """What ``to`` received of ``kind``, as it reads it: a message a device sealed to an
        intermediary opened (issue 19), for the tests to alter the signed message inside."""
        bank = self.n.banks.get(to)
        opened = bank.intake.open if bank is not None else (lambda data: data)
        return [opened(data) for t, k, data in self.traffic if t == to and k == kind]


def result_for(data: bytes, trust: TrustStore, receiver: str) -> SettlementResult:
    """Read an answer addressed to ``receiver`` (from the notary or an intermediary)."""
    result, _ = open_signed(
        Signed.from_bytes(data),
        SettlementResult,
        trust,
        frozenset({Role.NOTARY, Role.ENGINE}),
        receiver=receiver,
    )
    return result


@pytest.fixture
def w() -> World:
    n = OfflineNetwork()
    n.issue("bank-a", 10_000_00)
    n.issue("bank-b", 10_000_00)
    traffic: list[tuple[str, str, bytes]] = []
    lose: set[str] = set()

    def tap(to: str, kind: str, data: bytes) -> bytes:
        traffic.append((to, kind, data))
        if kind in lose:
            raise Refused("lost in transit", code="network.lost")
        return data

    n.network.taps.append(tap)
    alice = n.add_user("Alice", "bank-a", online=1_000_00)
    carol = n.add_user("Carol", "bank-a", online=1_000_00)
    bob = n.add_user("Bob", "bank-b", online=1_000_00)
    shop = n.add_merchant("Shop", "bank-b")
    alice.phone.top_up(PIN, n.money(200_00))
    carol.phone.top_up(PIN, n.money(100_00))
    bob.phone.top_up(PIN, n.money(50_00))
    traffic.clear()
    return World(n, n.banks["bank-a"], n.banks["bank-b"], alice, carol, bob, shop, traffic, lose)


# --- what must not change ---------------------------------------------------------------------


def ledger(w: World) -> tuple[object, ...]:
    """Everything a refused request must leave alone."""
    devices = [(w.a, w.alice.card_id), (w.a, w.carol.card_id), (w.b, w.bob.card_id)]
    devices.append((w.b, w.shop.terminal_id))
    return (
        w.n.audit(),
        tuple(tuple(bank.wallets().items()) for bank in w.n.banks.values()),
        tuple(bank.in_transit() for bank in w.n.banks.values()),
        tuple(w.n.central.positions()),
        w.n.central.notarised_count(),
        tuple(tuple(bank.device(device)) for bank, device in devices),
    )


def assert_refused(w: World, call: Callable[[], object], code: str, label: str = "") -> OffpayError:
    before = ledger(w)
    with pytest.raises(OffpayError) as exc:
        call()
    assert exc.value.code == code, f"{label} {exc.value}"
    assert ledger(w) == before, label
    w.n.check_conservation()
    return exc.value


def holdings_match_wallets(w: World) -> None:
    """With nothing in transit, what each intermediary's customers hold is what the central
    bank records it as holding for them."""
    for position in w.n.central.positions():
        bank = w.n.banks[position.institution]
        assert bank.in_transit() == w.money(0)
        assert bank.total_held() == position.holdings, position.institution


# --- ways to spoil or forge a request ---------------------------------------------------------


def flip_signature(data: bytes) -> bytes:
    env = Signed.from_bytes(data)
    sig = bytearray(env.signature)
    sig[len(sig) // 2] ^= 0x01
    return dataclasses.replace(env, signature=bytes(sig)).to_bytes()


def resign(data: bytes, cls: type[Message], credential: Credential, **changes: object) -> bytes:
    msg = decode(Signed.from_bytes(data).payload, cls)
    return sign(dataclasses.replace(msg, **changes), credential).to_bytes()  # type: ignore[type-var]


def _patched(good: bytes, **fields: object) -> bytes:
    obj = cbor2.loads(good)
    obj.update(fields)
    return cbor2.dumps(obj, canonical=True)


MALFORMED: dict[str, Callable[[bytes], bytes]] = {
    "empty": lambda good: b"",
    "garbage": lambda good: b"GET / HTTP/1.1\r\n\r\n",
    "truncated": lambda good: good[: len(good) // 2],
    "trailing-byte": lambda good: good + b"\x00",
    "non-canonical": lambda good: cbor2.dumps(dict(reversed(list(cbor2.loads(good).items())))),
    "extra-field": lambda good: _patched(good, extra=1),
    "bare-payload": lambda good: Signed.from_bytes(good).payload,
}


def assert_malformed_refused(
    w: World, handle: Callable[[str, bytes], bytes], kind: str, good: bytes
) -> None:
    """Every way of spoiling ``good`` in MALFORMED is refused as wire.malformed and moves
    nothing (so one test per request kind tries them all in turn)."""
    for name, mangle in MALFORMED.items():
        assert_refused(w, functools.partial(handle, kind, mangle(good)), "wire.malformed", name)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def rogue_engine(institution: str) -> Credential:
    """An engine certified by a CA that calls itself ``institution`` under another root."""
    ca = Authority.root(now()).intermediary(institution, now())
    return ca.credential_for(engine_id(institution), Role.ENGINE, now(), Algorithm.ED25519)


def minted_card(bank: Intermediary, name: str = "minted") -> Credential:
    """A card credential the bank's CA certified, for requests only a card could sign."""
    card_id = f"card:{bank.name}:{name}"
    return bank.ca.credential_for(card_id, Role.CARD, now(), Algorithm.ED25519)


def card_session(
    w: World,
    user: User,
    operation: Operation = Operation.TOP_UP,
    amount: int = 10_00,
    receiver: str | None = None,
) -> bytes:
    """The card's signed session in clear, as the intermediary reads it once it opened what
    the card sealed to it (these tests alter the signed message; tests/test_privacy_relays.py
    tests the sealing)."""
    c = CardClient(user.card.process)
    c.verify_pin(PIN)
    to = receiver if receiver is not None else engine_id(user.bank.name)
    return user.bank.intake.open(c.begin_online(to, operation, w.money(amount)))


def in_clear(payer: User) -> bytes:
    """The payer card's own copy of its last payment: the relay carried it sealed to the
    payee, and settlement requests carry it in clear, as the intermediaries do."""
    last = payer.card.state.last_payment
    assert last is not None
    return last.to_bytes()


def card_pays_shop(w: World, payer: User, amount: int = 30_00) -> bytes:
    c = CardClient(payer.card.process)
    request = w.shop.module.request_payment(c.identity(), w.money(amount))
    c.verify_pin(PIN)
    c.pay(request)
    return in_clear(payer)


def p2p_payment(w: World, payer: User, payee: User, amount: int = 20_00) -> bytes:
    request = payee.phone.ask(payer.phone.show_identity(), w.money(amount))
    payer.phone.pay(PIN, request)
    return in_clear(payer)


def debit_request(w: World, payment: bytes, sender: Intermediary | None = None) -> bytes:
    sender = sender or w.b
    msg = DebitRequest(sender.id, w.a.id, os.urandom(16), Signed.from_bytes(payment))
    return sign(msg, sender.credential).to_bytes()


def lost_credit(w: World, payer: User, amount: int = 30_00) -> bytes:
    """A payment to the shop that bank-a debited and notarised; its credit request to bank-b
    was lost on the way (so it is in transit) and is returned here."""
    in_transit = w.a.in_transit()
    w.lose.add("credit-request")
    w.shop.pos.charge(payer.card.process, PIN, w.money(amount))
    payer.phone.sync(PIN)
    w.lose.discard("credit-request")
    (credit,) = w.sent("bank-b", "credit-request")
    w.traffic.clear()
    assert w.a.in_transit() == in_transit + w.money(amount)
    return credit


def notarise_request(
    w: World, payment: bytes, sender: Intermediary | None = None, **changes: object
) -> bytes:
    sender = sender or w.a
    signed = Signed.from_bytes(payment)
    p = decode(signed.payload, OfflinePayment)
    msg = NotariseRequest(
        sender=sender.id,
        receiver=NOTARY_ID,
        nonce=os.urandom(16),
        pseudonym=sender.pseudonym(p.tx_id),
        commitment=commitment(signed.digest),
        payer_institution=p.payer_institution,
        payee_institution=p.payee_institution,
        amount=p.amount,
    )
    return sign(dataclasses.replace(msg, **changes), sender.credential).to_bytes()


def reserve_transfer(w: World, minor: int, currency: str = "SEK", **changes: object) -> bytes:
    msg = ReserveTransfer(w.a.id, NOTARY_ID, os.urandom(16), Money(minor, currency))
    return sign(dataclasses.replace(msg, **changes), w.a.credential).to_bytes()


# --- unknown request kinds --------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["", "card-sessions", "CARD-SESSION", "notarise", "settle"])
def test_engine_refuses_unknown_request_kind(w: World, kind: str) -> None:
    session = card_session(w, w.alice)
    assert_refused(w, lambda: w.a.handle(kind, session), "bank.unknown_request")


@pytest.mark.parametrize("kind", ["", "card-session", "debit-request", "Notarise", "issue"])
def test_central_refuses_unknown_request_kind(w: World, kind: str) -> None:
    request = reserve_transfer(w, 1_00)
    assert_refused(w, lambda: w.n.central.handle(kind, request), "central.unknown_request")


def test_network_refuses_unknown_party(w: World) -> None:
    session = card_session(w, w.alice)
    assert_refused(
        w, lambda: w.n.network.send("bank-z", "card-session", session), "network.unknown_party"
    )


# --- card-session -----------------------------------------------------------------------------


def test_card_session_malformed(w: World) -> None:
    assert_malformed_refused(w, w.a.handle, "card-session", card_session(w, w.alice))


def test_card_session_bad_signature(w: World) -> None:
    session = flip_signature(card_session(w, w.alice))
    assert_refused(w, lambda: w.a.handle("card-session", session), "crypto.bad_signature")


def test_card_session_altered_amount(w: World) -> None:
    session = card_session(w, w.alice, Operation.TOP_UP, 10_00)
    env = Signed.from_bytes(session)
    bigger = dataclasses.replace(decode(env.payload, CardSession), amount=w.money(700_00))
    bad = dataclasses.replace(env, payload=encode(bigger)).to_bytes()
    assert_refused(w, lambda: w.a.handle("card-session", bad), "crypto.bad_signature")


def test_card_session_for_another_engine(w: World) -> None:
    """A bank-a card's session addressed to bank-b's engine, delivered to bank-a."""
    session = card_session(w, w.alice, receiver=engine_id("bank-b"))
    assert_refused(w, lambda: w.a.handle("card-session", session), "wire.wrong_receiver")


def test_card_session_to_an_intermediary_that_did_not_issue_the_card(w: World) -> None:
    session = card_session(w, w.alice, receiver=engine_id("bank-b"))
    assert_refused(w, lambda: w.b.handle("card-session", session), "crypto.bad_certificate")


def test_card_session_signed_by_a_terminal(w: World) -> None:
    upload = w.shop.module.begin_sync(engine_id("bank-b"), [])
    assert_refused(w, lambda: w.b.handle("card-session", upload), "crypto.bad_certificate")


def test_card_session_from_a_card_never_issued(w: World) -> None:
    """A certificate alone is not enough: the engine must know the device."""
    card = minted_card(w.a)
    state = w.alice.card.state
    msg = CardSession(
        sender=card.identity.id,
        receiver=w.a.id,
        nonce=os.urandom(16),
        seq=0,
        balance=w.money(0),
        instruction_no=0,
        policy_version=state.policy.version,
        revocation_version=0,
        session_no=1,
        operation=Operation.TOP_UP,
        amount=w.money(10_00),
        log=(),
        last_instruction=None,
    )
    data = sign(msg, card).to_bytes()
    assert_refused(w, lambda: w.a.handle("card-session", data), "not_found")


@pytest.mark.parametrize(
    ("operation", "amount", "code"),
    [
        (Operation.TOP_UP, 900_00, "funds.insufficient"),  # online wallet holds SEK 800
        (Operation.DEFUND, 300_00, "funds.insufficient"),  # card holds SEK 200
    ],
)
def test_card_session_beyond_what_is_there(
    w: World, operation: Operation, amount: int, code: str
) -> None:
    session = card_session(w, w.alice, operation, amount)
    assert_refused(w, lambda: w.a.handle("card-session", session), code)


def test_card_session_top_up_above_card_limit(w: World) -> None:
    w.a.fund(w.alice.customer_id, w.money(3_000_00))
    session = card_session(w, w.alice, Operation.TOP_UP, 2_900_00)
    assert_refused(w, lambda: w.a.handle("card-session", session), "limit.card_max_balance")


def test_card_session_replayed_gets_the_same_answer(w: World) -> None:
    session = card_session(w, w.alice, Operation.TOP_UP, 10_00)
    first = w.a.handle("card-session", session)
    after_first = ledger(w)
    assert w.alice.online == w.money(790_00)
    assert w.a.handle("card-session", session) == first
    assert ledger(w) == after_first
    assert w.alice.online == w.money(790_00)
    w.n.check_conservation()


def test_card_session_replayed_after_later_syncs(w: World) -> None:
    session = card_session(w, w.alice, Operation.TOP_UP, 10_00)
    first = w.a.handle("card-session", session)
    CardClient(w.alice.card.process).apply_instruction(first)
    w.alice.phone.sync(PIN)
    before = ledger(w)
    assert w.a.handle("card-session", session) == first
    assert ledger(w) == before
    card = w.alice.card.state
    with pytest.raises(OffpayError) as exc:
        CardClient(w.alice.card.process).apply_instruction(first)
    assert exc.value.code == "wire.replay"
    assert w.alice.card.state == card
    assert w.alice.card_balance == w.alice.shadow == w.money(210_00)
    w.n.check_conservation()


def test_card_session_with_offline_payments_replayed_settles_once(w: World) -> None:
    w.shop.pos.charge(w.alice.card.process, PIN, w.money(30_00))
    session = card_session(w, w.alice, Operation.SYNC, 0)
    first = w.a.handle("card-session", session)
    after_first = ledger(w)
    assert w.shop.wallet == w.money(30_00)
    assert w.a.handle("card-session", session) == first
    assert ledger(w) == after_first
    assert w.shop.wallet == w.money(30_00)
    assert w.alice.shadow == w.money(170_00)
    w.n.check_conservation()


# --- card-confirmation ------------------------------------------------------------------------


def defund_confirmation(w: World) -> bytes:
    w.alice.phone.defund(PIN, w.money(50_00))
    (confirmation,) = w.sent("bank-a", "card-confirmation")
    return confirmation


def test_card_confirmation_malformed(w: World) -> None:
    assert_malformed_refused(w, w.a.handle, "card-confirmation", defund_confirmation(w))


def test_card_confirmation_bad_signature(w: World) -> None:
    confirmation = flip_signature(defund_confirmation(w))
    assert_refused(w, lambda: w.a.handle("card-confirmation", confirmation), "crypto.bad_signature")


def test_card_confirmation_for_another_engine(w: World) -> None:
    confirmation = defund_confirmation(w)
    forged = resign(
        confirmation,
        CardConfirmation,
        minted_card(w.a),
        sender="card:bank-a:minted",
        receiver=engine_id("bank-b"),
    )
    assert_refused(w, lambda: w.a.handle("card-confirmation", forged), "wire.wrong_receiver")


def test_card_confirmation_from_another_intermediarys_card(w: World) -> None:
    w.bob.phone.sync(PIN)
    (confirmation,) = w.sent("bank-b", "card-confirmation")
    assert_refused(
        w, lambda: w.a.handle("card-confirmation", confirmation), "crypto.bad_certificate"
    )


def test_card_confirmation_replayed_releases_a_defund_once(w: World) -> None:
    confirmation = defund_confirmation(w)
    assert w.alice.online == w.money(850_00)
    before = ledger(w)
    assert w.a.handle("card-confirmation", confirmation) == b""
    assert (w.alice.online, w.alice.shadow) == (w.money(850_00), w.money(150_00))
    assert w.alice.card_balance == w.money(150_00)
    assert ledger(w) == before
    w.n.check_conservation()


@pytest.mark.parametrize("seq", [2**31, 2**63, 2**70, -1])
def test_card_confirmation_with_a_counter_no_column_holds_is_refused(w: World, seq: int) -> None:
    """Signed by the genuine card (its own key), so only the counter's range can refuse it."""
    forged = resign(defund_confirmation(w), CardConfirmation, w.alice.card._credential, seq=seq)
    assert_refused(
        w, lambda: w.a.handle("card-confirmation", forged), "device.counter_out_of_range"
    )


@pytest.mark.parametrize("field", ["seq", "session_no", "instruction_no"])
def test_card_session_with_a_counter_no_column_holds_is_refused(w: World, field: str) -> None:
    session = card_session(w, w.alice, Operation.SYNC, 0)
    forged = resign(session, CardSession, w.alice.card._credential, **{field: 2**63})
    assert_refused(w, lambda: w.a.handle("card-session", forged), "device.counter_out_of_range")


@pytest.mark.parametrize("storage", ["memory", "file"])
def test_defund_then_sync_releases_the_money_once(storage: str, tmp_path: object) -> None:
    """A defund moves its amount from the shadow to the online wallet once: when the card
    confirms, not again when the card next synchronises. (With the default in-memory SQLite
    the instruction's "applied" mark is lost, so the next sync releases it a second time.)"""
    url_for = (
        None if storage == "memory" else (lambda name: f"sqlite+pysqlite:///{tmp_path}/{name}.db")
    )
    n = OfflineNetwork() if url_for is None else OfflineNetwork(url_for=url_for)
    n.issue("bank-a", 10_000_00)
    alice = n.add_user("Alice", "bank-a", online=1_000_00)
    alice.phone.top_up(PIN, n.money(200_00))
    alice.phone.defund(PIN, n.money(50_00))
    assert (alice.online, alice.shadow, alice.card_balance) == (
        n.money(850_00),
        n.money(150_00),
        n.money(150_00),
    )
    alice.phone.sync(PIN)
    assert (alice.online, alice.shadow, alice.card_balance) == (
        n.money(850_00),
        n.money(150_00),
        n.money(150_00),
    )
    n.check_conservation()


# --- terminal-upload --------------------------------------------------------------------------


def terminal_upload(w: World, receiver: str = "bank-b/engine") -> bytes:
    """The module's signed upload in clear, as its intermediary reads it (see card_session)."""
    w.shop.pos.charge(w.alice.card.process, PIN, w.money(30_00))
    return w.b.intake.open(w.shop.module.begin_sync(receiver, w.shop.pos.records))


def test_terminal_upload_malformed(w: World) -> None:
    assert_malformed_refused(w, w.b.handle, "terminal-upload", terminal_upload(w))


def test_terminal_upload_bad_signature(w: World) -> None:
    upload = flip_signature(terminal_upload(w))
    assert_refused(w, lambda: w.b.handle("terminal-upload", upload), "crypto.bad_signature")


def test_terminal_upload_for_another_engine(w: World) -> None:
    upload = terminal_upload(w, receiver=engine_id("bank-a"))
    assert_refused(w, lambda: w.b.handle("terminal-upload", upload), "wire.wrong_receiver")


def test_terminal_upload_to_an_intermediary_that_did_not_issue_it(w: World) -> None:
    upload = terminal_upload(w, receiver=engine_id("bank-a"))
    assert_refused(w, lambda: w.a.handle("terminal-upload", upload), "crypto.bad_certificate")


def test_terminal_upload_signed_by_a_card(w: World) -> None:
    session = card_session(w, w.bob, receiver=engine_id("bank-b"))
    assert_refused(w, lambda: w.b.handle("terminal-upload", session), "crypto.bad_certificate")


def test_terminal_upload_replayed_gets_the_same_answer(w: World) -> None:
    upload = terminal_upload(w)
    first = w.b.handle("terminal-upload", upload)
    after_first = ledger(w)
    assert w.shop.wallet == w.money(30_00)
    assert w.b.handle("terminal-upload", upload) == first
    assert ledger(w) == after_first
    w.shop.module.apply_instruction(first)
    w.shop.pos.records.clear()
    w.shop.pos.sync()  # an empty sync after the reset moves nothing either
    assert w.shop.wallet == w.money(30_00)
    assert w.alice.shadow == w.money(170_00)
    w.n.check_conservation()
    holdings_match_wallets(w)


# --- debit-request (payee's intermediary to payer's) ------------------------------------------


def test_debit_request_malformed(w: World) -> None:
    assert_malformed_refused(
        w, w.a.handle, "debit-request", debit_request(w, card_pays_shop(w, w.alice))
    )


def test_debit_request_bad_signature(w: World) -> None:
    request = flip_signature(debit_request(w, card_pays_shop(w, w.alice)))
    assert_refused(w, lambda: w.a.handle("debit-request", request), "crypto.bad_signature")


def test_debit_request_for_another_engine(w: World) -> None:
    request = debit_request(w, card_pays_shop(w, w.alice))
    wrong = resign(request, DebitRequest, w.b.credential, receiver=engine_id("bank-c"))
    assert_refused(w, lambda: w.a.handle("debit-request", wrong), "wire.wrong_receiver")


def test_debit_request_signed_by_a_card(w: World) -> None:
    request = debit_request(w, card_pays_shop(w, w.alice))
    card = minted_card(w.b)
    forged = resign(request, DebitRequest, card, sender=card.identity.id)
    assert_refused(w, lambda: w.a.handle("debit-request", forged), "crypto.bad_certificate")


def test_debit_request_from_an_unknown_ca(w: World) -> None:
    request = debit_request(w, card_pays_shop(w, w.alice))
    forged = resign(request, DebitRequest, rogue_engine("bank-b"))
    assert_refused(w, lambda: w.a.handle("debit-request", forged), "crypto.bad_certificate")


def test_debit_request_with_a_forged_payment(w: World) -> None:
    """The requesting bank is genuine, but the card's signature on the payment is not."""
    request = debit_request(w, flip_signature(card_pays_shop(w, w.alice)))
    assert_refused(w, lambda: w.a.handle("debit-request", request), "crypto.bad_signature")


def test_debit_request_for_a_payment_between_other_parties_settles_it_once(w: World) -> None:
    """bank-b presents a payment from Alice to Carol (both bank-a), as it would a funding
    receipt: the payment is genuine, so bank-a settles it for its two customers, once."""
    payment = p2p_payment(w, w.alice, w.carol)
    request = debit_request(w, payment)
    result = result_for(w.a.handle("debit-request", request), w.b.trust, w.b.id)
    assert result.status is SettlementStatus.DONE
    assert result.notary_receipt != b""
    assert (w.alice.shadow, w.carol.shadow) == (w.money(180_00), w.money(120_00))
    settled = ledger(w)
    again = result_for(
        w.a.handle("debit-request", debit_request(w, _payment_of(request))), w.b.trust, w.b.id
    )
    assert again.status is SettlementStatus.ALREADY
    assert ledger(w) == settled
    w.n.check_conservation()


def test_debit_request_for_a_payer_of_another_bank_is_refused(w: World) -> None:
    """bank-b asks bank-a to pay out a payment Bob (bank-b) made: not bank-a's customer."""
    request = debit_request(w, card_pays_shop(w, w.bob, 10_00))
    before = ledger(w)
    result = result_for(w.a.handle("debit-request", request), w.b.trust, w.b.id)
    assert result.status is SettlementStatus.REFUSED
    assert result.notary_receipt == b""
    assert ledger(w) == before
    w.n.check_conservation()


def test_debit_request_replayed_settles_once(w: World) -> None:
    request = debit_request(w, card_pays_shop(w, w.alice))
    answer = w.a.handle("debit-request", request)
    result = result_for(answer, w.b.trust, w.b.id)
    assert result.status is SettlementStatus.DONE
    assert w.shop.wallet == w.money(30_00)
    settled = ledger(w)
    assert w.a.handle("debit-request", request) == answer  # same nonce: the same answer
    assert ledger(w) == settled
    fresh = debit_request(w, _payment_of(request))
    again = result_for(w.a.handle("debit-request", fresh), w.b.trust, w.b.id)
    assert again.status is SettlementStatus.ALREADY  # new nonce: recognised, not repeated
    assert ledger(w) == settled
    assert w.alice.shadow == w.money(170_00)
    w.n.check_conservation()
    holdings_match_wallets(w)


def _payment_of(request: bytes) -> bytes:
    return decode(Signed.from_bytes(request).payload, DebitRequest).payment.to_bytes()


# --- credit-request (payer's intermediary to payee's) -----------------------------------------


def test_credit_request_malformed(w: World) -> None:
    assert_malformed_refused(w, w.b.handle, "credit-request", lost_credit(w, w.alice))


def test_credit_request_bad_signature(w: World) -> None:
    credit = flip_signature(lost_credit(w, w.alice))
    assert_refused(w, lambda: w.b.handle("credit-request", credit), "crypto.bad_signature")


def test_credit_request_for_another_engine(w: World) -> None:
    credit = lost_credit(w, w.alice)
    wrong = resign(credit, CreditRequest, w.a.credential, receiver=engine_id("bank-c"))
    assert_refused(w, lambda: w.b.handle("credit-request", wrong), "wire.wrong_receiver")


def test_credit_request_from_an_unknown_ca(w: World) -> None:
    credit = lost_credit(w, w.alice)
    forged = resign(credit, CreditRequest, rogue_engine("bank-a"))
    assert_refused(w, lambda: w.b.handle("credit-request", forged), "crypto.bad_certificate")


def test_credit_request_from_a_bank_that_is_not_the_payers(w: World) -> None:
    credit = lost_credit(w, w.alice)
    own = resign(credit, CreditRequest, w.b.credential, sender=w.b.id, receiver=w.b.id)
    assert_refused(w, lambda: w.b.handle("credit-request", own), "bank.wrong_parties")


def _receipt_signed_by_engine(w: World, credit: bytes) -> bytes:
    req = decode(Signed.from_bytes(credit).payload, CreditRequest)
    tx_id = decode(req.payment.payload, OfflinePayment).tx_id
    fake = SettlementResult(
        w.a.id,
        w.a.id,
        os.urandom(16),
        tx_id,
        req.payment.digest,
        decode(req.payment.payload, OfflinePayment).amount,
        SettlementStatus.DONE,
        "",
        "",
        b"",
    )
    return sign(fake, w.a.credential).to_bytes()


@pytest.mark.parametrize(
    ("receipt", "code"),
    [
        ("empty", "wire.malformed"),
        ("garbage", "wire.malformed"),
        ("signed-by-the-payers-engine", "crypto.bad_certificate"),
        ("notary-receipt-of-another-payment", "bank.no_receipt"),
        ("notary-answer-to-a-reserve-transfer", "bank.no_receipt"),
    ],
)
def test_credit_request_without_a_valid_notary_receipt(w: World, receipt: str, code: str) -> None:
    credit = lost_credit(w, w.alice, 30_00)
    other = decode(Signed.from_bytes(lost_credit(w, w.carol, 20_00)).payload, CreditRequest)
    forged_receipt = {
        "empty": lambda: b"",
        "garbage": lambda: b"\xa1\x61t\x66signed",
        "signed-by-the-payers-engine": lambda: _receipt_signed_by_engine(w, credit),
        "notary-receipt-of-another-payment": lambda: other.notary_receipt,
        "notary-answer-to-a-reserve-transfer": lambda: w.n.central.handle(
            "reserve-transfer", reserve_transfer(w, 0)
        ),
    }[receipt]()
    forged = resign(credit, CreditRequest, w.a.credential, notary_receipt=forged_receipt)
    assert_refused(w, lambda: w.b.handle("credit-request", forged), code)
    assert w.shop.wallet == w.money(0)


def test_credit_request_with_the_receipt_of_another_payment_with_the_same_id(w: World) -> None:
    """The notary recorded a SEK 1 payment; the payer's intermediary (dishonest, or fed by a
    cloned card) asks for a SEK 900 payment with the same id, passing that receipt on. The
    receipt must cover this very payment (its evidence and amount), not merely its id;
    otherwise bank-b credits SEK 900 while the notary moved SEK 1 of holdings to it."""
    card = minted_card(w.a, "clone")
    identity = CardIdentity(card.identity.id, "bank-a", card.chain, os.urandom(16))

    def payment(minor: int) -> bytes:
        # each half consistent with its own request: only the receipt can tell them apart
        request = w.shop.module.request_payment(encode(identity), w.money(minor))
        msg = OfflinePayment(
            sender=card.identity.id,
            receiver=w.shop.terminal_id,
            payer_institution="bank-a",
            payee_institution="bank-b",
            payer_seq=1,
            amount=w.money(minor),
            request=Signed.from_bytes(request),
            payer_received=w.money(0),
            funding=(),
        )
        return sign(msg, card).to_bytes()

    small, big = payment(1_00), payment(900_00)
    receipt = w.n.central.handle("notarise", notarise_request(w, small))
    assert result_for(receipt, w.a.trust, w.a.id).status is SettlementStatus.DONE
    credit = CreditRequest(w.a.id, w.b.id, os.urandom(16), Signed.from_bytes(big), receipt)
    data = sign(credit, w.a.credential).to_bytes()
    with pytest.raises(OffpayError) as exc:
        w.b.handle("credit-request", data)
    assert exc.value.code == "bank.no_receipt"
    assert w.shop.wallet == w.money(0)


def test_credit_request_genuine_once_then_replayed(w: World) -> None:
    credit = lost_credit(w, w.alice, 30_00)
    w.n.check_conservation()  # the lost credit is in transit, not lost
    answer = w.b.handle("credit-request", credit)
    assert result_for(answer, w.a.trust, w.a.id).status is SettlementStatus.DONE
    assert w.shop.wallet == w.money(30_00)
    assert w.b.handle("credit-request", credit) == answer
    assert w.shop.wallet == w.money(30_00)
    assert w.a.retry_pending() == 1  # bank-a learns it was credited (ALREADY)
    assert w.shop.wallet == w.money(30_00)
    w.n.check_conservation()
    holdings_match_wallets(w)


# --- notarise (central bank) ------------------------------------------------------------------


def test_notarise_malformed(w: World) -> None:
    assert_malformed_refused(
        w, w.n.central.handle, "notarise", notarise_request(w, card_pays_shop(w, w.alice))
    )


def test_notarise_bad_signature(w: World) -> None:
    request = flip_signature(notarise_request(w, card_pays_shop(w, w.alice)))
    assert_refused(w, lambda: w.n.central.handle("notarise", request), "crypto.bad_signature")


def test_notarise_for_another_receiver(w: World) -> None:
    request = notarise_request(w, card_pays_shop(w, w.alice), receiver=w.b.id)
    assert_refused(w, lambda: w.n.central.handle("notarise", request), "wire.wrong_receiver")


def test_notarise_from_the_payees_bank(w: World) -> None:
    request = notarise_request(w, card_pays_shop(w, w.alice), sender=w.b)
    assert_refused(w, lambda: w.n.central.handle("notarise", request), "central.not_payer")


def test_notarise_signed_by_a_card(w: World) -> None:
    card = minted_card(w.a)
    good = notarise_request(w, card_pays_shop(w, w.alice))
    forged = resign(good, NotariseRequest, card, sender=card.identity.id)
    assert_refused(w, lambda: w.n.central.handle("notarise", forged), "crypto.bad_certificate")


def test_notarise_from_an_unknown_ca(w: World) -> None:
    good = notarise_request(w, card_pays_shop(w, w.alice))
    forged = resign(good, NotariseRequest, rogue_engine("bank-a"))
    assert_refused(w, lambda: w.n.central.handle("notarise", forged), "crypto.bad_certificate")


def test_notarise_in_another_currency(w: World) -> None:
    request = notarise_request(w, card_pays_shop(w, w.alice), amount=Money(30_00, "EUR"))
    assert_refused(w, lambda: w.n.central.handle("notarise", request), "central.currency")


def test_notarise_replayed_and_repeated(w: World) -> None:
    payment = card_pays_shop(w, w.alice)
    request = notarise_request(w, payment)
    answer = w.n.central.handle("notarise", request)
    assert result_for(answer, w.a.trust, w.a.id).status is SettlementStatus.DONE
    recorded = ledger(w)
    assert w.n.central.handle("notarise", request) == answer
    assert ledger(w) == recorded
    again = w.n.central.handle("notarise", notarise_request(w, payment))
    assert result_for(again, w.a.trust, w.a.id).status is SettlementStatus.ALREADY
    assert ledger(w) == recorded
    conflicting = notarise_request(w, payment, commitment=bytes(32))
    result = result_for(w.n.central.handle("notarise", conflicting), w.a.trust, w.a.id)
    assert (result.status, result.code) == (SettlementStatus.REFUSED, "central.conflict")
    assert ledger(w) == recorded
    w.n.check_conservation()


def _notarise_outcome(w: World, request: bytes) -> str:
    """What the notary did with ``request``: "refused" (a typed error), "recorded", or
    "recursion" (it never stopped retrying). Decided outside the handler, so that a failure
    report does not drag a thousand chained exceptions along."""
    try:
        w.n.central.handle("notarise", request)
    except OffpayError:
        return "refused"
    except RecursionError:
        return "recursion"
    return "recorded"


@pytest.mark.parametrize("minor", [-500_00, -1])
def test_notarise_negative_amount_is_refused(w: World, minor: int) -> None:
    """A payer's intermediary must not be able to pull holdings from the payee's."""
    request = notarise_request(w, card_pays_shop(w, w.alice), amount=w.money(minor))
    positions = w.n.central.positions()
    assert _notarise_outcome(w, request) == "refused"
    assert w.n.central.positions() == positions
    assert w.n.central.notarised_count() == 0


def test_notarise_more_than_the_payers_holdings_is_a_typed_refusal(w: World) -> None:
    """bank-a's customers hold SEK 2 000 in all; a notarisation of SEK 5 000 must be refused
    with a typed error, not end in unbounded recursion on the holdings CHECK constraint."""
    request = notarise_request(w, card_pays_shop(w, w.alice), amount=w.money(5_000_00))
    positions = w.n.central.positions()
    assert _notarise_outcome(w, request) == "refused"
    assert w.n.central.positions() == positions
    assert w.n.central.notarised_count() == 0


# --- reserve-transfer (central bank) ----------------------------------------------------------


def test_reserve_transfer_malformed(w: World) -> None:
    assert_malformed_refused(w, w.n.central.handle, "reserve-transfer", reserve_transfer(w, 10_00))


def test_reserve_transfer_bad_signature(w: World) -> None:
    request = flip_signature(reserve_transfer(w, 10_00))
    code = "crypto.bad_signature"
    assert_refused(w, lambda: w.n.central.handle("reserve-transfer", request), code)


def test_reserve_transfer_for_another_receiver(w: World) -> None:
    request = reserve_transfer(w, 10_00, receiver=w.b.id)
    code = "wire.wrong_receiver"
    assert_refused(w, lambda: w.n.central.handle("reserve-transfer", request), code)


@pytest.mark.parametrize("signer", ["card", "rogue-ca"])
def test_reserve_transfer_forged_signer(w: World, signer: str) -> None:
    good = reserve_transfer(w, 10_00)
    if signer == "card":
        card = minted_card(w.a)
        forged = resign(good, ReserveTransfer, card, sender=card.identity.id)
    else:
        forged = resign(good, ReserveTransfer, rogue_engine("bank-a"))
    code = "crypto.bad_certificate"
    assert_refused(w, lambda: w.n.central.handle("reserve-transfer", forged), code)


@pytest.mark.parametrize(
    ("minor", "currency", "code"),
    [
        (10_00, "EUR", "central.currency"),
        (8_000_01, "SEK", "funds.insufficient"),  # bank-a's reserve is SEK 8 000
        (-2_000_01, "SEK", "funds.insufficient"),  # bank-a's customers hold SEK 2 000
    ],
)
def test_reserve_transfer_refused_amounts(w: World, minor: int, currency: str, code: str) -> None:
    request = reserve_transfer(w, minor, currency)
    assert_refused(w, lambda: w.n.central.handle("reserve-transfer", request), code)


def test_reserve_transfer_replayed_moves_once(w: World) -> None:
    w.a.fund(w.alice.customer_id, w.money(100_00))
    (request,) = w.sent("central-bank", "reserve-transfer")
    funded = ledger(w)
    answer = w.n.central.handle("reserve-transfer", request)
    assert result_for(answer, w.a.trust, w.a.id).status is SettlementStatus.DONE
    assert ledger(w) == funded
    assert w.n.central.handle("reserve-transfer", request) == answer
    assert ledger(w) == funded
    w.n.check_conservation()
    holdings_match_wallets(w)


# --- certificates that expired ----------------------------------------------------------------


def test_expired_card_certificate_is_refused_even_when_seen_before(w: World) -> None:
    """Services check validity periods. Alice's card chain was verified (without a time)
    while settling her offline payment; six years on, when her 5-year certificate has expired,
    her card's session must be refused like Carol's, whose chain was never cached."""
    w.shop.pos.charge(w.alice.card.process, PIN, w.money(10_00))
    w.alice.phone.sync(PIN)  # bank-a settles Alice's offline payment
    later = now() + dt.timedelta(days=6 * 365)
    w.a.clock = lambda: later
    carols = card_session(w, w.carol, Operation.SYNC, 0)
    assert_refused(w, lambda: w.a.handle("card-session", carols), "crypto.expired")
    alices = card_session(w, w.alice, Operation.SYNC, 0)
    assert_refused(w, lambda: w.a.handle("card-session", alices), "crypto.expired")
