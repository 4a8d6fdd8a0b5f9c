"""What one played attack shows: an immutable record a person reads and a test asserts on.

Every field is observed while the attack runs (the code a party raised, the anomaly an
intermediary recorded, the loss it booked), never written down in advance.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from offpay.money import Money


class Outcome(StrEnum):
    """How the network answered the attack as a whole."""

    PREVENTED = "prevented"  # every attempt was refused; nothing was lost
    DETECTED = "detected"  # an attempt went through offline and was caught and attributed


class FindingKind(StrEnum):
    REFUSED = "refused"  # a party refused a message with a typed error
    DETECTED = "detected"  # an intermediary recorded an anomaly naming a device
    BLOCKED = "blocked"  # the device was blocked at its intermediary and revoked network-wide


@dataclass(frozen=True)
class Finding:
    """One thing a party did about the attack: refused (with the error's stable code) or
    detected (with the anomaly's kind), at which step of the play."""

    kind: FindingKind
    party: str  # who refused or detected: "Alice's card", "bank-a", "the shop's module"
    code: str  # the error's stable code, or the anomaly's kind
    attempt: str  # what was refused, or what the anomaly is about
    step: int  # the number of actions played when it happened (the "when")

    def as_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind.value,
            "party": self.party,
            "code": self.code,
            "attempt": self.attempt,
            "step": self.step,
        }


@dataclass(frozen=True)
class LossRecord:
    """A loss an intermediary recorded against a device, with the bound the limits policy
    puts on what that device can cost (bank.containment.Loss)."""

    bank: str
    device: str
    amount: Money
    bound: Money
    detail: str

    def as_dict(self) -> dict[str, object]:
        return {
            "bank": self.bank,
            "device": self.device,
            "amount": self.amount.minor,
            "bound": self.bound.minor,
            "currency": self.amount.currency,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class AttackReport:
    """An attack as played: what was tried, who refused or detected it, what it cost and the
    most it could have cost, and how many times money conservation was checked."""

    name: str
    scheme: str
    title: str
    where: str  # "in-process" or the network folder played against over HTTP
    tried: tuple[str, ...]
    findings: tuple[Finding, ...]
    losses: tuple[LossRecord, ...]
    loss: Money
    bound: Money
    conservation_checks: int
    issued: Money
    held: Money

    @property
    def outcome(self) -> Outcome:
        detected = any(f.kind is not FindingKind.REFUSED for f in self.findings)
        return Outcome.DETECTED if detected or self.losses else Outcome.PREVENTED

    @property
    def codes(self) -> frozenset[str]:
        return frozenset(f.code for f in self.findings)

    @property
    def within_bound(self) -> bool:
        return self.loss.minor <= self.bound.minor

    @property
    def conserved(self) -> bool:
        return self.issued == self.held and self.conservation_checks > 0

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "scheme": self.scheme,
            "title": self.title,
            "where": self.where,
            "outcome": self.outcome.value,
            "tried": list(self.tried),
            "findings": [f.as_dict() for f in self.findings],
            "losses": [loss.as_dict() for loss in self.losses],
            "loss": self.loss.minor,
            "bound": self.bound.minor,
            "currency": self.loss.currency,
            "within_bound": self.within_bound,
            "conservation": {
                "checks": self.conservation_checks,
                "issued": self.issued.minor,
                "held": self.held.minor,
                "conserved": self.conserved,
            },
        }
