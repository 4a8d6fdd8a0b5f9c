"""An intermediary's limits policy: signed and numbered, stored, and taken by its devices at
their next sync. A new version must be above the current one (no downgrade)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from sqlalchemy import insert, select

from offpay.crypto.pki import Role
from offpay.errors import Refused
from offpay.policy import default_policy, revised_policy, sign_policy
from offpay.store import schema
from offpay.wire.envelope import Signed, open_signed
from offpay.wire.messages import LimitsPolicy, Liquidity

if TYPE_CHECKING:
    from offpay.bank.desks import Bank


class Policies:
    def __init__(self, bank: Bank) -> None:
        self.bank = bank

    def ensure(self, liquidity: Liquidity, limits: Mapping[str, int]) -> None:
        """Publish the first policy (``limits`` where they differ from the defaults)."""
        if self.current() is None:
            first = default_policy(self.bank.name, 1, self.bank.currency, liquidity)
            self.publish(revised_policy(first, dict(limits), version=1))

    def publish(self, policy: LimitsPolicy) -> Signed[LimitsPolicy]:
        """Sign and store a new limits policy; devices take it at their next sync."""
        current = self.current()
        if current is not None and policy.version <= current[1].version:
            raise Refused(
                f"policy version must be above {current[1].version}", code="policy.downgrade"
            )
        signed = sign_policy(policy, self.bank.credential)
        with self.bank.db.begin() as conn:
            conn.execute(
                insert(schema.policies).values(version=policy.version, signed=signed.to_bytes())
            )
        return signed

    def current(self) -> tuple[Signed[LimitsPolicy], LimitsPolicy] | None:
        with self.bank.db.connect() as conn:
            row = conn.execute(
                select(schema.policies).order_by(schema.policies.c.version.desc()).limit(1)
            ).first()
        if row is None:
            return None
        signed = Signed.from_bytes(bytes(row.signed))
        return signed, open_signed(  # type: ignore[return-value]
            signed, LimitsPolicy, self.bank.trust, Role.ENGINE, receiver=None
        )[0]

    def get(self) -> tuple[Signed[LimitsPolicy], LimitsPolicy]:
        """The current policy, which exists from the intermediary's first start."""
        current = self.current()
        assert current is not None
        return current
