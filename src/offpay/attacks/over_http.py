"""Attacks played against a running network (`offpay network run`): the attacker's phones,
PoS apps and broken cards are here, the intermediaries and the central bank are services
reached over HTTP, and what they know about a device is read from their back offices."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from offpay.attacks.checked import ISSUED_PER_BANK, Checked
from offpay.attacks.play import Play
from offpay.attacks.registry import Attack, NotOverHttp, find
from offpay.attacks.report import AttackReport, LossRecord
from offpay.service.datadir import NetworkConfig
from offpay.service.remote import RemoteNetwork, require_services

NEEDED_BANKS = frozenset({"bank-a", "bank-b"})


@dataclass(frozen=True)
class RemoteIncidents:
    """The incidents of a served network, from the back offices' routes."""

    net: RemoteNetwork

    def _incidents(self, bank: str, device: str) -> dict[str, Any]:
        return dict(self.net.banks[bank].admin.get("/v1/admin/incidents", device_id=device))

    def anomalies(self, bank: str, device: str) -> list[str]:
        return list(self._incidents(bank, device)["anomalies"])

    def status(self, bank: str, device: str) -> str:
        return str(self._incidents(bank, device)["status"])

    def revoked(self, device: str) -> bool:
        return device in self.net.central.admin.get("/v1/admin/revoked")["devices"]

    def losses(self) -> list[LossRecord]:
        """The losses recorded against the devices this play made (the network outlives it)."""
        devices = [(u.bank.name, u.card_id) for u in self.net.users.values()]
        devices += [(m.bank.name, m.terminal_id) for m in self.net.merchants.values()]
        return [
            LossRecord(
                bank,
                device,
                self.net.money(row["amount"]),
                self.net.money(row["bound"]),
                row["detail"],
            )
            for bank, device in devices
            for row in self._incidents(bank, device)["losses"]
        ]


def playable(attack: Attack) -> Attack:
    """``attack`` if it can be played over HTTP; a :class:`NotOverHttp` saying why not."""
    if not attack.over_http:
        raise NotOverHttp(f"{attack.name} cannot be played over HTTP: {attack.why_not_http}")
    return attack


def play_over_http(attack: Attack | str, network: NetworkConfig) -> AttackReport:
    """Play ``attack`` against the services of ``network``: fresh customers and devices of its
    own (named for this run), SEK 1 000 000 issued to each intermediary first."""
    attack = playable(find(attack) if isinstance(attack, str) else attack)
    if not set(network.banks) >= NEEDED_BANKS:
        raise NotOverHttp("the attacks need intermediaries named bank-a and bank-b")
    require_services(network)
    net = RemoteNetwork(network)
    try:
        for bank in sorted(NEEDED_BANKS):
            net.issue(bank, ISSUED_PER_BANK)
        checked = Checked(net)
        checked.conserved()
        play = Play(
            checked,
            attack.name,
            attack.scheme,
            attack.summary,
            RemoteIncidents(net),
            where=f"over HTTP: {network.folder}",
        )
        attack.play(play)
        return play.report()
    finally:
        net.close()
