"""Misbehaving intermediaries, played (issue 18, point 2): each fault a dishonest operator
can commit in its own books, and the auditor naming that intermediary, the finding's code and
the records. Every fault on SQLite and on PostgreSQL."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from tests.conftest import UrlFor
from tests.test_audit_auditor import Audited, build, paid

from offpay.attacks import dishonest
from offpay.audit import findings as codes
from offpay.audit.findings import Finding


@pytest.fixture
def audited(db_url: UrlFor, tmp_path: Path) -> Audited:
    return build(db_url, tmp_path)


def named(findings: list[Finding], party: str, code: str) -> list[Finding]:
    return [f for f in findings if f.party == party and f.code == code]


def unpaid(audited: Audited) -> bytes:
    """A payment Alice's card made to a bank-b shop that nobody has synchronised yet."""
    shop = audited.net.add_merchant("Quiet shop", "bank-b")
    return paid(shop, audited.alice, audited.net.money(40_00))


def tx_of(audited: Audited, name: str) -> bytes:
    from offpay.wire.envelope import Signed, payload_of
    from offpay.wire.messages import OfflinePayment

    return payload_of(Signed.from_bytes(audited.payments[name]), OfflinePayment).tx_id


def test_notarise_without_debiting(audited: Audited) -> None:
    tx = dishonest.notarise_without_debit(audited.net.banks["bank-a"], unpaid(audited))
    found = audited.run().findings
    assert named(found, "bank-a", codes.NOTARY_WITHOUT_DEBIT) == [
        Finding("bank-a", codes.NOTARY_WITHOUT_DEBIT, (tx.hex(),), "notarised, never debited")
    ]
    # bank-a's own books and the central bank's agree (holdings left with the notarised
    # payment); only the network's sum shows money created, and the notary record names who
    assert not named(found, "bank-a", codes.HOLDINGS_MISMATCH)
    assert named(found, "network", codes.NOT_CONSERVED)
    assert {f.party for f in found} == {"bank-a", "network"}


def test_credit_without_a_notary_record(audited: Audited) -> None:
    tx = dishonest.credit_without_notary(audited.net.banks["bank-b"], unpaid(audited))
    found = audited.run().findings
    assert [f.records for f in named(found, "bank-b", codes.CREDIT_WITHOUT_NOTARY)] == [(tx.hex(),)]
    assert named(found, "network", codes.NOT_CONSERVED)  # money created...
    assert {f.party for f in found} == {"bank-b", "network"}  # ...and who created it


def test_load_a_card_beyond_its_shadow_wallet(audited: Audited) -> None:
    bank = audited.net.banks["bank-a"]
    row = dishonest.load_beyond_shadow(bank, audited.alice.card_id, 500_00)
    found = audited.run().findings
    assert [(f.party, f.code, f.records) for f in found] == [
        (
            "bank-a",
            codes.INSTRUCTION_BEYOND_SHADOW,
            (f"instruction:{row}", audited.alice.card_id),
        )
    ]


def test_an_honest_top_up_is_not_beyond_the_shadow_wallet(audited: Audited) -> None:
    """The edge: a card loaded with all its shadow wallet holds is within it."""
    audited.alice.phone.top_up(audited.alice.pin, audited.net.money(700_00))
    assert audited.run().findings == []


def test_credit_twice(audited: Audited) -> None:
    tx = tx_of(audited, "alice->shop-b")
    dishonest.credit_twice(audited.net.banks["bank-b"], tx)
    found = audited.run().findings
    assert [f.records for f in named(found, "bank-b", codes.MOVED_TWICE)] == [(tx.hex(),)]
    assert named(found, "bank-b", codes.HOLDINGS_MISMATCH)


def test_credit_twice_after_the_payment_was_audited(audited: Audited) -> None:
    """A closed payment is opened again by a new journal row that books it."""
    assert audited.run().findings == []
    tx = tx_of(audited, "bob->shop-a")
    dishonest.credit_twice(audited.net.banks["bank-a"], tx)
    report = audited.run()
    assert [f.records for f in named(report.new, "bank-a", codes.MOVED_TWICE)] == [(tx.hex(),)]


def test_drop_a_debit(audited: Audited) -> None:
    tx = tx_of(audited, "alice->shop-b")
    dishonest.drop_debit(audited.net.banks["bank-a"], tx)
    found = audited.run().findings
    assert [f.records for f in named(found, "bank-a", codes.NOTARY_WITHOUT_DEBIT)] == [(tx.hex(),)]
    assert named(found, "network", codes.NOT_CONSERVED)


def test_drop_a_debit_already_audited(audited: Audited) -> None:
    assert audited.run().findings == []
    tx = tx_of(audited, "alice->shop-b")
    dishonest.drop_debit(audited.net.banks["bank-a"], tx)
    report = audited.run()
    assert named(report.new, "bank-a", codes.ROW_MISSING)
    assert (tx.hex(),) in [f.records for f in named(report.new, "bank-a", codes.ROW_MISSING)]
    # the journal row that booked it is gone as well, named by its id
    assert any(
        f.records[0].startswith("journal:") for f in named(report.new, "bank-a", codes.ROW_MISSING)
    )


