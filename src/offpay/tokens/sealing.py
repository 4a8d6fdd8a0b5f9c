"""Token transfer messages sealed to the receiving element (issue 19, point 3).

In a phone-to-phone transfer the offer and the transfer carry a token with its whole history:
every earlier owner's element pseudonym, certificate and ownership key. Only the receiving
element needs it; the two phone apps and whoever listens on the link only carry it. So the
receiving element puts a fresh X25519 key, made in the element and kept for that one session,
into its signed discovery proof, and the sending element seals its signed offer and transfer
to it: HPKE as :mod:`offpay.wire.sealed_payment` (the same :data:`HPKE` object), with both
element ids and the session (derived from both nonces) bound into the HPKE info.

Why the discovery proof and not the address reply: the offer, before the address, already
carries the token and its history, which the receiver verifies before it gives an address.

A relay still sees the session (which it saw in the clear messages of discovery: it lets the
receiver refuse a message of another session as such) and a short hash of the receiver's id.
The signed message inside is unchanged: signed, addressed to one element, checked as before.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

from cryptography.exceptions import InvalidTag

from offpay.errors import AddressError, EncodingError, ReplayError, SignatureError
from offpay.wire import sealed_payment  # its HPKE object, looked up at each call: counted
from offpay.wire.codec import Message, decode, encode, message
from offpay.wire.sealed_payment import receiver_hash

INFO = b"offpay/sealed-token-message/1\x00"


@message("token-sealed")
class SealedTokenMessage(Message):
    """A signed offer or transfer, HPKE-encrypted to the key in the receiver's discovery
    proof. ``receiver_hash``: as in a sealed payment, to refuse one addressed to another
    element by its address; ``session``: to refuse one of another session as such."""

    receiver_hash: bytes
    session: bytes
    sealed: bytes


class SessionSealKey:
    """The receiving element's key for one session: made from the element's randomness,
    held by the session and gone with it."""

    def __init__(self, random: Callable[[int], bytes]) -> None:
        self._private, self.public = sealed_payment.HPKE.keygen(random)

    def open(self, sealed: bytes, info: bytes) -> bytes:
        try:
            return sealed_payment.HPKE.open(sealed, self._private, info)
        except (InvalidTag, ValueError):
            raise SignatureError(
                "the sealed token message does not open with this session's key",
                code="crypto.bad_seal",
            ) from None


def _info(sender: str, receiver: str, session: bytes) -> bytes:
    return INFO + sender.encode() + b"\x00" + receiver.encode() + b"\x00" + session


def seal_token_message(
    signed: bytes, sender: str, receiver: str, session: bytes, public: bytes | None
) -> bytes:
    """What the sending element hands its phone: ``signed`` sealed to the receiver's session
    key, or ``signed`` itself when the receiver gave none."""
    if public is None:
        return signed
    sealed = sealed_payment.HPKE.seal(signed, public, _info(sender, receiver, session))
    return encode(SealedTokenMessage(receiver_hash(receiver), session, sealed))


def open_token_message(
    data: bytes, sender: str, receiver: str, session: bytes, key: SessionSealKey | None
) -> bytes:
    """The signed message in ``data``, opened with this session's ``key``; a message in clear
    (a sender that sealed nothing) is returned as it is, for the usual checks. ``sender``
    and ``receiver``: the session's discovered peer and this element."""
    try:
        sealed = decode(data, SealedTokenMessage)
    except EncodingError:
        return data
    if not hmac.compare_digest(sealed.receiver_hash, receiver_hash(receiver)):
        raise AddressError("the sealed token message is addressed to another element")
    if not hmac.compare_digest(sealed.session, session):
        raise ReplayError("the sealed token message belongs to another session")
    if key is None:
        raise EncodingError("this session gave no key to seal to")
    return key.open(sealed.sealed, _info(sender, receiver, session))
