"""Report §3.7 liquidity: offline payment chains settle in any order, under each policy.

``queue`` is the pilot's rules with offpay's pending-settlement queue; ``restrict``, ``pool``
and ``receipts`` are the three remedies, chosen in the signed policy. Conservation is checked
after every step (the ``Checked`` helper).
"""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from tests.conftest import ISSUED_PER_BANK, Checked

from offpay.errors import LimitExceeded
from offpay.sim.liquidity import SimClock, liquidity_report
from offpay.sim.network import OfflineNetwork, User
from offpay.wire.codec import decode
from offpay.wire.envelope import Signed, payload_of, sign
from offpay.wire.messages import Liquidity, OfflinePayment

SEK = 100
POOL = 1_000 * SEK


def network(policy: Liquidity, *, pool: int = POOL) -> tuple[OfflineNetwork, Checked, SimClock]:
    clock = SimClock()
    net = OfflineNetwork(
        liquidity=policy, pool=pool if policy is Liquidity.POOL else 0, clock=clock
    )
    for name in net.banks:
        net.issue(name, ISSUED_PER_BANK)
    checked = LiquidityChecked(net)
    checked.conserved()
    return net, checked, clock


@dataclasses.dataclass
class LiquidityChecked(Checked):
    """``Checked`` for a network whose central bank may also hold a liquidity pool."""

    def conserved(self) -> None:
        audit = self.net.check_conservation()
        assert audit.issued == self.net.money(ISSUED_PER_BANK * len(self.net.banks) + self.net.pool)


def cards_match_shadows(net: OfflineNetwork) -> None:
    for user in net.users.values():
        assert user.card_balance == user.shadow, user.name


def open_shortfalls(net: OfflineNetwork) -> int:
    return sum(len(bank.open_shortfalls()) for bank in net.banks.values())


def tx(payment: bytes) -> bytes:
    return decode(Signed.from_bytes(payment).payload, OfflinePayment).tx_id


# --- the report's example, with its exact amounts ----------------------------------------------


def report_parties(net: OfflineNetwork, checked: Checked) -> tuple[User, User, User]:
    alice = net.add_user("Alice", "bank-a", online=1_000 * SEK)
    bob = net.add_user("Bob", "bank-b")
    charlie = net.add_user("Charlie", "bank-a")
    checked.top_up(alice, 200 * SEK)
    return alice, bob, charlie


def finish(net: OfflineNetwork, checked: Checked, alice: User, bob: User, charlie: User) -> None:
    """Everyone synchronises: the report's end state, whatever happened on the way."""
    checked.sync(alice, bob, charlie)
    assert open_shortfalls(net) == 0
    cards_match_shadows(net)
    assert alice.shadow == net.money(120 * SEK)
    assert bob.shadow == net.money(30 * SEK)
    assert charlie.shadow == net.money(50 * SEK)
    assert net.central.notarised_count() == 2
    assert net.central.pool_status().outstanding == net.money(0)


def test_report_example_under_the_queue_waits_then_settles_by_itself():
    net, checked, clock = network(Liquidity.QUEUE)
    alice, bob, charlie = report_parties(net, checked)
    checked.p2p(alice, bob, 80 * SEK)
    to_charlie = checked.p2p(bob, charlie, 50 * SEK)

    clock.advance(10)
    checked.sync(charlie)  # Charlie first: Bob's shadow wallet is empty (report §3.7)
    assert [p for _, _, p in net.banks["bank-b"].open_shortfalls()] == [net.money(50 * SEK)]
    # Held, not refused, and visible to both parties at their own intermediaries.
    [out] = net.banks["bank-b"].pending(bob.card_id)
    assert (out.tx_id, out.direction, out.counterparty) == (tx(to_charlie), "out", charlie.card_id)
    [owed] = net.banks["bank-a"].pending(charlie.card_id)
    assert (owed.tx_id, owed.direction, owed.counterparty) == (tx(to_charlie), "in", bob.card_id)
    assert owed.amount == net.money(50 * SEK)
    assert charlie.card_balance == charlie.shadow == net.money(0)

    # Alice synchronises: her SEK 80 reaches Bob's shadow wallet, and the waiting SEK 50 leaves
    # it for Charlie at the other intermediary at once, with neither of them online.
    clock.advance(30)
    checked.sync(alice)
    assert open_shortfalls(net) == 0
    assert net.banks["bank-a"].pending() == net.banks["bank-b"].pending() == []
    assert charlie.shadow == net.money(50 * SEK)
    assert bob.shadow == net.money(30 * SEK)

    report = liquidity_report(net)
    assert (report.queued, report.shortfall, report.still_waiting) == (1, net.money(50 * SEK), 0)
    assert report.longest_wait.total_seconds() == 30 * 60
    assert report.pool_drawn == net.money(0) and report.extra_bytes_per_payment == 0
    finish(net, checked, alice, bob, charlie)


