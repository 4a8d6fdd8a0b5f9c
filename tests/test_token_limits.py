"""Issue 20 for token elements: the desk's answers carry the intermediary's signed policy and
time (an online moment the element itself challenged), and an element enforces the spending
limits over time as a card does (docs/limits.md): its offline total since the last online
moment, its day's payments and amount, and its offline hours, on its clock (the intermediary's
signed time, its phone's time, the counterparty element's signed clock), never moved back.

Each boundary: the last payment allowed passes, the next is refused with its limit's code and
changes nothing (no value, no token, no counter, no clock)."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from conftest import serve_party
from offpay.errors import LimitExceeded, OffpayError
from offpay.money import Money
from offpay.policy import default_policy
from offpay.service.app import create_app
from offpay.service.datadir import NetworkConfig, init_network
from offpay.service.remote_tokens import RemoteTokenNetwork
from offpay.service.serve import build
from offpay.sim.network import OfflineNetwork, TokenUser
from offpay.tokens.element import TokenElement
from offpay.tokens.messages import MintResult, SyncRequest
from offpay.tokens.transfer import transfer_offline
from offpay.wire.envelope import Signed, sign

SEK = 100
HOUR = 3600
DAY = 86_400
START = dt.datetime(2026, 12, 7, 9, 0, tzinfo=dt.UTC)  # a Monday morning


class Hands:
    """The intermediaries' clock, moved by the test."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: int) -> None:
        self.now += dt.timedelta(seconds=seconds)

    @property
    def unix(self) -> int:
        return int(self.now.timestamp())


def network(hands: Hands) -> OfflineNetwork:
    net = OfflineNetwork(clock=hands)
    for name in net.banks:
        net.issue(name, 100_000_000_00)
    return net


def money(net: OfflineNetwork, minor: int) -> Money:
    return net.money(minor)


def publish(net: OfflineNetwork, version: int, **limits: int | None) -> dict[str, Signed]:
    """The same limits (amounts in minor units) as version ``version`` at every bank."""
    amounts = {"payment_max", "card_max_offline_spent", "card_max_daily_spent"}
    values = {k: money(net, v) if k in amounts and v is not None else v for k, v in limits.items()}
    return {
        b: net.banks[b].publish_policy(
            dataclasses.replace(default_policy(b, version, net.currency), **values)  # type: ignore[arg-type]
        )
        for b in net.banks
    }


def user(net: OfflineNetwork, name: str, bank: str, minor: int) -> TokenUser:
    u = net.add_token_user(name, bank, online=max(minor, 1))
    if minor:
        u.app.withdraw(money(net, minor))
    return u


def state(net: OfflineNetwork) -> tuple[object, ...]:
    """Every wallet, every element's tokens, counters and clock: what a refusal keeps."""
    wallets = tuple(sorted((n, tuple(b.wallets().items())) for n, b in net.banks.items()))
    elements = tuple(
        (n, tuple(t.id for t in u.element.tokens()), u.element.spending, len(u.element._keys))
        for n, u in sorted(net.token_users.items())
    )
    return wallets, elements


def pay(net: OfflineNetwork, payer: TokenUser, payee: TokenUser, minor: int, **times: int) -> None:
    transfer_offline(payer.element, payee.element, money(net, minor), **times)


def refused(
    net: OfflineNetwork,
    limit: str,
    payer: TokenUser,
    payee: TokenUser,
    minor: int,
    **times: int,
) -> None:
    """The payment is refused with ``limit.<limit>`` and nothing changes anywhere (the
    phones' times are told their elements first: they are not part of the payment)."""
    payer.element.tell_time(times.get("sender_now"))
    payee.element.tell_time(times.get("receiver_now"))
    before = state(net)
    with pytest.raises(LimitExceeded) as info:
        pay(net, payer, payee, minor, **times)
    assert info.value.code == f"limit.{limit}" and info.value.limit == limit
    assert state(net) == before


@pytest.fixture
def hands() -> Hands:
    return Hands()


@pytest.fixture
def net(hands: Hands) -> OfflineNetwork:
    return network(hands)


# --- the desk delivers the policy and the time ------------------------------------------------


def test_a_withdrawal_answer_carries_the_intermediary_s_policy_and_time(
    net: OfflineNetwork, hands: Hands
) -> None:
    publish(net, 2, payment_max=50 * SEK)
    ann = user(net, "Ann", "bank-a", 300 * SEK)
    assert ann.element.policy is not None and ann.element.policy.version == 2
    assert ann.element.spending.synced_at == hands.unix == ann.element.clock
    ben = user(net, "Ben", "bank-b", 0)
    refused(net, "payment_max", ann, ben, 50 * SEK + 1)
    pay(net, ann, ben, 50 * SEK)


