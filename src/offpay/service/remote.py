"""A served network seen from outside: users with cards and phone apps, merchants with
terminals and PoS apps, all reaching their intermediary over HTTP; the back offices open
customers and issue devices; the conservation audit reads every service's books.

It offers what :class:`offpay.sim.network.OfflineNetwork` offers the demo and the tests, so
the same demo plays against real services (``offpay demo --network DIR``).
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass, field

import httpx

from offpay.bank.engine import LedgerTotals
from offpay.central.bank import Position
from offpay.crypto.keys import Algorithm, public_key_bytes
from offpay.crypto.pki import TrustStore
from offpay.device.card import Card
from offpay.device.reader import CardClient, Transmit
from offpay.device.terminal import TerminalModule
from offpay.errors import OffpayError
from offpay.money import Money
from offpay.relay.phone import PhoneApp
from offpay.relay.pos import PosApp
from offpay.service.client import AdminClient, HttpNetwork
from offpay.service.datadir import CENTRAL, NetworkConfig
from offpay.service.tls import network_client, refusal_of, tls_failure
from offpay.sim.network import Audit, Books, Merchant, User, audit_books, conserved
from offpay.store.moves import in_transit as moves_in_transit
from offpay.wire.envelope import Signed
from offpay.wire.messages import IntakeKey

HEALTH_TIMEOUT_S = 2.0


class ServiceUnreachable(OffpayError):
    """A service of the network that does not answer at its URL."""

    code = "network.unreachable"


def require_services(network: NetworkConfig, timeout: float = HEALTH_TIMEOUT_S) -> None:
    """Ask every party's health route once, briefly: a demo against a network that is not
    running names the service and URL at once, instead of retrying its first request; one
    whose certificate the network's TLS CA did not issue is named as such. Each is asked with
    its own party's certificate (the central bank serves no one without one)."""
    for name, url in network.urls.items():
        with network_client(network, name, timeout=timeout) as client:
            try:
                healthy = client.get(f"{url.rstrip('/')}/v1/health").status_code == 200
            except httpx.HTTPError as exc:
                failure = tls_failure(exc)
                if failure is not None:
                    raise refusal_of(f"{name} at {url}", failure) from None
                healthy = False
            if not healthy:
                raise ServiceUnreachable(
                    f"{name} does not answer at {url}; is the network running? "
                    f"(`offpay network run --data {network.folder}`)"
                )


def _key() -> str:
    return secrets.token_hex(16)


@dataclass
class RemoteCentral:
    admin: AdminClient
    currency: str

    def issue(self, institution: str, amount: Money) -> None:
        self.admin.post(
            "/v1/admin/issue", {"institution": institution, "amount": amount.minor}, key=_key()
        )

    def revoke(self, party: str, reason: str) -> None:
        self.admin.post("/v1/admin/revoke", {"party": party, "reason": reason}, key=_key())

    def ledger(self) -> dict[str, object]:
        return dict(self.admin.get("/v1/admin/ledger"))

    def notarised_count(self) -> int:
        return int(self.ledger()["notarised"])  # type: ignore[call-overload]

    def carried(self, sender: str, nonces: list[bytes]) -> set[bytes]:
        if not nonces:
            return set()
        answer = self.admin.post(
            "/v1/admin/carried", {"sender": sender, "nonces": [n.hex() for n in nonces]}, key=None
        )
        return {bytes.fromhex(n) for n in answer["nonces"]}


