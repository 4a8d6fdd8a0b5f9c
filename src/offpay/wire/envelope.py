"""Signed envelopes: every message over an untrusted hop travels inside one.

The signature covers a domain tag and the canonical payload, which itself names sender and
receiver; the signer's certificate chain rides along so that a device with only the root
certificate can verify it offline. Accepting a message at most once is the receiver's job
(nonces and counters in its state), checked after :func:`open_signed` succeeds.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from functools import cached_property
from typing import Generic

from offpay.crypto.keys import verify_signature
from offpay.crypto.pki import Credential, Identity, Role, TrustStore
from offpay.errors import AddressError, CertificateError, SignatureError
from offpay.wire.codec import M, Message, decode, encode, message

DOMAIN = b"offpay/1\x00"


@message("signed")
class Signed(Message, Generic[M]):
    payload: bytes
    signature: bytes
    chain: tuple[bytes, ...]

    def to_bytes(self) -> bytes:
        return self._encoded

    @cached_property
    def _encoded(self) -> bytes:
        """Immutable, and stored or forwarded at several hops of settlement: encoded once."""
        return encode(self)

    @classmethod
    def from_bytes(cls, data: bytes) -> Signed[Message]:
        return decode(data, Signed)

    @cached_property
    def digest(self) -> bytes:
        """What identifies this exact signed message (e.g. as evidence in a ledger)."""
        return hashlib.sha256(self.payload + self.signature).digest()


def sign(msg: Message, credential: Credential) -> Signed[Message]:
    payload = encode(msg)
    return Signed(payload, credential.signer.sign(DOMAIN + payload), credential.chain)


def open_signed(
    signed: Signed[Message] | bytes,
    cls: type[M],
    trust: TrustStore,
    role: Role | frozenset[Role],
    *,
    receiver: str | None,
    institution: str | None = None,
    now: dt.datetime | None = None,
    check_revoked: bool = True,
) -> tuple[M, Identity]:
    """Verify and decode: the chain leads to the root, the signer has ``role``, the signature
    verifies, the payload's ``sender`` is the signer and its ``receiver`` is us.
    ``check_revoked=False`` is for evidence made before a revocation (settlement decides)."""
    env = Signed.from_bytes(signed) if isinstance(signed, bytes | bytearray) else signed
    roles = role if isinstance(role, frozenset) else frozenset({role})
    ident = trust.verify_chain(env.chain, now, check_revoked=check_revoked)
    if ident.role not in roles:
        expected = " or ".join(sorted(r.value for r in roles))
        raise CertificateError(f"expected a {expected} certificate, got {ident.role} ({ident.id})")
    if institution is not None and ident.institution != institution:
        raise CertificateError(f"expected a signer of {institution}, got {ident.institution}")
    verify_signature(ident.public_key, env.signature, DOMAIN + env.payload)
    msg = decode(env.payload, cls)
    sender = getattr(msg, "sender", None)
    if sender is not None and sender != ident.id:
        raise SignatureError(f"message claims sender {sender} but is signed by {ident.id}")
    if receiver is not None:
        to = getattr(msg, "receiver", None)
        if to != receiver:
            raise AddressError(f"message is addressed to {to}, not to {receiver}")
    return msg, ident


def is_issued(signed: Signed[Message], digest: bytes, chain: tuple[bytes, ...]) -> bool:
    """Whether ``signed`` is exactly a message this party signed and kept the :attr:`digest`
    of (payload and signature), under its own ``chain``: how a device recognises its own
    request inside a payment without verifying its own signature a second time."""
    return hmac.compare_digest(signed.digest, digest) and signed.chain == chain


def payload_of(signed: Signed[Message], cls: type[M]) -> M:
    """Decode without verifying: only for data this party verified before and stored."""
    return decode(signed.payload, cls)
