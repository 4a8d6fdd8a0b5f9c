"""Settlement and pool rules that no other test caught when a reviewer removed them (issue 22).

Each test names the rule it pins in its docstring and fails when that rule is removed from the
code. Where a rule applies on both settlement paths, the test runs on each: an upload of one
payment (the one-by-one pipeline) and an upload of two or more (``bank/batch.py``).
Conservation is checked after every step.
"""

from __future__ import annotations

import os

import pytest
from sqlalchemy import select

from conftest import Checked
from offpay.attacks.settlement_requests import batch_answer as answer
from offpay.attacks.settlement_requests import item_of
from offpay.central.bank import NOTARY_ID, open_result
from offpay.crypto.pki import Role
from offpay.sim.network import OfflineNetwork
from offpay.store import schema
from offpay.wire.envelope import Signed, sign
from offpay.wire.messages import (
    CreditBatch,
    Liquidity,
    NotariseBatch,
    NotariseRequest,
    PoolRequest,
    SettlementStatus,
)
from test_attacks import anomalies_of, clone_of, funded
from test_liquidity import network, open_shortfalls, tx

SEK = 100


# --- rule 1: a payment under a counter the card passed at a confirmed sync is not settled ------


@pytest.mark.parametrize("amounts", [(20,), (20, 30)], ids=["one-by-one", "batch"])
def test_a_card_rolled_back_before_a_partial_defund_is_caught_on_either_path(
    net: OfflineNetwork, checked: Checked, amounts: tuple[int, ...]
) -> None:
    """Pins: a payment's counter must be above what the card confirmed at its last sync
    (``_classify`` in bank/batch.py for an upload of two or more, ``_debit_and_notarise`` for
    one). Mallory's card is restored to before a partial defund and a sync, and spends from the
    old state at one shop. The SEK 60 left in her shadow wallet covers every payment, so only
    the counter rule keeps them off the batch fast path: they are refused as a rolled-back
    card's, the card is blocked and revoked, and the shop is not paid."""
    mallory = funded(net, checked, "Mallory", "bank-a", 100 * SEK)
    shop = net.add_merchant("Shop", "bank-b")
    saved = mallory.card._state
    checked.defund(mallory, 40 * SEK)  # the card confirms counters beyond the saved state...
    checked.sync(mallory)  # ...twice, so that each payment below reuses a passed counter
    assert mallory.shadow == net.money(60 * SEK)
    mallory.card._state = saved  # the broken core writes back SEK 100
    for minor in amounts:
        checked.charge(shop, mallory, minor * SEK)
    assert sum(amounts) * SEK <= mallory.shadow.minor  # the balance guard would let them pass

    checked.sync(shop)
    bank = net.banks["bank-a"]
    assert "rolled_back" in anomalies_of(bank, mallory.card_id)
    assert bank.device(mallory.card_id).status == "blocked"
    assert mallory.card_id in net.central.revoked_devices()
    assert shop.wallet == net.money(0)
    assert mallory.shadow == net.money(60 * SEK) and mallory.online == net.money(40 * SEK)
    assert net.central.notarised_count() == 0
    assert [loss.amount for loss in bank.losses()] == [net.money(m * SEK) for m in amounts]
    checked.refused("crypto.revoked", mallory.phone.sync, mallory.pin)


# --- rule 2: the notary refuses a known payment id with other evidence -------------------------


