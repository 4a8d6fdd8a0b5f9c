"""The network a workbench drives: in this process on the data folder's databases, or the
services that ``offpay network run`` serves from it. Both offer the same back office, the same
``send`` for the apps, the same books and the same conservation audit; every rule stays with
the parties (:class:`~offpay.bank.engine.Intermediary`, :class:`~offpay.central.bank.CentralBank`).
"""

from __future__ import annotations

import base64
import contextlib
import secrets
from typing import IO, Any, Protocol

from sqlalchemy.exc import IntegrityError

from offpay.bank.books import (
    bank_books,
    bank_payment,
    central_books,
    notary_record,
    policy_record,
    recorded_as,
)
from offpay.bank.engine import Intermediary
from offpay.central.bank import CentralBank
from offpay.device.reader import Transmit
from offpay.device.terminal import TerminalModule
from offpay.errors import NotFound, OffpayError, Refused
from offpay.money import Money
from offpay.policy import revised_policy
from offpay.service.datadir import NetworkConfig, lock_network, open_central, open_intermediary
from offpay.service.remote import RemoteNetwork, require_services
from offpay.service.remote_tokens import provision_element
from offpay.sim.network import Audit, audit_parties
from offpay.tokens.element import TokenElement
from offpay.transport.memory import MemoryNetwork


class Backend(Protocol):
    """A network's back offices and message routes, wherever they run."""

    config: NetworkConfig
    transport: MemoryNetwork

    def issue(self, bank: str, amount: Money) -> None: ...
    def open_customer(self, bank: str, name: str, *, merchant: bool) -> str: ...
    def fund(self, bank: str, customer_id: str, amount: Money) -> None: ...
    def issue_card(self, bank: str, customer_id: str, transmit: Transmit, pin: str) -> str: ...
    def issue_terminal(self, bank: str, customer_id: str, module: TerminalModule) -> str: ...
    def issue_element(self, bank: str, customer_id: str, element: TokenElement) -> str: ...
    def report_lost(self, bank: str, customer_id: str, device_id: str) -> None: ...
    def publish_limits(
        self, bank: str, limits: dict[str, int], version: int | None
    ) -> dict[str, Any]: ...
    def bank_books(self, bank: str) -> dict[str, Any]: ...
    def central_books(self) -> dict[str, Any]: ...
    def payment(self, tx_id: bytes) -> dict[str, Any]: ...
    def audit(self) -> tuple[Audit, list[str]]: ...
    def close(self) -> None: ...


def _bank_named(banks: dict[str, Any], name: str) -> Any:
    if name not in banks:
        raise NotFound(
            f"no intermediary named {name!r} in this network (it has {', '.join(banks)})",
            code="drive.unknown_bank",
        )
    return banks[name]


class LocalNetwork:
    """The network in this process, on the folder's databases and keys. It holds the folder
    as ``offpay network run`` does: a served network is driven with ``--network`` instead."""

    def __init__(self, config: NetworkConfig) -> None:
        self.config = config
        self._held: IO[str] = lock_network(config)
        self.transport = MemoryNetwork()
        self.central: CentralBank = open_central(config)
        self.transport.register("central-bank", self.central.handle)
        self.banks: dict[str, Intermediary] = {}
        try:
            for name in config.banks:
                self.banks[name] = open_intermediary(config, name, self.transport)
            for bank in self.banks.values():
                # What a command stopped half way (Ctrl-C) left undone is finished first, as a
                # served intermediary does at its start; what cannot be finished yet stays in
                # the books (pending, shortfalls) and is tried again by the next command.
                with contextlib.suppress(OffpayError):
                    bank.retry_pending()
        except BaseException:
            self.close()
            raise

    def _bank(self, name: str) -> Intermediary:
        return _bank_named(self.banks, name)  # type: ignore[no-any-return]

    def issue(self, bank: str, amount: Money) -> None:
        self._bank(bank)
        self.central.issue(bank, amount)

    def open_customer(self, bank: str, name: str, *, merchant: bool) -> str:
        try:
            return self._bank(bank).open_customer(name, merchant=merchant)
        except IntegrityError:  # as the back-office route says it
            raise Refused(
                f"{bank} has a customer named {name} already", code="bank.customer_exists"
            ) from None

    def fund(self, bank: str, customer_id: str, amount: Money) -> None:
        self._bank(bank).fund(customer_id, amount)

    def issue_card(self, bank: str, customer_id: str, transmit: Transmit, pin: str) -> str:
        return self._bank(bank).issue_card(customer_id, transmit, pin)

    def issue_terminal(self, bank: str, customer_id: str, module: TerminalModule) -> str:
        return self._bank(bank).issue_terminal(customer_id, module)

    def issue_element(self, bank: str, customer_id: str, element: TokenElement) -> str:
        desk = self._bank(bank).tokens
        if desk is None:
            raise Refused(f"{bank} does not run the token scheme", code="tokens.unavailable")
        return desk.issue_element(customer_id, element)

    def report_lost(self, bank: str, customer_id: str, device_id: str) -> None:
        self._bank(bank).report_lost(customer_id, device_id)

    def publish_limits(
        self, bank: str, limits: dict[str, int], version: int | None
    ) -> dict[str, Any]:
        b = self._bank(bank)
        current = b.current_policy()
        if current is None:
            raise Refused(f"{bank} has no policy yet", code="policy.missing")
        new = revised_policy(current[1], limits, version)
        b.publish_policy(new)
        return policy_record(new)

    def bank_books(self, bank: str) -> dict[str, Any]:
        return bank_books(self._bank(bank))

    def central_books(self) -> dict[str, Any]:
        return central_books(self.central)

    def payment(self, tx_id: bytes) -> dict[str, Any]:
        banks = {name: bank_payment(bank, tx_id) for name, bank in self.banks.items()}
        return {"central-bank": notary_record(self.central, recorded_as(tx_id, banks)), **banks}

    def audit(self) -> tuple[Audit, list[str]]:
        return audit_parties(self.central, self.banks)

    def close(self) -> None:
        for bank in self.banks.values():
            bank.db.dispose()
        self.central.db.dispose()
        self._held.close()


