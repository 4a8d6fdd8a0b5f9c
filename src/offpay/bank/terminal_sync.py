"""A terminal module's upload (report §3.7): the payments it received, settled through the
batch path, answered by a signed, numbered instruction that clears them from its log and
hands it the policy and revocations it lacks."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import update

from offpay.bank.batch import BatchDesk
from offpay.bank.containment import Containment
from offpay.bank.records import SyncReport
from offpay.bank.refusal import Refusals
from offpay.crypto.pki import Role
from offpay.errors import DeviceStateError
from offpay.store import schema
from offpay.wire.envelope import sign
from offpay.wire.messages import Direction, TerminalInstruction, TerminalUpload

if TYPE_CHECKING:
    from offpay.bank.desks import Bank


class TerminalSync:
    def __init__(
        self, bank: Bank, *, batch: BatchDesk, refusals: Refusals, containment: Containment
    ) -> None:
        self.bank = bank
        self.batch = batch
        self.refusals = refusals
        self.containment = containment

    def sync(self, data: bytes) -> SyncReport:
        bank = self.bank
        request = bank.from_device(data, TerminalUpload, Role.TERMINAL)
        upload, ident, device = request.message, request.identity, request.device
        if request.answered is not None:
            return SyncReport(ident.id, (), request.answered)
        # A reset that never reached the terminal (issued_no - 1) is fine: its payments are
        # settled already and settle again as no-ops.
        if upload.instruction_no not in (device.issued_no, device.issued_no - 1):
            bank.ledger.anomaly(
                "counter_drift", ident.id, None, "terminal instruction numbers differ"
            )
            raise DeviceStateError(
                "terminal and intermediary disagree on instructions",
                code="device.counter_drift",
            )
        self.refusals.declare(ident.id, upload.declined)
        outcomes = self.batch.settle_upload(ident.id, [(Direction.IN, p) for p in upload.payments])
        signed_policy, policy = bank.policy()
        number = upload.instruction_no + 1
        instr = TerminalInstruction(
            sender=bank.id,
            receiver=ident.id,
            nonce=upload.nonce,
            instruction_no=number,
            clear_through_seq=upload.first_seq + len(upload.payments) - 1,
            policy=signed_policy if upload.policy_version < policy.version else None,
            revocations=self.containment.for_device(upload.revocation_version),
            intake_key=bank.intake.renewal(upload.intake_version),
        )
        payload = sign(instr, bank.credential).to_bytes()
        with bank.db.begin() as conn:
            conn.execute(
                update(schema.devices)
                .where(schema.devices.c.id == ident.id)
                .values(issued_no=number, last_sync_at=bank.clock())
            )
            bank.ledger.remember(conn, ident.id, upload.nonce, payload)
        return SyncReport(ident.id, outcomes, payload)
