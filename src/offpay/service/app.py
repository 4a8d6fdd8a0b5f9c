"""One HTTP service per party: a route per request kind, whose body is the signed CBOR envelope
and whose answer is the party's answer, byte for byte.

Routers stay thin: a route authenticates the sender at the door (the envelope's certificate
chain leads to the central bank's root, the sender is not revoked, the signature verifies),
applies the idempotency contract (:mod:`offpay.service.idempotency`) and calls the party's
``handle(kind, data)`` — the same code the in-process network calls. A refusal is a 4xx answer
as an RFC 9457 problem (``application/problem+json``) with the refusal's stable ``code``; no
exception becomes a 500.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Annotated, Any

import anyio
import cbor2
from fastapi import APIRouter, Depends, FastAPI, Header, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from offpay.bank.engine import Intermediary
from offpay.central.bank import CentralBank
from offpay.crypto.keys import verify_signature
from offpay.crypto.pki import Identity
from offpay.errors import OffpayError
from offpay.liabilities import routes as liabilities_routes
from offpay.service.admin import admin_router
from offpay.service.admin_books import books_router
from offpay.service.admin_watchdog import watchdog_router
from offpay.service.back_office import Party, to_response
from offpay.service.docs import add_docs
from offpay.service.idempotency import KEY_PATTERN, Answer, AnswerStore, request_digest
from offpay.service.observe import Observer, add_metrics
from offpay.service.problems import (
    PROBLEM_JSON,
    RETRYABLE,
    STATUS_TEXT,
    Problem,
    problem_body,
    problem_of,
    problem_responses_in_openapi,
)
from offpay.service.watchdog import Watchdog, WatchdogCollector
from offpay.store import schema
from offpay.wire.codec import MAX_MESSAGE_BYTES
from offpay.wire.envelope import DOMAIN, Signed

CBOR = "application/cbor"
JSON = "application/json"
THREADS = 128  # sync handlers wait on other services: enough threads that waiting never starves

log = logging.getLogger("offpay.service")


@dataclass(frozen=True)
class Kind:
    """A request kind a party handles, as its own route."""

    name: str
    summary: str
    mutating: bool = True
    between_services: bool = False  # sent by another party: mutual TLS required
    only_from: str | None = None  # over TLS, only this party's client certificate is let in


CENTRAL_BANK = "central-bank"  # the central bank's party name (offpay.service.datadir.CENTRAL)

CENTRAL_KINDS = (
    Kind("reserve-transfer", "Move money between an intermediary's reserve and its customers."),
    Kind("notarise", "Record an offline payment once, network-wide; holdings move with it."),
    Kind("notarise-batch", "Record an upload's payments at once; one signed receipt for all."),
    Kind("revoke-device", "An intermediary revokes a device it issued; answers the new list."),
    Kind("revocation-list", "The current signed revocation list (empty body).", mutating=False),
    Kind("pool-draw", "Borrow from the liquidity pool for a payment that waits."),
    Kind("pool-repay", "Repay a liquidity-pool loan."),
    Kind("mint-token", "Mint a token to an address (token scheme)."),
    Kind("redeem-token", "Redeem a token and record the history it consumed (token scheme)."),
    Kind("report-double-spend", "Report a token spent twice (token scheme)."),
    Kind("holdings-statement", "An intermediary's holdings, signed: what its commitment totals."),
)

BANK_KINDS = (
    Kind("card-session", "A card's online session (top-up, defund, sync); answers an instruction."),
    Kind("card-confirmation", "A card confirms it applied an instruction; the answer is empty."),
    Kind("terminal-upload", "A terminal module uploads its payments; answers an instruction."),
    Kind(
        "debit-request",
        "Another intermediary presents a payment one of our customers made.",
        between_services=True,
    ),
    Kind(
        "credit-request",
        "The payer's intermediary credits our customer, with the receipt.",
        between_services=True,
    ),
    Kind(
        "refund-request",
        "The payee's intermediary gives back a payment its payee declined.",
        between_services=True,
    ),
    Kind(
        "debit-batch",
        "Another intermediary presents an upload's payments of our customers.",
        between_services=True,
    ),
    Kind(
        "credit-batch",
        "The payer's intermediary credits our customers, with one receipt.",
        between_services=True,
    ),
    Kind(
        "liabilities-proof",
        "A card's sync session; answers its instruction with the customer's inclusion proof.",
    ),
    Kind(
        "disclosure-request",
        "The central bank asks for a notarised payment's evidence in a dispute (logged).",
        between_services=True,
        only_from=CENTRAL_BANK,
    ),
)

TOKEN_KINDS = (
    Kind("token-withdraw", "A token wallet withdraws tokens from its online wallet."),
    Kind("token-deposit", "A token wallet deposits tokens into its online wallet."),
    Kind("token-vault-address", "A fresh address of the vault element, for a deposit."),
    Kind("token-sync", "A token wallet's online moment: policy, revocations and time."),
)


def opened(party: Party, body: bytes) -> bytes:
    """The signed message a device sealed to its intermediary for the relay app to carry
    (issue 19, offpay.bank.intake_key); any other body as it is. Its envelope names the sender
    and the nonce that make a retry get its first answer."""
    intake = getattr(party, "intake", None)
    return body if intake is None else bytes(intake.open(body))


def kinds_of(party: Party) -> tuple[Kind, ...]:
    if isinstance(party, CentralBank):
        return CENTRAL_KINDS
    return BANK_KINDS + (TOKEN_KINDS if party.tokens is not None else ())


class AuthError(OffpayError):
    code = "auth.denied"


class Service:
    """A party behind HTTP: the door, the first answers, and the call into the party."""

    def __init__(self, name: str, party: Party, admin_token: str) -> None:
        self.name = name
        self.party = party
        self.kinds = kinds_of(party)
        self.admin_token = admin_token
        table = (
            schema.central_http_answers
            if isinstance(party, CentralBank)
            else schema.bank_http_answers
        )
        self.store = AnswerStore(party.db, table)
        self.observer = Observer(name, party)
        self.watchdog = Watchdog(name, party)  # issue 18: halts money moves if books disagree
        self.watchdog.start()
        self.observer.metrics.registry.register(WatchdogCollector(self.watchdog))

    # -- messages between parties ---------------------------------------------------------------

    def message(self, kind: Kind, body: bytes, key: str | None) -> Answer:
        """The party's answer to one message; its event line and metrics on the way out."""
        started = time.perf_counter()
        answer, sender, nonce = self._answer(kind, body, key)
        self.observer.message(
            kind.name,
            sender,
            nonce,
            answer.status,
            _code(answer),
            answer.replayed,
            time.perf_counter() - started,
        )
        return answer

    def _answer(
        self, kind: Kind, body: bytes, key: str | None
    ) -> tuple[Answer, str | None, bytes | None]:
        if not kind.mutating:
            return self.call(lambda: self.party.handle(kind.name, body)), None, None
        if key is None:
            return (
                _refusal(
                    OffpayError(
                        "a mutating request needs an Idempotency-Key header",
                        code="http.idempotency_key_missing",
                    )
                ),
                None,
                None,
            )
        try:
            body = opened(self.party, body)
            sender, nonce = self.authenticate(body)
        except OffpayError as exc:
            return _refusal(exc), None, None
        except Exception:  # a certificate the X.509 parser chokes on, deep inside
            return (
                _refusal(
                    OffpayError(
                        "the sender's certificate chain cannot be read",
                        code="crypto.bad_certificate",
                    )
                ),
                None,
                None,
            )

        def act() -> bytes:
            # A retry still gets its first answer; only a new request is refused while halted.
            self.watchdog.guard(kind.name)
            return self.party.handle(kind.name, body)

        digest = request_digest(kind.name, body)
        with self.store.locks.hold(("key", sender.id, key), ("nonce", sender.id, nonce or key)):
            answer = self.once(sender.id, key, kind.name, digest, act, CBOR)
        if answer.status < 400 and not answer.replayed:
            self.watchdog.after(kind.name)
        return answer, sender.id, nonce

    def authenticate(self, body: bytes) -> tuple[Identity, bytes | None]:
        """The sender, proved by the envelope: a chain to our root, not revoked, a signature
        that verifies. Who may send which kind is the handler's decision."""
        envelope = Signed.from_bytes(body)
        ident = self.party.trust.verify_chain(envelope.chain, self.party.clock())
        verify_signature(ident.public_key, envelope.signature, DOMAIN + envelope.payload)
        return ident, _nonce_of(envelope.payload)

    # -- the back office ------------------------------------------------------------------------

    def check_admin(self, credentials: HTTPAuthorizationCredentials | None) -> None:
        if credentials is None:
            raise AuthError("this route needs the service's admin token", code="auth.required")
        if not hmac.compare_digest(credentials.credentials.encode(), self.admin_token.encode()):
            raise AuthError("the admin token is not this service's")

    def admin(self, route: str, key: str, request: str, act: Callable[[], object]) -> Answer:
        """A back-office request that changes something: once per key, like a message."""

        def guarded() -> bytes:
            self.watchdog.guard(route)
            return _json(act())

        digest = request_digest(route, request.encode())
        with self.store.locks.hold(("key", "admin", key)):
            answer = self.once("admin", key, route, digest, guarded, JSON)
        if answer.status < 400 and not answer.replayed:
            self.watchdog.after(route)
        return answer

    def read(self, act: Callable[[], object]) -> Answer:
        """A back-office question: nothing changes, so nothing is kept."""
        return self.call(lambda: _json(act()), JSON)

    # -- shared ---------------------------------------------------------------------------------

    def once(
        self,
        sender: str,
        key: str,
        kind: str,
        digest: bytes,
        act: Callable[[], bytes],
        media_type: str,
    ) -> Answer:
        try:
            first = self.store.first(sender, key, kind, digest)
            if first is not None:
                return first
            answer = self.call(act, media_type)
            if answer.status < 500 and _code(answer) not in RETRYABLE:
                self.store.keep(sender, key, kind, digest, answer)
            return answer
        except Exception as exc:  # the first answers' table itself failed
            return _failure(exc)

    def call(self, act: Callable[[], bytes], media_type: str = CBOR) -> Answer:
        """The party's answer, or the refusal it stands for; never an exception."""
        try:
            return Answer(200, act(), media_type)
        except Exception as exc:
            return _failure(exc)


