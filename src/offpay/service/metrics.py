"""``/metrics`` of a service, in the Prometheus exposition format (prometheus-client).

Two kinds of figures. Events the service sees (requests by route and status, settlements and
their latency, refusals by code) are counters and histograms updated as they happen. Figures
the party's books already hold (money issued, reserves, the liquidity pool, the pending queue,
anomalies, devices, losses, the conservation status) are read from its database at scrape time
by :class:`BooksCollector`, so they are never a second copy that could drift, and they survive
a restart. Each service has its own registry: several parties may share one process (tests).

Amounts are integers in minor units (``_minor``), labelled with the currency.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, Info
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from offpay.bank.engine import Intermediary
from offpay.central.bank import CentralBank
from offpay.money import Money
from offpay.sim.network import Audit
from offpay.store import schema

log = logging.getLogger("offpay.service")

# Seconds: a settlement is a few database transactions, a cross-bank one a few HTTP hops.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
UNMATCHED = "unmatched"  # the route label of a request no route matched (bounded cardinality)


class ServiceMetrics:
    """The registry of one service and the instruments its routes update."""

    def __init__(self, name: str, party: CentralBank | Intermediary) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        role = "central-bank" if isinstance(party, CentralBank) else "intermediary"
        Info("offpay_service", "Which party this service is.", registry=r).info(
            {"party": name, "role": role, "currency": party.currency}
        )
        self.requests = Counter(
            "offpay_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "offpay_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template and method.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.settlements = Counter(
            "offpay_settlements",
            "Requests that move money and were carried out (first answers, not replays).",
            ["kind"],
            registry=r,
        )
        self.settlement_seconds = Histogram(
            "offpay_settlement_duration_seconds",
            "Time from a settling request's arrival to its answer, by kind.",
            ["kind"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.refusals = Counter(
            "offpay_refusals",
            "Messages refused, by kind and the refusal's stable code.",
            ["kind", "code"],
            registry=r,
        )
        self.anomalies_logged = Counter(
            "offpay_anomaly_events",
            "Anomalies this process saw the party record, by kind (since the process started).",
            ["kind"],
            registry=r,
        )
        r.register(BooksCollector(party))


class BooksCollector(Collector):
    """The party's books at scrape time: read-only queries, one connection per scrape."""

    def __init__(self, party: CentralBank | Intermediary) -> None:
        self.party = party

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily(
            "offpay_books_up", "1 when this scrape could read the party's books, else 0."
        )
        try:
            if isinstance(self.party, CentralBank):
                families = list(central_families(self.party))
            else:
                families = list(bank_families(self.party))
        except Exception:  # a database down must not take /metrics down with it
            log.warning("reading the books for /metrics failed", exc_info=True)
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        return [up, *families]


def _gauge(name: str, doc: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)