def test_alter_a_past_ledger_row(audited: Audited) -> None:
    """The operator raises a past credit in every one of its own books so they agree; the
    auditor remembers what it read and names the rows."""
    assert audited.run().findings == []
    tx = tx_of(audited, "alice->shop-b")
    journal_id = dishonest.alter_credit(audited.net.banks["bank-b"], tx, 1_00)
    report = audited.run()
    altered = {f.records for f in named(report.new, "bank-b", codes.ROW_ALTERED)}
    assert (f"journal:{journal_id}",) in altered
    assert (tx.hex(),) in altered
    assert named(report.new, "network", codes.NOT_CONSERVED)
    assert {f.party for f in report.new} == {"bank-b", "network"}


def test_findings_are_kept_across_runs(audited: Audited) -> None:
    """A finding does not vanish because the auditor ran again over nothing new."""
    dishonest.load_beyond_shadow(audited.net.banks["bank-a"], audited.alice.card_id, 1)
    first = audited.run()
    second = audited.run()
    assert first.findings and second.findings == first.findings
    assert second.new == [] or set(second.new) <= set(first.findings)


def test_a_stored_payment_that_does_not_verify(audited: Audited) -> None:
    """Evidence is re-verified with the protocol's own code: a debit whose stored payment
    carries a broken signature is named, whatever the rest of the books say."""
    from sqlalchemy import select, update

    from offpay.store import schema
    from offpay.wire.envelope import Signed

    tx = tx_of(audited, "alice->shop-b")
    d = schema.debits
    bank = audited.net.banks["bank-a"]
    with bank.db.begin() as conn:
        stored = bytes(conn.execute(select(d.c.payment).where(d.c.tx_id == tx)).scalar_one())
        signed = Signed.from_bytes(stored)
        flipped = bytes([signed.signature[0] ^ 1]) + signed.signature[1:]
        broken = dataclasses.replace(signed, signature=flipped).to_bytes()
        conn.execute(update(d).where(d.c.tx_id == tx).values(payment=broken))
    found = audited.run().findings
    [invalid] = named(found, "bank-a", codes.EVIDENCE_INVALID)
    assert invalid.records == (tx.hex(),) and "does not verify" in invalid.detail
    assert {f.party for f in found} == {"bank-a"}


def test_a_debit_booked_for_another_amount_than_its_payment(audited: Audited) -> None:
    from sqlalchemy import update

    from offpay.store import schema

    tx = tx_of(audited, "bob->shop-a")
    d = schema.debits
    with audited.net.banks["bank-b"].db.begin() as conn:
        conn.execute(update(d).where(d.c.tx_id == tx).values(amount=d.c.amount + 1))
    found = audited.run().findings
    assert (tx.hex(),) in [f.records for f in named(found, "bank-b", codes.EVIDENCE_MISMATCH)]
    assert (tx.hex(),) in [f.records for f in named(found, "bank-b", codes.SETTLEMENT_MISMATCH)]


def test_an_instruction_signed_but_not_recorded(audited: Audited) -> None:
    """An intermediary that deletes the record of an instruction it signed (the device's own
    record still counts it) is named with the device."""
    from sqlalchemy import delete, func, select

    from offpay.store import schema

    i = schema.instructions
    card = audited.alice.card_id
    with audited.net.banks["bank-a"].db.begin() as conn:
        last = conn.execute(select(func.max(i.c.id)).where(i.c.device_id == card)).scalar_one()
        conn.execute(delete(i).where(i.c.id == last))
    found = audited.run().findings
    assert [(f.party, f.code, f.records) for f in found] == [
        ("bank-a", codes.INSTRUCTION_UNRECORDED, (f"device:{card}",))
    ]


def test_published_liabilities_audit_clean_and_a_reused_statement_is_named(
    audited: Audited,
) -> None:
    """The auditor checks each published liabilities commitment against the central bank's
    own record of the holdings statement it encloses (issue 18, point 4)."""
    from sqlalchemy import insert

    from offpay.liabilities.messages import LiabilitiesCommitment
    from offpay.liabilities.publish import publish
    from offpay.store import schema
    from offpay.wire.envelope import Signed, payload_of, sign

    bank = audited.net.banks["bank-b"]
    honest = publish(bank)
    publish(audited.net.banks["bank-a"])
    assert not [f for f in audited.run().findings if f.code.startswith("liabilities.")]
    # bank-b publishes a later period enclosing the statement of its first one again
    body = payload_of(Signed.from_bytes(honest), LiabilitiesCommitment)
    again = sign(dataclasses.replace(body, period=body.period + 1), bank.credential)
    with bank.db.begin() as conn:
        conn.execute(
            insert(schema.liability_commitments).values(
                period=body.period + 1,
                published_at=bank.clock(),
                total=body.total,
                signed=again.to_bytes(),
            )
        )
    found = named(audited.run().findings, "bank-b", "liabilities.statement_reused")
    assert len(found) == 1 and f"bank-b/liabilities/{body.period}" in found[0].records