@dataclass
class RemoteBank:
    """An intermediary's back office."""

    name: str
    admin: AdminClient
    currency: str

    @property
    def id(self) -> str:
        return f"{self.name}/engine"

    def money(self, minor: int) -> Money:
        return Money(minor, self.currency)

    def open_customer(self, name: str, *, merchant: bool = False) -> str:
        answer = self.admin.post(
            "/v1/admin/customers", {"name": name, "merchant": merchant}, key=_key()
        )
        return str(answer["customer_id"])

    def fund(self, customer_id: str, amount: Money, reference: str | None = None) -> None:
        self.admin.post(
            "/v1/admin/fund",
            {"customer_id": customer_id, "amount": amount.minor},
            key=reference or _key(),
        )

    def issue_card(self, customer_id: str, transmit: Transmit, pin: str) -> str:
        """The card in our reader, personalised by the intermediary across the network."""
        client = CardClient(transmit)
        answer = self.admin.post(
            "/v1/admin/cards",
            {
                "customer_id": customer_id,
                "public_key": base64.b64encode(public_key_bytes(client.public_key())).decode(),
                "pin": pin,
            },
            key=_key(),
        )
        client.personalise(base64.b64decode(answer["personalisation"]))
        return str(answer["card_id"])

    def issue_terminal(self, merchant_id: str, module: TerminalModule) -> str:
        answer = self.admin.post(
            "/v1/admin/terminals",
            {
                "merchant_id": merchant_id,
                "public_key": base64.b64encode(module.public_key).decode(),
            },
            key=_key(),
        )
        module.personalise(
            answer["terminal_id"],
            answer["institution"],
            base64.b64decode(answer["root"]),
            tuple(base64.b64decode(c) for c in answer["chain"]),
            Signed.from_bytes(base64.b64decode(answer["policy"])),  # type: ignore[arg-type]
            _intake_key(answer.get("intake_key")),
        )
        return str(answer["terminal_id"])

    def balance(self, account_id: str) -> Money:
        return self.money(
            int(self.admin.get("/v1/admin/balance", account_id=account_id)["balance"])
        )

    def open_shortfalls(self) -> list[tuple[bytes, str, Money]]:
        return [
            (bytes.fromhex(s["tx_id"]), s["device_id"], self.money(s["amount"]))
            for s in self.admin.get("/v1/admin/shortfalls")
        ]

    def retry_pending(self) -> int:
        return int(self.admin.post("/v1/admin/retry-pending", key=_key())["finished"])

    def ledger(self) -> dict[str, object]:
        return dict(self.admin.get("/v1/admin/ledger"))

    def credited(self, tx_ids: list[bytes]) -> set[bytes]:
        if not tx_ids:
            return set()
        answer = self.admin.post(
            "/v1/admin/credited", {"tx_ids": [t.hex() for t in tx_ids]}, key=None
        )
        return {bytes.fromhex(t) for t in answer["tx_ids"]}


# The same people and shops as in process, with their books read from the services.
RemoteUser = User[RemoteBank]
RemoteMerchant = Merchant[RemoteBank]


