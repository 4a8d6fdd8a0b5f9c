"""The limits the references name beyond the e-krona pilot's (issue 20, docs/limits.md), each at
its boundary on the device that enforces it: the per-payment maximum (paying and receiving, at a
shop and person to person), the total spent offline since the last sync, payments and amount
per day, the hours a card may stay offline, and, in the token scheme, the most ancestors a
token may carry and the most value an element may hold. The last payment allowed passes, the
next is refused with its limit's code and changes nothing (``Checked.refused``); a policy
update raises and lowers each limit; a terminal whose host lies about the time gains nothing
beyond what docs/limits.md says."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import TYPE_CHECKING

import pytest

from offpay.attacks.checked import ISSUED_PER_BANK
from offpay.errors import LimitExceeded, PolicyError
from offpay.money import Money
from offpay.policy import default_policy
from offpay.sim.network import OfflineNetwork, TokenUser, User
from offpay.tokens.transfer import transfer_offline
from offpay.wire.envelope import Signed, payload_of
from offpay.wire.messages import LimitsPolicy, PaymentRequest

if TYPE_CHECKING:
    from conftest import Checked

SEK = 100
HOUR = 3600
START = dt.datetime(2026, 12, 7, 9, 0, tzinfo=dt.UTC)  # a Monday morning


class Hands:
    """A clock the test moves: the intermediaries' and the shops' hosts' time."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: int) -> None:
        self.now += dt.timedelta(seconds=seconds)

    @property
    def unix(self) -> int:
        return int(self.now.timestamp())


@pytest.fixture
def hands() -> Hands:
    return Hands()


@pytest.fixture
def net(hands: Hands) -> OfflineNetwork:
    """conftest's network, on a clock the test moves (``checked`` builds on this one)."""
    network = OfflineNetwork(clock=hands)
    for name in network.banks:
        network.issue(name, ISSUED_PER_BANK)
    return network


def policy(net: OfflineNetwork, bank: str, version: int, **limits: object) -> LimitsPolicy:
    return dataclasses.replace(default_policy(bank, version, net.currency), **limits)


def publish(net: OfflineNetwork, version: int, **limits: object) -> dict[str, Signed]:
    """The same limits, as version ``version``, at every bank."""
    return {b: net.banks[b].publish_policy(policy(net, b, version, **limits)) for b in net.banks}


def money(net: OfflineNetwork, minor: int) -> Money:
    return net.money(minor)


def funded(net: OfflineNetwork, checked: Checked, name: str, bank: str, minor: int) -> User:
    user = net.add_user(name, bank, online=minor)
    checked.top_up(user, minor)  # a sync: the card takes the current policy and the time
    return user


def refused_limit(checked: Checked, limit: str, fn: object, *args: object) -> LimitExceeded:
    error = checked.refused(f"limit.{limit}", fn, *args)  # type: ignore[arg-type]
    assert isinstance(error, LimitExceeded) and error.limit == limit
    return error


# --- the per-payment maximum ---------------------------------------------------------------------


def test_a_shop_payment_at_the_maximum_passes_one_ore_more_is_refused_by_the_terminal(
    net: OfflineNetwork, checked: Checked
):
    publish(net, 2, payment_max=money(net, 200 * SEK))
    alice = funded(net, checked, "Alice", "bank-a", 1000 * SEK)
    shop = net.add_merchant("Shop", "bank-b")  # personalised with version 2
    checked.charge(shop, alice, 200 * SEK)
    refused_limit(checked, "payment_max", checked.charge, shop, alice, 200 * SEK + 1)
    assert alice.card_balance == money(net, 800 * SEK)


def test_the_paying_card_refuses_above_its_maximum_when_the_terminal_does_not(
    net: OfflineNetwork, checked: Checked
):
    shop = net.add_merchant("Shop", "bank-b")  # version 1: no per-payment maximum
    publish(net, 2, payment_max=money(net, 200 * SEK))
    alice = funded(net, checked, "Alice", "bank-a", 1000 * SEK)
    assert shop.module.state.policy.payment_max is None
    checked.charge(shop, alice, 200 * SEK)
    refused_limit(checked, "payment_max", checked.charge, shop, alice, 200 * SEK + 1)
    assert alice.card.state.offline_transactions == 1


