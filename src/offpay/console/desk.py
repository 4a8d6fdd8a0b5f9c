"""The operator's desk: what the console shows of the network and the admin actions it
offers, all through the parties' own HTTP routes (books, payments, audit with the tokens in
the data folder; changes with the admin token the operator types, checked by the party)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
from collections.abc import Mapping
from typing import Any

from offpay.drive.backends import ServedNetwork
from offpay.drive.workbench import Conservation
from offpay.errors import OffpayError
from offpay.money import Money, parse_money
from offpay.policy import LIMITS, Unit
from offpay.service.client import AdminClient
from offpay.service.datadir import CENTRAL, NetworkConfig
from offpay.service.tls import network_client


class ConsoleError(OffpayError):
    """Something typed into a console page that cannot be used."""

    code = "console.invalid"


@dataclasses.dataclass(frozen=True)
class PolicyField:
    """One editable limit of :class:`LimitsPolicy` (from :data:`offpay.policy.LIMITS`): a
    count or money; an optional one may be lifted by typing ``none``."""

    name: str
    money: bool
    optional: bool = False
    description: str = ""

    @property
    def label(self) -> str:
        return self.name.replace("_", " ")


def policy_fields() -> tuple[PolicyField, ...]:
    """Every limit of the policy an operator may change, from the policy's one description of
    its limits, so a new limit appears in the console without a change here."""
    return tuple(
        PolicyField(f.name, f.unit is Unit.AMOUNT, f.optional, f.description) for f in LIMITS
    )


def policy_change(form: Mapping[str, str], currency: str) -> dict[str, Any]:
    """The limits a policy form changes (blank fields keep their value), in minor units; an
    optional limit given as ``none`` is lifted (the admin route's ``lift``)."""
    change: dict[str, Any] = {}
    for field in policy_fields():
        text = form.get(field.name, "").strip()
        if not text:
            continue
        if field.optional and text.lower() == "none":
            change.setdefault("lift", []).append(field.name)
            continue
        if field.money:
            change[field.name] = parse_money(text, currency).minor
            continue
        try:
            change[field.name] = int(text)
        except ValueError:
            raise ConsoleError(
                f"{field.label} must be a whole number, not {text!r}", code="console.bad_number"
            ) from None
    return change


def waiting(since: str | None, now: dt.datetime) -> str:
    """How long a queued payment has waited, as a person reads it."""
    if since is None:
        return "?"
    seconds = max(0, int((now - dt.datetime.fromisoformat(since)).total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


class Desk:
    """The network as the console reads it; one HTTP connection pool for every page."""

    def __init__(self, config: NetworkConfig) -> None:
        self.config = config
        self._net: ServedNetwork | None = None

    @property
    def net(self) -> ServedNetwork:
        """Connected on first use: the console may start before a page is asked for."""
        if self._net is None:
            self._net = ServedNetwork(self.config)
        return self._net

    @property
    def currency(self) -> str:
        return self.config.currency

    def money(self, minor: int) -> Money:
        return Money(minor, self.currency)

    def conservation(self) -> Conservation:
        audit, problems = self.net.audit()
        return Conservation(audit, tuple(problems))

    def central(self) -> dict[str, Any]:
        return self.net.central_books()

    def bank(self, name: str) -> dict[str, Any]:
        return self.net.bank_books(name)

    def payment(self, tx_id: str) -> dict[str, Any]:
        tx = tx_id.strip().lower()
        try:
            raw = bytes.fromhex(tx)
        except ValueError:
            raw = b""
        if len(raw) != 16:
            raise ConsoleError("a payment id is 32 hex digits", code="console.bad_payment_id")
        return self.net.payment(raw)

    # -- admin actions: the operator's token, checked by the party --------------------------

    def _admin(self, party: str, token: str) -> AdminClient:
        if party not in (CENTRAL, *self.config.banks):
            raise ConsoleError(f"no party named {party!r} here", code="console.unknown_party")
        if not token.strip():
            raise ConsoleError("type the admin token of " + party, code="console.no_token")
        return AdminClient(
            self.config.urls[party],
            token.strip(),
            retries=1,
            client=network_client(self.config, party),
        )

    def _post(self, party: str, token: str, path: str, body: dict[str, Any]) -> Any:
        client = self._admin(party, token)
        try:
            return client.post(path, body, key=secrets.token_hex(16))
        finally:
            client.close()

    def publish_policy(self, bank: str, token: str, form: Mapping[str, str]) -> str:
        change = policy_change(form, self.currency)
        if not change:
            raise ConsoleError("change at least one limit", code="console.nothing_changed")
        answer = self._post(bank, token, "/v1/admin/policy", change)
        return f"{bank} published limits policy version {answer['policy']['version']}"

    def block(self, bank: str, token: str, device_id: str) -> str:
        """The device blocked as its holder's lost card is: the holder is looked up with the
        operator's token too, so a wrong token learns nothing about the devices."""
        device_id = device_id.strip()
        client = self._admin(bank, token)
        try:
            holder = _holder(client.get("/v1/admin/books"), bank, device_id)
            body = {"customer_id": holder, "device_id": device_id}
            client.post("/v1/admin/lost", body, key=secrets.token_hex(16))
        finally:
            client.close()
        return f"{bank} blocked {device_id}; the central bank revokes it network-wide"

    def release_expired(self, bank: str, token: str) -> str:
        answer = self._post(bank, token, "/v1/admin/release-expired", {})
        return f"{bank} released {answer['released']} blocked card(s) past their window"

    def close(self) -> None:
        if self._net is not None:
            self._net.close()


def _holder(books: dict[str, Any], bank: str, device_id: str) -> str:
    for customer in books["customers"]:
        if any(d["id"] == device_id for d in customer["devices"]):
            return str(customer["id"])
    raise ConsoleError(f"{bank} has no device {device_id!r}", code="console.unknown_device")
