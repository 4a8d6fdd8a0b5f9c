"""The honest network audits clean after every attack and fault-injection play of the suite
(offpay.attacks.registry): whatever the attackers tried, the intermediaries' books, the notary
and the evidence they kept agree, on SQLite and on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.conftest import UrlFor

from offpay.attacks.checked import fresh_network
from offpay.attacks.registry import ATTACKS, Attack, play_in_process
from offpay.audit.auditor import audit
from offpay.audit.sources import Sources
from offpay.sim.liquidity import SimClock


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.name)
def test_the_network_audits_clean_after_the_attack(
    attack: Attack, db_url: UrlFor, tmp_path: Path
) -> None:
    urls: dict[str, str] = {}

    def url_of(name: str) -> str:
        if name not in urls:
            urls[name] = db_url(name)
        return urls[name]

    options = {"clock": SimClock()} if attack.needs_clock else {}
    checked = fresh_network(url_for=url_of, **options)
    report = play_in_process(attack, checked)
    assert report.conservation_checks > 0  # the play ran, checked step by step
    net = checked.net
    sources = Sources(
        net.central.root_der, net.currency, urls["central-bank"], {b: urls[b] for b in net.banks}
    )
    audited = audit(sources, tmp_path / "audit.sqlite")
    assert audited.findings == []
