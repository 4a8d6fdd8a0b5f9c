"""The central bank (DESIGN §2): the only issuer, the root CA, and the notary in which an
offline payment can be recorded once, network-wide.

It keeps, per intermediary, a ``reserve`` (money the intermediary holds itself) and
``holdings`` (money in that intermediary's customer wallets). When the notary records a payment
between customers of two intermediaries, holdings move with it, so the central bank can audit
that no intermediary's wallets hold more than it was given.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import tenacity
from sqlalchemy import ColumnElement, Connection, Engine, ScalarSelect, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from offpay.crypto.keys import Algorithm, PublicKey
from offpay.crypto.pki import Authority, Credential, Role, TrustStore
from offpay.crypto.revocation import RevocationList
from offpay.errors import InsufficientFunds, NotFound, Refused, ReplayError
from offpay.liabilities.statement import holdings_statement
from offpay.money import Money
from offpay.store import schema
from offpay.store.bulk import insert_rows
from offpay.store.database import DEFAULT_URL, open_database
from offpay.store.schema import written_at
from offpay.store.seen import answered, remember
from offpay.tokens.mint import MintingService
from offpay.wire.codec import Message
from offpay.wire.envelope import Signed, open_signed, sign
from offpay.wire.messages import (
    BatchItem,
    BatchResult,
    NotariseBatch,
    NotariseItem,
    NotariseRequest,
    PoolRequest,
    ReserveTransfer,
    RevokeRequest,
    SettlementResult,
    SettlementStatus,
)

NOTARY_ID = "central-bank/notary"
NOTARY_COLUMNS = (
    "pseudonym",
    "commitment",
    "payer_institution",
    "payee_institution",
    "amount",
    "recorded_by",
)
POOL = "(liquidity pool)"  # the issuance record's name for money created into the pool
CONFLICT_ATTEMPTS = 8  # tries of a notarisation that racing requests keep beating
CONFLICT_PAUSE_S = 0.005  # the first pause's ceiling, doubled each attempt, with full jitter
CONFLICT_MAX_PAUSE_S = 0.2


def _until_no_race(what: str, record: Callable[[], bytes]) -> bytes:
    """Run ``record`` (one transaction) again while a racing request wins, with growing,
    jittered pauses (racers fall out of step): each attempt reads what the racers committed.
    When the attempts are spent, the request was not carried out and is not the sender's
    fault: ``service.conflict`` says "send the same bytes again" (HTTP 409, never kept as the
    first answer), where a business refusal would be final and kept under its key."""
    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(CONFLICT_ATTEMPTS),
        wait=tenacity.wait_random_exponential(
            multiplier=CONFLICT_PAUSE_S, max=CONFLICT_MAX_PAUSE_S
        ),
        retry=tenacity.retry_if_exception_type(IntegrityError),
        reraise=True,
    )
    try:
        return retrying(record)
    except IntegrityError:
        raise Refused(
            f"the notary could not record {what}: concurrent requests kept conflicting; "
            "send the same request again",
            code="service.conflict",
        ) from None


Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _sum(column: ColumnElement[int]) -> ScalarSelect[int]:
    return select(func.coalesce(func.sum(column), 0)).scalar_subquery()


_CENTRAL_TOTALS = select(
    _sum(schema.issuance.c.amount),
    _sum(schema.minted.c.value),
    _sum(schema.redeemed.c.value),
    _sum(schema.pool.c.available),
)


@dataclass(frozen=True)
class Position:
    institution: str
    reserve: Money
    holdings: Money


@dataclass(frozen=True)
class PoolStatus:
    """The liquidity pool (policy ``pool``): its size, what is not lent out, the exposure."""

    size: Money
    available: Money
    outstanding: Money
    peak_outstanding: Money
    drawn_total: Money
    loans: int


class CentralBank:
    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        currency: str = "SEK",
        algorithm: Algorithm = Algorithm.ED25519,
        clock: Clock = utc_now,
        root: Authority | None = None,
        mint: Credential | None = None,
    ) -> None:
        self.currency = currency
        self.algorithm = algorithm
        self.clock = clock
        self.db: Engine = open_database(url, schema.central)
        self.root = root if root is not None else Authority.root(clock(), algorithm)
        self.trust = TrustStore(self.root.credential.chain[0])
        self.notary: Credential = self.root.credential_for(
            NOTARY_ID, Role.NOTARY, clock(), algorithm
        )
        self._revocations: Signed[RevocationList] | None = None
        self.trust.revoked |= set(self.revoked_devices())
        self.mint = MintingService(self, mint)

    @property
    def root_der(self) -> bytes:
        return self.root.credential.chain[0]

    # -- administration (in the central bank's own offices) -----------------------------------

    def admit(self, name: str, ca_key: PublicKey) -> tuple[bytes, ...]:
        """Certify an intermediary's CA key and open its reserve account."""
        chain = self.root.issue(f"{name} ca", Role.CA, ca_key, self.clock(), institution=name)
        with self.db.begin() as conn:
            exists = conn.execute(
                select(schema.institutions.c.name).where(schema.institutions.c.name == name)
            ).first()
            if exists is None:
                conn.execute(insert(schema.institutions).values(name=name, reserve=0, holdings=0))
        return chain

    def issue(self, institution: str, amount: Money) -> None:
        """Create money: credit an intermediary's reserve and record the issuance."""
        self._currency(amount)
        if amount.minor <= 0:
            raise Refused("issuance must be positive", code="central.bad_amount")
        with self.db.begin() as conn:
            done = conn.execute(
                update(schema.institutions)
                .where(schema.institutions.c.name == institution)
                .values(reserve=schema.institutions.c.reserve + amount.minor)
            )
            if done.rowcount != 1:
                raise NotFound(f"no intermediary named {institution}")
            conn.execute(
                insert(schema.issuance).values(
                    institution=institution, amount=amount.minor, currency=amount.currency
                )
            )

    # -- revocation (DESIGN §5: detect and contain) ------------------------------------------

    def revoked_devices(self) -> list[str]:
        r = schema.revoked_devices
        with self.db.connect() as conn:
            return list(conn.execute(select(r.c.device).order_by(r.c.version)).scalars())

    def revoke(self, device: str, reason: str) -> None:
        """Add ``device`` to the network's revocation list (once)."""
        try:
            with self.db.begin() as conn:
                conn.execute(
                    insert(schema.revoked_devices).values(device=device, reason=reason[:256])
                )
        except IntegrityError:
            pass  # revoked already
        self.trust.revoked.add(device)
        self._revocations = None

    def revocation_list(self) -> Signed[RevocationList]:
        """The current list, signed once per version."""
        if self._revocations is None:
            devices = tuple(self.revoked_devices())
            listing = RevocationList(NOTARY_ID, len(devices), devices)
            self._revocations = sign(listing, self.notary)  # type: ignore[assignment]
        assert self._revocations is not None
        return self._revocations

    def _revoke_request(self, data: bytes) -> bytes:
        """An intermediary revokes one of the devices it issued; the answer is the new list."""
        req, ident = open_signed(
            data, RevokeRequest, self.trust, Role.ENGINE, receiver=NOTARY_ID, now=self.clock()
        )
        if req.device.split(":")[1:2] != [ident.institution]:
            raise Refused(
                "an intermediary may revoke only devices it issued", code="central.not_issuer"
            )
        self.revoke(req.device, req.reason)
        return self.revocation_list().to_bytes()

    def fund_pool(self, amount: Money) -> None:
        """Create money into the liquidity pool that intermediaries may borrow from."""
        self._currency(amount)
        if amount.minor <= 0:
            raise Refused("a pool must be funded with a positive amount", code="central.bad_amount")
        p = schema.pool
        with self.db.begin() as conn:
            if conn.execute(select(p.c.id)).first() is None:
                conn.execute(
                    insert(p).values(
                        id=1, size=0, available=0, outstanding=0, peak_outstanding=0, drawn_total=0
                    )
                )
            conn.execute(
                update(p).values(
                    size=p.c.size + amount.minor, available=p.c.available + amount.minor
                )
            )
            conn.execute(
                insert(schema.issuance).values(
                    institution=POOL, amount=amount.minor, currency=amount.currency
                )
            )

    def pool_status(self) -> PoolStatus:
        with self.db.connect() as conn:
            row = conn.execute(select(schema.pool)).first()
            loans = conn.execute(select(func.count()).select_from(schema.pool_loans)).scalar_one()
        m = self._money
        if row is None:
            return PoolStatus(m(0), m(0), m(0), m(0), m(0), 0)
        return PoolStatus(
            m(row.size),
            m(row.available),
            m(row.outstanding),
            m(row.peak_outstanding),
            m(row.drawn_total),
            int(loans),
        )

    def _money(self, minor: int) -> Money:
        return Money(int(minor), self.currency)

    def _currency(self, amount: Money) -> None:
        if amount.currency != self.currency:
            raise Refused(f"the central bank issues {self.currency}", code="central.currency")

    # -- reading --------------------------------------------------------------------------------

    def issued(self) -> Money:
        with self.db.connect() as conn:
            rows = conn.execute(select(schema.issuance.c.amount)).scalars().all()
        return Money(sum(rows), self.currency)

    def audit_totals(self) -> tuple[Money, Money, Money]:
        """Issued, held in tokens, and in the pool not lent out: in one query."""
        with self.db.connect() as conn:
            issued, minted, redeemed, pool = conn.execute(_CENTRAL_TOTALS).one()
        m = self._money
        return m(issued), m(minted - redeemed), m(pool)

    def positions(self) -> list[Position]:
        with self.db.connect() as conn:
            rows = conn.execute(select(schema.institutions).order_by("name")).all()
        return [
            Position(r.name, Money(r.reserve, self.currency), Money(r.holdings, self.currency))
            for r in rows
        ]

    def cross_flows(self) -> dict[str, tuple[Money, Money]]:
        """Per intermediary: notarised value in from and out to other intermediaries."""
        n = schema.notary
        flows = {p.institution: [0, 0] for p in self.positions()}
        with self.db.connect() as conn:
            rows = conn.execute(
                select(n.c.payer_institution, n.c.payee_institution, func.sum(n.c.amount))
                .where(n.c.payer_institution != n.c.payee_institution)
                .group_by(n.c.payer_institution, n.c.payee_institution)
            ).all()
        for payer, payee, total in rows:
            flows[payee][0] += int(total)
            flows[payer][1] += int(total)
        return {
            name: (Money(i, self.currency), Money(o, self.currency))
            for name, (i, o) in flows.items()
        }

    def is_notarised(self, pseudonym: bytes) -> bool:
        """Whether a payment is recorded under ``pseudonym`` (the notary knows no payment id)."""
        n = schema.notary
        with self.db.connect() as conn:
            return (
                conn.execute(select(n.c.pseudonym).where(n.c.pseudonym == pseudonym)).first()
                is not None
            )

    def notarised_count(self) -> int:
        with self.db.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(schema.notary)).scalar_one())

    # -- requests from intermediaries (signed, addressed, at most once) -----------------------

    def handlers(self) -> dict[str, Callable[[bytes], bytes]]:
        """Every request kind the central bank answers (the services route each one)."""
        return {
            "reserve-transfer": self._reserve_transfer,
            "notarise": self._notarise,
            "notarise-batch": self._notarise_batch,
            "revoke-device": self._revoke_request,
            "revocation-list": lambda _data: self.revocation_list().to_bytes(),
            "pool-draw": lambda data: self._pool(data, draw=True),
            "pool-repay": lambda data: self._pool(data, draw=False),
            "mint-token": self.mint.mint,
            "redeem-token": self.mint.redeem,
            "report-double-spend": self.mint.report,
            # issue 18: the holdings a liabilities commitment's total must equal
            "holdings-statement": lambda data: holdings_statement(self, data, NOTARY_ID),
        }

    def handle(self, kind: str, data: bytes) -> bytes:
        handler = self.handlers().get(kind)
        if handler is None:
            raise Refused(
                f"the central bank does not handle {kind!r}", code="central.unknown_request"
            )
        return handler(data)

    def _reserve_transfer(self, data: bytes) -> bytes:
        req, ident = open_signed(
            data, ReserveTransfer, self.trust, Role.ENGINE, receiver=NOTARY_ID, now=self.clock()
        )
        self._currency(req.amount)
        t = schema.institutions
        with self.db.begin() as conn:
            cached = answered(conn, schema.central_seen, ident.id, req.nonce)
            if cached is not None:
                return cached
            row = conn.execute(select(t).where(t.c.name == ident.institution)).first()
            if row is None:
                raise NotFound(f"no intermediary named {ident.institution}")
            if row.reserve - req.amount.minor < 0 or row.holdings + req.amount.minor < 0:
                raise InsufficientFunds(f"{ident.institution} cannot move {req.amount}")
            conn.execute(
                update(t)
                .where(t.c.name == ident.institution)
                .values(
                    reserve=t.c.reserve - req.amount.minor,
                    holdings=t.c.holdings + req.amount.minor,
                )
            )
            response = self._result(ident.id, req, SettlementStatus.DONE, "")
            remember(conn, schema.central_seen, ident.id, req.nonce, response)
        return response

    def _pool(self, data: bytes, *, draw: bool) -> bytes:
        """Lend to, or take back from, an intermediary's customers' holdings. A draw the pool
        cannot cover is answered ``short`` (the payment stays queued), never partly lent."""
        req, ident = open_signed(
            data, PoolRequest, self.trust, Role.ENGINE, receiver=NOTARY_ID, now=self.clock()
        )
        self._currency(req.amount)
        if req.amount.minor <= 0 or req.kind != ("draw" if draw else "repay"):
            raise Refused("a pool move must be of a positive amount", code="central.bad_amount")
        p, loans, t = schema.pool, schema.pool_loans, schema.institutions
        institution, minor = ident.institution, req.amount.minor
        with self.db.begin() as conn:
            cached = answered(conn, schema.central_seen, ident.id, req.nonce)
            if cached is not None:
                return cached
            pool = conn.execute(select(p)).first()
            loan = conn.execute(select(loans).where(loans.c.loan_id == req.loan_id)).first()
            if loan is not None and loan.institution != institution:
                raise Refused("that loan belongs to another intermediary", code="central.loan")
            if draw:
                if loan is not None:
                    raise Refused("that payment already has a loan", code="central.loan")
                if pool is None or pool.available < minor:
                    response = self._result(
                        ident.id, req, SettlementStatus.SHORT, "central.pool_exhausted"
                    )
                    remember(conn, schema.central_seen, ident.id, req.nonce, response)
                    return response
                outstanding = pool.outstanding + minor
                conn.execute(
                    update(p).values(
                        available=p.c.available - minor,
                        outstanding=outstanding,
                        peak_outstanding=max(pool.peak_outstanding, outstanding),
                        drawn_total=p.c.drawn_total + minor,
                    )
                )
                conn.execute(
                    insert(loans).values(
                        loan_id=req.loan_id, institution=institution, drawn=minor, repaid=0
                    )
                )
                delta = minor
            else:
                if loan is None or loan.drawn - loan.repaid < minor:
                    raise Refused("repays more than the loan owes", code="central.loan")
                conn.execute(
                    update(p).values(
                        available=p.c.available + minor, outstanding=p.c.outstanding - minor
                    )
                )
                conn.execute(
                    update(loans)
                    .where(loans.c.loan_id == req.loan_id)
                    .values(repaid=loans.c.repaid + minor)
                )
                delta = -minor
            moved = conn.execute(
                update(t)
                .where(t.c.name == institution, t.c.holdings + delta >= 0)
                .values(holdings=t.c.holdings + delta)
            )
            if moved.rowcount != 1:
                raise InsufficientFunds(f"{institution}'s customers do not hold {req.amount}")
            response = self._result(ident.id, req, SettlementStatus.DONE, "")
            remember(conn, schema.central_seen, ident.id, req.nonce, response)
        return response

    def _result(
        self,
        to: str,
        req: NotariseRequest | ReserveTransfer | PoolRequest,
        status: SettlementStatus,
        code: str,
    ) -> bytes:
        """A signed answer that names exactly what it answers: a payee's intermediary credits
        only on a receipt whose commitment and amount match the payment in hand."""
        if isinstance(req, NotariseRequest):
            tx_id, evidence = req.pseudonym, req.commitment
        elif isinstance(req, PoolRequest):
            tx_id, evidence = req.loan_id, b""
        else:
            tx_id, evidence = b"", b""
        result = SettlementResult(
            NOTARY_ID, to, req.nonce, tx_id, evidence, req.amount, status, code, "", b""
        )
        return sign(result, self.notary).to_bytes()

    def _notarise(self, data: bytes) -> bytes:
        """Record a payment once, network-wide, and move holdings from the payer's intermediary
        to the payee's. Only the payer's intermediary, which debited the payer, may ask."""
        req, ident = open_signed(
            data, NotariseRequest, self.trust, Role.ENGINE, receiver=NOTARY_ID, now=self.clock()
        )
        self._currency(req.amount)
        if req.amount.minor <= 0:
            raise Refused("a payment must be of a positive amount", code="central.bad_amount")
        if ident.institution != req.payer_institution:
            raise Refused(
                "only the payer's intermediary may notarise a payment", code="central.not_payer"
            )
        n, t = schema.notary, schema.institutions

        def record() -> bytes:
            with self.db.begin() as conn:
                cached = answered(conn, schema.central_seen, ident.id, req.nonce)
                if cached is not None:
                    return cached
                existing = conn.execute(select(n).where(n.c.pseudonym == req.pseudonym)).first()
                if existing is not None:
                    status = (
                        SettlementStatus.ALREADY
                        if bytes(existing.commitment) == req.commitment
                        else SettlementStatus.REFUSED
                    )
                    code = "" if status is SettlementStatus.ALREADY else "central.conflict"
                    response = self._result(ident.id, req, status, code)
                    remember(conn, schema.central_seen, ident.id, req.nonce, response)
                    return response
                conn.execute(
                    insert(n).values(
                        pseudonym=req.pseudonym,
                        commitment=req.commitment,
                        payer_institution=req.payer_institution,
                        payee_institution=req.payee_institution,
                        amount=req.amount.minor,
                        recorded_by=ident.id,
                    )
                )
                payer, payee = req.payer_institution, req.payee_institution
                # Both rows in one order (by name) whichever way the payment goes: payments in
                # opposite directions notarised at once would otherwise each lock one row and
                # wait for the other (a deadlock the database breaks by failing one of them).
                for name in sorted({payer, payee}) if payer != payee else ():
                    if name == payer:
                        moved = conn.execute(
                            update(t)
                            .where(t.c.name == payer, t.c.holdings >= req.amount.minor)
                            .values(holdings=t.c.holdings - req.amount.minor)
                        )
                        if moved.rowcount != 1:
                            raise InsufficientFunds(f"{payer}'s customers do not hold {req.amount}")
                    else:
                        done = conn.execute(
                            update(t)
                            .where(t.c.name == payee)
                            .values(holdings=t.c.holdings + req.amount.minor)
                        )
                        if done.rowcount != 1:
                            raise NotFound(f"no intermediary named {payee}")
                response = self._result(ident.id, req, SettlementStatus.DONE, "")
                remember(conn, schema.central_seen, ident.id, req.nonce, response)
                return response

        # A concurrent request that recorded the same payment (or used the same nonce) first
        # makes the insert fail: the constraint held. The next attempt answers from what that
        # request recorded.
        return _until_no_race("the payment", record)

    def _notarise_batch(self, data: bytes) -> bytes:
        """:meth:`_notarise` for the payments of one upload at once: one transaction, one
        lookup of the ids already recorded, one insert, one holdings move per pair of
        intermediaries, and one signed answer over the list (the receipt of each payment)."""
        req, ident = open_signed(
            data, NotariseBatch, self.trust, Role.ENGINE, receiver=NOTARY_ID, now=self.clock()
        )
        for item in req.items:
            self._currency(item.amount)
            if item.amount.minor <= 0:
                raise Refused("a payment must be of a positive amount", code="central.bad_amount")
            if ident.institution != item.payer_institution:
                raise Refused(
                    "only the payer's intermediary may notarise a payment",
                    code="central.not_payer",
                )
        n = schema.notary

        def record() -> bytes:
            with self.db.begin() as conn:
                cached = answered(conn, schema.central_seen, ident.id, req.nonce)
                if cached is not None:
                    return cached
                ids = list({item.pseudonym for item in req.items})
                recorded = {
                    bytes(r.pseudonym): bytes(r.commitment)
                    for r in conn.execute(
                        select(n.c.pseudonym, n.c.commitment).where(n.c.pseudonym.in_(ids))
                    )
                }
                items, rows, moves = self._batch_items(req.items, recorded, ident.id)
                insert_rows(conn, n, NOTARY_COLUMNS, rows, {"recorded_at": written_at()})
                self._move_holdings(conn, moves)
                result = BatchResult(NOTARY_ID, ident.id, req.nonce, tuple(items), ())
                response = sign(result, self.notary).to_bytes()
                remember(conn, schema.central_seen, ident.id, req.nonce, response)
                return response

        # Each attempt reads what the racing requests committed; several syncs overlapping one
        # batch may each take a turn, so it is tried more than twice.
        return _until_no_race("the payments", record)

    @staticmethod
    def _batch_items(
        requested: tuple[NotariseItem, ...], recorded: dict[bytes, bytes], recorder: str
    ) -> tuple[
        list[BatchItem], list[tuple[bytes, bytes, str, str, int, str]], dict[tuple[str, str], int]
    ]:
        """Each item's answer, the notary rows to insert, and the value that moves between
        each pair of intermediaries. A pseudonym seen twice is answered like a second request."""
        items: list[BatchItem] = []
        rows: list[tuple[bytes, bytes, str, str, int, str]] = []
        moves: dict[tuple[str, str], int] = {}
        for item in requested:
            known = recorded.get(item.pseudonym)
            if known is None:
                recorded[item.pseudonym] = item.commitment
                rows.append(
                    (
                        item.pseudonym,
                        item.commitment,
                        item.payer_institution,
                        item.payee_institution,
                        item.amount.minor,
                        recorder,
                    )
                )
                if item.payer_institution != item.payee_institution:
                    pair = (item.payer_institution, item.payee_institution)
                    moves[pair] = moves.get(pair, 0) + item.amount.minor
                status, code = SettlementStatus.DONE, ""
            elif known == item.commitment:
                status, code = SettlementStatus.ALREADY, ""
            else:
                status, code = SettlementStatus.REFUSED, "central.conflict"
            items.append(BatchItem(item.pseudonym, item.commitment, item.amount, status, code, -1))
        return items, rows, moves

    def _move_holdings(self, conn: Connection, moves: dict[tuple[str, str], int]) -> None:
        """Holdings follow notarised payments between intermediaries, never below zero. Each
        institution's row is updated once, by its net change, in name order: two batches going
        opposite ways then never wait on each other (PostgreSQL found the deadlock)."""
        t = schema.institutions
        net: dict[str, int] = {}
        for (payer, payee), minor in moves.items():
            net[payer] = net.get(payer, 0) - minor
            net[payee] = net.get(payee, 0) + minor
        for name in sorted(net):
            delta = net[name]
            if delta == 0:
                continue
            done = conn.execute(
                update(t)
                .where(t.c.name == name, t.c.holdings + delta >= 0)
                .values(holdings=t.c.holdings + delta)
            )
            if done.rowcount != 1:
                exists = conn.execute(select(t.c.name).where(t.c.name == name)).first()
                if exists is None:
                    raise NotFound(f"no intermediary named {name}")
                raise InsufficientFunds(
                    f"{name}'s customers do not hold {Money(-delta, self.currency)}"
                )


def open_result(
    data: bytes,
    trust: TrustStore,
    request: NotariseRequest | ReserveTransfer | Message,
    role: Role,
    institution: str | None = None,
) -> SettlementResult:
    """The answer to ``request``: signed by the party with ``role`` (and institution) that was
    asked, addressed to the asker, and echoing the request's nonce, so that no other answer,
    replayed or from another party, can stand in for it."""
    result, _ = open_signed(
        Signed.from_bytes(data),
        SettlementResult,
        trust,
        role,
        receiver=getattr(request, "sender", None),
        institution=institution,
    )
    if result.nonce != getattr(request, "nonce", None):
        raise ReplayError("the answer is not for this request")
    tx_id = getattr(request, "tx_id", getattr(request, "pseudonym", None))
    if tx_id is not None and result.tx_id != tx_id:
        raise ReplayError("the answer is about another payment")
    commitment = getattr(request, "commitment", None)
    if commitment is not None and result.evidence != commitment:
        raise ReplayError("the answer is about another payment")
    return result