def test_person_to_person_the_recipient_and_the_payer_each_enforce_the_maximum(
    net: OfflineNetwork, checked: Checked
):
    bob = net.add_user("Bob", "bank-b")  # version 1 (no maximum) until he syncs
    publish(net, 2, payment_max=money(net, 50 * SEK))
    alice = funded(net, checked, "Alice", "bank-a", 500 * SEK)
    checked.p2p(alice, bob, 50 * SEK)
    # Bob's card has no maximum yet: it asks; Alice's card refuses to pay.
    request = checked.step(bob.phone.ask, alice.phone.show_identity(), money(net, 50 * SEK + 1))
    refused_limit(checked, "payment_max", alice.phone.pay, alice.pin, request)
    # Once Bob's card has the policy, it refuses to ask for more than the maximum.
    checked.sync(bob)
    assert bob.card.state.policy.payment_max == money(net, 50 * SEK)
    refused_limit(
        checked,
        "payment_max",
        bob.phone.ask,
        alice.phone.show_identity(),
        money(net, 50 * SEK + 1),
    )


# --- total spent offline since the last sync ---------------------------------------------------


def test_the_offline_spent_total_allows_its_last_ore_then_refuses_until_sync(
    net: OfflineNetwork, checked: Checked
):
    publish(net, 2, card_max_offline_spent=money(net, 2000 * SEK))
    alice = funded(net, checked, "Alice", "bank-a", 3000 * SEK)
    shop = net.add_merchant("Shop", "bank-b")
    checked.charge(shop, alice, 1500 * SEK)
    checked.charge(shop, alice, 500 * SEK)
    assert alice.card.state.spent_offline == 2000 * SEK
    refused_limit(checked, "card_max_offline_spent", checked.charge, shop, alice, 1)
    checked.sync(alice)  # the intermediary has the payments: the total starts again
    assert alice.card.state.spent_offline == 0
    checked.charge(shop, alice, 1)


def test_money_received_offline_does_not_raise_the_offline_spent_total(
    net: OfflineNetwork, checked: Checked
):
    publish(net, 2, card_max_offline_spent=money(net, 100 * SEK))
    alice = funded(net, checked, "Alice", "bank-a", 1000 * SEK)
    bob = funded(net, checked, "Bob", "bank-b", 1000 * SEK)
    checked.p2p(alice, bob, 100 * SEK)
    checked.p2p(bob, alice, 100 * SEK)  # Alice's balance is back; her spent total is not
    request = checked.step(bob.phone.ask, alice.phone.show_identity(), money(net, 1))
    refused_limit(checked, "card_max_offline_spent", alice.phone.pay, alice.pin, request)


# --- per day -------------------------------------------------------------------------------------


def test_the_daily_payment_count_resets_the_next_utc_day_without_a_sync(
    net: OfflineNetwork, checked: Checked, hands: Hands
):
    publish(net, 2, card_max_daily_payments=2, card_max_offline_transactions=10)
    alice = funded(net, checked, "Alice", "bank-a", 100 * SEK)
    shop = net.add_merchant("Shop", "bank-b")
    checked.charge(shop, alice, 1 * SEK)
    checked.charge(shop, alice, 1 * SEK)
    refused_limit(checked, "card_max_daily_payments", checked.charge, shop, alice, 1 * SEK)
    hands.advance(15 * HOUR)  # past midnight UTC: a new day by the shop's signed time
    checked.charge(shop, alice, 1 * SEK)
    assert alice.card.state.day_payments == 1