def _failure(exc: Exception) -> Answer:
    """What an exception means for the sender: a refusal with its code, or "retry"."""
    if isinstance(exc, OffpayError):
        return _refusal(exc)
    if isinstance(exc, OperationalError):  # a lock timeout, a deadlock broken, a lost link
        log.warning("database busy", exc_info=exc)
        return _refusal(OffpayError("the database is busy; retry", code="service.busy"))
    if isinstance(exc, IntegrityError):  # a race the engine did not expect
        log.warning("concurrent write", exc_info=exc)
        return _refusal(
            OffpayError("a concurrent request got there first; retry", code="service.conflict")
        )
    if isinstance(exc, DataError):
        return _refusal(
            OffpayError("a value is out of the storable range", code="store.out_of_range")
        )
    log.error("unexpected failure", exc_info=exc)
    return Answer(
        500,
        problem_body("service.internal", "the service failed; nothing was answered", 500),
        PROBLEM_JSON,
    )


def _json(value: object) -> bytes:
    return json.dumps(value).encode()


def _code(answer: Answer) -> str | None:
    if answer.media_type not in (JSON, PROBLEM_JSON) or answer.status < 400:
        return None
    try:
        return str(json.loads(answer.body)["code"])
    except (ValueError, KeyError, TypeError):
        return None


