"""Step 1 of settlement, verification: signed bytes in, a verified payment or a typed refusal
out (:func:`offpay.bank.evidence.verify_payment`, pure).

An intermediary remembers the payments it verified, so that the same signed payment reaching
it again at a later hop of one sync is not verified twice: the
:class:`~offpay.bank.verifier.Verifier` keeps them by the SHA-256 of their signed bytes, as
small records, never the payload; a big upload is verified across processes by its pool
(:meth:`~offpay.bank.verifier.Verifier.check_all`, used by :mod:`offpay.bank.batch`).
"""

from __future__ import annotations

from typing import Protocol

from offpay.bank.verifier import Verifier
from offpay.crypto.pki import TrustStore
from offpay.wire.envelope import Signed
from offpay.wire.messages import OfflinePayment


class Verifying(Protocol):
    """What verification needs of its intermediary, read at each call (a test may swap the
    verifier for one with another number of workers)."""

    trust: TrustStore
    verifier: Verifier


class VerifiedPayments:
    def __init__(self, bank: Verifying) -> None:
        self.bank = bank

    def verified(self, signed: Signed[OfflinePayment]) -> OfflinePayment:
        """:func:`verify_payment`, once per payment this intermediary sees (remembered by the
        verifier, by the digest of its signed bytes)."""
        return self.bank.verifier.payment(signed, self.bank.trust)