def _key() -> str:
    return secrets.token_hex(16)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


class ServedNetwork:
    """The services of a running network, over HTTP: the apps send their messages to the
    intermediaries' routes, the back office uses the admin routes with each party's token."""

    def __init__(self, config: NetworkConfig) -> None:
        require_services(config)
        self.config = config
        self.remote = RemoteNetwork(config)
        self.transport = self.remote.transport

    def _bank(self, name: str) -> Any:
        return _bank_named(self.remote.banks, name)

    def issue(self, bank: str, amount: Money) -> None:
        self._bank(bank)
        self.remote.central.issue(bank, amount)

    def open_customer(self, bank: str, name: str, *, merchant: bool) -> str:
        return str(self._bank(bank).open_customer(name, merchant=merchant))

    def fund(self, bank: str, customer_id: str, amount: Money) -> None:
        self._bank(bank).fund(customer_id, amount)

    def issue_card(self, bank: str, customer_id: str, transmit: Transmit, pin: str) -> str:
        return str(self._bank(bank).issue_card(customer_id, transmit, pin))

    def issue_terminal(self, bank: str, customer_id: str, module: TerminalModule) -> str:
        return str(self._bank(bank).issue_terminal(customer_id, module))

    def issue_element(self, bank: str, customer_id: str, element: TokenElement) -> str:
        """The element's key certified by the intermediary across the network; the element
        provisions itself with what comes back."""
        return provision_element(self._bank(bank), customer_id, element, key=_key())

    def report_lost(self, bank: str, customer_id: str, device_id: str) -> None:
        self._bank(bank).admin.post(
            "/v1/admin/lost", {"customer_id": customer_id, "device_id": device_id}, key=_key()
        )

    def publish_limits(
        self, bank: str, limits: dict[str, int], version: int | None
    ) -> dict[str, Any]:
        body: dict[str, Any] = dict(limits)
        if version is not None:
            body["version"] = version
        answer = self._bank(bank).admin.post("/v1/admin/policy", body, key=_key())
        return dict(answer["policy"])

    def bank_books(self, bank: str) -> dict[str, Any]:
        return dict(self._bank(bank).admin.get("/v1/admin/books"))

    def central_books(self) -> dict[str, Any]:
        return dict(self.remote.central.admin.get("/v1/admin/books"))

    def payment(self, tx_id: bytes) -> dict[str, Any]:
        path = f"/v1/admin/payments/{tx_id.hex()}"
        banks = {name: dict(bank.admin.get(path)) for name, bank in self.remote.banks.items()}
        pseudonym = recorded_as(tx_id, banks).hex()
        central = dict(self.remote.central.admin.get(f"/v1/admin/payments/{pseudonym}"))
        return {"central-bank": central, **banks}

    def audit(self) -> tuple[Audit, list[str]]:
        return self.remote.audit()

    def close(self) -> None:
        self.remote.close()