def test_a_sync_brings_a_newer_policy_raising_or_lowering_a_limit(
    net: OfflineNetwork, hands: Hands
) -> None:
    ann, ben = user(net, "Ann", "bank-a", 500 * SEK), user(net, "Ben", "bank-b", 0)
    publish(net, 2, card_max_offline_spent=100 * SEK)
    pay(net, ann, ben, 100 * SEK)  # the element still holds version 1: no such limit
    hands.advance(60)
    ann.app.sync()  # lowered: the offline total restarts at the online moment
    assert ann.element.policy is not None and ann.element.policy.version == 2
    pay(net, ann, ben, 100 * SEK)
    refused(net, "card_max_offline_spent", ann, ben, 1)
    publish(net, 3, card_max_offline_spent=150 * SEK)
    ann.app.sync()  # raised, and a new online moment
    pay(net, ann, ben, 150 * SEK)
    refused(net, "card_max_offline_spent", ann, ben, 1)
    publish(net, 4, card_max_offline_spent=None)  # lifted
    ann.app.sync()
    pay(net, ann, ben, 50 * SEK)
    assert ann.tokens == money(net, 100 * SEK)


# Each limit on spending over time: a step of payments the high value allows and the low one
# refuses at its last payment (times from the online moment just before it).
RAISE_LOWER = {
    "card_max_offline_spent": (150 * SEK, 50 * SEK, [(0, 100 * SEK)]),
    "card_max_daily_payments": (3, 1, [(0, 10 * SEK), (0, 10 * SEK)]),
    "card_max_daily_spent": (150 * SEK, 50 * SEK, [(0, 100 * SEK)]),
    "max_offline_hours": (5, 1, [(2 * HOUR, 10 * SEK)]),
}


@pytest.mark.parametrize("limit", sorted(RAISE_LOWER))
def test_a_policy_update_lowers_and_raises_each_limit_at_the_next_online_moment(
    net: OfflineNetwork, hands: Hands, limit: str
) -> None:
    high, low, step = RAISE_LOWER[limit]
    ann, ben = user(net, "Ann", "bank-a", 500 * SEK), user(net, "Ben", "bank-b", 0)
    for version, value in ((2, high), (3, low), (4, high)):
        hands.advance(DAY)  # a new day and a new online moment for each version
        publish(net, version, **{limit: value})
        ann.app.sync()
        assert ann.element.policy is not None and ann.element.policy.version == version
        now = hands.unix
        *first, (late, amount) = step
        for after, minor in first:
            pay(net, ann, ben, minor, sender_now=now + after)
        if value == low:
            refused(net, limit, ann, ben, amount, sender_now=now + late)
        else:
            pay(net, ann, ben, amount, sender_now=now + late)


def test_an_old_answer_replayed_restarts_nothing(net: OfflineNetwork) -> None:
    """Only an answer to a challenge the element issued and has not seen answered is an
    online moment; an answer replayed (or one to a nonce the app made up) restarts no
    counter, though a newer policy in it is still taken."""
    publish(net, 2, card_max_offline_spent=100 * SEK)
    ann, ben = user(net, "Ann", "bank-a", 300 * SEK), user(net, "Ben", "bank-b", 0)
    element = ann.element

    def sync_answer(nonce: bytes) -> bytes:
        request = SyncRequest(element.element_id, "bank-a/engine", nonce)
        return net.network.send(
            "bank-a", "token-sync", sign(request, element.credential).to_bytes()
        )

    fresh = sync_answer(element.challenge())
    made_up = sync_answer(b"\x01" * 16)
    assert element.online(fresh, "bank-a")[1]
    pay(net, ann, ben, 100 * SEK)
    refused(net, "card_max_offline_spent", ann, ben, 1)
    for old in (fresh, made_up):
        assert not element.online(old, "bank-a")[1]
        refused(net, "card_max_offline_spent", ann, ben, 1)
    ann.app.sync()
    pay(net, ann, ben, 1)


