"""The back office of each service: what a bank's branch or the central bank's own offices do
(open customers, issue cards and terminals, issue money) and what an auditor reads. Behind the
service's admin token; every request that changes something carries an Idempotency-Key.

Each route calls the party's own method; the only logic here is turning JSON into arguments.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Annotated

from cryptography.hazmat.primitives.serialization import load_der_public_key
from fastapi import APIRouter, Header, Query, Response
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from offpay.bank.engine import Intermediary
from offpay.central.bank import CentralBank
from offpay.crypto.keys import PublicKey, algorithm_of
from offpay.errors import OffpayError, Refused
from offpay.money import Money
from offpay.service.back_office import BackOffice, to_response
from offpay.service.idempotency import KEY_PATTERN
from offpay.service.problems import STATUS_TEXT, Problem
from offpay.sim.network import open_central_moves
from offpay.store import schema

MAX_AMOUNT = 10**15  # minor units in one back-office move: far above any real one
Key = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        pattern=KEY_PATTERN,
        description="Chosen by the client for this request; send it again with a retry.",
    ),
]
Amount = Annotated[int, Field(ge=1, le=MAX_AMOUNT, description="Minor units (öre).")]
Name = Annotated[str, Field(min_length=1, max_length=80)]
Id = Annotated[str, Field(min_length=1, max_length=200)]
Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{0,128}$")]
PROBLEMS = {s: {"model": Problem, "description": STATUS_TEXT[s]} for s in (400, 401, 404, 422)}


class NewCustomer(BaseModel):
    name: Name
    merchant: bool = False


class CustomerId(BaseModel):
    customer_id: str


class Funding(BaseModel):
    customer_id: Id
    amount: Amount


class NewCard(BaseModel):
    customer_id: Id
    public_key: str = Field(max_length=8192, description="The card's key, DER, base64.")
    pin: str = Field(max_length=12)


class IssuedCard(BaseModel):
    card_id: str
    personalisation: str = Field(description="The signed personalisation, base64.")


class NewTerminal(BaseModel):
    merchant_id: Id
    public_key: str = Field(max_length=8192, description="The module's key, DER, base64.")


class IssuedTerminal(BaseModel):
    terminal_id: str
    institution: str
    root: str
    chain: list[str]
    policy: str
    intake_key: str | None = None  # the signed key the module seals its uploads to (issue 19)


class Balance(BaseModel):
    account_id: str
    balance: int
    currency: str


class Shortfall(BaseModel):
    tx_id: str
    device_id: str
    amount: int


class OpenMove(BaseModel):
    kind: str
    amount: int
    nonce: str


class BankLedger(BaseModel):
    """What the conservation audit needs from an intermediary (minor units)."""

    held: int
    debited: int
    credited: int
    in_transit: int
    uncredited: dict[str, int] = Field(description="Debited here, not known credited: id → amount.")
    open_moves: list[OpenMove]


class LossRow(BaseModel):
    tx_id: str | None
    amount: int
    bound: int = Field(description="The most the limits policy lets the device cost.")
    detail: str


class Incidents(BaseModel):
    """What the intermediary knows against one of its devices (the attack suite reads it)."""

    device_id: str
    status: str
    anomalies: list[str] = Field(description="Kinds of anomaly recorded against the device.")
    losses: list[LossRow]


class Revoked(BaseModel):
    devices: list[str]


class TxIds(BaseModel):
    tx_ids: list[Hex] = Field(max_length=10_000)


class Finished(BaseModel):
    finished: int


class Issuance(BaseModel):
    institution: Name
    amount: Amount


class Revocation(BaseModel):
    party: Id
    reason: Name


class Position(BaseModel):
    reserve: int
    holdings: int
    flow_in: int
    flow_out: int


class CentralLedger(BaseModel):
    """What the conservation audit needs from the central bank (minor units)."""

    issued: int
    tokens: int
    pool: int
    notarised: int
    positions: dict[str, Position]


class Nonces(BaseModel):
    sender: Id
    nonces: list[Hex] = Field(max_length=10_000)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise Refused(f"{what} is not base64", code="http.invalid_request") from None


def public_key_of(text: str) -> PublicKey:
    """A DER public key sent as base64, refused unless of a supported algorithm."""
    try:
        key = load_der_public_key(_unb64(text, "public_key"))
        algorithm_of(key)
    except (ValueError, OffpayError):
        raise Refused("not a supported public key", code="bank.bad_key") from None
    return key  # type: ignore[return-value]


def admin_router(service: BackOffice) -> APIRouter:

    router = APIRouter(prefix="/v1/admin", tags=["back office"], responses=PROBLEMS)  # type: ignore[arg-type]
    party = service.party

    def write(route: str, key: str, body: BaseModel | None, act: Callable[[], object]) -> Response:
        request = "" if body is None else body.model_dump_json()
        return to_response(service.admin(route, key, request, act))

    if isinstance(party, Intermediary):
        bank = party

        @router.post("/customers", response_model=CustomerId, summary="Open a customer.")
        def open_customer(body: NewCustomer, key: Key) -> Response:
            def act() -> dict[str, str]:
                try:
                    return {"customer_id": bank.open_customer(body.name, merchant=body.merchant)}
                except IntegrityError:
                    raise Refused(
                        f"{bank.name} has a customer named {body.name} already",
                        code="bank.customer_exists",
                    ) from None

            return write("customers", key, body, act)

        @router.post("/fund", response_model=dict[str, str], summary="Fund an online wallet.")
        def fund(body: Funding, key: Key) -> Response:
            def act() -> dict[str, str]:
                bank.fund(body.customer_id, Money(body.amount, bank.currency), reference=key)
                return {}

            return write("fund", key, body, act)

        @router.post("/cards", response_model=IssuedCard, summary="Personalise a card.")
        def issue_card(body: NewCard, key: Key) -> Response:
            def act() -> dict[str, str]:
                card_id, perso = bank.personalise_card(
                    body.customer_id, public_key_of(body.public_key), body.pin
                )
                return {"card_id": card_id, "personalisation": _b64(perso)}

            return write("cards", key, body, act)

        @router.post("/terminals", response_model=IssuedTerminal, summary="Certify a terminal.")
        def issue_terminal(body: NewTerminal, key: Key) -> Response:
            def act() -> dict[str, object]:
                der = _unb64(body.public_key, "public_key")
                terminal_id, chain, policy = bank.certify_terminal(body.merchant_id, der)
                return {
                    "terminal_id": terminal_id,
                    "institution": bank.name,
                    "root": _b64(bank.root_der),
                    "chain": [_b64(c) for c in chain],
                    "policy": _b64(policy.to_bytes()),
                    "intake_key": _b64(bank.intake.signed().to_bytes()),
                }

            return write("terminals", key, body, act)

        @router.get("/balance", response_model=Balance, summary="An account's balance.")
        def balance(account_id: Annotated[str, Query(max_length=200)]) -> Response:
            return to_response(
                service.read(
                    lambda: {
                        "account_id": account_id,
                        "balance": bank.balance(account_id).minor,
                        "currency": bank.currency,
                    }
                )
            )

        @router.get("/shortfalls", response_model=list[Shortfall], summary="Payments waiting.")
        def shortfalls() -> Response:
            return to_response(
                service.read(
                    lambda: [
                        {"tx_id": tx.hex(), "device_id": device, "amount": amount.minor}
                        for tx, device, amount in bank.open_shortfalls()
                    ]
                )
            )

        @router.get("/ledger", response_model=BankLedger, summary="Totals for the audit.")
        def ledger() -> Response:
            return to_response(service.read(lambda: _bank_ledger(bank)))

        @router.post("/credited", response_model=TxIds, summary="Which payments we credited.")
        def credited(body: TxIds) -> Response:
            return to_response(service.read(lambda: {"tx_ids": _credited(bank, body.tx_ids)}))

        @router.get(
            "/incidents", response_model=Incidents, summary="Anomalies and losses of a device."
        )
        def incidents(device_id: Annotated[str, Query(max_length=200)]) -> Response:
            return to_response(service.read(lambda: _incidents(bank, device_id)))

        @router.post("/retry-pending", response_model=Finished, summary="Finish half-done work.")
        def retry_pending(key: Key) -> Response:
            return write("retry-pending", key, None, lambda: {"finished": bank.retry_pending()})

    if isinstance(party, CentralBank):
        central = party

        @router.post("/issue", response_model=dict[str, str], summary="Issue money.")
        def issue(body: Issuance, key: Key) -> Response:
            def act() -> dict[str, str]:
                central.issue(body.institution, Money(body.amount, central.currency))
                return {}

            return write("issue", key, body, act)

        @router.post("/revoke", response_model=dict[str, int], summary="Revoke a party.")
        def revoke(body: Revocation, key: Key) -> Response:
            def act() -> dict[str, int]:
                central.revoke(body.party, body.reason)
                return {"version": len(central.revoked_devices())}

            return write("revoke", key, body, act)

        @router.get("/ledger", response_model=CentralLedger, summary="Totals for the audit.")
        def central_ledger() -> Response:
            return to_response(service.read(lambda: _central_ledger(central)))

        @router.get("/revoked", response_model=Revoked, summary="The revocation list.")
        def revoked() -> Response:
            return to_response(service.read(lambda: {"devices": central.revoked_devices()}))

        @router.post("/carried", response_model=Nonces, summary="Which requests were carried out.")
        def carried(body: Nonces) -> Response:
            return to_response(
                service.read(lambda: {"sender": body.sender, "nonces": _carried(central, body)})
            )

    return router


def _bank_ledger(bank: Intermediary) -> dict[str, object]:
    t = bank.ledger_totals()
    d = schema.debits
    with bank.db.connect() as conn:
        uncredited = {
            bytes(tx).hex(): amount
            for tx, amount in conn.execute(
                select(d.c.tx_id, d.c.amount).where(d.c.credited.is_(False))
            )
        }
        moves = open_central_moves(conn)
    return {
        "held": t.held.minor,
        "debited": t.debited.minor,
        "credited": t.credited.minor,
        "in_transit": t.in_transit.minor,
        "uncredited": uncredited,
        "open_moves": [{"kind": k, "amount": a, "nonce": n.hex()} for k, a, n in moves],
    }


def _incidents(bank: Intermediary, device_id: str) -> dict[str, object]:
    status = str(bank.device(device_id).status)  # NotFound for another bank's device
    return {
        "device_id": device_id,
        "status": status,
        "anomalies": [kind for kind, who, _ in bank.anomalies() if who == device_id],
        "losses": [
            {
                "tx_id": None if loss.tx_id is None else loss.tx_id.hex(),
                "amount": loss.amount.minor,
                "bound": loss.bound.minor,
                "detail": loss.detail,
            }
            for loss in bank.losses()
            if loss.device == device_id
        ],
    }


def _credited(bank: Intermediary, tx_ids: list[str]) -> list[str]:
    c = schema.credits
    wanted = [bytes.fromhex(t) for t in tx_ids if len(t) % 2 == 0]
    if not wanted:
        return []
    with bank.db.connect() as conn:
        found = conn.execute(select(c.c.tx_id).where(c.c.tx_id.in_(wanted))).scalars()
        return [bytes(tx).hex() for tx in found]


def _central_ledger(central: CentralBank) -> dict[str, object]:
    issued, tokens, pool = central.audit_totals()
    flows = central.cross_flows()
    return {
        "issued": issued.minor,
        "tokens": tokens.minor,
        "pool": pool.minor,
        "notarised": central.notarised_count(),
        "positions": {
            p.institution: {
                "reserve": p.reserve.minor,
                "holdings": p.holdings.minor,
                "flow_in": flows[p.institution][0].minor,
                "flow_out": flows[p.institution][1].minor,
            }
            for p in central.positions()
        },
    }


def _carried(central: CentralBank, body: Nonces) -> list[str]:
    seen = schema.central_seen
    wanted = [bytes.fromhex(n) for n in body.nonces if len(n) % 2 == 0]
    if not wanted:
        return []
    with central.db.connect() as conn:
        found = conn.execute(
            select(seen.c.nonce).where(seen.c.sender == body.sender, seen.c.nonce.in_(wanted))
        ).scalars()
        return [bytes(n).hex() for n in found]
