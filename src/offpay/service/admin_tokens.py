"""Back-office routes of the token scheme (behind the admin token): provision a customer's
secure element, and what the intermediary's vault element holds.

An element is provisioned like a card is personalised: the phone's element keeps its key and
sends only the public key; the intermediary certifies it (:meth:`TokenDesk.certify_element`)
and answers what the element is provisioned with. The only logic here is turning JSON into
arguments.
"""

from __future__ import annotations

import base64

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from offpay.bank.engine import Intermediary
from offpay.service.admin import PROBLEMS, Id, Key, public_key_of
from offpay.service.back_office import BackOffice, to_response


class NewElement(BaseModel):
    customer_id: Id
    public_key: str = Field(max_length=8192, description="The element's key, DER, base64.")


class IssuedElement(BaseModel):
    element_id: str
    chain: list[str] = Field(description="The element's certificate chain, DER, base64.")
    root: str = Field(description="The central bank's root certificate, DER, base64.")
    mint_chain: list[str] = Field(description="The minting key's chain, DER, base64.")
    policy: str = Field(description="The current signed limits policy, CBOR, base64.")
    intake_key: str = Field(
        description="The intermediary's signed intake key, CBOR, base64: the element seals "
        "its deposits and renewals to it."
    )


class Vault(BaseModel):
    value: int = Field(description="Minor units in tokens the vault element holds.")
    tokens: int


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def tokens_router(service: BackOffice) -> APIRouter:
    router = APIRouter(prefix="/v1/admin", tags=["back office"], responses=PROBLEMS)  # type: ignore[arg-type]
    party = service.party
    if not isinstance(party, Intermediary) or party.tokens is None:
        return router
    bank, desk = party, party.tokens

    @router.post("/token-elements", response_model=IssuedElement, summary="Provision an element.")
    def issue_element(body: NewElement, key: Key) -> Response:
        def act() -> dict[str, object]:
            element_id, chain = desk.certify_element(
                body.customer_id, public_key_of(body.public_key)
            )
            return {
                "element_id": element_id,
                "chain": [_b64(c) for c in chain],
                "root": _b64(bank.root_der),
                "mint_chain": [_b64(c) for c in desk.mint_chain],
                "policy": _b64(bank.policy()[0].to_bytes()),  # as a card's personalisation
                "intake_key": _b64(bank.intake.signed().to_bytes()),
            }

        return to_response(service.admin("token-elements", key, body.model_dump_json(), act))

    @router.get("/token-vault", response_model=Vault, summary="What the vault element holds.")
    def vault() -> Response:
        def read() -> dict[str, int]:
            return {
                "value": desk.vault.balance(bank.currency).minor,
                "tokens": len(desk.vault.tokens()),
            }

        return to_response(service.read(read))

    return router
