"""The token scheme against a served network: phones whose secure elements are provisioned
by their intermediary's back office and whose wallet apps (:class:`TokenWalletApp`) reach the
intermediary over HTTP, as the balance scheme's phones do. It offers the token demo what
:class:`offpay.sim.network.OfflineNetwork` offers it in process
(``offpay demo --network DIR --scheme tokens``)."""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass, field

from offpay.crypto.keys import public_key_bytes
from offpay.money import Money
from offpay.service.remote import RemoteBank, RemoteNetwork
from offpay.sim.network import TokenUser
from offpay.tokens.app import TokenWalletApp
from offpay.tokens.element import TokenElement
from offpay.wire.envelope import Signed

RemoteTokenUser = TokenUser[RemoteBank]
ELEMENT_PREFIX = "element:"  # how the intermediaries name the elements they certify


def provision_element(bank: RemoteBank, customer_id: str, element: TokenElement, key: str) -> str:
    """The element here, provisioned by ``bank`` across the network; only its public key
    leaves it; the element takes its intermediary's current signed policy. ``key``: the
    request's Idempotency-Key."""
    answer = bank.admin.post(
        "/v1/admin/token-elements",
        {
            "customer_id": customer_id,
            "public_key": base64.b64encode(public_key_bytes(element.signer.public_key)).decode(),
        },
        key=key,
    )
    element.provision(
        str(answer["element_id"]),
        tuple(base64.b64decode(c) for c in answer["chain"]),
        base64.b64decode(answer["root"]),
        tuple(base64.b64decode(c) for c in answer["mint_chain"]),
    )
    # the limits from the start, as a card's personalisation: the element checks the signature
    element.apply_policy(Signed.from_bytes(base64.b64decode(answer["policy"])), bank.name)
    # what it seals its deposits and renewals to; it checks the intermediary's signature
    element.take_intake_key(Signed.from_bytes(base64.b64decode(answer["intake_key"])), bank.name)
    return str(answer["element_id"])


@dataclass
class RemoteTokenNetwork(RemoteNetwork):
    token_users: dict[str, RemoteTokenUser] = field(default_factory=dict)

    def add_token_user(self, name: str, bank: str, *, online: int = 0) -> RemoteTokenUser:
        """A user of the token scheme: an online wallet and a phone's secure element."""
        b = self.banks[bank]
        customer = b.open_customer(self._customer_name(name))
        element = TokenElement.manufacture(self.algorithm)
        element_id = provision_element(b, customer, element, key=secrets.token_hex(16))
        if online:
            b.fund(customer, self.money(online))
        app = TokenWalletApp(element, bank, self.transport)
        user = RemoteTokenUser(name, b, customer, element, element_id, app)
        self.token_users[name] = user
        return user

    def token_vaults(self) -> Money:
        """Tokens the intermediaries' vault elements hold (deposits not yet answered)."""
        return self.money(
            sum(int(b.admin.get("/v1/admin/token-vault")["value"]) for b in self.banks.values())
        )

    def revoked_elements(self) -> list[str]:
        """The token elements on the central bank's revocation list."""
        devices = self.central.admin.get("/v1/admin/revoked")["devices"]
        return [d for d in devices if d.startswith(ELEMENT_PREFIX)]