def test_report_example_under_restriction_refuses_spending_received_money():
    net, checked, _ = network(Liquidity.RESTRICT)
    alice, bob, charlie = report_parties(net, checked)
    checked.p2p(alice, bob, 80 * SEK)
    request = checked.step(charlie.phone.ask, bob.phone.show_identity(), net.money(50 * SEK))
    error = checked.refused("limit.card_received_not_spendable", bob.phone.pay, bob.pin, request)
    assert isinstance(error, LimitExceeded)
    assert "received offline" in error.message

    # After his sync the money is Bob's to spend; no payment ever waits.
    checked.sync(bob)
    checked.p2p(bob, charlie, 50 * SEK)
    checked.sync(charlie)
    assert charlie.shadow == net.money(50 * SEK)
    report = liquidity_report(net)
    assert (report.queued, report.shortfall) == (0, net.money(0))
    finish(net, checked, alice, bob, charlie)


def test_report_example_under_the_pool_borrows_then_repays():
    net, checked, _ = network(Liquidity.POOL)
    alice, bob, charlie = report_parties(net, checked)
    checked.p2p(alice, bob, 80 * SEK)
    checked.p2p(bob, charlie, 50 * SEK)

    checked.sync(charlie)  # the gap of SEK 50 is lent to Bob's shadow wallet
    assert open_shortfalls(net) == 0
    assert charlie.card_balance == charlie.shadow == net.money(50 * SEK)
    pool = net.central.pool_status()
    assert (pool.outstanding, pool.drawn_total, pool.loans) == (net.money(50 * SEK),) * 2 + (1,)
    assert pool.available == net.money(POOL - 50 * SEK)

    checked.sync(alice)  # Alice's SEK 80 settles into Bob's wallet and repays the loan
    pool = net.central.pool_status()
    assert pool.outstanding == net.money(0)
    assert pool.peak_outstanding == net.money(50 * SEK)
    assert pool.available == net.money(POOL)
    report = liquidity_report(net)
    assert (report.short, report.shortfall, report.queued) == (1, net.money(50 * SEK), 0)
    assert (report.pool_drawn, report.pool_peak) == (net.money(50 * SEK), net.money(50 * SEK))
    finish(net, checked, alice, bob, charlie)


def test_report_example_under_receipts_settles_the_chain_at_the_first_sync():
    net, checked, _ = network(Liquidity.RECEIPTS)
    alice, bob, charlie = report_parties(net, checked)
    to_bob = checked.p2p(alice, bob, 80 * SEK)
    to_charlie = checked.p2p(bob, charlie, 50 * SEK)
    funding = payload_of(Signed.from_bytes(to_charlie), OfflinePayment).funding
    assert [r.to_bytes() for r in funding] == [to_bob]

    checked.sync(charlie)  # Charlie's upload carries Alice's payment to Bob: both settle
    assert open_shortfalls(net) == 0
    assert net.central.notarised_count() == 2
    assert (alice.shadow, bob.shadow, charlie.shadow) == (
        net.money(120 * SEK),
        net.money(30 * SEK),
        net.money(50 * SEK),
    )
    report = liquidity_report(net)
    assert report.queued == 0 and report.pool_drawn == net.money(0)
    assert report.receipt_bytes == len(to_bob)
    finish(net, checked, alice, bob, charlie)