@dataclass
class RemoteNetwork:
    network: NetworkConfig
    retries: int = 4
    transport: HttpNetwork = field(init=False)
    central: RemoteCentral = field(init=False)
    banks: dict[str, RemoteBank] = field(init=False)
    users: dict[str, RemoteUser] = field(default_factory=dict)
    merchants: dict[str, RemoteMerchant] = field(default_factory=dict)
    run: str = field(default_factory=lambda: secrets.token_hex(3))

    def __post_init__(self) -> None:
        n = self.network
        # The phones and PoS apps show no certificate: they verify the service only.
        self.transport = HttpNetwork(n.urls, retries=self.retries, client=network_client(n))
        # Each back office is its own party's operator, with that party's certificate.
        admin = {
            name: AdminClient(
                url, n.admin_token(name), retries=self.retries, client=network_client(n, name)
            )
            for name, url in n.urls.items()
        }
        self.central = RemoteCentral(admin[CENTRAL], n.currency)
        self.banks = {name: RemoteBank(name, admin[name], n.currency) for name in n.banks}

    @property
    def currency(self) -> str:
        return self.network.currency

    @property
    def algorithm(self) -> Algorithm:
        return self.network.algorithm

    @property
    def trust(self) -> TrustStore:
        return TrustStore(self.network.root_der)

    def money(self, minor: int) -> Money:
        return Money(minor, self.currency)

    def issue(self, bank: str, minor: int) -> None:
        self.central.issue(bank, self.money(minor))

    def _customer_name(self, name: str) -> str:
        """A name of its own per run: a network outlives one demo."""
        return f"{name} #{self.run}"

    def add_user(self, name: str, bank: str, *, pin: str = "1234", online: int = 0) -> RemoteUser:
        b = self.banks[bank]
        customer = b.open_customer(self._customer_name(name))
        card = Card.manufacture(self.algorithm)
        card_id = b.issue_card(customer, card.process, pin)
        if online:
            b.fund(customer, self.money(online))
        phone = PhoneApp(card.process, bank, self.transport, self.currency)
        user = RemoteUser(name, b, customer, card, card_id, phone, pin)
        self.users[name] = user
        return user

    def add_merchant(self, name: str, bank: str) -> RemoteMerchant:
        b = self.banks[bank]
        customer = b.open_customer(self._customer_name(name), merchant=True)
        module = TerminalModule.manufacture(self.algorithm)
        terminal_id = b.issue_terminal(customer, module)
        pos = PosApp(module, bank, self.transport)
        merchant = RemoteMerchant(name, b, customer, module, terminal_id, pos)
        self.merchants[name] = merchant
        return merchant

    # -- the audit, from every service's books ---------------------------------------------------

    def audit(self) -> tuple[Audit, list[str]]:
        m = self.money
        central = self.central.ledger()
        positions = central["positions"]
        assert isinstance(positions, dict)
        ledgers = {name: bank.ledger() for name, bank in self.banks.items()}
        moves = {}
        for name, ledger in ledgers.items():
            open_moves = [
                (o["kind"], o["amount"], bytes.fromhex(o["nonce"]))
                for o in ledger["open_moves"]  # type: ignore[attr-defined]
            ]
            carried = self.central.carried(self.banks[name].id, [n for _, _, n in open_moves])
            moves[name] = m(moves_in_transit([(k, a, n in carried) for k, a, n in open_moves]))

        def payments_in_transit() -> Money:
            pending = {
                bytes.fromhex(tx): amount
                for ledger in ledgers.values()
                for tx, amount in ledger["uncredited"].items()  # type: ignore[attr-defined]
            }
            for bank in self.banks.values():
                for tx in bank.credited(list(pending)):
                    pending.pop(tx, None)
            return m(sum(pending.values()))

        books = Books(
            issued=m(central["issued"]),  # type: ignore[arg-type]
            tokens=m(central["tokens"]),  # type: ignore[arg-type]
            pool=m(central["pool"]),  # type: ignore[arg-type]
            positions=[
                Position(name, m(p["reserve"]), m(p["holdings"])) for name, p in positions.items()
            ],
            flows={name: (m(p["flow_in"]), m(p["flow_out"])) for name, p in positions.items()},
            totals={
                name: LedgerTotals(
                    m(ledger["held"]),  # type: ignore[arg-type]
                    m(ledger["debited"]),  # type: ignore[arg-type]
                    m(ledger["credited"]),  # type: ignore[arg-type]
                    m(ledger["in_transit"]),  # type: ignore[arg-type]
                )
                for name, ledger in ledgers.items()
            },
            moves=moves,
            payments_in_transit=payments_in_transit,
        )
        return audit_books(books, m(0))

    def check_conservation(self) -> Audit:
        return conserved(*self.audit())

    def close(self) -> None:
        self.transport.close()
        for bank in self.banks.values():
            bank.admin.close()
        self.central.admin.close()


def _intake_key(value: object) -> Signed[IntakeKey] | None:
    """The signed key a terminal seals its uploads to; absent from an older service."""
    if not value:
        return None
    return Signed.from_bytes(base64.b64decode(str(value)))  # type: ignore[return-value]
