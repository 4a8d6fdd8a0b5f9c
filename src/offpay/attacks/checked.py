"""Actions on a network with money conservation checked after every one, and refusals that
must leave every wallet and every device exactly as they were.

The attack suite's referee: the attacks in this package and the tests (``tests/conftest.py``)
run every step through it, in process or against served intermediaries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from offpay.device.reader import CardClient
from offpay.errors import OffpayError
from offpay.money import Money
from offpay.sim.network import Audit, Ledger, Merchant, OfflineNetwork, User


class DefenceFailed(AssertionError):
    """An attack was not stopped the way the threat model says it is: a refusal that did not
    happen, came with another code or changed something, or an anomaly nobody recorded. An
    assertion, not a refusal: no code may catch it as an :class:`OffpayError`."""


def expect(condition: bool, failure: str) -> None:
    """``condition`` must hold; otherwise the defence it shows is missing."""
    if not condition:
        raise DefenceFailed(failure)


def card_snapshot(user: User[Any]) -> tuple[object, ...]:
    """Everything on a card that concerns money, counters, limits or the offline log."""
    s = user.card.state
    return (s.balance, s.seq, s.instruction_no, s.log, s.policy, s.last_payment)


def terminal_snapshot(merchant: Merchant[Any]) -> tuple[object, ...]:
    s = merchant.module.state
    return (s.seq, s.cleared_through, s.unsynced, s.instruction_no, s.policy)


@dataclass
class Checked:
    """Runs actions on ``net`` and checks conservation (issued == held, and each
    intermediary's wallets agree with the central bank) after every one."""

    net: Any  # an OfflineNetwork, or a served one (offpay.service.remote.RemoteNetwork)
    steps: int = 0
    audit: Audit | None = None

    def money(self, minor: int) -> Money:
        return self.net.money(minor)

    def conserved(self) -> Audit:
        """Raises ``audit.conservation`` if money was created or lost."""
        self.audit = self.net.check_conservation()
        return self.audit

    def step(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one action; conservation must hold afterwards, whether it succeeded or not."""
        try:
            return fn(*args, **kwargs)
        finally:
            self.steps += 1
            self.conserved()

    def counted(self, steps: int) -> None:
        """``steps`` actions played on networks of their own (a forked copy of a prepared
        flow), with conservation checked after each there: counted into this play's steps."""
        self.steps += steps

    def snapshot(self) -> tuple[object, ...]:
        """Every wallet of every bank, every card, every terminal, every notarised payment."""
        net = self.net
        cards = tuple(card_snapshot(u) for u in net.users.values())
        terminals = tuple(terminal_snapshot(m) for m in net.merchants.values())
        if isinstance(net, OfflineNetwork):
            wallets: tuple[object, ...] = tuple(
                sorted((n, b.wallets()) for n, b in net.banks.items())
            )
            reserves: tuple[object, ...] = tuple(net.central.positions())
        else:  # a served network: the wallets of the people and shops this play made
            wallets = tuple(_wallets(u.bank, u.customer_id) for u in net.users.values())
            wallets += tuple(m.wallet for m in net.merchants.values())
            reserves = ()
        return wallets, cards, terminals, reserves, net.central.notarised_count()

    def refused(self, code: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> OffpayError:
        """``fn`` must be refused with exactly ``code`` and must change nothing anywhere."""
        before = self.snapshot()
        try:
            self.step(fn, *args, **kwargs)
        except OffpayError as exc:
            if exc.code != code:
                raise DefenceFailed(f"expected a refusal {code}, got {exc}") from exc
            if self.snapshot() != before:
                raise DefenceFailed(f"refused with {code}, but something changed") from exc
            return exc
        raise DefenceFailed(f"expected a refusal {code}, but it went through")

    # -- the offline flows, as the relays run them ---------------------------------------------

    def charge(self, merchant: Merchant[Any], user: User[Any], minor: int) -> bytes:
        """Report §3.5: the shop's PoS app charges ``user``'s card. Returns the signed payment
        as the card keeps it (the app carried it sealed to the terminal)."""
        self.step(merchant.pos.charge, user.card.process, user.pin, self.money(minor))
        return _last_payment(user)

    def p2p(self, payer: User[Any], payee: User[Any], minor: int) -> bytes:
        """Report §3.6: payee's phone asks, payer's phone pays, payee's phone accepts. Returns
        the signed payment as the payer's card keeps it (the phones carried it sealed)."""
        request = self.step(payee.phone.ask, payer.phone.show_identity(), self.money(minor))
        payment = self.step(payer.phone.pay, payer.pin, request)
        self.step(payee.phone.accept, payee.pin, payment)
        return _last_payment(payer)

    def top_up(self, user: User[Any], minor: int) -> None:
        self.step(user.phone.top_up, user.pin, self.money(minor))

    def defund(self, user: User[Any], minor: int) -> None:
        self.step(user.phone.defund, user.pin, self.money(minor))

    def sync(self, *parties: User[Any] | Merchant[Any]) -> None:
        for party in parties:
            if isinstance(party, Merchant):
                self.step(party.pos.sync)
            else:
                self.step(party.phone.sync, party.pin)

    def sync_everyone(self) -> None:
        self.sync(*self.net.users.values(), *self.net.merchants.values())

    def card_client(self, user: User[Any]) -> CardClient:
        return CardClient(user.card.process)


def _last_payment(user: User[Any]) -> bytes:
    """The signed payment a card made last, read from the card: the referee may look inside
    devices, the relays may not (docs/privacy.md)."""
    last = user.card.state.last_payment
    assert last is not None
    return last.to_bytes()


def _wallets(bank: Ledger, customer_id: str) -> tuple[Money, Money]:
    return bank.balance(f"{customer_id}/online"), bank.balance(f"{customer_id}/shadow")


ISSUED_PER_BANK = 1_000_000_00  # minor units issued to each intermediary of a fresh network


def fresh_network(**options: Any) -> Checked:
    """A two-bank network in this process with SEK 1 000 000 issued to each bank, checked."""
    net = OfflineNetwork(**options)
    for name in net.banks:
        net.issue(name, ISSUED_PER_BANK)
    checked = Checked(net)
    checked.conserved()
    return checked
