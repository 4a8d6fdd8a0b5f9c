"""What a paying device counts offline to enforce the limits on spending over time
(docs/limits.md): its total since the last online moment, its day's payments and amount, and
the time since the intermediary's signed time at that moment. Cards (a sync) and token elements
(a fresh desk answer) keep the same counters and apply the same rule, stated once here.

A device has no trusted clock. ``clock`` is the latest time it has been given by someone who
signs it (the intermediary at an online moment, then payees, counterparties or its host); it
only moves forward offline, and an online moment sets it to the intermediary's time.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from offpay.errors import LimitExceeded
from offpay.money import Money
from offpay.policy import check_payment_max
from offpay.wire.messages import LimitsPolicy

SECONDS_PER_DAY = 86_400


@dataclass(frozen=True)
class Spending:
    """A paying device's clock and counters (Unix seconds; amounts in minor units)."""

    clock: int | None = None  # the latest signed time the device has seen
    synced_at: int | None = None  # the intermediary's signed time at the last online moment
    spent_offline: int = 0  # paid since the last online moment (cards: the log's payments)
    day: int | None = None  # the UTC day (clock // 86400) the day's counters are for
    day_payments: int = 0
    day_spent: int = 0

    def at(self, time: int | None) -> Spending:
        """The counters once ``time`` (a signed time from a payee, a counterparty or the host)
        is seen: the clock never moves back, and a later UTC day starts from zero."""
        clock = self.clock
        if time is not None and (clock is None or time > clock):
            clock = time
        day = None if clock is None else clock // SECONDS_PER_DAY
        if day is not None and (self.day is None or day > self.day):
            return replace(self, clock=clock, day=day, day_payments=0, day_spent=0)
        return replace(self, clock=clock)

    def check(self, policy: LimitsPolicy, amount: Money) -> None:
        """Refuse a payment of ``amount`` that would break a limit of ``policy``; each refusal
        names its limit. Call on the counters :meth:`at` the payment's time."""
        check_payment_max(policy, amount)
        if policy.max_offline_hours is not None:
            if self.synced_at is None or self.clock is None:
                raise LimitExceeded(
                    "max_offline_hours",
                    "no signed time from an online moment yet; go online to pay offline",
                )
            if self.clock - self.synced_at > policy.max_offline_hours * 3600:
                raise LimitExceeded(
                    "max_offline_hours",
                    f"offline more than {policy.max_offline_hours} hours; "
                    "go online (synchronise) to pay again",
                )
        cap = policy.card_max_offline_spent
        if cap is not None and self.spent_offline + amount.minor > cap.minor:
            raise LimitExceeded(
                "card_max_offline_spent",
                f"at most {cap} may be spent offline between online moments; "
                f"{Money(self.spent_offline, cap.currency)} is spent",
            )
        most = policy.card_max_daily_payments
        if most is not None and self.day_payments + 1 > most:
            raise LimitExceeded(
                "card_max_daily_payments", f"at most {most} offline payments may be made a day"
            )
        daily = policy.card_max_daily_spent
        if daily is not None and self.day_spent + amount.minor > daily.minor:
            raise LimitExceeded(
                "card_max_daily_spent",
                f"at most {daily} may be spent offline a day; "
                f"{Money(self.day_spent, daily.currency)} is spent today",
            )

    def paid(self, amount: Money) -> Spending:
        """The counters after a payment of ``amount`` (on the counters :meth:`at` its time)."""
        return replace(
            self,
            spent_offline=self.spent_offline + amount.minor,
            day_payments=self.day_payments + 1,
            day_spent=self.day_spent + amount.minor,
        )

    def synced(self, time: int | None, spent_offline: int = 0) -> Spending:
        """The counters after an online moment whose intermediary signed ``time``: the clock
        restarts from it; a clock corrected back keeps the later day's counters (the device
        does not start a new day on a time the intermediary contradicts). ``spent_offline``:
        what is still unsettled (a card's log), 0 for a token element."""
        if time is None:
            return replace(self, spent_offline=spent_offline)
        engine_day = time // SECONDS_PER_DAY
        day = engine_day if self.day is None else min(self.day, engine_day)
        return replace(self, clock=time, synced_at=time, spent_offline=spent_offline, day=day)
