"""The card reader side of the card interface: builds command APDUs and turns response APDUs
back into bytes or typed errors. Used by every relay and by the issuer's personalisation."""

from __future__ import annotations

from collections.abc import Callable

from cryptography.hazmat.primitives.serialization import load_der_public_key

from offpay.crypto.keys import PublicKey
from offpay.crypto.pki import TrustStore
from offpay.device.apdu import CLA_ISO, CLA_PROPRIETARY, SW, Command, Ins, Response, raise_for
from offpay.money import Money
from offpay.wire.codec import decode, encode
from offpay.wire.enciphered_pin import encipher_pin, open_challenge
from offpay.wire.messages import CardIdentity, CardStatus, Operation, PaymentAsk, SessionStart

Transmit = Callable[[bytes], bytes]


class CardClient:
    def __init__(self, transmit: Transmit) -> None:
        self.transmit = transmit

    def _call(self, ins: Ins, data: bytes = b"", cla: int = CLA_PROPRIETARY) -> bytes:
        response = Response.from_bytes(self.transmit(Command(cla, ins, 0, 0, data).to_bytes()))
        body = b""
        while response.sw & 0xFF00 == SW.MORE_DATA:  # ISO 7816-4 response chaining
            body += response.data
            get = Command(CLA_ISO, Ins.GET_RESPONSE, 0, 0, b"", 0)
            response = Response.from_bytes(self.transmit(get.to_bytes()))
        return body + raise_for(response)

    def public_key(self) -> PublicKey:
        return load_der_public_key(self._call(Ins.GET_PUBLIC_KEY))  # type: ignore[return-value]

    def personalise(self, signed: bytes) -> None:
        self._call(Ins.PERSONALISE, signed)

    def pin_challenge(self) -> bytes:
        """The card's signed PIN challenge, for the PIN entry device to encipher to."""
        return self._call(Ins.GET_CHALLENGE, cla=CLA_ISO)

    def verify_enciphered_pin(self, enciphered: bytes) -> None:
        """VERIFY with a PIN a PIN entry device enciphered (offpay.wire.enciphered_pin)."""
        self._call(Ins.VERIFY_PIN, enciphered, cla=CLA_ISO)

    def verify_pin(self, pin: str, trust: TrustStore | None = None) -> None:
        """This reader is the PIN entry device (the holder's phone app): enciphers ``pin`` to
        the card's signed challenge, checked against ``trust`` when it holds the root."""
        challenge = open_challenge(self.pin_challenge(), trust)
        self.verify_enciphered_pin(encipher_pin(pin, challenge))

    def identity(self) -> bytes:
        return self._call(Ins.GET_IDENTITY)

    def identity_message(self) -> CardIdentity:
        return decode(self.identity(), CardIdentity)

    def status(self) -> CardStatus:
        return decode(self._call(Ins.GET_STATUS), CardStatus)

    def pay(self, signed_request: bytes) -> bytes:
        return self._call(Ins.PAY, signed_request)

    def last_payment(self) -> bytes:
        return self._call(Ins.GET_LAST_PAYMENT)

    def request_payment(self, payer_identity: bytes, amount: Money) -> bytes:
        ask = PaymentAsk(decode(payer_identity, CardIdentity), amount)
        return self._call(Ins.REQUEST_PAYMENT, encode(ask))

    def receive(self, signed_payment: bytes) -> CardStatus:
        return decode(self._call(Ins.RECEIVE, signed_payment), CardStatus)

    def decline_request(self, request_id: bytes) -> None:
        """The holder refuses a payment this card asked for (or gives up waiting for it)."""
        self._call(Ins.DECLINE_REQUEST, request_id)

    def begin_online(self, engine: str, operation: Operation, amount: Money) -> bytes:
        return self._call(Ins.BEGIN_ONLINE, encode(SessionStart(engine, operation, amount)))

    def apply_instruction(self, signed_instruction: bytes) -> bytes:
        return self._call(Ins.APPLY_INSTRUCTION, signed_instruction)
