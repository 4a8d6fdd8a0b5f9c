"""The auditor's check of the published liabilities commitments (issue 18, point 4): each one
verifies (the intermediary's signature and the central bank's enclosed statement, both to the
network's root) and its total equals the holdings the central bank records for that
intermediary at that period. A commitment that fails is a finding naming the intermediary, a
stable code and the records (the commitment's period, the statement)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from offpay.crypto.pki import TrustStore
from offpay.errors import OffpayError
from offpay.liabilities.messages import LiabilitiesCommitment
from offpay.liabilities.verify import open_commitment
from offpay.wire.envelope import Signed, payload_of


@dataclass(frozen=True)
class LiabilityFinding:
    """One discrepancy: who, what (a stable code), and the records behind it."""

    party: str
    code: str
    detail: str
    records: tuple[str, ...]


MAX_STATEMENT_AGE_S = 300  # a statement older than this at publication is not "that moment"


def check_published_totals(
    commitments: Iterable[bytes],
    holdings: Mapping[tuple[str, int], int],
    trust: TrustStore,
    *,
    max_statement_age_s: int = MAX_STATEMENT_AGE_S,
) -> list[LiabilityFinding]:
    """``commitments``: the signed commitments the intermediaries published; ``holdings``:
    the central bank's record of each intermediary's holdings per period, in minor units, as
    (intermediary, period) -> holdings. Besides each total against the record: a central bank
    statement may back one commitment only, and must be from the moment of publication (not
    older than ``max_statement_age_s``). Returns the findings; none when all agree."""
    findings = []
    used: dict[bytes, str] = {}  # statement nonce -> the commitment that enclosed it first
    for signed in commitments:
        try:
            body, statement = open_commitment(signed, trust)
        except OffpayError as exc:
            party, record = _claimed(signed)
            findings.append(
                LiabilityFinding(party, "liabilities.bad_commitment", exc.message, (record,))
            )
            continue
        record = f"{body.institution}/liabilities/{body.period}"
        statement_record = f"central-bank/holdings-statement/{statement.nonce.hex()}"
        if statement.nonce in used:
            findings.append(
                LiabilityFinding(
                    body.institution,
                    "liabilities.statement_reused",
                    f"{record} encloses the central bank's statement that {used[statement.nonce]} "
                    "enclosed already",
                    (record, used[statement.nonce], statement_record),
                )
            )
        used.setdefault(statement.nonce, record)
        age = body.published_at - statement.at
        if not 0 <= age <= max_statement_age_s:
            findings.append(
                LiabilityFinding(
                    body.institution,
                    "liabilities.stale_statement",
                    f"{record} was published {age} s after the holdings statement it encloses",
                    (record, statement_record),
                )
            )
        recorded = holdings.get((body.institution, body.period))
        if recorded is None:
            findings.append(
                LiabilityFinding(
                    body.institution,
                    "liabilities.no_holdings_record",
                    f"no central bank record of {body.institution}'s holdings at period "
                    f"{body.period}",
                    (record,),
                )
            )
        elif recorded != body.total:
            findings.append(
                LiabilityFinding(
                    body.institution,
                    "liabilities.total_differs",
                    f"{body.institution} published a total of {body.total} for period "
                    f"{body.period}; the central bank records holdings of {recorded}",
                    (record, statement_record),
                )
            )
    return findings


def _claimed(signed: bytes) -> tuple[str, str]:
    """Who an unverifiable commitment claims to be from, for the finding."""
    try:
        body = payload_of(Signed.from_bytes(signed), LiabilitiesCommitment)
    except OffpayError:
        return "unknown", "unreadable commitment"
    return body.institution, f"{body.institution}/liabilities/{body.period}"
