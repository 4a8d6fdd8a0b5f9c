"""Step 1 of settlement, verification: signed bytes in, a verified payment or a typed refusal
out (:func:`offpay.bank.evidence.verify_payment`, pure).

An intermediary remembers the payments it verified, so that the same signed payment reaching
it again at a later hop of one sync is not verified twice; a big upload is verified across
processes by the :class:`~offpay.bank.verifier.Verifier` pool.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from offpay.bank.batch import forget_oldest
from offpay.bank.evidence import verify_payment
from offpay.bank.verifier import Verifier
from offpay.crypto.pki import TrustStore
from offpay.wire.envelope import Signed
from offpay.wire.messages import OfflinePayment

VERIFIED_KEPT = 4096  # payments whose verification an intermediary remembers

Key = tuple[bytes, bytes, tuple[bytes, ...]]  # payload, signature, chain


class Verifying(Protocol):
    """What verification needs of its intermediary, read at each call (a test may swap the
    verifier for one with another number of workers)."""

    trust: TrustStore
    verifier: Verifier


def key_of(signed: Signed[OfflinePayment]) -> Key:
    return (signed.payload, signed.signature, signed.chain)


class VerifiedPayments:
    def __init__(self, bank: Verifying) -> None:
        self.bank = bank
        self.kept: dict[Key, OfflinePayment] = {}

    def verified(self, signed: Signed[OfflinePayment]) -> OfflinePayment:
        """:func:`verify_payment`, once per payment this intermediary sees: the same signed
        payment (payload, signature and chains) reaches it again at later hops of one sync."""
        key = key_of(signed)
        payment = self.kept.get(key)
        if payment is None:
            payment = verify_payment(signed, self.bank.trust)
            self.keep(key, payment)
        return payment

    def verified_all(self, payments: Sequence[Signed[OfflinePayment]]) -> list[OfflinePayment]:
        """:meth:`verified` for each payment, a big batch across processes; raises the error
        :meth:`verified` raises for the first invalid one."""
        todo = [s for s in payments if key_of(s) not in self.kept]
        results = self.bank.verifier.verify_all(todo)
        if results is not None:
            for signed, payment in zip(todo, results, strict=True):
                if payment is not None:
                    self.keep(key_of(signed), payment)
        return [self.verified(s) for s in payments]

    def keep(self, key: Key, payment: OfflinePayment) -> None:
        forget_oldest(self.kept, VERIFIED_KEPT)
        self.kept[key] = payment
