"""The balance scheme's flows as data, so that fault injection covers each one without test
code of its own (issue 3, point 7).

A :class:`Flow` names its parties, what happens before it (never faulted), its steps as the
relays play them, and the balances every party ends with. :func:`record` plays a flow once on
a clean network and returns its message list (every network message, card command and terminal
call, see :mod:`offpay.transport.faults`); :func:`play` plays it again with one fault at one
hop, then does what the users and the operators would do about it, and reports the balances
before and after. :func:`prepare` sets a flow up once so that many faults can be played from
copies of it. :data:`FLOWS` is the one place where flows are listed.

Each step knows its own *retry*: what a user or a relay does after the step failed, using only
what they can see (the card's balance and last payment, the terminal's count of payments, the
wallets). After a fault the operators call ``retry_pending`` on every intermediary, the failed
step is retried and the rest of the flow runs; if that neither completed the flow nor left
every balance as it was, everyone synchronises once more and the operators retry again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from offpay.device.reader import CardClient
from offpay.errors import DeviceStateError, OffpayError, ReplayError
from offpay.money import Money
from offpay.sim.network import ConservationError, Merchant, OfflineNetwork, User
from offpay.transport.faults import Fault, Hop, Injector
from offpay.wire.envelope import payload_of
from offpay.wire.messages import Liquidity, OfflinePayment

SEK = 100  # minor units per krona
ISSUED_PER_BANK = 1_000_000 * SEK
ATTEMPTS = 3  # how often a user tries a failed operation again before giving up

Balances = dict[str, tuple[int, ...]]


# -- parties ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Person:
    """A user with an online wallet, a card and a phone."""

    role: str
    bank: str
    online: int = 0


@dataclass(frozen=True)
class Shop:
    """A merchant with a terminal and its PoS app."""

    role: str
    bank: str


@dataclass
class World:
    """One flow's network and parties, with every hop going through ``injector``."""

    net: OfflineNetwork
    injector: Injector
    users: dict[str, User] = field(default_factory=dict)
    shops: dict[str, Merchant] = field(default_factory=dict)
    steps: int = 0

    def money(self, minor: int) -> Money:
        return self.net.money(minor)

    def kr(self, kronor: int) -> Money:
        return self.net.money(kronor * SEK)

    def check(self) -> None:
        """Money issued equals money held, and nothing was issued or destroyed. A failure is
        an ``AssertionError``, never a refusal a retry could swallow."""
        try:
            audit = self.net.check_conservation()
        except ConservationError as exc:
            raise AssertionError(str(exc)) from exc
        issued = ISSUED_PER_BANK * len(self.net.banks) + self.net.pool
        if audit.issued != self.money(issued):
            raise AssertionError(f"issued {audit.issued}, expected {self.money(issued)}")

    def step(self, action: Callable[[], object]) -> None:
        """Run one action; conservation must hold afterwards, whether it succeeded or not."""
        try:
            action()
        finally:
            self.steps += 1
            self.check()

    def card(self, role: str) -> CardClient:
        """The card as its holder's phone reaches it (through the injector)."""
        return self.users[role].phone.card

    def mark(self) -> Mark:
        """What users can see before a step, to tell later whether it took effect."""
        cards = {r: (u.card_balance.minor, u.card.state.seq) for r, u in self.users.items()}
        return Mark(cards, {r: s.module.state.seq for r, s in self.shops.items()})

    def balances(self) -> Balances:
        """Every party's money (card, shadow and online wallet; a shop's wallet), what is in
        transit between intermediaries, the payments waiting in the queue, the pool lent."""
        out: Balances = {
            r: (u.card_balance.minor, u.shadow.minor, u.online.minor) for r, u in self.users.items()
        }
        out.update({r: (s.wallet.minor,) for r, s in self.shops.items()})
        banks = self.net.banks.values()
        out["in transit"] = (sum(b.in_transit().minor for b in banks),)
        out["queued"] = (sum(len(b.open_shortfalls()) for b in banks),)
        out["pool lent"] = (self.net.central.pool_status().outstanding.minor,)
        return out

    def blocked(self) -> list[str]:
        """Devices of this flow that their intermediary no longer serves, or that are revoked."""
        devices = [(u.bank, u.card_id) for u in self.users.values()]
        devices += [(s.bank, s.terminal_id) for s in self.shops.values()]
        revoked = set(self.net.central.revoked_devices())
        return [d for b, d in devices if b.device(d).status != "active" or d in revoked]

    def retry_pending(self) -> None:
        """The operators finish what a lost message left half done, at every intermediary."""
        self.step(lambda: [bank.retry_pending() for bank in self.net.banks.values()])

    def persist(self, step: Step, mark: Mark, *, failed: bool) -> None:
        """Run ``step`` (or, if it ``failed`` already, retry it) until it succeeds, as a user
        would, at most :data:`ATTEMPTS` times; the last refusal propagates."""
        tries: list[Callable[[], None]] = [] if failed else [lambda: step.run(self)]
        tries += [lambda: step.retry(self, mark)] * ATTEMPTS
        for n, attempt in enumerate(tries):
            try:
                self.step(attempt)
                return
            except OffpayError:
                if n == len(tries) - 1:
                    raise


