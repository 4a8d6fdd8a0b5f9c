"""The liquidity part of `offpay demo`: report §3.7's Alice → Bob → Charlie example under the
pilot's rules and under each remedy, each on a network of its own, then what each one cost."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from offpay.crypto.keys import Algorithm
from offpay.errors import OffpayError
from offpay.money import Money, parse_money
from offpay.sim.headings import heading
from offpay.sim.liquidity import LiquidityReport, SimClock, liquidity_report
from offpay.sim.network import OfflineNetwork, User
from offpay.wire.messages import Liquidity

POOL = "SEK 1 000"
STEP_MINUTES = 10  # simulated time between two steps, so that waits read in minutes

STORY = {
    Liquidity.QUEUE: "the pilot's rules, with offpay's pending-settlement queue",
    Liquidity.RESTRICT: "policy A: money received offline is not spendable offline until sync",
    Liquidity.POOL: f"policy B: a central-bank liquidity pool of {POOL}",
    Liquidity.RECEIPTS: "policy C: each payment carries the receipts that fund it",
}


class LiquidityDemo:
    def __init__(self, console: Console, data_dir: Path, algorithm: Algorithm) -> None:
        self.console = console
        self.data_dir = data_dir
        self.algorithm = algorithm

    def run(self) -> bool:
        heading(self.console, "Liquidity (report §3.7): one example, four rules")
        reports = [self._play(policy) for policy in Liquidity]
        self.console.print(self._table(reports))
        return all(r.still_waiting == 0 for r in reports)

    def _play(self, policy: Liquidity) -> LiquidityReport:
        folder = self.data_dir / f"liquidity-{policy.value}"
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.sqlite*"):
            old.unlink()
        clock = SimClock()
        net = OfflineNetwork(
            algorithm=self.algorithm,
            url_for=lambda name: f"sqlite+pysqlite:///{folder / (name + '.sqlite')}",
            liquidity=policy,
            pool=parse_money(POOL).minor if policy is Liquidity.POOL else 0,
            clock=clock,
        )
        net.issue("bank-a", 100_000_00)
        net.issue("bank-b", 100_000_00)
        alice = net.add_user("Alice", "bank-a", online=1_000_00)
        bob = net.add_user("Bob", "bank-b")
        charlie = net.add_user("Charlie", "bank-a")
        people = (alice, bob, charlie)
        heading(self.console, f"{policy.value}: {STORY[policy]}")

        def step(title: str, action: Callable[[], object]) -> None:
            clock.advance(STEP_MINUTES)
            try:
                action()
                outcome = ""
            except OffpayError as exc:
                outcome = f" → [yellow]refused[/yellow] {escape(f'[{exc.code}]')} {exc.message}"
            net.check_conservation()
            self.console.print(f"{title}{outcome}")

        m = parse_money
        step("Alice tops up SEK 200", lambda: alice.phone.top_up(alice.pin, m("SEK 200")))
        step("offline, Alice pays Bob SEK 80", lambda: _pay(alice, bob, m("SEK 80")))
        step("offline, Bob pays Charlie SEK 50", lambda: _pay(bob, charlie, m("SEK 50")))
        if policy is Liquidity.RESTRICT:
            step("Bob synchronises", lambda: bob.phone.sync(bob.pin))
            step("offline, Bob pays Charlie SEK 50", lambda: _pay(bob, charlie, m("SEK 50")))
        step("Charlie synchronises first", lambda: charlie.phone.sync(charlie.pin))
        self._state(net, people)
        step("Alice synchronises", lambda: alice.phone.sync(alice.pin))
        self._state(net, people)
        step("everyone synchronises", lambda: [u.phone.sync(u.pin) for u in people])
        self._state(net, people)
        return liquidity_report(net)

    def _state(self, net: OfflineNetwork, people: tuple[User, ...]) -> None:
        name = {u.card_id: u.name for u in people}
        waiting = [
            f"{p.amount} from {name[p.device]} to {name.get(p.counterparty, p.counterparty)}"
            for bank in net.banks.values()
            for p in bank.pending()
            if p.direction == "out"
        ]
        pool = net.central.pool_status()
        cells = ", ".join(f"{u.name} card {u.card_balance} / shadow {u.shadow}" for u in people)
        self.console.print(f"  {cells}")
        extra = f"; pool lent {pool.outstanding}" if pool.size.minor else ""
        queue = ", ".join(waiting) if waiting else "nothing"
        self.console.print(f"  waiting to settle: {queue}{extra}")

    def _table(self, reports: list[LiquidityReport]) -> Table:
        """A column per rule and a row per cost, so that the four rules fit 80 columns."""
        table = Table(
            title="What each rule cost in this run",
            header_style="bold",
            caption="extra bytes: funding receipts carried per payment",
        )
        table.add_column("", no_wrap=True)
        for r in reports:
            table.add_column(r.policy.value, justify="right")
        costs: tuple[tuple[str, Callable[[LiquidityReport], object]], ...] = (
            ("payments", lambda r: r.payments),
            ("shortfalls", lambda r: r.short),
            ("shortfall value", lambda r: r.shortfall),
            ("waited", lambda r: r.queued),
            ("longest wait", lambda r: f"{int(r.longest_wait.total_seconds() // 60)} min"),
            ("still waiting", lambda r: r.still_waiting),
            ("pool drawn", lambda r: r.pool_drawn),
            ("pool peak", lambda r: r.pool_peak),
            ("extra bytes", lambda r: r.extra_bytes_per_payment),
        )
        for name, cost in costs:
            table.add_row(name, *(str(cost(r)) for r in reports))
        return table


def _pay(payer: User, payee: User, amount: Money) -> None:
    request = payee.phone.ask(payer.phone.show_identity(), amount)
    payee.phone.accept(payee.pin, payer.phone.pay(payer.pin, request))