def _refusal(error: OffpayError) -> Answer:
    status, body = problem_of(error)
    return Answer(status, body, PROBLEM_JSON)


def _nonce_of(payload: bytes) -> bytes | None:
    """The message's nonce, if it has one: payloads are CBOR maps naming their fields."""
    try:
        nonce = cbor2.loads(payload).get("nonce")
    except Exception:  # a signed payload that is not a map: the handler refuses it
        return None
    return nonce if isinstance(nonce, bytes) else None


async def read_body(request: Request) -> bytes:
    """The body, refused early if larger than any message may be."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_MESSAGE_BYTES):
        raise OffpayError("the body is larger than a message may be", code="http.too_large")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_MESSAGE_BYTES:
            raise OffpayError("the body is larger than a message may be", code="http.too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def _problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"model": Problem, "description": STATUS_TEXT[s]} for s in statuses}


BEARER = HTTPBearer(auto_error=False, description="The service's admin token.")
AdminCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]

MESSAGE_PROBLEMS = (400, 401, 403, 404, 409, 413, 415, 422, 502, 503)

IdempotencyKey = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        pattern=KEY_PATTERN,
        description="Chosen by the client for one request and sent again with each retry of "
        "the same bytes; required on every mutating request.",
    ),
]


def _message_route(service: Service, kind: Kind) -> Callable[..., Any]:
    async def answer(request: Request, key: str | None) -> Response:
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind.mutating and media != CBOR:
            raise OffpayError(
                "the body must be a signed message as application/cbor",
                code="http.unsupported_media_type",
            )
        tls = request.scope.get("extensions", {}).get("tls")
        if kind.between_services and tls is not None and not tls.get("client_cert_name"):
            # Over TLS, only a party of the network (its certificate verified by the TLS
            # layer, not revoked) sends what parties send each other; phones never do.
            raise AuthError(
                f"{kind.name} comes only from a party of the network: connect with its TLS "
                "client certificate (mutual TLS)",
                code="auth.client_certificate_required",
            )
        if kind.only_from and tls is not None and tls.get("client_cert_name") != kind.only_from:
            raise AuthError(
                f"{kind.name} comes only from the {kind.only_from}: connect with its TLS "
                "client certificate",
                code="auth.wrong_client_certificate",
            )
        body = await read_body(request)
        return to_response(await anyio.to_thread.run_sync(service.message, kind, body, key))

    async def mutating(request: Request, idempotency_key: IdempotencyKey) -> Response:
        return await answer(request, idempotency_key)

    async def reading(request: Request) -> Response:
        return await answer(request, None)

    route = mutating if kind.mutating else reading
    route.__name__ = kind.name.replace("-", "_")
    return route


def _validation_problem(exc: RequestValidationError) -> OffpayError:
    errors = exc.errors()
    if any(
        e.get("type") == "missing" and tuple(e.get("loc", ())) == ("header", "Idempotency-Key")
        for e in errors
    ):
        return OffpayError(
            "a mutating request needs an Idempotency-Key header",
            code="http.idempotency_key_missing",
        )
    where = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in errors
    )
    return OffpayError(f"invalid request: {where}", code="http.invalid_request")


def create_app(service: Service, *, background: Callable[[threading.Event], None] | None = None):
    """The FastAPI application of one party. ``background`` runs in a thread while the
    service is up (an intermediary finishing half-done settlements), and is told to stop."""

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = THREADS
        stop = threading.Event()
        worker = None
        if background is not None:
            worker = threading.Thread(target=background, args=(stop,), daemon=True)
            worker.start()
        try:
            yield
        finally:
            stop.set()
            if worker is not None:
                worker.join(timeout=5)

    app = FastAPI(
        title=f"offpay {service.name}",
        version="1",
        description=(
            "Signed CBOR envelopes in, signed CBOR answers out: the same messages as the "
            "in-process network. Refusals are RFC 9457 problems (`application/problem+json`) "
            "whose `code` names the refusal."
        ),
        lifespan=lifespan,
        docs_url=None,  # served by add_docs from the package's own assets
        redoc_url=None,
    )
    add_docs(app)
    add_metrics(app, service.observer)

    @app.exception_handler(OffpayError)
    async def offpay_error(_request: Request, exc: OffpayError) -> Response:
        return to_response(_refusal(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> Response:
        return to_response(_refusal(_validation_problem(exc)))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        path = request.url.path
        code, message = {
            404: ("http.not_found", f"this service has no route {path}; its routes are at /docs"),
            405: ("http.method_not_allowed", f"{path} does not take {request.method}"),
        }.get(exc.status_code, ("http.invalid_request", f"{path}: {exc.detail}"))
        return to_response(
            Answer(exc.status_code, problem_body(code, message, exc.status_code), PROBLEM_JSON)
        )

    @app.get("/v1/health", tags=["service"], summary="Whether the service is up, and who it is.")
    def health() -> dict[str, str]:
        return {"party": service.name, "status": "ok"}

    messages = APIRouter(prefix="/v1/messages", tags=["messages"])
    for kind in service.kinds:
        messages.add_api_route(
            f"/{kind.name}",
            _message_route(service, kind),
            methods=["POST"],
            summary=kind.summary,
            response_class=Response,
            responses={
                200: {
                    "description": "The party's signed answer (empty for a confirmation).",
                    "content": {CBOR: {"schema": {"type": "string", "format": "binary"}}},
                },
                **_problem_responses(*MESSAGE_PROBLEMS),
            },
            openapi_extra={
                "requestBody": {
                    "required": kind.mutating,
                    "content": {CBOR: {"schema": {"type": "string", "format": "binary"}}},
                }
            },
        )
    app.include_router(messages)

    from offpay.service.admin_tokens import tokens_router

    def admin_auth(credentials: AdminCredentials) -> None:
        service.check_admin(credentials)

    app.include_router(admin_router(service), dependencies=[Depends(admin_auth)])
    app.include_router(books_router(service), dependencies=[Depends(admin_auth)])
    app.include_router(tokens_router(service), dependencies=[Depends(admin_auth)])
    app.include_router(watchdog_router(service), dependencies=[Depends(admin_auth)])
    if isinstance(service.party, Intermediary):  # issue 18: proof of liabilities
        app.include_router(liabilities_routes.public_router(service.party))
        app.include_router(
            liabilities_routes.admin_router(service), dependencies=[Depends(admin_auth)]
        )

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = problem_responses_in_openapi(FastAPI.openapi(app))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
