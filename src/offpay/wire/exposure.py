"""What a message exposes to whoever receives its bytes: every field of every message inside it,
and for the fields that name someone, what kind of identity they carry.

Decoded with the project's own codec tags (``offpay.wire.codec.registered``), walking into
signed envelopes, embedded evidence and certificate chains, so that a party's view is read
from the bytes it actually received, not from what the code that built them meant to send.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any

import cbor2

from offpay.crypto.pki import DEVICE_ROLES, identity_of, load_certificate
from offpay.errors import OffpayError
from offpay.wire.codec import registered

DEVICE_PREFIXES = tuple(f"{role.value}:" for role in DEVICE_ROLES)
# A name is looked for inside bytes (signatures, keys, certificates) only from this length: a
# shorter one turns up by chance somewhere in a megabyte of signatures.
MIN_NAME_IN_BYTES = 8


class Kind(enum.StrEnum):
    """What a field's value tells about someone, beyond the field's own meaning."""

    PLAIN = "plain"  # an amount, a counter, a nonce, a signature, an institution's name
    DEVICE_ID = "device-id"  # a card's, terminal's or element's pseudonymous id
    DEVICE_CERTIFICATE = "device-certificate"  # a device's certificate (its id and key)
    INSTITUTION_CERTIFICATE = "institution-certificate"  # an engine's, CA's, notary's or mint's
    CUSTOMER = "customer"  # a customer's id or name: the person behind a device


@dataclass(frozen=True, order=True)
class Seen:
    """One field of one message type a party received, and what kind of value it held."""

    tag: str
    field: str
    kind: Kind = Kind.PLAIN

    def __str__(self) -> str:
        name = f"{self.tag}.{self.field}"
        return name if self.kind is Kind.PLAIN else f"{name}={self.kind.value}"


def exposed(data: bytes, people: Collection[str] = ()) -> frozenset[Seen]:
    """Every field ``data`` carries, nested messages included. ``people``: the customer ids
    and names known to the caller, found anywhere in a value (a certificate's subject too).
    Bytes that are not a message (a sealed record, a PIN) expose no field."""
    obj = _cbor(data)
    if not _is_message(obj):
        return frozenset()
    return frozenset(_walk(obj, "", "", tuple(p for p in people if p)))


def _cbor(data: bytes) -> Any:
    try:
        return cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError):
        return None


def _is_message(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("t") in registered()


def _walk(obj: Any, tag: str, field: str, people: tuple[str, ...]) -> Iterator[Seen]:
    if _is_message(obj):
        inner = obj["t"]
        for name, value in obj.items():
            if name != "t":
                yield Seen(inner, name)
                yield from _walk(value, inner, name, people)
    elif isinstance(obj, list | tuple):
        for item in obj:
            yield from _walk(item, tag, field, people)
    elif isinstance(obj, str):
        if obj.startswith(DEVICE_PREFIXES):
            yield Seen(tag, field, Kind.DEVICE_ID)
        if any(p in obj for p in people):
            yield Seen(tag, field, Kind.CUSTOMER)
    elif isinstance(obj, bytes):
        yield from _bytes(obj, tag, field, people)


def _bytes(value: bytes, tag: str, field: str, people: tuple[str, ...]) -> Iterator[Seen]:
    if any(len(p) >= MIN_NAME_IN_BYTES and p.encode() in value for p in people):
        yield Seen(tag, field, Kind.CUSTOMER)
    if value[:1] == b"\x30":  # a DER SEQUENCE: perhaps a certificate
        try:
            role = identity_of(load_certificate(value)).role
        except OffpayError:
            pass
        else:
            kind = Kind.DEVICE_CERTIFICATE if role in DEVICE_ROLES else Kind.INSTITUTION_CERTIFICATE
            yield Seen(tag, field, kind)
            return
    nested = _cbor(value)  # a signed payload, embedded evidence, a notary's receipt
    if _is_message(nested):
        yield from _walk(nested, tag, field, people)