@dataclass(frozen=True)
class Mark:
    """What the users saw before a step."""

    cards: dict[str, tuple[int, int]]  # role: (balance, seq)
    terminals: dict[str, int]  # role: payments received over the module's life


# -- steps --------------------------------------------------------------------------------------


class Step(Protocol):
    def run(self, w: World) -> None: ...

    def retry(self, w: World, mark: Mark) -> None:
        """After ``run`` failed: what the user or relay does, knowing ``mark``."""
        ...


@contextlib.contextmanager
def given_up() -> Iterator[None]:
    """A payee device refused a payment because its request is gone: received already, or
    declined (then the payment goes back to its payer)."""
    try:
        yield
    except ReplayError:
        pass
    except DeviceStateError as exc:
        if exc.code != "device.declined":
            raise


def new_payment(w: World, payer: str, payee: str, mark: Mark) -> bytes | None:
    """The payer card's last payment, if it made it to ``payee`` since ``mark``: read from the
    card as :meth:`World.mark` reads it, then fetched through the relay, sealed to the payee."""
    last = w.users[payer].card.state.last_payment
    if last is None:
        return None
    payment = payload_of(last, OfflinePayment)
    if payment.payer_seq <= mark.cards[payer][1] or payment.receiver != payee:
        return None
    try:
        return w.card(payer).last_payment()
    except OffpayError:
        return None


@dataclass(frozen=True)
class Fund:
    """The user buys e-krona into the online wallet; a retry carries the same reference."""

    user: str
    amount: int

    def run(self, w: World) -> None:
        u = w.users[self.user]
        u.bank.fund(u.customer_id, w.kr(self.amount), reference=f"fund-{u.customer_id}")

    def retry(self, w: World, mark: Mark) -> None:
        self.run(w)


@dataclass(frozen=True)
class Redeem:
    user: str
    amount: int

    def run(self, w: World) -> None:
        u = w.users[self.user]
        u.bank.redeem(u.customer_id, w.kr(self.amount), reference=f"redeem-{u.customer_id}")

    def retry(self, w: World, mark: Mark) -> None:
        self.run(w)


@dataclass(frozen=True)
class TopUp:
    """Report §3.4. Retry: synchronise (a top-up whose instruction was lost reaches the card
    then), and top up again only if the card still does not show it."""

    user: str
    amount: int

    def run(self, w: World) -> None:
        u = w.users[self.user]
        u.phone.top_up(u.pin, w.kr(self.amount))

    def retry(self, w: World, mark: Mark) -> None:
        u = w.users[self.user]
        u.phone.sync(u.pin)
        if u.card_balance.minor < mark.cards[self.user][0] + self.amount * SEK:
            self.run(w)


