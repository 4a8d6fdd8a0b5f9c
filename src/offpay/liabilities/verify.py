"""Checking a published commitment and an inclusion proof, as a customer's phone or an auditor
does: the signatures lead to the network's root, the central bank's enclosed statement names
the publisher and states the committed total, the proof leads to the committed root."""

from __future__ import annotations

from offpay.crypto.pki import Identity, Role, TrustStore
from offpay.errors import OffpayError
from offpay.liabilities.messages import HoldingsStatement, InclusionProof, LiabilitiesCommitment
from offpay.liabilities.tree import Balances, Node, ProofError, verify
from offpay.wire.envelope import Signed, open_signed


class CommitmentError(OffpayError):
    """A commitment whose signatures, statement or total do not hold together."""

    code = "liabilities.bad_commitment"


class BalanceMismatch(OffpayError):
    code = "liabilities.balance_mismatch"


def open_commitment(
    signed: bytes | Signed[LiabilitiesCommitment], trust: TrustStore, institution: str | None = None
) -> tuple[LiabilitiesCommitment, HoldingsStatement]:
    """The commitment, signed by an intermediary's engine (of ``institution`` if given), with
    the central bank's signed statement of that intermediary's holdings equal to its total."""
    try:
        body, ident = _open_commitment(signed, trust, institution)
        statement, _ = _open_statement(body.holdings, trust, body.sender)
    except OffpayError as exc:
        raise CommitmentError(f"the commitment does not verify: {exc.message}") from None
    if ident.institution != body.institution or statement.institution != body.institution:
        raise CommitmentError("the commitment names another intermediary than its signer")
    if statement.holdings.currency != body.currency or statement.holdings.minor != body.total:
        raise CommitmentError(
            f"the commitment's total {body.total} is not the holdings {statement.holdings} the "
            "central bank stated"
        )
    return body, statement


def _open_commitment(
    signed: bytes | Signed[LiabilitiesCommitment], trust: TrustStore, institution: str | None
) -> tuple[LiabilitiesCommitment, Identity]:
    # check_revoked=False: published before any later revocation, it is still evidence
    return open_signed(
        signed,
        LiabilitiesCommitment,
        trust,
        Role.ENGINE,
        receiver=None,
        institution=institution,
        check_revoked=False,
    )


def _open_statement(
    data: Signed[HoldingsStatement], trust: TrustStore, engine: str
) -> tuple[HoldingsStatement, Identity]:
    return open_signed(
        data, HoldingsStatement, trust, Role.NOTARY, receiver=engine, check_revoked=False
    )


def check_inclusion(
    commitment: LiabilitiesCommitment,
    proof: InclusionProof,
    customer_id: str,
    expected: Balances | None = None,
) -> Balances:
    """The customer's own leaf is counted in the commitment's root and total; with
    ``expected`` (the customer's statement for the period), the leaf shows those balances."""
    if proof.institution != commitment.institution or proof.period != commitment.period:
        raise ProofError("the proof is for another intermediary or period than the commitment")
    if proof.customer_id != customer_id:
        raise ProofError("the proof is for another customer")
    mine = Balances(proof.online, proof.shadow, proof.merchant)
    verify(
        Node(commitment.root, commitment.total),
        commitment.leaf_count,
        proof.position,
        customer_id,
        proof.salt,
        mine,
        tuple(Node(s.hash, s.sum) for s in proof.siblings),
    )
    if expected is not None and expected != mine:
        raise BalanceMismatch(
            f"the published leaf counts online {mine.online}, shadow {mine.shadow}, merchant "
            f"{mine.merchant}, not the balances expected for period {proof.period}"
        )
    return mine
