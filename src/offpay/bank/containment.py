"""Detect and contain (DESIGN §5): a device caught cloned, rolled back or reported lost is
blocked at its intermediary and revoked network-wide, so that every other card and terminal
refuses it offline once the signed revocation list reaches them at their next sync.

Rules:

* A blocked card's payments that reach an intermediary within the policy's
  ``blocked_window_hours`` of the block still settle: they were most likely made before it (a
  shop may sync once a day). Later ones are refused and reported as anomalies.
* Once the window has passed, what is left in the blocked card's shadow wallet goes back to its
  holder's online wallet, minus its payments still waiting in the queue, which are refused.
* A loss is recorded with the bound the limits policy puts on it: a copy of a card cannot
  spend more than the policy's card balance limit before it must synchronise, and a blocked
  card cannot synchronise.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import insert, select, update

from offpay.central.bank import NOTARY_ID
from offpay.crypto.revocation import RevocationList, newer_revocations
from offpay.errors import OffpayError
from offpay.money import Money
from offpay.store import schema
from offpay.wire.envelope import Signed, sign
from offpay.wire.messages import OfflinePayment, RevokeRequest

if TYPE_CHECKING:
    from offpay.bank.desks import Bank


@dataclass(frozen=True)
class Loss:
    device: str
    tx_id: bytes | None
    amount: Money
    bound: Money
    detail: str


def _aware(t: dt.datetime) -> dt.datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=dt.UTC)


class Containment:
    def __init__(self, bank: Bank) -> None:
        self.bank = bank
        self.version = 0
        self.signed: Signed[RevocationList] | None = None

    # -- the revocation list -------------------------------------------------------------------

    def refresh(self) -> Signed[RevocationList] | None:
        """Fetch the central bank's current list; our own trust store follows it. A cut
        connection leaves the list we had."""
        bank = self.bank
        try:
            data = bank.network.send("central-bank", "revocation-list", b"")
        except OffpayError:
            return self.signed
        self._take(Signed.from_bytes(data))
        return self.signed

    def _take(self, signed: Signed[RevocationList]) -> None:
        listing = newer_revocations(signed, self.bank.trust, self.version)
        if listing is not None:
            self.version, self.signed = listing.version, signed
            self.bank.trust.revoked = set(listing.devices)

    def for_device(self, device_version: int) -> Signed[RevocationList] | None:
        """The list to hand a device at its sync, if it holds an older one."""
        signed = self.refresh()
        return signed if signed is not None and device_version < self.version else None

    # -- blocking --------------------------------------------------------------------------------

    def block(self, device_id: str, reason: str) -> None:
        """Block ``device_id`` here at once and revoke it network-wide."""
        bank = self.bank
        with bank.db.begin() as conn:
            done = conn.execute(
                update(schema.devices)
                .where(schema.devices.c.id == device_id, schema.devices.c.status == "active")
                .values(status="blocked", blocked_at=bank.clock())
            )
            if done.rowcount:
                bank.ledger.anomaly_in(conn, "blocked", device_id, None, reason)
        request = RevokeRequest(bank.id, NOTARY_ID, bank.nonce(), device_id, reason)
        try:
            data = bank.network.send(
                "central-bank", "revoke-device", sign(request, bank.credential).to_bytes()
            )
        except OffpayError:
            return  # blocked here; the revocation is sent again by retry_pending()
        self._take(Signed.from_bytes(data))

    def rolled_back(self, device_id: str, payment: OfflinePayment) -> None:
        """``payment`` was made by a card from a state it had left (under a counter it had
        passed when it last confirmed a sync): block the card and record the loss."""
        self.bank.ledger.anomaly(
            "rolled_back",
            device_id,
            payment.tx_id,
            f"payment at counter {payment.payer_seq}, which the card had passed when it "
            "last confirmed a sync",
        )
        self.block(device_id, "rolled back: spent from a state it had left")
        self.record_loss(
            device_id,
            payment.tx_id,
            payment.amount.minor,
            f"payment to {payment.receiver} made by a rolled-back card: not settled",
        )

    def resend_revocations(self) -> int:
        """Revoke again the devices we blocked that the list does not name yet."""
        self.refresh()
        with self.bank.db.connect() as conn:
            blocked = conn.execute(
                select(schema.devices.c.id).where(schema.devices.c.status == "blocked")
            ).scalars()
            missing = [d for d in blocked if d not in self.bank.trust.revoked]
        for device_id in missing:
            self.block(device_id, "revocation sent again")
        return len(missing)

    def settles_despite_block(self, device_id: str) -> bool:
        """A payment of a blocked device may settle only within the policy's window."""
        device = self.bank.device(device_id)
        if device.status == "active":
            return True
        if device.blocked_at is None:
            return False
        window = dt.timedelta(hours=self.bank.policy()[1].blocked_window_hours)
        return self.bank.clock() <= _aware(device.blocked_at) + window

    def release_expired(self) -> int:
        """After the window: refuse what the blocked cards still owe in the queue, and give the
        rest of their shadow wallets back to their holders' online wallets."""
        bank, d = self.bank, schema.devices
        window = dt.timedelta(hours=bank.policy()[1].blocked_window_hours)
        now = bank.clock()
        with bank.db.connect() as conn:
            rows = conn.execute(
                select(d).where(
                    d.c.status == "blocked", d.c.kind == "card", d.c.released.is_(False)
                )
            ).all()
        released = 0
        for row in rows:
            if row.blocked_at is None or now <= _aware(row.blocked_at) + window:
                continue
            s = schema.shortfalls
            with bank.db.begin() as conn:
                late = conn.execute(
                    update(s)
                    .where(s.c.device_id == row.id, s.c.open)
                    .values(open=False, settled_at=now)
                )
                if late.rowcount:
                    bank.ledger.anomaly_in(
                        conn,
                        "refused_after_block",
                        row.id,
                        None,
                        f"{late.rowcount} waiting payment(s) of a blocked card refused",
                    )
                shadow = f"{row.customer_id}/shadow"
                left = conn.execute(
                    select(schema.accounts.c.balance).where(schema.accounts.c.id == shadow)
                ).scalar_one()
                if left:
                    bank.ledger.move(
                        conn, shadow, f"{row.customer_id}/online", left, "released", None
                    )
                conn.execute(update(d).where(d.c.id == row.id).values(released=True))
            released += 1
        return released

    # -- losses ------------------------------------------------------------------------------

    def record_loss(self, device_id: str, tx_id: bytes | None, amount: int, detail: str) -> None:
        policy = self.bank.policy()[1]
        loss = schema.losses
        with self.bank.db.begin() as conn:
            if (
                tx_id is not None
                and conn.execute(
                    select(loss.c.id).where(loss.c.device_id == device_id, loss.c.tx_id == tx_id)
                ).first()
            ):
                return  # already recorded when the same evidence was seen another way
            conn.execute(
                insert(schema.losses).values(
                    device_id=device_id,
                    tx_id=tx_id,
                    amount=amount,
                    bound=policy.card_max_balance.minor,
                    detail=detail[:512],
                )
            )

    def losses(self) -> list[Loss]:
        with self.bank.db.connect() as conn:
            rows = conn.execute(select(schema.losses).order_by(schema.losses.c.id)).all()
        money = self.bank.currency
        return [
            Loss(
                r.device_id,
                None if r.tx_id is None else bytes(r.tx_id),
                Money(r.amount, money),
                Money(r.bound, money),
                r.detail,
            )
            for r in rows
        ]
