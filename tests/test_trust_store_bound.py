"""A trust store remembers the chains it verified, but not without end: a settling
intermediary meets new devices for ever, and a chain kept per device grew its memory with
every wave of a backlog. Forgetting a chain only costs its verification again."""

from __future__ import annotations

import datetime as dt

import pytest

from offpay.crypto import pki
from offpay.crypto.keys import Algorithm
from offpay.crypto.pki import Authority, Role, TrustStore
from offpay.errors import CertificateError

NOW = dt.datetime(2026, 12, 5, tzinfo=dt.UTC)


def test_the_store_keeps_at_most_its_bound_and_still_verifies_what_it_forgot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pki, "CHAINS_KEPT", 3)
    root = Authority.root(NOW)
    ca = root.intermediary("bank-x", NOW)
    cards = [ca.credential_for(f"card:{i}", Role.CARD, NOW, Algorithm.ED25519) for i in range(6)]
    store = TrustStore(root.credential.chain[0])
    for card in cards:
        assert store.verify_chain(card.chain, NOW).id == card.identity.id
    assert len(store._verified) <= 3
    # the first chain was forgotten: it is verified again
    assert store.verify_chain(cards[0].chain, NOW).id == cards[0].identity.id
    store.revoked.add(cards[0].identity.id)
    with pytest.raises(CertificateError):  # a remembered chain is still checked for revocation
        store.verify_chain(cards[0].chain, NOW)
