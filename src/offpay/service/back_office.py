"""What the back-office routers (:mod:`offpay.service.admin`, :mod:`offpay.service.admin_books`,
:mod:`offpay.service.admin_tokens`)
use of the service they are mounted on, and how they answer: the routers name the service by
this protocol, so that :mod:`offpay.service.app`, which mounts them, is not imported back."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from fastapi import Response

from offpay.bank.engine import Intermediary
from offpay.central.bank import CentralBank
from offpay.service.idempotency import Answer
from offpay.service.watchdog import RETRY_AFTER_S, Watchdog

Party = CentralBank | Intermediary


class BackOffice(Protocol):
    """A party's service as its back office sees it (:class:`offpay.service.app.Service`)."""

    party: Party
    watchdog: Watchdog

    def admin(self, route: str, key: str, request: str, act: Callable[[], object]) -> Answer: ...

    def read(self, act: Callable[[], object]) -> Answer: ...


def to_response(answer: Answer) -> Response:
    headers = {}
    if answer.replayed:
        headers["Idempotent-Replayed"] = "true"
    if answer.status == 503:
        headers["Retry-After"] = str(RETRY_AFTER_S) if b'"watchdog.halted"' in answer.body else "1"
    return Response(answer.body, answer.status, headers, media_type=answer.media_type)