def central_families(central: CentralBank) -> Iterator[Metric]:
    """Issuance, reserves and holdings, tokens, the pool, the notary, revocations, and the
    conservation status as the central bank's books show it."""
    c = central.currency
    audit = central_audit(central)
    issued, tokens = audit.issued, audit.tokens
    positions = central.positions()
    pool = central.pool_status()
    with central.db.connect() as conn:
        notarised = conn.execute(select(func.count()).select_from(schema.notary)).scalar_one()
        revoked = conn.execute(
            select(func.count()).select_from(schema.revoked_devices)
        ).scalar_one()

    money = _gauge("offpay_issued_minor", "Money the central bank issued.", ["currency"])
    money.add_metric([c], issued.minor)
    yield money
    g = _gauge("offpay_tokens_outstanding_minor", "Tokens minted, not redeemed.", ["currency"])
    g.add_metric([c], tokens.minor)
    yield g
    reserve = _gauge(
        "offpay_reserve_minor", "An intermediary's reserve.", ["institution", "currency"]
    )
    holdings = _gauge(
        "offpay_holdings_minor",
        "An intermediary's customers' holdings, as the central bank records them.",
        ["institution", "currency"],
    )
    for p in positions:
        reserve.add_metric([p.institution, c], p.reserve.minor)
        holdings.add_metric([p.institution, c], p.holdings.minor)
    yield reserve
    yield holdings
    for name, value, doc in (
        ("size", pool.size, "The liquidity pool's size."),
        ("available", pool.available, "The liquidity pool, not lent out."),
        ("outstanding", pool.outstanding, "Liquidity-pool loans outstanding."),
        ("peak_outstanding", pool.peak_outstanding, "The most ever lent out at once."),
        ("drawn_total", pool.drawn_total, "Everything ever drawn from the pool."),
    ):
        g = _gauge(f"offpay_pool_{name}_minor", doc, ["currency"])
        g.add_metric([c], value.minor)
        yield g
    g = _gauge("offpay_pool_loans", "Liquidity-pool loans not repaid.")
    g.add_metric([], pool.loans)
    yield g
    g = _gauge("offpay_notarised_payments", "Payments the notary recorded.")
    g.add_metric([], notarised)
    yield g
    g = _gauge("offpay_revoked_devices", "Devices on the revocation list.")
    g.add_metric([], revoked)
    yield g
    difference = audit.issued.minor - audit.held.minor
    g = _gauge(
        "offpay_conservation_balanced",
        "1 while money issued equals money held (reserves + holdings + tokens + pool), else 0.",
    )
    g.add_metric([], 1 if audit.balanced else 0)
    yield g
    g = _gauge(
        "offpay_conservation_difference_minor",
        "Money issued minus money held; 0 when conserved.",
        ["currency"],
    )
    g.add_metric([c], difference)
    yield g


def _total(column: Any) -> Any:
    return select(func.coalesce(func.sum(column), 0)).scalar_subquery()


# One statement, so one snapshot: a payment settling between two reads cannot show as a gap.
_CENTRAL_SNAPSHOT = select(
    _total(schema.issuance.c.amount),
    _total(schema.institutions.c.reserve),
    _total(schema.institutions.c.holdings),
    _total(schema.minted.c.value),
    _total(schema.redeemed.c.value),
    _total(schema.pool.c.available),
)
_LEDGER_SNAPSHOT = select(_total(schema.accounts.c.balance), _total(schema.journal.c.delta))


def central_audit(central: CentralBank) -> Audit:
    """The conservation audit as the central bank's own books show it: every intermediary's
    customers' holdings stand for its wallets and everything in flight to them."""
    with central.db.connect() as conn:
        issued, reserves, holdings, minted, redeemed, pool = conn.execute(_CENTRAL_SNAPSHOT).one()
    m = central.currency
    return Audit(
        issued=Money(int(issued), m),
        reserves=Money(int(reserves), m),
        wallets=Money(int(holdings), m),
        in_transit=Money(0, m),
        tokens=Money(int(minted) - int(redeemed), m),
        pool=Money(int(pool), m),
    )


