"""What a token's history shows its receiver, and renewal as the privacy reset (issue 19,
point 4)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from conftest import Checked
from offpay.cli import app
from offpay.errors import OffpayError
from offpay.money import Money
from offpay.privacy import Party
from offpay.sim.network import OfflineNetwork, TokenUser
from offpay.sim.recording import RecordedNetwork
from offpay.tokens.model import Token
from offpay.tokens.privacy import exposure, measure
from offpay.tokens.transfer import transfer_offline

SEK = 100


def holders(net: OfflineNetwork, n: int) -> list[TokenUser]:
    return [
        net.add_token_user(f"holder-{i}", ("bank-a", "bank-b")[i % 2], online=1000 * SEK)
        for i in range(n)
    ]


def pass_along(users: list[TokenUser], path: list[int], minor: int) -> list[Token]:
    """The token ``users[path[0]]`` holds, paid along ``path``: each receipt."""
    received = []
    for payer, payee in itertools.pairwise(path):
        amount = Money(minor, users[payer].bank.currency)
        received.append(transfer_offline(users[payer].element, users[payee].element, amount))
    return received


def test_a_receiver_sees_every_earlier_owner_after_k_hops(net: OfflineNetwork, checked: Checked):
    users = holders(net, 6)
    checked.step(users[0].app.withdraw, net.money(50 * SEK))
    receipts = pass_along(users, [0, 1, 2, 3, 4, 5], 50 * SEK)
    for k, token in enumerate(receipts, start=1):
        seen = exposure(token)
        assert seen.ancestors == k
        assert seen.payers == {users[k - 1].element_id}
        assert seen.earlier_owners == k - 1  # every holder before the payer, by pseudonym
        assert seen.elements == {u.element_id for u in users[:k]}
        assert len(seen.owner_keys) >= k  # an ownership key per earlier hop
    checked.conserved()


def test_after_renewal_the_next_receiver_sees_no_earlier_owner(
    net: OfflineNetwork, checked: Checked
):
    users = holders(net, 5)
    checked.step(users[0].app.withdraw, net.money(20 * SEK))
    (*_, long) = pass_along(users, [0, 1, 2, 3], 20 * SEK)
    assert exposure(long).earlier_owners == 2
    users[3].app.max_ancestry = 0
    (fresh,) = checked.step(users[3].app.renew_long)
    assert fresh.is_root and exposure(fresh).elements == frozenset()
    (after,) = pass_along(users, [3, 4], 20 * SEK)
    seen = exposure(after)
    assert (seen.ancestors, seen.earlier_owners) == (1, 0)
    assert seen.elements == {users[3].element_id}  # the payer only, known to the receiver
    checked.conserved()


def test_a_split_shows_the_payers_change_key_but_no_other_owner(
    net: OfflineNetwork, checked: Checked
):
    users = holders(net, 2)
    checked.step(users[0].app.withdraw, net.money(100 * SEK))
    token = transfer_offline(users[0].element, users[1].element, net.money(30 * SEK))
    seen = exposure(token)
    assert seen.earlier_owners == 0
    assert seen.elements == {users[0].element_id}
    # The split before the transfer: the payer's change, one more key of theirs.
    change = {s.owner for parent in token.ancestors for s in parent.siblings}
    assert change and change <= seen.owner_keys


@settings(max_examples=12, deadline=None)
@given(path=st.lists(st.integers(0, 3), min_size=2, max_size=6))
def test_earlier_owners_are_the_distinct_holders_before_the_payer(path: list[int]):
    """For any sequence of holders (repeats included), the receiver sees exactly the distinct
    elements that held the token before the payer, other than itself and the payer."""
    path = [p for i, p in enumerate(path) if i == 0 or p != path[i - 1]]
    if len(path) < 2:
        return
    net = OfflineNetwork()
    for name in net.banks:
        net.issue(name, 100_000 * SEK)
    users = holders(net, 4)
    users[path[0]].app.withdraw(net.money(10 * SEK))
    receipts = pass_along(users, path, 10 * SEK)
    for i, token in enumerate(receipts, start=1):
        before = {users[p].element_id for p in path[: i - 1]}
        payer, me = users[path[i - 1]].element_id, users[path[i]].element_id
        assert exposure(token).earlier_owners == len(before - {payer, me})


def test_the_measurement_over_a_population_with_and_without_renewal():
    never = measure(3, 6, 40, None, seed=7)
    assert len(never.seen) == 3 * 6
    assert never.renewals == 0
    # A fresh token's k-th receipt shows at most k - 1 holders before the payer.
    assert all(s <= i % 6 for i, s in enumerate(never.seen))
    assert never.most >= 3
    every = measure(3, 6, 40, 0, seed=7)
    assert set(every.seen) == {0} and every.renewals == 3 * 5
    two = measure(3, 6, 40, 2, seed=7)
    assert two.most <= 2 < never.most
    assert sum(two.distribution.values()) == 18
    assert every.mean < two.mean < never.mean


@pytest.mark.parametrize(
    ("tokens", "hops", "elements", "renew"), [(0, 3, 5, None), (1, 0, 5, 2), (1, 3, 1, None)]
)
def test_a_population_that_cannot_be_played_is_refused(
    tokens: int, hops: int, elements: int, renew: int | None
):
    with pytest.raises(OffpayError) as info:
        measure(tokens, hops, elements, renew)
    assert info.value.code == "privacy.bad_population"


def test_the_cli_prints_the_measurement_and_refuses_bad_input_in_one_line():
    runner = CliRunner()
    ok = runner.invoke(
        app,
        [
            "privacy",
            "ancestry",
            "--tokens",
            "2",
            "--hops",
            "3",
            "--elements",
            "10",
            "--renew-after=0",
        ],
    )
    assert ok.exit_code == 0, ok.output
    assert "never" in ok.output and "after 0" in ok.output
    bad = runner.invoke(app, ["privacy", "ancestry", "--renew-after", "-1"])
    assert bad.exit_code == 2
    assert "renew-after must be 0 or more" in bad.output
    assert "Traceback" not in bad.output
    table = runner.invoke(app, ["privacy", "table", "--party", "PoS app"])
    assert table.exit_code == 0 and "sealed-to-intermediary.sealed" in table.output
    assert "offline-payment.payer_seq" not in table.output  # sealed on its way (issue 19)
    assert runner.invoke(app, ["privacy", "table", "--party", "nobody"]).exit_code == 2


def test_the_relay_between_two_phones_sees_no_history():
    """The offer and the transfer, which carry the token's ancestors, cross the phone-to-phone
    hop sealed to the receiving element (issue 19, point 3): an eavesdropper sees the two
    elements and the receiver's address, not the history the receiver verifies."""
    net = RecordedNetwork()
    for name in net.banks:
        net.issue(name, 100_000 * SEK)
    a, b, c = (net.add_token_user(n, "bank-a", online=1000 * SEK) for n in ("Ann", "Ben", "Cai"))
    a.app.withdraw(net.money(10 * SEK))
    net.transfer_tokens(a, b, 10 * SEK)
    net.transfer_tokens(b, c, 10 * SEK)
    relay = {str(s) for s in net.recording.seen[Party.RELAY]}
    assert "endorsement.element=device-id" in relay  # the receiver's address
    assert "token-sealed.sealed" in relay
    assert not {"token.ancestors", "token-transfer.token", "token-offer.token"} & relay