@pytest.mark.parametrize("kind", ["notarise", "notarise-batch"])
def test_the_notary_refuses_a_clones_payment_under_a_recorded_id(
    net: OfflineNetwork, checked: Checked, kind: str
) -> None:
    """Pins: the notary answers a payment id it recorded with other evidence ``refused``
    (``central.conflict``), never ``already``, in a batch as in a single request. Alice's card
    is cloned; her genuine payments settle, then bank-a asks the notary to record the clone's
    payment, which reuses the first one's counter and so its id. An ``already`` would be a
    receipt that credits the clone's payee: the answer credits nobody and nothing moves."""
    alice = funded(net, checked, "Alice", "bank-a", 100 * SEK)
    shop = net.add_merchant("Shop", "bank-b")
    other = net.add_merchant("Other", "bank-b")
    clone = clone_of(alice.card)
    first = Signed.from_bytes(checked.charge(shop, alice, 30 * SEK))
    second = Signed.from_bytes(checked.charge(shop, alice, 20 * SEK))
    checked.step(other.pos.charge, clone.process, alice.pin, net.money(40 * SEK))
    copied = clone.state.last_payment  # the PoS app carried it sealed to the terminal
    assert copied is not None
    checked.sync(shop)  # the genuine payments are recorded; the other shop never syncs
    a, b = net.banks["bank-a"], net.banks["bank-b"]
    conflict, genuine = item_of(a, copied), item_of(a, first)
    assert conflict.pseudonym == genuine.pseudonym and conflict.commitment != genuine.commitment
    before = checked.snapshot()

    if kind == "notarise":
        single = NotariseRequest(
            a.id,
            NOTARY_ID,
            os.urandom(16),
            conflict.pseudonym,
            conflict.commitment,
            conflict.payer_institution,
            conflict.payee_institution,
            conflict.amount,
        )
        receipt = checked.step(net.central.handle, kind, sign(single, a.credential).to_bytes())
        result = open_result(receipt, a.trust, single, Role.NOTARY)
        answers = [(result.status, result.code)]
        expected = [(SettlementStatus.REFUSED, "central.conflict")]
    else:
        items = (item_of(a, second), conflict)
        batch = NotariseBatch(a.id, NOTARY_ID, os.urandom(16), items)
        receipt = checked.step(net.central.handle, kind, sign(batch, a.credential).to_bytes())
        answers = [(i.status, i.detail) for i in answer(receipt, a.trust, a.id).items]
        expected = [(SettlementStatus.ALREADY, ""), (SettlementStatus.REFUSED, "central.conflict")]
    assert answers == expected
    assert checked.snapshot() == before
    n = schema.notary
    with net.central.db.connect() as conn:
        recorded = conn.execute(
            select(n.c.commitment).where(n.c.pseudonym == conflict.pseudonym)
        ).one()
    assert bytes(recorded.commitment) == genuine.commitment

    # The refusal is no receipt: the clone's payee cannot be credited with it.
    credit = CreditBatch(a.id, b.id, os.urandom(16), (copied.to_bytes(),), receipt)
    checked.refused(
        "bank.no_receipt", b.handle, "credit-batch", sign(credit, a.credential).to_bytes()
    )
    assert (shop.wallet, other.wallet) == (net.money(50 * SEK), net.money(0))


# --- rule 3: the pool lends no more than the card received, minus what its device owes ---------