@dataclass(frozen=True)
class Defund:
    """Report §3.4. Retry: synchronise (a lost confirmation is completed then), and defund
    again only if the card still holds the money."""

    user: str
    amount: int

    def run(self, w: World) -> None:
        u = w.users[self.user]
        u.phone.defund(u.pin, w.kr(self.amount))

    def retry(self, w: World, mark: Mark) -> None:
        u = w.users[self.user]
        u.phone.sync(u.pin)
        if u.card_balance.minor > mark.cards[self.user][0] - self.amount * SEK:
            self.run(w)


@dataclass(frozen=True)
class Sync:
    """Report §3.7, for a card (through the phone) or a terminal (through the PoS app)."""

    party: str

    def run(self, w: World) -> None:
        if self.party in w.shops:
            w.shops[self.party].pos.sync()
        else:
            u = w.users[self.party]
            u.phone.sync(u.pin)

    def retry(self, w: World, mark: Mark) -> None:
        self.run(w)


@dataclass(frozen=True)
class Pay:
    """Report §3.6: the payee's phone asks, the payer's phone pays, the payee's accepts.
    Retry: nothing if the payee's card shows the money; the payer's last payment handed over
    again if the payer's card paid; otherwise the whole exchange again."""

    payer: str
    payee: str
    amount: int

    def run(self, w: World) -> None:
        payer, payee = w.users[self.payer], w.users[self.payee]
        request = payee.phone.ask(payer.phone.show_identity(), w.kr(self.amount))
        payment = payer.phone.pay(payer.pin, request)
        payee.phone.accept(payee.pin, payment)

    def retry(self, w: World, mark: Mark) -> None:
        payee = w.users[self.payee]
        if payee.card_balance.minor >= mark.cards[self.payee][0] + self.amount * SEK:
            return
        payment = new_payment(w, self.payer, payee.card_id, mark)
        if payment is None:
            self.run(w)
            return
        with given_up():  # the request lapsed or was declined: the payment goes back
            payee.phone.accept(payee.pin, payment)


@dataclass(frozen=True)
class Charge:
    """Report §3.5: the PoS app charges the card. Retry: nothing if the terminal has the
    payment; resubmission if the card paid; otherwise a new charge."""

    shop: str
    user: str
    amount: int

    def run(self, w: World) -> None:
        u = w.users[self.user]
        w.shops[self.shop].pos.charge(u.phone.card.transmit, u.pin, w.kr(self.amount))

    def retry(self, w: World, mark: Mark) -> None:
        shop = w.shops[self.shop]
        if new_payment(w, self.user, shop.terminal_id, mark) is None:
            self.run(w)
            return
        # Resubmission is safe whatever the terminal has: a payment it already counted hands
        # back its record (which may have been lost on the way to the app). The PoS app may
        # also have given the request up: then the payment goes back to the card.
        with given_up():
            shop.pos.resubmit(w.users[self.user].phone.card.transmit)


@dataclass(frozen=True)
class Resubmit:
    """Report §3.5: the card's last payment again, for a terminal that never received it."""

    shop: str
    user: str

    def run(self, w: World) -> None:
        w.shops[self.shop].pos.resubmit(w.users[self.user].phone.card.transmit)

    def retry(self, w: World, mark: Mark) -> None:
        self.run(w)  # idempotent: a payment the terminal has hands back its record


@dataclass(frozen=True)
class PayUnseen:
    """Set-up only: the card pays a terminal's request, and the payment never reaches the
    terminal (the customer walked away), for the resubmission flow."""

    shop: str
    user: str
    amount: int

    def run(self, w: World) -> None:
        card = w.card(self.user)
        request = w.shops[self.shop].pos.module.request_payment(card.identity(), w.kr(self.amount))
        card.verify_pin(w.users[self.user].pin)
        card.pay(request)

    def retry(self, w: World, mark: Mark) -> None:
        raise NotImplementedError("a set-up step is never retried")


