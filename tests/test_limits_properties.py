"""Hypothesis over random limits policies and random offline payment sequences (issue 20): no
card, terminal or token element ever goes beyond a limit of the policy it holds, whatever the
order of payments, syncs and the passing of time; every refusal is one the rules name and
changes nothing."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import defaultdict

from hypothesis import event, given, settings
from hypothesis import strategies as st

from offpay.attacks.checked import ISSUED_PER_BANK, Checked
from offpay.errors import OffpayError
from offpay.money import Money
from offpay.policy import default_policy
from offpay.sim.network import OfflineNetwork, User
from offpay.tokens.transfer import transfer_offline
from offpay.wire.codec import decode
from offpay.wire.messages import Direction, LimitsPolicy, OfflinePayment

SEK = 100
DAY = 86_400
START = dt.datetime(2026, 12, 7, 9, 0, tzinfo=dt.UTC)
# What a payment may be refused for here: a limit, the funds, a liquidity rule.
ALLOWED_REFUSALS = ("limit.", "funds.")


def maybe(values: st.SearchStrategy[int]) -> st.SearchStrategy[int | None]:
    return st.none() | values


@st.composite
def policies(draw: st.DrawFn) -> dict[str, object]:
    """The limits of a random policy: each optional limit absent or small enough to bind."""
    amount = st.integers(1 * SEK, 60 * SEK)
    return {
        "card_max_offline_transactions": draw(st.integers(1, 8)),
        "terminal_max_offline_payments": draw(st.integers(1, 10)),
        "payment_max": draw(maybe(st.integers(5 * SEK, 40 * SEK))),
        "card_max_offline_spent": draw(maybe(amount)),
        "card_max_daily_payments": draw(maybe(st.integers(1, 5))),
        "card_max_daily_spent": draw(maybe(amount)),
        "max_offline_hours": draw(maybe(st.integers(1, 36))),
    }


STEPS = st.lists(
    st.tuples(
        st.sampled_from(["shop", "p2p", "wait", "shop", "sync"]),
        st.integers(0, 2),  # who
        st.integers(1, 30 * SEK),  # amount
        st.integers(1, 48),  # hours to wait
    ),
    min_size=1,
    max_size=25,
)


def as_policy(
    net: OfflineNetwork, bank: str, version: int, limits: dict[str, object]
) -> LimitsPolicy:
    money_fields = {
        "payment_max",
        "card_max_offline_spent",
        "card_max_daily_spent",
        "element_max_holding",
    }
    values = {
        k: Money(v, net.currency) if k in money_fields and v is not None else v
        for k, v in limits.items()
    }
    return dataclasses.replace(default_policy(bank, version, net.currency), **values)  # type: ignore[arg-type]


def out_amounts(user: User) -> list[int]:
    return [
        decode(e.payment.payload, OfflinePayment).amount.minor
        for e in user.card.state.log
        if e.direction is Direction.OUT
    ]


@settings(max_examples=45, deadline=None)
@given(limits=policies(), steps=STEPS)
def test_no_card_or_terminal_ever_exceeds_a_limit_of_its_policy(
    limits: dict[str, object], steps: list[tuple[str, int, int, int]]
):
    now = [START]
    net = OfflineNetwork(clock=lambda: now[0])
    for name in net.banks:
        net.issue(name, ISSUED_PER_BANK)
    for bank in net.banks:
        net.banks[bank].publish_policy(as_policy(net, bank, 2, limits))
    checked = Checked(net)
    users = []
    for i in range(3):
        user = net.add_user(f"U{i}", "bank-a" if i % 2 else "bank-b", online=200 * SEK)
        checked.top_up(user, 200 * SEK)
        users.append(user)
    shop = net.add_merchant("Shop", "bank-b")
    policy = users[0].card.state.policy
    assert policy.version == 2 and shop.module.state.policy == policy
    # per payer: (UTC day by the card's clock) -> payments and amount, as this test counts them
    daily: dict[str, dict[int | None, list[int]]] = defaultdict(lambda: defaultdict(list))

    for kind, who, amount, hours in steps:
        payer, payee = users[who], users[(who + 1) % 3]
        try:
            if kind == "shop":
                checked.charge(shop, payer, amount)
            elif kind == "p2p":
                checked.p2p(payer, payee, amount)
            elif kind == "wait":
                now[0] += dt.timedelta(hours=hours)
                continue
            else:
                checked.sync(payer)
                continue
        except OffpayError as exc:
            assert exc.code.startswith(ALLOWED_REFUSALS), exc
            event(f"refused: {exc.code}")
            continue
        event(f"paid: {kind}")
        card = payer.card.state
        day = None if card.clock is None else card.clock // DAY
        daily[payer.name][day].append(amount)

        # The payment that went through broke no limit of the paying card's policy ...
        if policy.payment_max is not None:
            assert amount <= policy.payment_max.minor
        if policy.max_offline_hours is not None:
            assert card.synced_at is not None and card.clock is not None
            assert card.clock - card.synced_at <= policy.max_offline_hours * 3600
        # ... and the card's totals since its last sync and for the day are within bounds.
        spent = sum(out_amounts(payer))
        assert card.spent_offline == spent
        if policy.card_max_offline_spent is not None:
            assert spent <= policy.card_max_offline_spent.minor
        today = daily[payer.name][day]
        if policy.card_max_daily_payments is not None:
            assert len(today) <= policy.card_max_daily_payments
        if policy.card_max_daily_spent is not None:
            assert sum(today) <= policy.card_max_daily_spent.minor
        for user in users:
            assert user.card.state.offline_transactions <= policy.card_max_offline_transactions
        terminal = shop.module.state
        assert terminal.offline_payments <= policy.terminal_max_offline_payments
        assert terminal.received <= policy.terminal_max_received


@settings(max_examples=15, deadline=None)
@given(
    payment_max=maybe(st.integers(5 * SEK, 40 * SEK)),
    holding=maybe(st.integers(60 * SEK, 120 * SEK)),
    ancestry=maybe(st.integers(1, 4)),
    steps=st.lists(st.tuples(st.integers(0, 2), st.integers(1, 30 * SEK)), max_size=12),
)
def test_no_token_element_ever_exceeds_a_limit_of_its_policy(
    payment_max: int | None,
    holding: int | None,
    ancestry: int | None,
    steps: list[tuple[int, int]],
):
    net = OfflineNetwork()
    for name in net.banks:
        net.issue(name, ISSUED_PER_BANK)
    limits = {"payment_max": payment_max, "element_max_holding": holding}
    signed = {
        bank: net.banks[bank].publish_policy(
            dataclasses.replace(
                as_policy(net, bank, 2, limits),  # type: ignore[arg-type]
                token_max_ancestry=ancestry,
            )
        )
        for bank in net.banks
    }
    users = []
    for i in range(3):
        user = net.add_token_user(f"T{i}", "bank-a", online=100 * SEK)
        user.app.apply_policy(signed["bank-a"])
        try:
            user.app.withdraw(Money(60 * SEK, net.currency))
        except OffpayError as exc:
            assert exc.code == "limit.element_max_holding"
        users.append(user)
    total = sum((u.tokens for u in users), Money.zero(net.currency))
    for who, amount in steps:
        payer, payee = users[who], users[(who + 1) % 3]
        try:
            token = transfer_offline(payer.element, payee.element, Money(amount, net.currency))
        except OffpayError as exc:
            assert exc.code.startswith(ALLOWED_REFUSALS), exc
            event(f"refused: {exc.code}")
        else:
            event("paid")  # what the payee's element took offline is within its policy
            if payment_max is not None:
                assert token.value.minor <= payment_max
            if ancestry is not None:
                assert payee.element.verify(token).length <= ancestry
        for user in users:
            if holding is not None:
                assert user.tokens.minor <= holding
        assert sum((u.tokens for u in users), Money.zero(net.currency)) == total
