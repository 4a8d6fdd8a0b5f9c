"""The automatic publication: an intermediary's service publishes a liabilities commitment
every so many seconds (``offpay serve intermediary --liabilities-every``, passed on by
``offpay network run``), besides the operator's publication on demand. A period whose wallets
do not add up to the central bank's statement (payments in flight between two settlement
steps) is skipped and logged; the next one tries again."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from offpay.errors import OffpayError
from offpay.liabilities.publish import TotalMismatch, publish, summary

if TYPE_CHECKING:
    from offpay.bank.engine import Intermediary

log = logging.getLogger("offpay.service")
EVENTS = logging.getLogger("offpay.events")


def publish_logged(bank: Intermediary) -> dict[str, object]:
    """Publish, and say so in the event log (period, total, leaves, root)."""
    published = summary(publish(bank))
    EVENTS.info("liabilities published", extra={"event": "liabilities_published", **published})
    return published


def periodic_publication(
    bank: Intermediary, every: float, halted: Callable[[], bool]
) -> Callable[[threading.Event], None]:
    """A loop for the service's background: publish every ``every`` seconds until stopped,
    never while the watchdog has halted the party (its books disagree)."""

    def loop(stop: threading.Event) -> None:
        while not stop.wait(every):
            if halted():
                log.warning("liabilities not published: the watchdog halted %s", bank.name)
                continue
            try:
                publish_logged(bank)
            except TotalMismatch as exc:
                log.info("liabilities not published this period: %s", exc.message)
            except OffpayError as exc:
                log.warning("liabilities not published: %s", exc.message)
            except Exception:
                log.exception("publishing liabilities failed")

    return loop