def test_the_daily_amount_allows_its_last_ore_and_a_new_day_allows_more(
    net: OfflineNetwork, checked: Checked, hands: Hands
):
    publish(net, 2, card_max_daily_spent=money(net, 500 * SEK))
    alice = funded(net, checked, "Alice", "bank-a", 2000 * SEK)
    shop = net.add_merchant("Shop", "bank-b")
    checked.charge(shop, alice, 300 * SEK)
    checked.charge(shop, alice, 200 * SEK)
    refused_limit(checked, "card_max_daily_spent", checked.charge, shop, alice, 1)
    checked.sync(alice)  # a sync on the same day does not reset the day
    refused_limit(checked, "card_max_daily_spent", checked.charge, shop, alice, 1)
    hands.advance(24 * HOUR)
    checked.charge(shop, alice, 500 * SEK)


# --- how long a card may stay offline ----------------------------------------------------------


def test_a_card_pays_until_its_offline_hours_run_out_then_only_after_a_sync(
    net: OfflineNetwork, checked: Checked, hands: Hands
):
    publish(net, 2, max_offline_hours=72)
    alice = funded(net, checked, "Alice", "bank-a", 100 * SEK)
    assert alice.card.state.synced_at == hands.unix
    shop = net.add_merchant("Shop", "bank-b")
    hands.advance(72 * HOUR)
    checked.charge(shop, alice, 1 * SEK)  # exactly 72 hours: still allowed
    hands.advance(1)
    refused_limit(checked, "max_offline_hours", checked.charge, shop, alice, 1 * SEK)
    checked.sync(alice)
    checked.charge(shop, alice, 1 * SEK)


def test_a_card_that_never_had_a_signed_time_refuses_when_offline_hours_are_limited(
    net: OfflineNetwork, checked: Checked
):
    alice = funded(net, checked, "Alice", "bank-a", 100 * SEK)
    card = alice.card.state
    # As if its last sync came from an intermediary that sent no time: the card has none.
    alice.card._state = dataclasses.replace(
        card, clock=None, synced_at=None, policy=policy(net, "bank-a", 1, max_offline_hours=1)
    )
    shop = net.add_merchant("Shop", "bank-b")
    shop.pos.clock = None  # a shop whose host gives no time
    refused_limit(checked, "max_offline_hours", checked.charge, shop, alice, 1 * SEK)


# --- a terminal whose host lies about the time ----------------------------------------------------


def request_time(request: bytes) -> int | None:
    return payload_of(Signed.from_bytes(request), PaymentRequest).payee_time


def test_a_terminal_host_setting_its_clock_back_cannot_stretch_the_offline_hours(
    net: OfflineNetwork, checked: Checked, hands: Hands
):
    publish(net, 2, max_offline_hours=24)
    alice = funded(net, checked, "Alice", "bank-a", 100 * SEK)
    synced = hands.unix
    shop = net.add_merchant("Shop", "bank-b")
    hands.advance(20 * HOUR)
    checked.charge(shop, alice, 1 * SEK)  # the module now knows 20 hours after the sync
    assert alice.card.state.clock == synced + 20 * HOUR

    # The host claims the time of the sync again: the module signs the latest time it knows.
    shop.pos.clock = lambda: START
    bob = funded(net, checked, "Bob", "bank-a", 100 * SEK)
    request = shop.module.request_payment(bob.phone.show_identity(), money(net, 1 * SEK), synced)
    assert request_time(request) == synced + 20 * HOUR
    shop.module.cancel_request(payload_of(Signed.from_bytes(request), PaymentRequest).request_id)

    # And a payee's earlier time never sets the card's own clock back.
    hands.advance(5 * HOUR)  # 25 hours after Alice's sync, by the true time
    honest = net.add_merchant("Honest", "bank-b")
    refused_limit(checked, "max_offline_hours", checked.charge, honest, alice, 1 * SEK)
    checked.charge(shop, alice, 1 * SEK)  # the lying shop's 20 hours: what it can gain
    assert alice.card.state.clock == synced + 20 * HOUR


