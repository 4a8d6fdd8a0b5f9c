"""The device lab: people, shops and their devices in the data folder's workbench
(:mod:`offpay.drive`), driven through the real phone and PoS apps over HTTP, one action at a
time. The lab adds only what a page needs on top: a device switched offline (its app then
cannot reach its intermediary, so it cannot sync, top up or defund, but pays and gets paid
offline), the person-to-person request waiting for the payer to confirm its 6-digit code, and
the attacks of ``docs/threats.md`` played against the same services."""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from offpay.attacks.over_http import play_over_http
from offpay.attacks.report import AttackReport
from offpay.console.desk import ConsoleError
from offpay.console.evidence import plain
from offpay.device.card import Card
from offpay.drive.backends import ServedNetwork
from offpay.drive.token_wallets import HeldToken, TokenWallets
from offpay.drive.workbench import DEFAULT_PIN, Workbench, workbench
from offpay.money import Money
from offpay.service.datadir import NetworkConfig
from offpay.wire.envelope import Signed, payload_of
from offpay.wire.messages import OfflinePayment

T = TypeVar("T")

# The attacks of docs/threats.md the lab plays, by their name in `offpay attack`.
LAB_ATTACKS = {
    "cloned-card": "a cloned card spends the same money at two shops",
    "rolled-back-card": "a card's saved state written back after a payment and a sync",
    "replayed-top-up": "a relay replays a top-up after the card was defunded",
    "relay-swapping-payee": "a relay delivers a payment to another payee",
}


@dataclasses.dataclass(frozen=True)
class Asked:
    """A person-to-person request the payee's phone showed, waiting for the payer."""

    payer: str
    payee: str
    amount: Money
    code: str
    request: bytes = dataclasses.field(repr=False)
    # The payer's card as it stays in the phone's field while the payee asks: its fresh
    # challenge lives in the card's RAM only, so the same card object must pay.
    payer_card: Card = dataclasses.field(repr=False, compare=False)