# -- flows --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Flow:
    """``ends``: each party's balances once the flow is done, in kronor: a person's (card,
    shadow wallet, online wallet), a shop's wallet. ``synced``: the parties whose balances
    change when everyone synchronises once more afterwards (a card that was handed less than
    its shadow wallet while a payment it received waited, say)."""

    name: str
    parties: tuple[Person | Shop, ...]
    steps: tuple[Step, ...]
    ends: Mapping[str, tuple[int, ...]]
    before: tuple[Step, ...] = ()
    synced: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    liquidity: Liquidity = Liquidity.QUEUE
    pool: int = 0  # kronor in the central bank's liquidity pool

    def network(self) -> OfflineNetwork:
        net = OfflineNetwork(liquidity=self.liquidity, pool=self.pool * SEK)
        for name in net.banks:
            net.issue(name, ISSUED_PER_BANK)
        return net

    def build(self, injector: Injector, net: OfflineNetwork | None = None, tag: str = "") -> World:
        """The parties on ``net`` (a new network if None) with the set-up done, every hop
        through ``injector``, which numbers nothing until it is started. Parties are named
        after their role (plus ``tag``, so that one network can hold several copies); hops are
        labelled with the role alone."""
        net = net or self.network()
        if injector.network not in net.network.hooks:
            net.network.hooks.append(injector.network)
        w = World(net, injector)
        for p in self.parties:
            if isinstance(p, Person):
                u = net.add_user(p.role + tag, p.bank, online=p.online * SEK)
                u.phone.card.transmit = injector.card(p.role, u.card.process)
                w.users[p.role] = u
            else:
                m = net.add_merchant(p.role + tag, p.bank)
                m.pos.module = injector.terminal(p.role, m.module)
                w.shops[p.role] = m
        run_steps(w, self.before)
        return w

    def expected(self, *, synced: bool = False) -> Balances:
        """The balances of :meth:`World.balances` once the flow completed (``synced``: and
        everyone synchronised once more)."""
        ends = {**self.ends, **self.synced} if synced else self.ends
        out = {role: tuple(k * SEK for k in v) for role, v in ends.items()}
        out.update({"in transit": (0,), "queued": (0,), "pool lent": (0,)})
        return out

    def roles(self) -> tuple[str, ...]:
        return tuple(p.role for p in self.parties)


@dataclass
class Played:
    """One run of a flow with (or without) a fault, and what came of it. Plain data, so that
    it can cross a process boundary."""

    flow: str
    hop: Hop | None  # the hop the fault hit, as the injector saw it
    fault: Fault | None
    before: Balances
    after: Balances
    expected: Balances
    synced: bool  # everyone had to synchronise once more after the retries
    failed: int | None  # the step that raised, if any
    error: str | None
    late_errors: list[str]
    blocked: list[str]
    steps: int
    late_refusals: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def completed(self) -> bool:
        return self.after == self.expected

    @property
    def returned(self) -> bool:
        return self.after == self.before


def run_steps(w: World, steps: tuple[Step, ...]) -> None:
    """Each step once, with no retry: the set-up, or a clean run."""
    for step in steps:
        w.step(lambda step=step: step.run(w))


def settle(w: World, flow: Flow) -> None:
    """Everyone synchronises once more, and the operators finish what is pending."""
    for role in flow.roles():
        w.persist(Sync(role), w.mark(), failed=False)
    w.retry_pending()


def record(flow: Flow, world: World | None = None) -> tuple[Hop, ...]:
    """The flow's message list, from one clean run on ``world`` (a fresh one if None)."""
    w = world or flow.build(Injector())
    w.injector.start()
    try:
        run_steps(w, flow.steps)
    finally:
        w.injector.active = False
    return tuple(w.injector.hops)


