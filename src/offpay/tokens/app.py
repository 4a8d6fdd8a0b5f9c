"""The phone's token wallet app: an untrusted relay between the user's secure element, the
intermediary (online moments) and another phone (offline transfers)."""

from __future__ import annotations

import os

from offpay.crypto.pki import Role
from offpay.errors import TokenError
from offpay.money import Money
from offpay.tokens.desk import DEFAULT_MAX_ANCESTRY
from offpay.tokens.element import TokenElement
from offpay.tokens.messages import (
    SyncRequest,
    VaultAddress,
    VaultAddressRequest,
    WithdrawRequest,
)
from offpay.tokens.model import Address, Token
from offpay.transport.memory import MemoryNetwork
from offpay.wire.envelope import Signed, open_signed, sign
from offpay.wire.messages import LimitsPolicy


class TokenWalletApp:
    def __init__(
        self,
        element: TokenElement,
        institution: str,
        network: MemoryNetwork,
        max_ancestry: int = DEFAULT_MAX_ANCESTRY,
    ) -> None:
        self.element = element
        self.institution = institution
        self.network = network
        self.max_ancestry = max_ancestry
        self.engine = f"{institution}/engine"
        # Requests sent but not answered (a cut connection): they are sent again, byte for
        # byte, by retry_pending(); the intermediary answers a repeated request as before.
        self.outbox: list[tuple[str, bytes]] = []

    def _send(self, kind: str, msg: object) -> bytes:
        return self._send_bytes(kind, sign(msg, self.element.credential).to_bytes())  # type: ignore[arg-type]

    def _send_bytes(self, kind: str, data: bytes) -> bytes:
        if kind == "token-vault-address":
            return self.network.send(self.institution, kind, data)
        self.outbox.append((kind, data))
        answer = self.network.send(self.institution, kind, data)
        self.outbox.remove((kind, data))
        return answer

    def retry_pending(self) -> list[Token]:
        """Send every unanswered withdrawal or deposit again; store what comes back."""
        received = []
        for kind, data in list(self.outbox):
            answer = self.network.send(self.institution, kind, data)
            self.outbox.remove((kind, data))
            for token in self._online(answer):
                if not self.element.holds(token.id):
                    self.element.store(token)
                    received.append(token)
        return received

    def _online(self, data: bytes) -> tuple[Token, ...]:
        """Every answer from the intermediary carries the latest revocation list, its signed
        policy and time: the element takes them itself (TokenElement.online)."""
        answer, _ = self.element.online(data, self.institution)
        return answer.tokens

    def sync(self) -> None:
        """An online moment that moves no money: the element's policy, revocation list and
        clock brought up to date (the app does this whenever it goes online)."""
        request = SyncRequest(self.element.element_id, self.engine, self.element.challenge())
        self._online(self._send("token-sync", request))

    def apply_policy(self, signed: Signed[LimitsPolicy]) -> LimitsPolicy:
        """The intermediary's newer signed limits policy, handed to the element at an online
        moment; the element checks its signature and version (it trusts no app)."""
        return self.element.apply_policy(signed, self.institution)

    def withdraw(self, amount: Money) -> Token:
        """WithdrawToken, then renew what has grown too long (the next online moment). The
        element's holding limit is asked first, so no token is minted that it would refuse."""
        self.element.check_limits(amount, 0)
        address = self.element.keygen()
        request = WithdrawRequest(
            self.element.element_id, self.engine, self.element.challenge(), amount, address
        )
        (token,) = self._online(self._send("token-withdraw", request))
        self.element.store(token)
        self.renew_long()
        return token

    def _vault(self) -> Address:
        request = VaultAddressRequest(self.element.element_id, self.engine, os.urandom(16))
        grant, _ = open_signed(
            self._send("token-vault-address", request),
            VaultAddress,
            self.element.trust,
            Role.ENGINE,
            receiver=self.element.element_id,
            institution=self.institution,
        )
        return grant.address

    def _return(self, token: Token, renew_to: Address | None) -> tuple[Token, ...]:
        # Built and sealed to the intermediary inside the element: the app carries ciphertext.
        data = self.element.deposit_request(token.id, self._vault(), self.engine, renew_to)
        return self._online(self._send_bytes("token-deposit", data))

    def deposit(self, amount: Money) -> None:
        """DepositToken: ``amount`` in tokens back to the online wallet."""
        self._return(self.element.select(amount), None)
        self.renew_long()

    def renew_long(self) -> list[Token]:
        """Replace every token whose history exceeds the policy by a freshly minted one."""
        renewed = []
        for token in self.element.tokens():
            if self.element.verify(token).length > self.max_ancestry:
                for fresh in self._return(token, self.element.keygen()):
                    if fresh.value != token.value:
                        raise TokenError("renewal returned another value", code="token.renewal")
                    self.element.store(fresh)
                    renewed.append(fresh)
                # No fresh token: the intermediary could not mint one, so it credited the
                # value to the online wallet instead.
        return renewed
