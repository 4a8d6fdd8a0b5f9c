"""ISO/IEC 7816-4 command and response APDUs, so that a real card could replace the simulated
one behind the same relay. Extended length is used whenever a field exceeds short length.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import cbor2

from offpay.errors import EncodingError, OffpayError, error_from_code

CLA_ISO = 0x00
CLA_PROPRIETARY = 0x80


class Ins(enum.IntEnum):
    VERIFY_PIN = 0x20  # ISO 7816-4 VERIFY
    GET_PUBLIC_KEY = 0xC0
    PERSONALISE = 0xC2
    GET_IDENTITY = 0xC4
    GET_STATUS = 0xC6
    PAY = 0xD0
    GET_LAST_PAYMENT = 0xD2
    REQUEST_PAYMENT = 0xD4
    RECEIVE = 0xD6
    BEGIN_ONLINE = 0xE0
    APPLY_INSTRUCTION = 0xE2


class SW(enum.IntEnum):
    OK = 0x9000
    WRONG_LENGTH = 0x6700
    SECURITY_NOT_SATISFIED = 0x6982
    AUTH_BLOCKED = 0x6983
    CONDITIONS_NOT_SATISFIED = 0x6985
    WRONG_DATA = 0x6A80
    INS_NOT_SUPPORTED = 0x6D00
    CLA_NOT_SUPPORTED = 0x6E00
    UNKNOWN = 0x6F00


@dataclass(frozen=True)
class Command:
    cla: int
    ins: int
    p1: int = 0
    p2: int = 0
    data: bytes = b""

    def to_bytes(self) -> bytes:
        head = bytes([self.cla, self.ins, self.p1, self.p2])
        n = len(self.data)
        if n == 0:
            return head
        if n <= 255:
            return head + bytes([n]) + self.data
        if n > 0xFFFF:
            raise EncodingError("command data exceeds extended length")
        return head + b"\x00" + n.to_bytes(2, "big") + self.data

    @classmethod
    def from_bytes(cls, raw: bytes) -> Command:
        if len(raw) < 4:
            raise EncodingError("APDU shorter than its header")
        cla, ins, p1, p2 = raw[:4]
        body = raw[4:]
        if not body:
            return cls(cla, ins, p1, p2)
        if body[0] != 0:
            n, data = body[0], body[1:]
        else:
            if len(body) < 3:
                raise EncodingError("extended length field is truncated")
            n, data = int.from_bytes(body[1:3], "big"), body[3:]
        if len(data) != n:
            raise EncodingError(f"APDU says {n} data bytes but carries {len(data)}")
        return cls(cla, ins, p1, p2, bytes(data))


@dataclass(frozen=True)
class Response:
    data: bytes
    sw: int

    def to_bytes(self) -> bytes:
        return self.data + self.sw.to_bytes(2, "big")

    @classmethod
    def from_bytes(cls, raw: bytes) -> Response:
        if len(raw) < 2:
            raise EncodingError("response shorter than its status word")
        return cls(bytes(raw[:-2]), int.from_bytes(raw[-2:], "big"))

    @property
    def ok(self) -> bool:
        return self.sw == SW.OK


def status_for(error: OffpayError) -> int:
    """The ISO status word that best matches a typed refusal."""
    code = error.code
    if code == "pin.wrong":
        tries = getattr(error, "tries_left", 0)
        return 0x63C0 | min(max(tries, 0), 15)
    if code == "pin.blocked":
        return SW.AUTH_BLOCKED
    if code.startswith("wire.malformed"):
        return SW.WRONG_DATA
    if code.startswith(("crypto.", "wire.", "seal.")):
        return SW.SECURITY_NOT_SATISFIED
    return SW.CONDITIONS_NOT_SATISFIED


def error_response(error: OffpayError) -> Response:
    body = cbor2.dumps({"code": error.code, "message": error.message}, canonical=True)
    return Response(body, status_for(error))


def raise_for(response: Response) -> bytes:
    """The response data if the card said OK; otherwise the card's typed error, re-raised."""
    if response.ok:
        return response.data
    try:
        body = cbor2.loads(response.data)
        code, message = str(body["code"]), str(body["message"])
    except Exception:
        code, message = "device.failure", f"card answered status {response.sw:04X}"
    raise error_from_code(code, message)
