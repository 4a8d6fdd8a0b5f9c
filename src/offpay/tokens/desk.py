"""An intermediary's token desk (FEDS 2025-105, WithdrawToken and DepositToken): a user's
online money becomes a token minted to a fresh key of the user's element, and a token comes
back by being signed over to the intermediary's vault element and redeemed at the central
bank, where a double spend is caught. Long ancestries are renewed here too: deposited and
replaced by a fresh minted token."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy import Connection, insert, select

from offpay.crypto.keys import PublicKey
from offpay.crypto.pki import Role
from offpay.crypto.revocation import RevocationList
from offpay.errors import (
    CertificateError,
    DoubleSpend,
    OffpayError,
    Refused,
    SignatureError,
    TokenError,
)
from offpay.money import Money
from offpay.store import schema
from offpay.store.moves import close_move, open_move
from offpay.tokens.element import TokenElement
from offpay.tokens.messages import (
    DepositRequest,
    DoubleSpendReport,
    MintRequest,
    MintResult,
    RedeemRequest,
    SyncRequest,
    VaultAddress,
    VaultAddressRequest,
    WithdrawRequest,
)
from offpay.tokens.mint import MINT_ID
from offpay.tokens.model import Address, Token
from offpay.wire.envelope import Signed, open_signed, sign

if TYPE_CHECKING:
    from offpay.bank.desks import Bank

DEFAULT_MAX_ANCESTRY = 30  # the prototype's renewal threshold


class TokenDesk:
    def __init__(self, bank: Bank, mint_chain: tuple[bytes, ...]) -> None:
        self.bank = bank
        self.mint_chain = mint_chain
        self.vault = TokenElement.manufacture(bank.algorithm)
        vault_id = f"element:{bank.name}:vault"
        chain = bank.ca.issue(vault_id, Role.ELEMENT, self.vault.signer.public_key, bank.clock())
        self.vault.provision(vault_id, chain, bank.root_der, mint_chain)

    # -- issuing elements -----------------------------------------------------------------------

    def issue_element(self, customer_id: str, element: TokenElement) -> str:
        """Provision a customer's secure element: its certificate, the root, the mint key, and
        the current signed policy (as a card's personalisation carries it)."""
        element_id, chain = self.certify_element(customer_id, element.signer.public_key)
        element.provision(element_id, chain, self.bank.root_der, self.mint_chain)
        element.apply_policy(self.bank.policy()[0], self.bank.name)
        # what it seals its deposits and renewals to (issue 19, point 3; from_device opens them)
        element.take_intake_key(self.bank.intake.signed(), self.bank.name)
        return element_id

    def certify_element(
        self, customer_id: str, public_key: PublicKey
    ) -> tuple[str, tuple[bytes, ...]]:
        """An element's id and certificate chain, registered to the customer: what the element
        is provisioned with, here or by the back office over the network."""
        self.bank.balance(f"{customer_id}/online")
        from offpay.device.card import key_fingerprint

        element_id = f"element:{self.bank.name}:{key_fingerprint(public_key)[:12]}"
        chain = self.bank.ca.issue(element_id, Role.ELEMENT, public_key, self.bank.clock())
        self.bank.ledger.register_device(
            element_id, "element", customer_id, f"{customer_id}/online"
        )
        return element_id, chain

    # -- requests from elements -----------------------------------------------------------------

    def vault_address(self, data: bytes) -> bytes:
        request = self.bank.from_device(data, VaultAddressRequest, Role.ELEMENT)
        req, ident = request.message, request.identity
        address = self.vault.keygen()
        with self.bank.db.begin() as conn:
            conn.execute(insert(schema.vault_grants).values(owner=address.owner, element=ident.id))
        grant = VaultAddress(self.bank.id, ident.id, req.nonce, address)
        return sign(grant, self.bank.credential).to_bytes()

    def withdraw(self, data: bytes) -> bytes:
        """WithdrawToken: online wallet to a token the central bank mints to the element."""
        request = self.bank.from_device(data, WithdrawRequest, Role.ELEMENT)
        req, ident, device = request.message, request.identity, request.device
        if request.answered is not None:
            return request.answered
        if req.address.endorsement.element != ident.id:
            raise TokenError("a withdrawal goes to a key of the requesting element")
        self.bank.require_positive(req.amount)
        online = f"{device.customer_id}/online"
        # Keyed by the request, so the same request sent again after a cut connection neither
        # debits twice nor mints twice: the central bank answers a repeated nonce as before.
        key = _key(b"withdraw", ident.id.encode(), req.nonce)
        with self.bank.db.begin() as conn:
            if _journaled(conn, online, "token-refund", key):
                raise Refused("this withdrawal was refused", code="bank.withdrawal_refused")
            if not _journaled(conn, online, "token-withdraw", key):
                self.bank.ledger.move(conn, online, None, req.amount.minor, "token-withdraw", key)
                open_move(conn, key, "mint", req.amount.minor)
        try:
            result = self._mint(req.amount, req.address, key)
        except OffpayError as exc:
            if exc.code.startswith("network."):
                raise  # outcome unknown: the same request, sent again, completes it
            with self.bank.db.begin() as conn:  # the mint refused: nothing left the wallet
                self.bank.ledger.move(conn, None, online, req.amount.minor, "token-refund", key)
                close_move(conn, key)
            raise
        with self.bank.db.begin() as conn:
            close_move(conn, key)
        return self._answer(ident.id, req.nonce, result.tokens, req.amount, result)

    def deposit(self, data: bytes) -> bytes:
        """DepositToken (or renewal): the vault takes the token, the central bank redeems it
        after checking its history against every token ever consumed."""
        request = self.bank.from_device(data, DepositRequest, Role.ELEMENT)
        req, ident, device = request.message, request.identity, request.device
        if request.answered is not None:
            return request.answered
        token = req.token
        g = schema.vault_grants
        with self.bank.db.connect() as conn:
            granted = conn.execute(select(g.c.element).where(g.c.owner == token.owner)).scalar()
        if granted != ident.id:
            # A token signed over to a vault key handed to another element (one intercepted
            # on its way, say) is not this depositor's to credit.
            raise TokenError("the token is not signed over to a vault key given to this element")
        if req.renew_to is not None:  # checked before anything is redeemed
            if req.renew_to.endorsement.element != ident.id:
                raise TokenError("a renewal goes to a key of the requesting element")
            self.vault.verify_address(req.renew_to)
        if not self.vault.holds(token.id):
            try:
                self.vault.store(token)  # verifies the whole history, offline rules
            except DoubleSpend:
                self._report(token)  # the central bank verifies it and revokes the element
                raise
            except (TokenError, CertificateError, SignatureError) as exc:
                # The depositor's own element signed an invalid token over to us: only a broken
                # element can. It is blocked here and recorded for investigation.
                if exc.code not in ("token.not_ours", "token.duplicate"):
                    self.bank.block_device(ident.id, f"deposited an invalid token: {exc.code}")
                raise
        # The vault keeps the token until the deposit is answered, and every step is keyed by
        # the token, so a deposit sent again after a cut connection completes exactly once.
        redeem = RedeemRequest(self.bank.id, MINT_ID, _key(b"redeem", token.id), token)
        with self.bank.db.begin() as conn:
            open_move(conn, redeem.nonce, "redeem", token.value.minor)
        try:
            answer = self.bank.network.send(
                "central-bank", "redeem-token", sign(redeem, self.bank.credential).to_bytes()
            )
            redeemed = self._open_result(answer)
        except OffpayError as exc:
            if not exc.code.startswith("network."):
                self.vault.release(token.id)  # a double spend or a counterfeit: burned, unpaid
                with self.bank.db.begin() as conn:
                    close_move(conn, redeem.nonce)
            raise
        if req.renew_to is not None:
            renewal = _key(b"renew", token.id)
            with self.bank.db.begin() as conn:
                close_move(conn, redeem.nonce)
                open_move(conn, renewal, "mint", token.value.minor)
            try:  # the redeemed value, minted anew
                fresh = self._mint(token.value, req.renew_to, renewal)
            except OffpayError as exc:
                if exc.code.startswith("network."):
                    raise
                # e.g. revoked meanwhile: the value goes to the online wallet instead
            else:
                zero = Money.zero(token.value.currency)
                with self.bank.db.begin() as conn:
                    close_move(conn, renewal)
                answered = self._answer(ident.id, req.nonce, fresh.tokens, zero, fresh)
                self.vault.release(token.id)
                return answered
        online = f"{device.customer_id}/online"
        with self.bank.db.begin() as conn:
            if not _journaled(conn, online, "token-deposit", token.id):
                self.bank.ledger.move(
                    conn, None, online, token.value.minor, "token-deposit", token.id
                )
            close_move(conn, redeem.nonce)
            if req.renew_to is not None:
                close_move(conn, _key(b"renew", token.id))
        answered = self._answer(ident.id, req.nonce, (), token.value, redeemed)
        self.vault.release(token.id)
        return answered

    def sync(self, data: bytes) -> bytes:
        """An element's online moment that moves no money: the policy, the revocation list
        and the intermediary's time, answering the element's challenge."""
        request = self.bank.from_device(data, SyncRequest, Role.ELEMENT)
        req, ident = request.message, request.identity
        if request.answered is not None:
            return request.answered
        # the central bank's current list (a cut connection: the element asks again later)
        listing = Signed.from_bytes(self.bank.network.send("central-bank", "revocation-list", b""))
        zero = Money.zero(self.bank.currency)
        return self._signed_answer(ident.id, req.nonce, (), zero, listing)

    # -- with the central bank ------------------------------------------------------------------

    def _mint(self, value: Money, address: Address, nonce: bytes) -> MintResult:
        request = MintRequest(self.bank.id, MINT_ID, nonce, value, address)
        answer = self.bank.network.send(
            "central-bank", "mint-token", sign(request, self.bank.credential).to_bytes()
        )
        return self._open_result(answer)

    def _report(self, token: Token) -> None:
        report = DoubleSpendReport(self.bank.id, MINT_ID, self.bank.nonce(), token)
        answer = self.bank.network.send(
            "central-bank", "report-double-spend", sign(report, self.bank.credential).to_bytes()
        )
        self._open_result(answer)

    def _open_result(self, data: bytes) -> MintResult:
        result, _ = open_signed(data, MintResult, self.bank.trust, Role.MINT, receiver=self.bank.id)
        self.vault.apply_revocations(result.revocations)  # the vault refuses revoked elements too
        return result

    def _answer(
        self,
        to: str,
        nonce: bytes,
        tokens: tuple[Token, ...],
        credited: Money,
        result: MintResult,
    ) -> bytes:
        return self._signed_answer(to, nonce, tokens, credited, result.revocations)

    def _signed_answer(
        self,
        to: str,
        nonce: bytes,
        tokens: tuple[Token, ...],
        credited: Money,
        revocations: Signed[RevocationList],
    ) -> bytes:
        """An element's online moment: what it asked for, the revocation list, and, as a card's
        sync instruction carries them, the current signed policy and the intermediary's time."""
        signed_policy, _ = self.bank.policy()
        now = int(self.bank.clock().timestamp())
        answer = MintResult(
            self.bank.id, to, nonce, tokens, credited, revocations, signed_policy, now
        )
        payload = sign(answer, self.bank.credential).to_bytes()
        with self.bank.db.begin() as conn:
            self.bank.ledger.remember(conn, to, nonce, payload)
        return payload

    def handlers(self) -> dict[str, Callable[[bytes], bytes]]:
        return {
            "token-withdraw": self.withdraw,
            "token-deposit": self.deposit,
            "token-vault-address": self.vault_address,
            "token-sync": self.sync,
        }


def _key(*parts: bytes) -> bytes:
    """A request nonce derived from what it is about, so a retry repeats it exactly."""
    return hashlib.sha256(b"offpay-token-desk\x00" + b"\x00".join(parts)).digest()[:16]


def _journaled(conn: Connection, account: str, reason: str, reference: bytes) -> bool:
    j = schema.journal
    found = conn.execute(
        select(j.c.id).where(
            j.c.account_id == account, j.c.reason == reason, j.c.reference == reference
        )
    ).first()
    return found is not None
