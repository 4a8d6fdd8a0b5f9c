"""A play of one attack: the referee (:class:`~offpay.attacks.checked.Checked`) runs every
step, and the play writes down what was tried and what each party did about it, checking each
claim against the network as it goes, so that the report is observed, never asserted."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from offpay.attacks.checked import Checked, DefenceFailed, expect
from offpay.attacks.report import AttackReport, Finding, FindingKind, LossRecord
from offpay.errors import OffpayError
from offpay.money import Money


class Incidents(Protocol):
    """What the intermediaries and the central bank know about the devices: read in process,
    or over the back offices' HTTP routes of a served network."""

    def anomalies(self, bank: str, device: str) -> list[str]: ...

    def status(self, bank: str, device: str) -> str: ...

    def revoked(self, device: str) -> bool: ...

    def losses(self) -> list[LossRecord]: ...


@dataclass(frozen=True)
class LocalIncidents:
    """The incidents of an in-process :class:`~offpay.sim.network.OfflineNetwork`."""

    net: Any

    def anomalies(self, bank: str, device: str) -> list[str]:
        return [kind for kind, who, _ in self.net.banks[bank].anomalies() if who == device]

    def status(self, bank: str, device: str) -> str:
        return str(self.net.banks[bank].device(device).status)

    def revoked(self, device: str) -> bool:
        return device in self.net.central.revoked_devices()

    def losses(self) -> list[LossRecord]:
        return [
            LossRecord(name, loss.device, loss.amount, loss.bound, loss.detail)
            for name, bank in self.net.banks.items()
            for loss in bank.losses()
        ]


@dataclass
class Play:
    """One attack being played on ``checked``'s network."""

    checked: Checked
    name: str
    scheme: str
    title: str
    incidents: Incidents
    where: str = "in-process"
    _tried: list[str] = field(default_factory=list)
    _findings: list[Finding] = field(default_factory=list)
    _losses: list[LossRecord] = field(default_factory=list)

    @property
    def net(self) -> Any:
        return self.checked.net

    def tried(self, text: str) -> None:
        """Say what the attacker does next."""
        self._tried.append(text)

    def refused(
        self, code: str, party: str, attempt: str, fn: Callable[..., Any], *args: Any, **kw: Any
    ) -> OffpayError:
        """``party`` must refuse ``attempt`` with exactly ``code``, and nothing may change."""
        error = self.checked.refused(code, fn, *args, **kw)
        self._findings.append(
            Finding(FindingKind.REFUSED, party, code, attempt, self.checked.steps)
        )
        return error

    def refused_any(
        self, code: str, party: str, attempt: str, fn: Callable[..., Any], *args: Any, **kw: Any
    ) -> OffpayError:
        """``fn`` must fail with ``code``; for an attempt made of several steps, where the
        first steps are honest and may change things (a charge that verifies the PIN, a
        deposit that takes the tokens off the phone before the mint refuses them)."""
        try:
            self.checked.step(fn, *args, **kw)
        except OffpayError as exc:
            expect(exc.code == code, f"expected a refusal {code}, got {exc}")
            self._findings.append(
                Finding(FindingKind.REFUSED, party, code, attempt, self.checked.steps)
            )
            return exc
        raise DefenceFailed(f"expected a refusal {code}, but it went through")

    def no_anomaly(self, bank: str, device: str) -> None:
        """Nothing is known about ``device`` yet (an offline attack before any sync)."""
        found = self.incidents.anomalies(bank, device)
        expect(found == [], f"{bank} already recorded {found} against {device}")

    def detected(self, bank: str, device: str, kind: str, attempt: str) -> None:
        """``bank`` must have recorded an anomaly of ``kind`` against ``device``."""
        found = self.incidents.anomalies(bank, device)
        expect(kind in found, f"{bank} recorded {found or 'nothing'} against {device}, no {kind}")
        self._findings.append(
            Finding(FindingKind.DETECTED, bank, kind, attempt, self.checked.steps)
        )

    def blocked(self, bank: str, device: str) -> None:
        """``device`` must be blocked at ``bank`` and on the central bank's revocation list."""
        status = self.incidents.status(bank, device)
        expect(status == "blocked", f"{device} is {status} at {bank}, not blocked")
        expect(self.incidents.revoked(device), f"{device} is not revoked network-wide")
        self._findings.append(
            Finding(
                FindingKind.BLOCKED,
                bank,
                "blocked",
                f"{device} blocked and revoked network-wide",
                self.checked.steps,
            )
        )

    def audit_named(self, bank: str, code: str, attempt: str) -> None:
        """The central bank's audit named ``bank`` (checked by the caller)."""
        self._findings.append(
            Finding(
                FindingKind.DETECTED,
                "central-bank",
                code,
                f"{attempt}: names {bank}",
                self.checked.steps,
            )
        )

    def finding(self, kind: FindingKind, party: str, code: str, attempt: str) -> None:
        """A finding the caller checked itself (the token scheme's deposit checks)."""
        self._findings.append(Finding(kind, party, code, attempt, self.checked.steps))

    def loss(self, record: LossRecord) -> None:
        """A loss nobody's ledger records (the token scheme's receiver holding a worthless
        branch), observed by the caller."""
        self._losses.append(record)

    def report(self) -> AttackReport:
        """The play so far as a report; conservation is checked once more first."""
        audit = self.checked.conserved()
        losses = (*self.incidents.losses(), *self._losses)
        zero = self.net.money(0)
        loss = sum((record.amount for record in losses), zero)
        bounds: dict[str, Money] = {}
        for record in losses:  # a device can cost at most its bound, however many losses
            bounds[record.device] = max(bounds.get(record.device, zero), record.bound)
        bound = sum(bounds.values(), zero)
        expect(loss.minor <= bound.minor, f"lost {loss}, beyond the bound {bound}")
        return AttackReport(
            name=self.name,
            scheme=self.scheme,
            title=self.title,
            where=self.where,
            tried=tuple(self._tried),
            findings=tuple(self._findings),
            losses=losses,
            loss=loss,
            bound=bound,
            conservation_checks=self.checked.steps + 1,
            issued=audit.issued,
            held=audit.held,
        )
