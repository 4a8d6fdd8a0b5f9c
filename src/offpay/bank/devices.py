"""The devices an intermediary issues: it certifies the key a card or terminal module
generated, personalises it (root, chain, PIN digest, policy; report §3.2), registers it to a
customer's wallet, and afterwards accepts a request only from a device it issued, signed by
it, addressed to us and not blocked."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.serialization import load_der_public_key

from offpay.bank.accounts import Accounts
from offpay.bank.records import DeviceRequest
from offpay.crypto.keys import PublicKey, algorithm_of
from offpay.crypto.pki import Role
from offpay.device.card import key_fingerprint, pin_digest
from offpay.device.reader import CardClient, Transmit
from offpay.device.terminal import TerminalModule
from offpay.errors import DeviceStateError, Refused, SignatureError
from offpay.wire.codec import M
from offpay.wire.envelope import Signed, open_signed, sign
from offpay.wire.messages import LimitsPolicy, Personalisation

if TYPE_CHECKING:
    from offpay.bank.desks import Bank


class Devices:
    def __init__(self, bank: Bank, accounts: Accounts) -> None:
        self.bank = bank
        self.accounts = accounts

    def issue_card(self, customer_id: str, transmit: Transmit, pin: str) -> str:
        """Personalise a blank card for a customer: certify the key it generated, load the
        root, its chain, its PIN digest and the current policy (report §3.2)."""
        client = CardClient(transmit)
        card_id, personalisation = self.personalise_card(customer_id, client.public_key(), pin)
        client.personalise(personalisation)
        return card_id

    def personalise_card(self, customer_id: str, key: PublicKey, pin: str) -> tuple[str, bytes]:
        """The card id and the signed personalisation for a card's key; apart from
        :meth:`issue_card` so that a card in a branch's reader, across the network, is issued
        by the same code."""
        bank = self.bank
        self.accounts.account(customer_id, "shadow")
        if not (4 <= len(pin) <= 12 and pin.isdigit()):
            raise Refused("PIN must be 4 to 12 digits", code="bank.bad_pin")
        card_id = f"card:{bank.name}:{key_fingerprint(key)[:12]}"
        chain = bank.ca.issue(card_id, Role.CARD, key, bank.clock())
        signed_policy, _ = bank.policy()
        perso = Personalisation(
            sender=bank.id,
            receiver=key_fingerprint(key),
            card=card_id,
            institution=bank.name,
            root=bank.root_der,
            chain=chain,
            pin_digest=pin_digest(card_id, pin),
            policy=signed_policy,
            intake_key=bank.intake.signed(),
        )
        bank.ledger.register_device(card_id, "card", customer_id, f"{customer_id}/shadow")
        return card_id, sign(perso, bank.credential).to_bytes()

    def issue_terminal(self, merchant_id: str, module: TerminalModule) -> str:
        terminal_id, chain, policy = self.certify_terminal(merchant_id, module.public_key)
        bank = self.bank
        module.personalise(
            terminal_id, bank.name, bank.root_der, chain, policy, bank.intake.signed()
        )
        return terminal_id

    def certify_terminal(
        self, merchant_id: str, public_key_der: bytes
    ) -> tuple[str, tuple[bytes, ...], Signed[LimitsPolicy]]:
        """A terminal module's id, certificate chain and the current policy; apart from
        :meth:`issue_terminal` so that a module reached over the network is issued alike."""
        bank = self.bank
        account = self.accounts.account(merchant_id, "merchant")
        try:
            key = load_der_public_key(public_key_der)
            algorithm_of(key)
        except (ValueError, SignatureError):
            raise Refused("not a supported public key", code="bank.bad_key") from None
        terminal_id = f"terminal:{bank.name}:{key_fingerprint(key)[:12]}"
        chain = bank.ca.issue(terminal_id, Role.TERMINAL, key, bank.clock())  # type: ignore[arg-type]
        bank.ledger.register_device(terminal_id, "terminal", merchant_id, account)
        return terminal_id, chain, bank.policy()[0]

    def from_device(self, data: bytes, cls: type[M], role: Role) -> DeviceRequest[M]:
        """A request from one of our devices: signed by it, addressed to us, from a device we
        issued and have not blocked; with the answer already given if it is a retry."""
        bank = self.bank
        data = bank.intake.open(data)  # sealed to us by the device (issue 19)
        msg, ident = open_signed(
            data,
            cls,
            bank.trust,
            role,
            receiver=bank.id,
            institution=bank.name,
            now=bank.clock(),
        )
        cached = bank.ledger.seen(ident.id, msg.nonce)  # type: ignore[attr-defined]
        device = bank.ledger.device(ident.id)
        if cached is None and device.status != "active":
            raise DeviceStateError(f"{ident.id} is blocked", code="device.blocked")
        return DeviceRequest(msg, ident, device, cached)

    def report_lost(self, customer_id: str, device_id: str) -> None:
        """The holder reports a card lost or stolen (issue: lost or stolen card)."""
        device = self.bank.device(device_id)
        if device.customer_id != customer_id:
            raise Refused("that card is not this customer's", code="bank.not_holder")
        self.bank.block_device(device_id, "reported lost or stolen by its holder")
