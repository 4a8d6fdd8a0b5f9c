"""The conservation audit must fail when money appears or vanishes anywhere."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from offpay.sim.network import ConservationError, OfflineNetwork
from offpay.store import schema


@pytest.fixture
def settled() -> OfflineNetwork:
    net = OfflineNetwork()
    net.issue("bank-a", 10_000_00)
    net.issue("bank-b", 10_000_00)
    alice = net.add_user("Alice", "bank-a", online=1_000_00)
    shop = net.add_merchant("Shop", "bank-b")
    alice.phone.top_up(alice.pin, net.money(300_00))
    shop.pos.charge(alice.card.process, alice.pin, net.money(120_00))
    shop.pos.sync()
    net.check_conservation()
    return net


def test_a_wallet_credited_out_of_nothing_is_caught(settled: OfflineNetwork) -> None:
    bank = settled.banks["bank-b"]
    with bank.db.begin() as conn:
        conn.execute(
            update(schema.accounts)
            .where(schema.accounts.c.kind == "merchant")
            .values(balance=schema.accounts.c.balance + 1)
        )
    with pytest.raises(ConservationError):
        settled.check_conservation()


def test_holdings_moved_without_a_payment_are_caught(settled: OfflineNetwork) -> None:
    """Money moved between intermediaries at the central bank with no wallet behind it keeps
    the global sum intact; only the per-intermediary check sees it."""
    t = schema.institutions
    with settled.central.db.begin() as conn:
        conn.execute(update(t).where(t.c.name == "bank-a").values(holdings=t.c.holdings - 500))
        conn.execute(update(t).where(t.c.name == "bank-b").values(holdings=t.c.holdings + 500))
    assert settled.audit().balanced
    with pytest.raises(ConservationError, match="bank-a"):
        settled.check_conservation()


def test_a_settled_network_balances_per_intermediary(settled: OfflineNetwork) -> None:
    assert settled.holdings_mismatches() == []
    flows = settled.central.cross_flows()
    assert flows["bank-b"][0] == settled.money(120_00)
    assert flows["bank-a"][1] == settled.money(120_00)
