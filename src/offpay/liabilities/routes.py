"""HTTP routes of the proof of liabilities on an intermediary's service: the published signed
commitment (public: anyone may check it), and the operator's publication (admin token). A
customer's proof comes with a card-signed sync, as the ``liabilities-proof`` message."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from offpay.bank.engine import Intermediary
from offpay.liabilities.publish import commitment
from offpay.liabilities.schedule import publish_logged
from offpay.service.admin import PROBLEMS, Key
from offpay.service.back_office import BackOffice, to_response

CBOR = "application/cbor"


def public_router(bank: Intermediary) -> APIRouter:
    router = APIRouter(prefix="/v1/liabilities", tags=["liabilities"], responses=PROBLEMS)  # type: ignore[arg-type]

    @router.get(
        "/commitment",
        summary="The newest (or a given period's) signed liabilities commitment, CBOR.",
        response_class=Response,
    )
    def published(period: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None) -> Response:
        return Response(commitment(bank, period)[1], media_type=CBOR)

    return router


def admin_router(service: BackOffice) -> APIRouter:
    router = APIRouter(prefix="/v1/admin/liabilities", tags=["back office"], responses=PROBLEMS)  # type: ignore[arg-type]
    party = service.party
    assert isinstance(party, Intermediary)
    bank = party

    @router.post("/publish", summary="Publish a signed commitment for a new period.")
    def publish_now(key: Key) -> Response:
        return to_response(
            service.admin("liabilities-publish", key, "", lambda: publish_logged(bank))
        )

    return router
