"""The wire messages of the proof of liabilities (canonical CBOR, :mod:`offpay.wire.codec`)."""

from __future__ import annotations

from offpay.money import Money
from offpay.wire.codec import Message, message
from offpay.wire.envelope import Signed
from offpay.wire.messages import CardInstruction


@message("holdings-request")
class HoldingsRequest(Message):
    """An intermediary's engine asks the central bank what it records as its customers'
    holdings; signed, addressed to the notary, answered once per nonce."""

    sender: str
    receiver: str
    nonce: bytes


@message("holdings-statement")
class HoldingsStatement(Message):
    """The central bank's signed record of one intermediary's holdings, for that request."""

    sender: str
    receiver: str
    institution: str
    nonce: bytes
    holdings: Money
    at: int  # Unix seconds, the central bank's clock


@message("liabilities-commitment")
class LiabilitiesCommitment(Message):
    """Published, addressed to no one: the root of the period's Merkle sum tree, its total
    (equal to the holdings the central bank's enclosed signed statement records) and its
    number of leaves (one per customer)."""

    sender: str  # the intermediary's engine
    institution: str
    period: int
    published_at: int  # Unix seconds
    currency: str
    total: int  # minor units
    leaf_count: int
    root: bytes
    holdings: Signed[HoldingsStatement]  # the central bank's, for this intermediary


@message("liabilities-sibling")
class Sibling(Message):
    hash: bytes
    sum: int


@message("inclusion-proof")
class InclusionProof(Message):
    """One customer's leaf (its salt and its three wallets) and the siblings up to the root;
    which side each sibling is on follows from the position and the leaf count."""

    institution: str
    period: int
    position: int
    customer_id: str
    salt: bytes
    online: int
    shadow: int
    merchant: int
    siblings: tuple[Sibling, ...]


@message("liabilities-answer")
class LiabilitiesAnswer(Message):
    """What a phone gets for its card's signed session: the card's instruction (the session
    is a sync like any other), the newest signed commitment and the customer's proof."""

    instruction: Signed[CardInstruction]
    commitment: Signed[LiabilitiesCommitment]
    proof: InclusionProof