def bank_families(bank: Intermediary) -> Iterator[Metric]:
    """Wallets, customers, devices by status, the pending queue with its age, open shortfalls
    and refunds, anomalies by kind, losses against their bounds."""
    c = bank.currency
    ac, dv, an, rf, sf = (
        schema.accounts,
        schema.devices,
        schema.anomalies,
        schema.refunds,
        schema.shortfalls,
    )
    with bank.db.connect() as conn:
        wallets = conn.execute(
            select(ac.c.kind, func.sum(ac.c.balance), func.count()).group_by(ac.c.kind)
        ).all()
        customers = conn.execute(select(func.count()).select_from(schema.customers)).scalar_one()
        devices = conn.execute(
            select(dv.c.kind, dv.c.status, func.count()).group_by(dv.c.kind, dv.c.status)
        ).all()
        anomalies = conn.execute(select(an.c.kind, func.count()).group_by(an.c.kind)).all()
        refunds = conn.execute(select(rf.c.open, func.count()).group_by(rf.c.open)).all()
        wallets_total, journal_total = conn.execute(_LEDGER_SNAPSHOT).one()
        shortfalls = conn.execute(
            select(func.count(), func.coalesce(func.sum(sf.c.amount), 0)).where(sf.c.open.is_(True))
        ).one()
    pending = bank.pending()
    losses = bank.losses()
    now = bank.clock()

    g = _gauge(
        "offpay_wallets_minor", "Money in customers' wallets, by kind.", ["kind", "currency"]
    )
    n = _gauge("offpay_wallets", "Wallets, by kind.", ["kind"])
    for kind, total, count in wallets:
        g.add_metric([kind, c], int(total or 0))
        n.add_metric([kind], count)
    yield g
    yield n
    difference = int(wallets_total) - int(journal_total)
    g = _gauge(
        "offpay_ledger_balanced",
        "1 while the wallets hold exactly what their journal of moves says, else 0.",
    )
    g.add_metric([], 1 if difference == 0 else 0)
    yield g
    g = _gauge(
        "offpay_ledger_difference_minor",
        "The wallets' total minus the journal's; 0 when they agree.",
        ["currency"],
    )
    g.add_metric([c], difference)
    yield g
    g = _gauge("offpay_customers", "Customers of this intermediary.")
    g.add_metric([], customers)
    yield g
    g = _gauge("offpay_devices", "Devices issued, by kind and status.", ["kind", "status"])
    for kind, status, count in devices:
        g.add_metric([kind, status], count)
    yield g
    yield from _queue(pending, now, c)
    g = _gauge("offpay_open_shortfalls", "Payments waiting for the payer's shadow wallet.")
    g.add_metric([], shortfalls[0])
    yield g
    g = _gauge("offpay_open_shortfalls_minor", "Their value.", ["currency"])
    g.add_metric([c], int(shortfalls[1]))
    yield g
    g = _gauge("offpay_refunds", "Refunds, open or done.", ["state"])
    counts = {bool(is_open): count for is_open, count in refunds}
    for state, is_open in (("open", True), ("done", False)):
        g.add_metric([state], counts.get(is_open, 0))
    yield g
    g = _gauge("offpay_anomalies", "Anomalies recorded, by kind.", ["kind"])
    for kind, count in anomalies:
        g.add_metric([kind], count)
    yield g
    loss = _gauge("offpay_losses_minor", "Losses recorded against devices.", ["currency"])
    loss.add_metric([c], sum(x.amount.minor for x in losses))
    yield loss
    bound = _gauge(
        "offpay_loss_bound_minor",
        "The most the limits policy lets those devices cost (sum of the bounds).",
        ["currency"],
    )
    bound.add_metric([c], sum(x.bound.minor for x in losses))
    yield bound
    g = _gauge("offpay_losses", "Loss records.")
    g.add_metric([], len(losses))
    yield g


def _queue(pending: list[Any], now: dt.datetime, currency: str) -> Iterator[Metric]:
    """The pending-settlement queue by direction: length, value, and its oldest entry's age."""
    length = _gauge("offpay_pending_payments", "Payments waiting to settle.", ["direction"])
    value = _gauge("offpay_pending_payments_minor", "Their value.", ["direction", "currency"])
    age = _gauge(
        "offpay_pending_oldest_age_seconds",
        "How long the oldest waiting payment has waited (0 when none waits).",
        ["direction"],
    )
    for direction in ("out", "in"):
        mine = [p for p in pending if p.direction == direction]
        length.add_metric([direction], len(mine))
        value.add_metric([direction, currency], sum(p.amount.minor for p in mine))
        oldest = min((_aware(p.since) for p in mine), default=None)
        age.add_metric(
            [direction], 0 if oldest is None else max(0.0, (_aware(now) - oldest).total_seconds())
        )
    yield length
    yield value
    yield age


def _aware(t: dt.datetime) -> dt.datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=dt.UTC)
