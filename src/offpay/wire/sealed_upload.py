"""What a device sends its intermediary through a relay app, sealed to the intermediary
(issue 19, point 3).

A card's online session carries its log: other people's payments, with their devices' ids,
certificates and counters; a terminal module's upload carries every payment its shop received.
The phone app and the PoS app only forward these to the intermediary and need none of it, so
the device encrypts its signed message to the intermediary's encryption key (its *intake
key*): HPKE (RFC 9180) base mode, X25519, HKDF-SHA256, ChaCha20-Poly1305, the suite of
:mod:`offpay.wire.sealed_payment`, from the ``cryptography`` package.

The device learns the key in a message the intermediary signs (:class:`IntakeKey`, inside the
card's personalisation, the terminal's certification and, once renewed, the next instruction),
so a relay cannot swap in its own. The relay still sees the intermediary's id and the key's
version, which it needs to route the message and the intermediary needs to pick the key. The
signed message inside is unchanged: signed, addressed, accepted at most once by the
intermediary's own checks.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from offpay.crypto.pki import Role, TrustStore
from offpay.errors import AddressError, EncodingError, SignatureError
from offpay.wire import sealed_payment  # its HPKE object, looked up at each call: counted
from offpay.wire.codec import Message, decode, encode, message
from offpay.wire.envelope import Signed, open_signed
from offpay.wire.messages import IntakeKey

INFO = b"offpay/sealed-to-intermediary/1\x00"


@message("sealed-to-intermediary")
class SealedToIntermediary(Message):
    """A device's signed message, HPKE-encrypted to ``receiver``'s intake key ``key_version``.
    Both are bound into the encryption: a relay that hands it to another intermediary or
    changes the version makes it fail to open."""

    receiver: str
    key_version: int
    sealed: bytes


def _info(receiver: str, version: int) -> bytes:
    return INFO + receiver.encode() + b"\x00" + str(version).encode()


def accept_intake_key(
    signed: Signed[IntakeKey], trust: TrustStore, institution: str, current: IntakeKey | None
) -> IntakeKey:
    """The key a device keeps after receiving ``signed``: verified as its own intermediary's,
    and never older than the one it holds (an older one is ignored, as a replayed policy is)."""
    key, _ = open_signed(signed, IntakeKey, trust, Role.ENGINE, receiver=None)
    if key.institution != institution:
        raise AddressError(f"the intake key is {key.institution}'s, not {institution}'s")
    try:
        X25519PublicKey.from_public_bytes(key.key)
    except ValueError:
        raise EncodingError("the intake key is not an X25519 key") from None
    if current is not None and key.version <= current.version:
        return current
    return key


def seal_to_intermediary(data: bytes, key: IntakeKey | None) -> bytes:
    """What the device hands the relay: ``data`` (a signed message) sealed to ``key``, or
    ``data`` itself for a device that holds no key (personalised before sealing)."""
    if key is None:
        return data
    sealed = sealed_payment.HPKE.seal(data, key.key, info=_info(key.sender, key.version))
    return encode(SealedToIntermediary(key.sender, key.version, sealed))


def sealed_to_intermediary(data: bytes) -> SealedToIntermediary | None:
    """``data`` as a sealed message, or None when it is a message in clear."""
    try:
        return decode(data, SealedToIntermediary)
    except EncodingError:
        return None


def open_sealed(sealed: SealedToIntermediary, receiver: str, private: bytes) -> bytes:
    """The signed message inside ``sealed``, for the intermediary ``receiver`` holding the
    ``private`` key of the sealed message's version."""
    if sealed.receiver != receiver:
        raise AddressError(f"the sealed message is for {sealed.receiver}, not {receiver}")
    try:
        return sealed_payment.HPKE.open(
            sealed.sealed,
            X25519PrivateKey.from_private_bytes(private),
            info=_info(receiver, sealed.key_version),
        )
    except (InvalidTag, ValueError):
        raise SignatureError(
            "the sealed message does not open with this intermediary's key",
            code="crypto.bad_seal",
        ) from None