def test_a_sync_never_hands_a_card_money_its_waiting_payments_will_take():
    """Bob had SEK 30 of his own, received SEK 50 from Alice (whose own funding from Zoe has
    not settled) and paid Charlie SEK 80. At Bob's sync his SEK 80 must wait; his card may not
    be handed back the SEK 30 it already spent, or it could spend it twice."""
    net, checked, _ = network(Liquidity.QUEUE)
    zoe = net.add_user("Zoe", "bank-a", online=100 * SEK)
    alice = net.add_user("Alice", "bank-a")
    bob = net.add_user("Bob", "bank-b", online=30 * SEK)
    charlie = net.add_user("Charlie", "bank-a")
    checked.top_up(zoe, 100 * SEK)
    checked.top_up(bob, 30 * SEK)
    checked.p2p(zoe, alice, 50 * SEK)
    checked.p2p(alice, bob, 50 * SEK)
    checked.p2p(bob, charlie, 80 * SEK)
    checked.sync(bob)
    assert bob.shadow == net.money(30 * SEK)  # reserved for the waiting SEK 80
    assert bob.card_balance == net.money(0)
    checked.sync(zoe)  # the chain unwinds: Zoe → Alice, Alice → Bob, Bob → Charlie
    assert open_shortfalls(net) == 0
    checked.sync(zoe, alice, bob, charlie)
    cards_match_shadows(net)
    assert (bob.shadow, charlie.shadow) == (net.money(0), net.money(80 * SEK))


# --- a chain of five payments, synchronised in every order -------------------------------------

CHAIN = "ABCDE"
ORDERS = list(itertools.permutations(range(len(CHAIN))))


@pytest.mark.parametrize("policy", [Liquidity.QUEUE, Liquidity.POOL, Liquidity.RECEIPTS])
@pytest.mark.parametrize("order", ORDERS, ids=lambda order: "".join(CHAIN[i] for i in order))
def test_a_chain_of_five_payments_settles_in_every_order(policy: Liquidity, order: tuple[int, ...]):
    """Only Alice has money; it travels A→B→C→D→E→A offline, each payer spending what it just
    received, across two intermediaries. Whatever the order of the syncs, every payment is
    settled once everyone has synchronised once, and each card then equals its shadow wallet."""
    net, checked, _ = network(policy)
    users = [
        net.add_user(name, ("bank-a", "bank-b")[i % 2], online=500 * SEK if i == 0 else 0)
        for i, name in enumerate(CHAIN)
    ]
    checked.top_up(users[0], 100 * SEK)
    for payer, payee in itertools.pairwise([*users, users[0]]):
        checked.p2p(payer, payee, 100 * SEK)
    checked.sync(*(users[i] for i in order))
    assert open_shortfalls(net) == 0
    assert net.central.notarised_count() == len(CHAIN)
    checked.sync(*users)
    cards_match_shadows(net)
    assert [u.shadow for u in users] == [net.money(100 * SEK)] + [net.money(0)] * 4
    assert net.central.pool_status().outstanding == net.money(0)


@pytest.mark.parametrize("order", ORDERS, ids=lambda order: "".join(CHAIN[i] for i in order))
def test_restriction_lets_a_chain_of_own_money_settle_in_every_order(order: tuple[int, ...]):
    """Under ``restrict`` a payer spends only its own synchronised money (the same chain, each
    payer with SEK 60 of its own), so no order of syncs can leave a payment waiting."""
    net, checked, _ = network(Liquidity.RESTRICT)
    users = [
        net.add_user(name, ("bank-a", "bank-b")[i % 2], online=100 * SEK)
        for i, name in enumerate(CHAIN)
    ]
    for user in users:
        checked.top_up(user, 60 * SEK)
    for payer, payee in itertools.pairwise([*users, users[0]]):
        checked.p2p(payer, payee, 50 * SEK)
    checked.sync(*(users[i] for i in order))
    assert open_shortfalls(net) == 0
    assert net.central.notarised_count() == len(CHAIN)
    checked.sync(*users)
    cards_match_shadows(net)
    assert all(u.shadow == net.money(60 * SEK) for u in users)


# --- a cycle the pilot's rules cannot untangle --------------------------------------------------


