"""The real executor of the balance scheme: every event played on an in-process network of real
cards, terminals, phone and PoS apps, crypto and SQLite databases (:mod:`offpay.sim.network`).

One intermediary per ``world.banks``, each publishing the scenario's limits (version 2) before
it issues a device; each person a user with the behaviour's online wallet and a card, each
merchant a terminal. A simulated clock is moved to each event's time, so that the queue's
waits and the blocked-card window read in simulated minutes.

Each kind is played with the real apps, as a person or shop would:

* ``SHOP``: the PoS app asks the terminal module for a request (its host's clock, the simulated
  time, signed in it), the card pays it over the reader (the app declines the request when the
  card refuses, as it does);
* ``P2P``: the payee's phone has its card sign a request, the payer's phone checks the six-digit
  code and has its card pay, the payee's phone has its card receive; when either card refuses,
  the payee's phone declines the request;
* ``ONLINE``: the phone synchronises the card, then tops it up to ``behaviour.top_up_to`` as far
  as the online wallet allows; ``SHOP_ONLINE``: the PoS app synchronises the terminal;
* the attacks break cards through :mod:`offpay.device.tamper` only;
* an event the outage cut off is ``offline.unreachable`` and touches nothing.

A refusal is recorded by its code. When the payments settled, waited, borrowed from the pool or
went back to their payer is read from the intermediaries' and the central bank's own records,
and mapped back to the events that made the payments.

Determinism: the few places where the protocol orders by a device's id (money reaching several
devices of one settlement batch) would follow the random keys; the cards (and terminals) are
therefore handed out in the order of their keys' fingerprints, so that a device's id sorts like
its person's (merchant's) index within its intermediary, which the fast executor relies on.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.serialization import load_der_public_key
from sqlalchemy import literal_column, select

from offpay.crypto.pseudonyms import commitment
from offpay.device import tamper
from offpay.device.card import Card, key_fingerprint
from offpay.device.reader import CardClient
from offpay.device.terminal import TerminalModule
from offpay.errors import OffpayError
from offpay.relay.phone import PhoneApp, confirmation_code
from offpay.relay.pos import PosApp
from offpay.sim.liquidity import SimClock
from offpay.sim.network import Merchant, OfflineNetwork, User
from offpay.sim.population.events import Events, Kind, World
from offpay.sim.population.outcomes import UNREACHABLE, Results, code_of
from offpay.sim.population.scenario import Scenario
from offpay.sim.population.traffic import (
    AppNetwork,
    CountedModule,
    Traffic,
    card_link,
    watch_storage,
)
from offpay.store import schema
from offpay.wire.envelope import Signed

PIN = "1234"
_ROWID = literal_column("rowid")


def _minutes(start: dt.datetime, when: dt.datetime) -> int:
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return round((when - start).total_seconds() / 60)


@dataclasses.dataclass
class _Real:
    scenario: Scenario
    world: World
    events: Events
    clock: SimClock = dataclasses.field(init=False)
    net: OfflineNetwork = dataclasses.field(init=False)
    users: list[User] = dataclasses.field(default_factory=list)
    merchants: list[Merchant] = dataclasses.field(default_factory=list)
    twins: dict[int, Card] = dataclasses.field(default_factory=dict)
    saved: dict[int, Any] = dataclasses.field(default_factory=dict)
    by_digest: dict[bytes, int] = dataclasses.field(default_factory=dict)  # payment -> event
    # the notary's commitment to a payment's evidence -> event (offpay.crypto.pseudonyms)
    by_commitment: dict[bytes, int] = dataclasses.field(default_factory=dict)
    notary_seen: int = 0
    traffic: Traffic = dataclasses.field(default_factory=Traffic)
    links: list[Any] = dataclasses.field(default_factory=list)  # each person's counted card
    twin_links: dict[int, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        s, w = self.scenario, self.world
        # Minute 0 is a UTC midnight, so that the cards' days (their clock // 86400) begin at
        # the scenario's whole days, as the fast executor counts them.
        start = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        self.start = start
        self.clock = SimClock(start)
        self.net = OfflineNetwork(
            bank_names=w.banks,
            currency=s.currency,
            liquidity=s.liquidity.policy,
            pool=s.liquidity.pool,
            clock=self.clock,
        )
        online = s.behaviour.online_wallet
        for k, name in enumerate(w.banks):
            people = int((w.person_bank == k).sum())
            if people * online:
                self.net.issue(name, people * online)
            policy = dataclasses.replace(s.policy, issuer=name, version=2)
            self.net.banks[name].publish_policy(policy)
        self.results = Results.empty(len(self.events), w.people, w.merchants, len(w.banks))
        self.messages = np.zeros(len(self.events), np.int32)
        self.bytes = np.zeros(len(self.events), np.int64)
        self.storage = np.zeros(w.people, np.int64)
        self._issue_devices()

    # -- the population ------------------------------------------------------------------------

    def _issue_devices(self) -> None:
        w, net, online = self.world, self.net, self.scenario.behaviour.online_wallet
        cards: list[Card | None] = [None] * w.people
        modules: list[TerminalModule | None] = [None] * w.merchants
        for k in range(len(w.banks)):
            people = np.flatnonzero(w.person_bank == k)
            made = [Card.manufacture(net.algorithm) for _ in people]
            made.sort(key=lambda c: key_fingerprint(CardClient(c.process).public_key()))
            for i, card in zip(people, made, strict=True):
                cards[i] = card
            shops = np.flatnonzero(w.merchant_bank == k)
            mods = [TerminalModule.manufacture(net.algorithm) for _ in shops]
            mods.sort(key=lambda m: key_fingerprint(load_der_public_key(m.public_key)))
            for i, module in zip(shops, mods, strict=True):
                modules[i] = module
        for i in range(w.people):
            bank = net.banks[w.banks[w.person_bank[i]]]
            name = w.person_name(i)
            customer = bank.open_customer(name)
            card = cards[i]
            assert card is not None
            card_id = bank.issue_card(customer, card.process, PIN)
            if online:
                bank.fund(customer, net.money(online))
            self._watch(i, card)
            link = card_link(card.process, self.traffic)
            self.links.append(link)
            phone = PhoneApp(link, bank.name, AppNetwork(net.network, self.traffic), net.currency)
            user = User(name, bank, customer, card, card_id, phone, PIN)
            net.users[name] = user
            self.users.append(user)
        for i in range(w.merchants):
            bank = net.banks[w.banks[w.merchant_bank[i]]]
            name = f"m{i}"
            customer = bank.open_customer(name, merchant=True)
            module = modules[i]
            assert module is not None
            terminal_id = bank.issue_terminal(customer, module)
            pos = PosApp(
                CountedModule(module, self.traffic),  # type: ignore[arg-type]
                bank.name,
                AppNetwork(net.network, self.traffic),
                self.clock,  # an honest host: the module signs the simulated time
            )
            merchant = Merchant(name, bank, customer, module, terminal_id, pos)
            net.merchants[name] = merchant
            self.merchants.append(merchant)

    def _watch(self, i: int, card: Card) -> None:
        """The person's storage: the largest sealed record its card writes."""
        assert card.memory.blob is not None
        self.storage[i] = len(card.memory.blob)

        def seen(size: int) -> None:
            self.storage[i] = max(self.storage[i], size)

        watch_storage(card.memory, seen)

    # -- events --------------------------------------------------------------------------------

    def run(self) -> Results:
        e, r, traffic = self.events, self.results, self.traffic
        for i in range(len(e)):
            messages, carried = traffic.messages, traffic.bytes
            self.clock.now = self.start + dt.timedelta(minutes=int(e.t[i]))
            if e.cut[i]:
                r.outcome[i] = UNREACHABLE
            else:
                try:
                    self._play(i, Kind(int(e.kind[i])), int(e.a[i]), int(e.b[i]), int(e.amount[i]))
                except OffpayError as exc:
                    r.outcome[i] = code_of(exc.code)
            self.messages[i] = traffic.messages - messages
            self.bytes[i] = traffic.bytes - carried
            self._after_event(i)
        self._finish()
        r.extra.update(messages=self.messages, bytes=self.bytes, storage=self.storage)
        return r

    def _play(self, i: int, kind: Kind, a: int, b: int, amount: int) -> None:
        money = self.net.money
        if kind is Kind.SHOP:
            user = self.users[a]
            self._paying(i, user.card, amount, self.merchants[b].pos.charge, self.links[a])
        elif kind is Kind.P2P:
            self._paying(i, self.users[a].card, amount, self._p2p, a, b)
        elif kind is Kind.ONLINE:
            user = self.users[a]
            status = user.phone.sync(PIN)
            want = self.scenario.behaviour.top_up_to - status.balance.minor
            top_up = min(want, user.online.minor)
            if top_up > 0:
                user.phone.top_up(PIN, money(top_up))
                self.results.moved[i] = top_up
        elif kind is Kind.SHOP_ONLINE:
            self.merchants[a].pos.sync()
        elif kind is Kind.CLONE:
            self.twins[a] = tamper.clone_card(self.users[a].card)
            self.twin_links[a] = card_link(self.twins[a].process, self.traffic)
        elif kind is Kind.SNAPSHOT:
            self.saved[a] = tamper.read_state(self.users[a].card)
        elif kind is Kind.ROLLBACK:
            tamper.write_back(self.users[a].card, self.saved[a])
        elif kind in (Kind.CLONE_SHOP, Kind.ROLLED_SHOP):
            card = self.twins[a] if kind is Kind.CLONE_SHOP else self.users[a].card
            link = self.twin_links[a] if kind is Kind.CLONE_SHOP else self.links[a]
            if amount == 0:  # "all": everything the broken card holds
                amount = card.state.balance.minor
                if amount <= 0:
                    raise OffpayError("the broken card holds nothing", code="funds.insufficient")
            self._paying(i, card, amount, self.merchants[b].pos.charge, link)

    def _paying(self, i: int, card: Card, amount: int, pay: Any, *args: Any) -> None:
        """Run a payment; a payment the payer card signed is remembered (even if its payee then
        refused it) so that its settlement can be found later."""
        before = card.state.last_payment
        try:
            if pay == self._p2p:
                pay(*args, amount)
            else:
                pay(*args, PIN, self.net.money(amount))
        finally:
            after = card.state.last_payment
            if after is not None and after is not before:
                self.by_digest[after.digest] = i
                self.by_commitment[commitment(after.digest)] = i
                self.results.moved[i] = amount

    def _p2p(self, a: int, b: int, amount: int) -> None:
        payer, payee = self.users[a], self.users[b]
        request = payee.phone.ask(payer.phone.show_identity(), self.net.money(amount))
        try:
            payment = payer.phone.pay(PIN, request, code=confirmation_code(request))
            payee.phone.accept(PIN, payment)
        except OffpayError:
            payee.phone.decline(request)  # not paid, or the payee's card refused the payment
            raise

    def _after_event(self, i: int) -> None:
        """Payments the notary recorded during event ``i`` settled at its time; the pool's
        outstanding loans after it."""
        r, n = self.results, schema.notary
        with self.net.central.db.connect() as conn:
            rows = conn.execute(
                select(_ROWID, n.c.commitment).where(_ROWID > self.notary_seen)  # noqa: SIM300
            ).all()
        for rowid, committed in rows:
            self.notary_seen = max(self.notary_seen, rowid)
            event = self.by_commitment.get(bytes(committed))
            if event is not None:
                r.settled_at[event] = self.events.t[i]
        if self.scenario.liquidity.pool:
            r.pool_after[i] = self.net.central.pool_status().outstanding.minor

    def _finish(self) -> None:
        r, net, start = self.results, self.net, self.start
        s, loans, d = schema.shortfalls, schema.pool_loans_held, schema.debits
        for bank in net.banks.values():
            with bank.db.connect() as conn:
                for raw, queued_at in conn.execute(select(s.c.payment, s.c.queued_at)):
                    event = self.by_digest[Signed.from_bytes(bytes(raw)).digest]
                    r.queued_at[event] = _minutes(start, queued_at)
                for evidence, amount in conn.execute(
                    select(d.c.evidence, loans.c.amount)
                    .join(loans, loans.c.loan_id == d.c.tx_id)
                    .where(loans.c.state == "drawn")
                ):
                    r.pool_drawn[self.by_digest[bytes(evidence)]] = amount
                refunds = schema.refunds
                for (raw,) in conn.execute(
                    select(d.c.payment)
                    .join(refunds, refunds.c.refund_id == d.c.tx_id)
                    .where(refunds.c.open.is_(False))
                ):
                    r.refunded[self.by_digest[Signed.from_bytes(bytes(raw)).digest]] = True
        for i, user in enumerate(self.users):
            r.person_online[i] = user.online.minor
            r.person_shadow[i] = user.shadow.minor
            r.person_card[i] = user.card.state.balance.minor
            r.person_blocked[i] = user.bank.device(user.card_id).status != "active"
        for i, merchant in enumerate(self.merchants):
            r.merchant_wallet[i] = merchant.wallet.minor
        holdings = {p.institution: p.holdings.minor for p in net.central.positions()}
        r.bank_holdings[:] = [holdings[name] for name in self.world.banks]
        r.pool_outstanding = net.central.pool_status().outstanding.minor
        bounds: dict[str, int] = {}
        for bank in net.banks.values():
            for loss in bank.losses():
                r.losses += loss.amount.minor
                bounds[loss.device] = max(bounds.get(loss.device, 0), loss.bound.minor)
        r.loss_bound = sum(bounds.values())
        net.check_conservation()


def run_real(scenario: Scenario, world: World, events: Events) -> Results:
    """Play ``events`` on a real in-process network; the per-event and final results."""
    return _Real(scenario, world, events).run()
