"""The merchant's PoS app (report §3.5): drives the card and the terminal's secure module and
keeps the module's sealed records. It cannot forge a request or a payment: the module signs
requests and checks payments, and the records it stores are sealed."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from offpay.bank.engine import engine_id
from offpay.device.reader import CardClient, Transmit
from offpay.device.terminal import TerminalModule
from offpay.errors import OffpayError
from offpay.money import Money
from offpay.transport.memory import MemoryNetwork
from offpay.wire.codec import decode
from offpay.wire.envelope import Signed, payload_of
from offpay.wire.messages import CardIdentity, PaymentRequest
from offpay.wire.sealed_payment import request_id_answered


class PosApp:
    def __init__(
        self,
        module: TerminalModule,
        institution: str,
        network: MemoryNetwork,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self.module = module
        self.institution = institution
        self.network = network
        # The host's clock, handed to the module with each request (docs/limits.md); without
        # one the requests carry only the time the module last saw.
        self.clock = clock
        self.records: list[bytes] = []  # sealed by the module; the app cannot read them

    def charge(self, card: Transmit, pin: str, amount: Money) -> bytes:
        """Request to pay, PIN, card debits and signs, module verifies and seals. ``pin`` is
        what the customer types on the module's PIN pad: the module enciphers it to the
        card's signed challenge, and the app relays only that ciphertext."""
        client = CardClient(card)
        now = None if self.clock is None else int(self.clock().timestamp())
        identity = client.identity()
        request = self.module.request_payment(identity, amount, now)
        try:
            card_id = decode(identity, CardIdentity).card
            client.verify_enciphered_pin(
                self.module.encipher_pin(pin, client.pin_challenge(), card_id)
            )
            payment = client.pay(request)
        except OffpayError:
            # The card refused (wrong PIN, limit, funds), or its answer was lost: ask it for
            # its last payment once (report §3.5); if that does not answer this request, the
            # card did not pay it, or we cannot get the payment, and the request goes.
            payment = self._answer_to(client, request)
            if payment is None:
                self.decline(request)
                raise
        return self.receive(payment)

    @staticmethod
    def _answer_to(client: CardClient, request: bytes) -> bytes | None:
        """The card's last payment if it answers ``request``: the app reads only which request
        a payment answers, the rest is sealed to the module."""
        wanted = payload_of(Signed.from_bytes(request), PaymentRequest).request_id
        try:
            last = client.last_payment()
            answered = request_id_answered(last)
        except OffpayError:
            return None
        return last if answered == wanted else None

    def decline(self, signed_request: bytes) -> None:
        """The shop refuses the payment this request asked for, or gives up waiting for it (the
        card's answer never arrived). Should the card have paid it, the payment goes back to
        the card; a shop that still hopes for it resubmits first."""
        self.module.cancel_request(
            payload_of(Signed.from_bytes(signed_request), PaymentRequest).request_id
        )

    def receive(self, payment: bytes) -> bytes:
        sealed = self.module.accept_payment(payment)
        self.records.append(sealed)
        return payment

    def resubmit(self, card: Transmit) -> bytes:
        """The card's last payment again, for a terminal that never received it (§3.5)."""
        return self.receive(CardClient(card).last_payment())

    def sync(self) -> None:
        upload = self.module.begin_sync(engine_id(self.institution), self.records)
        instruction = self.network.send(self.institution, "terminal-upload", upload)
        self.module.apply_instruction(instruction)
        self.records = self.records[len(self.records) - self.module.state.offline_payments :]
