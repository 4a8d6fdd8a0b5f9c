"""A dishonest intermediary's operator, for the auditor's tests (issue 18, point 2): each
function does what an operator with the intermediary's keys and write access to its own
database could do behind the settlement engine's back, through SQLAlchemy or the engine's
public steps. Nothing in the settlement code calls these; they exist so that tests can show
the independent auditor (offpay.audit) names the intermediary and the records."""

from __future__ import annotations

from sqlalchemy import delete, func, insert, select, update

from offpay.bank.engine import Intermediary
from offpay.money import Money
from offpay.store import schema
from offpay.wire.envelope import Signed, sign
from offpay.wire.messages import CardInstruction, OfflinePayment, Operation


def notarise_without_debit(bank: Intermediary, signed_payment: bytes) -> bytes:
    """The payer's intermediary has the notary record a payment of its customer's card and
    the payee credited, but never debits the card's shadow wallet. Returns the payment id."""
    signed: Signed[OfflinePayment] = Signed.from_bytes(signed_payment)
    payment = bank.verified(signed)
    receipt, _ = bank.ask_notary(
        bank.notary_name(payment.tx_id, signed.digest),
        payment.payer_institution,
        payment.payee_institution,
        payment.amount,
    )
    bank.deliver_credit(signed, payment, receipt)
    return payment.tx_id


def credit_without_notary(bank: Intermediary, signed_payment: bytes) -> bytes:
    """The payee's intermediary credits its merchant for a payment no notary ever recorded
    (money created in its own books). Returns the payment id."""
    signed: Signed[OfflinePayment] = Signed.from_bytes(signed_payment)
    payment = bank.verified(signed)
    account = bank.device(payment.receiver).account_id
    with bank.db.begin() as conn:
        conn.execute(
            insert(schema.credits).values(
                tx_id=payment.tx_id,
                device_id=payment.receiver,
                amount=payment.amount.minor,
                evidence=signed.digest,
                payment=signed.to_bytes(),
            )
        )
        bank.ledger.move(conn, None, account, payment.amount.minor, "offline-in", payment.tx_id)
    return payment.tx_id


def credit_twice(bank: Intermediary, tx_id: bytes) -> None:
    """The payee's intermediary books a credited payment into its merchant's wallet again."""
    c = schema.credits
    with bank.db.begin() as conn:
        row = conn.execute(select(c).where(c.c.tx_id == tx_id)).one()
        account = bank.device(row.device_id).account_id
        bank.ledger.move(conn, None, account, row.amount, "offline-in", tx_id)


def drop_debit(bank: Intermediary, tx_id: bytes) -> None:
    """The payer's intermediary erases a debit it notarised, and its journal row, and gives
    the money back to the card's shadow wallet, as if the payment had never been debited."""
    d, j, a = schema.debits, schema.journal, schema.accounts
    with bank.db.begin() as conn:
        row = conn.execute(select(d).where(d.c.tx_id == tx_id)).one()
        account = bank.device(row.device_id).account_id
        conn.execute(delete(d).where(d.c.tx_id == tx_id))
        conn.execute(delete(j).where(j.c.reference == tx_id, j.c.reason == "offline-out"))
        conn.execute(update(a).where(a.c.id == account).values(balance=a.c.balance + row.amount))


def alter_credit(bank: Intermediary, tx_id: bytes, extra: int) -> int:
    """The payee's intermediary raises a past credit by ``extra`` everywhere in its own books
    (the credit row, its journal row and the wallet), so that they agree with each other.
    Returns the journal row's id."""
    c, j, a = schema.credits, schema.journal, schema.accounts
    with bank.db.begin() as conn:
        row = conn.execute(select(c).where(c.c.tx_id == tx_id)).one()
        account = bank.device(row.device_id).account_id
        journal_id = conn.execute(
            select(j.c.id).where(j.c.reference == tx_id, j.c.reason == "offline-in")
        ).scalar_one()
        conn.execute(update(c).where(c.c.tx_id == tx_id).values(amount=c.c.amount + extra))
        conn.execute(update(j).where(j.c.id == journal_id).values(delta=j.c.delta + extra))
        conn.execute(update(a).where(a.c.id == account).values(balance=a.c.balance + extra))
    return int(journal_id)


def load_beyond_shadow(bank: Intermediary, card_id: str, extra: int) -> int:
    """The card's intermediary signs the card a balance ``extra`` above its shadow wallet and
    records it as it records every instruction. Returns the instruction's row id."""
    device = bank.device(card_id)
    shadow = bank.balance(f"{device.customer_id}/shadow")
    number = device.issued_no + 1
    instr = CardInstruction(
        sender=bank.id,
        receiver=card_id,
        nonce=bank.nonce(),
        instruction_no=number,
        expected_seq=device.last_seq,
        operation=Operation.SYNC,
        balance=Money(shadow.minor + extra, bank.currency),
        clear_through_seq=device.last_seq,
        policy=None,
        revocations=None,
    )
    i = schema.instructions
    with bank.db.begin() as conn:
        through = conn.execute(select(func.max(schema.journal.c.id))).scalar()
        row_id = conn.execute(
            insert(i).values(
                device_id=card_id,
                instruction_no=number,
                operation=Operation.SYNC.value,
                amount=0,
                state="issued",
                payload=sign(instr, bank.credential).to_bytes(),
                journal_through=through,
            )
        ).inserted_primary_key
        conn.execute(
            update(schema.devices).where(schema.devices.c.id == card_id).values(issued_no=number)
        )
    assert row_id is not None
    return int(row_id[0])
