"""Race (issue 5, point 6): both parties of the same payments synchronise at the same instant
through two intermediary services, each its own process on PostgreSQL, with the central bank
a third. Every payment settles exactly once and money is conserved.

Payments go both ways (customers of bank-a pay customers of bank-b and the other way round)
and a shop terminal uploads payments at the same time, so each intermediary debits, credits
and answers the other's payment requests concurrently.
"""

from __future__ import annotations

import threading
from pathlib import Path

from offpay.service.datadir import CENTRAL, init_network
from offpay.service.process import running
from offpay.service.remote import RemoteMerchant, RemoteNetwork, RemoteUser

PAIRS = 4  # per direction; each payer pays its payee twice, bank-a's payers pay the shop once


def pay(payer: RemoteUser, payee: RemoteUser, minor: int) -> None:
    request = payee.phone.ask(payer.phone.show_identity(), payer.bank.money(minor))
    payee.phone.accept(payee.pin, payer.phone.pay(payer.pin, request))


def all_at_once(actions: list[tuple[str, object]]) -> list[str]:
    """Run every action in its own thread, released together; the failures, by name."""
    barrier = threading.Barrier(len(actions))
    failures: list[str] = []

    def run(name: str, action: object) -> None:
        barrier.wait()
        try:
            action()  # type: ignore[operator]
        except Exception as exc:
            failures.append(f"{name}: {exc!r}")

    threads = [threading.Thread(target=run, args=item) for item in actions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    return failures


def test_both_parties_syncing_at_once_settle_each_payment_once(
    tmp_path: Path, postgres_url: object
) -> None:
    names = (CENTRAL, "bank-a", "bank-b")
    network = init_network(
        tmp_path / "net",
        ("bank-a", "bank-b"),
        databases={name: postgres_url(name) for name in names},  # type: ignore[operator]
    )
    with running(network, retry_every=-1) as processes:
        net = RemoteNetwork(network)
        try:
            for bank in network.banks:
                net.issue(bank, 1_000_000_00)
            shop: RemoteMerchant = net.add_merchant("Shop", "bank-b")
            pairs: list[tuple[RemoteUser, RemoteUser]] = []
            for i in range(PAIRS):
                for payer_bank, payee_bank in (("bank-a", "bank-b"), ("bank-b", "bank-a")):
                    payer = net.add_user(f"payer-{payer_bank}-{i}", payer_bank, online=1_000_00)
                    payee = net.add_user(f"payee-{payee_bank}-{i}", payee_bank)
                    payer.phone.top_up(payer.pin, net.money(600_00))
                    pairs.append((payer, payee))
            expected: dict[str, int] = {u.name: 0 for pair in pairs for u in pair}
            payments = 0
            for n, (payer, payee) in enumerate(pairs):
                for minor in (10_00 + n, 20_00 + n):
                    pay(payer, payee, minor)
                    expected[payee.name] += minor
                    payments += 1
                if payer.bank.name == "bank-a":  # the shop is at bank-b
                    shop.pos.charge(payer.card.process, payer.pin, net.money(5_00))
                    payments += 1
            charged = 5_00 * PAIRS
            received = sum(expected.values()) + charged
            audit_before = net.check_conservation()

            syncs = [(u.name, lambda u=u: u.phone.sync(u.pin)) for pair in pairs for u in pair]
            failures = all_at_once([*syncs, ("Shop", shop.pos.sync)])
            assert failures == []

            # Whoever was answered before a concurrent credit landed gets it at the next sync.
            for pair in pairs:
                for user in pair:
                    user.phone.sync(user.pin)
            central = net.central.ledger()
            assert central["notarised"] == payments
            ledgers = {name: bank.ledger() for name, bank in net.banks.items()}
            assert sum(int(x["debited"]) for x in ledgers.values()) == received  # type: ignore[call-overload]
            assert sum(int(x["credited"]) for x in ledgers.values()) == received  # type: ignore[call-overload]
            assert all(x["in_transit"] == 0 and x["uncredited"] == {} for x in ledgers.values())
            for payer, payee in pairs:
                assert payee.shadow == payee.card_balance == net.money(expected[payee.name])
                assert payer.shadow == payer.card_balance
            assert shop.wallet == net.money(charged)
            audit = net.check_conservation()
            assert audit.issued == audit_before.issued == audit.held
            assert audit.in_transit == net.money(0)
        finally:
            net.close()
        for process in processes.values():
            log = process.log_tail(10_000)
            assert "unexpected failure" not in log, log
            # Opposite payments are notarised in one lock order: the database never has to
            # break a deadlock (and the senders never wait to retry).
            assert "DeadlockDetected" not in log, log