def test_a_terminal_host_running_ahead_only_makes_the_card_stricter_until_it_syncs(
    net: OfflineNetwork, checked: Checked, hands: Hands
):
    publish(
        net,
        2,
        max_offline_hours=72,
        card_max_daily_payments=1,
        card_max_offline_spent=money(net, 3 * SEK),
        card_max_offline_transactions=10,
    )
    alice = funded(net, checked, "Alice", "bank-a", 100 * SEK)
    honest = net.add_merchant("Honest", "bank-b")
    liar = net.add_merchant("Liar", "bank-b")
    checked.charge(honest, alice, 1 * SEK)
    # The lying host says it is tomorrow: the day's count starts again for it ...
    liar.pos.clock = lambda: hands.now + dt.timedelta(days=1)
    checked.charge(liar, alice, 1 * SEK)
    # ... but the card now believes it is tomorrow too, so the honest shop gains nothing,
    refused_limit(checked, "card_max_daily_payments", checked.charge, honest, alice, 1 * SEK)
    # and the total since the sync still binds whatever day anyone claims.
    liar.pos.clock = lambda: hands.now + dt.timedelta(days=2)
    checked.charge(liar, alice, 1 * SEK)
    liar.pos.clock = lambda: hands.now + dt.timedelta(days=3)
    refused_limit(checked, "card_max_offline_spent", checked.charge, liar, alice, 1 * SEK)
    # Far ahead, the card stops paying (offline too long) until a sync sets its clock right.
    liar.pos.clock = lambda: hands.now + dt.timedelta(days=30)
    refused_limit(checked, "max_offline_hours", checked.charge, liar, alice, 1 * SEK)
    checked.sync(alice)
    assert alice.card.state.clock == hands.unix
    hands.advance(24 * HOUR)
    checked.charge(honest, alice, 1 * SEK)


# --- policy updates raise and lower each limit ---------------------------------------------------

CARD_LIMITS = {
    # name: (low, high, one payment that the low value refuses and the high value allows)
    "payment_max": (100 * SEK, 300 * SEK, 200 * SEK),
    "card_max_offline_spent": (100 * SEK, 300 * SEK, 200 * SEK),
    # the day's first payment (made before the limit) still counts on the same day
    "card_max_daily_spent": (300 * SEK, 400 * SEK, 200 * SEK),
}


@pytest.mark.parametrize("name", sorted(CARD_LIMITS))
def test_a_policy_update_lowers_then_raises_an_amount_limit(
    net: OfflineNetwork, checked: Checked, name: str
):
    low, high, amount = CARD_LIMITS[name]
    shop = net.add_merchant("Shop", "bank-b")  # no per-payment maximum: the card decides
    alice = funded(net, checked, "Alice", "bank-a", 1000 * SEK)
    checked.charge(shop, alice, amount)  # version 1: no such limit
    publish(net, 2, **{name: money(net, low)})
    checked.sync(alice)
    refused_limit(checked, name, checked.charge, shop, alice, amount)
    publish(net, 3, **{name: money(net, high)})
    checked.sync(alice)
    assert getattr(alice.card.state.policy, name) == money(net, high)
    checked.charge(shop, alice, amount)
    publish(net, 4)  # the limit lifted again: absent means no limit
    checked.sync(alice)
    assert getattr(alice.card.state.policy, name) is None


def test_a_policy_update_lowers_then_raises_the_daily_count_and_the_offline_hours(
    net: OfflineNetwork, checked: Checked, hands: Hands
):
    shop = net.add_merchant("Shop", "bank-b")
    alice = funded(net, checked, "Alice", "bank-a", 1000 * SEK)
    checked.charge(shop, alice, 1 * SEK)
    publish(net, 2, card_max_daily_payments=1, max_offline_hours=1)
    checked.sync(alice)
    refused_limit(checked, "card_max_daily_payments", checked.charge, shop, alice, 1 * SEK)
    publish(net, 3, card_max_daily_payments=5, max_offline_hours=1)
    checked.sync(alice)
    checked.charge(shop, alice, 1 * SEK)
    hands.advance(2 * HOUR)
    refused_limit(checked, "max_offline_hours", checked.charge, shop, alice, 1 * SEK)
    publish(net, 4, card_max_daily_payments=5, max_offline_hours=48)
    checked.sync(alice)
    hands.advance(47 * HOUR)
    checked.charge(shop, alice, 1 * SEK)


