"""Issue 17: the books say when each device last synchronised, and the intermediaries keep
each settled payment's signed evidence (the bytes as settled, both signatures and chains),
on the one-by-one and the batch path alike, so that any payment's trail can be decoded."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

import pytest

from conftest import Checked
from offpay.bank.books import bank_books, bank_payment, notary_record
from offpay.bank.engine import Intermediary
from offpay.console.evidence import settled_payment
from offpay.crypto.pseudonyms import commitment
from offpay.errors import OffpayError
from offpay.sim.network import OfflineNetwork
from offpay.wire.envelope import Signed, payload_of
from offpay.wire.messages import OfflinePayment

SEK = 100


def device_record(bank: Intermediary, device_id: str) -> dict[str, Any]:
    return next(
        d for c in bank_books(bank)["customers"] for d in c["devices"] if d["id"] == device_id
    )


def assert_evidence_kept(net: OfflineNetwork, signed_bytes: bytes) -> None:
    """The payer's debit and the payee's credit keep ``signed_bytes`` exactly; its digest is
    the one both rows and the notary record."""
    signed = Signed.from_bytes(signed_bytes)
    payment = payload_of(signed, OfflinePayment)
    tx = payment.tx_id
    debit = bank_payment(net.banks[payment.payer_institution], tx)["debit"]
    credit = bank_payment(net.banks[payment.payee_institution], tx)["credit"]
    assert debit is not None and credit is not None
    # The notary keeps a commitment to the evidence, under the pseudonym both rows name.
    assert debit["pseudonym"] == credit["pseudonym"] is not None
    notary = notary_record(net.central, bytes.fromhex(debit["pseudonym"]))["notary"]
    assert notary is not None and notary["commitment"] == commitment(signed.digest).hex()
    for row in (debit, credit):
        assert base64.b64decode(row["signed_payment"]) == signed_bytes
        assert row["evidence"] == signed.digest.hex()


def test_each_settled_payment_keeps_its_signed_bytes_on_both_paths(
    net: OfflineNetwork, checked: Checked
) -> None:
    """One payment in an upload goes one by one, several go as a batch; a card-to-card payment
    settles through card sessions: every one keeps the signed payment it settled."""
    shop = net.add_merchant("Shop", "bank-b")
    alice = net.add_user("Alice", "bank-a", online=1000 * SEK)
    bob = net.add_user("Bob", "bank-b", online=1000 * SEK)
    checked.top_up(alice, 300 * SEK)
    checked.top_up(bob, 100 * SEK)
    single = checked.charge(shop, alice, 7 * SEK)
    checked.sync(shop)  # an upload of one payment: the one-by-one path
    batch = [checked.charge(shop, u, n * SEK) for u, n in ((alice, 11), (bob, 12), (alice, 13))]
    checked.sync(shop)  # three payments, two payers' banks: the batch path
    person = checked.p2p(alice, bob, 5 * SEK)
    checked.sync(bob, alice)
    for signed_bytes in (single, *batch, person):
        assert_evidence_kept(net, signed_bytes)
    # The console finds it in the records of any party, whichever settled it.
    tx = payload_of(Signed.from_bytes(batch[1]), OfflinePayment).tx_id
    records = {name: bank_payment(bank, tx) for name, bank in net.banks.items()}
    found = settled_payment(records)
    assert found is not None and found.to_bytes() == batch[1]


def test_unknown_payments_and_unreadable_evidence_show_none() -> None:
    assert settled_payment({}) is None
    assert settled_payment({"bank-a": {"debit": None, "credit": None}}) is None
    # Rows written before the evidence was kept, or bytes that are not a signed payment.
    for kept in (None, "", "not base64!", base64.b64encode(b"\x00\x01").decode()):
        assert settled_payment({"bank-a": {"credit": {"signed_payment": kept}}}) is None


def test_the_books_say_when_each_device_last_synchronised(
    net: OfflineNetwork, checked: Checked
) -> None:
    """The intermediary's own clock when it answered the device's sync; None until then."""
    shop = net.add_merchant("Shop", "bank-b")
    alice = net.add_user("Alice", "bank-a", online=1000 * SEK)
    bank_a, bank_b = net.banks["bank-a"], net.banks["bank-b"]
    assert device_record(bank_a, alice.card_id)["last_sync"] is None
    assert device_record(bank_b, shop.terminal_id)["last_sync"] is None
    # Fixed times just after now: within the devices' certificates, whatever day the test runs.
    first = bank_a.clock().replace(microsecond=0) + dt.timedelta(minutes=1)
    bank_a.clock = lambda: first
    checked.top_up(alice, 100 * SEK)
    assert device_record(bank_a, alice.card_id)["last_sync"] == first.isoformat()
    checked.charge(shop, alice, 3 * SEK)
    later = first + dt.timedelta(minutes=7)
    bank_b.clock = lambda: later
    checked.sync(shop)
    assert device_record(bank_b, shop.terminal_id)["last_sync"] == later.isoformat()
    bank_a.clock = lambda: later
    checked.sync(alice)
    assert device_record(bank_a, alice.card_id)["last_sync"] == later.isoformat()
    # A refused session answers nothing and records no sync.
    bank_a.clock = lambda: later + dt.timedelta(hours=1)
    before = device_record(bank_a, alice.card_id)
    with pytest.raises(OffpayError):  # more than her online wallet holds
        alice.phone.top_up(alice.pin, net.money(10_000 * SEK))
    assert device_record(bank_a, alice.card_id) == before
