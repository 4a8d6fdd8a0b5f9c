"""The central bank learns amounts and institutions, not devices or people (issue 19, point 2;
docs/notary-privacy.md): the notary records each payment under a keyed pseudonym and a
commitment to its evidence, keeps exactly-once and still refuses a clone's payment."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text, update

from conftest import Checked, UrlFor
from offpay.bank.engine import Intermediary
from offpay.crypto.pseudonyms import NotaryName, commitment, pseudonym
from offpay.sim.network import OfflineNetwork
from offpay.store import migrate, schema
from offpay.store.engines import connect
from offpay.wire.envelope import Signed, payload_of
from offpay.wire.messages import OfflinePayment
from test_attacks import anomalies_of, clone_of, funded

SEK = 100


def central_cells(net: OfflineNetwork) -> list[object]:
    """Every value of every row of every table the central bank keeps."""
    cells: list[object] = []
    with net.central.db.connect() as conn:
        for table in schema.central.sorted_tables:
            for row in conn.execute(select(table)):
                cells.extend(row)
    return cells


def test_the_central_bank_keeps_no_device_and_no_payment_id(
    net: OfflineNetwork, checked: Checked
) -> None:
    """Payments card to shop (one by one and as a batch), card to card, across and within
    intermediaries: no value the central bank keeps names a device, a customer, a payment id
    or an evidence digest; its notary rows are under the payer's intermediary's pseudonyms."""
    alice = funded(net, checked, "Alice", "bank-a", 300 * SEK)
    bob = net.add_user("Bob", "bank-b")
    shop = net.add_merchant("Corner Shop", "bank-b")
    local = net.add_merchant("Local Shop", "bank-a")
    paid = [checked.charge(shop, alice, 10 * SEK)]
    checked.sync(shop)
    paid += [checked.charge(shop, alice, m * SEK) for m in (11, 12)]
    paid += [checked.charge(local, alice, 13 * SEK)]
    checked.sync(shop, local)
    paid += [checked.p2p(alice, bob, 14 * SEK)]
    checked.sync(alice, bob)
    payments = [Signed.from_bytes(p) for p in paid]
    a = net.banks["bank-a"]
    assert net.central.notarised_count() == len(payments)
    secrets = {alice.card_id, bob.card_id, shop.terminal_id, local.terminal_id, "Alice", "Bob"}
    secret_bytes = set()
    for signed in payments:
        p = payload_of(signed, OfflinePayment)
        secret_bytes |= {p.tx_id, signed.digest}
        assert net.central.is_notarised(a.pseudonym(p.tx_id))
        assert not net.central.is_notarised(p.tx_id)
    for cell in central_cells(net):
        if isinstance(cell, str):
            assert not any(s in cell for s in secrets), cell
        elif isinstance(cell, bytes | memoryview):
            data = bytes(cell)
            assert not any(s.encode() in data for s in secrets)
            assert not any(s in data for s in secret_bytes)


def test_both_intermediaries_book_the_pseudonym_the_notary_recorded(
    net: OfflineNetwork, checked: Checked
) -> None:
    """The payer's debit and the payee's credit name the notary's pseudonym, so an auditor
    joins the three books; the commitment is the evidence's."""
    alice = funded(net, checked, "Alice", "bank-a", 100 * SEK)
    shop = net.add_merchant("Shop", "bank-b")
    signed = Signed.from_bytes(checked.charge(shop, alice, 10 * SEK))
    checked.sync(shop)
    tx = payload_of(signed, OfflinePayment).tx_id
    a, b = net.banks["bank-a"], net.banks["bank-b"]
    with a.db.connect() as conn:
        debit = conn.execute(select(schema.debits).where(schema.debits.c.tx_id == tx)).one()
    with b.db.connect() as conn:
        credit = conn.execute(select(schema.credits).where(schema.credits.c.tx_id == tx)).one()
    n = schema.notary
    with net.central.db.connect() as conn:
        row = conn.execute(select(n).where(n.c.pseudonym == debit.pseudonym)).one()
    assert bytes(debit.pseudonym) == bytes(credit.pseudonym) == a.pseudonym(tx)
    assert bytes(row.commitment) == commitment(signed.digest)
    assert (row.payer_institution, row.payee_institution, row.amount) == (
        "bank-a",
        "bank-b",
        10 * SEK,
    )


def test_a_card_s_payments_get_unrelated_pseudonyms_and_each_bank_its_own(
    net: OfflineNetwork,
) -> None:
    a, b = net.banks["bank-a"], net.banks["bank-b"]
    assert a.pseudonym_key != b.pseudonym_key and len(a.pseudonym_key) == 32
    from offpay.wire.messages import payment_tx_id

    names = {a.pseudonym(payment_tx_id("card:bank-a:1", seq)) for seq in range(1, 200)}
    assert len(names) == 199  # no two alike, and none says which card or counter
    tx = payment_tx_id("card:bank-a:1", 1)
    assert a.pseudonym(tx) != b.pseudonym(tx) and a.pseudonym(tx) != tx


@settings(deadline=None, max_examples=50)
@given(key=st.binary(min_size=32, max_size=32), tx=st.binary(min_size=16, max_size=16),
       e1=st.binary(min_size=32, max_size=32), e2=st.binary(min_size=32, max_size=32))  # fmt: skip
def test_same_id_same_pseudonym_other_evidence_other_commitment(
    key: bytes, tx: bytes, e1: bytes, e2: bytes
) -> None:
    """Exactly once and conflicts, for all inputs: one payment is always named alike; a second
    payment under the same id (a clone) has the same pseudonym and another commitment; a
    refund never commits like the payment it gives back."""
    one, again = NotaryName.of(key, tx, e1), NotaryName.of(key, tx, e1)
    other = NotaryName.of(key, tx, e2)
    assert one == again and one.pseudonym == other.pseudonym == pseudonym(key, tx)
    assert (one.commitment == other.commitment) == (e1 == e2)
    assert commitment(e1, refund=True) != commitment(e1)