def test_an_answer_not_signed_by_the_element_s_intermediary_is_refused_by_the_element(
    net: OfflineNetwork,
) -> None:
    """The element opens the desk's answer itself: one signed by anyone else (here another
    element, replaying its own answer's contents) restarts nothing and brings no policy."""
    publish(net, 2, card_max_offline_spent=100 * SEK)
    ann, ben = user(net, "Ann", "bank-a", 300 * SEK), user(net, "Ben", "bank-b", 0)
    pay(net, ann, ben, 100 * SEK)
    challenge = ann.element.challenge()
    engine = net.banks["bank-a"]
    listing = Signed.from_bytes(net.network.send("central-bank", "revocation-list", b""))
    forged = MintResult(
        engine.id,
        ann.element_id,
        challenge,
        (),
        Money.zero(net.currency),
        listing,  # type: ignore[arg-type]
        None,
        2**40,
    )
    before = state(net)
    with pytest.raises(OffpayError) as info:
        ann.element.online(sign(forged, ben.element.credential).to_bytes(), "bank-a")
    assert info.value.code.startswith("crypto.")
    assert state(net) == before
    refused(net, "card_max_offline_spent", ann, ben, 1)


def test_a_lost_answer_sent_again_is_still_the_online_moment(net: OfflineNetwork) -> None:
    """A request whose answer was lost is sent again byte for byte (retry_pending): its
    challenge is still open, so the answer that finally arrives counts once."""
    publish(net, 2, card_max_offline_spent=100 * SEK)
    ann, ben = user(net, "Ann", "bank-a", 300 * SEK), user(net, "Ben", "bank-b", 0)
    pay(net, ann, ben, 100 * SEK)
    request = SyncRequest(ann.element.element_id, "bank-a/engine", ann.element.challenge())
    ann.app.outbox.append(("token-sync", sign(request, ann.element.credential).to_bytes()))
    ann.app.retry_pending()
    pay(net, ann, ben, 100 * SEK)
    ann.app.outbox.append(("token-sync", sign(request, ann.element.credential).to_bytes()))
    ann.app.retry_pending()  # the same answer again: restarts nothing
    refused(net, "card_max_offline_spent", ann, ben, 1)


# --- each limit at its boundary ----------------------------------------------------------------


def test_the_offline_total_allows_exactly_its_amount_between_online_moments(
    net: OfflineNetwork,
) -> None:
    publish(net, 2, card_max_offline_spent=100 * SEK)
    ann, ben = user(net, "Ann", "bank-a", 300 * SEK), user(net, "Ben", "bank-b", 0)
    pay(net, ann, ben, 60 * SEK)
    pay(net, ben, ann, 60 * SEK)  # received money does not raise the allowance
    pay(net, ann, ben, 40 * SEK)  # exactly 100
    refused(net, "card_max_offline_spent", ann, ben, 1)
    ann.app.deposit(money(net, 10 * SEK))  # any online moment restarts it
    pay(net, ann, ben, 100 * SEK)


