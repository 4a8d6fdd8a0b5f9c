"""What a service tells its operator as it runs: an access-log line and the request metrics for
every HTTP request (an ASGI middleware), one event line per settlement, refusal and anomaly,
and the ``/metrics`` route.

Events are taken from what the party answers (the service layer sees every answer and every
refusal code) and, for anomalies, from the rows the intermediary's engine records: the engine
itself is not changed to report them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import func, select

from offpay.bank.engine import Intermediary
from offpay.central.bank import CentralBank
from offpay.service.logs import ACCESS, EVENTS
from offpay.service.metrics import UNMATCHED, ServiceMetrics
from offpay.service.watchdog import BANK_MONEY_KINDS, CENTRAL_MONEY_KINDS
from offpay.store import schema

# Requests that move money (the watchdog's lists, one per kind of party): each one carried
# out is a settlement (counted, timed, logged).
SETTLING = BANK_MONEY_KINDS | CENTRAL_MONEY_KINDS
# Messages that put a device on the network's revocation list: each is an event line too.
REVOCATIONS = frozenset({"revoke-device", "report-double-spend"})

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class AnomalyWatch:
    """The anomalies an intermediary recorded since the last look, each reported once by this
    process. Starts after the anomalies already recorded (a restart does not repeat them).

    Ids are handed out when a row is written, not when its transaction commits: on PostgreSQL a
    row may become visible after one with a higher id. The last ``LOOKBACK`` ids are looked at
    again each time, and those already reported are remembered, so such a row is not missed.
    """

    LOOKBACK = 64

    def __init__(self, bank: Intermediary) -> None:
        self.bank = bank
        self.lock = threading.Lock()
        with bank.db.connect() as conn:
            self.last = int(conn.execute(select(func.max(schema.anomalies.c.id))).scalar() or 0)
        self.seen = set(self._ids_since(self.last - self.LOOKBACK))

    def _ids_since(self, floor: int) -> list[int]:
        an = schema.anomalies
        with self.bank.db.connect() as conn:
            return list(conn.execute(select(an.c.id).where(an.c.id > floor)).scalars())

    def new(self) -> list[Any]:
        an = schema.anomalies
        with self.lock:
            fresh = [i for i in self._ids_since(self.last - self.LOOKBACK) if i not in self.seen]
            if not fresh:
                return []
            with self.bank.db.connect() as conn:
                rows = conn.execute(select(an).where(an.c.id.in_(fresh)).order_by(an.c.id)).all()
            self.last = max(self.last, *fresh)
            self.seen = {i for i in (*self.seen, *fresh) if i > self.last - self.LOOKBACK}
        return list(rows)


class Observer:
    """The metrics and event lines of one service."""

    def __init__(self, name: str, party: CentralBank | Intermediary) -> None:
        self.name = name
        self.metrics = ServiceMetrics(name, party)
        self.anomalies = AnomalyWatch(party) if isinstance(party, Intermediary) else None

    def message(
        self,
        kind: str,
        sender: str | None,
        nonce: bytes | None,
        status: int,
        code: str | None,
        replayed: bool,
        seconds: float,
    ) -> None:
        """One message answered: a settlement or refusal event line, its metrics, and any
        anomaly the party recorded meanwhile."""
        fields = {
            "party": self.name,
            "kind": kind,
            "sender": sender,
            "nonce": None if nonce is None else nonce.hex(),
            "status": status,
            "replayed": replayed,
            "duration_ms": round(seconds * 1000, 3),
        }
        if status < 400:
            if kind in SETTLING:
                if not replayed:
                    self.metrics.settlements.labels(kind).inc()
                    self.metrics.settlement_seconds.labels(kind).observe(seconds)
                EVENTS.info("settlement", extra={"event": "settlement", **fields})
            elif kind in REVOCATIONS and not replayed:
                EVENTS.warning("revocation", extra={"event": "revocation", **fields})
        elif status < 500:
            self.metrics.refusals.labels(kind, code or "unknown").inc()
            EVENTS.info("refusal", extra={"event": "refusal", "code": code, **fields})
        self.report_anomalies()

    def report_anomalies(self) -> None:
        if self.anomalies is None:
            return
        for row in self.anomalies.new():
            self.metrics.anomalies_logged.labels(row.kind).inc()
            EVENTS.warning(
                "anomaly",
                extra={
                    "event": "anomaly",
                    "party": self.name,
                    "kind": row.kind,
                    "device": row.device_id,
                    "tx_id": None if row.tx_id is None else bytes(row.tx_id).hex(),
                    "detail": row.detail,
                },
            )

    def scrape(self) -> bytes:
        self.report_anomalies()  # one recorded by the background retries, say
        return generate_latest(self.metrics.registry)


class AccessLog:
    """ASGI middleware: per request, the access-log line and the request metrics, labelled by
    the route's template (``/v1/admin/payments/{tx_id}``), never by the raw path."""

    def __init__(self, app: ASGIApp, observer: Observer) -> None:
        self.app = app
        self.observer = observer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # if the app fails before answering, the server answers 500
        recorded = False

        def record() -> None:
            nonlocal recorded
            if recorded:
                return
            recorded = True
            self.record(scope, status, time.perf_counter() - started)

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                record()  # before the last bytes leave: the client never sees an unlogged answer
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            record()

    def record(self, scope: Scope, status: int, seconds: float) -> None:
        route = getattr(scope.get("route"), "path", None) or UNMATCHED
        method = scope.get("method", "")
        m = self.observer.metrics
        m.requests.labels(route, method, str(status)).inc()
        m.request_seconds.labels(route, method).observe(seconds)
        client = scope.get("client")
        ACCESS.info(
            "request",
            extra={
                "party": self.observer.name,
                "http_method": method,
                "route": route,
                "path": scope.get("path", ""),
                "status": status,
                "duration_ms": round(seconds * 1000, 3),
                "client": None if client is None else f"{client[0]}:{client[1]}",
            },
        )


def add_metrics(app: FastAPI, observer: Observer) -> None:
    """``GET /metrics`` (no admin token: counts and totals only, see docs/observability.md)
    and the access-log middleware."""

    @app.get(
        "/metrics",
        tags=["service"],
        summary="Prometheus metrics: requests, settlements, the party's books.",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
    )
    def metrics() -> Response:
        return Response(observer.scrape(), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(AccessLog, observer=observer)  # type: ignore[arg-type]