def test_the_pseudonym_key_survives_a_restart(tmp_path: Path) -> None:
    """The key lives in the intermediary's database: an engine opened again on it names a
    payment as before (a retried notarisation is then ``already``, never recorded twice)."""
    url = f"sqlite:///{tmp_path / 'bank.db'}"
    net = OfflineNetwork()
    a = net.banks["bank-a"]

    def open_engine() -> Intermediary:
        return Intermediary("bank-a", a.ca, net.central.root_der, net.network, url=url)

    first, again = open_engine(), open_engine()
    assert first.pseudonym_key == again.pseudonym_key
    assert first.pseudonym(bytes(16)) == again.pseudonym(bytes(16))


def test_a_clone_s_payment_is_still_refused_and_contained(
    net: OfflineNetwork, checked: Checked
) -> None:
    """Alice's card is cloned; the clone pays another shop with the counter of a settled
    payment. The payer's intermediary sees the conflict and blocks the card; the notary, asked
    directly, refuses the same pseudonym with another commitment (tests/test_settlement_rules
    pins that answer); nobody is paid twice."""
    alice = funded(net, checked, "Alice", "bank-a", 100 * SEK)
    shop, other = net.add_merchant("Shop", "bank-b"), net.add_merchant("Other", "bank-b")
    clone = clone_of(alice.card)
    checked.charge(shop, alice, 30 * SEK)
    checked.step(other.pos.charge, clone.process, alice.pin, net.money(40 * SEK))
    checked.sync(shop)
    checked.sync(other)
    assert (shop.wallet, other.wallet) == (net.money(30 * SEK), net.money(0))
    assert "conflicting_payment" in anomalies_of(net.banks["bank-a"], alice.card_id)
    assert net.central.notarised_count() == 1


def test_a_payment_notarised_before_the_upgrade_is_not_recorded_twice(
    net: OfflineNetwork, checked: Checked
) -> None:
    """What the migrations leave: the notary's old row keeps the payment's id and digest (in
    ``pseudonym`` and ``commitment``), the payer's debit row has no pseudonym. A retry of that
    payment (its answer lost before the upgrade) is named as the notary knows it and answered
    ``already``: holdings move once."""
    alice = funded(net, checked, "Alice", "bank-a", 100 * SEK)
    shop = net.add_merchant("Shop", "bank-b")
    signed = Signed.from_bytes(checked.charge(shop, alice, 10 * SEK))
    checked.sync(shop)
    tx = payload_of(signed, OfflinePayment).tx_id
    a, d, n = net.banks["bank-a"], schema.debits, schema.notary
    with a.db.begin() as conn:  # as before the upgrade, with the answer lost
        conn.execute(update(d).where(d.c.tx_id == tx).values(pseudonym=None, notarised=False))
    with net.central.db.begin() as conn:
        conn.execute(
            update(n)
            .where(n.c.pseudonym == a.pseudonym(tx))
            .values(pseudonym=tx, commitment=signed.digest)
        )
    positions = net.central.positions()
    assert a.retry_pending() == 1
    assert net.central.positions() == positions and net.central.notarised_count() == 1
    with a.db.connect() as conn:
        assert conn.execute(select(d.c.notarised).where(d.c.tx_id == tx)).scalar_one()
    net.check_conservation()


def test_an_existing_central_database_upgrades_with_its_notary_rows(db_url: UrlFor) -> None:
    """central_0003 -> head: the old rows keep their id and evidence under the new names, and
    first answers kept before get the upgrade's time (pruned a window after it)."""
    engine = connect(db_url("central"))
    migrate.upgrade(engine, "central", "central_0003")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO notary (tx_id, evidence, payer_institution, payee_institution, "
                "amount, recorded_by) VALUES (:t, :e, 'bank-a', 'bank-b', 500, 'bank-a/engine')"
            ),
            {"t": b"t" * 16, "e": b"e" * 32},
        )
        conn.execute(
            text(
                "INSERT INTO http_answers (sender, key, kind, digest, status, media_type, body) "
                "VALUES ('bank-a/engine', 'k', 'notarise', :d, 200, 'x', :b)"
            ),
            {"d": bytes(32), "b": b"answer"},
        )
    migrate.upgrade(engine, "central")
    with engine.connect() as conn:
        row = conn.execute(select(schema.notary)).one()
        kept = conn.execute(select(schema.central_http_answers.c.created_at)).scalar_one()
    assert (bytes(row.pseudonym), bytes(row.commitment), row.amount) == (b"t" * 16, b"e" * 32, 500)
    assert kept is not None
    migrate.downgrade(engine, "central", "central_0003")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT tx_id FROM notary")).scalar_one() == b"t" * 16
    engine.dispose()


def test_an_existing_intermediary_database_upgrades(db_url: UrlFor) -> None:
    engine = connect(db_url("bank"))
    migrate.upgrade(engine, "intermediary", "intermediary_0005")
    migrate.upgrade(engine, "intermediary")
    with engine.connect() as conn:
        for table in ("debits", "credits", "pool_loans"):
            assert conn.execute(text(f"SELECT pseudonym FROM {table}")).all() == []
        assert conn.execute(text("SELECT count(*) FROM disclosures")).scalar_one() == 0
    migrate.downgrade(engine, "intermediary", "intermediary_0005")
    migrate.upgrade(engine, "intermediary")
    engine.dispose()