def test_the_day_s_payments_and_amount_restart_on_a_later_day(
    net: OfflineNetwork, hands: Hands
) -> None:
    publish(net, 2, card_max_daily_payments=2, card_max_daily_spent=80 * SEK)
    ann, ben = user(net, "Ann", "bank-a", 300 * SEK), user(net, "Ben", "bank-b", 0)
    now = hands.unix
    pay(net, ann, ben, 30 * SEK, sender_now=now)
    pay(net, ann, ben, 50 * SEK, sender_now=now + HOUR)  # two payments, exactly 80
    refused(net, "card_max_daily_payments", ann, ben, 1, sender_now=now + 2 * HOUR)
    midnight = (now // DAY + 1) * DAY
    pay(net, ann, ben, 80 * SEK, sender_now=midnight)  # a new UTC day, by the phone's time
    refused(net, "card_max_daily_spent", ann, ben, 1, sender_now=midnight + 1)


def test_the_offline_hours_run_from_the_intermediary_s_signed_time(
    net: OfflineNetwork, hands: Hands
) -> None:
    publish(net, 2, max_offline_hours=2)
    ann, ben = user(net, "Ann", "bank-a", 300 * SEK), user(net, "Ben", "bank-b", 0)
    synced = hands.unix
    pay(net, ann, ben, 10 * SEK, sender_now=synced + 2 * HOUR)  # the last second allowed
    refused(net, "max_offline_hours", ann, ben, 10 * SEK, sender_now=synced + 2 * HOUR + 1)
    hands.advance(3 * HOUR)
    ann.app.sync()  # the intermediary's time: two hours more
    pay(net, ann, ben, 10 * SEK, sender_now=hands.unix + HOUR)


def test_an_element_without_a_signed_time_refuses_to_pay_while_the_limit_is_set(
    net: OfflineNetwork,
) -> None:
    signed = publish(net, 2, max_offline_hours=24)
    ann, ben = user(net, "Ann", "bank-a", 300 * SEK), user(net, "Ben", "bank-b", 0)
    pay(net, ann, ben, 50 * SEK)  # Ben's element has had no online moment
    ben.app.apply_policy(signed["bank-b"])
    refused(net, "max_offline_hours", ben, ann, 10 * SEK)
    ben.app.sync()
    pay(net, ben, ann, 10 * SEK)


def test_receiving_is_never_refused_for_the_payer_s_limits_on_time(
    net: OfflineNetwork, hands: Hands
) -> None:
    publish(net, 2, max_offline_hours=1, card_max_daily_payments=1)
    ann, ben = user(net, "Ann", "bank-a", 300 * SEK), user(net, "Ben", "bank-b", 0)
    pay(net, ann, ben, 10 * SEK)  # Ann's one payment of the day
    hands.advance(5 * HOUR)
    carol = user(net, "Carol", "bank-b", 100 * SEK)  # online now
    late = hands.unix
    # Ann's hours ran out and her day's payment is made: she still receives
    pay(net, carol, ann, 10 * SEK, sender_now=late, receiver_now=late)
    refused(net, "max_offline_hours", ann, ben, 10 * SEK, sender_now=late)


# --- a counterparty's clock that lies -------------------------------------------------------------


class LyingElement(TokenElement):
    """A broken element that signs whatever clock its owner wants in its discovery proof."""

    stated: int | None = None

    @property
    def clock(self) -> int | None:
        return self.stated


def lying(u: TokenUser, stated: int) -> None:
    u.element.__class__ = LyingElement
    assert isinstance(u.element, LyingElement)
    u.element.stated = stated


def test_a_counterparty_stating_an_earlier_time_cannot_set_the_payer_s_clock_back(
    net: OfflineNetwork, hands: Hands
) -> None:
    publish(net, 2, max_offline_hours=2)
    ann, mal = user(net, "Ann", "bank-a", 300 * SEK), user(net, "Mal", "bank-b", 0)
    synced = hands.unix
    lying(mal, synced)  # claims it is still the moment Ann went online
    refused(net, "max_offline_hours", ann, mal, 10 * SEK, sender_now=synced + 3 * HOUR)
    assert ann.element.clock == synced + 3 * HOUR  # the phone's later time stays
    refused(net, "max_offline_hours", ann, mal, 10 * SEK)


def test_a_counterparty_stating_a_later_time_only_makes_the_payer_stricter_until_it_syncs(
    net: OfflineNetwork, hands: Hands
) -> None:
    publish(net, 2, max_offline_hours=2, card_max_offline_spent=100 * SEK)
    ann, mal = user(net, "Ann", "bank-a", 300 * SEK), user(net, "Mal", "bank-b", 0)
    ben = user(net, "Ben", "bank-b", 0)
    lying(mal, hands.unix + 10 * DAY)
    refused(net, "max_offline_hours", ann, mal, 10 * SEK)
    pay(net, ann, ben, 10 * SEK)  # an honest counterparty: Ann's clock was not moved
    ann.app.sync()
    pay(net, ann, ben, 10 * SEK)


def test_what_a_counterparty_stating_an_old_time_can_gain_is_bounded_by_the_offline_total(
    net: OfflineNetwork, hands: Hands
) -> None:
    """A payer whose phone gives no time and who meets only a lying counterparty keeps paying
    after its true hours ran out (docs/limits.md): to that counterparty only, and never more
    than the offline total."""
    publish(net, 2, max_offline_hours=2, card_max_offline_spent=100 * SEK)
    ann, mal = user(net, "Ann", "bank-a", 300 * SEK), user(net, "Mal", "bank-b", 0)
    lying(mal, hands.unix)
    hands.advance(5 * HOUR)  # the true time: past the hours, but nobody tells Ann's element
    pay(net, ann, mal, 100 * SEK)
    refused(net, "card_max_offline_spent", ann, mal, 1)


# --- a property: no element exceeds any limit of its policy -----------------------------------


def maybe(values: st.SearchStrategy[int]) -> st.SearchStrategy[int | None]:
    return st.none() | values


@st.composite
def limits(draw: st.DrawFn) -> dict[str, int | None]:
    amount = st.integers(1 * SEK, 60 * SEK)
    return {
        "payment_max": draw(maybe(st.integers(5 * SEK, 40 * SEK))),
        "card_max_offline_spent": draw(maybe(amount)),
        "card_max_daily_payments": draw(maybe(st.integers(1, 4))),
        "card_max_daily_spent": draw(maybe(amount)),
        "max_offline_hours": draw(maybe(st.integers(1, 30))),
    }


STEPS = st.lists(
    st.tuples(
        st.sampled_from(["pay", "pay", "pay", "wait", "sync"]),
        st.integers(0, 2),  # who pays (or waits, or syncs)
        st.integers(1, 30 * SEK),  # amount
        st.integers(1, 20),  # hours to wait
    ),
    min_size=1,
    max_size=20,
)


@settings(max_examples=60, deadline=None)
@given(policy=limits(), steps=STEPS)
def test_no_element_ever_exceeds_a_spending_limit_of_its_policy(
    policy: dict[str, int | None], steps: list[tuple[str, int, int, int]]
) -> None:
    """Random policies and sequences of payments, waits and online moments; the test keeps its
    own account of each element's payments (the phones give the true time) and checks every
    limit against it after every step."""
    hands = Hands()
    net = network(hands)
    publish(net, 2, **policy)
    users = [user(net, f"T{i}", "bank-a", 100 * SEK) for i in range(3)]
    online_at = [hands.unix] * 3  # the intermediary's time at each one's last online moment
    online_step = [-1] * 3
    paid: list[list[tuple[int, int, int]]] = [[], [], []]  # (step, time, amount) of each payment
    total = sum((u.tokens for u in users), Money.zero(net.currency))
    for step, (action, who, amount, hours) in enumerate(steps):
        now = hands.unix
        if action == "wait":
            hands.advance(hours * HOUR)
            continue
        if action == "sync":
            users[who].app.sync()
            online_at[who], online_step[who] = now, step
            continue
        payer, payee = users[who], users[(who + 1) % 3]
        try:
            pay(net, payer, payee, amount, sender_now=now, receiver_now=now)
        except OffpayError as exc:
            assert exc.code.startswith(("limit.", "funds.")), exc
            event(f"refused: {exc.code}")
            continue
        event("paid")
        paid[who].append((step, now, amount))
        since = [a for n, _, a in paid[who] if n > online_step[who]]
        today = [a for _, t, a in paid[who] if t // DAY == now // DAY]
        if policy["payment_max"] is not None:
            assert amount <= policy["payment_max"]
        if policy["card_max_offline_spent"] is not None:
            assert sum(since) <= policy["card_max_offline_spent"]
        if policy["card_max_daily_payments"] is not None:
            assert len(today) <= policy["card_max_daily_payments"]
        if policy["card_max_daily_spent"] is not None:
            assert sum(today) <= policy["card_max_daily_spent"]
        if policy["max_offline_hours"] is not None:
            assert now - online_at[who] <= policy["max_offline_hours"] * HOUR
    assert sum((u.tokens for u in users), Money.zero(net.currency)) == total


# --- over HTTP: the admin route publishes, a withdrawal delivers -------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetworkConfig]:
    config = init_network(tmp_path_factory.mktemp("token-limits") / "net", ("bank-a", "bank-b"))
    with contextlib.ExitStack() as stack:
        for name in config.urls:
            built = build(config, name, retry_every=-1)
            stack.enter_context(
                serve_party(config, name, create_app(built.service, background=built.background))
            )
        yield config


def test_a_policy_published_by_the_admin_route_reaches_the_element_with_a_withdrawal(
    served: NetworkConfig,
) -> None:
    remote = RemoteTokenNetwork(served, retries=1)
    try:
        remote.issue("bank-a", 10_000 * SEK)
        ann = remote.add_token_user("Ann", "bank-a", online=1_000 * SEK)
        ben = remote.add_token_user("Ben", "bank-a")
        published = remote.banks["bank-a"].admin.post(
            "/v1/admin/policy",
            {"payment_max": 50 * SEK, "card_max_offline_spent": 80 * SEK},
            key=uuid.uuid4().hex,
        )["policy"]
        first = ann.element.policy  # provisioning gave it the policy then current
        assert first is not None and first.version < published["version"]
        assert first.payment_max is None
        ann.app.withdraw(Money(300 * SEK, "SEK"))  # over HTTP
        policy = ann.element.policy
        assert policy is not None and policy.version == published["version"]
        assert ann.element.spending.synced_at is not None

        def held() -> tuple[object, ...]:
            return ann.element.tokens(), ben.element.tokens(), ann.element.spending

        before = held()
        with pytest.raises(LimitExceeded) as info:
            transfer_offline(ann.element, ben.element, Money(50 * SEK + 1, "SEK"))
        assert info.value.code == "limit.payment_max" and held() == before
        transfer_offline(ann.element, ben.element, Money(50 * SEK, "SEK"))
        before = held()
        with pytest.raises(LimitExceeded) as info:
            transfer_offline(ann.element, ben.element, Money(30 * SEK + 1, "SEK"))
        assert info.value.code == "limit.card_max_offline_spent" and held() == before
        ann.app.sync()  # the online moment over HTTP restarts the offline total
        transfer_offline(ann.element, ben.element, Money(50 * SEK, "SEK"))
        remote.check_conservation()
    finally:
        remote.close()
