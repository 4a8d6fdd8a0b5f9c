"""The settlement plan: what to debit, leave settled, credit, or hand to the one-by-one path,
decided from the verified entries of an upload and the ledger's state, and nothing else.

Pure functions: the ledger's rows come in as plain values (read by :mod:`offpay.bank.batch` in
one read transaction), the decision goes out as lists of entries, and no function here reads
or writes a database or sends a message. A payment goes verify (:mod:`offpay.bank.evidence`)
-> plan (here) -> ledger (:mod:`offpay.bank.batch` writes the plan with
:mod:`offpay.bank.ledger`'s tables).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Any

from offpay.bank.records import VerifiedPayment
from offpay.wire.envelope import Signed, payload_of
from offpay.wire.messages import OfflinePayment


@dataclass(frozen=True, slots=True)
class Entry:
    """One verified payment of a batch, with its place in the upload or request: its plain
    record, and the signed bytes it arrived as, which are stored and forwarded as they are."""

    index: int
    data: bytes
    payment: VerifiedPayment

    def decoded(self) -> tuple[Signed[OfflinePayment], OfflinePayment]:
        """The envelope and the payment, decoded (verified before): for the one-by-one path."""
        signed = Signed.from_bytes(self.data)
        return signed, payload_of(signed, OfflinePayment)


@dataclass(frozen=True, slots=True)
class Debited:
    """A debit row the ledger holds for a payment: its evidence and how far it got."""

    evidence: bytes
    notarised: bool
    credited: bool


@dataclass(frozen=True, slots=True)
class PayerState:
    """What the ledger knows of the payers of an upload, read in one transaction."""

    devices: Mapping[str, Any]  # payer device id -> its row (status, last_seq, account_id)
    debited: Mapping[bytes, Debited]  # tx id -> its debit row, for the upload's payments
    queued: Set[bytes]  # tx ids of the upload waiting in the shortfall queue
    waiting: Set[str]  # payers with an open shortfall
    balances: Mapping[str, int]  # shadow wallet id -> balance


@dataclass(frozen=True, slots=True)
class DebitPlan:
    debit: list[Entry]  # new payments the batch debits, notarises and credits together
    settled: list[Entry]  # payments settled completely before: answered ALREADY
    one_by_one: list[Entry]  # everything else, in the card's order, for the one-by-one path
    accounts: dict[str, str]  # payer device id -> its shadow wallet


def plan_debits(entries: Sequence[Entry], state: PayerState) -> DebitPlan:
    """A payer's payments go together: all new ones are debited in the batch if its card is
    active, waits for nothing, is past the counter it last confirmed, repeats no id and its
    shadow wallet covers them all; a payer's payment settled before with the same evidence is
    answered as settled; anything else sends the payer's whole group one by one."""
    groups: dict[str, list[Entry]] = defaultdict(list)
    for e in entries:
        groups[e.payment.sender].append(e)
    debit: list[Entry] = []
    settled: list[Entry] = []
    one_by_one: list[Entry] = []
    for payer, group in groups.items():
        device = state.devices.get(payer)
        new = [e for e in group if e.payment.tx_id not in state.debited]
        done = [e for e in group if e.payment.tx_id in state.debited]
        ok = (
            device is not None
            and device.status == "active"
            and payer not in state.waiting
            and len({e.payment.tx_id for e in group}) == len(group)
            and not any(e.payment.tx_id in state.queued for e in group)
            and all(e.payment.payer_seq > device.last_seq for e in new)
            and all(_complete(state.debited[e.payment.tx_id], e.payment) for e in done)
            and sum(e.payment.amount.minor for e in new)
            <= state.balances.get(device.account_id, -1)
        )
        if ok:
            debit += new
            settled += done
        else:
            one_by_one += group
    accounts = {p: r.account_id for p, r in state.devices.items()}
    return DebitPlan(debit, settled, one_by_one, accounts)


def _complete(row: Debited, payment: VerifiedPayment) -> bool:
    """A payment debited before with this very evidence, notarised and credited."""
    return row.evidence == payment.digest and row.notarised and row.credited


@dataclass(frozen=True, slots=True)
class CreditPlan:
    credit: list[Entry]  # new payments credited in the batch
    settled: list[Entry]  # credited before, or repeated in this batch: answered ALREADY
    one_by_one: list[Entry]  # an unknown payee or a declined request: the one-by-one path


def plan_credits(
    entries: Sequence[Entry],
    credited: Set[bytes],
    payees: Set[str],
    declined: Set[tuple[bytes, str]],
    request_id: Mapping[int, bytes],
) -> CreditPlan:
    """``credited``: tx ids the ledger credited before; ``payees``: the upload's payees this
    intermediary knows; ``declined``: (request id, payee) pairs its payees declined;
    ``request_id``: each entry's request id, by entry index."""
    credit: list[Entry] = []
    settled: list[Entry] = []
    one_by_one: list[Entry] = []
    seen: set[bytes] = set()
    for e in entries:
        tx = e.payment.tx_id
        if tx in credited or tx in seen:
            settled.append(e)
        elif e.payment.receiver in payees and (
            (request_id[e.index], e.payment.receiver) not in declined
        ):
            credit.append(e)
            seen.add(tx)
        else:
            one_by_one.append(e)
    return CreditPlan(credit, settled, one_by_one)
