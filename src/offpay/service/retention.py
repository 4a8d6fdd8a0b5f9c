"""How long a service keeps its first answers (issue 19, point 5; docs/retention.md).

A first answer (:mod:`offpay.service.idempotency`) is kept so that a retry under the same
Idempotency-Key gets the same bytes. Clients retry within seconds to minutes
(:mod:`offpay.service.client`); a device or an operator may retry a request after a lost
answer within days. Past the retention window an answer is deleted, in batches, by a thread of
each service and by ``offpay network prune-answers``.

Forgetting an answer never lets a request act twice: a retry after the window reaches the
party again, whose own tables decide. Every message that moves value carries a nonce the party
remembers with its answer (``seen_requests``), every device request a counter, and those are
NOT pruned: nothing makes an old
signed message invalid (signatures carry no time, and ``open_signed(..., now=...)`` checks only
the certificates' validity, years long), so a forgotten nonce would let a replay through.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable

from sqlalchemy import Engine, Table, delete, select, tuple_

from offpay.errors import OffpayError
from offpay.service.datadir import CENTRAL, NetworkConfig
from offpay.store import schema
from offpay.store.database import open_database

log = logging.getLogger("offpay.retention")

ANSWERS_KEPT_DAYS = 7  # default retention window of first answers
PRUNE_BATCH = 500  # answers deleted per transaction: a big backlog never holds a long lock
PRUNE_EVERY_S = 3600.0  # how often a service prunes
ADMIN = "admin"  # the sender under which a service keeps its back office's answers


class RetentionError(OffpayError):
    code = "service.retention"


def retention_window(days: float) -> dt.timedelta:
    """The window ``days`` long; at least one day (a retry after a lost answer must still
    find it), at most ten years."""
    if not 1 <= days <= 3650:
        raise RetentionError(
            f"answers must be kept between 1 and 3650 days, not {days:g}",
            code="service.retention.bad_window",
        )
    return dt.timedelta(days=days)


def prune_answers(
    db: Engine, table: Table, now: dt.datetime, window: dt.timedelta, batch: int = PRUNE_BATCH
) -> int:
    """Delete the answers to messages kept before ``now - window``, ``batch`` at a time;
    returns how many. Back-office answers (sender ``admin``) are kept: some back-office changes
    (opening a customer, issuing money) have no other guard than their key."""
    cutoff = now - window
    pruned = 0
    key = tuple_(table.c.sender, table.c.key)
    while True:
        with db.begin() as conn:
            old = conn.execute(
                select(table.c.sender, table.c.key)
                .where(table.c.created_at < cutoff, table.c.sender != ADMIN)
                .order_by(table.c.created_at)
                .limit(batch)
            ).all()
            if old:
                conn.execute(delete(table).where(key.in_([tuple(r) for r in old])))
        pruned += len(old)
        if len(old) < batch:
            return pruned


def keep_pruning(
    db: Engine,
    table: Table,
    window: dt.timedelta,
    clock: Callable[[], dt.datetime],
    every: float = PRUNE_EVERY_S,
) -> Callable[[threading.Event], None]:
    """A service's background work: prune at start, then every ``every`` seconds."""

    def prune(stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                pruned = prune_answers(db, table, clock(), window)
                if pruned:
                    log.info("pruned %d first answers older than %s", pruned, window)
            except Exception:
                log.exception("pruning first answers failed")
            stop.wait(every)

    return prune


def prune_network(
    network: NetworkConfig, window: dt.timedelta, now: dt.datetime | None = None
) -> dict[str, int]:
    """``offpay network prune-answers``: each party's first answers older than ``window``
    pruned in its own database (whether its service runs or not); how many, by party."""
    now = now or dt.datetime.now(dt.UTC)
    pruned = {}
    for name in network.urls:
        central = name == CENTRAL
        db = open_database(network.database(name), schema.central if central else schema.bank)
        try:
            table = schema.central_http_answers if central else schema.bank_http_answers
            pruned[name] = prune_answers(db, table, now, window)
        finally:
            db.dispose()
    return pruned
