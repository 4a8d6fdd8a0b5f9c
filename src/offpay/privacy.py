"""Who learns what (docs/privacy.md), in a form a test can hold the code to.

For each party, every message field it may receive, named ``tag.field`` by the codec's own
message tags, and ``tag.field=kind`` where the value names a device or a person
(``offpay.wire.exposure.Kind``). ``tests/test_privacy_views.py`` records what each party
actually receives across the flows of both schemes (``offpay.sim.recording``) and fails on a
field this table does not grant. A party whose row grants a whole message learns all of it.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Mapping
from types import MappingProxyType

from offpay.crypto.revocation import RevocationList
from offpay.liabilities.messages import (
    HoldingsRequest,
    HoldingsStatement,
    InclusionProof,
    LiabilitiesAnswer,
    LiabilitiesCommitment,
    Sibling,
)
from offpay.tokens.messages import (
    DepositRequest,
    DoubleSpendReport,
    MintRequest,
    MintResult,
    RedeemRequest,
    VaultAddress,
    VaultAddressRequest,
    WithdrawRequest,
)
from offpay.tokens.model import Address, Endorsement, Token, TokenBody
from offpay.tokens.sealing import SealedTokenMessage
from offpay.tokens.transfer import (
    AddressReply,
    Confirmation,
    DiscoveryProof,
    Hello,
)
from offpay.wire.codec import Message
from offpay.wire.enciphered_pin import EncipheredPin, PinChallenge
from offpay.wire.envelope import Signed
from offpay.wire.exposure import Kind, Seen
from offpay.wire.messages import (
    BatchItem,
    BatchResult,
    CardConfirmation,
    CardIdentity,
    CardInstruction,
    CardSession,
    CardStatus,
    CreditBatch,
    CreditRequest,
    DebitBatch,
    DebitRequest,
    Disclosure,
    DisclosureRequest,
    IntakeKey,
    LimitsPolicy,
    LogEntry,
    NotariseBatch,
    OfflinePayment,
    PaymentAsk,
    PaymentRequest,
    PoolRequest,
    RefundRequest,
    ReserveTransfer,
    RevokeRequest,
    SessionStart,
    SettlementResult,
    TerminalInstruction,
    TerminalUpload,
)
from offpay.wire.sealed_payment import SealedPayment
from offpay.wire.sealed_upload import SealedToIntermediary


class Party(enum.StrEnum):
    CENTRAL_BANK = "central bank"
    # The payer's and the payee's intermediary run the same engine and play both roles (a
    # card's session carries payments out and in); docs/privacy.md says which message each
    # role receives.
    INTERMEDIARY = "intermediary"
    PHONE_APP = "phone app"  # the card's relay and the token wallet app
    POS_APP = "PoS app"
    RELAY = "eavesdropping relay"  # on an offline hop: a card's contactless link, phone to phone
    AUDITOR = "auditor"


def whole(*classes: type[Message]) -> frozenset[str]:
    """Every field of each message type (read from the codec's own declarations)."""
    return frozenset(f"{cls.TYPE}.{f.name}" for cls in classes for f in dataclasses.fields(cls))


def grant(*names: str) -> frozenset[str]:
    """Fields named one by one (``tag.field`` or ``tag.field=kind``)."""
    return frozenset(names)


DEVICE, CERT = Kind.DEVICE_ID, Kind.DEVICE_CERTIFICATE
INSTITUTION_CERT = Kind.INSTITUTION_CERTIFICATE

# Every signed message carries its signer's chain: an institution's, or a device's.
SIGNED_BY_INSTITUTIONS = whole(Signed) | grant(f"signed.chain={INSTITUTION_CERT}")
SIGNED_BY_DEVICES = SIGNED_BY_INSTITUTIONS | grant(f"signed.chain={CERT}")

# An element's address: a fresh ownership key, endorsed by the element (its id, certificate).
ADDRESS = whole(Address, Endorsement) | grant(
    f"endorsement.element={DEVICE}",
    f"endorsement.chain={CERT}",
    f"endorsement.chain={INSTITUTION_CERT}",
)

# A token names, in its endorsement and in each ancestor's and sibling's, the element that
# held it: a device pseudonym and certificate per earlier owner (offpay.tokens.privacy).
TOKENS = whole(Token, TokenBody) | ADDRESS

# The payments themselves: both devices' ids, the payee's request and, inside the signed
# envelopes, both devices' certificates.
PAYMENTS = whole(OfflinePayment, PaymentRequest) | grant(
    f"offline-payment.sender={DEVICE}",
    f"offline-payment.receiver={DEVICE}",
    f"payment-request.sender={DEVICE}",
    f"payment-request.receiver={DEVICE}",
)

# Between the payer's card and the payee's device, whichever relay carries it.
OFFLINE_HOP = whole(CardIdentity, PaymentRequest, SealedPayment) | grant(
    f"card-identity.card={DEVICE}",
    f"card-identity.chain={CERT}",
    f"card-identity.chain={INSTITUTION_CERT}",
    f"payment-request.sender={DEVICE}",
    f"payment-request.receiver={DEVICE}",
)

# Between two phones' secure elements in a token transfer: discovery, the receiver's address
# and confirmation in clear; the offer and the transfer, which carry the token with its whole
# history, sealed to the receiving element (offpay.tokens.sealing).
TOKEN_TRANSFER = (
    whole(Hello, DiscoveryProof, AddressReply, Confirmation, SealedTokenMessage)
    | ADDRESS
    | grant(f"token-hello.element={DEVICE}", f"token-hello.chain={CERT}")
    | grant(f"token-hello.chain={INSTITUTION_CERT}")
    | grant(
        *(
            f"{tag}.{end}={DEVICE}"
            for tag in (
                "token-discovery-proof",
                "token-address-reply",
                "token-confirmation",
            )
            for end in ("sender", "receiver")
        )
    )
)

# What a device seals to its intermediary (offpay.wire.sealed_upload), as a relay app sees it:
# the intermediary's id and the key's version; and the intermediary's signed key, in the
# instructions that renew it.
SEALED_TO_INTERMEDIARY = whole(SealedToIntermediary, IntakeKey)

# The PIN on its way from the PIN entry device to the card (offpay.wire.enciphered_pin): the
# card's signed challenge and key, and the PIN sealed to them; never the PIN.
ENCIPHERED_PIN = whole(PinChallenge, EncipheredPin) | grant(f"pin-challenge.sender={DEVICE}")

POLICY_AND_REVOCATIONS = whole(LimitsPolicy, RevocationList) | grant(
    f"revocation-list.devices={DEVICE}"
)

# The target of issue 19, point 2 (the notary records a pseudonym and a commitment, no
# payment id derived from a device): what the central bank may receive of a payment.
NOTARY_TARGET = grant(
    *(f"notarise-request.{f}" for f in ("sender", "receiver", "nonce")),
    *(f"notarise-batch.{f}" for f in ("sender", "receiver", "nonce", "items")),
    *(
        f"{tag}.{f}"
        for tag in ("notarise-request", "notarise-item")
        for f in ("pseudonym", "commitment", "amount", "payer_institution", "payee_institution")
    ),
)

# Issue 18's controls: an intermediary asks the central bank for a signed statement of its
# holdings (to publish its liabilities); a phone gets its customer's inclusion proof.
HOLDINGS = whole(HoldingsRequest)
LIABILITIES = whole(
    HoldingsStatement, LiabilitiesCommitment, InclusionProof, Sibling, LiabilitiesAnswer
) | grant("inclusion-proof.customer_id=customer")  # its own customer's id

# Only in a dispute, by its signed and logged request (issue 19, point 2; docs/notary-privacy.md):
# the one payment's evidence, with its devices.
IN_A_DISPUTE = whole(Disclosure) | PAYMENTS | SIGNED_BY_DEVICES

LEARNS: Mapping[Party, frozenset[str]] = MappingProxyType(
    {
        Party.CENTRAL_BANK: SIGNED_BY_INSTITUTIONS
        | NOTARY_TARGET
        | HOLDINGS
        | whole(ReserveTransfer, PoolRequest, RevokeRequest)
        | grant(f"revoke-request.device={DEVICE}")  # to revoke it network-wide
        # The token scheme: minting to an element's address, redeeming a token with its
        # history, a double spend's evidence.
        | whole(MintRequest, RedeemRequest, DoubleSpendReport)
        | TOKENS,
        Party.INTERMEDIARY: SIGNED_BY_DEVICES
        | PAYMENTS
        | whole(DisclosureRequest, HoldingsStatement)
        | POLICY_AND_REVOCATIONS
        | whole(CardSession, LogEntry, CardConfirmation, TerminalUpload)
        | grant(
            f"card-session.sender={DEVICE}",
            f"card-confirmation.sender={DEVICE}",
            f"terminal-upload.sender={DEVICE}",
        )
        | whole(DebitRequest, DebitBatch, CreditRequest, CreditBatch, RefundRequest)
        | whole(SettlementResult, BatchResult, BatchItem, NotariseBatch)
        | whole(CardInstruction)
        | grant(f"card-instruction.receiver={DEVICE}")
        | whole(WithdrawRequest, DepositRequest, VaultAddressRequest, MintResult)
        | grant(
            f"withdraw-request.sender={DEVICE}",
            f"deposit-request.sender={DEVICE}",
            f"vault-address-request.sender={DEVICE}",
        )
        | TOKENS,
        Party.PHONE_APP: SIGNED_BY_DEVICES
        | LIABILITIES
        | POLICY_AND_REVOCATIONS
        | OFFLINE_HOP
        | ENCIPHERED_PIN
        | grant("apdu.decline_request")
        | whole(PaymentAsk, SessionStart, CardStatus)
        | grant(f"card-status.card={DEVICE}")
        # The card's session (its log: other people's payments) and its confirmation go
        # sealed to the intermediary; the instruction stays readable: the new balance and
        # limits are what the app shows its holder (docs/privacy.md).
        | SEALED_TO_INTERMEDIARY
        | whole(CardInstruction)
        | grant(f"card-instruction.receiver={DEVICE}")
        | TOKEN_TRANSFER
        # The token desk's requests and answers it carries for the element. A deposit or a
        # renewal (a token with its history) goes sealed to the intermediary; a withdrawal
        # (an amount and a fresh address) and the answers stay readable: the answers' tokens
        # are freshly minted ones, with no earlier owner.
        | whole(WithdrawRequest, VaultAddressRequest, VaultAddress, MintResult)
        | grant(
            f"withdraw-request.sender={DEVICE}",
            f"vault-address-request.sender={DEVICE}",
            f"vault-address.receiver={DEVICE}",
            f"mint-result.receiver={DEVICE}",
        )
        | TOKENS,
        Party.POS_APP: SIGNED_BY_DEVICES
        | POLICY_AND_REVOCATIONS
        | OFFLINE_HOP
        | ENCIPHERED_PIN
        # At sync it carries the module's upload sealed to the intermediary, and the
        # intermediary's readable instruction back (what it clears).
        | SEALED_TO_INTERMEDIARY
        | whole(TerminalInstruction)
        | grant(f"terminal-instruction.receiver={DEVICE}"),
        # On an offline hop: the payer card's identity, the payee's signed request and the
        # payment sealed to the payee (what is inside, only the payee reads); a shop's reader
        # also carries the PIN to the card, enciphered to it. The online hops run over
        # mutually authenticated TLS (docs/tls.md) and show an eavesdropper no field.
        Party.RELAY: SIGNED_BY_DEVICES
        | OFFLINE_HOP
        | ENCIPHERED_PIN
        | whole(PaymentAsk)
        # Phone to phone: no token; the offer and the transfer cross sealed.
        | TOKEN_TRANSFER,
        # Auditor: reads books, not messages; see AUDITOR_READS.
        Party.AUDITOR: frozenset(),
    }
)


# The tables the independent auditor (`offpay audit`, issue 18, docs/audit.md) reads from
# the parties' databases, read-only. It re-verifies every settled payment's evidence, so it
# learns what the intermediaries learn of each payment (both devices' ids and certificates,
# amount, counter) and each account's balance under its id; it reads no customer table (no
# name). `tests/test_privacy_views.py` records the tables a run reads and holds it to this.
AUDITOR_TABLES = frozenset(
    {
        # central bank
        "institutions", "issuance", "notary", "reserve_moves", "central_moves",
        "liquidity_pool", "pool_loans", "minted_tokens", "consumed_tokens", "redeemed_tokens",
        "seen_requests",  # only the holdings statements enclosed in liabilities commitments
        # each intermediary
        "accounts", "devices", "debits", "credits", "journal", "instructions", "pool_repays",
        "liability_commitments",
    }
)  # fmt: skip

# What the network's conservation audit (`offpay books`, offpay.sim.network.audit_books)
# aggregates per institution (offpay.sim.network.Books), never an account, a device or a
# payment.
AUDITOR_READS = frozenset(
    {"issued", "tokens", "pool", "positions", "flows", "totals", "moves", "payments_in_transit"}
)


def not_granted(party: Party, seen: Iterable[Seen]) -> list[str]:
    """What ``party`` received that its row does not grant, sorted: empty when it keeps to
    the table."""
    allowed = LEARNS[party]
    return sorted({str(s) for s in seen} - allowed)
