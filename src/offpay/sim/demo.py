"""`offpay demo`: every flow of report §3.4–3.7 played step by step on one central bank and
two intermediaries, with who holds what before and after each step and the conservation
check after every one."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from offpay.crypto.keys import Algorithm
from offpay.errors import OffpayError
from offpay.money import Money
from offpay.policy import LIMITS, Unit, revised_policy
from offpay.sim.headings import heading
from offpay.sim.network import OfflineNetwork, User
from offpay.wire.messages import LimitsPolicy

if TYPE_CHECKING:
    from offpay.service.remote import RemoteNetwork


class Demo:
    def __init__(
        self,
        console: Console,
        data_dir: Path,
        algorithm: Algorithm,
        net: RemoteNetwork | None = None,
    ) -> None:
        """``net``: a network of services to play against (``offpay demo --network``); by
        default a network in this process on SQLite files in ``data_dir``."""
        self.console = console
        self.data_dir = data_dir
        self.algorithm = algorithm
        self.remote = net is not None
        self.net: OfflineNetwork | RemoteNetwork = (
            net
            if net is not None
            else OfflineNetwork(
                algorithm=algorithm,
                url_for=lambda name: f"sqlite+pysqlite:///{data_dir / (name + '.sqlite')}",
            )
        )
        self.step_no = 0

    def money(self, text: str) -> Money:
        from offpay.money import parse_money

        return parse_money(text)

    def holdings(self, *names: str) -> Table:
        table = Table(show_header=True, header_style="bold")
        for col in ("who", "online wallet", "shadow wallet", "card", "card log"):
            table.add_column(col, justify="right" if col != "who" else "left")
        for name in names:
            if name in self.net.users:
                u = self.net.users[name]
                table.add_row(
                    f"{name} ({u.bank.name})",
                    str(u.online),
                    str(u.shadow),
                    str(u.card_balance),
                    str(u.card.state.offline_transactions),
                )
            else:
                m = self.net.merchants[name]
                table.add_row(
                    f"{name} ({m.bank.name}, merchant)",
                    str(m.wallet),
                    "",
                    f"terminal holds {m.module.state.received}",
                    str(m.module.state.offline_payments),
                )
        return table

    def step(self, title: str, who: tuple[str, ...], action: Callable[[], object]) -> object:
        self.step_no += 1
        heading(self.console, f"{self.step_no}. {title}")
        if who:
            self.console.print("before:", self.holdings(*who))
        try:
            result = action()
        except OffpayError as exc:
            self.console.print(f"[yellow]refused[/yellow] {escape(f'[{exc.code}]')} {exc.message}")
            result = exc
        if who:
            self.console.print("after:", self.holdings(*who))
        audit = self.net.check_conservation()
        self.console.print(
            f"[green]conservation holds[/green]: issued {audit.issued} = reserves "
            f"{audit.reserves} + wallets {audit.wallets} + in transit {audit.in_transit}"
        )
        return result

    def say(self, text: str) -> None:
        self.console.print(text)

    def policy_table(self, policy: LimitsPolicy) -> Table:
        """Every limit of ``policy``, from the one description of them (offpay.policy.LIMITS)."""
        table = Table(title=f"{policy.issuer}'s limits policy, version {policy.version}")
        for column in ("limit", "value", "enforced by"):
            table.add_column(column)
        for field in LIMITS:
            value = getattr(policy, field.name)
            shown = "no limit" if value is None else str(value)
            if field.unit is Unit.HOURS and value is not None:
                shown += " hours"
            table.add_row(field.name, shown, field.enforcer)
        return table

    def publish_limits(self, bank: str, changes: dict[str, int | None]) -> None:
        """``bank`` signs and publishes its current policy with ``changes`` (None lifts an
        optional limit): in process through the engine, against services through the
        intermediary's admin route, which calls the same engine method."""
        if isinstance(self.net, OfflineNetwork):
            engine = self.net.banks[bank]
            current = engine.current_policy()
            assert current is not None
            engine.publish_policy(revised_policy(current[1], changes))
            return
        body: dict[str, object] = {k: v for k, v in changes.items() if v is not None}
        body["lift"] = sorted(k for k, v in changes.items() if v is None)
        self.net.banks[bank].admin.post("/v1/admin/policy", body, key=secrets.token_hex(16))

    def limits(self, erik: User) -> None:
        """The limits beyond the pilot's (docs/limits.md): bank-a signs a policy with a
        per-payment maximum and an offline total, Erik's card takes it at sync and refuses
        beyond them, then a newer policy lifts them again."""
        n, m = self.net, self.money
        shop = n.merchants["Corner Shop"]
        self.say("\n[bold]Limits the references name: per payment, offline total[/bold]")
        # The policy as Erik's card holds it: what bank-a signed at his last sync.
        self.console.print(self.policy_table(erik.card.state.policy))
        self.step(
            "bank-a signs version 2: at most SEK 150 a payment and SEK 250 spent offline "
            "between syncs; Erik's card takes it as he tops up SEK 300",
            ("Erik",),
            lambda: (
                self.publish_limits(
                    "bank-a", {"payment_max": 150_00, "card_max_offline_spent": 250_00}
                ),
                erik.phone.top_up(erik.pin, m("SEK 300")),
            ),
        )
        self.console.print(self.policy_table(erik.card.state.policy))
        self.step(
            "Erik's card refuses to pay SEK 160 at the Corner Shop: above the per-payment "
            "maximum (the terminal, on bank-b's policy, would have taken it)",
            ("Erik", "Corner Shop"),
            lambda: shop.pos.charge(erik.card.process, erik.pin, m("SEK 160")),
        )
        self.step(
            "Erik pays SEK 150, the most one payment may be",
            ("Erik", "Corner Shop"),
            lambda: shop.pos.charge(erik.card.process, erik.pin, m("SEK 150")),
        )
        self.step(
            "Erik's card refuses SEK 101 more: SEK 250 offline between syncs at most",
            ("Erik", "Corner Shop"),
            lambda: shop.pos.charge(erik.card.process, erik.pin, m("SEK 101")),
        )
        self.step(
            "bank-a signs version 3, lifting both (absent means no limit); Erik syncs and pays "
            "SEK 160",
            ("Erik", "Corner Shop"),
            lambda: (
                self.publish_limits(
                    "bank-a", {"payment_max": None, "card_max_offline_spent": None}
                ),
                erik.phone.sync(erik.pin),
                shop.pos.charge(erik.card.process, erik.pin, m("SEK 160")),
            ),
        )
        self.step(
            "The Corner Shop and Erik synchronise: his payments settle",
            ("Erik", "Corner Shop"),
            lambda: (shop.pos.sync(), erik.phone.sync(erik.pin)),
        )

    def run(self) -> bool:
        n, m = self.net, self.money
        where = (
            "each a service reached over HTTP, the phones and the shop's PoS app in this process"
            if self.remote
            else "on embedded SQLite"
        )
        self.say(
            "[bold]offpay demo[/bold]: one central bank, two intermediaries (bank-a, bank-b), "
            f"cards and a shop terminal, {where}."
        )
        self.step(
            "The central bank issues SEK 100 000 to each intermediary's reserve",
            (),
            lambda: (n.issue("bank-a", 100_000_00), n.issue("bank-b", 100_000_00)),
        )
        erik = n.add_user("Erik", "bank-a", online=5_000_00)
        frida = n.add_user("Frida", "bank-b", online=1_000_00)
        n.add_merchant("Corner Shop", "bank-b")
        shop = n.merchants["Corner Shop"]
        self.say(
            "Erik (bank-a) and Frida (bank-b) each have an online wallet, a shadow wallet and a "
            "card; the Corner Shop (bank-b) has a terminal whose secure module signs requests."
        )
        self.step(
            "§3.4 Top-up: Erik moves SEK 500 from his online wallet to his card",
            ("Erik",),
            lambda: erik.phone.top_up(erik.pin, m("SEK 500")),
        )
        self.step(
            "§3.3 Limits: Erik tries to load SEK 2 600 more; the signed policy caps a card at "
            "SEK 3 000",
            ("Erik",),
            lambda: erik.phone.top_up(erik.pin, m("SEK 2 600")),
        )
        self.step(
            "§3.4 Top-up: Frida loads SEK 300",
            ("Frida",),
            lambda: frida.phone.top_up(frida.pin, m("SEK 300")),
        )
        self.step(
            "§3.5 Offline payment at a shop: the terminal signs a request to pay SEK 120 "
            "addressed to Erik's card; PIN; the card debits and signs; the terminal verifies "
            "and seals it",
            ("Erik", "Corner Shop"),
            lambda: shop.pos.charge(erik.card.process, erik.pin, m("SEK 120")),
        )

        def lost_then_resubmitted() -> None:
            from offpay.device.reader import CardClient

            client = CardClient(frida.card.process)
            request = shop.module.request_payment(client.identity(), m("SEK 45"))
            client.verify_pin(frida.pin)
            client.pay(request)  # the card debits, but the answer never reaches the terminal
            self.say(
                f"  the terminal never received it: Frida's card shows {frida.card_balance}, "
                f"the terminal holds {shop.module.state.received}"
            )
            shop.pos.resubmit(frida.card.process)
            self.say("  resubmitted: the card's last payment again, no new debit")

        self.step(
            "§3.5 Resubmit: Frida pays SEK 45, the terminal misses it, the card resubmits it",
            ("Frida", "Corner Shop"),
            lost_then_resubmitted,
        )

        def person_to_person() -> None:
            ask = frida.phone.ask(erik.phone.show_identity(), m("SEK 60"))
            self.say("  Frida's card signed a request for SEK 60 addressed to Erik's card")
            paid = erik.phone.pay(erik.pin, ask)
            self.say("  Erik's card checked it, debited SEK 60 and signed the payment")
            frida.phone.accept(frida.pin, paid)
            self.say("  Frida's card verified both signatures and credited SEK 60")

        self.step(
            "§3.6 Person to person across intermediaries: Erik pays Frida SEK 60",
            ("Erik", "Frida"),
            person_to_person,
        )
        self.step(
            "§3.7 The terminal synchronises: bank-b sends payment requests to bank-a for "
            "Erik's payment, the notary records each payment once",
            ("Erik", "Frida", "Corner Shop"),
            shop.pos.sync,
        )
        self.step(
            "§3.7 Erik synchronises: his payments are already settled and are not paid twice",
            ("Erik", "Frida", "Corner Shop"),
            lambda: erik.phone.sync(erik.pin),
        )
        self.step(
            "§3.7 Frida synchronises",
            ("Erik", "Frida"),
            lambda: frida.phone.sync(frida.pin),
        )
        self.step(
            "§3.4 Defund: Erik returns SEK 100 from his card to his online wallet",
            ("Erik",),
            lambda: erik.phone.defund(erik.pin, m("SEK 100")),
        )

        self.limits(erik)

        # ---- the report's liquidity example, with its exact amounts ----
        self.say("\n[bold]Report §3.7, liquidity problems in synchronisation[/bold]")
        alice = n.add_user("Alice", "bank-a", online=1_000_00)
        bob = n.add_user("Bob", "bank-a")
        charlie = n.add_user("Charlie", "bank-b")
        abc = ("Alice", "Bob", "Charlie")
        self.step(
            "(1) Alice transfers SEK 200 to her offline wallet",
            abc,
            lambda: alice.phone.top_up(alice.pin, m("SEK 200")),
        )

        def offline_pay(payer: str, payee: str, amount: str) -> None:
            p, q = n.users[payer], n.users[payee]
            q.phone.accept(
                q.pin, p.phone.pay(p.pin, q.phone.ask(p.phone.show_identity(), m(amount)))
            )

        self.step(
            "(2) Offline, Alice pays Bob SEK 80", abc, lambda: offline_pay("Alice", "Bob", "SEK 80")
        )
        self.step(
            "(3) Offline, Bob pays Charlie SEK 50",
            abc,
            lambda: offline_pay("Bob", "Charlie", "SEK 50"),
        )
        self.step(
            "(4) Charlie synchronises first: the SEK 50 cannot leave Bob's empty shadow wallet (5)",
            abc,
            lambda: charlie.phone.sync(charlie.pin),
        )
        shortfall = sum((amount for _, _, amount in bob.bank.open_shortfalls()), Money.zero("SEK"))
        self.say(
            f"  [red]shortfall[/red]: {shortfall} recorded at {bob.bank.name} against Bob's card; "
            "the payment waits in the pending-settlement queue and Charlie's card shows only "
            "his shadow wallet until it settles (the liquidity rules are compared at the end)"
        )
        self.step(
            "Bob synchronises: Alice's SEK 80 settles, then his SEK 50 to Charlie",
            abc,
            lambda: bob.phone.sync(bob.pin),
        )
        self.step(
            "Charlie synchronises again and gets his SEK 50",
            abc,
            lambda: charlie.phone.sync(charlie.pin),
        )
        self.step("Alice synchronises", abc, lambda: alice.phone.sync(alice.pin))

        # ---- the end ----
        heading(self.console, "Final check")
        mismatched = [u.name for u in n.users.values() if u.card_balance != u.shadow]
        audit = n.check_conservation()
        self.say(
            f"money issued {audit.issued} = money held {audit.held}; "
            f"payments notarised: {n.central.notarised_count()}; "
            f"open shortfalls: {sum(len(b.open_shortfalls()) for b in n.banks.values())}"
        )
        if mismatched:
            self.say(f"[red]cards that differ from their shadow wallet: {mismatched}[/red]")
            return False
        self.say(
            "[green]every card equals its shadow wallet; money issued equals money held[/green]"
        )
        if self.remote:
            return audit.balanced
        from offpay.sim.liquidity_demo import LiquidityDemo

        settled = LiquidityDemo(self.console, self.data_dir, self.algorithm).run()
        return audit.balanced and settled
