"""Back-office routes of the watchdog (behind the admin token): its state and alarms, and the
operator's clear, which re-runs the full check first (:mod:`offpay.service.watchdog`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from offpay.service.admin import PROBLEMS, Key
from offpay.service.back_office import BackOffice, to_response


class Clear(BaseModel):
    reason: Annotated[str, Field(max_length=500)] = ""
    force: bool = Field(
        default=False,
        description="Clear even though the books still disagree; needs a reason, logged.",
    )


def watchdog_router(service: BackOffice) -> APIRouter:
    router = APIRouter(prefix="/v1/admin/watchdog", tags=["back office"], responses=PROBLEMS)  # type: ignore[arg-type]
    watchdog = service.watchdog

    @router.get("", summary="Whether the watchdog halted money moves, and its alarms.")
    def state() -> Response:
        return to_response(
            service.read(lambda: {**watchdog.status(), "alarms": watchdog.history()})
        )

    @router.post("/clear", summary="Clear the alarm once the books agree again (full check).")
    def clear(body: Clear, key: Key) -> Response:
        def act() -> dict[str, Any]:
            return watchdog.clear(body.reason, force=body.force)

        return to_response(service.admin("watchdog-clear", key, body.model_dump_json(), act))

    return router
