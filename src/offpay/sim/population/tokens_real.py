"""The token scheme's real executor: every event of the stream played on the in-process network
(real secure elements, phones' wallet apps, intermediaries' token desks, the central bank's
minting service, crypto and databases), the simulated clock moved to each event's time.

What the stream means under ``scheme = "tokens"`` (the fast model, :mod:`.tokens_fast`, states
the same rules over arrays, and the fidelity test holds it to this module):

* **Setup.** Each person is a token user (an online wallet of ``behaviour.online_wallet`` and a
  phone's secure element); each merchant is a token user of its own intermediary that only
  receives. The central bank issues each intermediary what its people's online wallets hold.
  At time 0 each person withdraws ``top_up_to`` (at most the online wallet) into the element,
  as a card starts topped up.
* **SHOP, P2P.** The payer's element pays the payee's element offline with the paper's three
  phases (``transfer_offline``); the token is chosen by the applet's ``select``, splitting or
  merging as it does. A refusal keeps the protocol's code: not enough tokens
  (``funds.insufficient``), a peer the element knows revoked (``crypto.revoked``), a history
  that shows a double spend (``token.double_spend``, when the payer's merge or the receiver's
  verification finds one offline).
* **SHOP, P2P** at the simulated time: both phones give it their elements (``tell_time``), and
  the payer's element enforces its limits on spending over time (docs/limits.md) on it.
* **ONLINE** (person). The app first synchronises (``TokenWalletApp.sync``: the policy, the
  revocation list and the intermediary's time; the element's online moment, which restarts
  its offline total and hours). Then the element deposits, through the app, the tokens it
  received by payment since its last online moment and still holds as received
  (``TokenWalletApp.deposit`` of each one's value; the app renews long ancestries after each
  deposit), then renews every token whose ancestry is longer than ``tokens.max_ancestry``
  (``renew_long``), then withdraws up to ``top_up_to`` from the online wallet. Each of these
  calls is tried on its own; the event's outcome is the first refusal, ``ok`` if none. The
  element learns the central bank's revocation list from every answer of its intermediary.
* **SHOP_ONLINE** (merchant). The merchant's element deposits every token it holds, one by one.
* **CLONE** breaks the person's element (SignOnce keeps the key, as ``break_sign_once`` in the
  token demo) and the attacker keeps copies of the tokens it holds then. **CLONE_SHOP**: the
  broken element takes the copies back (their keys survived) and pays merchant ``b`` the
  ``amount`` (0: the copies' whole value) out of the copies only; its own later payments may
  spend copies too. The second branch of a double spend to reach the central bank is refused
  (``token.double_spend``), its value burned (the loss) and the broken element revoked.
* A ``cut`` online event is refused as ``offline.unreachable`` and changes nothing.

Per event, ``settled_at`` is the time the central bank first records the payment's token as
consumed (its holder, or a later holder of a token made from it, redeemed it); ``moved`` is a
payment's amount, a top-up's withdrawal, a merchant's deposits. ``extra["ancestry"]`` is the
ancestry length of the token a payment delivered (-1 otherwise).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
from sqlalchemy import select

from offpay.errors import InsufficientFunds, OffpayError
from offpay.money import Money
from offpay.sim.liquidity import SimClock
from offpay.sim.network import OfflineNetwork, TokenUser
from offpay.sim.population.events import Events, Kind, World
from offpay.sim.population.outcomes import OK, UNREACHABLE, Results, code_of
from offpay.sim.population.scenario import Scenario
from offpay.sim.population.token_elements import (
    ArrivalElement,
    BrokenElement,
    adopt,
    break_element,
    restore_copies,
)
from offpay.sim.population.traffic import (
    AppNetwork,
    Traffic,
    counted_transfer,
    held_size,
    publish_element_policy,
)
from offpay.store import schema


class TokenRun:
    """The network, its users and what the executor tracks between events."""

    def __init__(self, scenario: Scenario, world: World) -> None:
        self.scenario = scenario
        # Minute 0 is a UTC midnight, so that the elements' days (their clock // 86400) begin
        # at the model's day boundaries, as the cards' do (real.py).
        self.start = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        self.clock = SimClock(self.start)
        self.net = OfflineNetwork(
            bank_names=world.banks, currency=scenario.currency, clock=self.clock
        )
        wallet = scenario.behaviour.online_wallet
        for k, bank in enumerate(world.banks):
            people = int(np.count_nonzero(world.person_bank == k))
            if people and wallet:
                self.net.issue(bank, people * wallet)
        self.people = [
            self.net.add_token_user(world.person_name(i), world.banks[b], online=wallet)
            for i, b in enumerate(world.person_bank)
        ]
        self.merchants = [
            self.net.add_token_user(f"m{j}", world.banks[b])
            for j, b in enumerate(world.merchant_bank)
        ]
        self.traffic = Traffic()
        signed = publish_element_policy(self.net, scenario)  # what the elements enforce
        if signed:  # given at provisioning; the desks' answers carry it from then on
            for user in (*self.people, *self.merchants):
                user.app.apply_policy(signed[user.bank.name])
        for user in (*self.people, *self.merchants):
            adopt(user.element)
            user.app.network = AppNetwork(user.app.network, self.traffic)
            user.app.max_ancestry = scenario.tokens.max_ancestry
        self.received: list[set[bytes]] = [set() for _ in self.people]
        self.pending: dict[bytes, int] = {}  # a payment's token, not yet consumed: its event
        self.loss_bound = 0
        first = min(scenario.behaviour.top_up_to, wallet)
        if first:
            for user in self.people:
                user.app.withdraw(self.money(first))

    def money(self, minor: int) -> Money:
        return Money(int(minor), self.scenario.currency)

    def at(self, minute: int) -> None:
        self.clock.now = self.start + dt.timedelta(minutes=int(minute))

    def element(self, user: TokenUser) -> ArrivalElement:
        element = user.element
        assert isinstance(element, ArrivalElement)
        return element

    def worth(self, user: TokenUser) -> int:
        return user.tokens.minor + user.online.minor

    # -- payments ------------------------------------------------------------------------------

    @property
    def unix(self) -> int:
        """The simulated time as the phones give it to their elements (Unix seconds)."""
        return int(self.clock.now.timestamp())

    def pay(self, payer: TokenUser, payee: TokenUser, amount: int) -> tuple[int, bytes]:
        token = counted_transfer(
            payer.element, payee.element, self.money(amount), self.traffic, self.unix
        )
        return payee.element.verify(token).length, token.id

    def attack(self, user: TokenUser, merchant: TokenUser, amount: int) -> tuple[int, int, bytes]:
        element = self.element(user)
        assert isinstance(element, BrokenElement)
        restore_copies(element)
        element.only = frozenset(c.id for c in element.copies)
        try:
            amount = amount or element.balance(self.scenario.currency).minor
            if not amount:
                raise InsufficientFunds("the copies are worth nothing")
            depth, token = self.pay(user, merchant, amount)
        finally:
            element.only = None
        return amount, depth, token

    # -- online moments ------------------------------------------------------------------------

    def online(self, i: int) -> tuple[int, int]:
        """A person's online moment: (outcome, withdrawn)."""
        user, first = self.people[i], OK
        received = [t.value for t in self.element(user).tokens() if t.id in self.received[i]]
        self.received[i].clear()
        first = self._try(first, user.app.sync)
        for value in received:
            first = self._try(first, lambda v=value: user.app.deposit(v))
        first = self._try(first, user.app.renew_long)
        need = self.scenario.behaviour.top_up_to - user.tokens.minor
        amount = max(0, min(need, user.online.minor))
        if amount:
            before = user.online.minor
            first = self._try(first, lambda: user.app.withdraw(self.money(amount)))
            amount = before - user.online.minor
        return first, amount

    def shop_online(self, j: int) -> tuple[int, int]:
        """A merchant deposits every token it holds: (outcome, value credited)."""
        user, first = self.merchants[j], OK
        before = user.online.minor
        for value in [t.value for t in self.element(user).tokens()]:
            first = self._try(first, lambda v=value: user.app.deposit(v))
        return first, user.online.minor - before

    def _try(self, first: int, call) -> int:  # type: ignore[no-untyped-def]
        try:
            call()
        except OffpayError as exc:
            return first if first != OK else code_of(exc.code)
        return first

    def settle(self, t: int, results: Results) -> None:
        """Payments whose token the central bank has now recorded as consumed."""
        if not self.pending:
            return
        c = schema.consumed
        with self.net.central.db.connect() as conn:
            done = conn.execute(select(c.c.id).where(c.c.id.in_(list(self.pending)))).scalars()
            for token_id in list(done):
                results.settled_at[self.pending.pop(bytes(token_id))] = t


