"""The balance-based scheme's messages, in the order the flows use them.

Every message that crosses an untrusted hop names ``sender`` and ``receiver`` and carries a
nonce or counter; the receiver's state decides whether it was seen before.
"""

from __future__ import annotations

import enum
import hashlib
from functools import cached_property

from offpay.crypto.revocation import RevocationList
from offpay.money import Money
from offpay.wire.codec import Message, message
from offpay.wire.envelope import Signed


def payment_tx_id(payer: str, payer_seq: int) -> bytes:
    """An offline payment's network-wide id: the payer device and its never-resetting counter.

    Derived, not chosen, so that two different payments with the same id prove a cloned or
    rolled-back device.
    """
    return hashlib.sha256(f"offpay-tx\x00{payer}\x00{payer_seq}".encode()).digest()[:16]


# --- offline: payee asks, payer pays -------------------------------------------------------


@message("card-identity")
class CardIdentity(Message):
    """What a card shows a terminal or another card before a payment (unsigned: the challenge
    is only useful to the card that issued it)."""

    card: str
    institution: str
    chain: tuple[bytes, ...]
    challenge: bytes


@message("payment-request")
class PaymentRequest(Message):
    """Signed by the payee (terminal module or recipient card), addressed to one payer card."""

    sender: str
    receiver: str
    payee_institution: str
    request_id: bytes
    challenge: bytes
    amount: Money
    # The payee's time (Unix seconds) as its module knows it: never earlier than what the
    # module last saw. The payer card's time limits read it; absent from a payee without one.
    payee_time: int | None = None
    # The payee device's X25519 key for this request (raw, 32 bytes): the payer's card seals
    # its payment to it for the offline hop (offpay.wire.sealed_payment); absent from a payee
    # made before sealing.
    seal_to: bytes | None = None


@message("offline-payment")
class OfflinePayment(Message):
    """Signed by the payer card; embeds the payee's signed request, so both parties signed.

    ``payer_received`` is what the payer card had received offline since its last sync when it
    paid: the most that a liquidity pool may lend against this payment. ``funding`` (policy
    ``receipts`` only) carries the card's unsettled incoming payments that fund this one, so
    whoever synchronises first can settle the chain in causal order."""

    sender: str
    receiver: str
    payer_institution: str
    payee_institution: str
    payer_seq: int
    amount: Money
    request: Signed[PaymentRequest]
    payer_received: Money
    funding: tuple[Signed[OfflinePayment], ...]

    @cached_property
    def tx_id(self) -> bytes:  # looked up many times per payment while it settles
        return payment_tx_id(self.sender, self.payer_seq)


class Direction(enum.StrEnum):
    OUT = "out"
    IN = "in"


@message("log-entry")
class LogEntry(Message):
    """One line of a card's offline log: its own counter value and the signed payment."""

    seq: int
    direction: Direction
    payment: Signed[OfflinePayment]


# --- limits ----------------------------------------------------------------------------------


class Liquidity(enum.StrEnum):
    """What happens when a payer's shadow wallet cannot cover a payment yet (report §3.7).

    ``queue``: the pilot's rules; the payment waits until money reaches the payer.
    ``restrict``: money received offline cannot be spent offline before a sync.
    ``pool``: settlement borrows the gap from the central bank's liquidity pool.
    ``receipts``: the payer card hands over the unsettled payments that fund each payment.
    """

    QUEUE = "queue"
    RESTRICT = "restrict"
    POOL = "pool"
    RECEIPTS = "receipts"


@message("limits-policy")
class LimitsPolicy(Message):
    """Offline limits, issued and signed by an intermediary, versioned, never downgraded."""

    issuer: str
    version: int
    currency: str
    card_max_offline_transactions: int
    card_max_balance: Money
    terminal_max_offline_payments: int
    terminal_max_received: Money
    liquidity: Liquidity
    max_receipts: int  # payments a card may carry as funding receipts (policy ``receipts``)
    blocked_window_hours: int  # a blocked card's earlier payments settle if they arrive within
    # Limits added since the first version: absent (None) means no limit, and a policy signed
    # before they existed decodes with all of them absent. offpay.policy.LIMITS describes each.
    payment_max: Money | None = None
    card_max_offline_spent: Money | None = None
    card_max_daily_payments: int | None = None
    card_max_daily_spent: Money | None = None
    max_offline_hours: int | None = None
    token_max_ancestry: int | None = None
    element_max_holding: Money | None = None


# --- online: card and terminal with their intermediary ---------------------------------------


class Operation(enum.StrEnum):
    SYNC = "sync"
    TOP_UP = "top-up"
    DEFUND = "defund"


@message("intake-key")
class IntakeKey(Message):
    """Signed by an intermediary's engine: the X25519 key its devices seal what they send it
    through a relay to (offpay.wire.sealed_upload). ``version`` grows with every renewal; a
    device never goes back to an older one."""

    sender: str
    institution: str
    version: int
    key: bytes