def test_a_terminal_takes_a_lower_then_a_higher_per_payment_maximum_at_sync(
    net: OfflineNetwork, checked: Checked
):
    alice = funded(net, checked, "Alice", "bank-a", 1000 * SEK)
    shop = net.add_merchant("Shop", "bank-b")
    publish(net, 2, payment_max=money(net, 10 * SEK))
    checked.sync(shop)
    request = (shop.module.request_payment, alice.phone.show_identity(), money(net, 11 * SEK))
    refused_limit(checked, "payment_max", *request)
    publish(net, 3, payment_max=money(net, 20 * SEK))
    checked.sync(shop, alice)
    checked.charge(shop, alice, 20 * SEK)


# --- the token scheme: the element enforces ------------------------------------------------------


def token_user(net: OfflineNetwork, name: str, bank: str, minor: int) -> TokenUser:
    user = net.add_token_user(name, bank, online=max(minor, 1))
    if minor:
        user.app.withdraw(money(net, minor))
    return user


def give_policy(signed: dict[str, Signed], *users: TokenUser) -> None:
    for user in users:
        user.app.apply_policy(signed[user.bank.name])


def token_net() -> OfflineNetwork:
    net = OfflineNetwork()
    for name in net.banks:
        net.issue(name, 100_000_000_00)
    return net


def holdings(net: OfflineNetwork) -> tuple[object, ...]:
    """Every online wallet and every element's value; what a refusal must leave as it was."""
    wallets = tuple(sorted((n, tuple(b.wallets().items())) for n, b in net.banks.items()))
    return wallets, tuple((n, u.tokens) for n, u in sorted(net.token_users.items()))


def refused_tokens(net: OfflineNetwork, limit: str, receiver: TokenUser, fn, *args):  # type: ignore[no-untyped-def]
    """``fn`` is refused with ``limit.<limit>``; no value moves anywhere and the receiving
    element holds the very same tokens and no new key."""
    before = holdings(net), receiver.element.tokens(), len(receiver.element._keys)
    with pytest.raises(LimitExceeded) as info:
        fn(*args)
    assert info.value.code == f"limit.{limit}"
    after = holdings(net), receiver.element.tokens(), len(receiver.element._keys)
    assert after == before


def test_the_receiving_element_refuses_a_token_beyond_the_per_payment_maximum():
    net = token_net()
    alice = token_user(net, "Alice", "bank-a", 500 * SEK)
    bob = token_user(net, "Bob", "bank-b", 0)
    give_policy(publish(net, 2, payment_max=money(net, 100 * SEK)), bob)
    transfer_offline(alice.element, bob.element, money(net, 100 * SEK))
    over = money(net, 100 * SEK + 1)
    refused_tokens(net, "payment_max", bob, transfer_offline, alice.element, bob.element, over)
    assert bob.tokens == money(net, 100 * SEK)


def test_the_paying_element_refuses_to_offer_beyond_the_per_payment_maximum():
    net = token_net()
    alice = token_user(net, "Alice", "bank-a", 500 * SEK)
    bob = token_user(net, "Bob", "bank-b", 0)
    give_policy(publish(net, 2, payment_max=money(net, 100 * SEK)), alice)
    tokens = alice.element.tokens()
    over = money(net, 100 * SEK + 1)
    refused_tokens(net, "payment_max", bob, transfer_offline, alice.element, bob.element, over)
    assert alice.element.tokens() == tokens  # refused before any split