def cycle(policy: Liquidity) -> tuple[OfflineNetwork, Checked, User, User]:
    """Alice pays Bob SEK 80, Bob pays her back SEK 50, then she spends SEK 70 at a shop, all
    offline. The shop synchronises first and takes Alice's SEK 70 before her SEK 80 to Bob is
    known; that payment then needs Bob's SEK 50, which needs Alice's SEK 80 first."""
    net, checked, _ = network(policy)
    alice = net.add_user("Alice", "bank-a", online=1_000 * SEK)
    bob = net.add_user("Bob", "bank-b")
    shop = net.add_merchant("Shop", "bank-b")
    checked.top_up(alice, 100 * SEK)
    checked.p2p(alice, bob, 80 * SEK)
    checked.p2p(bob, alice, 50 * SEK)
    checked.charge(shop, alice, 70 * SEK)
    checked.sync(shop)
    checked.sync(bob, alice)
    checked.sync(bob, alice, shop)
    return net, checked, alice, bob


def test_a_payment_cycle_waits_under_the_pilot_rules_and_nothing_is_lost():
    net, _, alice, bob = cycle(Liquidity.QUEUE)

    # Held, visible, never lost: the two payments wait for each other.
    def seen_by(bank: str) -> list[tuple[str, int]]:
        return sorted((p.direction, p.amount.minor) for p in net.banks[bank].pending())

    assert seen_by("bank-a") == [("in", 50 * SEK), ("out", 80 * SEK)]
    assert seen_by("bank-b") == [("in", 80 * SEK), ("out", 50 * SEK)]
    assert liquidity_report(net).still_waiting == 2
    # The cards hold nothing that the waiting payments will take.
    assert alice.card_balance == net.money(0) and bob.card_balance == net.money(0)


@pytest.mark.parametrize("policy", [Liquidity.POOL, Liquidity.RECEIPTS])
def test_a_payment_cycle_settles_under_pool_and_receipts(policy: Liquidity):
    net, _, alice, bob = cycle(policy)
    assert open_shortfalls(net) == 0
    assert net.central.notarised_count() == 3
    cards_match_shadows(net)
    assert (alice.shadow, bob.shadow) == (net.money(0), net.money(30 * SEK))
    assert net.central.pool_status().outstanding == net.money(0)


# --- the pool: its bounds -----------------------------------------------------------------------


def test_a_draw_beyond_the_pool_queues_and_settles_when_money_arrives():
    net, checked, _ = network(Liquidity.POOL, pool=30 * SEK)
    alice, bob, charlie = report_parties(net, checked)
    checked.p2p(alice, bob, 80 * SEK)
    checked.p2p(bob, charlie, 50 * SEK)
    checked.sync(charlie)
    assert open_shortfalls(net) == 1  # SEK 50 does not fit a pool of SEK 30: it waits
    pool = net.central.pool_status()
    assert (pool.outstanding, pool.available) == (net.money(0), net.money(30 * SEK))
    assert any(kind == "pool_exhausted" for kind, _, _ in net.banks["bank-b"].anomalies())
    checked.sync(alice)
    assert open_shortfalls(net) == 0
    finish(net, checked, alice, bob, charlie)


def test_the_pool_lends_only_against_money_the_payer_received_offline():
    """Bob's card spends money it never received (a broken card forging its balance would look
    like this to the intermediary): the pool does not lend; the payment waits."""
    net, checked, _ = network(Liquidity.POOL)
    alice, bob, charlie = report_parties(net, checked)
    checked.p2p(alice, bob, 80 * SEK)
    checked.p2p(bob, charlie, 50 * SEK)
    checked.p2p(bob, charlie, 30 * SEK)
    # Bob's second payment says he had received SEK 80; together they need SEK 80: both lent.
    checked.sync(charlie)
    assert net.central.pool_status().outstanding == net.money(80 * SEK)
    assert open_shortfalls(net) == 0
    checked.sync(alice)
    assert net.central.pool_status().outstanding == net.money(0)
    checked.sync(bob, charlie)
    cards_match_shadows(net)


