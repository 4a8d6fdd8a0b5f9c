"""One central bank, several intermediaries, their users, cards, merchants and terminals, all
wired through an in-process network; plus the audit that money is conserved."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from sqlalchemy import Connection, select

from offpay.bank.engine import Intermediary, LedgerTotals, reserve_move_nonce
from offpay.central.bank import CentralBank, Clock, Position, utc_now
from offpay.crypto.keys import Algorithm
from offpay.device.card import Card
from offpay.device.terminal import TerminalModule
from offpay.errors import OffpayError
from offpay.money import Money
from offpay.relay.phone import PhoneApp
from offpay.relay.pos import PosApp
from offpay.store import schema
from offpay.store.database import DEFAULT_URL
from offpay.store.moves import in_transit as moves_in_transit
from offpay.tokens.app import TokenWalletApp
from offpay.tokens.element import TokenElement
from offpay.transport.memory import MemoryNetwork
from offpay.wire.messages import Liquidity


class ConservationError(OffpayError):
    code = "audit.conservation"


class Ledger(Protocol):
    """An intermediary's books as a customer's wallets are read from them: in process, or a
    service's over HTTP (``offpay.service.remote.RemoteBank``)."""

    def balance(self, account_id: str) -> Money: ...


B = TypeVar("B", bound=Ledger)


@dataclass
class Customer(Generic[B]):
    """Someone with an online wallet at an intermediary, whichever scheme they pay offline in."""

    name: str
    bank: B
    customer_id: str

    @property
    def online(self) -> Money:
        return self.bank.balance(f"{self.customer_id}/online")


@dataclass
class User(Customer[B]):
    card: Card
    card_id: str
    phone: PhoneApp
    pin: str

    @property
    def shadow(self) -> Money:
        return self.bank.balance(f"{self.customer_id}/shadow")

    @property
    def card_balance(self) -> Money:
        return self.card.state.balance


@dataclass
class Merchant(Generic[B]):
    name: str
    bank: B
    customer_id: str
    module: TerminalModule
    terminal_id: str
    pos: PosApp

    @property
    def wallet(self) -> Money:
        return self.bank.balance(f"{self.customer_id}/merchant")


@dataclass
class TokenUser(Customer[B]):
    element: TokenElement
    element_id: str
    app: TokenWalletApp

    @property
    def tokens(self) -> Money:
        return self.element.balance(self.bank.currency)


@dataclass(frozen=True)
class Audit:
    issued: Money
    reserves: Money
    wallets: Money
    in_transit: Money
    tokens: Money
    pool: Money  # the central bank's liquidity pool, not lent out

    @property
    def held(self) -> Money:
        return self.reserves + self.wallets + self.in_transit + self.tokens + self.pool

    @property
    def balanced(self) -> bool:
        return self.issued == self.held