def play(
    flow: Flow, hop: Hop | None = None, fault: Fault | None = None, world: World | None = None
) -> Played:
    """Play ``flow`` on ``world`` (a fresh one if None) with ``fault`` at ``hop``, then
    recover as users and operators would: ``retry_pending`` on every intermediary, the failed
    step retried and the rest of the flow run, a held message delivered; and, unless that
    completed the flow or changed nothing, everyone synchronises again and ``retry_pending``
    runs once more. Conservation is checked after every step; a refusal that survives every
    retry propagates."""
    w = world or flow.build(Injector())
    injector = w.injector
    before = w.balances()
    injector.start(hop, fault)
    failed: int | None = None
    error: str | None = None
    mark = w.mark()
    for i, step in enumerate(flow.steps):
        mark = w.mark()
        try:
            w.step(lambda step=step: step.run(w))
        except OffpayError as exc:
            failed, error = i, str(exc)
            break
    w.retry_pending()
    if failed is not None:
        w.persist(flow.steps[failed], mark, failed=True)
        for step in flow.steps[failed + 1 :]:
            w.persist(step, w.mark(), failed=False)
    if injector.holding:
        w.step(injector.release)  # a held message that nothing overtook arrives now
    after = w.balances()
    synced = after not in (flow.expected(), before)
    if synced:
        settle(w, flow)
        after = w.balances()
    injector.active = False
    return Played(
        flow.name,
        injector.hit,
        fault,
        before,
        after,
        flow.expected(synced=synced),
        synced,
        failed,
        error,
        [repr(e) for e in injector.late_errors],
        w.blocked(),
        w.steps,
        list(injector.late_refusals),
    )


@dataclass
class Prepared:
    """A network with a flow's parties set up and ready to play (the template a test copies
    for each fault), and the flow's message list. The message list is recorded on a second
    copy of the parties on the same network, which also leaves the database engines' statement
    caches warm for the flow."""

    flow: Flow
    world: World
    hops: tuple[Hop, ...]


def prepare(flow: Flow) -> Prepared:
    injector = Injector()
    net = flow.network()
    rehearsal = flow.build(injector, net, tag=" (rehearsal)")
    hops = record(flow, rehearsal)
    settle(rehearsal, flow)
    world = flow.build(injector, net)
    world.steps = 0
    return Prepared(flow, world, hops)


# -- the catalogue ------------------------------------------------------------------------------

