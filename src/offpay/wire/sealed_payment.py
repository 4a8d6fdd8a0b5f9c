"""A payment sealed to its payee's device for the offline hop (issue 19, point 3).

Between the payer's card and the payee's terminal module or card, a relay carries the payment:
the shop's PoS app, the two phones, and whoever listens on the contactless link. None of them
needs the payer card's certificate, counter, offline receipts or funding payments (other
people's payments), so the card encrypts its signed payment to a key the payee put in its own
signed request: HPKE (RFC 9180) base mode, X25519, HKDF-SHA256, ChaCha20-Poly1305, from the
``cryptography`` package. The payee's key is fresh per request and dies with it.

The relay still sees which request the sealed payment answers (``request_id``, which it saw in
the request), so that a PoS app can recognise the answer to its request after a lost
response, and a short hash of the payee's id, so that another device refuses it as addressed
to someone else; the full id is bound into the encryption. The signed payment inside is
unchanged: signed, addressed to one payee, accepted at most once by the payee's own checks.
A payee also takes a payment in clear (a card made before sealing): sealing protects the
payer's data, which only the payer's card can give away.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
from collections.abc import Callable, Collection

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from offpay.errors import (
    AddressError,
    DeviceStateError,
    EncodingError,
    ReplayError,
    SignatureError,
)
from offpay.wire.codec import Message, decode, encode, message
from offpay.wire.envelope import Signed, payload_of
from offpay.wire.messages import OfflinePayment, PaymentRequest

SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)
INFO = b"offpay/sealed-payment/1\x00"
KEY_BYTES = 32
RECEIVER_HASH_BYTES = 8


@message("sealed-payment")
class SealedPayment(Message):
    """A signed :class:`OfflinePayment`, HPKE-encrypted to the key in the request it answers.
    The request's id and its payee's id are bound to the ciphertext: a relay that changes the
    id, or hands it to another device, makes it fail to open. ``receiver_hash``: the first
    bytes of SHA-256 of the payee's id, of fixed size, to refuse a payment for another device
    by its address."""

    receiver_hash: bytes
    request_id: bytes
    sealed: bytes


class Hpke:
    """The three HPKE operations the offline hop needs, in one place: a payee's key for one
    request, sealing a payment to it, opening it. A benchmark counts the protocol's crypto
    through this one object (:func:`offpay.bench.instrument.count_crypto`), as it counts
    signatures through :data:`offpay.crypto.keys.ALGORITHMS`."""

    def keygen(self, random: Callable[[int], bytes]) -> tuple[X25519PrivateKey, bytes]:
        private = X25519PrivateKey.from_private_bytes(random(KEY_BYTES))
        return private, private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def seal(self, plain: bytes, public: bytes, info: bytes) -> bytes:
        try:
            key = X25519PublicKey.from_public_bytes(public)
        except ValueError:
            raise EncodingError("the request's sealing key is not an X25519 key") from None
        return SUITE.encrypt(plain, key, info=info)

    def open(self, sealed: bytes, private: X25519PrivateKey, info: bytes) -> bytes:
        return SUITE.decrypt(sealed, private, info=info)


HPKE = Hpke()
KEYS_KEPT = 1024


class _LoadedKeys:
    """The payee's key objects made by :func:`new_seal_key`, by their raw bytes, in RAM only
    (bounded, oldest first out). Loading a raw X25519 private key derives its public key
    again, a scalar multiplication as costly as the key's generation; a key not here (the
    device was switched off and on, or many requests ago) is loaded from the bytes its sealed
    state keeps."""

    def __init__(self, kept: int) -> None:
        self._kept = kept
        self._keys: dict[bytes, X25519PrivateKey] = {}

    def remember(self, raw: bytes, key: X25519PrivateKey) -> None:
        if len(self._keys) >= self._kept:
            # another thread may take the same oldest key first: then one fewer is dropped
            with contextlib.suppress(KeyError, RuntimeError, StopIteration):
                self._keys.pop(next(iter(self._keys)))
        self._keys[raw] = key

    def load(self, raw: bytes) -> X25519PrivateKey:
        key = self._keys.get(raw)
        if key is None:
            key = X25519PrivateKey.from_private_bytes(raw)
            self.remember(raw, key)
        return key


_LOADED = _LoadedKeys(KEYS_KEPT)


def new_seal_key(random: Callable[[int], bytes]) -> tuple[bytes, bytes]:
    """A payee device's key for one request, from the device's own randomness: (private, public),
    raw X25519 bytes."""
    private, public = HPKE.keygen(random)
    raw = private.private_bytes_raw()
    _LOADED.remember(raw, private)
    return raw, public


def receiver_hash(receiver: str) -> bytes:
    return hashlib.sha256(b"offpay-sealed-to\x00" + receiver.encode()).digest()[
        :RECEIVER_HASH_BYTES
    ]


def _info(receiver: str, request_id: bytes) -> bytes:
    return INFO + receiver.encode() + b"\x00" + request_id


def seal_payment(signed: Signed[OfflinePayment], request: PaymentRequest) -> bytes:
    """What the payer's card hands the relay: ``signed`` sealed to the key of ``request``, or
    ``signed`` itself when the request carries no key (a payee made before sealing)."""
    if request.seal_to is None:
        return signed.to_bytes()
    info = _info(request.sender, request.request_id)
    sealed = HPKE.seal(signed.to_bytes(), request.seal_to, info)
    return encode(SealedPayment(receiver_hash(request.sender), request.request_id, sealed))


def _as_sealed(data: bytes) -> SealedPayment | None:
    """``data`` decoded as a sealed payment, or None if it is something else (in clear)."""
    try:
        return decode(data, SealedPayment)
    except EncodingError:
        return None


def is_sealed(data: bytes) -> bool:
    return _as_sealed(data) is not None


def open_payment(
    data: bytes,
    receiver: str,
    key_for: Callable[[bytes], bytes | None],
    declined: Collection[bytes] = (),
) -> bytes:
    """The signed payment in ``data``, opened with the key ``key_for`` gives for its request;
    a payment in clear is returned as it is, for the usual checks. ``receiver``: this device,
    bound into the encryption. A payment answering a request the device ``declined`` is
    refused as such (its key is gone with the request)."""
    sealed = _as_sealed(data)
    if sealed is None:
        return data
    if not hmac.compare_digest(sealed.receiver_hash, receiver_hash(receiver)):
        raise AddressError("the sealed payment is addressed to another device")
    private = key_for(sealed.request_id)
    if private is None and sealed.request_id in declined:
        raise DeviceStateError(
            "this request was declined: the payment goes back to its payer when both devices "
            "have synchronised",
            code="device.declined",
        )
    if private is None:
        raise ReplayError("no open request for this payment; it was received or cancelled")
    try:
        opened = HPKE.open(sealed.sealed, _LOADED.load(private), _info(receiver, sealed.request_id))
    except (InvalidTag, ValueError):
        raise SignatureError(
            "the sealed payment does not open with this request's key", code="crypto.bad_seal"
        ) from None
    return opened


def request_id_answered(data: bytes) -> bytes:
    """Which request a payment answers, sealed or in clear: all a relay may read of it."""
    sealed = _as_sealed(data)
    if sealed is not None:
        return sealed.request_id
    signed = decode(data, Signed)
    return payload_of(payload_of(signed, OfflinePayment).request, PaymentRequest).request_id
