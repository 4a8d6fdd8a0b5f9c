"""The settlement plan (offpay.bank.plan) is a pure decision over an upload and the ledger's
state: these tests hold its rules for all inputs, with no database and no network."""

from __future__ import annotations

from types import SimpleNamespace

from hypothesis import given
from hypothesis import strategies as st

from offpay.bank.plan import Debited, Entry, PayerState, plan_credits, plan_debits
from offpay.bank.records import VerifiedPayment
from offpay.money import Money
from offpay.wire.codec import encode
from offpay.wire.envelope import Signed
from offpay.wire.messages import OfflinePayment, PaymentRequest, payment_tx_id

CARDS = ("card:a", "card:b", "card:c")
TERMINALS = ("terminal:x", "terminal:y")


def _payment(payer: str, seq: int, minor: int, payee: str = "terminal:x") -> Entry:
    request = PaymentRequest(payee, payer, "bank-a", b"r" * 16, b"c" * 16, Money(minor, "SEK"))
    payment = OfflinePayment(
        payer,
        payee,
        "bank-a",
        "bank-a",
        seq,
        Money(minor, "SEK"),
        Signed(encode(request), b"s" * 64, ()),
        Money.zero("SEK"),
        (),
    )
    signed = Signed(encode(payment), bytes([seq % 256]) * 64, ())
    record = VerifiedPayment(
        payment_tx_id(payer, seq),
        payer,
        payee,
        "bank-a",
        "bank-a",
        seq,
        Money(minor, "SEK"),
        b"r" * 16,
        signed.digest,
        False,
    )
    return Entry(0, signed.to_bytes(), record)


def _indexed(entries: list[Entry]) -> list[Entry]:
    return [Entry(i, e.data, e.payment) for i, e in enumerate(entries)]


def test_an_entry_decodes_to_the_payment_its_record_was_read_from() -> None:
    entry = _payment("card:a", 3, 250)
    signed, payment = entry.decoded()
    assert signed.to_bytes() == entry.data and signed.digest == entry.payment.digest
    assert (payment.tx_id, payment.sender, payment.amount) == (
        entry.payment.tx_id,
        entry.payment.sender,
        entry.payment.amount,
    )


def _device(status: str = "active", last_seq: int = 0, account: str = "") -> SimpleNamespace:
    return SimpleNamespace(status=status, last_seq=last_seq, account_id=account)


uploads = st.lists(
    st.tuples(st.sampled_from(CARDS), st.integers(1, 6), st.integers(1, 500)), max_size=12
).map(lambda rows: _indexed([_payment(c, s, m) for c, s, m in rows]))


@st.composite
def ledgers(draw: st.DrawFn, entries: list[Entry]) -> PayerState:
    devices = {
        c: _device(
            draw(st.sampled_from(["active", "active", "blocked"])),
            draw(st.integers(0, 3)),
            f"{c}/shadow",
        )
        for c in CARDS
        if draw(st.booleans()) or draw(st.booleans())
    }
    debited = {
        e.payment.tx_id: Debited(
            draw(st.sampled_from([e.payment.digest, b"x" * 32])), draw(st.booleans()), True
        )
        for e in entries
        if draw(st.integers(0, 4)) == 0
    }
    queued = {e.payment.tx_id for e in entries if draw(st.integers(0, 9)) == 0}
    waiting = {c for c in CARDS if draw(st.integers(0, 5)) == 0}
    balances = {f"{c}/shadow": draw(st.integers(0, 3000)) for c in CARDS}
    return PayerState(devices, debited, queued, waiting, balances)


@given(st.data(), uploads)
def test_every_entry_has_exactly_one_place_and_a_payers_group_stays_together(
    data: st.DataObject, entries: list[Entry]
) -> None:
    state = data.draw(ledgers(entries))
    plan = plan_debits(entries, state)
    placed = [e.index for e in plan.debit + plan.settled + plan.one_by_one]
    assert sorted(placed) == [e.index for e in entries]
    slow = {e.payment.sender for e in plan.one_by_one}
    fast = {e.payment.sender for e in plan.debit + plan.settled}
    assert not slow & fast  # a payer's payments keep their order on one path


@given(st.data(), uploads)
def test_what_the_batch_debits_is_covered_new_and_past_the_cards_counter(
    data: st.DataObject, entries: list[Entry]
) -> None:
    state = data.draw(ledgers(entries))
    plan = plan_debits(entries, state)
    by_payer: dict[str, int] = {}
    for e in plan.debit:
        device = state.devices[e.payment.sender]
        assert device.status == "active"
        assert e.payment.sender not in state.waiting
        assert e.payment.tx_id not in state.debited and e.payment.tx_id not in state.queued
        assert e.payment.payer_seq > device.last_seq
        by_payer[e.payment.sender] = by_payer.get(e.payment.sender, 0) + e.payment.amount.minor
    for payer, total in by_payer.items():
        assert total <= state.balances[state.devices[payer].account_id]
    ids = [e.payment.tx_id for e in plan.debit]
    assert len(ids) == len(set(ids))  # a repeated id never reaches the batch
    for e in plan.settled:  # answered as settled only with the very same evidence, complete
        row = state.debited[e.payment.tx_id]
        assert row.evidence == e.payment.digest and row.notarised and row.credited


def test_a_shadow_wallet_one_unit_short_sends_the_payers_payments_one_by_one() -> None:
    entries = _indexed([_payment("card:a", 1, 300), _payment("card:a", 2, 200)])
    state = PayerState({"card:a": _device(account="w")}, {}, set(), set(), {"w": 499})
    plan = plan_debits(entries, state)
    assert (plan.debit, plan.one_by_one) == ([], entries)
    enough = PayerState({"card:a": _device(account="w")}, {}, set(), set(), {"w": 500})
    assert plan_debits(entries, enough).debit == entries


@given(
    uploads,
    st.sets(st.sampled_from(TERMINALS)),
    st.booleans(),
    st.data(),
)
def test_credits_are_new_known_payees_not_declined_and_each_id_once(
    entries: list[Entry], payees: set[str], decline_some: bool, data: st.DataObject
) -> None:
    credited = {e.payment.tx_id for e in entries if data.draw(st.integers(0, 3)) == 0}
    request_id = {e.index: bytes([e.index]) * 16 for e in entries}
    declined = (
        {(request_id[e.index], e.payment.receiver) for e in entries[::2]} if decline_some else set()
    )
    plan = plan_credits(entries, credited, payees, declined, request_id)
    placed = sorted(e.index for e in plan.credit + plan.settled + plan.one_by_one)
    assert placed == [e.index for e in entries]
    ids = [e.payment.tx_id for e in plan.credit]
    assert len(ids) == len(set(ids))
    for e in plan.credit:
        assert e.payment.tx_id not in credited and e.payment.receiver in payees
        assert (request_id[e.index], e.payment.receiver) not in declined
    for e in plan.one_by_one:
        assert e.payment.receiver not in payees or (
            (request_id[e.index], e.payment.receiver) in declined
        )
