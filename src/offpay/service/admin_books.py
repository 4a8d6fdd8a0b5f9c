"""Back-office routes for driving and inspecting a served network (behind the admin token):
a party's books, one payment's settlement records, a card reported lost, a new limits policy.

Each route calls the party's own method or :mod:`offpay.bank.books`; the only logic here is
turning JSON into arguments.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Response
from pydantic import BaseModel, Field, create_model

from offpay.bank.books import bank_books, bank_payment, central_books, notary_record, policy_record
from offpay.bank.engine import Intermediary
from offpay.central.bank import CentralBank
from offpay.errors import Refused
from offpay.policy import LIMITS, Unit, revised_policy
from offpay.service.admin import PROBLEMS, Id, Key
from offpay.service.back_office import BackOffice, to_response

TxId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="The payment's id, hex.")]
Pseudonym = Annotated[
    str,
    Path(pattern=r"^[0-9a-f]{32}$", description="The payment's pseudonym at the notary, hex."),
]
Count = Annotated[int | None, Field(ge=0, le=10**6)]
Minor = Annotated[int | None, Field(ge=0, le=10**15, description="Minor units.")]


class LostCard(BaseModel):
    customer_id: Id
    device_id: Id


class NewPolicyBase(BaseModel):
    """The limits to change (the others stay as in the policy in force); the version is the
    next one unless given, and must be above the one in force."""

    version: Annotated[int | None, Field(ge=1, le=2**31 - 1)] = None
    lift: list[str] = Field(
        default_factory=list, description="Optional limits to lift: no limit from now on."
    )


# One field per limit of the policy (offpay.policy.LIMITS), in minor units or a count.
NewPolicy = create_model(  # type: ignore[call-overload]
    "NewPolicy",
    __base__=NewPolicyBase,
    **{f.name: (Minor if f.unit is Unit.AMOUNT else Count, None) for f in LIMITS},
)


def books_router(service: BackOffice) -> APIRouter:

    router = APIRouter(prefix="/v1/admin", tags=["back office"], responses=PROBLEMS)  # type: ignore[arg-type]
    party = service.party

    def write(route: str, key: str, body: BaseModel, act: Any) -> Response:
        return to_response(service.admin(route, key, body.model_dump_json(), act))

    if isinstance(party, Intermediary):
        bank = party

        @router.get("/books", summary="Customers, wallets, devices, queue, anomalies, losses.")
        def books() -> Response:
            return to_response(
                service.read(lambda: {**bank_books(bank), "watchdog": service.watchdog.status()})
            )

        @router.get("/payments/{tx_id}", summary="One payment's debit, credit and queues here.")
        def payment(tx_id: TxId) -> Response:
            return to_response(service.read(lambda: bank_payment(bank, bytes.fromhex(tx_id))))

        @router.post("/lost", response_model=dict[str, str], summary="A card reported lost.")
        def lost(body: LostCard, key: Key) -> Response:
            def act() -> dict[str, str]:
                bank.report_lost(body.customer_id, body.device_id)
                return {}

            return write("lost", key, body, act)

        @router.post("/policy", summary="Sign and publish a new limits policy.")
        def policy(body: NewPolicy, key: Key) -> Response:  # type: ignore[valid-type]
            def act() -> dict[str, Any]:
                current = bank.current_policy()
                if current is None:
                    raise Refused("this intermediary has no policy yet", code="policy.missing")
                limits: dict[str, int | None] = body.model_dump(
                    exclude={"version", "lift"}, exclude_none=True
                )
                limits.update(dict.fromkeys(body.lift))
                new = revised_policy(current[1], limits, body.version)
                bank.publish_policy(new)
                return {"policy": policy_record(new)}

            return write("policy", key, body, act)

        @router.post(
            "/release-expired",
            response_model=dict[str, int],
            summary="Give back what blocked cards hold once their window has passed.",
        )
        def release_expired(key: Key) -> Response:
            def act() -> dict[str, int]:
                return {"released": bank.containment.release_expired()}

            return to_response(service.admin("release-expired", key, "", act))

    if isinstance(party, CentralBank):
        central = party

        @router.get("/books", summary="Issuance, positions, the liquidity pool, revocations.")
        def central_ledger_books() -> Response:
            return to_response(
                service.read(
                    lambda: {**central_books(central), "watchdog": service.watchdog.status()}
                )
            )

        @router.get(
            "/payments/{pseudonym}",
            summary="The notary's record of one payment, by the pseudonym it knows it by.",
        )
        def notarised(pseudonym: Pseudonym) -> Response:
            named = bytes.fromhex(pseudonym)
            return to_response(service.read(lambda: notary_record(central, named)))

    return router
