"""The user's phone app (report §3.4, §3.6, §3.7): a relay between the user's card, another
phone, and the intermediary. It holds no keys and decides nothing."""

from __future__ import annotations

from offpay.bank.engine import engine_id
from offpay.device.reader import CardClient, Transmit
from offpay.money import Money
from offpay.transport.memory import MemoryNetwork
from offpay.wire.messages import CardStatus, Operation


class PhoneApp:
    def __init__(
        self, card: Transmit, institution: str, network: MemoryNetwork, currency: str = "SEK"
    ) -> None:
        self.card = CardClient(card)
        self.institution = institution
        self.network = network
        self.currency = currency

    # -- online (report §3.4, §3.7) -----------------------------------------------------------

    def online(self, pin: str, operation: Operation, amount: Money) -> CardStatus:
        """One online session: the card signs its state and log, the intermediary settles and
        answers with a signed instruction, the card applies it and confirms."""
        self.card.verify_pin(pin)
        engine = engine_id(self.institution)
        session = self.card.begin_online(engine, operation, amount)
        instruction = self.network.send(self.institution, "card-session", session)
        confirmation = self.card.apply_instruction(instruction)
        self.network.send(self.institution, "card-confirmation", confirmation)
        return self.card.status()

    def top_up(self, pin: str, amount: Money) -> CardStatus:
        return self.online(pin, Operation.TOP_UP, amount)

    def defund(self, pin: str, amount: Money) -> CardStatus:
        return self.online(pin, Operation.DEFUND, amount)

    def sync(self, pin: str) -> CardStatus:
        return self.online(pin, Operation.SYNC, Money.zero(self.currency))

    # -- person to person (report §3.6) -------------------------------------------------------

    def show_identity(self) -> bytes:
        """Payer's phone: the card's identity and a fresh challenge, for the recipient."""
        return self.card.identity()

    def ask(self, payer_identity: bytes, amount: Money) -> bytes:
        """Recipient's phone, step 1: the recipient's card signs a request to that payer."""
        return self.card.request_payment(payer_identity, amount)

    def pay(self, pin: str, signed_request: bytes) -> bytes:
        """Payer's phone, step 3: PIN, then the card debits and signs."""
        self.card.verify_pin(pin)
        return self.card.pay(signed_request)

    def accept(self, pin: str, signed_payment: bytes) -> CardStatus:
        """Recipient's phone, step 5: PIN, then the card verifies and credits."""
        self.card.verify_pin(pin)
        return self.card.receive(signed_payment)