class Lab:
    """Every lab action, serialised: the workbench holds the data folder's drive lock while
    it runs, so two actions (or a CLI command) never drive the same device at once."""

    def __init__(self, config: NetworkConfig) -> None:
        self.config = config
        self._reads: ServedNetwork | None = None  # the device views' connection, made on use
        self.offline: set[str] = set()
        self.asked: dict[str, Asked] = {}
        self.reports: list[AttackReport] = []
        self.wallets = TokenWallets()  # the token scheme's elements, in this process
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def bench(self) -> Iterator[Workbench]:
        with self._lock, workbench(self.config.folder, served=True) as bench:
            yield bench

    def view(self) -> Workbench:
        """The devices as their files hold them now, without the folder's lock: a page that
        shows them never turns an `offpay` command away."""
        if self._reads is None:
            self._reads = ServedNetwork(self.config)
        return Workbench(self._reads, read_only=True)

    def _do(self, act: Callable[[Workbench], T]) -> T:
        with self.bench() as bench:
            return act(bench)

    def _online(self, name: str, what: str) -> None:
        if name in self.offline:
            raise ConsoleError(
                f"{name}'s device is offline: switch it online to {what}", code="console.offline"
            )

    def close(self) -> None:
        if self._reads is not None:
            self._reads.close()

    # -- people and devices -----------------------------------------------------------------

    def issue(self, bank: str, amount: str) -> str:
        return self._do(lambda b: b.issue(bank, amount))

    def open(self, name: str, bank: str, kind: str, pin: str = DEFAULT_PIN) -> str:
        """A customer of ``bank`` and their device: a card (person) or a terminal (shop)."""
        if kind not in ("person", "shop"):
            raise ConsoleError("a customer is a person or a shop", code="console.bad_kind")

        def act(b: Workbench) -> str:
            opened = b.open_customer(name, bank, merchant=kind == "shop")
            device = b.issue_card(name, pin) if kind == "person" else b.issue_terminal(name)
            return f"{opened}; {device}"

        return self._do(act)

    def switch(self, name: str) -> str:
        self._do(lambda b: b.party(name))
        if name in self.offline:
            self.offline.discard(name)
            return f"{name}'s device is online"
        self.offline.add(name)
        return f"{name}'s device is offline"

    # -- money ------------------------------------------------------------------------------

    def fund(self, name: str, amount: str) -> str:
        return self._do(lambda b: b.fund(name, amount))

    def top_up(self, name: str, amount: str, pin: str) -> str:
        self._online(name, "top up")
        return self._do(lambda b: b.top_up(name, amount, pin))

    def defund(self, name: str, amount: str, pin: str) -> str:
        self._online(name, "defund")
        return self._do(lambda b: b.defund(name, amount, pin))

    def sync(self, name: str, pin: str) -> str:
        self._online(name, "sync")
        return self._do(lambda b: b.sync(name, pin))

    def pay_shop(self, payer: str, shop: str, amount: str, pin: str) -> str:
        """A tap at a shop's terminal: offline on both sides, whatever their switch says."""
        return self._do(lambda b: b.pay_shop(payer, shop, amount, pin))

    def ask(self, payer: str, payee: str, amount: str) -> tuple[str, Asked]:
        """The payee's phone asks; the request waits (under the id returned) for the payer
        to confirm its code."""

        def act(b: Workbench) -> Asked:
            request, code = b.ask(payer, payee, amount)
            return Asked(payer, payee, b.money(amount), code, request, b.card(payer))

        asked, ask_id = self._do(act), secrets.token_hex(8)
        self.asked[ask_id] = asked
        return ask_id, asked

    def confirm(self, ask_id: str, code: str, pin: str, payee_pin: str) -> str:
        asked = self.asked.pop(ask_id, None)
        if asked is None:
            raise ConsoleError(
                "that request is no longer waiting: ask again", code="console.no_request"
            )

        def act(b: Workbench) -> str:
            if b.card(asked.payer).state != asked.payer_card.state:
                raise ConsoleError(
                    f"{asked.payer}'s card changed since the request: ask again",
                    code="console.card_changed",
                )
            b.cards[asked.payer] = asked.payer_card  # the card that answered the request
            return b.pay_request(
                asked.payer, asked.payee, asked.request, pin, payee_pin, code=code.strip()
            )

        return self._do(act)

    # -- the token scheme -------------------------------------------------------------------

    def token_open(self, name: str) -> str:
        return self._do(lambda b: self.wallets.open(b, name))

    def withdraw(self, name: str, amount: str) -> str:
        self._online(name, "withdraw tokens")
        return self._do(lambda b: self.wallets.withdraw(b, name, amount))

    def deposit(self, name: str, amount: str) -> str:
        self._online(name, "deposit tokens")
        return self._do(lambda b: self.wallets.deposit(b, name, amount))

    def token_transfer(self, payer: str, payee: str, amount: str) -> str:
        return self._do(lambda b: self.wallets.transfer(b, payer, payee, amount))

    def split(self, name: str, token: str, amount: str) -> str:
        return self._do(lambda b: self.wallets.split(b, name, token, amount))

    def merge(self, name: str, tokens: str) -> str:
        with self._lock:
            return self.wallets.merge(name, tokens.replace(",", " ").split())

    def token_wallets(self) -> dict[str, list[HeldToken]]:
        with self._lock:
            return {name: self.wallets.held(name) for name in sorted(self.wallets.elements)}

    # -- reading ----------------------------------------------------------------------------

    def devices(self) -> list[dict[str, Any]]:
        """Each device as it holds itself: balance, counters, offline log, policy."""
        b = self.view()
        return [_device(b, name) for name in sorted(b.people)]

    def signed_payment(self, tx_id: bytes) -> Signed[OfflinePayment] | None:
        """The signed payment ``tx_id`` as a card of the lab still holds it (in its offline
        log before its sync, or as the last payment it made): the evidence of a payment no
        intermediary has settled yet (settled ones are read from the intermediaries)."""
        b = self.view()
        for name, party in b.people.items():
            if party.kind != "person" or party.device_id is None:
                continue
            state = b.card(name).state
            held = [e.payment for e in state.log]
            if state.last_payment is not None:
                held.append(state.last_payment)
            for signed in held:
                if payload_of(signed, OfflinePayment).tx_id == tx_id:
                    return signed
        return None

    # -- attacks ----------------------------------------------------------------------------

    def attack(self, name: str) -> AttackReport:
        if name not in LAB_ATTACKS:
            raise ConsoleError(f"the lab has no attack named {name!r}", code="console.bad_attack")
        with self._lock:
            report = play_over_http(name, self.config)
        self.reports.insert(0, report)
        return report


def _device(b: Workbench, name: str) -> dict[str, Any]:
    party = b.people[name]
    shown: dict[str, Any] = {"name": name, "kind": party.kind, "bank": party.bank}
    if party.device_id is None:
        return shown
    shown["device"] = party.device_id
    if party.kind == "person":
        s = b.card(name).state
        shown.update(
            balance=str(s.balance),
            counters={
                "seq": s.seq,
                "sessions": s.session_no,
                "instruction": s.instruction_no,
                "offline transactions": s.offline_transactions,
                "PIN tries left": s.pin_tries_left,
                "revocation list version": s.revocation_version,
            },
            log=[_entry(e.seq, str(e.direction.value), e.payment) for e in s.log],
            policy=plain(s.policy),
        )
    else:
        t = b.terminal(name).module.state
        shown.update(
            balance=str(t.received),
            counters={
                "seq": t.seq,
                "cleared through": t.cleared_through,
                "unsynced payments": len(t.unsynced),
                "instruction": t.instruction_no,
            },
            log=[
                {"seq": seq, "direction": "in", "amount": str(amount), "payment": tx.hex()}
                for seq, amount, tx, _ in t.unsynced
            ],
            policy=plain(t.policy),
        )
    return shown


def _entry(seq: int, direction: str, payment: Any) -> dict[str, Any]:
    p = payload_of(payment, OfflinePayment)
    return {
        "seq": seq,
        "direction": direction,
        "amount": str(p.amount),
        "payment": p.tx_id.hex(),
        "from": p.sender,
        "to": p.receiver,
    }
