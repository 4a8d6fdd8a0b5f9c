"""The merchant's PoS app (report §3.5): drives the card and the terminal's secure module and
keeps the module's sealed records. It cannot forge a request or a payment: the module signs
requests and checks payments, and the records it stores are sealed."""

from __future__ import annotations

from offpay.bank.engine import engine_id
from offpay.device.reader import CardClient, Transmit
from offpay.device.terminal import TerminalModule
from offpay.errors import OffpayError
from offpay.money import Money
from offpay.transport.memory import MemoryNetwork
from offpay.wire.envelope import Signed, payload_of
from offpay.wire.messages import PaymentRequest


class PosApp:
    def __init__(self, module: TerminalModule, institution: str, network: MemoryNetwork) -> None:
        self.module = module
        self.institution = institution
        self.network = network
        self.records: list[bytes] = []  # sealed by the module; the app cannot read them

    def charge(self, card: Transmit, pin: str, amount: Money) -> bytes:
        """Request to pay, PIN, card debits and signs, module verifies and seals."""
        client = CardClient(card)
        request = self.module.request_payment(client.identity(), amount)
        try:
            client.verify_pin(pin)
            payment = client.pay(request)
        except OffpayError:
            # The card refused (wrong PIN, limit, funds): it did not pay, so the request goes.
            self.module.cancel_request(
                payload_of(Signed.from_bytes(request), PaymentRequest).request_id
            )
            raise
        return self.receive(payment)

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
