"""The user's phone app (report §3.4, §3.6, §3.7): a relay between the user's card, another
phone, and the intermediary. It holds no keys and decides nothing."""

from __future__ import annotations

import hashlib
import hmac

from offpay.bank.engine import engine_id
from offpay.crypto.pki import TrustStore
from offpay.device.reader import CardClient, Transmit
from offpay.errors import Refused
from offpay.liabilities.messages import LiabilitiesAnswer
from offpay.liabilities.tree import Balances
from offpay.liabilities.verify import check_inclusion, open_commitment
from offpay.money import Money
from offpay.transport.memory import MemoryNetwork
from offpay.wire.codec import decode
from offpay.wire.envelope import Signed, payload_of
from offpay.wire.messages import CardStatus, Operation, PaymentRequest

CODE_DIGITS = 6


def confirmation_code(signed_request: bytes) -> str:
    """The code both phones show for a person-to-person request: the payee's phone for the
    request its card signed, the payer's for the request it is about to pay. Equal codes mean
    the payer pays the request of the person in front of them, not one a hostile relay
    substituted (a live request of another payee, signed for the payer's fresh challenge).
    To match a code by chance the substitute's card must sign some 500 000 requests on average
    while the two people wait."""
    digest = hashlib.sha256(b"offpay-confirm\x00" + Signed.from_bytes(signed_request).digest)
    return f"{int.from_bytes(digest.digest()[:8], 'big') % 10**CODE_DIGITS:0{CODE_DIGITS}d}"


class PhoneApp:
    def __init__(
        self,
        card: Transmit,
        institution: str,
        network: MemoryNetwork,
        currency: str = "SEK",
        trust: TrustStore | None = None,
    ) -> None:
        self.card = CardClient(card)
        self.institution = institution
        self.network = network
        self.currency = currency
        # The app is its holder's PIN entry: it enciphers the PIN to the card's signed
        # challenge, checked against the network's root when the app holds it, otherwise
        # against the certificate the card sends (offpay.wire.enciphered_pin).
        self.trust = trust

    def _verify_pin(self, pin: str) -> None:
        self.card.verify_pin(pin, self.trust)

    # -- online (report §3.4, §3.7) -----------------------------------------------------------

    def online(self, pin: str, operation: Operation, amount: Money) -> CardStatus:
        """One online session: the card signs its state and log, the intermediary settles and
        answers with a signed instruction, the card applies it and confirms."""
        self._verify_pin(pin)
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

    def check_liabilities(
        self, pin: str, trust: TrustStore, customer_id: str, expected: Balances | None = None
    ) -> Balances:
        """Issue 18: a sync whose answer also carries the intermediary's newest signed
        liabilities commitment and this customer's inclusion proof; verified against the
        network's root (``trust``), for the app's customer (``customer_id``, the customer's
        number at the intermediary, as the banking app knows it). Returns the balances the
        published total counts for this customer; a proof that does not hold is a typed
        error (liabilities.*)."""
        self._verify_pin(pin)
        session = self.card.begin_online(
            engine_id(self.institution), Operation.SYNC, Money.zero(self.currency)
        )
        answer = decode(
            self.network.send(self.institution, "liabilities-proof", session), LiabilitiesAnswer
        )
        confirmation = self.card.apply_instruction(answer.instruction.to_bytes())
        self.network.send(self.institution, "card-confirmation", confirmation)
        commitment, _ = open_commitment(answer.commitment, trust, self.institution)
        return check_inclusion(commitment, answer.proof, customer_id, expected)

    # -- person to person (report §3.6) -------------------------------------------------------

    def show_identity(self) -> bytes:
        """Payer's phone: the card's identity and a fresh challenge, for the recipient."""
        return self.card.identity()

    def ask(self, payer_identity: bytes, amount: Money) -> bytes:
        """Recipient's phone, step 1: the recipient's card signs a request to that payer."""
        return self.card.request_payment(payer_identity, amount)

    def pay(self, pin: str, signed_request: bytes, *, code: str | None = None) -> bytes:
        """Payer's phone, step 3: PIN, then the card debits and signs. ``code``: the code the
        payee's phone shows (:func:`confirmation_code`), as the payer confirmed it; a request
        with another code is refused before the card is touched."""
        if code is not None and not hmac.compare_digest(code, confirmation_code(signed_request)):
            raise Refused(
                "the payee's phone shows another code: this request is not the one the person "
                "in front of you made; nothing was paid",
                code="payment.code_mismatch",
            )
        self._verify_pin(pin)
        return self.card.pay(signed_request)

    def decline(self, signed_request: bytes) -> None:
        """Recipient's phone: refuse the payment this request asked for, or stop waiting for
        it. Should the payer's card have paid it, the payment goes back to the payer."""
        self.card.decline_request(
            payload_of(Signed.from_bytes(signed_request), PaymentRequest).request_id
        )

    def accept(self, pin: str, signed_payment: bytes) -> CardStatus:
        """Recipient's phone, step 5: PIN, then the card verifies and credits."""
        self._verify_pin(pin)
        return self.card.receive(signed_payment)