@dataclass
class OfflineNetwork:
    bank_names: tuple[str, ...] = ("bank-a", "bank-b")
    currency: str = "SEK"
    algorithm: Algorithm = Algorithm.ED25519
    url_for: Callable[[str], str] = lambda _name: DEFAULT_URL
    liquidity: Liquidity = Liquidity.QUEUE
    pool: int = 0  # minor units the central bank puts in its liquidity pool
    clock: Clock = utc_now
    network: MemoryNetwork = field(default_factory=MemoryNetwork)
    central: CentralBank = field(init=False)
    banks: dict[str, Intermediary] = field(init=False)
    users: dict[str, User] = field(default_factory=dict)
    merchants: dict[str, Merchant] = field(default_factory=dict)
    token_users: dict[str, TokenUser[Intermediary]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.central = CentralBank(
            self.url_for("central-bank"),
            currency=self.currency,
            algorithm=self.algorithm,
            clock=self.clock,
        )
        if self.pool:
            self.central.fund_pool(self.money(self.pool))
        self.network.register("central-bank", self.central.handle)
        self.banks = {
            name: Intermediary.join(
                name,
                self.central,
                self.network,
                url=self.url_for(name),
                algorithm=self.algorithm,
                liquidity=self.liquidity,
            )
            for name in self.bank_names
        }

    def money(self, minor: int) -> Money:
        return Money(minor, self.currency)

    def issue(self, bank: str, minor: int) -> None:
        self.central.issue(bank, self.money(minor))

    def add_user(self, name: str, bank: str, *, pin: str = "1234", online: int = 0) -> User:
        b = self.banks[bank]
        customer = b.open_customer(name)
        card = Card.manufacture(self.algorithm)
        card_id = b.issue_card(customer, card.process, pin)
        if online:
            b.fund(customer, self.money(online))
        user = User(
            name,
            b,
            customer,
            card,
            card_id,
            PhoneApp(card.process, bank, self.network, self.currency),
            pin,
        )
        self.users[name] = user
        return user

    def add_merchant(self, name: str, bank: str) -> Merchant:
        b = self.banks[bank]
        customer = b.open_customer(name, merchant=True)
        module = TerminalModule.manufacture(self.algorithm)
        terminal_id = b.issue_terminal(customer, module)
        merchant = Merchant(
            name, b, customer, module, terminal_id, PosApp(module, bank, self.network, self.clock)
        )
        self.merchants[name] = merchant
        return merchant

    def add_token_user(self, name: str, bank: str, *, online: int = 0) -> TokenUser[Intermediary]:
        """A user of the token scheme: an online wallet and a phone's secure element."""
        b = self.banks[bank]
        desk = b.tokens
        assert desk is not None
        customer = b.open_customer(name)
        element = TokenElement.manufacture(self.algorithm)
        element_id = desk.issue_element(customer, element)
        if online:
            b.fund(customer, self.money(online))
        app = TokenWalletApp(element, bank, self.network)
        user = TokenUser(name, b, customer, element, element_id, app)
        self.token_users[name] = user
        return user

    def is_notarised(self, tx_id: bytes) -> bool:
        """Whether the notary recorded payment (or refund) ``tx_id``: under the pseudonym one
        of the intermediaries makes of it (the notary itself knows no payment id)."""
        return any(self.central.is_notarised(b.pseudonym(tx_id)) for b in self.banks.values())

    def token_vaults(self) -> Money:
        """Tokens the intermediaries' vault elements hold (deposits not yet answered)."""
        total = self.money(0)
        for bank in self.banks.values():
            if bank.tokens is not None:
                total = total + bank.tokens.vault.balance(self.currency)
        return total

    def revoked_elements(self) -> list[str]:
        """The token elements on the central bank's revocation list."""
        return self.central.mint.revoked_elements()

    def central_moves_in_transit(self) -> dict[str, Money]:
        """See :func:`central_moves_in_transit`."""
        return central_moves_in_transit(self.central, self.banks)

    def payments_in_transit(self) -> Money:
        """See :func:`payments_in_transit`."""
        return payments_in_transit(self.banks, self.currency)

    def audit(self, _moves: dict[str, Money] | None = None) -> Audit:
        return self._audit(_moves)[0]

    def holdings_mismatches(self, _moves: dict[str, Money] | None = None) -> list[str]:
        """Per intermediary, the central bank's record of what its customers hold must equal
        its wallets, up to payments in flight between the settlement steps:
        holdings − wallets = debited − credited − notarised out + notarised in + moves to or
        from the central bank in transit (tokens and pool loans)."""
        return self._audit(_moves)[1]

    def _audit(self, moves: dict[str, Money] | None) -> tuple[Audit, list[str]]:
        return audit_parties(self.central, self.banks, moves)

    def check_conservation(self) -> Audit:
        """Money issued equals money held, and each intermediary's wallets agree with the
        central bank's record of them; raises :class:`ConservationError` otherwise."""
        return conserved(*self._audit(None))


def central_moves_in_transit(
    central: CentralBank, banks: Mapping[str, Intermediary]
) -> dict[str, Money]:
    """Value between a wallet and the central bank after a cut connection: a withdrawal
    debited but not minted, a token redeemed but not yet credited, a pool loan drawn but not
    yet in the wallet or repaid from the wallet but not yet received. Whether the central
    bank carried a request out is read from its record of answered nonces."""
    totals: dict[str, Money] = {}
    seen = schema.central_seen
    with central.db.connect() as cb:
        for name, bank in banks.items():
            with bank.db.connect() as conn:
                moves = open_central_moves(conn)
            carried = [
                (
                    kind,
                    amount,
                    cb.execute(
                        select(seen.c.nonce).where(seen.c.sender == bank.id, seen.c.nonce == nonce)
                    ).first()
                    is not None,
                )
                for kind, amount, nonce in moves
            ]
            totals[name] = Money(moves_in_transit(carried), central.currency)
    return totals


def payments_in_transit(banks: Mapping[str, Intermediary], currency: str) -> Money:
    """Debited at the payer's intermediary and credited nowhere yet. Read from every
    ledger, because a payee's intermediary may credit from the notary's receipt before the
    payer's intermediary learns that it did."""
    d, c = schema.debits, schema.credits
    pending: dict[bytes, int] = {}
    for bank in banks.values():
        with bank.db.connect() as conn:
            for tx_id, amount in conn.execute(
                select(d.c.tx_id, d.c.amount).where(d.c.credited.is_(False))
            ):
                pending[bytes(tx_id)] = amount
    if pending:
        for bank in banks.values():
            with bank.db.connect() as conn:
                credited = conn.execute(
                    select(c.c.tx_id).where(c.c.tx_id.in_(list(pending)))
                ).scalars()
                for tx_id in credited:
                    pending.pop(bytes(tx_id), None)
    return Money(sum(pending.values()), currency)


def audit_parties(
    central: CentralBank,
    banks: Mapping[str, Intermediary],
    moves: dict[str, Money] | None = None,
) -> tuple[Audit, list[str]]:
    """The conservation audit of a central bank and its intermediaries in this process, from
    one read of every ledger (it runs after every test step)."""
    issued, tokens, pool = central.audit_totals()
    books = Books(
        issued=issued,
        tokens=tokens,
        pool=pool,
        positions=central.positions(),
        flows=central.cross_flows(),
        totals={name: bank.ledger_totals() for name, bank in banks.items()},
        moves=moves if moves is not None else central_moves_in_transit(central, banks),
        payments_in_transit=lambda: payments_in_transit(banks, central.currency),
    )
    return audit_books(books, Money.zero(central.currency))


def open_central_moves(conn: Connection) -> list[tuple[str, int, bytes]]:
    """An intermediary's open moves to or from the central bank, as (kind, amount, nonce): a
    fund (the central bank moves first) or a redeem (the wallet is debited first) whose answer
    has not come back yet, and token and pool moves not closed."""
    m, r = schema.central_moves, schema.reserve_moves
    moves = [
        (move.kind, move.amount, bytes(move.nonce))
        for move in conn.execute(select(m).where(m.c.done.is_(False)))
    ]
    moves += [
        (
            "fund" if move.amount > 0 else "redeem-online",
            abs(move.amount),
            reserve_move_nonce(move.reference),
        )
        for move in conn.execute(select(r).where(r.c.state == "pending"))
    ]
    return moves


@dataclass(frozen=True)
class Books:
    """Everything the conservation audit reads, from the central bank and every intermediary:
    gathered from the databases in one process, or from each service's back office."""

    issued: Money
    tokens: Money
    pool: Money
    positions: list[Position]
    flows: dict[str, tuple[Money, Money]]
    totals: dict[str, LedgerTotals]
    moves: dict[str, Money]  # central-bank moves in transit, per intermediary
    payments_in_transit: Callable[[], Money]  # asked only when some debit is not credited


def audit_books(books: Books, zero: Money) -> tuple[Audit, list[str]]:
    """Money issued against money held, and per intermediary, the central bank's record of
    its customers' holdings against its wallets, up to payments in flight between the
    settlement steps: holdings − wallets = debited − credited − notarised out + notarised in +
    moves to or from the central bank in transit (tokens and pool loans)."""
    totals, moves = books.totals, books.moves
    reserves = sum((p.reserve for p in books.positions), zero)
    wallets = sum((t.held for t in totals.values()), zero)
    transit = sum((t.in_transit for t in totals.values()), zero)
    if transit:
        transit = books.payments_in_transit()
    transit = sum(moves.values(), transit)
    audit = Audit(books.issued, reserves, wallets, transit, books.tokens, books.pool)
    problems = []
    for position in books.positions:
        t = totals.get(position.institution)
        if t is None:
            continue
        flow_in, flow_out = books.flows[position.institution]
        expected = t.held + t.debited - t.credited - flow_out + flow_in
        expected = expected + moves[position.institution]
        if position.holdings != expected:
            problems.append(
                f"{position.institution}: the central bank records holdings of "
                f"{position.holdings}, its ledgers account for {expected}"
            )
    return audit, problems


def conserved(audit: Audit, problems: list[str]) -> Audit:
    """``audit`` if it balances and nothing disagrees; :class:`ConservationError` otherwise."""
    if not audit.balanced:
        raise ConservationError(
            f"issued {audit.issued} but held {audit.held} (reserves {audit.reserves}, "
            f"wallets {audit.wallets}, in transit {audit.in_transit}, "
            f"tokens {audit.tokens}, pool {audit.pool})"
        )
    if problems:
        raise ConservationError("; ".join(problems))
    return audit