def test_the_pool_refuses_a_gap_the_card_does_not_account_for():
    net, checked, _ = network(Liquidity.POOL)
    bob = net.add_user("Bob", "bank-b", online=100 * SEK)
    charlie = net.add_user("Charlie", "bank-a")
    checked.top_up(bob, 50 * SEK)
    checked.p2p(bob, charlie, 50 * SEK)
    # Take Bob's shadow wallet down behind the card's back (an intermediary's error): the gap
    # is not money Bob received offline, so the pool must not cover it.
    bank = net.banks["bank-b"]
    with bank.db.begin() as conn:
        bank.ledger.move(
            conn, f"{bob.customer_id}/shadow", f"{bob.customer_id}/online", 50 * SEK, "x", None
        )
    checked.sync(charlie)
    assert open_shortfalls(net) == 1
    assert net.central.pool_status().drawn_total == net.money(0)


def test_a_draw_whose_answer_is_lost_is_completed_by_a_retry():
    net, checked, _ = network(Liquidity.POOL)
    alice, bob, charlie = report_parties(net, checked)
    checked.p2p(alice, bob, 80 * SEK)
    checked.p2p(bob, charlie, 50 * SEK)
    net.network.cut_next("pool-draw", after=True)
    checked.sync(charlie)  # the central bank lent, the answer was lost: the payment waits
    assert open_shortfalls(net) == 1
    assert net.central.pool_status().outstanding == net.money(50 * SEK)
    assert checked.step(net.banks["bank-b"].retry_pending) >= 1
    assert open_shortfalls(net) == 0
    assert net.central.pool_status().loans == 1  # the retry did not borrow twice
    finish(net, checked, alice, bob, charlie)


def test_a_repayment_whose_answer_is_lost_is_completed_by_a_retry():
    net, checked, _ = network(Liquidity.POOL)
    alice, bob, charlie = report_parties(net, checked)
    checked.p2p(alice, bob, 80 * SEK)
    checked.p2p(bob, charlie, 50 * SEK)
    checked.sync(charlie)
    net.network.cut_next("pool-repay", after=True)
    checked.sync(alice)
    assert net.central.pool_status().outstanding == net.money(0)
    checked.step(net.banks["bank-b"].retry_pending)
    checked.step(net.banks["bank-b"].retry_pending)  # twice: the repayment is not made again
    assert net.central.pool_status().available == net.money(POOL)
    finish(net, checked, alice, bob, charlie)


# --- receipts: verified like payments -----------------------------------------------------------


def forged_payment(net: OfflineNetwork, genuine: bytes, payer: User, **changes: object) -> bytes:
    """A payment re-signed by ``payer``'s own key with altered fields: what a broken card could
    produce. Signing needs the card's credential, which only a test can reach."""
    signed = Signed.from_bytes(genuine)
    payment = dataclasses.replace(payload_of(signed, OfflinePayment), **changes)
    return sign(payment, payer.card._credential).to_bytes()


def test_a_receipt_between_customers_of_another_intermediary_settles_too():
    """Alice and Bob bank at bank-b, Charlie at bank-a: Charlie's intermediary presents Alice's
    payment to Bob (a receipt it holds) to bank-b, which settles it for its two customers."""
    net, checked, _ = network(Liquidity.RECEIPTS)
    alice = net.add_user("Alice", "bank-b", online=1_000 * SEK)
    bob = net.add_user("Bob", "bank-b")
    charlie = net.add_user("Charlie", "bank-a")
    checked.top_up(alice, 200 * SEK)
    checked.p2p(alice, bob, 80 * SEK)
    checked.p2p(bob, charlie, 50 * SEK)
    checked.sync(charlie)
    assert open_shortfalls(net) == 0
    assert (alice.shadow, bob.shadow, charlie.shadow) == (
        net.money(120 * SEK),
        net.money(30 * SEK),
        net.money(50 * SEK),
    )
    checked.sync(alice, bob, charlie)
    cards_match_shadows(net)
    assert net.central.notarised_count() == 2