@message("card-session")
class CardSession(Message):
    """Signed by the card after the PIN: its state, its log, and what the user asked for."""

    sender: str
    receiver: str
    nonce: bytes
    seq: int
    balance: Money
    instruction_no: int
    policy_version: int
    revocation_version: int
    session_no: int  # moves on with every session the card opens: a late one is recognised
    operation: Operation
    amount: Money
    log: tuple[LogEntry, ...]
    last_instruction: Signed[CardInstruction] | None  # proof of its history
    # Ids of the payment requests the card declined (cancelled, lapsed, or still open at this
    # session): a payment answering one of them is given back to its payer.
    declined: tuple[bytes, ...] = ()
    intake_version: int | None = None  # the intake key the card holds (issue 19)


@message("card-instruction")
class CardInstruction(Message):
    """Signed by the card's intermediary engine: the new balance, log cleared through a counter
    value, counters reset, perhaps a newer policy. Valid once: ``instruction_no`` must follow
    the card's last one, ``nonce`` must be the card's open session, ``expected_seq`` its state."""

    sender: str
    receiver: str
    nonce: bytes
    instruction_no: int
    expected_seq: int
    operation: Operation
    balance: Money
    clear_through_seq: int
    policy: Signed[LimitsPolicy] | None
    revocations: Signed[RevocationList] | None
    engine_time: int | None = (
        None  # the intermediary's time (Unix seconds): the card's clock restarts
    )
    intake_key: Signed[IntakeKey] | None = None  # renewed when the card holds an older one


@message("card-confirmation")
class CardConfirmation(Message):
    """Signed by the card once it applied an instruction; releases a defund's money online."""

    sender: str
    receiver: str
    instruction_no: int
    nonce: bytes  # of the session the applied instruction answered: which one it applied
    seq: int
    balance: Money


# Declined requests a payee device may hold before it must synchronise: it refuses new requests
# once its open and declined requests reach this, so that every open one can still be declined.
MAX_DECLINED = 64


@message("terminal-upload")
class TerminalUpload(Message):
    """Signed by the terminal module: every payment received since its last reset."""

    sender: str
    receiver: str
    nonce: bytes
    instruction_no: int
    policy_version: int
    revocation_version: int
    first_seq: int
    payments: tuple[Signed[OfflinePayment], ...]
    declined: tuple[bytes, ...] = ()  # request ids the module declined, as in CardSession
    intake_version: int | None = None  # the intake key the module holds (issue 19)


@message("terminal-instruction")
class TerminalInstruction(Message):
    sender: str
    receiver: str
    nonce: bytes
    instruction_no: int
    clear_through_seq: int
    policy: Signed[LimitsPolicy] | None
    revocations: Signed[RevocationList] | None
    intake_key: Signed[IntakeKey] | None = None  # renewed when the module holds an older one


# --- between intermediaries and with the central bank ----------------------------------------


class SettlementStatus(enum.StrEnum):
    DONE = "done"
    ALREADY = "already"
    SHORT = "short"  # the payer's shadow wallet cannot cover it (report §3.7)
    REFUSED = "refused"


@message("debit-request")
class DebitRequest(Message):
    """Payee's intermediary asks the payer's to take an offline payment from the payer's shadow
    wallet; the signed payment is the evidence, verified by the payer's intermediary."""

    sender: str
    receiver: str
    nonce: bytes
    payment: Signed[OfflinePayment]


@message("notarise-request")
class NotariseRequest(Message):
    """The payer's intermediary records a debited payment with the central bank's notary, which
    moves the value between intermediaries' holdings. The notary learns the amount and the two
    institutions, never the payment's id or evidence: ``pseudonym`` is the id under the payer's
    intermediary's key, ``commitment`` a hash of the evidence (offpay.crypto.pseudonyms)."""

    sender: str
    receiver: str
    nonce: bytes
    pseudonym: bytes
    commitment: bytes
    payer_institution: str
    payee_institution: str
    amount: Money


@message("credit-request")
class CreditRequest(Message):
    """The payer's intermediary tells the payee's to credit a notarised payment."""

    sender: str
    receiver: str
    nonce: bytes
    payment: Signed[OfflinePayment]
    notary_receipt: bytes


@message("refund-request")
class RefundRequest(Message):
    """The payee's intermediary gives a declined payment back: the payer's credits the payer,
    on the notary's receipt for the refund (recorded under its own id)."""

    sender: str
    receiver: str
    nonce: bytes
    payment: Signed[OfflinePayment]
    notary_receipt: bytes


@message("settlement-result")
class SettlementResult(Message):
    """An answer to a settlement request. From the notary, it is the receipt that proves a
    payment was recorded; intermediaries pass it on (``notary_receipt``) as that proof. In the
    notary's answers ``tx_id`` is the payment's pseudonym and ``evidence`` its commitment: the
    payee's intermediary recognises its payment by the commitment (offpay.crypto.pseudonyms)."""

    sender: str
    receiver: str
    nonce: bytes
    tx_id: bytes
    evidence: bytes  # digest of the signed payment the result is about (empty if none)
    amount: Money
    status: SettlementStatus
    code: str
    detail: str
    notary_receipt: bytes


# --- card-local commands (phone or terminal app to card; the card checks what matters) -------


