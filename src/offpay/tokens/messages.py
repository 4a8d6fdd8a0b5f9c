"""Requests between token wallets, intermediaries and the central bank's minting service
(FEDS 2025-105, Figure 6: MintToken, RedeemToken, WithdrawToken, DepositToken)."""

from __future__ import annotations

from offpay.crypto.revocation import RevocationList
from offpay.money import Money
from offpay.tokens.model import Address, Token
from offpay.wire.codec import Message, message
from offpay.wire.envelope import Signed
from offpay.wire.messages import LimitsPolicy


@message("mint-request")
class MintRequest(Message):
    """An intermediary converts customers' online money into a token owned by ``address``."""

    sender: str
    receiver: str
    nonce: bytes
    value: Money
    address: Address


@message("redeem-request")
class RedeemRequest(Message):
    """An intermediary returns a token its vault received; value goes back online."""

    sender: str
    receiver: str
    nonce: bytes
    token: Token


@message("mint-result")
class MintResult(Message):
    """The central bank's answer to an intermediary, and the intermediary's desk answer to an
    element: an element's online moment. To an element it also carries the intermediary's
    current signed limits policy and its signed time (Unix seconds), and ``nonce`` is the
    element's own fresh challenge, so an old answer cannot restart the element's counters."""

    sender: str
    receiver: str
    nonce: bytes
    tokens: tuple[Token, ...]
    value: Money
    revocations: Signed[RevocationList]
    policy: Signed[LimitsPolicy] | None = None
    engine_time: int | None = None  # to an element: the intermediary's time, Unix seconds


@message("withdraw-request")
class WithdrawRequest(Message):
    """Signed by the user's element: online wallet to a token owned by a fresh key of it."""

    sender: str
    receiver: str
    nonce: bytes
    amount: Money
    address: Address


@message("token-sync-request")
class SyncRequest(Message):
    """Signed by the user's element: an online moment that moves no money (the app going
    online with nothing to deposit or withdraw); answered with the policy, the revocation
    list and the intermediary's time. ``nonce`` is the element's challenge."""

    sender: str
    receiver: str
    nonce: bytes


@message("vault-address-request")
class VaultAddressRequest(Message):
    sender: str
    receiver: str
    nonce: bytes


@message("vault-address")
class VaultAddress(Message):
    """Signed by the intermediary's engine: where the element sends a token to deposit it."""

    sender: str
    receiver: str
    nonce: bytes
    address: Address


@message("deposit-request")
class DepositRequest(Message):
    """Signed by the user's element: a token already signed over to the intermediary's vault.
    With ``renew_to``, the value comes back as a fresh minted token instead of online money."""

    sender: str
    receiver: str
    nonce: bytes
    token: Token
    renew_to: Address | None


@message("double-spend-report")
class DoubleSpendReport(Message):
    """An intermediary hands the central bank a token whose own history shows a double
    spend (its vault refused it offline), so that the element that signed twice is revoked."""

    sender: str
    receiver: str
    nonce: bytes
    token: Token