def test_a_forged_receipt_is_refused_and_recorded_against_the_card():
    net, checked, _ = network(Liquidity.RECEIPTS)
    alice, bob, charlie = report_parties(net, checked)
    to_bob = checked.p2p(alice, bob, 80 * SEK)
    to_charlie = checked.p2p(bob, charlie, 50 * SEK)
    tampered = Signed.from_bytes(to_bob)
    tampered = Signed(tampered.payload, bytes(64), tampered.chain)  # signature broken
    forged = forged_payment(net, to_charlie, bob, funding=(tampered,))
    outcome = checked.step(net.banks["bank-a"].settle, Signed.from_bytes(forged))
    assert outcome.status.value == "short"  # the payment itself waits in the queue
    assert net.central.notarised_count() == 0  # the receipt was not settled
    assert ("bad_receipt", bob.card_id) in {(k, d) for k, d, _ in net.banks["bank-a"].anomalies()}


def test_a_receipt_paying_someone_else_is_refused():
    net, checked, _ = network(Liquidity.RECEIPTS)
    alice, bob, charlie = report_parties(net, checked)
    dave = net.add_user("Dave", "bank-b")
    to_dave = checked.p2p(alice, dave, 80 * SEK)
    checked.p2p(alice, bob, 20 * SEK)
    to_charlie = checked.p2p(bob, charlie, 20 * SEK)
    forged = forged_payment(net, to_charlie, bob, funding=(Signed.from_bytes(to_dave),))
    checked.step(net.banks["bank-a"].settle, Signed.from_bytes(forged))
    assert not net.is_notarised(tx(to_dave))
    assert "foreign_receipt" in {k for k, _, _ in net.banks["bank-a"].anomalies()}


def test_a_replayed_receipt_settles_nothing_twice():
    net, checked, _ = network(Liquidity.RECEIPTS)
    alice, bob, charlie = report_parties(net, checked)
    to_bob = checked.p2p(alice, bob, 80 * SEK)
    to_charlie = checked.p2p(bob, charlie, 50 * SEK)
    checked.sync(charlie)
    assert net.central.notarised_count() == 2
    # The same chain again, and Bob's payment with Alice's receipt at the other intermediary.
    for bank in net.banks.values():
        checked.step(bank.settle, Signed.from_bytes(to_charlie))
        checked.step(bank.settle, Signed.from_bytes(to_bob))
    assert net.central.notarised_count() == 2
    finish(net, checked, alice, bob, charlie)


def test_receipts_are_bounded_by_the_policy():
    net, checked, _ = network(Liquidity.RECEIPTS)
    payers = [net.add_user(f"P{i}", "bank-a", online=100 * SEK) for i in range(4)]
    bob = net.add_user("Bob", "bank-b")
    charlie = net.add_user("Charlie", "bank-a")
    for payer in payers:
        checked.top_up(payer, 10 * SEK)
        checked.p2p(payer, bob, 10 * SEK)
    policy = net.banks["bank-b"].current_policy()[1]
    limited = dataclasses.replace(policy, version=2, max_receipts=2)
    net.banks["bank-b"].publish_policy(limited)
    # Bob's card takes the new policy at a sync, which settles his log; receive again after it.
    checked.sync(bob)
    more = [net.add_user(f"Q{i}", "bank-a", online=100 * SEK) for i in range(4)]
    for payer in more:
        checked.top_up(payer, 10 * SEK)
    for payer in more[:3]:
        checked.p2p(payer, bob, 5 * SEK)
    payment = checked.p2p(bob, charlie, 15 * SEK)
    funding = payload_of(Signed.from_bytes(payment), OfflinePayment).funding
    assert len(funding) == 2  # the two most recent, in the order received
    assert [payload_of(r, OfflinePayment).sender for r in funding] == [
        more[1].card_id,
        more[2].card_id,
    ]


def test_the_card_hands_over_receipts_only_under_the_receipts_policy():
    for policy in (Liquidity.QUEUE, Liquidity.POOL):
        net, checked, _ = network(policy)
        alice, bob, charlie = report_parties(net, checked)
        checked.p2p(alice, bob, 80 * SEK)
        payment = checked.p2p(bob, charlie, 50 * SEK)
        decoded = payload_of(Signed.from_bytes(payment), OfflinePayment)
        assert decoded.funding == ()
        assert decoded.payer_received == net.money(80 * SEK)
