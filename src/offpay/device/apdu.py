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
    VERIFY_PIN = 0x20  # ISO 7816-4 VERIFY, with the PIN enciphered (offpay.wire.enciphered_pin)
    GET_CHALLENGE = 0x84  # ISO 7816-4 GET CHALLENGE: the card's signed challenge and PIN key
    GET_RESPONSE = 0xC0  # ISO 7816-4 GET RESPONSE (CLA 00), after a 61xx status
    GET_PUBLIC_KEY = 0xC8
    PERSONALISE = 0xC2
    GET_IDENTITY = 0xC4
    GET_STATUS = 0xC6
    PAY = 0xD0
    GET_LAST_PAYMENT = 0xD2
    REQUEST_PAYMENT = 0xD4
    RECEIVE = 0xD6
    DECLINE_REQUEST = 0xD8
    BEGIN_ONLINE = 0xE0
    APPLY_INSTRUCTION = 0xE2


MAX_RESPONSE = 65536  # the most an extended-length response carries at once


class SW(enum.IntEnum):
    OK = 0x9000
    MORE_DATA = 0x6100  # 61xx: xx more bytes (00: 256 or more) wait for GET RESPONSE
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
    """A command APDU in any of the four ISO 7816-4 cases, short or extended length.

    ``le`` is the expected response length as the reader sent it (None when absent; 0 means
    "as much as there is"); the applet answers with all it has whatever ``le`` says.
    """

    cla: int
    ins: int
    p1: int = 0
    p2: int = 0
    data: bytes = b""
    le: int | None = None

    def to_bytes(self) -> bytes:
        head = bytes([self.cla, self.ins, self.p1, self.p2])
        n = len(self.data)
        if n > 0xFFFF:
            raise EncodingError("command data exceeds extended length")
        extended = n > 255 or (self.le is not None and self.le > 256)
        body = b""
        if n:
            body = bytes([n]) if not extended else b"\x00" + n.to_bytes(2, "big")
            body += self.data
        if self.le is not None:
            if extended:
                le = (self.le % 65536).to_bytes(2, "big")
                body += le if n else b"\x00" + le
            else:
                body += bytes([self.le % 256])
        return head + body

    @classmethod
    def from_bytes(cls, raw: bytes) -> Command:
        if len(raw) < 4:
            raise EncodingError("APDU shorter than its header")
        cla, ins, p1, p2 = raw[:4]
        body = bytes(raw[4:])
        size = len(body)
        if size == 0:  # case 1
            return cls(cla, ins, p1, p2)
        if size == 1:  # case 2, short
            return cls(cla, ins, p1, p2, b"", body[0] or 256)
        if body[0] != 0:  # cases 3 and 4, short
            n = body[0]
            if size == 1 + n:
                return cls(cla, ins, p1, p2, body[1:])
            if size == 2 + n:
                return cls(cla, ins, p1, p2, body[1:-1], body[-1] or 256)
            raise EncodingError(f"APDU says {n} data bytes but carries {size - 1}")
        if size == 3:  # case 2, extended
            return cls(cla, ins, p1, p2, b"", int.from_bytes(body[1:3], "big") or 65536)
        if size < 3:
            raise EncodingError("extended length field is truncated")
        n = int.from_bytes(body[1:3], "big")
        if n and size == 3 + n:  # case 3, extended
            return cls(cla, ins, p1, p2, body[3:])
        if n and size == 5 + n:  # case 4, extended
            return cls(cla, ins, p1, p2, body[3:-2], int.from_bytes(body[-2:], "big") or 65536)
        raise EncodingError(f"APDU says {n} data bytes but carries {size - 3}")


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
