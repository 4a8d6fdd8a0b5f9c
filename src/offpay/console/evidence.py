"""Signed evidence as a person reads it: the CBOR message decoded by its wire tag, a signed
envelope opened to show what was signed, bytes as short hex. For display only: nothing here
verifies a signature (the parties did when they recorded it)."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import enum
from collections.abc import Mapping
from typing import Any

import cbor2

import offpay.wire.messages  # noqa: F401  (registers every message type)
from offpay.errors import OffpayError
from offpay.money import Money
from offpay.wire.codec import Message, decode, registered
from offpay.wire.envelope import Signed

HEX_SHOWN = 16  # bytes shown of a long byte string; the rest is elided


def short_hex(data: bytes) -> str:
    text = data.hex()
    if len(data) <= HEX_SHOWN:
        return text
    return f"{text[: 2 * HEX_SHOWN]}… ({len(data)} bytes)"


def decoded(data: bytes) -> dict[str, Any]:
    """The message ``data`` holds, field by field; what cannot be decoded says so."""
    try:
        tag = cbor2.loads(data).get("t")
        cls = registered()[tag]
        return plain(decode(data, cls))
    except Exception as exc:  # any undecodable evidence is shown, not raised
        return {"undecodable": f"{type(exc).__name__}: {exc}", "bytes": short_hex(data)}


def plain(value: Any) -> Any:
    """``value`` as nested dicts, lists and strings."""
    if isinstance(value, Signed):
        return {
            "signed": decoded(value.payload),
            "signature": short_hex(value.signature),
            "certificate chain": f"{len(value.chain)} certificate(s)",
        }
    if isinstance(value, Message):
        fields = {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"message": type(value).TYPE, **fields}
    if isinstance(value, Money):
        return str(value)
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, bytes):
        return short_hex(value)
    if isinstance(value, tuple | list):
        return [plain(v) for v in value]
    return value


def settled_payment(records: Mapping[str, Mapping[str, Any]]) -> Signed[Message] | None:
    """The signed payment as an intermediary settled it (the payee's credit first, else the
    payer's debit), from the payment records of ``/v1/admin/payments/{id}``; None if no
    intermediary has settled it yet or kept it (rows from before the evidence was kept)."""
    for step in ("credit", "debit"):
        for record in records.values():
            row = record.get(step)
            kept = None if row is None else row.get("signed_payment")
            if kept:
                try:
                    return Signed.from_bytes(base64.b64decode(kept, validate=True))
                except (binascii.Error, OffpayError):
                    continue  # shown as missing; the digests in the books still stand
    return None
