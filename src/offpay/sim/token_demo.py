"""`offpay demo --scheme tokens`: the token-based scheme ("sign once", Federal Reserve
FEDS 2025-105) played step by step on one central bank and two intermediaries: withdraw
(mint), a chain of offline transfers with split and merge, deposit (redeem), and a double
spend by a broken secure element that is caught at deposit and revoked. After every step it
shows who holds what and checks that money issued equals money held."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from offpay.crypto.keys import Algorithm
from offpay.errors import DoubleSpend, OffpayError
from offpay.money import Money, parse_money
from offpay.sim.headings import heading
from offpay.sim.network import Audit, ConservationError, OfflineNetwork, TokenUser
from offpay.tokens.element import TokenElement
from offpay.tokens.model import Token
from offpay.tokens.transfer import ReceiverSession, SenderSession

if TYPE_CHECKING:
    from offpay.service.remote_tokens import RemoteTokenNetwork


class BrokenSignOnceElement(TokenElement):
    """SIMULATED HARDWARE BREAK, for the demo only: a secure element whose SignOnce signs but
    does not destroy the ownership key. FEDS 2025-105 names physically breaking or cloning
    the secure element as the one way to double spend; this class stands in for that attack.
    Nothing outside this demo uses it."""

    def sign_once(self, owner: bytes, digest: bytes) -> bytes:
        key = self._keys.get(owner)
        signature = super().sign_once(owner, digest)  # signs and destroys the key ...
        if key is not None:
            self._keys[owner] = key  # ... which the broken chip quietly keeps
        return signature


def break_sign_once(element: TokenElement) -> None:
    """Turn a genuine, provisioned element into a broken one (simulated hardware attack)."""
    element.__class__ = BrokenSignOnceElement


def short(token: Token) -> str:
    return "#" + token.id.hex()[:6]


class TokenDemo:
    def __init__(
        self,
        console: Console,
        data_dir: Path,
        algorithm: Algorithm,
        net: RemoteTokenNetwork | None = None,
    ) -> None:
        """``net``: a network of services to play against (``offpay demo --network DIR
        --scheme tokens``); by default a network in this process, on SQLite in ``data_dir``."""
        self.console = console
        self.remote = net is not None
        self.net: OfflineNetwork | RemoteTokenNetwork = (
            net
            if net is not None
            else OfflineNetwork(
                algorithm=algorithm,
                url_for=lambda name: f"sqlite+pysqlite:///{data_dir / (name + '.sqlite')}",
            )
        )
        # A served network outlives one demo: tokens minted before it are not this demo's.
        self.tokens_before = self.net.audit()[0].tokens if self.remote else self.net.money(0)
        self.step_no = 0
        self.ok = True

    def money(self, text: str) -> Money:
        return parse_money(text)

    def user(self, name: str) -> TokenUser[Any]:
        return self.net.token_users[name]

    # -- what the audience sees ------------------------------------------------------------------

    def ancestry(self, holder: TokenUser[Any], token: Token) -> str:
        """The number of earlier tokens in the history, as the holder's element verifies it."""
        try:
            return str(holder.element.verify(token).length)
        except OffpayError as exc:
            return f"refused [{exc.code}]"

    def describe(self, holder: TokenUser[Any], token: Token) -> str:
        return f"{token.value} {short(token)} (ancestry {self.ancestry(holder, token)})"

    def holdings(self, *names: str) -> Table:
        table = Table(show_header=True, header_style="bold")
        table.add_column("who")
        table.add_column("online wallet", justify="right")
        table.add_column("tokens in element", justify="right")
        table.add_column("tokens: value, id, ancestry length")
        for name in names:
            u = self.user(name)
            table.add_row(
                f"{name} ({u.bank.name})",
                str(u.online),
                str(u.tokens),
                escape(", ".join(self.describe(u, t) for t in u.element.tokens())) or "-",
            )
        return table

    def in_elements(self) -> Money:
        """Value of every token held in any element: users' and the intermediaries' vaults."""
        total = self.net.token_vaults()
        for u in self.net.token_users.values():
            total = total + u.tokens
        return total

    def outstanding(self, audit: Audit) -> Money:
        """Tokens outstanding at the mint that this demo minted."""
        return audit.tokens - self.tokens_before

    def conservation(self) -> None:
        try:
            audit = self.net.check_conservation()
        except ConservationError as exc:
            self.ok = False
            self.console.print(f"[red]conservation broken[/red]: {escape(exc.message)}")
            return
        self.console.print(
            f"[green]conservation holds[/green]: issued {audit.issued} = reserves "
            f"{audit.reserves} + wallets {audit.wallets} + in transit {audit.in_transit} "
            f"+ tokens outstanding at the mint {audit.tokens}"
        )
        held, outstanding = self.in_elements(), self.outstanding(audit)
        if held != outstanding:
            self.console.print(
                f"  [red]the elements hold {held} in tokens but the mint has only "
                f"{outstanding} outstanding[/red]: {held - outstanding} of it is a double "
                "spend that offline devices cannot see"
            )

    def step(
        self, title: str, explain: str, who: tuple[str, ...], action: Callable[[], object]
    ) -> object:
        self.step_no += 1
        heading(self.console, f"{self.step_no}. {title}")
        self.say(explain)
        if who:
            self.console.print("before:", self.holdings(*who))
        try:
            result = action()
        except OffpayError as exc:
            self.refused(exc)
            result = exc
        if who:
            self.console.print("after:", self.holdings(*who))
        self.conservation()
        return result

    def say(self, text: str) -> None:
        self.console.print(text)

    def refused(self, exc: OffpayError) -> None:
        self.console.print(
            f"[yellow]refused[/yellow] {escape(f'[{exc.code}]')} {escape(exc.message)}"
        )

    # -- the offline protocol, phase by phase -----------------------------------------------------

    def pay_offline(self, payer: str, payee: str, amount: Money) -> Token:
        """FEDS 2025-105 Figure 7 between two phones, narrated: discovery with the 6-digit
        code, token verification, transfer with the confirmation code."""
        p, q = self.user(payer), self.user(payee)
        had = {t.id for t in p.element.tokens()}
        sender, receiver = SenderSession(p.element, amount), ReceiverSession(q.element, amount)
        sender_proof = sender.on_hello(receiver.hello())
        receiver_proof = receiver.on_hello(sender.hello())
        sender.on_proof(receiver_proof)
        receiver.on_proof(sender_proof)
        self.say(
            f"  1 discovery: {payer}'s phone shows [bold]{sender.code}[/bold], {payee}'s phone "
            f"shows [bold]{receiver.code}[/bold]; the users compare them (each element "
            "committed to its nonce before seeing the other's, so a relay in the middle "
            "cannot make them match)"
        )
        sender.users_agree(receiver.code)
        receiver.users_agree(sender.code)
        offer = sender.offer()
        offered = sender.offered
        assert offered is not None
        if offered.id not in had:
            self.say(f"  {payer}'s element has no {amount} token, so it makes change first:")
            self.say_made(offered, had)
        address = receiver.on_offer(offer)
        self.say(
            f"  2 verification: {payer} offers {self.describe(p, offered)}; {payee}'s element "
            "checks every proof back to the mint offline and answers with a fresh address "
            "(KeyGen)"
        )
        confirmation = receiver.on_transfer(sender.on_address(address))
        sender.on_confirmation(confirmation)
        token = receiver.received
        assert token is not None
        key = (
            "[red]keeps the key (broken)[/red]"
            if isinstance(p.element, BrokenSignOnceElement)
            else "destroys the key"
        )
        self.say(
            f"  3 transfer: {payer}'s element SignOnce-signs the token over to that address and "
            f"{key}; {payee} stores {self.describe(q, token)} and answers with a "
            f"confirmation code, which {payer}'s element recomputes and accepts"
        )
        return token

    def say_made(self, token: Token, had: set[bytes]) -> None:
        """How a token the element built during this offer came out of split and merge."""
        parents = token.ancestors
        for parent in parents:
            if parent.id not in had:
                self.say_made(parent, had)  # made in the same offer: merged, then split
        if len(parents) == 1:
            change = " + ".join(str(s.value) for s in token.siblings)
            self.say(
                f"    split {parents[0].value} {short(parents[0])} into {token.value} "
                f"{short(token)} + {change} change"
            )
        else:
            self.say(
                "    merged "
                + " + ".join(f"{p.value} {short(p)}" for p in parents)
                + f" into {token.value} {short(token)}"
            )

    # -- the story ---------------------------------------------------------------------------------

    def run(self) -> bool:
        n, m = self.net, self.money
        self.say(
            '[bold]offpay demo --scheme tokens[/bold]: the Federal Reserve\'s "sign once" '
            "design (FEDS 2025-105): one central bank with a minting service, two "
            "intermediaries (bank-a, bank-b), phones with secure elements, "
            + (
                "the parties running as services; the phones' wallet apps reach them over HTTP."
                if self.remote
                else "on embedded SQLite."
            )
        )
        self.step(
            "The central bank issues SEK 100 000 to each intermediary's reserve",
            "Central bank money enters the system; every later step must conserve it.",
            (),
            lambda: (n.issue("bank-a", 100_000_00), n.issue("bank-b", 100_000_00)),
        )
        for name, bank, online in (
            ("Ann", "bank-a", 1_000_00),
            ("Ben", "bank-b", 0),
            ("Cleo", "bank-a", 0),
            ("Dan", "bank-b", 200_00),
        ):
            n.add_token_user(name, bank, online=online)
        ann, ben, cleo, dan = (self.user(x) for x in ("Ann", "Ben", "Cleo", "Dan"))
        self.say(
            "Ann, Ben, Cleo and Dan each have an online wallet at their intermediary and a "
            "phone whose secure element holds tokens; each element is provisioned with an "
            "issuer certificate, the root and the mint's public key, so it can verify any "
            "token offline."
        )
        everyone = ("Ann", "Ben", "Cleo", "Dan")

        def withdraw() -> None:
            token = ann.app.withdraw(m("SEK 300"))
            self.say(
                f"  minted {self.describe(ann, token)}: a root token whose only proof is the "
                "mint's signature, owned by a fresh key of Ann's element"
            )

        self.step(
            "Withdraw (MintToken + WithdrawToken): Ann turns SEK 300 of her online wallet into "
            "a token",
            "bank-a debits Ann's online wallet and asks the central bank's minting service for a "
            "token owned by a fresh key of Ann's element; the central bank moves the value from "
            "bank-a's customer holdings to tokens outstanding.",
            ("Ann",),
            withdraw,
        )

        def split() -> None:
            (token,) = ann.element.tokens()
            wanted, change = ann.element.split(token.id, m("SEK 120"))
            self.say(
                f"  {token.value} {short(token)} is gone; {wanted.value} {short(wanted)} and "
                f"{change.value} {short(change)} are its children, each owned by a fresh key"
            )

        self.step(
            "Split: Ann's element makes change, SEK 300 into SEK 120 + SEK 180",
            "Like breaking a banknote: the element SignOnce-signs the old token into two "
            "children that must sum to it; each child carries the parent in its ancestry.",
            ("Ann",),
            split,
        )
        self.step(
            "Offline transfer: Ann pays Ben SEK 120 (bank-a to bank-b, no network)",
            "The three phases of the paper's Figure 7; the token changes owner by Ann's "
            "element signing it once to a key of Ben's element.",
            ("Ann", "Ben"),
            lambda: self.pay_offline("Ann", "Ben", m("SEK 120")),
        )
        self.step(
            "Offline transfer with change: Ben pays Cleo SEK 45 out of his SEK 120 token",
            "Ben has no SEK 45 token, so his element splits during the offer; the ancestry "
            "grows with every hop, and every receiver verifies all of it.",
            ("Ben", "Cleo"),
            lambda: self.pay_offline("Ben", "Cleo", m("SEK 45")),
        )
        self.step(
            "Offline transfer: Ann pays Cleo SEK 80 out of her SEK 180 token",
            "Another split and transfer; Cleo now holds two tokens with different histories.",
            ("Ann", "Cleo"),
            lambda: self.pay_offline("Ann", "Cleo", m("SEK 80")),
        )

        def merge() -> None:
            ids = [t.id for t in cleo.element.tokens()]
            merged = cleo.element.merge(ids)
            self.say(f"  merged into {self.describe(cleo, merged)}")

        self.step(
            "Merge: Cleo's element combines her SEK 45 and SEK 80 tokens into one SEK 125 token",
            "Each parent's key signs the same transition once; the child's history is the union "
            "of both histories, so its ancestry counts every earlier token of both.",
            ("Cleo",),
            merge,
        )
        self.step(
            "Offline transfer: Cleo pays Dan SEK 125, the whole merged token",
            "No change needed; Dan's element verifies both branches back to the one minted root.",
            ("Cleo", "Dan"),
            lambda: self.pay_offline("Cleo", "Dan", m("SEK 125")),
        )
        self.step(
            "Deposit (DepositToken + RedeemToken): Dan returns his SEK 125 token to his online "
            "wallet",
            "Dan's element signs the token to bank-b's vault; bank-b redeems it at the central "
            "bank, which verifies the whole history, records every token it consumed, and moves "
            "the value back to bank-b's holdings. (Tokens with more than 30 ancestors would be "
            "renewed the same way.)",
            everyone,
            lambda: dan.app.deposit(m("SEK 125")),
        )

        # ---- the double spend ----
        self.say("\n[bold]A double spend by a broken secure element[/bold]")
        mallory = n.add_token_user("Mallory", "bank-a", online=200_00)
        self.step(
            "Mallory withdraws SEK 50 and SEK 30 as two tokens",
            "An ordinary customer with a genuine, issuer-endorsed element, so far.",
            ("Mallory",),
            lambda: (mallory.app.withdraw(m("SEK 50")), mallory.app.withdraw(m("SEK 30"))),
        )
        break_sign_once(mallory.element)
        self.say(
            "[red]SIMULATED HARDWARE BREAK[/red]: Mallory's secure element is physically "
            "attacked so that SignOnce signs but no longer destroys the ownership key. This is "
            "the one attack the design cannot stop offline; it is detected later, online."
        )
        (fifty,) = [t for t in mallory.element.tokens() if t.value == m("SEK 50")]
        spent: list[Token] = []

        self.step(
            "Mallory pays Ben SEK 50 offline, keeping a copy of the token's bytes",
            "A token is only data; what normally makes the copy worthless is that the key "
            "needed to sign it again is gone. Here it is not.",
            ("Mallory", "Ben"),
            lambda: spent.append(self.pay_offline("Mallory", "Ben", m("SEK 50"))),
        )

        def second_spend() -> None:
            mallory.element.store(fifty)
            self.say(
                f"  the broken element takes the copy {short(fifty)} back: its key still exists"
            )
            spent.append(self.pay_offline("Mallory", "Cleo", m("SEK 50")))
            first, second = spent
            self.say(
                f"  Ben's {short(first)} and Cleo's {short(second)} both consume "
                f"{short(first.ancestors[0])}: each history verifies on its own, and offline "
                "neither receiver can know about the other"
            )

        self.step(
            "Mallory pays Cleo the same SEK 50 token offline",
            "Cleo's element verifies a history that is valid by itself and accepts.",
            ("Mallory", "Ben", "Cleo"),
            second_spend,
        )
        self.step(
            "Ben deposits his SEK 50: the first branch to come online is paid",
            "The central bank records that Mallory's token was consumed by the transition to Ben.",
            ("Ben",),
            lambda: ben.app.deposit(m("SEK 50")),
        )

        def caught() -> OffpayError | None:
            try:
                cleo.app.deposit(m("SEK 50"))
            except OffpayError as exc:
                self.refused(exc)
                return exc
            finally:
                self.say(
                    "  the central bank's revocation list now names: "
                    + escape(", ".join(n.revoked_elements()) or "nobody")
                )
            return None

        double_spend = self.step(
            "Cleo deposits her SEK 50: the second branch comes online",
            "The central bank finds the same token consumed by a second, different transition: "
            "a double spend. It refuses to pay, attributes the spend to the element whose key "
            "signed twice and revokes that element. Cleo bears the loss, as with a counterfeit "
            "note: her copy is burned, not paid, so no money was created.",
            ("Cleo",),
            caught,
        )
        self.step(
            "Dan's next online moment: a withdrawal of SEK 20 brings the revocation list",
            "Every answer from an intermediary carries the central bank's latest signed "
            "revocation list; Dan's element stores it.",
            ("Dan",),
            lambda: dan.app.withdraw(m("SEK 20")),
        )
        self.say(
            f"  Dan's element: revocation list version {dan.element.revocation_version}, "
            f"refusing {escape(', '.join(sorted(dan.element.trust.revoked)) or 'nobody')}"
        )

        offline_refusal = self.step(
            "Offline again, Mallory tries to pay Dan SEK 30 with her other token",
            "At discovery Dan's element checks Mallory's element certificate against the list "
            "and refuses; a device that has not been online since the revocation would still "
            "accept, which is the exposure that holding and hop limits bound.",
            ("Mallory", "Dan"),
            lambda: self.pay_offline("Mallory", "Dan", m("SEK 30")),
        )

        # ---- the end ----
        heading(self.console, "Final check")
        try:
            audit = n.check_conservation()
        except ConservationError as exc:
            self.say(f"[red]conservation broken[/red]: {escape(exc.message)}")
            return False
        held, outstanding = self.in_elements(), self.outstanding(audit)
        revoked = n.revoked_elements()
        self.say(
            f"money issued {audit.issued} = money held {audit.held}; tokens outstanding at the "
            f"mint {outstanding}, tokens in elements {held}; revoked elements: "
            f"{escape(', '.join(revoked)) or 'none'}"
        )
        if held != outstanding:
            self.say("[red]the elements hold another value in tokens than the mint issued[/red]")
            return False
        if not isinstance(double_spend, DoubleSpend):
            self.say("[red]the second deposit of the double-spent token was not refused[/red]")
            return False
        if mallory.element.element_id not in revoked:
            self.say("[red]the double-spending element was not revoked[/red]")
            return False
        if not isinstance(offline_refusal, OffpayError):
            self.say("[red]an element that had the revocation list still accepted[/red]")
            return False
        self.say(
            "[green]money issued equals money held; the tokens in elements equal the tokens "
            "outstanding; the double spend was caught and its element revoked[/green]"
        )
        return self.ok and audit.balanced
