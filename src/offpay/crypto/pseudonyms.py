"""What the central bank's notary knows a payment by (issue 19, point 2; docs/notary-privacy.md).

A payment's id (:func:`offpay.wire.messages.payment_tx_id`) is a hash of the payer device and
its counter: anyone who can list device ids and small counters can recompute it, so a notary
holding it learns which card paid. The notary gets instead:

* a *pseudonym*: HMAC-SHA256 of the id under a key only the payer's intermediary holds. The
  same payment always gets the same pseudonym (exactly once holds), a second, different
  payment with the same payer and counter (a clone) gets the same pseudonym too (the conflict
  is still seen), and without the key nobody can tell which card, or which other payments of
  the same card, a pseudonym stands for.
* a *commitment* to the evidence: SHA-256 of the signed payment's digest, domain-separated.
  The notary can say "same payment" or "another payment under this id", and check a disclosed
  payment against it in a dispute, without ever holding the payment.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

KEY_BYTES = 32  # the intermediary's pseudonym key
PSEUDONYM_BYTES = 16  # as long as a payment id: 2**64 pseudonyms before a likely collision
_PSEUDONYM = b"offpay-notary-pseudonym\x00"
_COMMITMENT = b"offpay-notary-commitment\x00"
_REFUND_COMMITMENT = b"offpay-notary-refund-commitment\x00"


def pseudonym(key: bytes, tx_id: bytes) -> bytes:
    """The notary's name for payment (or refund, or loan) ``tx_id`` of the key's holder."""
    return hmac.new(key, _PSEUDONYM + tx_id, hashlib.sha256).digest()[:PSEUDONYM_BYTES]


def commitment(evidence: bytes, *, refund: bool = False) -> bytes:
    """What the notary keeps of a payment's evidence (the signed payment's digest). A refund
    gives back a payment with the same evidence: its commitment is another one, so that no
    refund receipt passes for the payment's, and the notary cannot pair them."""
    tag = _REFUND_COMMITMENT if refund else _COMMITMENT
    return hashlib.sha256(tag + evidence).digest()


@dataclass(frozen=True, slots=True)
class NotaryName:
    """What the notary records a payment under, and which evidence it commits to."""

    pseudonym: bytes
    commitment: bytes

    @classmethod
    def of(cls, key: bytes, tx_id: bytes, evidence: bytes, *, refund: bool = False) -> NotaryName:
        return cls(pseudonym(key, tx_id), commitment(evidence, refund=refund))

    @classmethod
    def legacy(cls, tx_id: bytes, evidence: bytes) -> NotaryName:
        """A payment recorded before pseudonyms: the notary knows it by its id and digest."""
        return cls(tx_id, evidence)
