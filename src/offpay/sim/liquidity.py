"""What a liquidity policy cost in one run (issue: report §3.7): the shortfall that arose, how
long payments waited, the pool's exposure and the bytes receipts added to each payment."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import select

from offpay.central.bank import utc_now
from offpay.money import Money
from offpay.sim.network import OfflineNetwork
from offpay.store import schema
from offpay.wire.envelope import Signed, payload_of
from offpay.wire.messages import Liquidity, OfflinePayment


@dataclass
class SimClock:
    """A clock the simulator moves on by hand, so that waits read in simulated minutes."""

    now: dt.datetime = field(default_factory=utc_now)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, minutes: int = 1) -> None:
        self.now += dt.timedelta(minutes=minutes)


@dataclass(frozen=True)
class LiquidityReport:
    policy: Liquidity
    payments: int  # offline payments settled
    short: int  # payments the payer's shadow wallet could not cover when they first arrived
    shortfall: Money  # their total value
    queued: int  # of those, how many had to wait (the others the pool covered at once)
    still_waiting: int
    longest_wait: dt.timedelta
    total_wait: dt.timedelta
    pool_size: Money
    pool_drawn: Money
    pool_peak: Money
    pool_outstanding: Money
    receipt_bytes: int  # funding receipts carried by the settled payments, in all
    payment_bytes: int  # the settled payments themselves, receipts included

    @property
    def extra_bytes_per_payment(self) -> int:
        return -(-self.receipt_bytes // self.payments) if self.payments else 0

    @property
    def mean_wait(self) -> dt.timedelta:
        return self.total_wait / self.queued if self.queued else dt.timedelta(0)


def liquidity_report(net: OfflineNetwork) -> LiquidityReport:
    now = net.central.clock()
    zero = dt.timedelta(0)
    short = queued = still = payments = receipt_bytes = payment_bytes = 0
    shortfall = net.money(0)
    longest = total = zero
    for bank in net.banks.values():
        for waited in bank.liquidity.waited():
            queued += 1
            short += 1
            shortfall = shortfall + waited.amount
            wait = (waited.settled_at or now) - waited.queued_at
            still += waited.settled_at is None
            longest, total = max(longest, wait), total + wait
        queued_ids = {w.tx_id for w in bank.liquidity.waited()}
        loans, d = schema.pool_loans_held, schema.debits
        with bank.db.connect() as conn:
            rows = conn.execute(select(d.c.payment)).all()
            lent = conn.execute(
                select(d.c.tx_id, d.c.amount)
                .join(loans, loans.c.loan_id == d.c.tx_id)
                .where(loans.c.state == "drawn")
            ).all()
        for tx_id, amount in lent:  # short at first, covered by the pool without waiting
            if bytes(tx_id) not in queued_ids:
                short += 1
                shortfall = shortfall + net.money(amount)
        for (raw,) in rows:
            payments += 1
            payment_bytes += len(raw)
            funding = payload_of(Signed.from_bytes(bytes(raw)), OfflinePayment).funding
            receipt_bytes += sum(len(r.to_bytes()) for r in funding)
    pool = net.central.pool_status()
    return LiquidityReport(
        net.liquidity,
        payments,
        short,
        shortfall,
        queued,
        still,
        longest,
        total,
        pool.size,
        pool.drawn_total,
        pool.peak_outstanding,
        pool.outstanding,
        receipt_bytes,
        payment_bytes,
    )
