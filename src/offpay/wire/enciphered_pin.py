"""The PIN enciphered to the card, as EMV's offline enciphered PIN does, with HPKE
(issue 19, point 3).

In a shop the PIN is typed on the terminal's secure PIN pad (the terminal module) but reaches
the card through the PoS app and the contactless link; on a phone the holder types it into the
phone app, and it crosses the phone's own link. Neither the PoS app nor anyone on a link needs
it, so:

1. the card answers GET CHALLENGE with a fresh challenge and a fresh X25519 key, both signed by
   the card (its certificate rides along): a relay cannot swap the key for its own;
2. the PIN entry device checks that signature and seals the PIN to that key, with the challenge
   and the card's id bound in: HPKE (RFC 9180) base mode, X25519, HKDF-SHA256,
   ChaCha20-Poly1305 (the suite of :mod:`offpay.wire.sealed_payment`);
3. the card opens it with the key it kept in RAM for that one challenge, forgets both, and
   checks the PIN against its try counter as before. A replayed enciphered PIN answers a
   challenge the card no longer holds: refused, and no try is spent.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from offpay.crypto.keys import verify_signature
from offpay.crypto.pki import Role, TrustStore, identity_of, load_certificate
from offpay.errors import CertificateError, EncodingError, SignatureError
from offpay.wire import sealed_payment  # its HPKE object, looked up at each call: counted
from offpay.wire.codec import Message, decode, encode, message
from offpay.wire.envelope import DOMAIN, Signed, open_signed

INFO = b"offpay/enciphered-pin/1\x00"
PIN_DIGITS = (4, 12)


@message("pin-challenge")
class PinChallenge(Message):
    """Signed by the card: encipher the PIN to ``key`` for this ``challenge`` only."""

    sender: str
    challenge: bytes
    key: bytes


@message("enciphered-pin")
class EncipheredPin(Message):
    """The PIN sealed to the card's key for ``challenge`` (which the card checks first)."""

    challenge: bytes
    sealed: bytes


def check_pin_format(pin: str) -> None:
    low, high = PIN_DIGITS
    if not (low <= len(pin) <= high and pin.isascii() and pin.isdigit()):
        raise EncodingError(f"PIN must be {low} to {high} digits")


def _info(card: str, challenge: bytes) -> bytes:
    return INFO + card.encode() + b"\x00" + challenge


def open_challenge(data: bytes, trust: TrustStore | None, card: str | None = None) -> PinChallenge:
    """The card's challenge, its signature checked: against ``trust`` (a PIN pad, which holds
    the network's root), or, for the holder's own phone app, which holds none, against the
    card certificate that comes with it. ``card``: the card the entry device expects."""
    signed = decode(data, Signed)
    if trust is not None:
        challenge, ident = open_signed(signed, PinChallenge, trust, Role.CARD, receiver=None)
    else:
        if not signed.chain:
            raise CertificateError("the PIN challenge carries no certificate")
        leaf = load_certificate(signed.chain[0])
        ident = identity_of(leaf)
        if ident.role is not Role.CARD:
            raise CertificateError("the PIN challenge is not signed by a card")
        verify_signature(ident.public_key, signed.signature, DOMAIN + signed.payload)
        challenge = decode(signed.payload, PinChallenge)
        if challenge.sender != ident.id:
            raise SignatureError("the PIN challenge names another card than its signer")
    if card is not None and challenge.sender != card:
        raise CertificateError("the PIN challenge comes from another card")
    return challenge


def encipher_pin(pin: str, challenge: PinChallenge) -> bytes:
    """What the PIN entry device hands the relay: ``pin`` for the card's eyes only."""
    check_pin_format(pin)
    try:
        X25519PublicKey.from_public_bytes(challenge.key)  # refused here in the PIN's own words
    except ValueError:
        raise EncodingError("the card's PIN key is not an X25519 key") from None
    sealed = sealed_payment.HPKE.seal(
        pin.encode("ascii"), challenge.key, info=_info(challenge.sender, challenge.challenge)
    )
    return encode(EncipheredPin(challenge.challenge, sealed))


def decipher_pin(data: EncipheredPin, card: str, private: bytes) -> str:
    """The PIN inside ``data``, for the card ``card`` holding the challenge's ``private`` key."""
    try:
        plain = sealed_payment.HPKE.open(
            data.sealed,
            X25519PrivateKey.from_private_bytes(private),
            info=_info(card, data.challenge),
        )
    except (InvalidTag, ValueError):
        raise SignatureError(
            "the enciphered PIN does not open with this card's key", code="crypto.bad_seal"
        ) from None
    pin = plain.decode("ascii", "replace")
    check_pin_format(pin)
    return pin