@message("personalisation")
class Personalisation(Message):
    """Signed by the issuing intermediary's engine, addressed to the card's key fingerprint.

    Loaded once, in the issuer's secure facility, on a blank card: it brings the root
    certificate, the card's own chain, its PIN digest and the first limits policy."""

    sender: str
    receiver: str
    card: str
    institution: str
    root: bytes
    chain: tuple[bytes, ...]
    pin_digest: bytes
    policy: Signed[LimitsPolicy]
    intake_key: Signed[IntakeKey] | None = None  # what the card seals its sessions to


@message("payment-ask")
class PaymentAsk(Message):
    """A recipient's phone asks its card to request ``amount`` from the payer it identified."""

    payer: CardIdentity
    amount: Money


@message("session-start")
class SessionStart(Message):
    """The phone asks the card to open an online session with the card's intermediary."""

    receiver: str
    operation: Operation
    amount: Money


@message("card-status")
class CardStatus(Message):
    """What a card shows its holder; unsigned, for display only."""

    card: str
    institution: str
    balance: Money
    seq: int
    offline_transactions: int
    policy_version: int
    pin_tries_left: int


@message("reserve-transfer")
class ReserveTransfer(Message):
    """An intermediary moves e-krona between its reserve at the central bank and what its
    customers hold (``amount`` positive: reserve to customers; negative: back to reserve)."""

    sender: str
    receiver: str
    nonce: bytes
    amount: Money


@message("pool-request")
class PoolRequest(Message):
    """An intermediary draws from (``draw``) or repays (``repay``) the central bank's liquidity
    pool for the loan that funded payment ``loan_id``."""

    sender: str
    receiver: str
    nonce: bytes
    kind: str
    loan_id: bytes
    amount: Money


@message("revoke-request")
class RevokeRequest(Message):
    """An intermediary asks the central bank to revoke one of its own devices, network-wide."""

    sender: str
    receiver: str
    nonce: bytes
    device: str
    reason: str


# --- settling an upload as one batch ---------------------------------------------------------


@message("notarise-item")
class NotariseItem(Message):
    """One debited payment in a :class:`NotariseBatch`: what a :class:`NotariseRequest` names."""

    pseudonym: bytes
    commitment: bytes
    payer_institution: str
    payee_institution: str
    amount: Money


@message("notarise-batch")
class NotariseBatch(Message):
    """The payer's intermediary records the payments it debited for one upload with the
    notary in one request; the notary answers with one signed :class:`BatchResult` over the
    list, which is the receipt for each of its payments."""

    sender: str
    receiver: str
    nonce: bytes
    items: tuple[NotariseItem, ...]


@message("debit-batch")
class DebitBatch(Message):
    """A :class:`DebitRequest` for every payment of one upload whose payer banks with the
    receiver: the payee's intermediary asks once per upload and payer's intermediary.

    ``payments``: each payment's signed envelope as the bytes it arrived as (canonical
    ``signed-offline-payment``), carried without being decoded or encoded again; the batch's
    one signature covers the list. The receiver decodes and verifies each payment once."""

    sender: str
    receiver: str
    nonce: bytes
    payments: tuple[bytes, ...]


@message("credit-batch")
class CreditBatch(Message):
    """A :class:`CreditRequest` for payments the notary recorded in one batch: the payer's
    intermediary asks the payee's once per upload, with the notary's batch receipt."""

    sender: str
    receiver: str
    nonce: bytes
    payments: tuple[bytes, ...]  # signed payments as bytes, as in :class:`DebitBatch`
    notary_receipt: bytes


@message("batch-item")
class BatchItem(Message):
    """The answer about one payment of a batch, in the batch's order. ``receipt``: the index
    of the notary's receipt for it in the answer's ``receipts``, or -1 for none. From the
    notary, ``tx_id`` is the payment's pseudonym and ``evidence`` its commitment."""

    tx_id: bytes
    evidence: bytes
    amount: Money
    status: SettlementStatus
    detail: str
    receipt: int


@message("batch-result")
class BatchResult(Message):
    """The signed answer to a batch request, addressed to its sender and echoing its nonce.
    From the notary, it is the receipt that proves each listed payment was recorded."""

    sender: str
    receiver: str
    nonce: bytes
    items: tuple[BatchItem, ...]
    receipts: tuple[bytes, ...]


# --- a dispute: the central bank asks for a payment's evidence (issue 19) --------------------


@message("disclosure-request")
class DisclosureRequest(Message):
    """The central bank asks the intermediary that notarised the payment it recorded under
    ``pseudonym`` for that payment's evidence, in a dispute. Signed by the notary, addressed
    to one intermediary, answered at most once; the intermediary logs who asked, when and why
    (``reason``)."""

    sender: str
    receiver: str
    nonce: bytes
    pseudonym: bytes
    reason: str


@message("disclosure")
class Disclosure(Message):
    """The intermediary's answer to a :class:`DisclosureRequest`: the signed payment it
    recorded under the pseudonym (both devices' signatures and certificate chains), and
    whether the notary recorded it as the refund of that payment."""

    sender: str
    receiver: str
    nonce: bytes
    pseudonym: bytes
    refund: bool
    payment: Signed[OfflinePayment]