FLOWS: tuple[Flow, ...] = (
    Flow(
        "fund",
        (Person("alice", "bank-a"),),
        (Fund("alice", 500),),
        {"alice": (0, 0, 500)},
    ),
    Flow(
        "redeem",
        (Person("alice", "bank-a", online=1000),),
        (Redeem("alice", 300),),
        {"alice": (0, 0, 700)},
    ),
    Flow(
        "top-up",
        (Person("alice", "bank-a", online=1000),),
        (TopUp("alice", 200),),
        {"alice": (200, 200, 800)},
    ),
    Flow(
        "defund",
        (Person("alice", "bank-a", online=1000),),
        (Defund("alice", 50),),
        {"alice": (150, 150, 850)},
        before=(TopUp("alice", 200),),
    ),
    Flow(
        "sync-with-log",
        (Person("alice", "bank-a", online=1000), Person("bob", "bank-b"), Shop("shop", "bank-a")),
        (Sync("alice"),),
        {"alice": (90, 90, 800), "bob": (80, 80, 0), "shop": (30,)},
        before=(TopUp("alice", 200), Pay("alice", "bob", 80), Charge("shop", "alice", 30)),
    ),
    Flow(
        "terminal",
        (Person("alice", "bank-a", online=1000), Shop("shop", "bank-b")),
        (Charge("shop", "alice", 30), Sync("shop")),
        {"alice": (170, 170, 800), "shop": (30,)},
        before=(TopUp("alice", 200),),
    ),
    Flow(
        # Two payments in one upload, one of each bank's card: settled as one batch.
        "terminal-batch",
        (
            Person("alice", "bank-a", online=1000),
            Person("bob", "bank-b", online=1000),
            Shop("shop", "bank-b"),
        ),
        (Sync("shop"),),
        {"alice": (170, 170, 800), "bob": (180, 180, 800), "shop": (50,)},
        before=(
            TopUp("alice", 200),
            TopUp("bob", 200),
            Charge("shop", "alice", 30),
            Charge("shop", "bob", 20),
        ),
    ),
    Flow(
        "resubmission",
        (Person("alice", "bank-a", online=1000), Shop("shop", "bank-a")),
        (Resubmit("shop", "alice"), Sync("shop")),
        {"alice": (170, 170, 800), "shop": (30,)},
        before=(TopUp("alice", 200), PayUnseen("shop", "alice", 30)),
    ),
    Flow(
        # The payment never reached the terminal; the customer synchronised first. The
        # terminal's sync declines the request, which was still open: the shop's wallet gives
        # the payment back, and the card gets it at its next sync (bank/refusal.py).
        "refund",
        (Person("alice", "bank-a", online=1000), Shop("shop", "bank-b")),
        (Sync("shop"), Sync("alice")),
        {"alice": (200, 200, 800), "shop": (0,)},
        before=(TopUp("alice", 200), PayUnseen("shop", "alice", 30), Sync("alice")),
    ),
    Flow(
        # The same, with the terminal first: the payment is credited and refunded at once.
        "declined-first",
        (Person("alice", "bank-a", online=1000), Shop("shop", "bank-b")),
        (Sync("alice"), Sync("alice")),
        {"alice": (200, 200, 800), "shop": (0,)},
        before=(TopUp("alice", 200), PayUnseen("shop", "alice", 30), Sync("shop")),
    ),
    Flow(
        "p2p",
        (Person("alice", "bank-a", online=1000), Person("bob", "bank-b")),
        (Pay("alice", "bob", 80), Sync("alice"), Sync("bob")),
        {"alice": (120, 120, 800), "bob": (80, 80, 0)},
        before=(TopUp("alice", 200),),
    ),
    Flow(
        "debit-request",
        (Person("alice", "bank-a", online=1000), Person("bob", "bank-b")),
        (Sync("bob"), Sync("alice")),
        {"alice": (120, 120, 800), "bob": (80, 80, 0)},
        before=(TopUp("alice", 200), Pay("alice", "bob", 80)),
    ),
    Flow(
        "queue",
        (
            Person("alice", "bank-a", online=1000),
            Person("bob", "bank-b"),
            Person("charlie", "bank-a"),
        ),
        (Sync("charlie"), Sync("bob")),
        # Charlie synchronised while Bob's payment waited: his card shows it at his next sync.
        {"alice": (120, 120, 800), "bob": (30, 30, 0), "charlie": (0, 50, 0)},
        before=(TopUp("alice", 200), Pay("alice", "bob", 80), Pay("bob", "charlie", 50)),
        synced={"charlie": (50, 50, 0)},
    ),
    Flow(
        "pool",
        (
            Person("alice", "bank-a", online=1000),
            Person("bob", "bank-b"),
            Person("charlie", "bank-a"),
        ),
        (Sync("charlie"), Sync("alice")),
        {"alice": (120, 120, 800), "bob": (30, 30, 0), "charlie": (50, 50, 0)},
        before=(TopUp("alice", 200), Pay("alice", "bob", 80), Pay("bob", "charlie", 50)),
        liquidity=Liquidity.POOL,
        pool=1000,
    ),
    Flow(
        "receipts",
        (
            Person("alice", "bank-a", online=1000),
            Person("bob", "bank-b"),
            Person("charlie", "bank-a"),
        ),
        (Sync("charlie"), Sync("alice")),
        {"alice": (120, 120, 800), "bob": (30, 30, 0), "charlie": (50, 50, 0)},
        before=(TopUp("alice", 200), Pay("alice", "bob", 80), Pay("bob", "charlie", 50)),
        liquidity=Liquidity.RECEIPTS,
    ),
)


def flow_named(name: str) -> Flow:
    return next(f for f in FLOWS if f.name == name)
