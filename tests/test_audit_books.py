"""The auditor's checks over the whole network's books: the liquidity pool against its loans
at both ends, and tokens minted, consumed and redeemed. Clean when honest; the party and the
record named when a row is changed behind the engines' back."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import delete, update
from tests.test_liquidity import POOL, SEK, LiquidityChecked, report_parties

from offpay.attacks.checked import ISSUED_PER_BANK
from offpay.audit import findings as codes
from offpay.audit.auditor import audit
from offpay.audit.sources import Sources
from offpay.sim.liquidity import SimClock
from offpay.sim.network import OfflineNetwork
from offpay.store import schema
from offpay.tokens.mint import REDEEMED
from offpay.wire.messages import Liquidity


def sqlite_network(tmp_path: Path, **options: object) -> tuple[OfflineNetwork, Sources]:
    url = lambda name: f"sqlite+pysqlite:///{tmp_path}/{name}.sqlite"  # noqa: E731
    net = OfflineNetwork(url_for=url, **options)  # type: ignore[arg-type]
    for name in net.banks:
        net.issue(name, ISSUED_PER_BANK)
    sources = Sources(
        net.central.root_der, net.currency, url("central-bank"), {b: url(b) for b in net.banks}
    )
    return net, sources


def test_a_pool_loan_outstanding_audits_clean_and_a_changed_loan_is_named(
    tmp_path: Path,
) -> None:
    net, sources = sqlite_network(tmp_path, liquidity=Liquidity.POOL, pool=POOL, clock=SimClock())
    checked = LiquidityChecked(net)
    alice, bob, charlie = report_parties(net, checked)
    checked.p2p(alice, bob, 80 * SEK)
    checked.p2p(bob, charlie, 50 * SEK)
    checked.sync(charlie)  # a loan of SEK 50 to Bob's shadow wallet
    assert net.central.pool_status().loans == 1
    state = tmp_path / "audit.sqlite"
    assert audit(sources, state).findings == []
    checked.sync(alice)  # repaid
    assert audit(sources, state).findings == []

    loans = schema.pool_loans
    with net.central.db.begin() as conn:
        [loan_id] = conn.execute(loans.select()).all()[0][:1]
        conn.execute(update(loans).values(drawn=loans.c.drawn + 1))
    found = audit(sources, state).findings
    named = {(f.party, f.code, f.records) for f in found}
    assert ("central-bank", codes.POOL_MISMATCH, ("pool",)) in named
    assert ("bank-b", codes.POOL_MISMATCH, (f"loan:{bytes(loan_id).hex()}",)) in named


def test_tokens_minted_and_redeemed_audit_clean_and_an_unconsumed_redemption_is_named(
    tmp_path: Path,
) -> None:
    net, sources = sqlite_network(tmp_path)
    ann = net.add_token_user("Ann", "bank-a", online=1000 * SEK)
    ann.app.withdraw(net.money(300 * SEK))
    ann.app.deposit(net.money(100 * SEK))
    net.check_conservation()
    state = tmp_path / "audit.sqlite"
    assert audit(sources, state).findings == []

    c = schema.consumed
    with net.central.db.begin() as conn:
        token = conn.execute(c.select().where(c.c.transition == REDEEMED)).first()
        assert token is not None
        conn.execute(delete(c).where(c.c.id == token.id))
    found = audit(sources, state).findings
    assert [(f.party, f.code, f.records) for f in found] == [
        ("central-bank", codes.TOKEN_MISMATCH, (f"token:{bytes(token.id).hex()}",))
    ]