def run_real_tokens(scenario: Scenario, world: World, events: Events) -> Results:
    """Play the stream on the real in-process network of the token scheme."""
    run = TokenRun(scenario, world)
    results = Results.empty(len(events), world.people, world.merchants, len(world.banks))
    ancestry = np.full(len(events), -1, np.int32)
    messages = np.zeros(len(events), np.int32)
    carried = np.zeros(len(events), np.int64)
    storage = np.array([held_size(user.element) for user in run.people], np.int64)
    traffic = run.traffic
    for i in range(len(events)):
        sent, counted = traffic.bytes, traffic.messages
        _play(run, scenario, events, i, results, ancestry)
        messages[i], carried[i] = traffic.messages - counted, traffic.bytes - sent
        kind = Kind(int(events.kind[i]))
        if kind != Kind.SHOP_ONLINE:
            touched = (
                (int(events.a[i]), int(events.b[i])) if kind == Kind.P2P else (int(events.a[i]),)
            )
            for p in touched:
                storage[p] = max(storage[p], held_size(run.people[p].element))
    _finish(run, world, results)
    results.extra.update(ancestry=ancestry, messages=messages, bytes=carried, storage=storage)
    return results


def _play(
    run: TokenRun,
    scenario: Scenario,
    events: Events,
    i: int,
    results: Results,
    ancestry: np.ndarray,
) -> None:
    """One event on the network."""
    kind, a, b, t = (
        Kind(int(events.kind[i])),
        int(events.a[i]),
        int(events.b[i]),
        int(events.t[i]),
    )
    run.at(t)
    if kind in (Kind.ONLINE, Kind.SHOP_ONLINE) and events.cut[i]:
        results.outcome[i] = UNREACHABLE
        return
    try:
        if kind in (Kind.SHOP, Kind.P2P, Kind.CLONE_SHOP):
            payer = run.people[a]
            payee = run.merchants[b] if kind != Kind.P2P else run.people[b]
            amount = int(events.amount[i])
            if kind == Kind.CLONE_SHOP:
                amount, depth, token = run.attack(payer, payee, amount)
            else:
                depth, token = run.pay(payer, payee, amount)
                if kind == Kind.P2P:
                    run.received[b].add(token)
            results.moved[i], ancestry[i] = amount, depth
            run.pending[token] = i
        elif kind == Kind.ONLINE:
            before = run.worth(run.people[a])
            results.outcome[i], results.moved[i] = run.online(a)
            results.losses += before - run.worth(run.people[a])
            run.settle(t, results)
        elif kind == Kind.SHOP_ONLINE:
            before = run.worth(run.merchants[a])
            results.outcome[i], results.moved[i] = run.shop_online(a)
            results.losses += before - run.worth(run.merchants[a])
            run.settle(t, results)
        elif kind == Kind.CLONE:
            broken = break_element(run.element(run.people[a]))
            copies = sum(c.value.minor for c in broken.copies)
            results.loss_bound += copies * scenario.attacks.payments
        else:
            results.outcome[i] = code_of("refused")  # balance-scheme attacks: no tokens
    except OffpayError as exc:
        results.outcome[i] = code_of(exc.code)


def _finish(run: TokenRun, world: World, results: Results) -> None:
    revoked = set(run.net.central.revoked_devices())
    for i, user in enumerate(run.people):
        results.person_online[i] = user.online.minor
        results.person_card[i] = user.tokens.minor
        results.person_blocked[i] = user.element_id in revoked
    for j, user in enumerate(run.merchants):
        results.merchant_wallet[j] = user.online.minor
    holdings = {p.institution: p.holdings.minor for p in run.net.central.positions()}
    for k, bank in enumerate(world.banks):
        results.bank_holdings[k] = holdings[bank]
    results.extra["tokens_outstanding"] = np.array(
        [run.net.central.mint.outstanding().minor], np.int64
    )
    run.net.check_conservation()
