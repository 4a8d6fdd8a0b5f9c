"""What the auditor reports: typed findings, each naming a party, a stable code and the
records behind it, so that an operator can look each one up in that party's books."""

from __future__ import annotations

from dataclasses import dataclass

# Stable codes, one per kind of discrepancy (docs/audit.md lists what each means).
EVIDENCE_INVALID = "audit.evidence_invalid"  # a stored payment does not verify
EVIDENCE_MISMATCH = "audit.evidence_mismatch"  # a row disagrees with its signed payment
NOTARY_WITHOUT_DEBIT = "audit.notary_without_debit"
CREDIT_WITHOUT_NOTARY = "audit.credit_without_notary"
CREDIT_MISSING = "audit.credit_missing"  # the payer's bank says credited; the payee has none
SETTLEMENT_MISMATCH = "audit.settlement_mismatch"  # debit, notary, credit disagree
UNBACKED_MOVE = "audit.unbacked_move"  # a settlement journal row with no debit or credit
MOVED_TWICE = "audit.moved_twice"  # a payment booked more than once in the journal
ROW_ALTERED = "audit.row_altered"  # a row audited before changed since
ROW_MISSING = "audit.row_missing"  # a row audited before is gone
BALANCE_MISMATCH = "audit.balance_mismatch"  # a wallet differs from its journal
HOLDINGS_MISMATCH = "audit.holdings_mismatch"  # central-bank holdings against wallets
NOT_CONSERVED = "audit.not_conserved"  # money issued against money held
INSTRUCTION_INVALID = "audit.instruction_invalid"  # a stored instruction does not verify
INSTRUCTION_BEYOND_SHADOW = "audit.instruction_beyond_shadow"
INSTRUCTION_UNRECORDED = "audit.instruction_unrecorded"  # issued, by the device's record
CONFIRMATION_INVALID = "audit.confirmation_invalid"
POOL_MISMATCH = "audit.pool_mismatch"
TOKEN_MISMATCH = "audit.token_mismatch"


@dataclass(frozen=True, order=True)
class Finding:
    """One discrepancy: ``party`` is whose books show it, ``records`` the ids to look up
    (payment ids in hex, ``journal:<id>``, ``instruction:<id>``, ``loan:<hex>``...)."""

    party: str
    code: str
    records: tuple[str, ...]
    detail: str

    def line(self) -> str:
        return f"{self.party}: {self.code} [{', '.join(self.records)}] {self.detail}"