def test_a_token_with_the_most_ancestors_allowed_is_accepted_one_more_is_refused():
    net = token_net()
    first = token_user(net, "First", "bank-a", 10 * SEK)
    users = [token_user(net, f"U{i}", "bank-a", 0) for i in range(4)]
    give_policy(publish(net, 2, token_max_ancestry=3), *users)
    chain = [first, *users]
    for i in range(3):  # after three hops the token carries three ancestors
        transfer_offline(chain[i].element, chain[i + 1].element, money(net, 10 * SEK))
    (held,) = chain[3].element.tokens()
    assert chain[3].element.verify(held).length == 3
    refused_tokens(
        net,
        "token_max_ancestry",
        chain[4],
        transfer_offline,
        chain[3].element,
        chain[4].element,
        money(net, 10 * SEK),
    )
    assert chain[3].tokens == money(net, 10 * SEK)


def test_an_element_refuses_to_hold_more_than_its_holding_limit_offline_and_online():
    net = token_net()
    alice = token_user(net, "Alice", "bank-a", 500 * SEK)
    bob = token_user(net, "Bob", "bank-b", 200 * SEK)
    give_policy(publish(net, 2, element_max_holding=money(net, 300 * SEK)), bob)
    transfer_offline(alice.element, bob.element, money(net, 100 * SEK))  # exactly 300
    one = money(net, 1)
    refused_tokens(
        net, "element_max_holding", bob, transfer_offline, alice.element, bob.element, one
    )
    bob.app.deposit(money(net, 50 * SEK))
    refused_tokens(net, "element_max_holding", bob, bob.app.withdraw, money(net, 50 * SEK + 1))
    bob.app.withdraw(money(net, 50 * SEK))
    assert bob.tokens == money(net, 300 * SEK)


def test_an_element_takes_a_newer_policy_and_refuses_an_older_one():
    net = token_net()
    bob = token_user(net, "Bob", "bank-b", 0)
    first = net.banks["bank-b"].current_policy()
    assert first is not None
    give_policy(publish(net, 2, payment_max=money(net, 1)), bob)
    with pytest.raises(PolicyError) as info:
        bob.app.apply_policy(first[0])
    assert info.value.code == "policy.downgrade"
    assert bob.element.policy is not None and bob.element.policy.version == 2
    give_policy(publish(net, 3), bob)  # raised again: no maximum
    assert bob.element.policy.payment_max is None


# --- the encoding: an older policy is still valid and means no limit -----------------------------


def test_a_policy_signed_before_the_new_limits_existed_verifies_and_means_no_limit(
    net: OfflineNetwork,
):
    import cbor2

    from offpay.errors import EncodingError
    from offpay.policy import accept_policy
    from offpay.wire.codec import decode, encode

    first = default_policy("bank-a", 1, net.currency)
    old = {  # the map the first version of the policy had: exactly these keys
        "t": "limits-policy", "issuer": "bank-a", "version": 1, "currency": net.currency,
        "card_max_offline_transactions": 5, "card_max_balance": [3_000_00, net.currency],
        "terminal_max_offline_payments": 12, "terminal_max_received": [20_000_00, net.currency],
        "liquidity": "queue", "max_receipts": 8, "blocked_window_hours": 168,
    }  # fmt: skip
    data = cbor2.dumps(old, canonical=True)
    assert encode(first) == data  # no new key is written while it is absent
    assert decode(data, LimitsPolicy) == first
    bank = net.banks["bank-a"]
    signed = bank.current_policy()
    assert signed is not None and signed[1].payment_max is None
    assert accept_policy(signed[0], bank.trust, "bank-a", None).version == 1
    # a new limit present is a key of its own, and decodes back
    strict = dataclasses.replace(first, payment_max=money(net, 200 * SEK))
    assert decode(encode(strict), LimitsPolicy) == strict
    # an absent limit has one encoding: written as nil it is refused
    for bad in ({**old, "payment_max": None}, {**old, "payment_limit": [1, net.currency]}):
        with pytest.raises(EncodingError):
            decode(cbor2.dumps(bad, canonical=True), LimitsPolicy)
