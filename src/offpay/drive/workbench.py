"""People, shops and their devices, kept in a network's data folder between ``offpay``
commands, driven through the real phone and PoS apps against a :class:`Backend`.

The layout, inside the folder ``offpay network init`` made::

    drive/people.json          who is who: name -> kind, intermediary, customer id, device id
    drive/devices/NAME.card    a person's card     (see :mod:`offpay.drive.vault`)
    drive/devices/NAME.terminal  a shop's terminal module
    drive/apps/NAME.pos        a shop's PoS app: the records its module sealed
    drive/lock                 held while a command runs: one command at a time

The PIN is never stored: the person types it (``--pin``, or ``OFFPAY_PIN``); the card keeps
only its salted digest, sealed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, Literal

from offpay.central.bank import utc_now
from offpay.device.card import Card
from offpay.device.reader import CardClient
from offpay.device.terminal import TerminalModule
from offpay.drive.backends import Backend, LocalNetwork, ServedNetwork
from offpay.drive.vault import load_image, load_records, save_image, save_records, write_private
from offpay.errors import OffpayError
from offpay.money import Money, parse_money
from offpay.relay.phone import PhoneApp, confirmation_code
from offpay.relay.pos import PosApp
from offpay.service.datadir import CENTRAL, DataDirError, load_network
from offpay.sim.network import Audit
from offpay.wire.envelope import Signed, payload_of
from offpay.wire.messages import OfflinePayment

DRIVE = "drive"
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")  # also a file name in drive/devices
DEFAULT_PIN = "1234"


class DriveError(OffpayError):
    """A name, a party or a device the workbench does not know, or cannot use that way."""

    code = "drive.invalid"


@dataclass
class Party:
    """A person or a shop the workbench drives, as ``people.json`` records them."""

    kind: Literal["person", "merchant"]
    bank: str
    customer_id: str
    device_id: str | None = None


@dataclass(frozen=True)
class Conservation:
    audit: Audit
    problems: tuple[str, ...]

    @property
    def balanced(self) -> bool:
        return self.audit.balanced and not self.problems

    def line(self) -> str:
        a = self.audit
        verdict = "conserved" if self.balanced else "NOT CONSERVED"
        text = (
            f"{verdict}: issued {a.issued} {'==' if a.balanced else '!='} held {a.held} "
            f"(reserves {a.reserves}, wallets {a.wallets}, in transit {a.in_transit}, "
            f"tokens {a.tokens}, pool {a.pool})"
        )
        return "; ".join((text, *self.problems))

    def record(self) -> dict[str, Any]:
        a = self.audit
        return {
            "balanced": self.balanced,
            "issued": a.issued.minor,
            "held": a.held.minor,
            "reserves": a.reserves.minor,
            "wallets": a.wallets.minor,
            "in_transit": a.in_transit.minor,
            "tokens": a.tokens.minor,
            "pool": a.pool.minor,
            "problems": list(self.problems),
        }


def _hold(path: Path) -> IO[str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise DataDirError(f"another offpay command is driving {path.parent.parent}") from None
    return handle


class Workbench:
    """Every verb of the ``offpay`` driving commands. Devices are loaded when first used and
    saved when the workbench closes, whatever happened (a wrong PIN costs a try for good).

    ``read_only``: a view of the folder for showing devices (the console's pages), taken
    without the folder's lock so it never turns a command away; it saves nothing and leaves
    ``backend`` open for its owner. Files are replaced atomically, so it reads whole ones."""

    def __init__(self, backend: Backend, *, read_only: bool = False) -> None:
        self.net = backend
        self.read_only = read_only
        self.folder = backend.config.folder / DRIVE
        self._held = None if read_only else _hold(self.folder / "lock")
        try:
            self.people: dict[str, Party] = self._read_people()
        except BaseException:
            if self._held is not None:
                self._held.close()
            raise
        self.cards: dict[str, Card] = {}
        self.modules: dict[str, TerminalModule] = {}
        self.pos: dict[str, PosApp] = {}

    @property
    def currency(self) -> str:
        return self.net.config.currency

    # -- the folder -------------------------------------------------------------------------

    def _people_path(self) -> Path:
        return self.folder / "people.json"

    def _read_people(self) -> dict[str, Party]:
        path = self._people_path()
        if not path.exists():
            return {}
        try:
            return {name: Party(**p) for name, p in json.loads(path.read_text()).items()}
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            raise DriveError(f"{path.name} is damaged: {exc}") from None

    def _write_people(self) -> None:
        people = {name: asdict(p) for name, p in self.people.items()}
        write_private(self._people_path(), json.dumps(people, indent=1) + "\n")

    def _device_path(self, name: str, kind: str) -> Path:
        return self.folder / "devices" / f"{name}.{kind}"

    def _pos_path(self, name: str) -> Path:
        return self.folder / "apps" / f"{name}.pos"

    def save(self) -> None:
        for name, card in self.cards.items():
            save_image(self._device_path(name, "card"), card.image())
        for name, module in self.modules.items():
            save_image(self._device_path(name, "terminal"), module.image())
        for name, pos in self.pos.items():
            save_records(self._pos_path(name), pos.records)

    def close(self) -> None:
        if self.read_only:
            return
        try:
            self.save()
        finally:
            self.net.close()
            if self._held is not None:
                self._held.close()

    # -- who is who -------------------------------------------------------------------------

    def party(self, name: str, kind: str | None = None) -> Party:
        party = self.people.get(name)
        if party is None:
            known = ", ".join(self.people) or "nobody yet"
            raise DriveError(
                f"nobody named {name!r} here (known: {known}); "
                "open one with `offpay customer open`",
                code="drive.unknown_party",
            )
        if kind is not None and party.kind != kind:
            what = "a shop" if party.kind == "merchant" else "a person"
            raise DriveError(f"{name} is {what}", code="drive.wrong_kind")
        return party

    def money(self, text: str) -> Money:
        return parse_money(text, self.currency)

    def card(self, name: str) -> Card:
        party = self.party(name, "person")
        if party.device_id is None:
            raise DriveError(
                f"{name} has no card yet: `offpay card issue {name}`", code="drive.no_card"
            )
        if name not in self.cards:
            self.cards[name] = Card.from_image(load_image(self._device_path(name, "card")))
        return self.cards[name]

    def phone(self, name: str) -> PhoneApp:
        party = self.party(name, "person")
        return PhoneApp(self.card(name).process, party.bank, self.net.transport, self.currency)

    def terminal(self, name: str) -> PosApp:
        party = self.party(name, "merchant")
        if party.device_id is None:
            raise DriveError(
                f"{name} has no terminal yet: `offpay terminal issue {name}`",
                code="drive.no_terminal",
            )
        if name not in self.pos:
            path = self._device_path(name, "terminal")
            module = TerminalModule.from_image(load_image(path))
            self.modules[name] = module
            pos = PosApp(module, party.bank, self.net.transport, utc_now)
            pos.records = load_records(self._pos_path(name))
            self.pos[name] = pos
        return self.pos[name]

    # -- the verbs ----------------------------------------------------------------------------

    def issue(self, bank: str, amount: str) -> str:
        """The central bank issues money into an intermediary's reserve."""
        money = self.money(amount)
        self.net.issue(bank, money)
        return f"the central bank issued {money} to {bank}"

    def open_customer(self, name: str, bank: str, *, merchant: bool = False) -> str:
        if NAME.fullmatch(name) is None:
            raise DriveError(
                f"{name!r} cannot be a name here: lower-case letters, digits, '-' and '_', "
                "at most 40, starting with a letter or digit",
                code="drive.bad_name",
            )
        if name in self.people or name in (CENTRAL, *self.net.config.banks):
            raise DriveError(f"the name {name!r} is taken here", code="drive.name_taken")
        customer_id = self.net.open_customer(bank, name, merchant=merchant)
        self.people[name] = Party("merchant" if merchant else "person", bank, customer_id)
        self._write_people()
        return f"{bank} opened {'merchant' if merchant else 'customer'} {name} ({customer_id})"

    def issue_card(self, name: str, pin: str = DEFAULT_PIN) -> str:
        party = self.party(name, "person")
        if party.device_id is not None and not self._blocked(party):
            raise DriveError(
                f"{name} has a card already ({party.device_id}); report it lost first",
                code="drive.has_card",
            )
        card = Card.manufacture(self.net.config.algorithm)
        card_id = self.net.issue_card(party.bank, party.customer_id, card.process, pin)
        self.cards[name] = card
        party.device_id = card_id
        save_image(self._device_path(name, "card"), card.image())
        self._write_people()
        return f"{party.bank} issued card {card_id} to {name}"

    def _blocked(self, party: Party) -> bool:
        books = self.net.bank_books(party.bank)
        for customer in books["customers"]:
            for device in customer["devices"]:
                if device["id"] == party.device_id:
                    return bool(device["status"] != "active")
        return False

    def issue_terminal(self, name: str) -> str:
        party = self.party(name, "merchant")
        if party.device_id is not None:
            raise DriveError(
                f"{name} has a terminal already ({party.device_id})", code="drive.has_terminal"
            )
        module = TerminalModule.manufacture(self.net.config.algorithm)
        terminal_id = self.net.issue_terminal(party.bank, party.customer_id, module)
        self.modules[name] = module
        self.pos[name] = PosApp(module, party.bank, self.net.transport, utc_now)
        party.device_id = terminal_id
        save_image(self._device_path(name, "terminal"), module.image())
        self._write_people()
        return f"{party.bank} issued terminal {terminal_id} to {name}"

    def fund(self, name: str, amount: str) -> str:
        """The customer buys e-krona into their online wallet (from the bank's reserve)."""
        party = self.party(name, "person")
        money = self.money(amount)
        self.net.fund(party.bank, party.customer_id, money)
        return f"{name}'s online wallet funded with {money}"

    def top_up(self, name: str, amount: str, pin: str = DEFAULT_PIN) -> str:
        money = self.money(amount)
        status = self.phone(name).top_up(pin, money)
        return f"{name}'s card topped up with {money}: it holds {status.balance}"

    def defund(self, name: str, amount: str, pin: str = DEFAULT_PIN) -> str:
        money = self.money(amount)
        status = self.phone(name).defund(pin, money)
        return f"{money} back from {name}'s card to the online wallet: it holds {status.balance}"

    def pay_shop(self, payer: str, shop: str, amount: str, pin: str = DEFAULT_PIN) -> str:
        money = self.money(amount)
        card = self.card(payer)
        self.terminal(shop).charge(card.process, pin, money)
        return f"{payer} paid {money} at {shop}'s terminal (payment {_tx_id(card)})"

    def pay(
        self,
        payer: str,
        payee: str,
        amount: str,
        pin: str = DEFAULT_PIN,
        payee_pin: str = DEFAULT_PIN,
        code: str | None = None,
    ) -> str:
        """Person to person (report §3.6): the payee's phone asks, both phones show the
        6-digit code, the payer confirms it and pays, the payee's card accepts. ``code``:
        what the payer confirms, if not the code the payee's phone shows (a payer who
        misreads it, or a request a relay substituted, is refused before the card pays)."""
        request, shown = self.ask(payer, payee, amount)
        return self.pay_request(
            payer, payee, request, pin, payee_pin, code=shown if code is None else code
        )

    def ask(self, payer: str, payee: str, amount: str) -> tuple[bytes, str]:
        """Person to person, first half: the payee's phone asks the payer's card for
        ``amount``. Returns the signed request and the 6-digit code both phones show; the
        request waits in the payee's card until :meth:`pay_request` or a decline."""
        if payer == payee:
            raise DriveError("a person cannot pay themselves", code="drive.same_party")
        money = self.money(amount)
        payer_phone, payee_phone = self.phone(payer), self.phone(payee)
        request = payee_phone.ask(payer_phone.show_identity(), money)
        return request, confirmation_code(request)  # on the payee's phone; the payer checks it

    def pay_request(
        self,
        payer: str,
        payee: str,
        request: bytes,
        pin: str,
        payee_pin: str,
        *,
        code: str,
    ) -> str:
        """Person to person, second half: the payer confirms ``code`` and pays ``request``
        with the PIN, the payee's card accepts with its PIN. Whatever is refused, the payee's
        card declines the request, so no money waits for a payment that never comes."""
        payer_phone, payee_phone = self.phone(payer), self.phone(payee)
        try:
            payment = payer_phone.pay(pin, request, code=code)
        except OffpayError:
            payee_phone.decline(request)  # the payee stops waiting for it
            raise
        try:
            payee_phone.accept(payee_pin, payment)
        except OffpayError:
            # Not credited: the payee's card declines the request, so the payer's
            # intermediary gives the money back once either card synchronises.
            payee_phone.decline(request)
            raise
        card = self.card(payer)
        money = payload_of(_last_payment(card), OfflinePayment).amount
        return (
            f"{payer} paid {money} to {payee} (code {code} on both phones; payment {_tx_id(card)})"
        )

    def sync(self, name: str, pin: str = DEFAULT_PIN) -> str:
        party = self.party(name)
        if party.kind == "merchant":
            pos = self.terminal(name)
            pos.sync()
            state = pos.module.state
            return f"{name}'s terminal synchronised: {state.offline_payments} payments unsynced"
        status = self.phone(name).sync(pin)
        return f"{name}'s card synchronised: it holds {status.balance}"

    def lost(self, name: str) -> str:
        party = self.party(name, "person")
        if party.device_id is None:
            raise DriveError(f"{name} has no card", code="drive.no_card")
        self.net.report_lost(party.bank, party.customer_id, party.device_id)
        return f"{name}'s card {party.device_id} reported lost: {party.bank} blocked it"

    def publish_limits(self, bank: str, limits: dict[str, int], version: int | None) -> str:
        policy = self.net.publish_limits(bank, limits, version)
        return f"{bank} published limits policy version {policy['version']}"

    # -- reading ------------------------------------------------------------------------------

    def conservation(self) -> Conservation:
        audit, problems = self.net.audit()
        return Conservation(audit, tuple(problems))

    def devices(self) -> dict[str, dict[str, Any]]:
        """What each device shows (its holder's view): balance, unsynced log, limits."""
        shown: dict[str, dict[str, Any]] = {}
        for name, party in self.people.items():
            if party.device_id is None:
                continue
            try:
                if party.kind == "person":
                    s = CardClient(self.card(name).process).status()
                    shown[name] = {
                        "device": s.card,
                        "kind": "card",
                        "balance": s.balance.minor,
                        "unsynced": s.offline_transactions,
                        "policy_version": s.policy_version,
                        "pin_tries_left": s.pin_tries_left,
                    }
                else:
                    t = self.terminal(name).module.state
                    shown[name] = {
                        "device": t.terminal_id,
                        "kind": "terminal",
                        "balance": t.received.minor,
                        "unsynced": t.offline_payments,
                        "policy_version": t.policy.version,
                        "pin_tries_left": None,
                    }
            except OffpayError as exc:
                shown[name] = {"device": party.device_id, "error": exc.message}
        return shown

    def books(self, party: str | None = None) -> dict[str, Any]:
        """Everything ``offpay books`` shows, as JSON-ready records (minor units)."""
        banks = self.net.config.banks
        wanted_banks = banks
        who: Party | None = None
        if party is not None and party not in (CENTRAL, *banks):
            who = self.party(party)
            wanted_banks = (who.bank,)
        elif party in banks:
            wanted_banks = (party,)
        books: dict[str, Any] = {
            "currency": self.currency,
            "central_bank": self.net.central_books() if party in (None, CENTRAL) else None,
            "banks": {} if party == CENTRAL else {b: self.net.bank_books(b) for b in wanted_banks},
            "devices": self.devices(),
            "people": {n: asdict(p) for n, p in self.people.items()},
            "conservation": self.conservation().record(),
        }
        if who is not None:
            books["banks"] = {who.bank: _only(books["banks"][who.bank], who)}
            books["devices"] = {k: v for k, v in books["devices"].items() if k == party}
            books["people"] = {party: asdict(who)}
        return books

    def payment(self, tx_id: str) -> dict[str, Any]:
        try:
            raw = bytes.fromhex(tx_id)
        except ValueError:
            raw = b""
        if len(raw) != 16:
            raise DriveError("a payment id is 32 hex digits", code="drive.bad_payment_id")
        return self.net.payment(raw)


def _last_payment(card: Card) -> Signed[OfflinePayment]:
    """The payer card's own copy of the payment it just made: the relays carried it sealed to
    the payee (docs/privacy.md); the payer's own wallet may read its card."""
    last = card.state.last_payment
    if last is None:
        raise DriveError("the card has made no payment", code="drive.no_payment")
    return last


def _tx_id(card: Card) -> str:
    """The id of the card's last payment, as the ledgers and ``offpay payment`` know it."""
    return payload_of(_last_payment(card), OfflinePayment).tx_id.hex()


def _only(books: dict[str, Any], who: Party) -> dict[str, Any]:
    """One bank's books cut down to one customer and their devices."""
    devices = {
        d["id"] for c in books["customers"] if c["id"] == who.customer_id for d in c["devices"]
    }
    return {
        **books,
        "customers": [c for c in books["customers"] if c["id"] == who.customer_id],
        "pending": [p for p in books["pending"] if p["device"] in devices],
        "anomalies": [a for a in books["anomalies"] if a["device"] in devices],
        "losses": [x for x in books["losses"] if x["device"] in devices],
        "shortfalls": [s for s in books["shortfalls"] if s["device"] in devices],
        "refunds": [r for r in books.get("refunds", []) if r["device"] in devices],
    }


@contextlib.contextmanager
def workbench(folder: Path, *, served: bool) -> Iterator[Workbench]:
    """The workbench on the network in ``folder``: in this process, or (``served``) the
    services running from it. Devices are saved on the way out."""
    config = load_network(folder)
    backend: Backend = ServedNetwork(config) if served else LocalNetwork(config)
    try:
        bench = Workbench(backend)
    except BaseException:
        backend.close()
        raise
    try:
        yield bench
    finally:
        bench.close()
