"""Funding and redeeming online wallets survive a cut connection and a hostile network."""

from __future__ import annotations

import pytest

from offpay.errors import OffpayError
from offpay.sim.network import OfflineNetwork


@pytest.fixture
def net() -> OfflineNetwork:
    n = OfflineNetwork()
    n.issue("bank-a", 1_000_00)
    return n


def cut(n: OfflineNetwork, kind: str) -> None:
    def tap(to: str, k: str, data: bytes) -> bytes:
        if k == kind:
            raise OffpayError("connection lost", code="network.cut")
        return data

    n.network.taps.append(tap)


def test_redeem_cut_then_retried_completes_once(net: OfflineNetwork) -> None:
    user = net.add_user("Ann", "bank-a", online=500_00)
    cut(net, "reserve-transfer")
    with pytest.raises(OffpayError):
        user.bank.redeem(user.customer_id, net.money(200_00), reference="r-1")
    net.network.taps.clear()
    assert user.bank.retry_pending() == 1
    net.check_conservation()
    assert user.online == net.money(300_00)
    user.bank.redeem(user.customer_id, net.money(200_00), reference="r-1")  # a late duplicate
    assert user.online == net.money(300_00)
    net.check_conservation()


def test_fund_cut_then_retried_with_same_reference(net: OfflineNetwork) -> None:
    user = net.add_user("Ann", "bank-a")
    cut(net, "reserve-transfer")
    with pytest.raises(OffpayError):
        user.bank.fund(user.customer_id, net.money(100_00), reference="f-1")
    net.network.taps.clear()
    assert user.online == net.money(0)
    user.bank.fund(user.customer_id, net.money(100_00), reference="f-1")
    user.bank.fund(user.customer_id, net.money(100_00), reference="f-1")
    assert user.online == net.money(100_00)
    net.check_conservation()


def test_a_replayed_central_bank_answer_moves_nothing(net: OfflineNetwork) -> None:
    """A network that drops a request and replays an earlier answer must not make the
    intermediary believe the central bank moved money."""
    user = net.add_user("Ann", "bank-a")
    answers: list[bytes] = []
    real = net.central.handle
    net.network.register("central-bank", lambda k, d: answers.append(real(k, d)) or answers[-1])
    user.bank.fund(user.customer_id, net.money(1_00))
    net.network.register("central-bank", lambda k, d: answers[0])
    with pytest.raises(OffpayError) as exc:
        user.bank.fund(user.customer_id, net.money(900_00))
    assert exc.value.code.startswith("wire.replay")
    assert user.online == net.money(1_00)
    net.network.register("central-bank", real)
    net.check_conservation()


def test_funding_beyond_the_reserve_is_refused_and_changes_nothing(net: OfflineNetwork) -> None:
    user = net.add_user("Ann", "bank-a")
    with pytest.raises(OffpayError) as exc:
        user.bank.fund(user.customer_id, net.money(2_000_00))
    assert exc.value.code == "funds.insufficient"
    assert user.online == net.money(0)
    net.check_conservation()