@pytest.mark.parametrize("batched", [False, True], ids=["one-by-one", "batch"])
def test_the_pool_lends_what_the_card_received_only_once(batched: bool) -> None:
    """Pins: a draw is bounded by what the payer card said it received offline *minus the
    loans its device still owes* (``LiquidityDesk.draw``). Bob's card received SEK 80 from
    Alice; his shadow wallet was taken down behind the card's back (an intermediary's error,
    as in test_liquidity), so his payments of SEK 50 and 80 have gaps of 50 and 80. The pool
    lends the first gap; the same SEK 80 cannot back the second, which waits in the queue.
    Each shop uploads its payment alone, or one shop uploads both."""
    net, checked, _ = network(Liquidity.POOL)
    alice = net.add_user("Alice", "bank-a", online=200 * SEK)
    bob = net.add_user("Bob", "bank-b", online=80 * SEK)
    shops = [net.add_merchant("Shop", "bank-a")]
    if not batched:
        shops.append(net.add_merchant("Other", "bank-a"))
    checked.top_up(alice, 200 * SEK)
    checked.top_up(bob, 80 * SEK)
    checked.p2p(alice, bob, 80 * SEK)
    checked.charge(shops[0], bob, 50 * SEK)
    late = checked.charge(shops[-1], bob, 80 * SEK)
    bank = net.banks["bank-b"]
    with bank.db.begin() as conn:
        bank.ledger.move(
            conn, f"{bob.customer_id}/shadow", f"{bob.customer_id}/online", 80 * SEK, "x", None
        )

    checked.sync(*shops)
    pool = net.central.pool_status()
    assert (pool.drawn_total, pool.outstanding, pool.loans) == (
        net.money(50 * SEK),
        net.money(50 * SEK),
        1,
    )
    assert [(p.tx_id, p.amount) for p in bank.pending(bob.card_id)] == [
        (tx(late), net.money(80 * SEK))
    ]
    assert open_shortfalls(net) == 1
    assert sum((s.wallet for s in shops), net.money(0)) == net.money(50 * SEK)
    # Alice's SEK 80 reaches Bob: it repays the loan, and the waiting payment settles on a
    # loan of the SEK 50 still missing, now that nothing else is owed against what he received.
    checked.sync(alice)
    assert open_shortfalls(net) == 0
    assert net.central.pool_status().outstanding == net.money(50 * SEK)
    assert sum((s.wallet for s in shops), net.money(0)) == net.money(130 * SEK)


# --- rule 4: a loan is repaid once --------------------------------------------------------------


def test_a_repaid_loan_is_not_repaid_again_while_another_is_outstanding() -> None:
    """Pins: the central bank refuses a repayment beyond what a loan still owes with a typed
    error (``central.loan`` in ``CentralBank._pool``), not only by its ``repaid <= drawn``
    CHECK. Bob's first loan (SEK 30) is repaid when Alice's money reaches him; his second
    (SEK 50) is outstanding, so the pool's own outstanding total would not go negative. A
    second repayment of the first loan, under a fresh nonce, is refused and nothing moves."""
    net, checked, _ = network(Liquidity.POOL)
    alice = net.add_user("Alice", "bank-a", online=200 * SEK)
    dave = net.add_user("Dave", "bank-a", online=200 * SEK)
    bob = net.add_user("Bob", "bank-b")
    charlie = net.add_user("Charlie", "bank-a")
    checked.top_up(alice, 200 * SEK)
    checked.top_up(dave, 200 * SEK)
    checked.p2p(alice, bob, 80 * SEK)
    repaid = tx(checked.p2p(bob, charlie, 30 * SEK))
    checked.sync(charlie)  # lent: SEK 30
    checked.sync(alice, bob)  # Alice's SEK 80 reaches Bob and repays it; his card holds 50
    checked.p2p(dave, bob, 80 * SEK)
    owing = tx(checked.p2p(bob, charlie, 100 * SEK))
    checked.sync(charlie)  # lent: the gap of SEK 50
    loans = schema.pool_loans
    with net.central.db.connect() as conn:
        rows = {bytes(r.loan_id): (r.drawn, r.repaid) for r in conn.execute(select(loans))}
    # The central bank knows each loan by the pseudonym of the payment it funded (bank-b's).
    named = net.banks["bank-b"].pseudonym
    assert rows == {named(repaid): (30 * SEK, 30 * SEK), named(owing): (50 * SEK, 0)}
    pool = net.central.pool_status()
    assert pool.outstanding == net.money(50 * SEK)

    b = net.banks["bank-b"]
    again = PoolRequest(b.id, NOTARY_ID, os.urandom(16), "repay", repaid, net.money(30 * SEK))
    checked.refused(
        "central.loan", net.central.handle, "pool-repay", sign(again, b.credential).to_bytes()
    )
    assert net.central.pool_status() == pool
    with net.central.db.connect() as conn:
        assert {bytes(r.loan_id): (r.drawn, r.repaid) for r in conn.execute(select(loans))} == rows
